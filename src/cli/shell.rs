//! `completions` (shell completion scripts, clap_complete) and `man` (man pages, clap_mangen),
//! and the examples every command's `--help` ends with.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};

use super::Cli;
use super::output::report;

#[derive(Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script of `shell` on stdout.
pub fn completions(a: CompletionsArgs) -> Result<usize> {
    let mut cmd = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "skyscribe", &mut script);
    // Through the one result writer: `skyscribe completions bash | head` ends quietly.
    super::output::Out::new().line(String::from_utf8_lossy(&script).trim_end())?;
    Ok(0)
}

#[derive(Args)]
pub struct ManArgs {
    /// Write a page for every command into this folder (skyscribe.1, skyscribe-labels.1,
    /// skyscribe-index-build.1, …) instead of printing skyscribe.1.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// `skyscribe.1` on stdout, or every command's page into `--out`.
pub fn man(a: ManArgs) -> Result<usize> {
    let cmd = Cli::command();
    let Some(dir) = a.out else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        super::output::Out::new().line(String::from_utf8_lossy(&page).trim_end())?;
        return Ok(0);
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let pages = man_pages(cmd)?;
    for (name, page) in &pages {
        skyscribe::atomic::write_file(&dir.join(name), page)?;
    }
    report(&format!(
        "wrote {} man pages to {}",
        pages.len(),
        dir.display()
    ));
    Ok(0)
}

/// Every command's man page, `(file name, roff)`: `skyscribe-index-build.1` for `index build`.
pub fn man_pages(cmd: clap::Command) -> Result<Vec<(String, Vec<u8>)>> {
    fn walk(cmd: clap::Command, name: String, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
        let cmd = cmd.name(name.clone()).bin_name(name.replace('-', " "));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
        out.push((format!("{name}.1"), page));
        for sub in cmd.get_subcommands() {
            if sub.get_name() != "help" {
                walk(sub.clone(), format!("{name}-{}", sub.get_name()), out)?;
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(cmd, "skyscribe".into(), &mut out)?;
    Ok(out)
}

/// The examples under each command's `--help`: a few lines that run as written from the
/// repository's root (the sample images, the shared data sets in `../shared/data`) or say which
/// file of yours they stand for.
pub mod examples {
    pub const DESCRIBE: &str = "Examples:
  skyscribe describe assets/samples/eurosat-river.jpg
  skyscribe describe --no-caption --top-k 3 photos/
  skyscribe describe --model openai/clip-vit-base-patch32 --jsonl scene.jpg";
    pub const LABELS: &str = "Examples:
  skyscribe labels --labels eurosat assets/samples/eurosat-river.jpg
  skyscribe labels --labels \"harbor,airport,forest\" --template \"an aerial photo of a {}.\" --top-k 3 photos/
  skyscribe labels --classifier eurosat.safetensors --jsonl photos/";
    pub const EMBED: &str = "Examples:
  skyscribe embed --jsonl assets/samples/eurosat-river.jpg
  skyscribe embed --text \"a satellite photo of a harbor.\" --jsonl";
    pub const CAPTION: &str = "Examples:
  skyscribe caption assets/samples/eurosat-river.jpg
  skyscribe caption --decode beam --beam-size 5 --jsonl photos/
  skyscribe caption --decode sample --top-p 0.9 --seed 1 assets/samples/eurosat-river.jpg";
    pub const IMPORT_CLIPCAP: &str = "Example:
  skyscribe import-clipcap --weights coco_weights.pt --gpt2 gpt2 --clip openai/clip-vit-base-patch32 \\
    --mapping mlp --out clipcap-coco/";
    pub const IMPORT_OPENCLIP: &str = "Examples:
  skyscribe import-openclip --weights RemoteCLIP-ViT-B-32.pt --arch ViT-B-32 --out remoteclip-b32
  skyscribe import-openclip --weights RS5M_ViT-B-32.pt --arch ViT-B-32 --out georsclip-b32";
    pub const EXPORT: &str = "Examples:
  skyscribe export --from skyscribe-mini-captioner --to captioner-f16/
  skyscribe export --from my-clip/ --to my-clip-f32/ --dtype f32";
    pub const INDEX: &str = "Examples:
  skyscribe index build --index idx ../shared/data/rsicd/test
  skyscribe index info --index idx
  skyscribe index optimize --index idx";
    pub const INDEX_BUILD: &str = "Examples:
  skyscribe index build --index idx ../shared/data/rsicd/test
  skyscribe index build --index idx --add more-photos/
  skyscribe index build --index idx --shard 0/4 rsicd:../shared/data/rsicd/train";
    pub const INDEX_INFO: &str = "Example:
  skyscribe index info --index idx --jsonl";
    pub const INDEX_OPTIMIZE: &str = "Example:
  skyscribe index optimize --index idx --connections 16";
    pub const SEARCH: &str = "Examples:
  skyscribe search --index idx --text \"a harbour with many boats\"
  skyscribe search --index idx --text \"2:many boats in a harbor\" --negative-text bridge --top-k 5
  skyscribe search --index idx --image assets/samples/eurosat-river.jpg --jsonl --html sheet.html";
    pub const LOCATE: &str = "Example:
  skyscribe locate --text \"a river\" --patch 32 --heatmap heat/ assets/samples/eurosat-river.jpg";
    pub const SCAN: &str = "Examples:
  skyscribe scan assets/samples/eurosat-mosaic.tif --labels eurosat --tile 64 --stride 32 --out tiles.geojson
  skyscribe scan assets/samples/eurosat-mosaic.tif --labels eurosat --tile 64 --stride 32 \\
    --class-map classes.tif --heatmap heat.png --heatmap-label River
  skyscribe scan S2_tile.tif --bands 4,3,2 --stretch p2-98 --jsonl";
    pub const SERVE: &str = "Examples:
  skyscribe serve                                   # http://127.0.0.1:8080, built-in models
  skyscribe serve --index idx --classifier eurosat.safetensors
  skyscribe serve --model openai/clip-vit-base-patch32 --no-caption --max-batch 64";
    pub const EVAL: &str = "Examples:
  skyscribe eval zero-shot --dataset folder:../shared/data/eurosat/images \\
    --split ../shared/data/eurosat/splits/test-100-per-class.txt --labels eurosat
  skyscribe eval captions --data rsicd:../shared/data/rsicd/test
  skyscribe eval retrieval --data rsicd:../shared/data/rsicd/test";
    pub const EVAL_ZERO_SHOT: &str = "Examples:
  skyscribe eval zero-shot --dataset folder:../shared/data/eurosat/images \\
    --split ../shared/data/eurosat/splits/test-100-per-class.txt --labels eurosat --report report/
  skyscribe eval zero-shot --dataset rsicd-scenes:../shared/data/rsicd/test --labels rsicd";
    pub const EVAL_CAPTIONS: &str = "Examples:
  skyscribe eval captions --data rsicd:../shared/data/rsicd/test
  skyscribe eval captions --predictions preds.jsonl --references ../shared/data/rsicd/test/captions.jsonl";
    pub const EVAL_CLASSIFY: &str = "Example:
  skyscribe eval classify --classifier eurosat.safetensors --dataset folder:../shared/data/eurosat/images \\
    --split ../shared/data/eurosat/splits/test.txt";
    pub const EVAL_FEW_SHOT: &str = "Example:
  skyscribe eval few-shot --dataset folder:../shared/data/eurosat/images \\
    --train-split ../shared/data/eurosat/splits/train.txt \\
    --test-split ../shared/data/eurosat/splits/test-100-per-class.txt --labels eurosat --report few-shot/";
    pub const EVAL_RETRIEVAL: &str = "Example:
  skyscribe eval retrieval --data rsicd:../shared/data/rsicd/test --report retrieval/";
    pub const EVAL_BENCHMARK: &str = "Example:
  skyscribe eval benchmark --model skyscribe-mini --model remoteclip-b32 --out bench/";
    pub const TRAIN: &str = "Examples:
  skyscribe train classifier --data folder:../shared/data/eurosat/images \\
    --split ../shared/data/eurosat/splits/train.txt --out eurosat.safetensors
  skyscribe train clip --data rsicd:../shared/data/rsicd/train --config mini-128 --out clip-mini/
  skyscribe train captioner --data rsicd:../shared/data/rsicd/train --clip skyscribe-mini \\
    --gpt2-config mini --out captioner/";
    pub const TRAIN_CAPTIONER: &str = "Examples:
  skyscribe train captioner --data rsicd:../shared/data/rsicd/train --clip skyscribe-mini \\
    --gpt2-config mini --out captioner/
  skyscribe train captioner --data rsicd:../shared/data/rsicd/train --clip openai/clip-vit-base-patch32 \\
    --gpt2 gpt2 --train-gpt2 --epochs 10 --out captioner-rsicd/ --resume";
    pub const TRAIN_CLIP: &str = "Examples:
  skyscribe train clip --data rsicd:../shared/data/rsicd/train --config mini-128 --out clip-mini/
  skyscribe train clip --data rsicd:../shared/data/rsicd/train --init openai/clip-vit-base-patch32 --out clip-rsicd/";
    pub const TRAIN_CLASSIFIER: &str = "Examples:
  skyscribe train classifier --data folder:../shared/data/eurosat/images \\
    --split ../shared/data/eurosat/splits/train.txt --out eurosat.safetensors
  skyscribe train classifier --data folder:../shared/data/eurosat/images --shots 4 --labels eurosat --out few.safetensors
  skyscribe train classifier --data polygons:areas.geojson@scene.tif --tile 64 --stride 64 --out areas.safetensors";
    pub const BENCH: &str = "Examples:
  skyscribe bench
  skyscribe bench --batch-size 64 --jsonl";
    pub const COMPLETIONS: &str = "Examples:
  skyscribe completions bash > ~/.local/share/bash-completion/completions/skyscribe
  skyscribe completions zsh > ~/.zfunc/_skyscribe
  skyscribe completions fish > ~/.config/fish/completions/skyscribe.fish";
    pub const MAN: &str = "Examples:
  skyscribe man | man -l -
  skyscribe man --out ~/.local/share/man/man1";
}
