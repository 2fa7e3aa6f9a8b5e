//! A multi-layer perceptron for tabular data (images are flattened).

use super::ArchDef;
use crate::models::builder::Builder;
use crate::models::ModelSpec;

pub(super) const MLP: ArchDef =
    ArchDef { name: "mlp", description: "MLP: 2 hidden ReLU layers", needs_images: false, build: mlp };

/// Two ReLU hidden layers of `spec.hidden` units, then the classes; dropout sites at the inputs of fc2 and fc3.
fn mlp(b: &mut Builder, spec: &ModelSpec) {
    b.linear("fc1", spec.hidden, false);
    b.relu();
    b.linear("fc2", spec.hidden, true);
    b.relu();
    b.linear("fc3", spec.num_classes, true);
}
