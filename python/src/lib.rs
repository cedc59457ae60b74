//! `skyscribe._skyscribe`: the library from Python, a thin layer as `src/cli/` is — arguments
//! in, library calls, results out as numpy arrays and plain Python objects. No logic of its
//! own: what the CLI and Python share (decoding options, search, training, scanning) lives in
//! the library. The model runs with the GIL released; errors keep the CLI's messages.

mod caption;
mod classify;
mod clip;
mod errors;
mod images;
mod index;
mod scan;

use pyo3::prelude::*;

pub use errors::Error;

/// The CLI's allocator, for the extension's own allocations (Python's stay with Python's):
/// candle allocates a fresh buffer for every op; the system allocator returns large freed
/// buffers to the kernel and pays page faults to get them back, mimalloc reuses them. Measured
/// in docs/src/python.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Image files under a folder (walked recursively, sorted), as `skyscribe embed DIR` finds
/// them.
#[pyfunction]
fn list_images(folder: std::path::PathBuf) -> PyResult<Vec<std::path::PathBuf>> {
    if !folder.exists() {
        return Err(errors::missing(&folder));
    }
    if !folder.is_dir() {
        return Err(errors::invalid(format!(
            "{}: not a folder",
            folder.display()
        )));
    }
    Ok(skyscribe::imagery::images_under(&folder))
}

#[pymodule]
fn _skyscribe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("Error", m.py().get_type::<Error>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<clip::Clip>()?;
    m.add_class::<caption::Captioner>()?;
    m.add_class::<classify::Classifier>()?;
    m.add_class::<index::Index>()?;
    m.add_function(wrap_pyfunction!(list_images, m)?)?;
    m.add_function(wrap_pyfunction!(images::read_image, m)?)?;
    m.add_function(wrap_pyfunction!(index::build_index, m)?)?;
    m.add_function(wrap_pyfunction!(scan::scan, m)?)?;
    Ok(())
}
