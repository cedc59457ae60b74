//! The index's files: `index.json`, the Parquet parts and their completion markers.
//!
//! A part is an ordinary Parquet file (Arrow schema embedded, so Arrow readers see the embedding
//! as a fixed-size list; DuckDB sees a `FLOAT[]` list): DuckDB, Polars, Spark and LanceDB read
//! it as it is. Columns: `id`, `path`, `chip` (`[x, y, w, h]` or null), `bounds` (a scene
//! tile's `[west, south, east, north]` in WGS 84 degrees, or null; parts written before it
//! existed lack the column and read as null), `content_hash` (BLAKE3 of the image file, hex),
//! `embedding` (L2-normalised `f32`).
//!
//! Beside each part, `_part-I-of-N.f32` holds the same embeddings as one raw row-major matrix
//! (little-endian `f32`; `_part-I-of-N.f16` in an index built with `--dtype f16`): search
//! memory-maps it instead of decoding Parquet's nested lists, which costs seconds per million
//! vectors. The Parquet file stays the interchange format (always `f32`; in an `f16` index it
//! holds the same rounded values as the matrix).
//!
//! A part counts only once its marker `_part-I-of-N.done` exists and agrees with it (byte
//! sizes, row count, BLAKE3 of both files): a part being rewritten, cut short or damaged is
//! never read as if it were whole.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int32Array, RecordBatch,
    StringArray,
};
use arrow_schema::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};

use super::VectorDtype;

/// One indexed image or chip.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub path: String,
    pub chip: Option<[u32; 4]>,
    /// A georeferenced scene tile's `[west, south, east, north]` (WGS 84 degrees).
    pub bounds: Option<[f64; 4]>,
    pub content_hash: String,
    pub embedding: Vec<f32>,
}

/// What `parts/_part-I-of-N.done` records about its part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub rows: usize,
    pub bytes: u64,
    pub blake3: String,
    /// Size and BLAKE3 of the raw matrix `_part-I-of-N.f32` (or `.f16`).
    pub vectors_bytes: u64,
    pub vectors_blake3: String,
    /// The index's model key, so that a part left by another model's build is never mixed in.
    pub model_key: String,
}

/// `part-I-of-N.parquet`.
pub fn part_name(shard: usize, shards: usize) -> String {
    format!("part-{shard}-of-{shards}.parquet")
}

/// `_part-I-of-N.done`, the marker beside the part. Everything in `parts/` that is not a part
/// starts with `_`, which Spark, Hadoop, PyArrow and Polars skip when they read the folder (as
/// they skip `_SUCCESS`).
pub fn marker_name(shard: usize, shards: usize) -> String {
    format!("_part-{shard}-of-{shards}.done")
}

/// `_part-I-of-N.f32` (or `.f16`), the part's embeddings as a raw matrix.
pub fn vectors_name(shard: usize, shards: usize, dtype: VectorDtype) -> String {
    format!("_part-{shard}-of-{shards}.{dtype}")
}

/// `values` as `dtype` would store them (`f16` rounds to nearest): what the Parquet column of an
/// index of that dtype holds, so that it and the matrix agree.
pub fn stored(values: &[f32], dtype: VectorDtype) -> Vec<f32> {
    match dtype {
        VectorDtype::F32 => values.to_vec(),
        VectorDtype::F16 => values
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect(),
    }
}

/// The raw matrix of `rows` in `dtype`, little-endian.
fn matrix_bytes(rows: &[Row], dim: usize, dtype: VectorDtype) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * dim * dtype.bytes());
    for r in rows {
        match dtype {
            VectorDtype::F32 => out.extend(r.embedding.iter().flat_map(|v| v.to_le_bytes())),
            VectorDtype::F16 => out.extend(
                r.embedding
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
            ),
        }
    }
    out
}

fn hash(bytes: &[u8]) -> String {
    // On every core: a part of a million vectors is 2 GB.
    blake3::Hasher::new()
        .update_rayon(bytes)
        .finalize()
        .to_hex()
        .to_string()
}

/// The folder of rows encoded by an unfinished build of shard `I` (resumed by the next run).
pub fn pending_name(shard: usize, shards: usize) -> String {
    format!("_part-{shard}-of-{shards}.pending")
}

