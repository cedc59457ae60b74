//! `skyscribe serve`: the HTTP API and the web page, from the same library calls as the command
//! line. This module owns the server's shape — its settings ([`ServeConfig`]), its shared state,
//! the router, the guard every request passes (token, timeout, metrics) and start/stop; the
//! pieces live beside it:
//!
//! | file | owns |
//! |---|---|
//! | `batcher.rs` | the model thread, request batching, admission (503 past the queue) |
//! | `request.rs` | reading requests: parameters, bodies, multipart, images; [`ApiError`] |
//! | `routes.rs` | the endpoints |
//! | `search.rs` | the indexes served: loading, merged search, thumbnails by id |
//! | `metrics.rs` | `/metrics` (Prometheus text) |
//! | `wire.rs` | the socket under each connection: hyper's own parse-error answers made JSON |
//! | `web/` | the page at `/` (plain HTML/CSS/JS, embedded in the binary) and `openapi.json` |
//!
//! Requests run on a small tokio runtime; decoding runs on its blocking pool (at most one image
//! per core at a time, so memory stays bounded), and models only on the model thread.

mod batcher;
mod metrics;
mod request;
mod routes;
mod search;
mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub use batcher::{BatchSettings, Models};
pub use request::ApiError;
pub use search::ServedIndex;

use crate::imagery::DecodeOptions;
use crate::zeroshot::ZeroShotClassifier;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub addr: SocketAddr,
    pub batch: BatchSettings,
    /// Request bodies larger than this are refused with 413.
    pub max_body_bytes: usize,
    /// Requests admitted at once (waiting or running); more get 503.
    pub max_queue: usize,
    /// Images whose header claims more pixels are refused with 413.
    pub max_pixels: u64,
    /// A request not answered in this time (a slow body included) gets 408.
    pub request_timeout: Duration,
    /// `Authorization: Bearer TOKEN` required on everything but `/`, its assets and `/healthz`.
    pub token: Option<String>,
    /// Allows a non-loopback address without a token.
    pub insecure_no_token: bool,
}

impl ServeConfig {
    /// Refuses settings that make no sense, and another address than loopback without a
    /// token unless asked for in so many words.
    pub fn check(&self) -> Result<()> {
        if self.batch.max_batch == 0 || self.max_queue == 0 {
            bail!("--max-batch and --max-queue must be at least 1");
        }
        if self.max_body_bytes == 0 {
            bail!("--max-body-mb must be more than 0");
        }
        if let Some(t) = &self.token {
            if t.len() < 8 || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bail!("--token must be at least 8 characters with no spaces");
            }
            if self.insecure_no_token {
                bail!("--token and --insecure-no-token contradict each other");
            }
        }
        if !self.addr.ip().is_loopback() && self.token.is_none() && !self.insecure_no_token {
            bail!(
                "{} is reachable from other machines: give --token (or SKYSCRIBE_TOKEN) so that \
                 only its holders can use the server, or --insecure-no-token to serve anyone",
                self.addr
            );
        }
        Ok(())
    }
}

/// A label set as a request asks for it: `labels` (`None`: the model's vocabulary) and the
/// `template` values.
pub(crate) type ClassifierKey = (Option<String>, Vec<String>);

/// What every request can reach.
pub(crate) struct App {
    pub models: Arc<Models>,
    pub batcher: batcher::Batcher,
    pub admission: Arc<batcher::Admission>,
    pub metrics: Arc<metrics::Metrics>,
    pub indexes: search::Indexes,
    pub config: ServeConfig,
    /// How uploads are decoded (the pixel cap).
    pub decode: DecodeOptions,
    /// How images searched with are decoded: as the indexes were built (their bands).
    pub search_decode: DecodeOptions,
    /// Images being decoded at once.
    pub decoders: Arc<tokio::sync::Semaphore>,
    /// Label sets already embedded, by (labels, templates) as asked.
    pub classifiers: Mutex<HashMap<ClassifierKey, Arc<ZeroShotClassifier>>>,
}

/// A line in the server's log (stderr).
pub(crate) fn log(message: &str) {
    eprintln!("skyscribe serve: {message}");
}

/// The router over `app`: the endpoints, the page, and the guard around all of them.
fn router(app: Arc<App>) -> Router {
    routes::routes()
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Paths anyone may fetch when a token is set: the page (it asks for the token) and health.
fn is_open(path: &str) -> bool {
    matches!(path, "/" | "/app.js" | "/style.css" | "/healthz")
}

/// Compares without stopping at the first difference (no timing hint about the token).
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The token of an `Authorization: Bearer TOKEN` header. The scheme is case-insensitive
/// (RFC 9110 § 11.1), so `bearer` and `BEARER` are as good as `Bearer`.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Error answers that are not JSON yet — axum's own rejections, such as a path that is not
/// UTF-8 — become `{"error": …}` with their text, as every answer of ours is.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), 64 << 10)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

/// Around every request: the token, the request timeout, and the metrics.
async fn guard(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = req.method().clone();
    let authorized = match &app.config.token {
        None => true,
        Some(token) => {
            is_open(req.uri().path())
                || req
                    .headers()
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(bearer_token)
                    .is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes()))
        }
    };
    let response = if !authorized {
        ApiError::unauthorized().into_response()
    } else {
        match tokio::time::timeout(app.config.request_timeout, next.run(req)).await {
            // The router's own 405 has an empty body; errors here are JSON.
            Ok(r) if r.status() == axum::http::StatusCode::METHOD_NOT_ALLOWED => {
                let mut answer = ApiError::new(
                    r.status(),
                    format!("{method} is not allowed on {route} (see /openapi.json)"),
                )
                .into_response();
                // RFC 9110 § 15.5.6: a 405 lists the methods the path takes.
                if let Some(allow) = r.headers().get(axum::http::header::ALLOW) {
                    answer
                        .headers_mut()
                        .insert(axum::http::header::ALLOW, allow.clone());
                }
                answer
            }
            Ok(r) => json_errors(r).await,
            Err(_) => ApiError::new(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than {} s (a slow body?)",
                    app.config.request_timeout.as_secs_f32()
                ),
            )
            .into_response(),
        }
    };
    app.metrics
        .request(&route, response.status().as_u16(), start.elapsed());
    response
}

