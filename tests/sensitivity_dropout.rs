//! Dropout as a defence inside the differentiated function. Its masks come from libtorch's process-wide generator,
//! so this test has a binary of its own: no other test can draw from (or reseed) that generator meanwhile.

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
