//! What this machine can give a run: CPUs this process may use and memory still available.
//! Callers check requests against these before allocating or spawning, so an impossible
//! setting is a clear message rather than an abort or a machine brought to its knees.

/// CPUs this process may run on at once (its affinity mask), at least 1.
pub fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `requested` threads, or the CPUs available when that is fewer (more threads than CPUs
/// only make the pool's hand-offs wait on the scheduler: 27 s instead of 0.02 s for 4 tokens
/// at 1000 threads on 2 cores). Returns the count and whether it was capped.
pub fn cap_threads(requested: usize) -> (usize, bool) {
    let avail = available_threads();
    if requested > avail {
        (avail, true)
    } else {
        (requested.max(1), false)
    }
}

/// The process's memory budget set by [`set_memory_limit`] (`u64::MAX`: none).
static LIMIT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// Holds this process to `bytes` of memory in all (`onebit … --mem-limit`): from now on
/// [`available_memory`] reports at most `bytes` minus what the process already holds, so
/// loads and sessions that would exceed it are refused up front with a clear message.
pub fn set_memory_limit(bytes: u64) {
    LIMIT.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

/// The budget set by [`set_memory_limit`], if any.
pub fn memory_limit() -> Option<u64> {
    Some(LIMIT.load(std::sync::atomic::Ordering::Relaxed)).filter(|&l| l != u64::MAX)
}

/// Bytes this process holds in memory now (Linux: resident pages), if known.
pub fn resident_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = s.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Bytes left under this process's cgroup (v2) memory limit, where it has one.
fn cgroup_left() -> Option<u64> {
    let read = |f: &str| std::fs::read_to_string(format!("/sys/fs/cgroup/{f}")).ok();
    let max: u64 = read("memory.max")?.trim().parse().ok()?;
    let current: u64 = read("memory.current")?.trim().parse().ok()?;
    Some(max.saturating_sub(current))
}

/// Bytes of memory available to new allocations, if known: Linux `MemAvailable`, lowered
/// to what is left under the process's cgroup limit and its [`set_memory_limit`] budget.
pub fn available_memory() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let mut avail = kb * 1024;
    if let Some(left) = cgroup_left() {
        avail = avail.min(left);
    }
    if let Some(limit) = memory_limit() {
        avail = avail.min(limit.saturating_sub(resident_memory().unwrap_or(0)));
    }
    Some(avail)
}

/// Ok when `bytes` fit in available memory (unknown counts as fitting), else a message
/// "`what` needs N GB, M GB available".
pub fn check_memory(what: &str, bytes: u64) -> Result<(), String> {
    match available_memory() {
        Some(avail) if bytes > avail => Err(format!(
            "{what} needs {:.1} GB, {:.1} GB available",
            bytes as f64 / 1e9,
            avail as f64 / 1e9
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_read_and_absurd_requests_refused() {
        assert!(available_threads() >= 1);
        if available_memory().is_some() {
            let e = check_memory("a test", u64::MAX).unwrap_err();
            assert!(e.starts_with("a test needs"), "{e}");
            assert!(check_memory("a test", 1).is_ok());
        }
    }
}
