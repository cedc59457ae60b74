//! Where a scene's bytes come from: a local file, or an object behind a URL — `https://…`,
//! `http://…`, `s3://…`, `gs://…`, `az://…` — read with HTTP range requests through
//! `object_store` (the Arrow project's client: S3, GCS, Azure and plain HTTP behind one API,
//! credentials from the usual environment variables, retries with backoff on 5xx, timeouts and
//! resets). The TIFF reader asks for the header through [`BlockReader`] (16 KiB blocks, as
//! GDAL's /vsicurl/ opens a COG with one 16 KiB GET) and for the strips or tiles a band of rows
//! needs through [`ByteSource::read_ranges`], neighbouring ranges merged into one request.
//!
//! `async-tiff` was the other candidate: it reads COGs over `object_store` too, but it would
//! replace the reader this crate already tests against GDAL's files, and it is async through
//! and through where scans read a band of rows at a time on one thread.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use object_store::ObjectStoreExt;

/// Bytes by offset.
pub trait ByteSource: Send {
    /// The object's length in bytes.
    fn size(&self) -> u64;
    /// The bytes of each range (sorted, not overlapping), in order.
    fn read_ranges(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>>;
    /// The bytes of one range.
    fn read_range(&mut self, range: Range<u64>) -> Result<Vec<u8>> {
        Ok(self
            .read_ranges(std::slice::from_ref(&range))?
            .pop()
            .unwrap_or_default())
    }
    /// The 16 KiB block `index` (the last one shorter), which headers are read in.
    fn block(&mut self, index: u64) -> Result<Arc<Vec<u8>>> {
        let start = index * BLOCK;
        let end = (start + BLOCK).min(self.size());
        Ok(Arc::new(self.read_range(start..end)?))
    }
}

/// A source whose header blocks are kept (the last 256), for every decoder over it: the
/// image's, the mask's and the overviews' walkers and readers read the header once.
struct BlockCached {
    inner: Box<dyn ByteSource>,
    blocks: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
}

impl ByteSource for BlockCached {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_ranges(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        self.inner.read_ranges(ranges)
    }

    fn block(&mut self, index: u64) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.blocks.get(&index) {
            return Ok(b.clone());
        }
        let b = self.inner.block(index)?;
        if self.order.len() >= MAX_BLOCKS
            && let Some(old) = self.order.pop_front()
        {
            self.blocks.remove(&old);
        }
        self.blocks.insert(index, b.clone());
        self.order.push_back(index);
        Ok(b)
    }
}

/// A source shared by the header reader and the chunk reader of one scene.
pub type Shared = Arc<Mutex<Box<dyn ByteSource>>>;

/// How remote objects are reached.
#[derive(Debug, Clone, Default)]
pub struct RemoteOptions {
    /// Anonymous requests to public buckets (the AWS CLI's --no-sign-request).
    pub no_sign_request: bool,
}

/// Whether a scene is named by a URL rather than a path.
pub fn is_remote(location: &str) -> bool {
    [
        "https://", "http://", "s3://", "gs://", "az://", "abfs://", "azure://",
    ]
    .iter()
    .any(|p| location.starts_with(p))
}

/// Opens a file or a URL.
pub fn open(location: &str, opts: &RemoteOptions) -> Result<Shared> {
    let src: Box<dyn ByteSource> = if is_remote(location) {
        Box::new(Remote::open(location, opts)?)
    } else {
        Box::new(LocalFile::open(location)?)
    };
    Ok(Arc::new(Mutex::new(Box::new(BlockCached {
        inner: src,
        blocks: HashMap::new(),
        order: VecDeque::new(),
    }))))
}

struct LocalFile {
    file: std::fs::File,
    len: u64,
}

impl LocalFile {
    fn open(path: &str) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| anyhow!("cannot open: {e}"))?;
        let len = file
            .metadata()
            .map_err(|e| anyhow!("cannot read: {e}"))?
            .len();
        Ok(Self { file, len })
    }
}

impl ByteSource for LocalFile {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_ranges(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        ranges
            .iter()
            .map(|r| {
                let mut buf = vec![0u8; (r.end - r.start) as usize];
                self.file.seek(SeekFrom::Start(r.start))?;
                self.file.read_exact(&mut buf)?;
                Ok(buf)
            })
            .collect()
    }
}

/// An object in a store, read by ranges on a runtime of its own (scans are synchronous).
struct Remote {
    store: Arc<dyn object_store::ObjectStore>,
    path: object_store::path::Path,
    len: u64,
    runtime: tokio::runtime::Runtime,
    url: String,
    /// What identifies this version of the object (size, ETag, last modification).
    version: String,
}

/// What identifies the current version of the object at `url` (one HEAD request): its URL,
/// size, ETag and last modification time. An index keys its rows on it, as it keys local files
/// on their bytes' hash, without downloading the object to hash it.
pub fn object_version(url: &str, opts: &RemoteOptions) -> Result<String> {
    Ok(Remote::open(url, opts)
        .with_context(|| url.to_string())?
        .version)
}

/// How often a range is asked for again after a failure `object_store` did not retry itself
/// (a body cut short), and the first wait.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF_MS: u64 = 100;

