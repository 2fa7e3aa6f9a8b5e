//! ResNets with GroupNorm: CIFAR-style ResNet-20 and ResNet-18 with a 3x3 stem.

use super::ArchDef;
use crate::models::builder::Builder;
use crate::models::ModelSpec;

pub(super) const RESNET20: ArchDef = ArchDef {
    name: "resnet20",
    description: "ResNet-20 (CIFAR), GroupNorm",
    needs_images: true,
    build: |b, spec| resnet(b, spec, 16, &[(16, 3, 1), (32, 3, 2), (64, 3, 2)]),
};

pub(super) const RESNET18: ArchDef = ArchDef {
    name: "resnet18",
    description: "ResNet-18 with 3x3 stem, GroupNorm",
    needs_images: true,
    build: |b, spec| resnet(b, spec, 64, &[(64, 2, 1), (128, 2, 2), (256, 2, 2), (512, 2, 2)]),
};

/// A 3x3 stem of `stem` channels with GroupNorm and ReLU, then stages of (channels, basic blocks, stride of the
/// first block), adaptive average pooling to 1x1 and one linear layer; no dropout sites.
fn resnet(b: &mut Builder, spec: &ModelSpec, stem: i64, stages: &[(i64, usize, i64)]) {
    b.conv("conv1", stem, 3, 1);
    b.norm("norm1");
    b.relu();
    for (s, &(channels, blocks, stride)) in stages.iter().enumerate() {
        for i in 0..blocks {
            let stride = if i == 0 { stride } else { 1 };
            // A stride-2 block on a 1-pixel map would not shrink it further; keep the layer names.
            let stride = if b.height() < 2 { 1 } else { stride };
            b.residual(&format!("layer{}.{i}", s + 1), channels, stride);
        }
    }
    b.avg_pool(1);
    b.linear("fc", spec.num_classes, false);
}