/// Serves `models` and `indexes` (loaded by the caller) under `config` (checked here) until
/// SIGTERM or Ctrl-C, then lets requests in flight finish. `ready` is called with the bound
/// address (a port of 0 picks a free one).
pub fn run(
    config: ServeConfig,
    models: Models,
    indexes: Vec<ServedIndex>,
    ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    config.check()?;
    let indexes = search::Indexes::new(indexes)?;
    let decode = DecodeOptions {
        max_pixels: config.max_pixels,
        ..DecodeOptions::default()
    };
    let search_decode = DecodeOptions {
        bands: indexes.bands(),
        ..decode.clone()
    };
    let admission = batcher::Admission::new(config.max_queue);
    let metrics = Arc::new(metrics::Metrics::new(admission.clone()));
    let models = Arc::new(models);
    let (batcher, worker) = batcher::Batcher::start(
        models.clone(),
        config.batch,
        metrics.clone(),
        admission.clone(),
    );
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let app = Arc::new(App {
        models,
        batcher,
        admission,
        metrics,
        indexes,
        config: config.clone(),
        decode,
        search_decode,
        decoders: Arc::new(tokio::sync::Semaphore::new(cores)),
        classifiers: Mutex::new(HashMap::new()),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cores.min(4))
        // Decoding threads that sit idle end after 2 s (tokio's default is 10 s), and with
        // them the memory their large decodes took goes back to the kernel.
        .thread_keep_alive(Duration::from_secs(2))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr)
            .await
            .with_context(|| format!("cannot listen on {}", config.addr))?;
        ready(listener.local_addr()?);
        let drain = config.request_timeout + Duration::from_secs(5);
        serve_connections(listener, router(app), drain).await;
        Ok(())
    });
    // Requests are done and the router (with the batcher's sender) dropped: the model thread
    // drains its queue and ends.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !worker.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !worker.is_finished() {
        log("the model thread is still busy; not waiting for it");
    }
    log("stopped");
    served
}

/// Connections open at once; more are closed on arrival (each holds a socket and a task).
const MAX_CONNECTIONS: usize = 1024;
/// A client must send its request's headers within this time (a slow body is bounded by
/// the request timeout instead).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until SIGTERM / Ctrl-C, then waits for those open to finish their
/// requests (for at most `drain`). (Written out instead of `axum::serve`, which sets no header
/// timeout: a client sending headers byte by byte would hold its connection forever.)
async fn serve_connections(listener: tokio::net::TcpListener, router: Router, drain: Duration) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut stop = std::pin::pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    log(&format!("cannot accept a connection: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stop => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue; // too many connections: this one is closed at once
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let stream = wire::JsonParseErrors::new(stream);
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            let _ = connection.await;
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        log("connections still open after the requests' timeout were closed");
    }
}

/// Ctrl-C, or SIGTERM (what `kill`, systemd and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    log("stopping: finishing the requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(addr: &str) -> ServeConfig {
        ServeConfig {
            addr: addr.parse().unwrap(),
            batch: BatchSettings {
                max_batch: 32,
                max_wait: Duration::from_millis(5),
            },
            max_body_bytes: 16 << 20,
            max_queue: 256,
            max_pixels: 1 << 20,
            request_timeout: Duration::from_secs(30),
            token: None,
            insecure_no_token: false,
        }
    }

    #[test]
    fn other_addresses_than_loopback_need_a_token_or_insecure_no_token() {
        assert!(config("127.0.0.1:8080").check().is_ok());
        assert!(config("[::1]:8080").check().is_ok());
        let open = config("0.0.0.0:8080");
        let err = open.check().unwrap_err().to_string();
        assert!(err.contains("--token"), "{err}");
        let mut with_token = open.clone();
        with_token.token = Some("s3cret-token".into());
        assert!(with_token.check().is_ok());
        let mut insecure = open.clone();
        insecure.insecure_no_token = true;
        assert!(insecure.check().is_ok());
        with_token.insecure_no_token = true;
        assert!(with_token.check().is_err(), "both at once");
        let mut short = config("127.0.0.1:1");
        short.token = Some("abc".into());
        assert!(short.check().is_err(), "a 3-character token");
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", " Bearer abc"] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret(b"abcdefgh", b"abcdefgh"));
        assert!(!same_secret(b"abcdefgh", b"abcdefgx"));
        assert!(!same_secret(b"abcdefgh", b"abcdefg"));
    }
}
