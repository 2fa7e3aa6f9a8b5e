//! LeNet: the sigmoid LeNet of the DLG paper and the ReLU LeNet-5.

use super::ArchDef;
use crate::models::builder::Builder;
use crate::models::ModelSpec;

pub(super) const LENET: ArchDef = ArchDef {
    name: "lenet",
    description: "LeNet of the DLG paper: 3 conv 5x5 + sigmoid, 1 linear",
    needs_images: true,
    build: lenet,
};

pub(super) const LENET5: ArchDef = ArchDef {
    name: "lenet5",
    description: "LeNet-5: 2 conv 5x5 + ReLU + max-pool, 3 linear",
    needs_images: true,
    build: lenet5,
};

/// Zhu et al.'s LeNet: 12 channels, strides 2, 2, 1; sigmoid keeps the gradient twice differentiable everywhere.
fn lenet(b: &mut Builder, spec: &ModelSpec) {
    for (name, stride) in [("conv1", 2), ("conv2", 2), ("conv3", 1)] {
        b.conv(name, 12, 5, stride);
        b.sigmoid();
    }
    b.linear("fc", spec.num_classes, false);
}

/// LeNet-5: conv 6 and 16 channels, each with ReLU and max-pool, then 120, 84 and the classes; dropout sites at
/// the inputs of fc2 and fc3.
fn lenet5(b: &mut Builder, spec: &ModelSpec) {
    b.conv("conv1", 6, 5, 1);
    b.relu();
    b.max_pool();
    b.conv("conv2", 16, 5, 1);
    b.relu();
    b.max_pool();
    b.linear("fc1", 120, false);
    b.relu();
    b.linear("fc2", 84, true);
    b.relu();
    b.linear("fc3", spec.num_classes, true);
}