impl Remote {
    fn open(url: &str, opts: &RemoteOptions) -> Result<Self> {
        use object_store::{ClientOptions, RetryConfig};
        let parsed = url::Url::parse(url).map_err(|e| anyhow!("not a URL: {e}"))?;
        let retry = RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(FIRST_BACKOFF_MS),
                max_backoff: std::time::Duration::from_secs(5),
                base: 2.0,
            },
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(60),
        };
        let client = ClientOptions::new()
            .with_allow_http(true)
            .with_timeout(std::time::Duration::from_secs(30))
            .with_connect_timeout(std::time::Duration::from_secs(10));
        let key = parsed.path().trim_start_matches('/').to_string();
        let (store, key): (Arc<dyn object_store::ObjectStore>, String) = match parsed.scheme() {
            "http" | "https" => {
                let base = format!("{}://{}", parsed.scheme(), parsed.authority());
                let store = object_store::http::HttpBuilder::new()
                    .with_url(base)
                    .with_client_options(client)
                    .with_retry(retry)
                    .build()?;
                (Arc::new(store), key)
            }
            "s3" => {
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_skip_signature(opts.no_sign_request)
                    .build()?;
                (Arc::new(store), key)
            }
            "gs" => {
                let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_skip_signature(opts.no_sign_request)
                    .build()?;
                (Arc::new(store), key)
            }
            "az" | "abfs" | "azure" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_client_options(client)
                    .with_retry(retry)
                    .with_skip_signature(opts.no_sign_request)
                    .build()?;
                (Arc::new(store), key)
            }
            s => bail!("URLs of scheme {s}: are not read"),
        };
        let path = object_store::path::Path::from_url_path(&key)
            .map_err(|e| anyhow!("bad object path {key:?}: {e}"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let meta = runtime
            .block_on(store.head(&path))
            .with_context(|| "cannot reach the object")?;
        let version = format!(
            "{url} size={} etag={} modified={}",
            meta.size,
            meta.e_tag.as_deref().unwrap_or("-"),
            meta.last_modified.to_rfc3339()
        );
        Ok(Self {
            store,
            path,
            len: meta.size,
            runtime,
            url: url.to_string(),
            version,
        })
    }
}

impl ByteSource for Remote {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_ranges(&mut self, ranges: &[Range<u64>]) -> Result<Vec<Vec<u8>>> {
        let store = &self.store;
        let path = &self.path;
        self.runtime
            .block_on(async {
                let fetches = ranges.iter().map(|r| async move {
                    let mut wait = FIRST_BACKOFF_MS;
                    let mut attempt = 1;
                    loop {
                        match store.get_range(path, r.clone()).await {
                            Ok(b) if b.len() as u64 == r.end - r.start => return Ok(b.to_vec()),
                            Ok(b) => {
                                if attempt >= ATTEMPTS {
                                    bail!("{} bytes of {}..{} came", b.len(), r.start, r.end);
                                }
                            }
                            Err(object_store::Error::NotFound { .. }) => bail!("not found"),
                            Err(e) if attempt >= ATTEMPTS => {
                                return Err(
                                    anyhow!(e).context(format!("bytes {}..{}", r.start, r.end))
                                );
                            }
                            Err(_) => {}
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
                        wait *= 2;
                        attempt += 1;
                    }
                });
                futures_util::future::try_join_all(fetches).await
            })
            .with_context(|| self.url.clone())
    }
}

/// The ranges of `wanted` (sorted by start) merged where they touch or lie closer than `gap`:
/// the merged ranges, and for each wanted range the merged one holding it.
pub fn merge(wanted: &[Range<u64>], gap: u64) -> (Vec<Range<u64>>, Vec<usize>) {
    let mut merged: Vec<Range<u64>> = Vec::new();
    let mut owner = Vec::with_capacity(wanted.len());
    for r in wanted {
        match merged.last_mut() {
            Some(m) if r.start <= m.end + gap => m.end = m.end.max(r.end),
            _ => merged.push(r.clone()),
        }
        owner.push(merged.len() - 1);
    }
    (merged, owner)
}

/// `Read + Seek` over a source in 16 KiB blocks, the last `MAX_BLOCKS` kept: the `tiff`
/// crate's tag reader seeks and reads a few bytes at a time.
pub struct BlockReader {
    src: Shared,
    len: u64,
    pos: u64,
}

const BLOCK: u64 = 16 << 10;
const MAX_BLOCKS: usize = 256;

impl BlockReader {
    pub fn new(src: Shared) -> Self {
        let len = src.lock().unwrap_or_else(|e| e.into_inner()).size();
        Self { src, len, pos: 0 }
    }

    fn block(&mut self, index: u64) -> std::io::Result<Arc<Vec<u8>>> {
        self.src
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .block(index)
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
    }
}

impl Read for BlockReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.len || buf.is_empty() {
            return Ok(0);
        }
        let index = self.pos / BLOCK;
        let block = self.block(index)?;
        let at = (self.pos - index * BLOCK) as usize;
        let n = buf.len().min(block.len().saturating_sub(at));
        buf[..n].copy_from_slice(&block[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for BlockReader {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let next = match to {
            SeekFrom::Start(p) => p as i128,
            SeekFrom::End(d) => self.len as i128 + d as i128,
            SeekFrom::Current(d) => self.pos as i128 + d as i128,
        };
        if next < 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "seek before the start",
            ));
        }
        self.pos = next as u64;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_ranges_are_merged_and_far_ones_kept_apart() {
        let (m, owner) = merge(&[0..10, 10..20, 25..30, 100..110], 8);
        assert_eq!(m, vec![0..30, 100..110]);
        assert_eq!(owner, vec![0, 0, 0, 1]);
    }
}
