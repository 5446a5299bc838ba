//! Rust errors as Python exceptions: a missing file is `FileNotFoundError`, other I/O an
//! `OSError`, a bad option or shape a `ValueError`, anything else `onebit.OneBitError`; the
//! message is the Rust error's one line.

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyOSError, PyValueError};
use pyo3::PyErr;

pyo3::create_exception!(_onebit, OneBitError, PyException, "An error from the onebit engine.");

/// Converts an engine error.
pub fn model_err(e: onebit_model::Error) -> PyErr {
    use onebit_model::Error as E;
    let msg = e.to_string();
    match &e {
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(msg)
        }
        E::Io { .. } | E::NotAFile { .. } => PyOSError::new_err(msg),
        E::Config(_)
        | E::Sampling(_)
        | E::Token { .. }
        | E::Slot { .. }
        | E::ContextFull { .. } => PyValueError::new_err(msg),
        _ => OneBitError::new_err(msg),
    }
}

/// Converts a training-crate error.
pub fn train_err(e: onebit_train::Error) -> PyErr {
    match e {
        onebit_train::Error::Model(e) => model_err(e),
        onebit_train::Error::Config(m) => PyValueError::new_err(m),
        onebit_train::Error::Io { path, source } => {
            let msg = format!("{path}: {source}");
            if source.kind() == std::io::ErrorKind::NotFound {
                PyFileNotFoundError::new_err(msg)
            } else {
                PyOSError::new_err(msg)
            }
        }
        e => OneBitError::new_err(e.to_string()),
    }
}
