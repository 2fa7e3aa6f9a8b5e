//! Dropout as a defence inside the differentiated function: seeded masks, held fixed while differentiating.

use gradleak::data::InputShape;
use gradleak::defenses::Defense;
use gradleak::measure::sensitivity::{input_sensitivity, InputSensitivityConfig};
use gradleak::models::{Arch, Model, ModelSpec};
use gradleak::progress::Progress;
use tch::Tensor;

#[test]
fn dropout_masks_are_seeded_and_change_the_sensitivity() {
    // The MLP has dropout sites at the inputs of fc2 and fc3.
    let input = InputShape::Tabular { features: 6 };
    let model = Model::new(&ModelSpec::new(Arch::Mlp, input, 3), 0).unwrap();
    let x = Tensor::from_slice(&[0.1f32, -0.4, 0.9, 0.3, -0.2, 0.5, 1.0, 0.2, -0.7, 0.0, 0.4, -0.1]).reshape([2, 6]);
    let y = Tensor::from_slice(&[0i64, 2]);
    let run = |defenses: Vec<Defense>, seed: u64| {
        let config = InputSensitivityConfig { probes: 4, defenses, bootstrap: 50, seed, ..Default::default() };
        input_sensitivity(&model, &x, &y, &config, Progress::HIDDEN).unwrap()
    };
    let dropout = || vec![Defense::Dropout { rate: 0.5 }];
    let a = run(dropout(), 1);
    let b = run(dropout(), 1);
    assert_eq!(a, b, "same seed, same masks");
    assert_eq!(a.defenses.applied.len(), 1);
    assert!(a.defenses.applied[0].note.contains("fixed"));
    let plain = run(vec![], 1);
    // Masks zero some of fc3's inputs, so its gradient, and its Jacobian, change.
    let fc3 = |r: &gradleak::measure::sensitivity::InputSensitivityReport| r.layers[2].gradient_norm.value;
    assert_ne!(fc3(&a), fc3(&plain));
    let other_seeds: Vec<f64> = (2..6).map(|s| fc3(&run(dropout(), s))).collect();
    assert!(other_seeds.iter().any(|v| *v != fc3(&a)), "other seeds draw other masks: {other_seeds:?}");
}

#[test]
fn jvp_with_dropout_matches_finite_differences_with_the_same_masks() {
    use gradleak::measure::sensitivity::input::{finite_difference_jvp, Linearisation, SharedGradientFn};
    let input = InputShape::Tabular { features: 5 };
    let mut model = Model::new(&ModelSpec::new(Arch::Mlp, input, 3), 4).unwrap();
    model.to_double();
    let x = Tensor::from_slice(&[0.3f64, -0.1, 0.8, 0.5, -0.6, 0.2, 0.9, -0.4, 0.1, 0.7]).reshape([2, 5]);
    let y = Tensor::from_slice(&[1i64, 0]);
    let v = Tensor::from_slice(&[1.0f64, -0.5, 0.25, 0.0, 2.0, -1.0, 0.5, 1.5, -0.25, 0.75]).reshape([2, 5]);
    let ids = [0u64, 1];
    let with = SharedGradientFn::new(&model, None, &[Defense::Dropout { rate: 0.5 }], true, 3).unwrap();
    let without = SharedGradientFn::new(&model, None, &[], true, 3).unwrap();
    assert!(with.dropout_active() && !without.dropout_active());
    let map = |x: &Tensor| with.eval(x, &y, &ids);
    let jv = Linearisation::new(&map, &x).unwrap().jvp(&v).unwrap();
    let fd = finite_difference_jvp(&map, &x, &v, 1e-5).unwrap();
    for (a, b) in jv.iter().zip(&fd) {
        let err = (a - b).norm().double_value(&[]) / b.norm().double_value(&[]);
        assert!(err < 1e-6, "relative error {err:e}");
    }
    // The masks matter: without dropout the products differ.
    let plain = |x: &Tensor| without.eval(x, &y, &ids);
    let jv_plain = Linearisation::new(&plain, &x).unwrap().jvp(&v).unwrap();
    assert!(!jv_plain[2].allclose(&jv[2], 1e-6, 1e-9, false));
}
