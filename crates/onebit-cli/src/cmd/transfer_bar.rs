//! A progress bar for shard transfers between the head and a worker (`--mesh`, `worker`).

use indicatif::{ProgressBar, ProgressStyle};
use onebit_dist::shard_stream::{Progress, TransferProgress};
use std::sync::Mutex;

/// Draws each transfer as an indicatif bar on stderr.
struct Bar(Mutex<Option<ProgressBar>>);

impl TransferProgress for Bar {
    fn begin(&self, what: &str, total: u64) {
        let bar = ProgressBar::new(total);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} (eta {eta})",
        ) {
            bar.set_style(style);
        }
        bar.set_message(what.to_string());
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn advance(&self, done: u64) {
        if let Some(b) = &*self.0.lock().unwrap_or_else(|e| e.into_inner()) {
            b.set_position(done);
        }
    }
    fn end(&self) {
        if let Some(b) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish();
        }
    }
}

/// Shard transfers shown as bars.
pub fn bars() -> Progress {
    Progress::new(Bar(Mutex::new(None)))
}
