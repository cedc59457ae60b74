//! Images as Python gives them: paths (str or `os.PathLike`), one array or a list of arrays
//! (`H×W×3`, or `3×H×W` as torch and torchgeo lay them out), or a batch `N×H×W×3` / `N×3×H×W`;
//! `uint8`, or floats in [0, 1] (torchgeo's scale), or anything with `__array__` (a CPU torch
//! tensor). Arrays are copied into the library's RGB images while the GIL is held; decoding,
//! preprocessing and the model then run without it.

use std::path::PathBuf;

use numpy::ndarray::{ArrayViewD, Axis, IxDyn};
use numpy::{PyReadonlyArrayDyn, PyUntypedArray, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};

use skyscribe::imagery::{DecodeOptions, RgbImage};

use crate::errors::{IntoPy, invalid, missing};

/// Images to run through CLIP.
pub enum Images {
    /// Files, decoded as the CLI decodes them.
    Paths(Vec<PathBuf>),
    /// Pixels already in memory.
    Pixels(Vec<RgbImage>),
}

impl Images {
    pub fn len(&self) -> usize {
        match self {
            Images::Paths(p) => p.len(),
            Images::Pixels(p) => p.len(),
        }
    }

    /// What each image is called in messages: its path, or `image N`.
    pub fn name(&self, i: usize) -> String {
        match self {
            Images::Paths(p) => p[i].display().to_string(),
            Images::Pixels(_) => format!("image {i}"),
        }
    }
}

fn is_path(obj: &Bound<'_, PyAny>) -> bool {
    obj.is_instance_of::<PyString>() || obj.hasattr("__fspath__").unwrap_or(false)
}

fn path_of(obj: &Bound<'_, PyAny>) -> PyResult<PathBuf> {
    let p: PathBuf = obj.extract()?;
    if p.is_dir() {
        return Err(invalid(format!(
            "{}: a folder, not an image (skyscribe.list_images(folder) lists its images)",
            p.display()
        )));
    }
    if !p.exists() {
        return Err(missing(&p));
    }
    Ok(p)
}

/// A numpy array of `obj`: itself, or `numpy.asarray(obj)` for array-likes (torch tensors).
fn as_array<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyUntypedArray>>> {
    if let Ok(a) = obj.cast::<PyUntypedArray>() {
        return Ok(Some(a.clone()));
    }
    if obj.hasattr("__array__")? {
        let np = obj.py().import("numpy")?;
        let a = np.call_method1("asarray", (obj,))?;
        return Ok(Some(a.cast_into::<PyUntypedArray>()?));
    }
    Ok(None)
}

/// Reads `images` (see the module's doc).
pub fn images_arg(images: &Bound<'_, PyAny>) -> PyResult<Images> {
    if is_path(images) {
        return Ok(Images::Paths(vec![path_of(images)?]));
    }
    if let Some(a) = as_array(images)? {
        return match a.ndim() {
            4 => Ok(Images::Pixels(batch_pixels(&a)?)),
            3 => Ok(Images::Pixels(vec![one_image(&a, "the image")?])),
            n => Err(invalid(format!(
                "an image array of {n} dimensions {:?}: expected H×W×3 or 3×H×W, or a batch \
                 N×H×W×3 or N×3×H×W",
                a.shape()
            ))),
        };
    }
    let items: Vec<Bound<'_, PyAny>> = if let Ok(l) = images.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = images.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(pyo3::exceptions::PyTypeError::new_err(format!(
            "images: expected a path, a list of paths, an image array or a list of them, not {}",
            images.get_type().name()?
        )));
    };
    if items.first().is_some_and(is_path) {
        let paths = items
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if is_path(p) {
                    path_of(p)
                } else {
                    Err(invalid(format!(
                        "images[{i}]: a list of paths holds a {}, not a path",
                        p.get_type().name()?
                    )))
                }
            })
            .collect::<PyResult<_>>()?;
        return Ok(Images::Paths(paths));
    }
    let pixels = items
        .iter()
        .enumerate()
        .map(|(i, p)| match as_array(p)? {
            Some(a) if a.ndim() == 3 => one_image(&a, &format!("images[{i}]")),
            Some(a) => Err(invalid(format!(
                "images[{i}]: an array of shape {:?}; each image of a list is H×W×3 or 3×H×W",
                a.shape()
            ))),
            None => Err(invalid(format!(
                "images[{i}]: a {}, not a path or an image array",
                p.get_type().name()?
            ))),
        })
        .collect::<PyResult<_>>()?;
    Ok(Images::Pixels(pixels))
}

/// Where the channels are in a 3-D image shape: last (`H×W×3`) or first (`3×H×W`).
fn channels_last(shape: &[usize], what: &str) -> PyResult<bool> {
    match shape {
        [_, _, 3] => Ok(true),
        [3, _, _] => Ok(false),
        [c, _, _] if *c < 16 => Err(channel_error(*c, shape, what)),
        [_, _, c] => Err(channel_error(*c, shape, what)),
        _ => unreachable!("three dimensions"),
    }
}