fn schema(dim: usize) -> Schema {
    Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        quad_field("chip", DataType::Int32),
        quad_field("bounds", DataType::Float64),
        Field::new("content_hash", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, false)),
                dim as i32,
            ),
            false,
        ),
        // GeoParquet's geometry: the `bounds` box as a WKB polygon (null where there is none).
        Field::new("geometry", DataType::Binary, true),
    ])
}

/// A nullable column of four-value lists (`chip`, `bounds`): null where a row has none.
fn quads<T: Copy + Default>(
    rows: impl Iterator<Item = Option<[T; 4]>>,
    item: DataType,
    array: impl FnOnce(Vec<T>) -> ArrayRef,
) -> Result<FixedSizeListArray> {
    let mut values = Vec::new();
    let mut present = arrow_array::builder::BooleanBufferBuilder::new(0);
    for r in rows {
        present.append(r.is_some());
        values.extend(r.unwrap_or_default());
    }
    Ok(FixedSizeListArray::try_new(
        Arc::new(Field::new("item", item, false)),
        4,
        array(values),
        Some(present.finish().into()),
    )?)
}

/// The schema field of a nullable four-value list.
fn quad_field(name: &str, item: DataType) -> Field {
    Field::new(
        name,
        DataType::FixedSizeList(Arc::new(Field::new("item", item, false)), 4),
        true,
    )
}

/// The rows as one Parquet file's bytes (a file of no rows still carries the schema).
pub fn encode(rows: &[Row], dim: usize) -> Result<Vec<u8>> {
    let schema = Arc::new(schema(dim));
    let ids = StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()));
    let paths = StringArray::from_iter_values(rows.iter().map(|r| r.path.as_str()));
    let hashes = StringArray::from_iter_values(rows.iter().map(|r| r.content_hash.as_str()));
    let chips = quads(
        rows.iter().map(|r| r.chip.map(|c| c.map(|v| v as i32))),
        DataType::Int32,
        |v: Vec<i32>| Arc::new(Int32Array::from(v)),
    )?;
    let bounds = quads(
        rows.iter().map(|r| r.bounds),
        DataType::Float64,
        |v: Vec<f64>| Arc::new(Float64Array::from(v)),
    )?;
    let mut values = Vec::with_capacity(rows.len() * dim);
    for r in rows {
        if r.embedding.len() != dim {
            bail!(
                "{}: embedding of {} values in an index of dimension {dim}",
                r.id,
                r.embedding.len()
            );
        }
        values.extend_from_slice(&r.embedding);
    }
    let embeddings = FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )?;
    let geometry: arrow_array::BinaryArray = rows
        .iter()
        .map(|r| {
            r.bounds
                .map(|b| crate::geoparquet::wkb_polygon(&crate::geoparquet::box_ring(b)))
        })
        .collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(ids),
        Arc::new(paths),
        Arc::new(chips),
        Arc::new(bounds),
        Arc::new(hashes),
        Arc::new(embeddings),
        Arc::new(geometry),
    ];
    // Parts with tile bounds are GeoParquet: DuckDB spatial, GeoPandas and QGIS open them as
    // layers of WGS 84 boxes.
    let boxes: Vec<Vec<[f64; 2]>> = rows
        .iter()
        .filter_map(|r| r.bounds.map(crate::geoparquet::box_ring))
        .collect();
    let geo = (!boxes.is_empty()).then(|| {
        parquet::file::metadata::KeyValue::new(
            "geo".to_string(),
            crate::geoparquet::geo_metadata(
                crate::geoparquet::Coordinates::Wgs84,
                Some(crate::geoparquet::bbox(boxes.iter().map(|r| &r[..]))),
            ),
        )
    });
    let batch = RecordBatch::try_new(schema, columns)?;
    let embedding_values = parquet::schema::types::ColumnPath::new(vec![
        "embedding".into(),
        "list".into(),
        "item".into(),
    ]);
    let props = parquet::file::properties::WriterProperties::builder()
        // Embeddings do not compress; the strings compress well and cost little to unpack.
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_column_compression(
            embedding_values.clone(),
            parquet::basic::Compression::UNCOMPRESSED,
        )
        // Nor do they repeat: a dictionary is tried, fails and is thrown away, at a cost.
        .set_column_dictionary_enabled(embedding_values, false)
        .set_created_by(format!("skyscribe {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(geo.map(|g| vec![g]))
        .build();
    crate::geoparquet::one_batch_file(&batch, props)
}

/// Rows and the dimension of a Parquet file's bytes written by [`encode`]; `what` names the
/// file in errors.
pub fn decode(bytes: Vec<u8>, what: &Path) -> Result<(Vec<Row>, usize)> {
    let mut rows = Vec::new();
    let dim = decode_columns(bytes, what, |batch| {
        rows.extend(batch.rows());
        Ok(())
    })?;
    Ok((rows, dim))
}

/// One decoded batch of a part, column by column: the loader copies embeddings a batch at a
/// time instead of a row at a time.
pub struct PartBatch<'a> {
    pub ids: &'a StringArray,
    pub paths: &'a StringArray,
    chips: &'a FixedSizeListArray,
    chip_values: &'a [i32],
    /// The `bounds` column, absent in parts written before it existed.
    bounds: Option<&'a FixedSizeListArray>,
    pub hashes: &'a StringArray,
    /// `len × dim` values, row-major.
    pub embeddings: &'a [f32],
    pub dim: usize,
}

