//! The `skyscribe` binary: parses the command line and hands it to [`cli::run`]; the exit
//! status says how it went (0 done, 1 some inputs unreadable, 2 could not run).

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Candle allocates a fresh buffer for every op; mimalloc reuses freed ones instead of
/// returning them to the kernel, which saves the page faults of each new buffer.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc.h's `mi_option_purge_delay` (not among libmimalloc-sys's named constants): 15 in
/// the mimalloc 3 that libmimalloc-sys builds, as in mimalloc 2. A test checks it by the
/// option's default (1,000 ms), since a wrong index would silently set some other option.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// candle's own pool for element-wise ops (`candle-bp-*` threads, one fewer than the cores)
/// and the variable that sets how long its threads spin after each op before they sleep.
const CANDLE_SPIN_LIMIT: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";

fn main() -> ExitCode {
    // candle 0.11 runs element-wise ops (the residual adds, among others) on that pool, whose
    // threads then spin 25,000 times before they sleep, while the products run on rayon's
    // threads, one a core: the spinning takes a core's share from them. With it off, the int8
    // text tower went from 564 to 621 prompts/s model alone and from 621 to 754 end to end
    // (AMD EPYC, five alternating runs each). Sleep at once, unless the user set it.
    if std::env::var_os(CANDLE_SPIN_LIMIT).is_none() {
        // SAFETY: no other thread exists yet, so none reads the environment meanwhile.
        unsafe { std::env::set_var(CANDLE_SPIN_LIMIT, "0") };
    }
    let cli = cli::Cli::parse();
    if !cli.is_server() {
        // By default mimalloc hands freed memory back to the kernel after a delay (1 s in
        // mimalloc 3). Candle frees and reallocates the same large buffers all the time, and
        // every page handed back costs a fault and zeroing when it comes back (a tenth of a
        // ClipCap step; on the AMD host a CLIP step took 20.5 s without this, 11.3 s with):
        // keep it, in commands that end when their work does. Not in the server, which must
        // give back what a burst of large requests took (it held 781 MB idle after two bursts
        // of 16-megapixel uploads with this set, 150 MB without).
        // SAFETY: setting an option is allowed at any time.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
    match cli::run(cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(failed) => {
            cli::report_error(&cli::failed_inputs_line(failed));
            ExitCode::from(1)
        }
        Err(e) => {
            cli::report_error(&format!("{e:#}"));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_index_names_the_purge_delay() {
        // Nothing in a test process sets it, so it has mimalloc 3's default, 1,000 ms, unless
        // the environment says otherwise; the options around it default to other values.
        // SAFETY: reading an option is allowed at any time.
        let value = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        let expected = std::env::var("MIMALLOC_PURGE_DELAY")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        assert_eq!(value, expected);
        // The neighbours (deprecated eager-commit delay, NUMA nodes) default to 1 and 0.
        for other in [14, 16] {
            // SAFETY: as above.
            assert_ne!(unsafe { libmimalloc_sys::mi_option_get(other) }, 1000);
        }
    }
}
