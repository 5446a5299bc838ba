//! The native half of `onebit.nn.BitLinear`: forward and STE backward on arrays that share
//! memory with torch tensors (`tensor.numpy()` of a contiguous float32 CPU tensor is a view,
//! so nothing is copied on the way in or out).

use crate::errors::train_err;
use numpy::{PyReadonlyArrayDyn, PyReadwriteArrayDyn};
use onebit_kernels::{Executor, ThreadPool};
use onebit_train::monitor::{LayerInput, Monitor};
use onebit_train::ops::bitlinear_layer::BitLinearLayer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// The threads every BitLinear runs on (one pool per process, resized on request), and the
/// OpenMP runtime lent to it, if any.
static POOL: OnceLock<RwLock<NnPool>> = OnceLock::new();

/// The pool and the executor it was made with (kept to remake the pool at another size).
type NnPool = (ThreadPool, Option<Arc<dyn Executor>>);

fn pool() -> &'static RwLock<NnPool> {
    POOL.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        RwLock::new((ThreadPool::new(n), None))
    })
}

fn make_pool(n: usize, executor: &Option<Arc<dyn Executor>>) -> ThreadPool {
    match executor {
        Some(e) => ThreadPool::with_executor(n, Arc::clone(e)),
        None => ThreadPool::new(n),
    }
}

/// Sets the threads `onebit.nn` kernels use (default: every CPU, or PyTorch's thread count
/// when they run on its OpenMP team).
#[pyfunction]
pub fn set_num_threads(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    let (n, _) = onebit_kernels::machine::cap_threads(n);
    let mut p = pool().write().unwrap_or_else(|p| p.into_inner());
    p.0 = make_pool(n, &p.1);
    Ok(())
}

/// The threads `onebit.nn` kernels use.
#[pyfunction]
pub fn get_num_threads() -> usize {
    pool().read().unwrap_or_else(|p| p.into_inner()).0.threads()
}

/// Runs `onebit.nn` kernels on the already-loaded OpenMP runtime at `path` (PyTorch's) with
/// `threads` parts, or on onebit's own threads when `path` is None.
#[pyfunction]
#[pyo3(signature = (path, threads))]
pub fn use_openmp(path: Option<&str>, threads: usize) -> PyResult<()> {
    let executor: Option<Arc<dyn Executor>> = match path {
        #[cfg(unix)]
        Some(p) => Some(Arc::new(crate::openmp::OpenMp::open(p).map_err(PyValueError::new_err)?)),
        #[cfg(not(unix))]
        Some(_) => return Err(PyValueError::new_err("OpenMP sharing needs a Unix system")),
        None => None,
    };
    let (n, _) = onebit_kernels::machine::cap_threads(threads.max(1));
    *pool().write().unwrap_or_else(|p| p.into_inner()) = (make_pool(n, &executor), executor);
    Ok(())
}

/// "openmp" when `onebit.nn` kernels run on a lent OpenMP team, "own" on onebit's threads.
#[pyfunction]
pub fn threading() -> &'static str {
    if pool().read().unwrap_or_else(|p| p.into_inner()).0.is_lent() {
        "openmp"
    } else {
        "own"
    }
}

fn slice<'a>(name: &str, a: &'a PyReadonlyArrayDyn<'_, f32>) -> PyResult<&'a [f32]> {
    a.as_slice().map_err(|_| PyTypeError::new_err(format!("{name} must be C-contiguous")))
}

fn slice_mut<'a>(name: &str, a: &'a mut PyReadwriteArrayDyn<'_, f32>) -> PyResult<&'a mut [f32]> {
    a.as_slice_mut().map_err(|_| PyTypeError::new_err(format!("{name} must be C-contiguous")))
}

/// One BitLinear layer's kernels and scratch (`out_features × in_features`), and its count
/// of clipped activations since the monitor last read it.
#[pyclass(module = "onebit._onebit", frozen)]
pub struct BitLinearKernel {
    layer: Mutex<BitLinearLayer>,
    clipped: AtomicU64,
    seen: AtomicU64,
}

impl BitLinearKernel {
    /// Runs `f` on the shared pool and this layer without the GIL.
    fn with_layer<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&ThreadPool, &mut BitLinearLayer) -> onebit_train::Result<R> + Send,
    ) -> PyResult<R> {
        py.detach(|| {
            let guard = pool().read().unwrap_or_else(|p| p.into_inner());
            let mut layer = self.layer.lock().unwrap_or_else(|p| p.into_inner());
            f(&guard.0, &mut layer)
        })
        .map_err(train_err)
    }

    /// Counts a forward's clipped activations of `seen` for the monitor.
    fn count(&self, clipped: u64, seen: usize) {
        self.clipped.fetch_add(clipped, Relaxed);
        self.seen.fetch_add(seen as u64, Relaxed);
    }
}