impl PartBatch<'_> {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn chip(&self, i: usize) -> Option<[u32; 4]> {
        if self.chips.is_null(i) {
            return None;
        }
        let first = (self.chips.offset() + i) * 4;
        let c = &self.chip_values[first..first + 4];
        Some([c[0] as u32, c[1] as u32, c[2] as u32, c[3] as u32])
    }

    pub fn bounds(&self, i: usize) -> Option<[f64; 4]> {
        bounds_at(self.bounds?, i)
    }

    pub fn rows(&self) -> Vec<Row> {
        (0..self.len())
            .map(|i| Row {
                id: self.ids.value(i).to_string(),
                path: self.paths.value(i).to_string(),
                chip: self.chip(i),
                bounds: self.bounds(i),
                content_hash: self.hashes.value(i).to_string(),
                embedding: self.embeddings[i * self.dim..(i + 1) * self.dim].to_vec(),
            })
            .collect()
    }
}

/// Decodes a part batch by batch into `sink`; returns the embedding dimension.
fn decode_columns(
    bytes: Vec<u8>,
    what: &Path,
    mut sink: impl FnMut(&PartBatch) -> Result<()>,
) -> Result<usize> {
    let named = |e: parquet::errors::ParquetError| {
        anyhow!("{}: not a readable index part ({e})", what.display())
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        bytes::Bytes::from(bytes),
    )
    .map_err(named)?;
    let dim = match builder
        .schema()
        .field_with_name("embedding")
        .map(|f| f.data_type())
    {
        Ok(DataType::FixedSizeList(item, n)) if item.data_type() == &DataType::Float32 => {
            *n as usize
        }
        _ => bail!(
            "{}: not an index part (no fixed-size float column `embedding`)",
            what.display()
        ),
    };
    let reader = builder.with_batch_size(8192).build().map_err(named)?;
    for batch in reader {
        let batch =
            batch.map_err(|e| anyhow!("{}: not a readable index part ({e})", what.display()))?;
        let columns = batch_columns(&batch, dim).with_context(|| what.display().to_string())?;
        sink(&columns)?;
    }
    Ok(dim)
}

fn column<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| anyhow!("column `{name}` is missing or of another type"))
}

/// The four integers a row of the `chip` column holds, flat.
fn chip_values(chips: &FixedSizeListArray) -> Result<&[i32]> {
    Ok(chips
        .values()
        .as_any()
        .downcast_ref::<Int32Array>()
        .ok_or_else(|| anyhow!("column `chip` does not hold integers"))?
        .values())
}

/// Row `i` of a `bounds` column (null, or a list that is not of four f64, reads as none).
fn bounds_at(col: &FixedSizeListArray, i: usize) -> Option<[f64; 4]> {
    if col.is_null(i) || col.value_length() != 4 {
        return None;
    }
    let values = col
        .values()
        .as_any()
        .downcast_ref::<Float64Array>()?
        .values();
    let first = (col.offset() + i) * 4;
    let b = values.get(first..first + 4)?;
    Some([b[0], b[1], b[2], b[3]])
}

