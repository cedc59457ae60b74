//! Progress bars for long work, in one style: every bar says what it counts (its prefix) and
//! shows its message, so a `set_message` always reaches the screen. Bars draw on stderr and
//! only on a terminal (indicatif hides them elsewhere), so piped output stays clean.

use indicatif::{ProgressBar, ProgressStyle};

/// Bars for fewer items than this finish too fast to be worth drawing.
const MIN_ITEMS_SHOWN: usize = 64;

/// `what`: the items counted ("images", "captions").
fn items_style(what: &str) -> ProgressStyle {
    ProgressStyle::with_template(&format!(
        "{{spinner}} {{prefix}} {{pos}}/{{len}} {what} [{{elapsed_precise}}] {{per_sec}} eta {{eta}} {{msg}}"
    ))
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
    ProgressBar::new(len as u64)
        .with_style(items_style(what))
        .with_prefix(label.to_string())
}

/// A bar over `total` training steps, `done` of them already taken (a resumed run).
pub fn steps(total: usize, done: usize, label: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64)
        .with_style(steps_style())
        .with_prefix(label.to_string());
    bar.set_position(done as u64);
    bar
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
        use std::io::Write;
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
