//! The integration tests, one binary (so candle and the rest are linked once, not once per
//! file): a module per area, sharing `common` (the binary runner, fixtures, the data folder).
//!
//! Tests that need the shared data sets (`SKYSCRIBE_DATA`, default `../shared/data`) say
//! `SKIPPED` when it is absent, and fail under `CI=true`.

mod book;
mod browser;
mod caption_metrics;
mod classify;
mod cli;
mod clip_parity;
mod clipcap;
mod common;
mod docs;
mod eval;
mod first_hour;
#[cfg(feature = "gdal")]
mod gdal;
mod gpt2_parity;
mod index;
mod layers;
mod openclip;
mod preprocess_parity;
mod remote;
mod scan;
mod scene;
mod serve;
mod stac;
mod tokenizer_parity;
mod train;
mod train_cli;