fn channel_error(c: usize, shape: &[usize], what: &str) -> PyErr {
    invalid(format!(
        "{what}: shape {shape:?} has {c} channel(s); CLIP reads red, green and blue: pick three \
         bands (for a Sentinel-2 stack of 13, x[..., [3, 2, 1]] or x[:, [3, 2, 1]])"
    ))
}

fn batch_pixels(a: &Bound<'_, PyUntypedArray>) -> PyResult<Vec<RgbImage>> {
    let shape = a.shape().to_vec();
    let last = channels_last(&shape[1..], "the batch")?;
    with_u8(a, "the batch", |view| {
        (0..shape[0])
            .map(|i| to_rgb(view.index_axis(Axis(0), i), last))
            .collect()
    })
}

fn one_image(a: &Bound<'_, PyUntypedArray>, what: &str) -> PyResult<RgbImage> {
    let last = channels_last(a.shape(), what)?;
    with_u8(a, what, |view| vec![to_rgb(view, last)]).map(|mut v| v.remove(0))
}

/// Calls `f` with the array as `uint8`: itself, or floats in [0, 1] scaled by 255 and rounded
/// (so that `x / 255` gives back exactly the pixels of `x`).
fn with_u8(
    a: &Bound<'_, PyUntypedArray>,
    what: &str,
    f: impl Fn(ArrayViewD<'_, u8>) -> Vec<RgbImage>,
) -> PyResult<Vec<RgbImage>> {
    if a.shape().contains(&0) {
        return Err(invalid(format!("{what}: an empty array {:?}", a.shape())));
    }
    let dtype = a.dtype();
    let name = dtype.str()?.to_string();
    if let Ok(u) = a.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        return Ok(f(u.as_array()));
    }
    let floats: Vec<f64> = if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        x.as_array().iter().map(|&v| v as f64).collect()
    } else if let Ok(x) = a.extract::<PyReadonlyArrayDyn<'_, f64>>() {
        x.as_array().iter().copied().collect()
    } else {
        return Err(invalid(format!(
            "{what}: dtype {name}; give uint8 (0..255) or floats in [0, 1]"
        )));
    };
    if let Some(bad) = floats.iter().find(|v| !(0.0..=1.0).contains(*v)) {
        return Err(invalid(format!(
            "{what}: float pixels must lie in [0, 1] (torchgeo's scale), found {bad}; scale them \
             (x / 255 for 8-bit values) or pass uint8"
        )));
    }
    let bytes: Vec<u8> = floats.iter().map(|v| (v * 255.0).round() as u8).collect();
    let view = ArrayViewD::from_shape(IxDyn(a.shape()), &bytes)
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    Ok(f(view))
}

fn to_rgb(view: ArrayViewD<'_, u8>, channels_last: bool) -> RgbImage {
    let hwc = if channels_last {
        view
    } else {
        view.permuted_axes(IxDyn(&[1, 2, 0]))
    };
    let (h, w) = (hwc.shape()[0], hwc.shape()[1]);
    RgbImage {
        width: w as u32,
        height: h as u32,
        // Logical (row-major) order whatever the strides: H, W, then the channel.
        pixels: hwc.iter().copied().collect(),
    }
}

/// Decode options of the CLI's `--bands` and `--max-pixels`.
pub fn decode_options(
    bands: Option<Vec<usize>>,
    max_pixels: Option<u64>,
) -> PyResult<DecodeOptions> {
    if let Some(b) = &bands {
        if b.len() != 1 && b.len() != 3 {
            return Err(invalid(format!(
                "bands: give one band (grey) or three (red, green, blue), not {}",
                b.len()
            )));
        }
        if b.contains(&0) {
            return Err(invalid("bands are numbered from 1"));
        }
    }
    let mut d = DecodeOptions {
        bands,
        ..DecodeOptions::default()
    };
    if let Some(m) = max_pixels {
        d.max_pixels = m;
    }
    Ok(d)
}

/// An image file decoded as skyscribe decodes it (multi-band TIFFs through `bands`), as an
/// `H×W×3` `uint8` array.
#[pyfunction]
#[pyo3(signature = (path, bands=None))]
pub fn read_image<'py>(
    py: Python<'py>,
    path: &Bound<'py, PyAny>,
    bands: Option<Vec<usize>>,
) -> PyResult<Bound<'py, numpy::PyArray3<u8>>> {
    use numpy::IntoPyArray;
    let path = path_of(path)?;
    let decode = decode_options(bands, None)?;
    let img = py
        .detach(|| skyscribe::imagery::load_rgb(&path, &decode))
        .py()?;
    let (h, w) = (img.height as usize, img.width as usize);
    let a = numpy::ndarray::Array3::from_shape_vec((h, w, 3), img.pixels)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(a.into_pyarray(py))
}
