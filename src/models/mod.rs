//! The neural networks, one model a file, with weight paths equal to checkpoint keys.

pub mod clip;
pub mod cpu_kernels;
pub mod gpt2;
pub mod layers;
pub mod mapper;
pub mod reduced_precision;
pub mod vector_math;
pub mod weights;

pub use clip::{ClipConfig, ClipModel};
pub use reduced_precision::Precision;
pub use weights::Weights;
