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
//! | `shell.rs` | `completions`, `man`, and the examples under every command's `--help` |
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
mod shell;
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
    #[command(after_help = shell::examples::DESCRIBE)]
    Describe(labels::DescribeArgs),
    /// Zero-shot labels from a label set.
    #[command(after_help = shell::examples::LABELS)]
    Labels(labels::LabelsArgs),
    /// Projected CLIP embeddings (before L2 normalisation) of texts and images.
    #[command(after_help = shell::examples::EMBED)]
    Embed(embed::EmbedArgs),
    /// Captions from a ClipCap captioner (greedy, beam or nucleus-sampled decoding).
    #[command(after_help = shell::examples::CAPTION)]
    Caption(caption::CaptionArgs),
    /// Convert a checkpoint saved by the reference ClipCap code into a captioner directory.
    #[command(after_help = shell::examples::IMPORT_CLIPCAP)]
    ImportClipcap(caption::ImportArgs),
    /// Convert an OpenCLIP checkpoint (RemoteCLIP, GeoRSCLIP, open_clip fine-tunes; ViT image
    /// towers) into a CLIP model folder in the Hugging Face layout.
    #[command(after_help = shell::examples::IMPORT_OPENCLIP)]
    ImportOpenclip(openclip::ImportArgs),
    /// Copy a model or captioner folder without its training checkpoint, weights in f16 or f32
    /// (f16 halves the size; models compute in f32 either way).
    #[command(after_help = shell::examples::EXPORT)]
    Export(export::ExportArgs),
    /// Build an index of image embeddings for search (Parquet parts, sharded across a cluster).
    #[command(subcommand)]
    #[command(after_help = shell::examples::INDEX)]
    Index(index::IndexCommand),
    /// Search an index by text, by image, or both (with negatives).
    #[command(after_help = shell::examples::SEARCH)]
    Search(index::SearchArgs),
    /// Find a feature in an image: scores of its patches against a text, and a heatmap.
    #[command(after_help = shell::examples::LOCATE)]
    Locate(index::LocateArgs),
    /// Whole scenes (GeoTIFF) tiled and labelled: GeoJSON tiles, class-map GeoTIFFs, heatmaps.
    #[command(after_help = shell::examples::SCAN)]
    Scan(scan::ScanArgs),
    /// An HTTP API and web page: labels, captions, embeddings and search, with request
    /// batching, limits and load shedding (binds 127.0.0.1:8080 by default).
    #[command(after_help = shell::examples::SERVE)]
    Serve(serve::ServeArgs),
    /// Measure CLIP on labelled data, captions against references, and image–text retrieval.
    #[command(subcommand)]
    #[command(after_help = shell::examples::EVAL)]
    Eval(eval::EvalCommand),
    /// Train a captioner or CLIP.
    #[command(subcommand)]
    #[command(after_help = shell::examples::TRAIN)]
    Train(train::TrainCommand),
    /// Images per second of the image pipeline (ViT-B/32 shapes, random weights by default), or
    /// the time of a ClipCap training step.
    #[command(after_help = shell::examples::BENCH)]
    Bench(bench::BenchArgs),
    /// A shell completion script (bash, zsh, fish, powershell, elvish) on stdout.
    #[command(after_help = shell::examples::COMPLETIONS)]
    Completions(shell::CompletionsArgs),
    /// The man page (roff) on stdout, or every command's page into a folder.
    #[command(after_help = shell::examples::MAN)]
    Man(shell::ManArgs),
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
        Command::Completions(a) => shell::completions(a),
        Command::Man(a) => shell::man(a),
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

    /// The command lines of a help text's examples: `\` continuations joined, words split as
    /// a shell splits them (double quotes), a trailing comment, pipe or redirection left off.
    fn example_lines(help: &str) -> Vec<Vec<String>> {
        let joined = help.replace("\\\n", " ");
        let mut lines = Vec::new();
        for line in joined
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("skyscribe "))
        {
            let (mut words, mut word, mut quoted, mut any) =
                (Vec::new(), String::new(), false, false);
            for c in line.chars() {
                match c {
                    '"' => {
                        quoted = !quoted;
                        any = true;
                    }
                    '#' | '>' | '|' | '&' | ';' if !quoted => break,
                    c if c.is_whitespace() && !quoted => {
                        if any {
                            words.push(std::mem::take(&mut word));
                            any = false;
                        }
                    }
                    c => {
                        word.push(c);
                        any = true;
                    }
                }
            }
            if any {
                words.push(word);
            }
            lines.push(words);
        }
        lines
    }

    /// Every command's `--help` ends with examples, and every example is a command line
    /// skyscribe accepts (names, options and values as they are today).
    #[test]
    fn every_command_has_examples_that_parse() {
        fn walk(cmd: &clap::Command, path: &str, problems: &mut Vec<String>, count: &mut usize) {
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let name = format!("{path} {}", sub.get_name());
                let help = sub
                    .get_after_help()
                    .map(|h| h.to_string())
                    .unwrap_or_default();
                let lines = example_lines(&help);
                if !help.starts_with("Example") || lines.is_empty() {
                    problems.push(format!("{name}: no examples"));
                }
                for words in lines {
                    *count += 1;
                    if !words.join(" ").starts_with(&name) {
                        problems.push(format!("{name}: an example of another command: {words:?}"));
                    }
                    if let Err(e) = Cli::try_parse_from(&words) {
                        problems.push(format!("{}: {}", words.join(" "), e.kind()));
                    }
                }
                walk(sub, &name, problems, count);
            }
        }
        use clap::Parser;
        let (mut problems, mut count) = (Vec::new(), 0);
        walk(&Cli::command(), "skyscribe", &mut problems, &mut count);
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(count >= 60, "only {count} examples");
    }

    #[test]
    fn a_man_page_for_every_command() {
        let pages = super::shell::man_pages(Cli::command()).unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for expected in [
            "skyscribe.1",
            "skyscribe-scan.1",
            "skyscribe-index-build.1",
            "skyscribe-eval-few-shot.1",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert_eq!(pages.len(), 30);
        let (_, scan) = pages.iter().find(|(n, _)| n == "skyscribe-scan.1").unwrap();
        let scan = String::from_utf8_lossy(scan);
        assert!(scan.contains(".TH skyscribe-scan 1"), "{}", &scan[..200]);
        assert!(scan.contains("skyscribe scan assets/samples/eurosat\\-mosaic.tif"));
    }

    #[test]
    fn completions_know_every_command() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "skyscribe", &mut script);
            let script = String::from_utf8(script).unwrap();
            for word in [
                "describe",
                "scan",
                "few-shot",
                "--heatmap-label",
                "completions",
            ] {
                assert!(script.contains(word), "{shell}: no {word}");
            }
        }
    }

    /// Every `skyscribe …` command line in the README and the book parses as the command line
    /// is today (options renamed or removed show up here). Lines with a placeholder (`…`,
    /// `...`) or a command substitution are left out.
    #[test]
    fn the_books_command_lines_parse() {
        use clap::Parser;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = vec![root.join("README.md")];
        for e in std::fs::read_dir(root.join("docs/src")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "md") {
                files.push(p);
            }
        }
        let (mut problems, mut count) = (Vec::new(), 0);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let mut code = String::new();
            let mut inside = false;
            for line in text.lines() {
                if line.starts_with("```") {
                    inside = !inside;
                    continue;
                }
                if inside {
                    code.push_str(line);
                    code.push('\n');
                }
            }
            let code = code.replace("cargo run --release -- ", "skyscribe ");
            for words in example_lines(&code) {
                let line = words.join(" ");
                if line.contains('…') || line.contains("...") || line.contains("$(") {
                    continue;
                }
                count += 1;
                if let Err(e) = Cli::try_parse_from(&words) {
                    let name = file.file_name().unwrap().to_string_lossy();
                    problems.push(format!("{name}: {line}: {}", e.kind()));
                }
            }
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(count >= 50, "only {count} command lines found");
    }
}
