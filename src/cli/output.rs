//! Where results go: every result line of every command is written through [`Out`], which
//! ends output quietly when the reader goes away (`skyscribe … | head`) instead of panicking
//! as `println!` does; messages for people go to stderr through [`report`].

use std::io::Write;

use anyhow::Result;

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
            Ok(()) => Ok(()),
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
}

/// `skyscribe: <message>` on stderr; a closed stderr loses the message, never the run.
pub fn report(message: &str) {
    let _ = writeln!(std::io::stderr(), "skyscribe: {message}");
}
