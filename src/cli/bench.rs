//! `bench`: images per second of the CLIP image pipeline, or the time of a ClipCap training
//! step. Measurements only; docs/src/performance.md says which machine gave which number.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

use skyscribe::encoder::{ClipEncoder, collect_images};

use super::common::{DeviceArg, PrecisionArg};
use super::output::Out;

#[derive(Args)]
pub struct BenchArgs {
    /// A folder of images to run through the pipeline (default: EuroSAT's Forest class
    /// under $SKYSCRIBE_DATA or ../shared/data).
    #[arg(long)]
    images: Option<PathBuf>,
    /// How many images to use.
    #[arg(long, default_value_t = 256)]
    limit: usize,
    /// Images (or captions, with --captioner-step) per batch.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// A real model instead of random ViT-B/32 weights.
    #[arg(long)]
    model: Option<String>,
    /// Time ClipCap training steps instead (gpt2 124M shapes, random weights, MLP mapper,
    /// --batch-size captions of --caption-tokens tokens).
    #[arg(long)]
    captioner_step: bool,
    /// Time contrastive CLIP training steps instead (ViT-B/32 shapes, fresh weights, all
    /// trained; --batch-size random images and 77-token texts).
    #[arg(long, conflicts_with = "captioner_step")]
    clip_step: bool,
    /// Time the matrix products of ViT-B/32's layers instead (the kernel the model uses), in
    /// GFLOP/s: the ceiling of the image pipeline on this machine.
    #[arg(long, conflicts_with_all = ["captioner_step", "clip_step"])]
    gemm: bool,
    /// Time decoding and preprocessing alone instead, on every thread (RAYON_NUM_THREADS): the
    /// rate at which this machine can feed a model on any device, GPUs included.
    #[arg(long, conflicts_with_all = ["captioner_step", "clip_step", "gemm"])]
    preprocess: bool,
    /// Decode large JPEGs at 1/2, 1/4 or 1/8 scale where the model's input is that much
    /// smaller (Pillow's draft mode), for the image pipeline and --preprocess.
    #[arg(long, conflicts_with_all = [
        "captioner_step", "clip_step", "gemm", "texts", "http", "search_vectors", "search_index",
        "search_vectors_file",
    ])]
    jpeg_draft: bool,
    /// Time the text side instead: the prompts of --labels × --template, tokenized and encoded
    /// in batches of --batch-size (as zero-shot classification does once per label set).
    #[arg(long, conflicts_with_all = ["captioner_step", "clip_step", "gemm", "preprocess"])]
    texts: bool,
    /// The label set of --texts (a preset, a file or `a,b,c`).
    #[arg(long, default_value = "xview", requires = "texts")]
    labels: String,
    /// Templates of --texts (literal with `{}` or a named set; repeatable).
    #[arg(long = "template", requires = "texts")]
    templates: Vec<String>,
    /// With --texts: also write the prompts, one a line, for scripts/bench/bench_reference.py --texts.
    #[arg(long, requires = "texts")]
    save_prompts: Option<PathBuf>,
    /// Tokens per caption, with --captioner-step.
    #[arg(long, default_value_t = 20)]
    caption_tokens: usize,
    /// With --captioner-step: train GPT-2 too (default: frozen).
    #[arg(long)]
    train_gpt2: bool,
    /// Timed training steps (after one warm-up step), with --captioner-step or --clip-step.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Time exact search instead, over this many synthetic clustered vectors (written as a
    /// real index part in a temporary folder, loaded, and queried).
    #[arg(long, value_parser = super::common::positive)]
    search_vectors: Option<usize>,
    /// Time exact search over an existing index folder instead.
    #[arg(long, conflicts_with = "search_vectors")]
    search_index: Option<PathBuf>,
    /// Time search over your own vectors instead: a float32 N × D numpy `.npy` (rows are
    /// L2-normalised on load), written as a real index part in a temporary folder.
    #[arg(long, conflicts_with_all = ["search_vectors", "search_index"])]
    search_vectors_file: Option<PathBuf>,
    /// How the temporary index stores its vectors, with --search-vectors or
    /// --search-vectors-file: f32, or f16 (half the bytes; the report then says how much of
    /// the f32 exact top 10 it keeps).
    #[arg(long, value_parser = super::common::vector_dtype, conflicts_with = "search_index")]
    search_dtype: Option<skyscribe::index::VectorDtype>,
    /// The queries, a float32 Q × D `.npy` (default: --queries vectors of the index, each
    /// moved by noise of ±0.05 a coordinate).
    #[arg(long)]
    search_queries_file: Option<PathBuf>,
    /// With --ann: HNSW's M (neighbours kept per node), as `index optimize --connections`.
    #[arg(long, default_value_t = 16, value_parser = super::common::positive)]
    connections: usize,
    /// With --ann: candidates explored when inserting, as `index optimize --ef-construction`.
    #[arg(long, default_value_t = 128, value_parser = super::common::positive)]
    ef_construction: usize,
    /// Also build the HNSW graph (`index optimize`) and measure its recall@10 against exact
    /// search and its latency, with --search-vectors or --search-index (which it modifies).
    #[arg(long)]
    ann: bool,
    /// Dimension of the synthetic vectors, with --search-vectors.
    #[arg(long, default_value_t = 512, value_parser = super::common::positive)]
    dim: usize,
    /// Timed queries (top 10), with --search-vectors or --search-index.
    #[arg(long, default_value_t = 50, value_parser = super::common::positive)]
    queries: usize,
    /// Load-test a running `skyscribe serve` instead: POST --limit images from --images to
    /// this loopback URL (e.g. http://127.0.0.1:8080/v1/labels?labels=eurosat) from
    /// --clients clients for --duration-s seconds.
    #[arg(long)]
    http: Option<String>,
    /// Concurrent clients, with --http (each sends its next request when answered).
    #[arg(long, default_value_t = 32, value_parser = super::common::positive)]
    clients: usize,
    /// Seconds of load, with --http.
    #[arg(long, default_value_t = 30.0)]
    duration_s: f64,
    /// The server's token, with --http.
    #[arg(long, env = "SKYSCRIBE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The server's process id, with --http: its resident memory is sampled during the run.
    #[arg(long)]
    server_pid: Option<u32>,
    /// With --http: after a 503, wait the Retry-After the server asks for (default: send the
    /// next request at once, the harshest client).
    #[arg(long)]
    honour_retry_after: bool,
    /// Where the model runs.
    #[arg(long, value_enum, default_value_t = DeviceArg::Auto)]
    device: DeviceArg,
    /// What CLIP computes in, for the image pipeline, --texts and --gemm: f32; bf16 on CPUs
    /// with AVX512-BF16 and CUDA GPUs; f16 on CUDA GPUs; int8 (opt-in) on CPUs with
    /// AVX512-VNNI or AVX-VNNI (--gemm then times each int8 kernel the CPU runs).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F32)]
    precision: PrecisionArg,
    /// Print the report as one JSON line.
    #[arg(long)]
    jsonl: bool,
}

