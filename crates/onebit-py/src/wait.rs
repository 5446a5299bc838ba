//! Running engine work off the calling thread so Ctrl-C stays responsive.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// How long the caller waits without the GIL before looking for a signal.
pub const SLICE: Duration = Duration::from_millis(50);

/// Runs `work` on a worker thread and waits for it without holding the GIL; a pending
/// signal (Ctrl-C) raises its exception here and sets `cancel`, which the work checks.
pub fn interruptible<T: Send + 'static>(
    py: Python<'_>,
    cancel: Arc<AtomicBool>,
    work: impl FnOnce() -> T + Send + 'static,
) -> PyResult<T> {
    let (tx, rx) = mpsc::channel();
    // A Mutex makes the receiver shareable with the GIL-free closure (only this thread uses it).
    let rx = Mutex::new(rx);
    std::thread::Builder::new()
        .name("onebit-call".into())
        .spawn(move || {
            let _ = tx.send(work());
        })
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the engine thread: {e}")))?;
    loop {
        match py.detach(|| rx.lock().unwrap_or_else(|p| p.into_inner()).recv_timeout(SLICE)) {
            Ok(v) => return Ok(v),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = py.check_signals() {
                    cancel.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(PyRuntimeError::new_err("the engine thread stopped"))
            }
        }
    }
}