fn batch_columns(batch: &RecordBatch, dim: usize) -> Result<PartBatch<'_>> {
    let chips: &FixedSizeListArray = column(batch, "chip")?;
    let chip_values = chip_values(chips)?;
    let embeddings: &FixedSizeListArray = column(batch, "embedding")?;
    let values = embeddings
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| anyhow!("column `embedding` does not hold f32"))?
        .values();
    let first = embeddings.offset() * dim;
    Ok(PartBatch {
        ids: column(batch, "id")?,
        paths: column(batch, "path")?,
        chips,
        chip_values,
        bounds: batch
            .column_by_name("bounds")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>()),
        hashes: column(batch, "content_hash")?,
        embeddings: &values[first..first + batch.num_rows() * dim],
        dim,
    })
}

/// Writes `rows` as part `I` of `N` in `parts` (the matrix in `dtype`, the Parquet column
/// holding the same values), then its marker: first the old marker goes (a reader then skips
/// the part as unfinished), then the part is renamed into place, then the new marker is
/// written. Returns the marker.
pub fn write_part(
    parts: &Path,
    shard: usize,
    shards: usize,
    rows: &[Row],
    dim: usize,
    model_key: &str,
    dtype: VectorDtype,
) -> Result<Marker> {
    let rounded: Vec<Row>;
    let rows = match dtype {
        VectorDtype::F32 => rows,
        VectorDtype::F16 => {
            rounded = rows
                .iter()
                .map(|r| Row {
                    embedding: stored(&r.embedding, dtype),
                    ..r.clone()
                })
                .collect();
            &rounded
        }
    };
    let bytes = encode(rows, dim)?;
    let matrix = matrix_bytes(rows, dim, dtype);
    let marker = Marker {
        rows: rows.len(),
        bytes: bytes.len() as u64,
        blake3: hash(&bytes),
        vectors_bytes: matrix.len() as u64,
        vectors_blake3: hash(&matrix),
        model_key: model_key.to_string(),
    };
    let marker_path = parts.join(marker_name(shard, shards));
    match std::fs::remove_file(&marker_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("{}: cannot remove", marker_path.display()));
        }
    }
    crate::atomic::write_file(&parts.join(vectors_name(shard, shards, dtype)), &matrix)?;
    crate::atomic::write_file(&parts.join(part_name(shard, shards)), &bytes)?;
    crate::atomic::write_file(&marker_path, &serde_json::to_vec_pretty(&marker)?)?;
    Ok(marker)
}

/// Why a part could not be used.
#[derive(Debug)]
pub enum PartState {
    /// No part file and no marker: the shard has not finished (or not started).
    Missing,
    /// A part file without a marker: being written, or its build was killed.
    Unfinished,
    /// The marker and the file disagree, or the file does not decode; the reason.
    Damaged(String),
}

/// Reads part `I` of `N`, checked against its marker.
pub fn read_part(
    parts: &Path,
    shard: usize,
    shards: usize,
    model_key: &str,
) -> Result<(Vec<Row>, usize), PartState> {
    let mut rows = Vec::new();
    let dim = read_part_with(parts, shard, shards, model_key, |batch| {
        rows.extend(batch.rows());
        Ok(())
    })?;
    Ok((rows, dim))
}

/// [`read_part`] batch by batch (an index of millions of vectors is never held twice).
pub fn read_part_with(
    parts: &Path,
    shard: usize,
    shards: usize,
    model_key: &str,
    sink: impl FnMut(&PartBatch) -> Result<()>,
) -> Result<usize, PartState> {
    let part = parts.join(part_name(shard, shards));
    let marker = read_marker(parts, shard, shards, model_key)?;
    let bytes = std::fs::read(&part)
        .map_err(|e| PartState::Damaged(format!("{}: cannot read ({e})", part.display())))?;
    if bytes.len() as u64 != marker.bytes {
        return Err(PartState::Damaged(format!(
            "{}: {} bytes, but its marker says {} (cut short or replaced)",
            part.display(),
            bytes.len(),
            marker.bytes
        )));
    }
    if hash(&bytes) != marker.blake3 {
        return Err(PartState::Damaged(format!(
            "{}: its content does not match its marker's checksum (damaged)",
            part.display()
        )));
    }
    let mut count = 0;
    let mut sink = sink;
    let dim = decode_columns(bytes, &part, |batch| {
        count += batch.len();
        sink(batch)
    })
    .map_err(|e| PartState::Damaged(format!("{e:#}")))?;
    if count != marker.rows {
        return Err(PartState::Damaged(format!(
            "{}: {count} rows, but its marker says {}",
            part.display(),
            marker.rows
        )));
    }
    Ok(dim)
}

