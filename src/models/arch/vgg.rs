//! VGG-11 without batch normalisation.

use super::{scaled, ArchDef};
use crate::models::builder::Builder;
use crate::models::ModelSpec;

pub(super) const VGG11: ArchDef = ArchDef {
    name: "vgg11",
    description: "VGG-11 (config A), channels x width, 3 linear",
    needs_images: true,
    build: vgg11,
};

/// Configuration A: 64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M (3x3 convolutions, channels x width),
/// adaptive average pooling to 1x1, then linear layers of 512 x width, 512 x width and the classes; dropout sites
/// at the inputs of fc1 and fc2.
fn vgg11(b: &mut Builder, spec: &ModelSpec) {
    let w = spec.width;
    let plan: [&[i64]; 5] = [&[64], &[128], &[256, 256], &[512, 512], &[512, 512]];
    let mut n = 0;
    for block in plan {
        for &c in block {
            n += 1;
            b.conv(&format!("conv{n}"), scaled(c, w), 3, 1);
            b.relu();
        }
        b.max_pool();
    }
    b.avg_pool(1);
    let hidden = scaled(512, w);
    b.linear("fc1", hidden, true);
    b.relu();
    b.linear("fc2", hidden, true);
    b.relu();
    b.linear("fc3", spec.num_classes, false);
}
