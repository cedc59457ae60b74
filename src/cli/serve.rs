//! `serve`: the HTTP API and web page (see [`skyscribe::serve`]) over the models and indexes
//! named here, loaded before the port opens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

use skyscribe::caption::Captioner;
use skyscribe::classify::Classifier;
use skyscribe::serve::{BatchSettings, Models, ServeConfig, ServedIndex};

use super::common::{CaptionerArgs, CommonArgs, DeviceArg, PrecisionArg, clip_for, positive};
use super::output::report;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on; another than loopback needs --token (or --insecure-no-token).
    /// Port 0 picks a free port (the address is printed on stderr). Also read from
    /// SKYSCRIBE_ADDR (a container's or a job script's setting).
    #[arg(long, env = "SKYSCRIBE_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// A CLIP model directory (Hugging Face layout) or hub id (default: the captioner's CLIP,
    /// else the built-in skyscribe-mini).
    #[arg(long)]
    model: Option<String>,
    /// The captioner of /v1/describe and /v1/caption (with --no-caption, /v1/describe answers
    /// labels only and /v1/caption is refused).
    #[command(flatten)]
    captioner: CaptionerArgs,
    /// An index folder to search (`skyscribe index build`); repeat to search several together.
    #[arg(long = "index")]
    indexes: Vec<PathBuf>,
    /// A classifier from `train classifier` for /v1/classify (named by its file name without
    /// the extension); repeat to serve several. It must read this server's CLIP model.
    #[arg(long = "classifier")]
    classifiers: Vec<PathBuf>,
    /// Images encoded together in one forward pass.
    #[arg(long, default_value_t = 32, value_parser = positive)]
    max_batch: usize,
    /// How long a request waits for others to share its forward pass, in milliseconds.
    #[arg(long, default_value_t = 5)]
    max_wait_ms: u64,
    /// Largest request body, in MiB (413 past it).
    #[arg(long, default_value_t = 16.0)]
    max_body_mb: f64,
    /// Requests admitted at once, waiting or running (503 with Retry-After past it).
    #[arg(long, default_value_t = 256, value_parser = positive)]
    max_queue: usize,
    /// Largest image accepted, in pixels (413 past it).
    #[arg(long, default_value_t = 40_000_000)]
    max_pixels: u64,
    /// Seconds a request may take, a slow upload included (408 past it).
    #[arg(long, default_value_t = 30.0)]
    request_timeout_s: f64,
    /// Require `Authorization: Bearer TOKEN` (at least 8 characters); also read from
    /// SKYSCRIBE_TOKEN, which keeps it out of the process list.
    #[arg(long, env = "SKYSCRIBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Serve anyone on a non-loopback address without a token.
    #[arg(long)]
    insecure_no_token: bool,
    /// Where the models run.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// What CLIP computes in: f32; bf16 on CPUs with AVX512-BF16 and CUDA GPUs; f16 on CUDA
    /// GPUs; int8 (opt-in) on CPUs with AVX512-VNNI or AVX-VNNI.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
}

pub fn run(a: ServeArgs) -> Result<usize> {
    if !(a.max_body_mb > 0.0 && a.max_body_mb.is_finite() && a.max_body_mb <= 4096.0) {
        bail!(
            "--max-body-mb {} must be more than 0 and at most 4096",
            a.max_body_mb
        );
    }
    if !(a.request_timeout_s > 0.0 && a.request_timeout_s.is_finite()) {
        bail!(
            "--request-timeout-s {} must be more than 0",
            a.request_timeout_s
        );
    }
    if a.max_wait_ms > 10_000 {
        bail!(
            "--max-wait-ms {} is more than 10 s: requests would wait for nothing",
            a.max_wait_ms
        );
    }
    let config = ServeConfig {
        addr: a.addr,
        batch: BatchSettings {
            max_batch: a.max_batch,
            max_wait: Duration::from_millis(a.max_wait_ms),
        },
        max_body_bytes: (a.max_body_mb * (1 << 20) as f64) as usize,
        max_queue: a.max_queue,
        max_pixels: a.max_pixels,
        request_timeout: Duration::from_secs_f64(a.request_timeout_s),
        token: a.token.clone(),
        insecure_no_token: a.insecure_no_token,
    };
    // Settings are checked before any model is loaded.
    config.check()?;
    let dev = a.device.device()?;
    let captioner = a
        .captioner
        .spec(a.model.as_deref())
        .map(|c| Captioner::load_spec(&c, &dev))
        .transpose()?;
    let common = CommonArgs {
        model: a.model.clone(),
        jsonl: false,
        batch_size: a.max_batch,
        bands: None,
        max_pixels: a.max_pixels,
        // Uploads arrive as bytes and decode in full.
        jpeg_draft: false,
        device: a.device,
        precision: a.precision,
    };
    let clip = clip_for(&common, captioner.as_ref(), a.captioner.force_clip, &dev)?;
    let indexes = a
        .indexes
        .iter()
        .map(|dir| ServedIndex::open(dir, &clip))
        .collect::<Result<Vec<_>>>()?;
    let mut classifiers: Vec<(String, Classifier)> = Vec::new();
    for file in &a.classifiers {
        let c = Classifier::load(file)?;
        c.check_model(&clip, file)?;
        let name = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if classifiers.iter().any(|(n, _)| n == &name) {
            bail!(
                "{}: a classifier named {name} is already served (names are file names \
                 without the extension)",
                file.display()
            );
        }
        classifiers.push((name, c));
    }
    let what = format!(
        "CLIP {}{}{}",
        clip.source.spec,
        if captioner.is_some() {
            " with captions"
        } else {
            ""
        },
        match indexes.len() {
            0 => String::new(),
            n => format!(
                ", {n} index(es) of {} images",
                indexes.iter().map(|i| i.index.len()).sum::<usize>()
            ),
        }
    );
    let models = Models {
        clip,
        captioner,
        classifiers,
    };
    skyscribe::serve::run(config, models, indexes, |addr| {
        report(&format!("serve: listening on http://{addr} ({what})"))
    })?;
    Ok(0)
}