pub fn run(a: BenchArgs) -> Result<usize> {
    if a.search_queries_file.is_some()
        && a.search_vectors.is_none()
        && a.search_index.is_none()
        && a.search_vectors_file.is_none()
    {
        anyhow::bail!(
            "--search-queries-file goes with --search-vectors, --search-vectors-file or --search-index"
        );
    }
    if a.search_dtype.is_some() && a.search_vectors.is_none() && a.search_vectors_file.is_none() {
        anyhow::bail!(
            "--search-dtype goes with --search-vectors or --search-vectors-file (an index given \
             with --search-index is searched in the dtype it was built with)"
        );
    }
    let mut out = Out::new();
    let training = a.captioner_step || a.clip_step;
    let elsewhere = a.search_vectors.is_some()
        || a.search_index.is_some()
        || a.search_vectors_file.is_some()
        || a.http.is_some()
        || a.preprocess;
    if a.precision != PrecisionArg::F32 && (training || elsewhere) {
        bail!(
            "--precision {} times inference only (the image pipeline, --texts, --gemm): training \
             steps compute in f32, and search, --http and --preprocess do not run a model here",
            a.precision.precision().name()
        );
    }
    if a.search_vectors.is_some() || a.search_index.is_some() || a.search_vectors_file.is_some() {
        return search(&a, &mut out);
    }
    if let Some(url) = &a.http {
        return load(&a, url, &mut out);
    }
    let dev = a.device.device()?;
    if a.gemm {
        for r in skyscribe::bench::gemm_shapes(10, a.precision.precision(), &dev)? {
            out.record(a.jsonl, &r, || {
                let kernel = match (&r.kernel, r.best) {
                    (Some(k), Some(true)) => format!(" ({k} kernel, the one used)"),
                    (Some(k), _) => format!(" ({k} kernel)"),
                    _ => String::new(),
                };
                format!(
                    "({} × {}) · ({} × {}): {:.0} GFLOP/s, {}{kernel}, {} threads, {}",
                    r.shape[0],
                    r.shape[1],
                    r.shape[1],
                    r.shape[2],
                    r.gflop_per_s,
                    r.precision,
                    r.threads,
                    r.device
                )
            })?;
        }
        return Ok(0);
    }
    if a.texts {
        return texts(&a, &dev, &mut out);
    }
    if a.clip_step {
        let r = skyscribe::train::clip::step_time(&dev, a.batch_size, a.steps)?;
        out.record(a.jsonl, &r, || {
            format!(
                "{}: batch {}, {} threads, {}\n  {} over {} steps",
                r.what, r.batch_size, r.threads, r.device, r.times, r.steps
            )
        })?;
        return Ok(0);
    }
    if a.captioner_step {
        let r = skyscribe::train::captioner::step_time(
            &dev,
            a.batch_size,
            a.caption_tokens,
            a.steps,
            a.train_gpt2,
        )?;
        out.record(a.jsonl, &r, || {
            format!(
                "{}: batch {}, {} caption tokens + prefix {}, {} threads, {}\n  {} over {} steps",
                r.what,
                r.batch_size,
                r.caption_tokens,
                r.prefix_length,
                r.threads,
                r.device,
                r.times,
                r.steps
            )
        })?;
        return Ok(0);
    }
    let images = a
        .images
        .clone()
        .unwrap_or_else(|| skyscribe::data_root().join("eurosat/images/Forest"));
    let (mut paths, errors) = collect_images(&[images]);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    paths.truncate(a.limit);
    let decode = skyscribe::imagery::DecodeOptions {
        jpeg_draft: a.jpeg_draft,
        ..Default::default()
    };
    if a.preprocess {
        // Decoding needs no model: a given model's preprocessor, else CLIP's at 224 pixels.
        let preprocessor = match &a.model {
            Some(m) => ClipEncoder::load(m, &dev)?.preprocessor,
            None => skyscribe::imagery::Preprocessor::clip_default(224),
        };
        let r = skyscribe::bench::preprocess(&preprocessor, &paths, &decode)?;
        out.record(a.jsonl, &r, || {
            format!(
                "{} images of {:.3} megapixels on average{}, to {}×{}, {} threads, {}\n  decode: {:.0} images/s\n  decode + preprocess: {:.0} images/s ({:.0} a thread)",
                r.images,
                r.mean_megapixels,
                if r.jpeg_draft { " decoded (JPEG draft)" } else { "" },
                r.output_size[1],
                r.output_size[0],
                r.threads,
                r.device,
                r.decode_images_per_s,
                r.images_per_s,
                r.images_per_s_per_thread,
            )
        })?;
        return Ok(0);
    }
    let clip = bench_clip(&a, &dev)?;
    let r = skyscribe::bench::run(&clip, &paths, a.batch_size, &decode)?;
    out.record(a.jsonl, &r, || {
        format!(
            "{}: {} images, batch {}, {}, {} threads, {}\n  end to end (decode + preprocess + encode): {:.1} images/s\n  model only: {:.1} images/s",
            r.model,
            r.images,
            r.batch_size,
            r.precision,
            r.threads,
            r.device,
            r.end_to_end_images_per_s,
            r.model_images_per_s
        )
    })?;
    Ok(0)
}

