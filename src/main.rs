//! The `skyscribe` binary: parses the command line and hands it to [`cli::run`]; the exit
//! status says how it went (0 done, 1 some inputs unreadable, 2 could not run).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Candle allocates a fresh buffer for every op; mimalloc reuses freed ones instead of
/// returning them to the kernel, which saves the page faults of each new buffer. (Its default
/// purge delay is kept: with purging off, `MIMALLOC_PURGE_DELAY=-1`, the ClipCap and CLIP
/// training steps measured no different.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
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
