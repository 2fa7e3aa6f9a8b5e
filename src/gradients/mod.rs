//! Gradients as data: what a client shares, layer by layer.

pub mod per_sample;
pub mod sketch;
pub mod store;
pub mod updates;

pub use per_sample::{batch_gradients, per_sample_gradients};
