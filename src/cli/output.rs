//! Where results go: every result line of every command is written through [`Out`], which
//! ends output quietly when the reader goes away (`skyscribe … | head`) instead of panicking
//! as `println!` does; messages for people go to stderr through [`report`].

use std::io::Write;

use anyhow::Result;

/// Results this process wrote: lines on stdout and output files ([`wrote_file`]).
static RESULTS_WRITTEN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether this process wrote any result, for the closing line.
pub fn wrote_anything() -> bool {
    RESULTS_WRITTEN.load(std::sync::atomic::Ordering::Relaxed) > 0
}

/// Counts an output file a command saved (a GeoJSON, a map, a heatmap) among its results.
pub fn wrote_file() {
    RESULTS_WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// Writes result lines to stdout, flushed line by line so results stream out as computed.
pub struct Out {
    stdout: std::io::Stdout,
    closed: bool,
}

impl Out {
    pub fn new() -> Self {
        Self {
            stdout: std::io::stdout(),
            closed: false,
        }
    }

    pub fn line(&mut self, s: &str) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let mut lock = self.stdout.lock();
        match writeln!(lock, "{s}").and_then(|_| lock.flush()) {
            Ok(()) => {
                RESULTS_WRITTEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A value as one JSON line.
    pub fn json(&mut self, v: &impl serde::Serialize) -> Result<()> {
        self.line(&serde_json::to_string(v)?)
    }

    /// One result: `v` as a JSON line with `--jsonl`, else the text `people` makes of it.
    pub fn record(
        &mut self,
        jsonl: bool,
        v: &impl serde::Serialize,
        people: impl FnOnce() -> String,
    ) -> Result<()> {
        if jsonl {
            self.json(v)
        } else {
            self.line(&people())
        }
    }
}

/// `s` in exactly `width` terminal columns: padded with spaces, or cut with `…` when longer.
/// Columns, not characters: a CJK character takes two, a combining mark none, so tables stay
/// aligned whatever the labels are written in.
pub fn fit(s: &str, width: usize) -> String {
    use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};
    let w = s.width();
    if w <= width {
        return format!("{s}{}", " ".repeat(width - w));
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let cw = c.width().unwrap_or(0);
        if used + cw + 1 > width {
            break;
        }
        out.push(c);
        used += cw;
    }
    out.push('…');
    used += 1;
    out + &" ".repeat(width.saturating_sub(used))
}

/// `skyscribe: <message>` on stderr; a closed stderr loses the message, never the run.
pub fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "skyscribe: {message}");
}

#[cfg(test)]
mod tests {
    use super::fit;
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn columns_hold_their_width_for_any_script() {
        for s in [
            "forest",
            "河流",
            "港口和码头",
            "e\u{301}tang",
            "a label far longer than the column it has to fit in",
            "長い長い長い長い長い長い長い長い長い長い長い",
        ] {
            let f = fit(s, 12);
            assert_eq!(f.width(), 12, "{s:?} -> {f:?}");
        }
        assert_eq!(fit("forest", 8), "forest  ");
        assert_eq!(fit("河流", 6), "河流  ");
        assert!(fit("a label far longer", 8).ends_with('…'));
        // A wide character that would straddle the edge is left out, the cell padded.
        assert_eq!(fit("港口和码头", 6), "港口… ");
    }
}
