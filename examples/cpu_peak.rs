//! The ceiling `bench --gemm` is measured against: this CPU's clock and how many of each product
//! instruction its cores retire a cycle, with every core busy at once (as in a product).
//!
//! ```sh
//! cargo run --release --example cpu_peak
//! ```
//!
//! Each core runs, in turn: a chain of dependent integer adds (one a cycle, so the count over
//! the time is the clock), then twelve independent accumulators of 512-bit `vfmadd231ps` (f32,
//! 32 operations each), `vdpbf16ps` (bf16, 64) and `vpdpbusd` (int8, 128), each where the CPU
//! has it, and the clock again. The peak of a product in GFLOP/s (GOP/s) is then the rate
//! times the operations an instruction does, summed over the cores. The instructions are written
//! in assembly because a compiler would fold a loop with no memory effects away.
//! No library does this (the `gemm` crate and candle measure products, not the instructions'
//! ceiling).

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::time::Instant;

    /// The clock in GHz: one dependent add a cycle.
    pub fn clock_ghz() -> f64 {
        let n: u64 = 1_000_000_000;
        let start = Instant::now();
        // SAFETY: register arithmetic only.
        unsafe {
            asm!(
                "2:",
                "add {x}, 1",
                "add {x}, 1",
                "add {x}, 1",
                "add {x}, 1",
                "sub {n}, 4",
                "jnz 2b",
                x = inout(reg) 0u64 => _,
                n = inout(reg) n => _,
                options(nomem, nostack),
            );
        }
        n as f64 / start.elapsed().as_secs_f64() / 1e9
    }

    macro_rules! twelve {
        ($op:literal) => {
            concat!(
                $op,
                " zmm1, zmm30, zmm31\n",
                $op,
                " zmm2, zmm30, zmm31\n",
                $op,
                " zmm3, zmm30, zmm31\n",
                $op,
                " zmm4, zmm30, zmm31\n",
                $op,
                " zmm5, zmm30, zmm31\n",
                $op,
                " zmm6, zmm30, zmm31\n",
                $op,
                " zmm7, zmm30, zmm31\n",
                $op,
                " zmm8, zmm30, zmm31\n",
                $op,
                " zmm9, zmm30, zmm31\n",
                $op,
                " zmm10, zmm30, zmm31\n",
                $op,
                " zmm11, zmm30, zmm31\n",
                $op,
                " zmm12, zmm30, zmm31\n",
            )
        };
    }

    macro_rules! instruction_rate {
        ($name:ident, $features:literal, $op:literal) => {
            /// Instructions a second on this core.
            #[target_feature(enable = $features)]
            pub unsafe fn $name() -> f64 {
                let iterations: u64 = 100_000_000;
                let start = Instant::now();
                // SAFETY: register arithmetic only; the caller checked the features.
                unsafe {
                    asm!(
                        "2:",
                        twelve!($op),
                        "dec {n}",
                        "jnz 2b",
                        n = inout(reg) iterations => _,
                        out("zmm1") _, out("zmm2") _, out("zmm3") _, out("zmm4") _,
                        out("zmm5") _, out("zmm6") _, out("zmm7") _, out("zmm8") _,
                        out("zmm9") _, out("zmm10") _, out("zmm11") _, out("zmm12") _,
                        options(nomem, nostack),
                    );
                }
                (iterations * 12) as f64 / start.elapsed().as_secs_f64()
            }
        };
    }

    instruction_rate!(fma_f32, "avx512f", "vfmadd231ps");
    instruction_rate!(dot_bf16, "avx512f,avx512bf16", "vdpbf16ps");
    instruction_rate!(dot_int8, "avx512f,avx512vnni", "vpdpbusd");

    /// `(name, operations an instruction, instructions a second)` for those this CPU has.
    pub fn rates() -> Vec<(&'static str, f64, f64)> {
        use std::arch::is_x86_feature_detected as has;
        let mut out = Vec::new();
        // SAFETY: each after its features were detected.
        unsafe {
            if has!("avx512f") {
                out.push(("f32 vfmadd231ps zmm", 32.0, fma_f32()));
            }
            if has!("avx512f") && has!("avx512bf16") {
                out.push(("bf16 vdpbf16ps zmm", 64.0, dot_bf16()));
            }
            if has!("avx512f") && has!("avx512vnni") {
                out.push(("int8 vpdpbusd zmm", 128.0, dot_int8()));
            }
        }
        out
    }
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let start = std::time::Instant::now();
        let per_core: Vec<_> = (0..cores)
            .map(|_| std::thread::spawn(|| (x86::clock_ghz(), x86::rates(), x86::clock_ghz())))
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().expect("a measuring thread panicked"))
            .collect();
        if per_core[0].1.is_empty() {
            println!("no AVX-512: this measures only 512-bit instructions");
        }
        for (core, (before, rates, after)) in per_core.iter().enumerate() {
            println!("core {core}: clock {before:.2} GHz, then {after:.2}");
            for (name, ops, rate) in rates {
                println!(
                    "  {name}: {:.2} a cycle, {:.0} G operations/s",
                    rate / 1e9 / ((before + after) / 2.0),
                    rate * ops / 1e9
                );
            }
        }
        for (i, (name, _, _)) in per_core[0].1.iter().enumerate() {
            let total: f64 = per_core.iter().map(|(_, r, _)| r[i].1 * r[i].2 / 1e9).sum();
            println!("{name}: {total:.0} G operations/s on {cores} cores at once");
        }
        println!("({:.1} s)", start.elapsed().as_secs_f64());
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        println!("cpu_peak measures x86-64 instructions only");
    }
}
