//! A small byte-level BPE tokenizer trained on captions (the `tokenizers` crate's trainer), for
//! models trained from scratch: a 49k/50k-token vocabulary would dominate a mini model's size.
//!
//! Lower-cased, byte-level (any text encodes), with CLIP's `<|startoftext|>` (id 0) and
//! `<|endoftext|>` (id 1) wrapped around every encoded text; GPT-2-style decoding.

use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

pub const START: &str = "<|startoftext|>";
pub const END: &str = "<|endoftext|>";

/// Trains a tokenizer of at most `vocab_size` tokens on `texts`.
pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Tokenizer> {
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer
        .with_normalizer(Some(Lowercase))
        .map_err(|e| anyhow!("{e}"))?
        .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
        .with_decoder(Some(ByteLevel::default()));
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![
            AddedToken::from(START, true),
            AddedToken::from(END, true),
        ])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    tokenizer
        .train(&mut trainer, texts.iter())
        .map_err(|e| anyhow!("training the tokenizer: {e}"))?;
    let start = tokenizer
        .token_to_id(START)
        .ok_or_else(|| anyhow!("no start token"))?;
    let end = tokenizer
        .token_to_id(END)
        .ok_or_else(|| anyhow!("no end token"))?;
    let template = TemplateProcessing::builder()
        .try_single(format!("{START} $A {END}"))
        .map_err(|e| anyhow!("{e}"))?
        .special_tokens(vec![(START, start), (END, end)])
        .build()
        .map_err(|e| anyhow!("{e}"))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// Saves `tokenizer.json` atomically.
pub fn save(tokenizer: &Tokenizer, path: &Path) -> Result<()> {
    let json = tokenizer
        .to_string(false)
        .map_err(|e| anyhow!("serialising the tokenizer: {e}"))?;
    crate::atomic::write_file(path, json.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trained_tokenizer_round_trips_and_wraps() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("many planes are parked near building {i}."))
            .collect();
        let tok = train_bpe(&texts, 300).unwrap();
        let enc = tok.encode("Many planes are parked.", true).unwrap();
        let ids = enc.get_ids();
        assert_eq!(ids.first(), Some(&0));
        assert_eq!(ids.last(), Some(&1));
        assert!(ids.len() < 10, "merges learned: {ids:?}");
        let text = tok.decode(ids, true).unwrap();
        assert_eq!(text, "many planes are parked.");
        assert!(tok.token_to_id(".").is_some());
    }
}
