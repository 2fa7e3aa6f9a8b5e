pub mod attacks;
pub mod image_metrics;
