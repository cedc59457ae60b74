//! The on-disk embedding cache: one file per image embedding, keyed by the model's identity,
//! the decoding settings, the image file's content hash and the chip rectangle. A second
//! evaluation with other labels or templates only encodes text; an interrupted run resumes from
//! what was written. Entries are written atomically (temporary file + rename) and carry a
//! checksum: a stale or corrupt entry is detected, recomputed and replaced, never trusted.
//!
//! [`embed_samples`] is the one way a list of images (or chips) is embedded through the cache,
//! for evaluation, training and baselines alike.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use indicatif::ProgressBar;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::{ImageRef, Sample};
use crate::encoder::{ClipEncoder, SceneCache};
use crate::imagery::DecodeOptions;
use crate::models::Precision;

/// The embedding cache's default folder: `embeddings/` under [`crate::cache_root`] (which is
/// `$SKYSCRIBE_CACHE` when set).
pub fn default_dir() -> PathBuf {
    crate::cache_root().join("embeddings")
}

const MAGIC: &[u8; 4] = b"SKE1";

/// What embedding the samples cost.
#[derive(Debug, Default, Clone, Serialize, PartialEq)]
pub struct EncodeStats {
    pub encoded: usize,
    pub from_cache: usize,
    /// Cache entries that failed their checks and were recomputed.
    pub corrupt_entries: usize,
    /// `(image, reason)` of images that could not be read.
    pub failed: Vec<(String, String)>,
}

/// Embeds every sample's image; `None` where it could not be read. Cached embeddings are
/// reused, new ones are written to the cache as soon as they are computed.
pub fn embed_samples(
    clip: &ClipEncoder,
    samples: &[Sample],
    cache: Option<&EmbeddingCache>,
    batch_size: usize,
    decode: &DecodeOptions,
    progress: &ProgressBar,
) -> Result<(Vec<Option<Vec<f32>>>, EncodeStats)> {
    use rayon::prelude::*;
    let mut stats = EncodeStats::default();
    let mut out: Vec<Option<Vec<f32>>> = vec![None; samples.len()];
    let mut keys: Vec<Option<String>> = vec![None; samples.len()];
    if let Some(cache) = cache {
        let refs: Vec<_> = samples.iter().map(|s| &s.image).collect();
        let hashes = content_hashes(&refs);
        keys = samples
            .iter()
            .map(|s| hashes.get(&s.image.path).map(|h| cache.key(&s.image, h)))
            .collect();
        let found: Vec<Lookup> = keys
            .par_iter()
            .map(|k| k.as_ref().map_or(Lookup::Missing, |k| cache.get(k)))
            .collect();
        for (i, f) in found.into_iter().enumerate() {
            match f {
                Lookup::Hit(e) => {
                    out[i] = Some(e);
                    stats.from_cache += 1;
                }
                Lookup::Corrupt => stats.corrupt_entries += 1,
                Lookup::Missing => {}
            }
        }
        progress.inc(stats.from_cache as u64);
    }
    let todo: Vec<usize> = (0..samples.len()).filter(|&i| out[i].is_none()).collect();
    let scenes = SceneCache::default();
    clip.embed_batched(
        &todo,
        batch_size,
        |&i| clip.load_pixels_ref(&samples[i].image, decode, &scenes),
        |j, result| {
            let i = todo[j];
            progress.inc(1);
            match result {
                Ok(e) => {
                    if let (Some(cache), Some(key)) = (cache, &keys[i]) {
                        cache.put(key, &e)?;
                    }
                    stats.encoded += 1;
                    out[i] = Some(e);
                }
                Err(err) => stats
                    .failed
                    .push((samples[i].image.display(), format!("{err:#}"))),
            }
            Ok(())
        },
    )?;
    Ok((out, stats))
}

/// Embeds every image of `paths` (through `cache` when given); an unreadable image is an
/// error naming it.
pub fn embed_images(
    clip: &ClipEncoder,
    paths: &[PathBuf],
    cache: Option<&EmbeddingCache>,
    quiet: bool,
) -> Result<Vec<Vec<f32>>> {
    let samples: Vec<Sample> = paths
        .iter()
        .map(|p| Sample {
            image: ImageRef::file(p.clone()),
            labels: vec![],
        })
        .collect();
    let bar = crate::progress::items(samples.len(), "images", "CLIP embeddings", quiet);
    let (embeds, _) = embed_samples(clip, &samples, cache, 32, &DecodeOptions::default(), &bar)?;
    bar.finish_and_clear();
    embeds
        .into_iter()
        .zip(paths)
        .map(|(e, path)| e.ok_or_else(|| anyhow!("{}: cannot read this image", path.display())))
        .collect()
}

/// Where cached embeddings of one model under one set of decoding settings live.
pub struct EmbeddingCache {
    dir: PathBuf,
    model_key: blake3::Hash,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Vec<f32>),
    Missing,
    /// The entry exists but fails its checks; it will be recomputed.
    Corrupt,
}

fn hash_file_sample(h: &mut blake3::Hasher, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let len = f.metadata()?.len();
    h.update(&len.to_le_bytes());
    // The first and last MiB identify a weights file well enough without reading gigabytes.
    let mut buf = vec![0u8; 1 << 20];
    let n = f.read(&mut buf)?;
    h.update(&buf[..n]);
    if len > (2 << 20) {
        f.seek(SeekFrom::End(-(1 << 20)))?;
        let n = f.read(&mut buf)?;
        h.update(&buf[..n]);
    }
    Ok(())
}

