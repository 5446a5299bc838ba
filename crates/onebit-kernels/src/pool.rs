//! A persistent thread pool for kernels: `threads - 1` workers plus the calling thread run
//! one job at a time, each with its own index, and the call returns when all are done.
//!
//! Why not rayon: a decode step issues about 200 small products (tens of microseconds each),
//! so the fork/join cost must be a couple of atomic operations. Workers spin briefly on an
//! epoch counter before sleeping on a condvar, and the caller works too instead of waiting.

use std::cell::UnsafeCell;
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// Written by the caller only while no worker runs (pending == 0), read after `epoch`.
    job: UnsafeCell<Option<Job>>,
    epoch: AtomicU64,
    pending: AtomicUsize,
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

// SAFETY: the raw job pointer is only dereferenced between the epoch bump and the pending
// count reaching zero, while the caller keeps the closure alive; all other fields are Sync.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

/// Spin iterations before a worker sleeps (tens of microseconds).
const SPIN: u32 = 1 << 14;

/// A fixed set of threads that run one closure at a time on every thread.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    threads: usize,
    run_lock: Mutex<()>,
    executor: Option<Arc<dyn Executor>>,
}

/// Threads that someone else owns, lent to a [`ThreadPool`]: a library embedded in a host
/// whose own workers spin between operations (PyTorch's OpenMP team) runs its kernels on
/// those workers instead of a second set of threads competing with them for the cores.
pub trait Executor: Send + Sync {
    /// Calls `job(i)` once for every `i` in `0..threads`, on any of its threads, and returns
    /// when all calls have finished. `job` never unwinds (the pool catches panics).
    fn run(&self, threads: usize, job: &(dyn Fn(usize) + Sync));
}

impl ThreadPool {
    /// A pool of `threads` (≥ 1) threads, the caller counted as one.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            job: UnsafeCell::new(None),
            epoch: AtomicU64::new(0),
            pending: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        });
        let workers = (1..threads)
            .map(|i| {
                let s = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name(format!("onebit-{i}"))
                    .spawn(move || worker(&s, i))
                    .expect("spawning a pool thread")
            })
            .collect();
        ThreadPool { shared, workers, threads, run_lock: Mutex::new(()), executor: None }
    }

    /// A pool of `threads` (≥ 1) parts whose jobs run on `executor`'s threads (no threads of
    /// its own).
    pub fn with_executor(threads: usize, executor: Arc<dyn Executor>) -> Self {
        let mut pool = ThreadPool::new(1);
        pool.threads = threads.max(1);
        pool.executor = Some(executor);
        pool
    }

    /// Whether jobs run on a lent [`Executor`] rather than this pool's own threads.
    pub fn is_lent(&self) -> bool {
        self.executor.is_some()
    }

    fn run_lent(&self, executor: &dyn Executor, f: &(dyn Fn(usize) + Sync)) {
        let payload: Mutex<Option<Box<dyn std::any::Any + Send>>> = Mutex::new(None);
        executor.run(self.threads, &|i| {
            if let Err(p) = catch_unwind(AssertUnwindSafe(|| f(i))) {
                payload.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(p);
            }
        });
        if let Some(p) = payload.into_inner().unwrap_or_else(|e| e.into_inner()) {
            std::panic::resume_unwind(p);
        }
    }

    /// Threads in the pool, the caller included.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for i in 0..threads, one per thread, and waits for all.
    /// A panic in any of them is re-raised here after all have finished.
    pub fn run(&self, f: &(dyn Fn(usize) + Sync)) {
        if let Some(e) = &self.executor {
            return self.run_lent(&**e, f);
        }
        if self.threads == 1 {
            f(0);
            return;
        }
        let _guard = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // SAFETY: only the lifetime is erased; the pointer is cleared before we return and
        // workers stop using it before `pending` reaches zero, which we wait for below.
        let job: Job = unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f) };
        // SAFETY: no worker reads `job` now: the previous run ended with pending == 0.
        unsafe { *s.job.get() = Some(job) };
        s.pending.store(self.threads - 1, Ordering::SeqCst);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.wake.notify_all();
        }
        let mine = catch_unwind(AssertUnwindSafe(|| f(0)));
        let mut spins = 0u32;
        while s.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: all workers are done with this job.
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a thread-pool worker panicked");
        }
    }
}

