//! Rust errors as Python exceptions, with the CLI's messages (the whole `anyhow` chain, as the
//! CLI prints it): `FileNotFoundError` when a file is missing, `ValueError` for arguments
//! refused before any work, `skyscribe.Error` for everything else (an unreadable image, a
//! damaged model or index).

use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;

pyo3::create_exception!(
    skyscribe,
    Error,
    pyo3::exceptions::PyException,
    "An error of skyscribe's own (an unreadable image, a damaged model, index or classifier), \
     with the message the CLI prints."
);

/// A library error: `FileNotFoundError` when its cause is a missing file, else
/// `skyscribe.Error`.
pub fn py_err(e: anyhow::Error) -> PyErr {
    let message = format!("{e:#}");
    let missing = e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
    });
    if missing {
        PyFileNotFoundError::new_err(message)
    } else {
        Error::new_err(message)
    }
}

/// An argument the library refused (a label set, a decoding option, a method): `ValueError`,
/// unless a file it names is missing.
pub fn value_err(e: anyhow::Error) -> PyErr {
    let err = py_err(e);
    Python::attach(|py| {
        if err.is_instance_of::<Error>(py) {
            PyValueError::new_err(err.value(py).to_string())
        } else {
            err
        }
    })
}

/// `FileNotFoundError` for a path that is not there, in the CLI's words.
pub fn missing(path: &std::path::Path) -> PyErr {
    PyFileNotFoundError::new_err(format!("{}: no such file or directory", path.display()))
}

/// A `ValueError` with this message.
pub fn invalid(message: impl Into<String>) -> PyErr {
    PyValueError::new_err(message.into())
}

/// `anyhow::Result<T>` → `PyResult<T>`.
pub trait IntoPy<T> {
    /// Any error as [`py_err`] makes it.
    fn py(self) -> PyResult<T>;
    /// An argument refused: as [`value_err`] makes it.
    fn arg(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for anyhow::Result<T> {
    fn py(self) -> PyResult<T> {
        self.map_err(py_err)
    }
    fn arg(self) -> PyResult<T> {
        self.map_err(value_err)
    }
}
