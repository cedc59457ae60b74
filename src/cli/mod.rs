//! The command line: one file per command family, each with its arguments (clap) and its
//! output (tables for people, JSON Lines with `--jsonl`), over library calls. Nothing here
//! computes what a library user could want; `main.rs` only parses and hands over to [`run`].
//!
//! | file | commands |
//! |---|---|
//! | `labels.rs` | `describe`, `labels` |
//! | `embed.rs` | `embed` |
//! | `caption.rs` | `caption`, `import-clipcap` |
//! | `openclip.rs` | `import-openclip` |
//! | `eval.rs` | `eval zero-shot`, `eval captions`, `eval retrieval`, `eval benchmark` |
//! | `classify.rs` | `train classifier`, `eval classify`, `eval few-shot` |
//! | `index.rs` | `index build`, `index info`, `search`, `locate` |
//! | `scan.rs` | `scan` |
//! | `serve.rs` | `serve` |
//! | `train.rs` | `train captioner`, `train clip` |
//! | `export.rs` | `export` |
//! | `bench.rs` | `bench` |
//! | `common.rs` | options most commands share, the device, image walks with progress |
//! | `output.rs` | the one writer of results (a closed pipe ends output quietly) |

mod bench;
mod caption;
mod classify;
mod common;
mod embed;
mod eval;
mod export;
mod index;
mod labels;
mod openclip;
mod output;
mod scan;
mod serve;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skyscribe",
    version,
    about = "What is in a satellite or aerial image, with CLIP"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Labels from a sensible default vocabulary of land cover and scenes, and a caption.
    Describe(labels::DescribeArgs),
    /// Zero-shot labels from a label set.
    Labels(labels::LabelsArgs),
    /// Projected CLIP embeddings (before L2 normalisation) of texts and images.
    Embed(embed::EmbedArgs),
    /// Captions from a ClipCap captioner (greedy, beam or nucleus-sampled decoding).
    Caption(caption::CaptionArgs),
    /// Convert a checkpoint saved by the reference ClipCap code into a captioner directory.
    ImportClipcap(caption::ImportArgs),
    /// Convert an OpenCLIP checkpoint (RemoteCLIP, GeoRSCLIP, open_clip fine-tunes; ViT image
    /// towers) into a CLIP model folder in the Hugging Face layout.
    ImportOpenclip(openclip::ImportArgs),
    /// Copy a model or captioner folder without its training checkpoint, weights in f16 or f32
    /// (f16 halves the size; models compute in f32 either way).
    Export(export::ExportArgs),
    /// Build an index of image embeddings for search (Parquet parts, sharded across a cluster).
    #[command(subcommand)]
    Index(index::IndexCommand),
    /// Search an index by text, by image, or both (with negatives).
    Search(index::SearchArgs),
    /// Find a feature in an image: scores of its patches against a text, and a heatmap.
    Locate(index::LocateArgs),
    /// Whole scenes (GeoTIFF) tiled and labelled: GeoJSON tiles, class-map GeoTIFFs, heatmaps.
    Scan(scan::ScanArgs),
    /// An HTTP API and web page: labels, captions, embeddings and search, with request
    /// batching, limits and load shedding (binds 127.0.0.1:8080 by default).
    Serve(serve::ServeArgs),
    /// Measure CLIP on labelled data, captions against references, and image–text retrieval.
    #[command(subcommand)]
    Eval(eval::EvalCommand),
    /// Train a captioner or CLIP.
    #[command(subcommand)]
    Train(train::TrainCommand),
    /// Images per second of the image pipeline (ViT-B/32 shapes, random weights by default), or
    /// the time of a ClipCap training step.
    Bench(bench::BenchArgs),
}

/// Runs a parsed command line; `Ok(n)`: how many inputs could not be read (the run's exit
/// status is 1 when any could not).
impl Cli {
    /// Whether the command is `serve`, which runs until stopped (see `main`).
    pub fn is_server(&self) -> bool {
        matches!(self.command, Command::Serve(_))
    }
}

pub fn run(cli: Cli) -> Result<usize> {
    if let Some(line) = interrupted_line(&cli.command) {
        exit_130_on_ctrl_c(line);
    }
    match cli.command {
        Command::Describe(a) => labels::describe(a),
        Command::Labels(a) => labels::labels(a),
        Command::Embed(a) => embed::run(a),
        Command::Caption(a) => caption::caption(a),
        Command::ImportClipcap(a) => caption::import(a),
        Command::ImportOpenclip(a) => openclip::import(a),
        Command::Export(a) => export::run(a),
        Command::Index(c) => index::run(c),
        Command::Search(a) => index::search(a),
        Command::Locate(a) => index::locate_text(a),
        Command::Scan(a) => scan::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Eval(c) => eval::run(c),
        Command::Train(c) => train::run(c),
        Command::Bench(a) => bench::run(a),
    }
}

/// What Ctrl-C prints for `command`: what is kept and what a rerun does. `None` for the server,
/// which stops gracefully on Ctrl-C by itself.
fn interrupted_line(command: &Command) -> Option<&'static str> {
    Some(match command {
        Command::Serve(_) => return None,
        Command::Index(index::IndexCommand::Build(_)) => {
            "skyscribe: interrupted; the images encoded so far are saved: rerun the same command \
             to resume where it stopped\n"
        }
        Command::Train(_) => {
            "skyscribe: interrupted; rerun with --resume to continue from the last checkpoint\n"
        }
        Command::Describe(_)
        | Command::Labels(_)
        | Command::Embed(_)
        | Command::Caption(_)
        | Command::Eval(_) => {
            "skyscribe: interrupted; the embeddings computed so far are in the cache: a rerun \
             skips them\n"
        }
        _ => "skyscribe: interrupted; nothing more was written\n",
    })
}

/// On Ctrl-C (SIGINT): `line` on stderr, then exit status 130 (128 + SIGINT, what shells
/// report for an interrupted command). Files are written atomically, so whatever was being
/// written is simply not there yet.
fn exit_130_on_ctrl_c(line: &'static str) {
    // SAFETY: the handler calls only async-signal-safe functions (write(2), _exit(2)) on a
    // 'static buffer.
    let registered = unsafe {
        signal_hook_registry::register(libc::SIGINT, move || {
            libc::write(2, line.as_ptr().cast(), line.len());
            libc::_exit(130);
        })
    };
    if let Err(e) = registered {
        output::report(&format!(
            "cannot watch for Ctrl-C ({e}); it stops without a word"
        ));
    }
}

/// The closing line of a run in which `failed` inputs could not be read: what was written and
/// what was not, as it was.
pub fn failed_inputs_line(failed: usize) -> String {
    let inputs = if failed == 1 {
        "1 input".to_string()
    } else {
        format!("{failed} inputs")
    };
    if output::wrote_anything() {
        format!("{inputs} could not be read (named above); the results of the others were written")
    } else {
        format!("{inputs} could not be read (named above); nothing was written")
    }
}

/// `skyscribe: <message>` on stderr, for `main`.
pub fn report_error(message: &str) {
    output::report(message);
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every option and argument of every command says what it is for in `--help`.
    #[test]
    fn every_option_is_described() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} --{id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (no summary)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "skyscribe", &mut missing);
        assert!(missing.is_empty(), "undescribed:\n{}", missing.join("\n"));
    }
}
