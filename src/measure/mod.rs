pub mod image_metrics;
