//! `onebit.nn`'s kernels on PyTorch's own OpenMP threads.
//!
//! PyTorch's CPU operators run on an OpenMP team whose workers spin for a while after every
//! operator (libgomp's default wait policy) before they sleep. A BitLinear called between two
//! such operators on a second set of threads (onebit's own pool) finds one core taken by a
//! spinning worker, and PyTorch's next operator finds onebit's workers spinning in turn: on
//! two cores the training step measured 0.87x of pure PyTorch with its own pool. Handing the
//! pool's parts to the same OpenMP runtime (`GOMP_parallel`, which libgomp and LLVM's
//! libomp both export) puts onebit's work on the threads that are already awake.
//!
//! The runtime is the copy PyTorch loaded: Python finds its path in `/proc/self/maps` and
//! [`OpenMp::open`] takes a handle to it with `RTLD_NOLOAD`, so a second copy is never
//! loaded. All foreign calls are in this file.

use libloading::os::unix::{Library, Symbol};
use onebit_kernels::Executor;
use std::ffi::{c_int, c_uint, c_void};

type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
type IndexFn = unsafe extern "C" fn() -> c_int;

/// An OpenMP runtime already loaded in this process.
pub struct OpenMp {
    parallel: ParallelFn,
    thread_num: IndexFn,
    num_threads: IndexFn,
    // Keeps the runtime referenced while the function pointers above are in use.
    _lib: Library,
}

/// What each team member reads: the job and how many parts it has.
struct Team<'a> {
    job: &'a (dyn Fn(usize) + Sync),
    parts: usize,
    thread_num: IndexFn,
    num_threads: IndexFn,
}

/// The body every team member runs: parts `me, me + team, ...` (the team may be smaller
/// than asked for when the runtime limits it, and every part must still run once).
extern "C" fn member(data: *mut c_void) {
    // SAFETY: `data` is the `Team` that `run` passes to GOMP_parallel and keeps alive until
    // it returns, which is after every member has returned.
    let team = unsafe { &*(data as *const Team<'_>) };
    // SAFETY: standard OpenMP queries, valid inside a parallel region.
    let (me, size) = unsafe { ((team.thread_num)(), (team.num_threads)()) };
    let (me, size) = (me.max(0) as usize, size.max(1) as usize);
    (me..team.parts).step_by(size).for_each(team.job);
}

impl OpenMp {
    /// A handle to the OpenMP runtime at `path`, which must already be loaded.
    pub fn open(path: &str) -> Result<Self, String> {
        // SAFETY: RTLD_NOLOAD only returns a handle to a library this process already
        // loaded (and initialized); nothing new is loaded or run.
        let lib = unsafe { Library::open(Some(path), libc::RTLD_NOLOAD | libc::RTLD_LAZY) }
            .map_err(|e| format!("{path} is not a loaded OpenMP runtime: {e}"))?;
        // SAFETY: the symbols have these C signatures in libgomp (GCC >= 4.9) and in LLVM's
        // libomp (its GOMP compatibility layer); the pointers live as long as `lib`.
        unsafe {
            let parallel: Symbol<ParallelFn> =
                lib.get(b"GOMP_parallel\0").map_err(|e| e.to_string())?;
            let thread_num: Symbol<IndexFn> =
                lib.get(b"omp_get_thread_num\0").map_err(|e| e.to_string())?;
            let num_threads: Symbol<IndexFn> =
                lib.get(b"omp_get_num_threads\0").map_err(|e| e.to_string())?;
            Ok(OpenMp {
                parallel: *parallel,
                thread_num: *thread_num,
                num_threads: *num_threads,
                _lib: lib,
            })
        }
    }
}

impl Executor for OpenMp {
    fn run(&self, threads: usize, job: &(dyn Fn(usize) + Sync)) {
        let team = Team {
            job,
            parts: threads,
            thread_num: self.thread_num,
            num_threads: self.num_threads,
        };
        let threads = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
        // SAFETY: `member` only reads `team`, which outlives the call (GOMP_parallel returns
        // after the whole team has finished); `job` never unwinds (the pool catches panics),
        // so nothing unwinds through the runtime's frames.
        unsafe { (self.parallel)(member, &team as *const Team<'_> as *mut c_void, threads, 0) };
    }
}