/// The marker of part `I` of `N`, checked to be of this index's model.
fn read_marker(
    parts: &Path,
    shard: usize,
    shards: usize,
    model_key: &str,
) -> Result<Marker, PartState> {
    let part = parts.join(part_name(shard, shards));
    let marker_path = parts.join(marker_name(shard, shards));
    let marker_text = match std::fs::read(&marker_path) {
        Ok(t) => t,
        Err(_) if part.exists() => return Err(PartState::Unfinished),
        Err(_) => return Err(PartState::Missing),
    };
    let marker: Marker = serde_json::from_slice(&marker_text).map_err(|e| {
        PartState::Damaged(format!(
            "{}: not a part marker ({e})",
            marker_path.display()
        ))
    })?;
    if marker.model_key != model_key {
        return Err(PartState::Damaged(format!(
            "{}: written for another model (key {}, the index's is {model_key})",
            part.display(),
            marker.model_key
        )));
    }
    Ok(marker)
}

/// A part as search uses it: ids, paths and chips from the Parquet file (the embedding column
/// is not decoded), and the embeddings memory-mapped from the raw matrix.
pub struct MappedPart {
    pub ids: Vec<String>,
    pub paths: Vec<String>,
    pub chips: Vec<Option<[u32; 4]>>,
    pub bounds: Vec<Option<[f64; 4]>>,
    pub vectors: memmap2::Mmap,
}

/// Opens part `I` of `N` for search, checked against its marker (sizes of both files, the
/// matrix's BLAKE3, row count and dimension); the matrix is of `dtype`.
pub fn map_part(
    parts: &Path,
    shard: usize,
    shards: usize,
    model_key: &str,
    dim: usize,
    dtype: VectorDtype,
) -> Result<MappedPart, PartState> {
    #[cfg(target_endian = "big")]
    compile_error!(
        "index parts store little-endian f32 and f16; a big-endian reader would need a byte swap"
    );
    let marker = read_marker(parts, shard, shards, model_key)?;
    let part = parts.join(part_name(shard, shards));
    let vectors_path = parts.join(vectors_name(shard, shards, dtype));
    let damaged = |why: String| PartState::Damaged(why);
    let file = std::fs::File::open(&part)
        .map_err(|e| damaged(format!("{}: cannot read ({e})", part.display())))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len != marker.bytes {
        return Err(damaged(format!(
            "{}: {len} bytes, but its marker says {} (cut short or replaced)",
            part.display(),
            marker.bytes
        )));
    }
    let want = (marker.rows * dim * dtype.bytes()) as u64;
    let vfile = std::fs::File::open(&vectors_path)
        .map_err(|e| damaged(format!("{}: cannot read ({e})", vectors_path.display())))?;
    let vlen = vfile.metadata().map(|m| m.len()).unwrap_or(0);
    if vlen != marker.vectors_bytes || vlen != want {
        return Err(damaged(format!(
            "{}: {vlen} bytes, but {} rows of {dim} {dtype} need {want} (cut short or replaced)",
            vectors_path.display(),
            marker.rows
        )));
    }
    // SAFETY: the file is only ever replaced by rename, never written in place, so the mapped
    // pages do not change under us (a new build's rename leaves this inode as it is).
    let vectors = unsafe { memmap2::Mmap::map(&vfile) }
        .map_err(|e| damaged(format!("{}: cannot map ({e})", vectors_path.display())))?;
    if hash(&vectors) != marker.vectors_blake3 {
        return Err(damaged(format!(
            "{}: its content does not match its marker's checksum (damaged)",
            vectors_path.display()
        )));
    }
    let mut mapped = MappedPart {
        ids: Vec::with_capacity(marker.rows),
        paths: Vec::with_capacity(marker.rows),
        chips: Vec::with_capacity(marker.rows),
        bounds: Vec::with_capacity(marker.rows),
        vectors,
    };
    let named = |e: &dyn std::fmt::Display| {
        damaged(format!(
            "{}: not a readable index part ({e})",
            part.display()
        ))
    };
    let builder = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| named(&e))?;
    let wanted = ["id", "path", "chip", "bounds"];
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(65536)
        .build()
        .map_err(|e| named(&e))?;
    for batch in reader {
        let batch = batch.map_err(|e| named(&e))?;
        let columns = (|| -> Result<()> {
            let ids: &StringArray = column(&batch, "id")?;
            let paths: &StringArray = column(&batch, "path")?;
            let chips: &FixedSizeListArray = column(&batch, "chip")?;
            let values = chip_values(chips)?;
            let bounds = batch
                .column_by_name("bounds")
                .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>());
            for i in 0..batch.num_rows() {
                mapped.bounds.push(bounds.and_then(|b| bounds_at(b, i)));
                mapped.ids.push(ids.value(i).to_string());
                mapped.paths.push(paths.value(i).to_string());
                mapped.chips.push((!chips.is_null(i)).then(|| {
                    let c = &values[(chips.offset() + i) * 4..(chips.offset() + i) * 4 + 4];
                    [c[0] as u32, c[1] as u32, c[2] as u32, c[3] as u32]
                }));
            }
            Ok(())
        })();
        columns.map_err(|e| named(&e))?;
    }
    if mapped.ids.len() != marker.rows {
        return Err(damaged(format!(
            "{}: {} rows, but its marker says {}",
            part.display(),
            mapped.ids.len(),
            marker.rows
        )));
    }
    Ok(mapped)
}