/// `--model`, or random ViT-B/32 weights.
fn bench_clip(a: &BenchArgs, dev: &candle_core::Device) -> Result<ClipEncoder> {
    match &a.model {
        Some(m) => ClipEncoder::load_in(m, dev, a.precision.precision()),
        None => skyscribe::bench::random_vit_b32(dev, a.precision.precision()),
    }
}

fn texts(a: &BenchArgs, dev: &candle_core::Device, out: &mut Out) -> Result<usize> {
    use skyscribe::labels::{LabelSet, Templates};
    let labels = LabelSet::parse(&a.labels)?;
    let templates = if a.templates.is_empty() {
        Templates::parse(&["remote-sensing".to_string()])?
    } else {
        Templates::parse(&a.templates)?
    };
    let prompts: Vec<String> = labels
        .labels
        .iter()
        .flat_map(|l| templates.prompts(l))
        .collect();
    if let Some(path) = &a.save_prompts {
        skyscribe::atomic::write_file(path, (prompts.join("\n") + "\n").as_bytes())?;
    }
    let clip = bench_clip(a, dev)?;
    let r = skyscribe::bench::texts(&clip, &prompts, a.batch_size)?;
    out.record(a.jsonl, &r, || {
        format!(
            "{}: {} prompts ({} labels, {} templates, {:.1} tokens on average), batch {}, {}, {} threads, {}\n  end to end (tokenize + encode, batched by length: {:.1} tokens a prompt padded): {:.0} prompts/s\n  model only (batched in order: {:.1} tokens a prompt padded): {:.0} prompts/s",
            r.model,
            r.prompts,
            labels.len(),
            templates.0.len(),
            r.mean_tokens,
            r.batch_size,
            r.precision,
            r.threads,
            r.device,
            r.padded_tokens_by_length,
            r.end_to_end_prompts_per_s,
            r.padded_tokens_in_order,
            r.model_prompts_per_s
        )
    })?;
    Ok(0)
}

