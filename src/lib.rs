//! gradleak: measure, layer by layer, how much usable information the gradients of a neural network give away
//! about a client's private inputs and latent attributes.
//!
//! The pipeline reads top to bottom: [`data`] -> [`models`] -> [`train`] -> gradients (+ defences) ->
//! measurements -> report.

pub mod arrays;
pub mod audit;
pub mod data;
pub mod defenses;
pub mod error;
pub mod gradients;
pub mod io;
pub mod keyword;
pub mod limits;
pub mod measure;
pub mod models;
pub mod optim;
pub mod progress;
pub mod report;
pub mod rng;
pub mod stats;
pub mod train;
