pub mod image_metrics;
pub mod sensitivity;
