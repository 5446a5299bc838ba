//! Counters and gauges the server exports at `/metrics` in Prometheus' text format.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Every metric; updated by the handlers and the engine thread, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Requests accepted into the queue.
    pub requests: AtomicU64,
    /// Requests refused because the queue was full.
    pub rejected: AtomicU64,
    /// Requests refused as invalid (4xx).
    pub invalid: AtomicU64,
    /// Requests cancelled (client gone, shutdown).
    pub cancelled: AtomicU64,
    /// Prompt tokens evaluated.
    pub prompt_tokens: AtomicU64,
    /// Prompt tokens whose cache was reused instead.
    pub cached_tokens: AtomicU64,
    /// Tokens generated.
    pub generated_tokens: AtomicU64,
    /// Microseconds spent in batched decode steps.
    pub decode_us: AtomicU64,
    /// Microseconds spent prefilling prompts.
    pub prefill_us: AtomicU64,
    /// Requests waiting for a slot.
    pub queue_depth: AtomicU64,
    /// Slots generating.
    pub slots_busy: AtomicU64,
    /// Slots in all.
    pub slots: AtomicU64,
    /// KV cache positions in use, over all slots.
    pub kv_used: AtomicU64,
    /// KV cache positions in all.
    pub kv_total: AtomicU64,
    /// Times the engine moved onto this node alone after its mesh lost a node.
    pub replans: AtomicU64,
    /// Payload bytes the head sent over its mesh (every mesh it has led).
    pub mesh_sent: AtomicU64,
    /// Payload bytes the head received over its mesh.
    pub mesh_received: AtomicU64,
    /// Exchanges (tensor parallel) or passes (pipeline) the head ran over its mesh.
    pub mesh_steps: AtomicU64,
    /// Microseconds the head waited on the other nodes.
    pub mesh_wait_us: AtomicU64,
}

impl Metrics {
    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let g = |a: &AtomicU64| a.load(Relaxed);
        let decode_s = g(&self.decode_us) as f64 / 1e6;
        let prefill_s = g(&self.prefill_us) as f64 / 1e6;
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        let rows: [(&str, &str, &str, String); 19] = [
            (
                "onebit_requests_total",
                "counter",
                "Requests accepted",
                g(&self.requests).to_string(),
            ),
            (
                "onebit_requests_rejected_total",
                "counter",
                "Requests refused: queue full (503)",
                g(&self.rejected).to_string(),
            ),
            (
                "onebit_requests_invalid_total",
                "counter",
                "Requests refused as invalid (4xx)",
                g(&self.invalid).to_string(),
            ),
            (
                "onebit_requests_cancelled_total",
                "counter",
                "Requests cancelled (client gone or shutdown)",
                g(&self.cancelled).to_string(),
            ),
            (
                "onebit_prompt_tokens_total",
                "counter",
                "Prompt tokens evaluated",
                g(&self.prompt_tokens).to_string(),
            ),
            (
                "onebit_prompt_tokens_cached_total",
                "counter",
                "Prompt tokens served from a slot's cache",
                g(&self.cached_tokens).to_string(),
            ),
            (
                "onebit_tokens_generated_total",
                "counter",
                "Tokens generated",
                g(&self.generated_tokens).to_string(),
            ),
            (
                "onebit_prompt_tokens_per_second",
                "gauge",
                "Prompt tokens per second of prefill time",
                format!("{:.3}", rate(g(&self.prompt_tokens), prefill_s)),
            ),
            (
                "onebit_tokens_per_second",
                "gauge",
                "Generated tokens per second of decode time (all slots)",
                format!("{:.3}", rate(g(&self.generated_tokens), decode_s)),
            ),
            (
                "onebit_queue_depth",
                "gauge",
                "Requests waiting for a slot",
                g(&self.queue_depth).to_string(),
            ),
            ("onebit_slots_busy", "gauge", "Slots generating", g(&self.slots_busy).to_string()),
            ("onebit_slots", "gauge", "Slots in all", g(&self.slots).to_string()),
            (
                "onebit_kv_cache_used_positions",
                "gauge",
                "KV cache positions holding tokens",
                g(&self.kv_used).to_string(),
            ),
            (
                "onebit_kv_cache_positions",
                "gauge",
                "KV cache positions in all",
                g(&self.kv_total).to_string(),
            ),
            (
                "onebit_mesh_replans_total",
                "counter",
                "Times the engine moved onto this node alone after its mesh lost a node",
                g(&self.replans).to_string(),
            ),
            (
                "onebit_mesh_sent_bytes_total",
                "counter",
                "Payload bytes this head sent to the other nodes of its mesh",
                g(&self.mesh_sent).to_string(),
            ),
            (
                "onebit_mesh_received_bytes_total",
                "counter",
                "Payload bytes this head received from the other nodes of its mesh",
                g(&self.mesh_received).to_string(),
            ),
            (
                "onebit_mesh_steps_total",
                "counter",
                "Exchanges (tensor parallel) or passes (pipeline) over the mesh",
                g(&self.mesh_steps).to_string(),
            ),
            (
                "onebit_mesh_wait_seconds_total",
                "counter",
                "Seconds this head waited on the other nodes of its mesh",
                format!("{:.6}", g(&self.mesh_wait_us) as f64 / 1e6),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.requests.store(3, Relaxed);
        let t = m.render();
        assert!(
            t.contains("# TYPE onebit_requests_total counter\nonebit_requests_total 3\n"),
            "{t}"
        );
        assert!(t.lines().all(|l| l.starts_with('#') || l.split(' ').count() == 2));
    }
}
