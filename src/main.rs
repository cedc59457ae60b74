//! The `skyscribe` binary: parses the command line and hands it to [`cli::run`]; the exit
//! status says how it went (0 done, 1 some inputs unreadable, 2 could not run).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Candle allocates a fresh buffer for every op; mimalloc reuses freed ones instead of
/// returning them to the kernel, which saves the page faults of each new buffer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc.h's `mi_option_purge_delay` (not among libmimalloc-sys's named constants).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    // By default mimalloc hands freed memory back to the kernel after 10 ms. A training step
    // frees and reallocates the same large buffers every few milliseconds, and every page handed
    // back costs a fault and zeroing when it comes back (a tenth of a ClipCap step): keep it.
    // SAFETY: setting an option is allowed at any time.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            cli::report_error(&format!(
                "{failed} input(s) could not be read; every other result was written"
            ));
            ExitCode::from(1)
        }
        Err(e) => {
            cli::report_error(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}
