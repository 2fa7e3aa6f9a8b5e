//! Gradients as data: what a client shares, layer by layer.

pub mod per_sample;

pub use per_sample::{batch_gradients, per_sample_gradients};
