//! Text to token ids with a model's `tokenizer.json` (the `tokenizers` crate), truncated to the
//! model's context the way transformers truncates: the end token is always kept.

use std::path::Path;

use anyhow::{Result, anyhow};

/// Reads a `tokenizer.json`; the error names the file.
pub fn load_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    tokenizers::Tokenizer::from_file(path)
        .map_err(|e| anyhow!("{}: not a valid tokenizer.json: {e}", path.display()))
}

/// A CLIP (or any BOS/EOS-wrapped BPE) tokenizer bound to a context length.
pub struct TextTokenizer {
    inner: tokenizers::Tokenizer,
    context_length: usize,
    end_id: Option<u32>,
}

impl TextTokenizer {
    /// Loads `tokenizer.json`; `context_length` is the model's `max_position_embeddings`.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        Ok(Self::new(load_json(path)?, context_length))
    }

    /// Wraps a loaded tokenizer; `context_length` is the model's `max_position_embeddings`.
    pub fn new(inner: tokenizers::Tokenizer, context_length: usize) -> Self {
        // CLIP's end token; GPT-2's single special token plays the same role.
        let end_id = inner.token_to_id("<|endoftext|>");
        Self {
            inner,
            context_length,
            end_id,
        }
    }

    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Ids with the tokenizer's special tokens, cut to the context length keeping the last
    /// (end) token, as `tokenizer(text, truncation=True, max_length=context)` gives.
    ///
    /// Only as much of the text is tokenized as the context can hold: a prefix cut before a
    /// whitespace character (where a word ends, for CLIP's and GPT-2's pre-tokenizers alike),
    /// grown until its tokens fill the context. A 15 MB text costs a few kilobytes' work, not
    /// gigabytes of token bookkeeping, and gives the same ids as tokenizing it whole.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut len = self.context_length.max(1) * 16;
        loop {
            let Some((part, at_space)) = prefix(text, len) else {
                return self.encode_whole(text);
            };
            let ids = self.encode_whole(part)?;
            // Cut inside a word (a text with no spaces), only that word's tokens can differ:
            // ask for a margin of tokens past the context.
            let enough = if at_space {
                self.context_length
            } else {
                self.context_length * 2
            };
            if ids.len() >= enough {
                return Ok(ids);
            }
            len = len.saturating_mul(4);
        }
    }

    /// [`Self::encode`] on the whole text.
    fn encode_whole(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(|e| {
            let shown: String = text.chars().take(80).collect();
            anyhow!("cannot tokenize {shown:?}: {e}")
        })?;
        let mut ids = enc.get_ids().to_vec();
        if ids.len() > self.context_length {
            // The last token is the end token the post-processor added: it survives the cut.
            let last = *ids.last().unwrap();
            ids.truncate(self.context_length);
            *ids.last_mut().unwrap() = last;
        }
        Ok(ids)
    }

    /// Encodes several texts and pads them to the longest with the end token (which is what
    /// CLIP's tokenizer pads with; causal attention makes the padding invisible anyway).
    pub fn encode_batch_padded(&self, texts: &[String]) -> Result<Vec<Vec<u32>>> {
        let rows: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<_>>()?;
        let rows: Vec<&[u32]> = rows.iter().map(Vec::as_slice).collect();
        Ok(self.pad(&rows))
    }

    /// Token rows padded to the longest with the end token, as [`Self::encode_batch_padded`].
    pub fn pad(&self, rows: &[&[u32]]) -> Vec<Vec<u32>> {
        let longest = rows.iter().map(|r| r.len()).max().unwrap_or(0);
        let pad = self.end_id.unwrap_or(0);
        rows.iter()
            .map(|r| {
                let mut row = r.to_vec();
                row.resize(longest, pad);
                row
            })
            .collect()
    }
}

/// The first `len` bytes of `text` or a little more: up to the next whitespace character (within
/// 256 bytes; `true` with it), else to a character boundary (`false`). `None`: the text is no
/// longer than that.
fn prefix(text: &str, len: usize) -> Option<(&str, bool)> {
    if text.len() <= len {
        return None;
    }
    let mut at = len;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    let tail = &text[at..text.floor_char_boundary(text.len().min(at + 256)).max(at)];
    Some(match tail.find(char::is_whitespace) {
        Some(i) => (&text[..at + i], true),
        None => (&text[..at], false),
    })
}
