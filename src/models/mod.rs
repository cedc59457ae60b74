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

/// A device for reports: a GPU as candle names it, the CPU with the instruction set its kernels
/// use (`Cpu (AVX-512)`), so a timing says which code produced it.
pub fn device_label(device: &candle_core::Device) -> String {
    if device.is_cpu() {
        format!("Cpu ({})", vector_math::instruction_set())
    } else {
        format!("{device:?}")
    }
}