/// The pending chunks of shard `I`: rows an unfinished build had encoded. Damaged chunks (a
/// write cut by a crash cannot leave one, but a disk can) are skipped with their reason.
pub fn read_pending(dir: &Path) -> (Vec<Row>, Vec<String>) {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (rows, problems);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "parquet")
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    files.sort();
    for f in files {
        match std::fs::read(&f)
            .map_err(anyhow::Error::from)
            .and_then(|b| decode(b, &f))
        {
            Ok((r, _)) => rows.extend(r),
            Err(e) => problems.push(format!("{}: skipped ({e:#})", f.display())),
        }
    }
    (rows, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize, chip: Option<[u32; 4]>) -> Row {
        Row {
            id: format!("img{i}.jpg"),
            path: format!("/data/img{i}.jpg"),
            chip,
            bounds: chip.map(|c| [c[0] as f64 + 0.5, -33.25, 151.0, c[3] as f64]),
            content_hash: format!("{i:064x}"),
            embedding: vec![i as f32, -0.5, 0.25],
        }
    }

    #[test]
    fn parts_round_trip_with_and_without_chips() {
        let rows = vec![row(1, None), row(2, Some([10, 20, 30, 40])), row(3, None)];
        let bytes = encode(&rows, 3).unwrap();
        let (back, dim) = decode(bytes, Path::new("x.parquet")).unwrap();
        assert_eq!(dim, 3);
        assert_eq!(back, rows);
        let (empty, dim) = decode(encode(&[], 7).unwrap(), Path::new("e.parquet")).unwrap();
        assert!(empty.is_empty());
        assert_eq!(dim, 7);
    }

    #[test]
    fn a_part_must_agree_with_its_marker() {
        let dir = std::env::temp_dir().join(format!("skyscribe-parts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let rows = vec![row(1, None), row(2, None)];
        write_part(&dir, 0, 2, &rows, 3, "k", VectorDtype::F32).unwrap();
        assert_eq!(read_part(&dir, 0, 2, "k").unwrap().0, rows);
        let mapped = map_part(&dir, 0, 2, "k", 3, VectorDtype::F32).unwrap();
        assert_eq!(mapped.ids, vec!["img1.jpg", "img2.jpg"]);
        let matrix: &[f32] = bytemuck::cast_slice(&mapped.vectors[..]);
        assert_eq!(matrix, &[1.0, -0.5, 0.25, 2.0, -0.5, 0.25]);
        drop(mapped);
        // The raw matrix is checked too.
        let vectors = dir.join(vectors_name(0, 2, VectorDtype::F32));
        let good = std::fs::read(&vectors).unwrap();
        let mut bad = good.clone();
        bad[5] ^= 1;
        std::fs::write(&vectors, &bad).unwrap();
        assert!(matches!(
            map_part(&dir, 0, 2, "k", 3, VectorDtype::F32),
            Err(PartState::Damaged(_))
        ));
        std::fs::write(&vectors, &good[..good.len() - 4]).unwrap();
        assert!(matches!(
            map_part(&dir, 0, 2, "k", 3, VectorDtype::F32),
            Err(PartState::Damaged(_))
        ));
        std::fs::write(&vectors, &good).unwrap();
        assert!(matches!(
            read_part(&dir, 1, 2, "k"),
            Err(PartState::Missing)
        ));
        assert!(matches!(
            read_part(&dir, 0, 2, "other"),
            Err(PartState::Damaged(_))
        ));
        // Cut short.
        let part = dir.join(part_name(0, 2));
        let bytes = std::fs::read(&part).unwrap();
        std::fs::write(&part, &bytes[..bytes.len() - 10]).unwrap();
        let Err(PartState::Damaged(why)) = read_part(&dir, 0, 2, "k") else {
            panic!("a cut part was read")
        };
        assert!(why.contains("cut short"), "{why}");
        // Same length, one byte changed.
        let mut flipped = bytes.clone();
        flipped[bytes.len() / 2] ^= 1;
        std::fs::write(&part, &flipped).unwrap();
        assert!(matches!(
            read_part(&dir, 0, 2, "k"),
            Err(PartState::Damaged(_))
        ));
        // No marker: unfinished.
        std::fs::remove_file(dir.join(marker_name(0, 2))).unwrap();
        assert!(matches!(
            read_part(&dir, 0, 2, "k"),
            Err(PartState::Unfinished)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_half_precision_part_stores_two_bytes_a_value_and_agrees_with_its_parquet() {
        let dir = std::env::temp_dir().join(format!("skyscribe-parts16-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // 0.1 and 1/3 are not halves: they round (to 0.099975586 and 0.33325195).
        let mut rows = vec![row(1, None), row(2, Some([1, 2, 3, 4]))];
        rows[0].embedding = vec![0.1, -1.0 / 3.0, 0.5];
        write_part(&dir, 0, 1, &rows, 3, "k", VectorDtype::F16).unwrap();
        let matrix_path = dir.join(vectors_name(0, 1, VectorDtype::F16));
        assert_eq!(std::fs::metadata(&matrix_path).unwrap().len(), 2 * 3 * 2);
        assert!(!dir.join(vectors_name(0, 1, VectorDtype::F32)).exists());
        let mapped = map_part(&dir, 0, 1, "k", 3, VectorDtype::F16).unwrap();
        let halves: &[half::f16] = bytemuck::cast_slice(&mapped.vectors[..]);
        let values: Vec<f32> = halves.iter().map(|h| h.to_f32()).collect();
        assert_eq!(values, vec![0.099975586, -0.33325195, 0.5, 2.0, -0.5, 0.25]);
        // The Parquet column holds the very same (rounded) values.
        let (back, _) = read_part(&dir, 0, 1, "k").unwrap();
        let parquet: Vec<f32> = back.iter().flat_map(|r| r.embedding.clone()).collect();
        assert_eq!(parquet, values);
        // Read as the wrong dtype, the matrix is missing; cut short, it is damaged.
        assert!(matches!(
            map_part(&dir, 0, 1, "k", 3, VectorDtype::F32),
            Err(PartState::Damaged(_))
        ));
        drop(mapped);
        let bytes = std::fs::read(&matrix_path).unwrap();
        std::fs::write(&matrix_path, &bytes[..bytes.len() - 2]).unwrap();
        let Err(PartState::Damaged(why)) = map_part(&dir, 0, 1, "k", 3, VectorDtype::F16) else {
            panic!("a cut matrix was mapped")
        };
        assert!(why.contains("rows of 3 f16 need 12"), "{why}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
