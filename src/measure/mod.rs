//! Measurements on shared updates: what each family reads of them (`families`), how much usable information that is
//! (`vinfo`), layer by layer (`layerwise`, over `groups` and `targets`), where it sits (`localisation`), how strongly
//! the gradients move with the input (`sensitivity`), the attacks themselves (`attacks`), upper bounds (`bounds`)
//! and image metrics.
//!
//! Dependencies point one way: `vinfo` (the estimator) imports nothing of `measure`; `targets` and `groups` import
//! `vinfo`; `families` imports them and `attacks`; `layerwise` imports `families`; `localisation` imports
//! `layerwise`'s inputs.

pub mod attacks;
pub mod bounds;
pub mod families;
pub mod groups;
pub mod image_metrics;
pub mod layerwise;
pub mod localisation;
pub mod sensitivity;
pub mod targets;
pub mod vinfo;
