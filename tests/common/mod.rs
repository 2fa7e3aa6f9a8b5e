//! Small synthetic data shared by the integration tests (no fetched dataset needed).
#![allow(dead_code)]

use gradleak::data::{AttributeInfo, Dataset, InputShape, Split};
use tch::{Kind, Tensor};

pub fn image(c: i64, h: i64) -> InputShape {
    InputShape::Image { channels: c, height: h, width: h }
}

/// A learnable synthetic dataset: the class is which quadrant of the image is bright.
pub fn quadrant_dataset(input: InputShape, n_train: i64, n_test: i64, seed: i64) -> Dataset {
    tch::manual_seed(seed);
    let make = |n: i64| {
        let labels = Tensor::randint(4, [n], (Kind::Int64, tch::Device::Cpu));
        let mut inputs = Tensor::rand(input.batch(n), (Kind::Float, tch::Device::Cpu)) * 0.3;
        if let InputShape::Image { height, width, .. } = input {
            let (h2, w2) = (height / 2, width / 2);
            for i in 0..n {
                let q = labels.int64_value(&[i]);
                let (r, c) = (q / 2 * h2, q % 2 * w2);
                let _ = inputs.get(i).narrow(1, r, h2).narrow(2, c, w2).f_add_scalar_(0.7).unwrap();
            }
        } else {
            let one_hot = labels.one_hot(input.numel()).to_kind(Kind::Float);
            inputs += one_hot;
        }
        let attributes = labels.remainder(2).unsqueeze(1);
        Split::new(inputs, labels, attributes)
    };
    Dataset {
        name: "quadrants".into(),
        input_shape: input,
        classes: (0..4).map(|i| format!("q{i}")).collect(),
        attributes: vec![AttributeInfo { name: "right".into(), description: "bright quadrant on the right".into() }],
        train: make(n_train),
        test: make(n_test),
    }
}
