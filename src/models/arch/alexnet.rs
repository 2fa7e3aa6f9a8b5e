//! AlexNet adapted to small inputs.

use super::{scaled, ArchDef};
use crate::models::builder::Builder;
use crate::models::ModelSpec;

pub(super) const ALEXNET: ArchDef = ArchDef {
    name: "alexnet",
    description: "AlexNet for small inputs: 5 conv 3x3 + ReLU, 3 linear",
    needs_images: true,
    build: alexnet,
};

/// Five 3x3 convolutions (64, 192, 384, 256, 256 channels x width; max-pool after the 1st, 2nd and 5th), adaptive
/// average pooling to 2x2, then linear layers of 1024 x width, 1024 x width and the classes; dropout sites at the
/// inputs of fc1 and fc2.
fn alexnet(b: &mut Builder, spec: &ModelSpec) {
    let w = spec.width;
    let plan: [(i64, bool); 5] = [(64, true), (192, true), (384, false), (256, false), (256, true)];
    for (i, (c, pool)) in plan.into_iter().enumerate() {
        b.conv(&format!("conv{}", i + 1), scaled(c, w), 3, 1);
        b.relu();
        if pool {
            b.max_pool();
        }
    }
    b.avg_pool(2);
    let hidden = scaled(1024, w);
    b.linear("fc1", hidden, true);
    b.relu();
    b.linear("fc2", hidden, true);
    b.relu();
    b.linear("fc3", spec.num_classes, false);
}