fn worker(s: &Shared, index: usize) {
    let mut seen = 0u64;
    loop {
        let mut spins = 0u32;
        while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
            spins += 1;
            if spins < SPIN {
                std::hint::spin_loop();
                continue;
            }
            let mut l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            while s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                l = s.wake.wait(l).unwrap_or_else(|e| e.into_inner());
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
        if s.shutdown.load(Ordering::SeqCst) {
            return;
        }
        seen = s.epoch.load(Ordering::SeqCst);
        // SAFETY: the caller set `job` before bumping the epoch and keeps it alive until
        // `pending` reaches zero, which happens only after this call returns.
        let job = unsafe { (*s.job.get()).expect("job set before epoch bump") };
        // SAFETY: see above; the closure is Sync.
        if catch_unwind(AssertUnwindSafe(|| unsafe { (*job)(index) })).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        s.pending.fetch_sub(1, Ordering::Release);
    }
}

impl ThreadPool {
    /// Splits `rows` rows over the threads and calls `f(range, a_rows, b_rows, c_rows)` with
    /// each thread's disjoint part of three per-row slices (`a` has `unit` elements a row).
    pub fn run_rows<A: Send, B: Send, C: Send>(
        &self,
        rows: usize,
        (a, unit): (&mut [A], usize),
        b: &mut [B],
        c: &mut [C],
        f: &RowsFn<'_, A, B, C>,
    ) {
        assert!(
            a.len() == rows * unit && b.len() == rows && c.len() == rows,
            "run_rows: slice lengths"
        );
        let (pa, pb, pc) =
            (SyncPtr(a.as_mut_ptr()), SyncPtr(b.as_mut_ptr()), SyncPtr(c.as_mut_ptr()));
        let threads = self.threads;
        self.run(&|i| {
            let r = split(rows, threads, i, 1);
            if r.is_empty() {
                return;
            }
            // SAFETY: `split` gives each thread a disjoint row range inside 0..rows, and the
            // three slices are borrowed mutably for the whole call, so these sub-slices alias
            // nothing else.
            let (sa, sb, sc) = unsafe {
                (
                    std::slice::from_raw_parts_mut(pa.get().add(r.start * unit), r.len() * unit),
                    std::slice::from_raw_parts_mut(pb.get().add(r.start), r.len()),
                    std::slice::from_raw_parts_mut(pc.get().add(r.start), r.len()),
                )
            };
            f(r, sa, sb, sc);
        });
    }
}

/// The per-thread body of [`ThreadPool::run_chunks`]: (thread index, chunk range, chunks).
pub type ChunksFn<'a, T> = dyn Fn(usize, Range<usize>, &mut [T]) + Sync + 'a;

impl ThreadPool {
    /// Splits `data` (whole chunks of `chunk` elements) over the threads and calls
    /// `f(thread, chunk_range, part)` with each thread's disjoint part.
    pub fn run_chunks<T: Send>(&self, data: &mut [T], chunk: usize, f: &ChunksFn<'_, T>) {
        assert!(chunk > 0 && data.len().is_multiple_of(chunk), "run_chunks: whole chunks");
        let n = data.len() / chunk;
        let p = SyncPtr(data.as_mut_ptr());
        let threads = self.threads;
        self.run(&|i| {
            let r = split(n, threads, i, 1);
            if r.is_empty() {
                return;
            }
            // SAFETY: disjoint chunk ranges per thread within `data`, borrowed mutably for the call.
            let part = unsafe {
                std::slice::from_raw_parts_mut(p.get().add(r.start * chunk), r.len() * chunk)
            };
            f(i, r, part);
        });
    }
}

impl ThreadPool {
    /// Splits `rows` rows over the threads and calls `f(thread, range, parts)` where each of the
    /// `N` slices (`len = rows · unit`) is cut to the thread's rows: several outputs that share
    /// one row index (a sequence's dQ, dK and dV) written in parallel without locks.
    pub fn run_parts<const N: usize>(
        &self,
        rows: usize,
        parts: [(&mut [f32], usize); N],
        f: &PartsFn<'_, N>,
    ) {
        for (p, unit) in &parts {
            assert_eq!(p.len(), rows * unit, "run_parts: slice length is not rows x unit");
        }
        let ptrs: [(SyncPtr<f32>, usize); N] =
            parts.map(|(p, unit)| (SyncPtr(p.as_mut_ptr()), unit));
        let threads = self.threads;
        self.run(&|i| {
            let r = split(rows, threads, i, 1);
            if r.is_empty() {
                return;
            }
            let slices = std::array::from_fn(|j| {
                let (p, unit) = &ptrs[j];
                // SAFETY: `split` gives each thread a disjoint row range inside 0..rows and every
                // slice is `rows · unit` long and borrowed mutably for the whole call.
                unsafe {
                    std::slice::from_raw_parts_mut(p.get().add(r.start * unit), r.len() * unit)
                }
            });
            f(i, r, slices);
        });
    }
}