fn search(a: &BenchArgs, out: &mut Out) -> Result<usize> {
    use skyscribe::bench::search;
    let from_file = match &a.search_vectors_file {
        Some(f) => Some(search::read_npy_matrix(f)?),
        None => None,
    };
    let queries = match &a.search_queries_file {
        Some(f) => Some(search::read_npy_matrix(f)?),
        None => None,
    };
    let temporary = (a.search_vectors.is_some() || from_file.is_some()).then(|| {
        std::env::temp_dir().join(format!(
            "skyscribe-bench-search-{}-{}",
            std::process::id(),
            a.search_vectors.unwrap_or(0)
        ))
    });
    let dtype = a.search_dtype.unwrap_or_default();
    // An f16 index is measured against the f32 vectors it was written from: kept until then.
    let mut originals = None;
    let dir = match (&temporary, &a.search_index) {
        (Some(t), _) => {
            let _ = std::fs::remove_dir_all(t);
            let (x, dim) = match from_file {
                Some(file) => file,
                None => (
                    search::clustered_vectors(a.search_vectors.unwrap_or(0), a.dim, 1),
                    a.dim,
                ),
            };
            if dtype != skyscribe::index::VectorDtype::F32 {
                originals = Some(x.clone());
            }
            search::write_vectors_index(t, x, dim, dtype)?;
            t.clone()
        }
        (None, Some(i)) => i.clone(),
        (None, None) => unreachable!("checked by the caller"),
    };
    let given = queries.as_ref().map(|(q, _)| q.as_slice());
    let options = skyscribe::index::ann::AnnOptions {
        connections: a.connections,
        ef_construction: a.ef_construction,
    };
    let r = search::measure(&dir, given, a.queries, 10, originals.as_deref());
    drop(originals);
    let ann = match (&r, a.ann) {
        (Ok(_), true) => Some(search::measure_ann(
            &dir,
            given,
            a.queries,
            options,
            &[32, 64, 128, 256],
        )),
        _ => None,
    };
    if let Some(t) = &temporary {
        let _ = std::fs::remove_dir_all(t);
    }
    let r = r?;
    let ann = ann.transpose()?.unwrap_or_default();
    let summary = search::summary(&r, &ann);
    if a.jsonl {
        out.json(&r)?;
        for x in &ann {
            out.json(x)?;
        }
        out.json(&serde_json::json!({ "summary": summary }))?;
    } else {
        out.line(&format!(
            "exact search over {} {} vectors of dimension {}, {} threads\n  part: {:.0} + {:.0} bytes/vector (Parquet + raw matrix); open {:.2} s, +{:.0} MiB resident\n  top-{} query: median {:.2} ms, p95 {:.2} ms over {} queries{}",
            r.vectors,
            r.dtype,
            r.dim,
            r.threads,
            r.bytes_per_vector,
            r.matrix_bytes_per_vector,
            r.load_s,
            r.load_memory_mib,
            r.top_k,
            r.query_ms_median,
            r.query_ms_p95,
            r.queries,
            r.top10_agreement_with_f32
                .map(|x| format!("\n  top-10 agreement with exact f32 search: {x:.4}"))
                .unwrap_or_default()
        ))?;
        if let Some(x) = ann.first() {
            out.line(&format!(
                "HNSW (M {}, efConstruction {}): built in {:.1} s, {:.0} bytes/vector saved",
                x.connections, x.ef_construction, x.build_s, x.graph_bytes_per_vector
            ))?;
        }
        for x in &ann {
            out.line(&format!(
                "  ef {:>4}: recall@10 {:.3} ((1+0.01)-approximate: {:.3}), median {:.3} ms, p95 {:.3} ms",
                x.ef_search,
                x.recall_at_10,
                x.epsilon_recall_at_10,
                x.query_ms_median,
                x.query_ms_p95
            ))?;
        }
    }
    Ok(0)
}

