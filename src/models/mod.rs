//! The neural networks, one model a file, with weight paths equal to checkpoint keys.

pub mod clip;
pub mod cpu_kernels;
pub mod gpt2;
pub mod int8;
pub mod layers;
pub mod mapper;
pub mod reduced_precision;
pub mod short_attention;
pub mod vector_math;
pub mod weights;

pub use clip::{ClipConfig, ClipModel};
pub use reduced_precision::Precision;
pub use weights::Weights;

/// A device for reports: a GPU as candle names it; the CPU by model and the instruction set its
/// kernels use (`Cpu (AMD EPYC, family 25 model 17; AVX-512)`), so a timing names the machine and
/// the code that produced it.
pub fn device_label(device: &candle_core::Device) -> String {
    if !device.is_cpu() {
        return format!("{device:?}");
    }
    let isa = crate::simd::instruction_set();
    match std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cpu_model(&info))
    {
        Some(model) => format!("Cpu ({model}; {isa})"),
        None => format!("Cpu ({isa})"),
    }
}

/// The first processor's model in Linux's `/proc/cpuinfo` text: its name, and its family and
/// model numbers when given (cloud CPUs are often named only `AMD EPYC`).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let field = |key: &str| {
        cpuinfo
            .lines()
            .take_while(|line| !line.trim().is_empty())
            .find_map(|line| {
                let (k, v) = line.split_once(':')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
    };
    let name = field("model name").filter(|n| !n.is_empty())?;
    Some(match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name}, family {family} model {model}"),
        _ => name,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_model_is_read_from_the_first_processor() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n\
                    model name\t: AMD EPYC\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            super::cpu_model(info).as_deref(),
            Some("AMD EPYC, family 25 model 17")
        );
        let arm = "processor\t: 0\nBogoMIPS\t: 50.00\n";
        assert_eq!(super::cpu_model(arm), None);
        let unnumbered = "model name\t: Intel(R) Xeon(R) CPU @ 2.50GHz\n";
        assert_eq!(
            super::cpu_model(unnumbered).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.50GHz")
        );
    }

    #[test]
    fn the_cpu_label_ends_with_the_instruction_set_in_use() {
        let label = super::device_label(&candle_core::Device::Cpu);
        let isa = crate::simd::instruction_set();
        assert!(
            label.starts_with("Cpu (") && label.ends_with(&format!("{isa})")),
            "{label}"
        );
    }
}