/// The per-thread body of [`ThreadPool::run_parts`]: (thread, row range, the slices' parts).
pub type PartsFn<'a, const N: usize> = dyn Fn(usize, Range<usize>, [&mut [f32]; N]) + Sync + 'a;

/// The per-thread body of [`ThreadPool::run_rows`].
pub type RowsFn<'a, A, B, C> = dyn Fn(Range<usize>, &mut [A], &mut [B], &mut [C]) + Sync + 'a;

/// A raw pointer the pool's threads share to write disjoint parts of one buffer (sub-slices
/// in `run_rows`, single rows in the head and dense kernels): the crate's one such wrapper;
/// see the SAFETY notes where it is dereferenced.
#[derive(Clone, Copy)]
pub(crate) struct SyncPtr<T>(pub(crate) *mut T);
// SAFETY: every user writes through it only to parts no other thread touches.
unsafe impl<T: Send> Sync for SyncPtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for SyncPtr<T> {}
impl<T> SyncPtr<T> {
    pub(crate) fn get(&self) -> *mut T {
        self.0
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.wake.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Part `part` of `0..n` cut into `parts` contiguous ranges whose starts are multiples of `align`.
pub fn split(n: usize, parts: usize, part: usize, align: usize) -> Range<usize> {
    let units = n.div_ceil(align);
    let (base, extra) = (units / parts, units % parts);
    let start = part * base + part.min(extra);
    let len = base + usize::from(part < extra);
    (start * align).min(n)..((start + len) * align).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Scoped threads, `team` of them, each taking every `team`-th part.
    struct Scoped {
        team: usize,
    }

    impl Executor for Scoped {
        fn run(&self, threads: usize, job: &(dyn Fn(usize) + Sync)) {
            std::thread::scope(|s| {
                for me in 0..self.team {
                    s.spawn(move || (me..threads).step_by(self.team).for_each(job));
                }
            });
        }
    }

    #[test]
    fn a_lent_executor_runs_every_part_once_and_reraises_panics() {
        for team in [1, 2, 3] {
            let pool = ThreadPool::with_executor(5, Arc::new(Scoped { team }));
            assert!(pool.is_lent() && pool.threads() == 5);
            let mut data = vec![0u32; 103];
            pool.run_chunks(&mut data, 1, &|_, r, part| {
                for (v, i) in part.iter_mut().zip(r) {
                    *v += i as u32 + 1;
                }
            });
            assert!(data.iter().enumerate().all(|(i, &v)| v == i as u32 + 1), "team {team}");
            let hit = std::panic::catch_unwind(AssertUnwindSafe(|| {
                pool.run(&|i| assert!(i != 3, "part 3 fails"));
            }));
            assert!(hit.is_err(), "team {team}: the panic of part 3 must reach the caller");
            pool.run(&|_| {}); // still usable
        }
    }

    #[test]
    fn every_thread_runs_once_per_call_and_threads_are_reused() {
        let pool = ThreadPool::new(3);
        let hits = AtomicUsize::new(0);
        let mask = AtomicUsize::new(0);
        for _ in 0..1000 {
            pool.run(&|i| {
                hits.fetch_add(1, Ordering::SeqCst);
                mask.fetch_or(1 << i, Ordering::SeqCst);
            });
        }
        assert_eq!(hits.load(Ordering::SeqCst), 3000);
        assert_eq!(mask.load(Ordering::SeqCst), 0b111);
    }

    #[test]
    fn sleeping_workers_wake_up() {
        let pool = ThreadPool::new(2);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn worker_panic_is_reported_and_pool_survives() {
        let pool = ThreadPool::new(2);
        let r = catch_unwind(AssertUnwindSafe(|| pool.run(&|i| assert_ne!(i, 1, "boom"))));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        pool.run(&|_| {
            hits.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn split_covers_range_aligned() {
        for n in [0, 1, 5, 31, 32, 33, 100, 6912] {
            for parts in 1..5 {
                let mut next = 0;
                for p in 0..parts {
                    let r = split(n, parts, p, 4);
                    assert_eq!(r.start, next.min(n));
                    assert!(r.start.is_multiple_of(4) || r.start == n);
                    next = r.end.max(next);
                }
                assert_eq!(next, n);
            }
        }
    }
}
