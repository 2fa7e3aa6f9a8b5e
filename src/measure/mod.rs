//! Measurements on features (gradients, sketches of them) against targets (inputs, labels, attributes).

pub mod attack_families;
pub mod attacks;
pub mod bounds;
pub mod decoder;
pub mod image_metrics;
pub mod layerwise;
pub mod localisation;
pub mod sensitivity;
pub mod vinfo;
