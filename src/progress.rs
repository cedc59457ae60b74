//! Progress bars for long work, in one style: every bar says what it counts (its prefix) and
//! shows its message, so a `set_message` always reaches the screen. Bars draw on stderr when it
//! is a terminal; when it is not (a Slurm job's log, `nohup`, a pipe) the same bar writes a
//! plain line every few seconds instead ([`LOG_EVERY_ENV`]), so unattended runs show progress
//! without filling logs with redraws.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{HumanDuration, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// Bars for fewer items than this finish too fast to be worth drawing.
const MIN_ITEMS_SHOWN: usize = 64;

/// Seconds between progress lines when stderr is not a terminal (default 10; fractions allowed).
pub const LOG_EVERY_ENV: &str = "SKYSCRIBE_PROGRESS_EVERY";

/// A rate as people read it: `229/s`, `22.9/s`, `2.29/s` — three significant digits at most.
fn rate(per_sec: f64) -> String {
    if !per_sec.is_finite() || per_sec <= 0.0 {
        "—/s".into()
    } else if per_sec >= 100.0 {
        format!("{per_sec:.0}/s")
    } else if per_sec >= 10.0 {
        format!("{per_sec:.1}/s")
    } else {
        format!("{per_sec:.2}/s")
    }
}

/// `what`: the items counted ("images", "captions").
fn items_style(what: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{spinner}} {{prefix}} {{pos}}/{{len}} {what} [{{elapsed_precise}}] {{rate}} eta {{eta}} {{msg}}"
    ))
    .map(|s| {
        s.with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = w.write_str(&rate(state.per_sec()));
        })
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn steps_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] {bar:30} {pos}/{len} steps {msg} (eta {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar over `len` items (`what`: "images"), labelled `label` ("CLIP embeddings"). Hidden when
/// `quiet` or when there are too few items to be worth drawing.
pub fn items(len: usize, what: &str, label: &str, quiet: bool) -> ProgressBar {
    if quiet || len < MIN_ITEMS_SHOWN {
        return ProgressBar::hidden();
    }
    bar(len, items_style(what), label, what)
}

/// A bar over `total` training steps, `done` of them already taken (a resumed run).
pub fn steps(total: usize, done: usize, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = bar(total, steps_style(), label, "steps");
    bar.set_position(done as u64);
    bar
}

/// A bar drawn on a terminal, or logged by lines elsewhere.
fn bar(len: usize, style: ProgressStyle, label: &str, what: &str) -> ProgressBar {
    if std::io::stderr().is_terminal() {
        return ProgressBar::new(len as u64)
            .with_style(style)
            .with_prefix(label.to_string());
    }
    let bar = ProgressBar::with_draw_target(Some(len as u64), ProgressDrawTarget::hidden())
        .with_prefix(label.to_string());
    if let Some(every) = log_every() {
        log_lines(&bar, what, every, Box::new(std::io::stderr()));
    }
    bar
}

/// [`LOG_EVERY_ENV`], else 10 s; `0` turns the lines off.
fn log_every() -> Option<Duration> {
    let seconds = std::env::var(LOG_EVERY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(10.0);
    (seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// One log line of `bar`'s state: `indexing shard 0/1: 512/1093 images (47 %), 23.1/s, eta 25s`.
fn log_line(bar: &ProgressBar, what: &str) -> String {
    let (pos, len) = (bar.position(), bar.length().unwrap_or(0));
    let share = (pos * 100)
        .checked_div(len)
        .map_or(String::new(), |p| format!(" ({p} %)"));
    let msg = bar.message();
    format!(
        "{}: {pos}/{len} {what}{share}, {}, eta {}{}",
        bar.prefix(),
        rate(bar.per_sec()),
        HumanDuration(bar.eta()),
        if msg.is_empty() {
            String::new()
        } else {
            format!(", {msg}")
        }
    )
}

/// Writes `bar`'s state to `sink` every `every` until the bar is finished or dropped (a thread
/// that holds the bar weakly, so it never keeps one alive).
fn log_lines(bar: &ProgressBar, what: &str, every: Duration, mut sink: Box<dyn Write + Send>) {
    let weak = bar.downgrade();
    let what = what.to_string();
    let tick = every.min(Duration::from_millis(200));
    let spawned = std::thread::Builder::new()
        .name("progress-log".into())
        .spawn(move || {
            let mut waited = Duration::ZERO;
            loop {
                std::thread::sleep(tick);
                waited += tick;
                let Some(bar) = weak.upgrade() else { return };
                if bar.is_finished() {
                    return;
                }
                if waited >= every {
                    waited = Duration::ZERO;
                    let _ = writeln!(sink, "{}", log_line(&bar, &what));
                }
            }
        });
    // Without the thread the run goes on, only without its log lines.
    drop(spawned);
}

/// A spinner with the elapsed time for work of unknown length (`label`: what is being done),
/// ticking on its own until finished. Hidden when `quiet`.
pub fn spinner(label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner()
        .with_style(
            ProgressStyle::with_template("{spinner} {prefix} [{elapsed_precise}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        )
        .with_prefix(label.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A line for the log: above the bar, or on stderr when the bar is hidden (not a terminal), so
/// that logs of unattended runs keep it. A closed stderr loses the line, never the run.
pub fn say(bar: &ProgressBar, line: &str) {
    if bar.is_hidden() {
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        bar.println(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::{InMemoryTerm, ProgressDrawTarget, TermLike};

    fn drawn(bar: &ProgressBar, term: &InMemoryTerm) -> String {
        bar.tick();
        term.contents()
    }

    #[test]
    fn rates_are_rounded_to_three_digits() {
        assert_eq!(rate(229.0993), "229/s");
        assert_eq!(rate(22.90993), "22.9/s");
        assert_eq!(rate(2.290993), "2.29/s");
        assert_eq!(rate(0.0), "—/s");
    }

    /// A sink the test can read.
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Lines {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn off_a_terminal_the_bar_logs_lines_until_it_finishes() {
        let bar = ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::hidden())
            .with_prefix("indexing shard 0/1");
        bar.set_position(470);
        bar.set_message("12 unreadable");
        let sink = Lines::default();
        log_lines(
            &bar,
            "images",
            Duration::from_millis(20),
            Box::new(sink.clone()),
        );
        let read = || String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while read().is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = read();
        let first = text.lines().next().expect("a progress line");
        assert!(
            first.starts_with("indexing shard 0/1: 470/1000 images (47 %), ")
                && first.ends_with(", 12 unreadable"),
            "{first}"
        );
        assert!(first.contains("/s, eta "), "{first}");
        // Finished: the lines stop.
        bar.finish_and_clear();
        std::thread::sleep(Duration::from_millis(300));
        let settled = read().len();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(read().len(), settled);
    }

    #[test]
    fn labels_and_messages_reach_the_screen() {
        let term = InMemoryTerm::new(4, 160);
        let bar = ProgressBar::with_draw_target(
            Some(100),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        )
        .with_style(items_style("images"))
        .with_prefix("CLIP embeddings");
        bar.set_position(7);
        bar.set_message("3 from cache");
        let screen = drawn(&bar, &term);
        assert!(screen.contains("CLIP embeddings"), "{screen:?}");
        assert!(screen.contains("7/100 images"), "{screen:?}");
        assert!(screen.contains("3 from cache"), "{screen:?}");

        let term = InMemoryTerm::new(4, 160);
        let bar = ProgressBar::with_draw_target(
            Some(50),
            ProgressDrawTarget::term_like(Box::new(term.clone())),
        )
        .with_style(steps_style())
        .with_prefix("train clip");
        bar.set_message("loss 1.234");
        let screen = drawn(&bar, &term);
        assert!(
            screen.contains("train clip") && screen.contains("loss 1.234"),
            "{screen:?}"
        );
        assert_eq!(term.width(), 160);
    }
}
