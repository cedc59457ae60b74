//! A closed-loop HTTP load generator for `skyscribe serve` (`bench --http`): `clients` threads
//! each send one request, wait for its answer, and send the next, for `duration`; every
//! answer's status and latency is kept. With the server's process id it also samples the
//! server's resident memory (Linux `/proc`). Meant for loopback: it refuses other hosts.
//!
//! (A thread per client with a blocking client — ureq, already a dependency through hf-hub — is
//! the simplest generator that measures what a user sees; an async one is only needed for
//! thousands of clients.)

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

/// What to send, how hard, for how long.
pub struct LoadOptions {
    /// e.g. `http://127.0.0.1:8080/v1/labels?labels=eurosat`.
    pub url: String,
    /// Request bodies (images), sent in turn; each client starts at its own offset.
    pub bodies: Arc<Vec<Vec<u8>>>,
    pub clients: usize,
    pub duration: Duration,
    pub token: Option<String>,
    /// The server's process id, to sample its memory.
    pub server_pid: Option<u32>,
    /// After a 503, wait the `Retry-After` seconds the server asks for (as a well-behaved
    /// client does) instead of sending the next request at once.
    pub honour_retry_after: bool,
}

/// What the run saw.
#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub url: String,
    pub clients: usize,
    pub duration_s: f64,
    pub requests: usize,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, usize>,
    /// Requests that got no HTTP answer (refused or reset connections, timeouts).
    pub transport_errors: usize,
    /// 200 answers per second.
    pub ok_per_s: f64,
    /// Latency of 200 answers, in milliseconds.
    pub ok_p50_ms: f64,
    pub ok_p95_ms: f64,
    pub ok_p99_ms: f64,
    pub ok_max_ms: f64,
    /// Latency of 503 answers (load shed), in milliseconds.
    pub shed_p99_ms: Option<f64>,
    /// The server's largest resident memory seen during the run, in MiB.
    pub server_peak_rss_mib: Option<f64>,
    /// The server's resident memory when the run ended, in MiB.
    pub server_end_rss_mib: Option<f64>,
}

/// The value at quantile `q` of sorted `xs` (nearest rank).
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1]
}

/// `VmRSS` of a process in MiB, from `/proc/PID/status`.
pub fn resident_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Runs the load. Only loopback URLs are accepted: a load test is not aimed at other machines.
pub fn run(o: &LoadOptions) -> Result<LoadReport> {
    let host = o
        .url
        .strip_prefix("http://")
        .and_then(|r| r.split(['/', '?']).next())
        .unwrap_or("");
    let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if !matches!(host_only, "127.0.0.1" | "localhost" | "[::1]") {
        bail!(
            "{}: load tests run against loopback only (http://127.0.0.1:PORT/…)",
            o.url
        );
    }
    if o.bodies.is_empty() || o.clients == 0 {
        bail!("nothing to send: give images and at least one client");
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .max_idle_connections_per_host(o.clients)
        .build();
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<(u16, f64)>>> = Arc::default();
    let peak = Arc::new(Mutex::new(None::<f64>));
    let start = Instant::now();
    std::thread::scope(|scope| {
        if let Some(pid) = o.server_pid {
            let (stop, peak) = (stop.clone(), peak.clone());
            scope.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(m) = resident_mib(pid) {
                        let mut p = peak.lock().unwrap_or_else(|e| e.into_inner());
                        *p = Some(p.map_or(m, |q: f64| q.max(m)));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
        }
        let clients: Vec<_> = (0..o.clients)
            .map(|c| {
                let (agent, samples) = (agent.clone(), samples.clone());
                scope.spawn(move || {
                    let mut mine = Vec::new();
                    let mut i = c;
                    while start.elapsed() < o.duration {
                        let body = &o.bodies[i % o.bodies.len()];
                        i += 1;
                        let mut req = agent
                            .post(&o.url)
                            .set("Content-Type", "application/octet-stream");
                        if let Some(t) = &o.token {
                            req = req.set("Authorization", &format!("Bearer {t}"));
                        }
                        let t0 = Instant::now();
                        let (status, retry_after) = match req.send_bytes(body) {
                            Ok(r) | Err(ureq::Error::Status(_, r)) => {
                                let status = r.status();
                                let retry = r.header("retry-after").and_then(|v| v.parse().ok());
                                // Read the answer whole so the connection is reused.
                                let _ = r.into_reader().read_to_end(&mut Vec::new());
                                (status, retry)
                            }
                            Err(_) => (0, None),
                        };
                        mine.push((status, t0.elapsed().as_secs_f64() * 1e3));
                        if status == 503 && o.honour_retry_after {
                            let wait = Duration::from_secs_f64(retry_after.unwrap_or(1.0));
                            std::thread::sleep(
                                wait.min(o.duration.saturating_sub(start.elapsed())),
                            );
                        }
                        if status == 0 {
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    samples
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(mine);
                })
            })
            .collect();
        for c in clients {
            let _ = c.join();
        }
        stop.store(true, Ordering::Relaxed);
    });
    let elapsed = start.elapsed().as_secs_f64();
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|e| e.into_inner()));
    let mut statuses = BTreeMap::new();
    let mut ok = Vec::new();
    let mut shed = Vec::new();
    let mut transport_errors = 0;
    for &(status, ms) in &samples {
        match status {
            0 => transport_errors += 1,
            s => *statuses.entry(s).or_insert(0) += 1,
        }
        match status {
            200 => ok.push(ms),
            503 => shed.push(ms),
            _ => {}
        }
    }
    ok.sort_by(f64::total_cmp);
    shed.sort_by(f64::total_cmp);
    let peak = *peak.lock().unwrap_or_else(|e| e.into_inner());
    Ok(LoadReport {
        url: o.url.clone(),
        clients: o.clients,
        duration_s: elapsed,
        requests: samples.len(),
        statuses,
        transport_errors,
        ok_per_s: ok.len() as f64 / elapsed,
        ok_p50_ms: quantile(&ok, 0.50),
        ok_p95_ms: quantile(&ok, 0.95),
        ok_p99_ms: quantile(&ok, 0.99),
        ok_max_ms: ok.last().copied().unwrap_or(f64::NAN),
        shed_p99_ms: (!shed.is_empty()).then(|| quantile(&shed, 0.99)),
        server_peak_rss_mib: peak,
        server_end_rss_mib: o.server_pid.and_then(resident_mib),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let xs: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&xs, 0.5), 50.0);
        assert_eq!(quantile(&xs, 0.95), 95.0);
        assert_eq!(quantile(&xs, 0.99), 99.0);
        assert_eq!(quantile(&xs, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn other_hosts_than_loopback_are_refused() {
        let o = LoadOptions {
            url: "http://example.com/v1/labels".into(),
            bodies: Arc::new(vec![vec![1]]),
            clients: 1,
            duration: Duration::from_millis(1),
            token: None,
            server_pid: None,
            honour_retry_after: false,
        };
        let err = run(&o).unwrap_err().to_string();
        assert!(err.contains("loopback only"), "{err}");
    }

    #[test]
    fn own_memory_is_readable() {
        let m = resident_mib(std::process::id()).expect("Linux /proc");
        assert!(m > 1.0 && m < 1e6, "{m}");
    }
}
