//! skyscribe: what is in a satellite or aerial image, with CLIP.
//!
//! The modules follow the data, in layers that depend only on the layers above them
//! (`tests/it/layers.rs` checks it):
//!
//! | layer | module | owns |
//! |---|---|---|
//! | plumbing | [`atomic`] | writing files and folders atomically |
//! | | [`progress`] | progress bars and log lines beside them |
//! | | [`canvas`] | an RGB picture with text (DejaVu Sans), lines and fills, saved as PNG |
//! | | [`simd`] | the CPU's vector instruction set, and loops compiled once per set |
//! | | [`geoparquet`] | GeoParquet 1.1 pieces: WKB polygons and the `geo` metadata |
//! | inputs | [`imagery`] | decoding files (JPEG, PNG, WebP, multi-band TIFF) and CLIP preprocessing |
//! | | [`tokenizer`] | text to token ids with a model's `tokenizer.json` |
//! | | [`labels`] | label sets, presets, wordings and prompt templates |
//! | | [`data`] | labelled datasets behind one trait; captioned image sets |
//! | | [`scene`] | whole scenes (GeoTIFF / BigTIFF, files or URLs) read by bands of rows; georeferencing and CRS as GDAL reads them → WGS 84; nodata; GeoTIFF writing |
//! | networks | [`models`] | CLIP, GPT-2, ClipCap mappers, one model a file, weights checked on load |
//! | running models | [`builtin`] | the mini CLIP and captioner built into the binary (the offline default) |
//! | | [`hub`] | model specs: a local directory, a built-in name or a Hugging Face hub id; export |
//! | | [`openclip`] | OpenCLIP checkpoints (RemoteCLIP, GeoRSCLIP) into the Hugging Face CLIP layout |
//! | | [`encoder`] | a CLIP model with its tokenizer and preprocessor; the batched image pipeline |
//! | | [`cache`] | the on-disk embedding cache; embedding lists of images through it |
//! | tasks | [`zeroshot`] | scoring images against a label set |
//! | | [`classify`] | classifiers learned from labelled embeddings (linear probe, prototypes, zero-shot prior), training areas over scenes |
//! | | [`caption`] | ClipCap captioners: mapping network + GPT-2, greedy / beam / sampled decoding, checkpoint import |
//! | | [`scan`] | scenes tiled to every edge and embedded while the next rows decode; GeoJSON, class maps, heatmaps |
//! | | [`index`] | archive search: Parquet index parts built in shards, incremental and resumable; exact top-k; patch scores |
//! | measuring & training | [`eval`] | zero-shot evaluation (metrics, wording sensitivity, reports, plots), caption metrics, retrieval recall |
//! | | [`train`] | one training loop; the ClipCap and CLIP trainers, AdamW, schedules, checkpoints, BPE |
//! | | [`bench`] | throughput measurement with the real model shapes and random weights; an HTTP load generator |
//! | surfaces | [`serve`] | the HTTP API and web page: request batching on a model thread, limits, 503s, metrics |

pub mod atomic;
pub mod bench;
pub mod builtin;
pub mod cache;
pub mod canvas;
pub mod caption;
pub mod classify;
pub mod data;
pub mod encoder;
pub mod eval;
pub mod geoparquet;
pub mod hub;
pub mod imagery;
pub mod index;
pub mod labels;
pub mod models;
pub mod openclip;
pub mod progress;
pub mod scan;
pub mod scene;
pub mod serve;
pub mod simd;
pub mod tokenizer;
pub mod train;
pub mod zeroshot;

/// Where the shared data sets live: `SKYSCRIBE_DATA`, else `../shared/data`.
pub fn data_root() -> std::path::PathBuf {
    std::env::var_os("SKYSCRIBE_DATA")
        .map(Into::into)
        .unwrap_or_else(|| std::path::PathBuf::from("../shared/data"))
}

/// skyscribe's cache folder: `SKYSCRIBE_CACHE`, else `$XDG_CACHE_HOME/skyscribe`, else
/// `~/.cache/skyscribe`. Embeddings, built-in models and images unpacked from parquet files
/// live in subfolders.
pub fn cache_root() -> std::path::PathBuf {
    if let Some(p) = std::env::var_os("SKYSCRIBE_CACHE") {
        return p.into();
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::path::PathBuf::from(".cache"))
        .join("skyscribe")
}