#[pymethods]
impl BitLinearKernel {
    #[new]
    fn new(out_features: usize, in_features: usize) -> PyResult<Self> {
        let layer = BitLinearLayer::new(out_features, in_features).map_err(train_err)?;
        Ok(BitLinearKernel {
            layer: Mutex::new(layer),
            clipped: AtomicU64::new(0),
            seen: AtomicU64::new(0),
        })
    }

    /// (activations at ±127, activations) since the last call; resets both.
    fn take_clip_counts(&self) -> (u64, u64) {
        (self.clipped.swap(0, Relaxed), self.seen.swap(0, Relaxed))
    }

    /// `out = fq(x)·fq(W)ᵀ` (λ = 1, integer kernels) or the λ blend's dense product;
    /// `x` is (tokens, in), `weight` (out, in), `out` (tokens, out); returns γ.
    fn forward(
        &self,
        py: Python<'_>,
        out: PyReadwriteArrayDyn<'_, f32>,
        x: PyReadonlyArrayDyn<'_, f32>,
        weight: PyReadonlyArrayDyn<'_, f32>,
        lam: f32,
    ) -> PyResult<f32> {
        let mut out = out;
        let out = slice_mut("out", &mut out)?;
        let (x, w) = (slice("x", &x)?, slice("weight", &weight)?);
        let (gamma, clipped) = self.with_layer(py, |pool, l| l.forward(pool, out, x, w, lam))?;
        self.count(clipped, x.len());
        Ok(gamma)
    }

    /// `forward` at λ = 1 that also overwrites `x_used` (tokens, in) with fq(x) and `w_used`
    /// (out, in) with fq(W), the STE backward's operands; returns γ.
    fn forward_with_operands(
        &self,
        py: Python<'_>,
        out: PyReadwriteArrayDyn<'_, f32>,
        x_used: PyReadwriteArrayDyn<'_, f32>,
        w_used: PyReadwriteArrayDyn<'_, f32>,
        x: PyReadonlyArrayDyn<'_, f32>,
        weight: PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<f32> {
        let (mut out, mut xu, mut wu) = (out, x_used, w_used);
        let out = slice_mut("out", &mut out)?;
        let (xu, wu) = (slice_mut("x_used", &mut xu)?, slice_mut("w_used", &mut wu)?);
        let (x, w) = (slice("x", &x)?, slice("weight", &weight)?);
        let (gamma, clipped) =
            self.with_layer(py, |pool, l| l.forward_with_operands(pool, out, (xu, wu), x, w))?;
        self.count(clipped, x.len());
        Ok(gamma)
    }

    /// The STE backward's operands for the same `x`, `weight`, `lam`: overwrites `x_used`
    /// (tokens, in) with fq(x) and `w_used` (out, in) with fq(W).
    fn backward_operands(
        &self,
        py: Python<'_>,
        x_used: PyReadwriteArrayDyn<'_, f32>,
        w_used: PyReadwriteArrayDyn<'_, f32>,
        x: PyReadonlyArrayDyn<'_, f32>,
        weight: PyReadonlyArrayDyn<'_, f32>,
        lam: f32,
    ) -> PyResult<()> {
        let (mut xu, mut wu) = (x_used, w_used);
        let (xu, wu) = (slice_mut("x_used", &mut xu)?, slice_mut("w_used", &mut wu)?);
        let (x, w) = (slice("x", &x)?, slice("weight", &weight)?);
        self.with_layer(py, |pool, l| l.backward_operands(pool, xu, wu, x, w, lam))
    }

    /// The STE backward's products from the operands `forward_with_operands` wrote:
    /// overwrites `dx` (tokens, in) with dout·w_used and `dweight` (out, in) with
    /// doutᵀ·x_used; either may be None.
    #[pyo3(signature = (dx, dweight, dout, x_used, w_used))]
    fn products(
        &self,
        py: Python<'_>,
        dx: Option<PyReadwriteArrayDyn<'_, f32>>,
        dweight: Option<PyReadwriteArrayDyn<'_, f32>>,
        dout: PyReadonlyArrayDyn<'_, f32>,
        x_used: PyReadonlyArrayDyn<'_, f32>,
        w_used: PyReadonlyArrayDyn<'_, f32>,
    ) -> PyResult<()> {
        let (mut dx, mut dweight) = (dx, dweight);
        let dx = dx.as_mut().map(|a| slice_mut("dx", a)).transpose()?;
        let dw = dweight.as_mut().map(|a| slice_mut("dweight", a)).transpose()?;
        let (dout, xu, wu) =
            (slice("dout", &dout)?, slice("x_used", &x_used)?, slice("w_used", &w_used)?);
        self.with_layer(py, |pool, l| l.products(pool, (dx, dw), dout, xu, wu))
    }

    /// The straight-through backward for the same `x`, `weight`, `lam`: overwrites `dx`
    /// (tokens, in) and `dweight` (out, in); either may be None.
    #[pyo3(signature = (dx, dweight, dout, x, weight, lam))]
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        py: Python<'_>,
        dx: Option<PyReadwriteArrayDyn<'_, f32>>,
        dweight: Option<PyReadwriteArrayDyn<'_, f32>>,
        dout: PyReadonlyArrayDyn<'_, f32>,
        x: PyReadonlyArrayDyn<'_, f32>,
        weight: PyReadonlyArrayDyn<'_, f32>,
        lam: f32,
    ) -> PyResult<()> {
        let (mut dx, mut dweight) = (dx, dweight);
        let dx = dx.as_mut().map(|a| slice_mut("dx", a)).transpose()?;
        let dw = dweight.as_mut().map(|a| slice_mut("dweight", a)).transpose()?;
        let (dout, x, w) = (slice("dout", &dout)?, slice("x", &x)?, slice("weight", &weight)?);
        self.with_layer(py, |pool, l| l.backward(pool, dx, dw, dout, x, w, lam))
    }
}