/// Feeds a model folder's identity into `h`: its config files, and the size and first and last
/// MiB of its weights.
fn model_files_hash(h: &mut blake3::Hasher, dir: &Path) -> Result<()> {
    for f in [
        "config.json",
        "preprocessor_config.json",
        "model.safetensors",
        "pytorch_model.bin",
    ] {
        let p = dir.join(f);
        if p.is_file() {
            h.update(f.as_bytes());
            hash_file_sample(h, &p)?;
        }
    }
    Ok(())
}

/// A model folder's identity as the cache keys it: two folders with the same fingerprint hold
/// the same model (copies, links, or the built-in model written out again).
pub fn model_fingerprint(dir: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    model_files_hash(&mut h, dir)?;
    Ok(h.finalize())
}

/// The identity of `clip`'s image embeddings under `decode`: the model files, its
/// preprocessing, the bands read and whether JPEGs were decoded in draft mode. Equal keys give
/// embeddings of the same pixels that are comparable: equal in the same precision, within
/// reduced precision's rounding across precisions (cosine ≥ 0.99999 measured for bf16 on the
/// CPU). The search index keys on it, so an index built in one precision answers queries in
/// another; the cache adds the precision (see [`EmbeddingCache::open`]).
pub fn model_key(clip: &ClipEncoder, decode: &DecodeOptions) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update(b"skyscribe embedding cache v1\0");
    model_files_hash(&mut h, &clip.source.dir)?;
    h.update(clip.preprocessor.identity().as_bytes());
    h.update(format!("{:?}", decode.bands).as_bytes());
    if decode.jpeg_draft {
        // Other pixels, other embeddings; without the option the key is what it always was.
        h.update(b"jpeg draft");
    }
    Ok(h.finalize())
}

impl EmbeddingCache {
    /// The cache for `clip` under `root` (created if needed).
    ///
    /// Entries are exact: a model running in reduced precision has a cache of its own (f32 keeps
    /// the key it always had), so `--precision bf16` never reads f32 embeddings nor leaves its
    /// own where an f32 run would read them. bf16 on a GPU (the whole model) and on a CPU (the
    /// linear layers' products) differ, so they are keyed apart too.
    pub fn open(root: &Path, clip: &ClipEncoder, decode: &DecodeOptions) -> Result<Self> {
        let mut model_key = model_key(clip, decode)?;
        let precision = clip.model.precision();
        if precision != Precision::F32 {
            let mut h = blake3::Hasher::new();
            h.update(model_key.as_bytes());
            h.update(format!("precision {}", precision.name()).as_bytes());
            if clip.model.dtype() != candle_core::DType::F32 {
                h.update(format!(", whole model in {:?}", clip.model.dtype()).as_bytes());
            }
            model_key = h.finalize();
        }
        let dir = root.join(&model_key.to_hex()[..16]);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("{}: cannot create cache folder", dir.display()))?;
        Ok(Self { dir, model_key })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entry key of an image whose file content hashes to `content`.
    pub fn key(&self, image: &ImageRef, content: &blake3::Hash) -> String {
        let mut h = blake3::Hasher::new();
        h.update(self.model_key.as_bytes());
        h.update(content.as_bytes());
        h.update(format!("{:?}", image.crop).as_bytes());
        h.finalize().to_hex().to_string()
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.emb"))
    }

    pub fn get(&self, key: &str) -> Lookup {
        let Ok(bytes) = std::fs::read(self.path(key)) else {
            return Lookup::Missing;
        };
        decode_entry(&bytes).map_or(Lookup::Corrupt, Lookup::Hit)
    }

    /// Writes an entry atomically: readers see the old file or the whole new one.
    pub fn put(&self, key: &str, embedding: &[f32]) -> Result<()> {
        let path = self.path(key);
        let dir = path.parent().expect("entries live in a subfolder");
        std::fs::create_dir_all(dir)?;
        let mut bytes = Vec::with_capacity(8 + embedding.len() * 4 + 32);
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&(embedding.len() as u32).to_le_bytes());
        for v in embedding {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(sum.as_bytes());
        crate::atomic::write_file(&path, &bytes).context("cannot write cache entry")
    }
}

fn decode_entry(bytes: &[u8]) -> Option<Vec<f32>> {
    if bytes.len() < 8 + 32 || &bytes[..4] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    if bytes.len() != 8 + n * 4 + 32 {
        return None;
    }
    let (body, sum) = bytes.split_at(8 + n * 4);
    if blake3::hash(body).as_bytes() != sum {
        return None;
    }
    Some(
        body[8..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
    )
}

/// Content hashes of the distinct files behind `images`, computed in parallel. Files that
/// cannot be read are left out (their images fail later with the reason).
pub fn content_hashes(images: &[&ImageRef]) -> HashMap<PathBuf, blake3::Hash> {
    let mut paths: Vec<&PathBuf> = images.iter().map(|i| &i.path).collect();
    paths.sort();
    paths.dedup();
    paths
        .par_iter()
        .filter_map(|p| {
            let location = p.to_string_lossy();
            // Objects behind URLs by their version (size, ETag, modification), not their bytes.
            let bytes = if crate::scene::source::is_remote(&location) {
                crate::scene::source::object_version(&location, &Default::default())
                    .ok()?
                    .into_bytes()
            } else {
                std::fs::read(p).ok()?
            };
            Some(((*p).clone(), blake3::hash(&bytes)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_corruption_is_detected() {
        let e = vec![1.5f32, -2.0, 0.25];
        let mut bytes = MAGIC.to_vec();
        bytes.extend(3u32.to_le_bytes());
        for v in &e {
            bytes.extend(v.to_le_bytes());
        }
        let sum = blake3::hash(&bytes);
        bytes.extend(sum.as_bytes());
        assert_eq!(decode_entry(&bytes), Some(e));
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        assert_eq!(decode_entry(&flipped), None);
        assert_eq!(decode_entry(&bytes[..bytes.len() - 1]), None);
    }
}
