pub mod sensitivity;