/// The trainer's STE monitor over weights held by PyTorch: the same figures and warnings
/// (`onebit_train::monitor`) from each BitLinear's latent weight, gradient norm, last update
/// and clipping counts.
#[pyclass(module = "onebit._onebit", frozen)]
pub struct SteMonitor {
    monitor: Mutex<Monitor>,
}

/// One layer as Python hands it over: name, the weight the step used (its trits and γ), the
/// latent weight now (after the update), gradient norm, Σ(Δw)², clipped, seen.
type LayerArgs<'py> =
    (String, PyReadonlyArrayDyn<'py, f32>, PyReadonlyArrayDyn<'py, f32>, f32, f64, u64, u64);

#[pymethods]
impl SteMonitor {
    #[new]
    fn new() -> Self {
        SteMonitor { monitor: Mutex::new(Monitor::default()) }
    }

    /// A report over `layers` (always in the same order): a dict with `step`, `layers`
    /// (name, neg, zero, pos, flips, sign_flips, saturated, act_clip, grad_norm,
    /// update_ratio), `warnings` and a one-line `summary`.
    fn report<'py>(
        &self,
        py: Python<'py>,
        step: u64,
        layers: Vec<LayerArgs<'py>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (mut used, mut latents) = (Vec::new(), Vec::new());
        for (name, u, w, ..) in &layers {
            let (u, w) = (slice(name, u)?, slice(name, w)?);
            if u.len() != w.len() {
                return Err(PyValueError::new_err(format!("{name}: weight sizes differ")));
            }
            used.push(u);
            latents.push(w);
        }
        let meta: Vec<(&str, f32, f64, u64, u64)> =
            layers.iter().map(|(n, _, _, g, u, c, s)| (n.as_str(), *g, *u, *c, *s)).collect();
        let report = py.detach(|| {
            let trits: Vec<(Vec<i8>, f32)> = used
                .iter()
                .map(|w| {
                    let gamma = onebit_train::params::absmean(w);
                    (w.iter().map(|&v| onebit_train::params::ternarize(v, gamma)).collect(), gamma)
                })
                .collect();
            let inputs: Vec<LayerInput<'_>> = meta
                .iter()
                .zip(&latents)
                .zip(&trits)
                .map(|(((name, grad_norm, update_sq, clipped, seen), w), (t, gamma))| LayerInput {
                    name,
                    trits: t,
                    gamma: *gamma,
                    latent: w,
                    grad_norm: *grad_norm,
                    update_sq: *update_sq,
                    clip: (*clipped, *seen),
                })
                .collect();
            self.monitor.lock().unwrap_or_else(|p| p.into_inner()).report_layers(step, &inputs)
        });
        let d = PyDict::new(py);
        d.set_item("step", report.step)?;
        let rows = PyList::empty(py);
        for l in &report.layers {
            let r = PyDict::new(py);
            r.set_item("name", &l.name)?;
            for (k, v) in [
                ("neg", l.neg),
                ("zero", l.zero),
                ("pos", l.pos),
                ("flips", l.flips),
                ("sign_flips", l.sign_flips),
                ("saturated", l.saturated),
                ("act_clip", l.act_clip),
                ("grad_norm", l.grad_norm),
                ("update_ratio", l.update_ratio),
            ] {
                r.set_item(k, v)?;
            }
            rows.append(r)?;
        }
        d.set_item("layers", rows)?;
        d.set_item("warnings", &report.warnings)?;
        d.set_item("summary", report.summary())?;
        Ok(d)
    }
}