fn load(a: &BenchArgs, url: &str, out: &mut Out) -> Result<usize> {
    if !(a.duration_s > 0.0 && a.duration_s <= 3600.0) {
        anyhow::bail!(
            "--duration-s {} must be more than 0 and at most 3600",
            a.duration_s
        );
    }
    let images = a
        .images
        .clone()
        .unwrap_or_else(|| skyscribe::data_root().join("eurosat/images/Forest"));
    let (mut paths, errors) = collect_images(&[images]);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    paths.truncate(a.limit);
    let bodies = paths
        .iter()
        .map(|p| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display())))
        .collect::<Result<Vec<_>>>()?;
    let r = skyscribe::bench::http::run(&skyscribe::bench::http::LoadOptions {
        url: url.to_string(),
        bodies: std::sync::Arc::new(bodies),
        clients: a.clients,
        duration: std::time::Duration::from_secs_f64(a.duration_s),
        token: a.token.clone(),
        server_pid: a.server_pid,
        honour_retry_after: a.honour_retry_after,
    })?;
    out.record(a.jsonl, &r, || {
        let statuses: Vec<String> = r.statuses.iter().map(|(s, n)| format!("{s}: {n}")).collect();
        let memory = match (r.server_peak_rss_mib, r.server_end_rss_mib) {
            (Some(p), Some(e)) => format!("\n  server memory: peak {p:.0} MiB, at the end {e:.0} MiB"),
            _ => String::new(),
        };
        format!(
            "{} clients for {:.1} s on {}\n  {} requests ({}), {} without an answer\n  {:.1} answers/s; latency of 200s: p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}{}",
            r.clients,
            r.duration_s,
            r.url,
            r.requests,
            statuses.join(", "),
            r.transport_errors,
            r.ok_per_s,
            r.ok_p50_ms,
            r.ok_p95_ms,
            r.ok_p99_ms,
            r.ok_max_ms,
            r.shed_p99_ms
                .map(|s| format!("; 503s answered in p99 {s:.0} ms"))
                .unwrap_or_default(),
            memory
        )
    })?;
    Ok(0)
}
