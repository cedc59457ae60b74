//! The socket under each connection, wrapped so that hyper's own error answers are JSON too.
//!
//! hyper answers a request it cannot parse — a URI past 64 KiB (414), headers past its buffer
//! (431), a malformed request line or header (400) — by itself, before any of our code runs,
//! with an empty body and no hook to change it. Every other error of this server is
//! `{"error": …}`, and clients (and schema checkers) rely on that. So this wrapper watches what
//! hyper writes: an answer that starts `HTTP/1.1 4xx` with `content-length: 0` and no
//! `content-type` can only be one of those automatic ones (every answer of ours has a type),
//! and it is replaced, whole, by the same status with a JSON body. Everything else passes
//! through untouched. (Written by hand: neither hyper nor hyper-util offers a way to shape
//! these answers.)

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A stream whose automatic 4xx answers from hyper get JSON bodies.
pub struct JsonParseErrors<S> {
    inner: S,
    /// A replacement answer still being written.
    pending: Vec<u8>,
    written: usize,
}

impl<S> JsonParseErrors<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            pending: Vec::new(),
            written: 0,
        }
    }
}

/// The JSON answer to put in place of `head`, when `head` is one of hyper's automatic ones.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    if !head.starts_with(b"HTTP/1.1 4") {
        return None;
    }
    let end = head.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = std::str::from_utf8(&head[..end]).ok()?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next()?;
    let headers: Vec<String> = lines.map(str::to_ascii_lowercase).collect();
    if end + 4 != head.len()
        || headers.iter().any(|h| h.starts_with("content-type:"))
        || !headers
            .iter()
            .any(|h| h.replace(' ', "") == "content-length:0")
    {
        return None;
    }
    let code: u16 = status_line.get(9..12)?.parse().ok()?;
    let message = match code {
        414 => "the request's URI is too long (at most 65,534 bytes)",
        431 => "the request's headers are too large",
        _ => "a malformed request: its request line or a header could not be parsed",
    };
    let body = serde_json::json!({ "error": message }).to_string();
    let date = text
        .split("\r\n")
        .find(|h| h.to_ascii_lowercase().starts_with("date:"))
        .map(|d| format!("{d}\r\n"))
        .unwrap_or_default();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n{date}\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<S: AsyncWrite + Unpin> JsonParseErrors<S> {
    /// Writes what is left of a replacement answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = replacement(buf) {
            self.pending = answer;
            // The original answer counts as written: it was, in its JSON form.
            return match self.poll_pending(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(buf.len())),
            };
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then writes each answer's head as one buffer, which is what
    // `replacement` looks at.
    fn is_write_vectored(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_empty_untyped_4xx_answers_are_replaced() {
        let auto = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                     date: Tue, 01 Dec 2026 21:00:00 GMT\r\n\r\n";
        let got = String::from_utf8(replacement(auto).unwrap()).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{got}"
        );
        assert!(got.contains("content-type: application/json\r\n"));
        assert!(got.contains("date: Tue, 01 Dec 2026 21:00:00 GMT\r\n"));
        let body = got.split("\r\n\r\n").nth(1).unwrap();
        assert!(got.contains(&format!("content-length: {}\r\n", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("headers are too large")
        );
        // Answers of ours keep their bytes: typed, or with a body, or not an error.
        for ours in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"{\"error\": \"HTTP/1.1 400\"}",
        ] {
            assert!(replacement(ours).is_none(), "{}", String::from_utf8_lossy(ours));
        }
    }
}
