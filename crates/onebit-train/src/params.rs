//! [`Params`]: every trainable tensor of a model cut from one allocation (llm.c's
//! `malloc_and_point_parameters`), their gradients from a second, and for each ternary
//! (BitLinear) weight a cache of its quantized form rebuilt once per optimizer step.

use onebit_kernels::quant::EPS;
use onebit_kernels::{Kernel, TernaryFormat, TernaryMatrix, ThreadPool};
use serde::{Deserialize, Serialize};

/// Index of a parameter in [`Params`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ParamId(pub usize);

/// What a parameter is, which decides quantization and weight decay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamKind {
    /// Token embedding table (vocab × hidden), high precision.
    Embedding,
    /// RMSNorm gain vector, high precision, no weight decay.
    Norm,
    /// A BitLinear latent weight (out × in), ternarized in the forward pass.
    Ternary,
    /// A dense high-precision matrix (an untied output head).
    Dense,
}

/// Name, shape and place of one parameter.
#[derive(Clone, Debug)]
pub struct ParamInfo {
    /// Name in the engine's GGUF convention (`blk.0.attn_q.weight`).
    pub name: String,
    /// Rows (output features for matrices, 1 for vectors).
    pub rows: usize,
    /// Columns (input features).
    pub cols: usize,
    /// Kind.
    pub kind: ParamKind,
    /// Offset into the shared value/gradient buffers.
    pub offset: usize,
}

impl ParamInfo {
    /// Number of values.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }
    /// True for an empty tensor.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The quantized view of one BitLinear weight for the current step.
#[derive(Debug)]
pub struct TernaryCache {
    /// Wq = clamp(round(W/γ), -1, 1), row-major.
    pub trits: Vec<i8>,
    /// γ = max(mean|W|, 1e-5), the same rule as the inference kernels.
    pub gamma: f32,
    /// Wq packed for the integer kernels (T2).
    pub packed: TernaryMatrix,
    /// Wqᵀ packed (in × out), built only for the int8 backward option.
    pub packed_t: Option<TernaryMatrix>,
    /// Scratch for the transpose.
    trits_t: Vec<i8>,
    /// The weight the backward pass multiplies by: `W + λ(γ·Wq − W)` (γ·Wq at λ = 1).
    pub dense: Vec<f32>,
    /// The λ `dense` was built with.
    pub lambda: f32,
}

/// All parameters, their gradients and the ternary caches.
#[derive(Debug)]
pub struct Params {
    infos: Vec<ParamInfo>,
    /// Every value, parameters back to back in `infos` order.
    pub values: Vec<f32>,
    /// Gradients, laid out like `values`.
    pub grads: Vec<f32>,
    ternary: Vec<Option<TernaryCache>>,
    kernel: Kernel,
    int8_backward: bool,
}

impl Params {
    /// Allocates parameters for `specs` (name, rows, cols, kind), all zero.
    pub fn new(specs: &[(String, usize, usize, ParamKind)]) -> crate::Result<Self> {
        let mut infos = Vec::with_capacity(specs.len());
        let mut offset = 0;
        for (name, rows, cols, kind) in specs {
            infos.push(ParamInfo {
                name: name.clone(),
                rows: *rows,
                cols: *cols,
                kind: *kind,
                offset,
            });
            offset += rows * cols;
        }
        let mut ternary = Vec::with_capacity(infos.len());
        for p in &infos {
            ternary.push(if p.kind == ParamKind::Ternary {
                Some(TernaryCache::new(p.rows, p.cols)?)
            } else {
                None
            });
        }
        Ok(Params {
            infos,
            values: vec![0.0; offset],
            grads: vec![0.0; offset],
            ternary,
            kernel: Kernel::best(TernaryFormat::T2)?,
            int8_backward: false,
        })
    }

    /// Every parameter's description.
    pub fn infos(&self) -> &[ParamInfo] {
        &self.infos
    }

    /// Description of `id`.
    pub fn info(&self, id: ParamId) -> &ParamInfo {
        &self.infos[id.0]
    }

    /// The id of the parameter called `name`.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.infos.iter().position(|p| p.name == name).map(ParamId)
    }

    /// Total number of values.
    pub fn count(&self) -> usize {
        self.values.len()
    }

    /// Values of `id`.
    pub fn value(&self, id: ParamId) -> &[f32] {
        let p = &self.infos[id.0];
        &self.values[p.offset..p.offset + p.len()]
    }

    /// Values of `id`, mutable.
    pub fn value_mut(&mut self, id: ParamId) -> &mut [f32] {
        let p = &self.infos[id.0];
        &mut self.values[p.offset..p.offset + p.len()]
    }

    /// Gradient of `id`.
    pub fn grad(&self, id: ParamId) -> &[f32] {
        let p = &self.infos[id.0];
        &self.grads[p.offset..p.offset + p.len()]
    }

    /// The quantized cache of a ternary parameter.
    pub fn ternary(&self, id: ParamId) -> Option<&TernaryCache> {
        self.ternary[id.0].as_ref()
    }

    /// The integer kernel BitLinear runs on.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// Value of `id` and its gradient, together (ops read one and accumulate into the other).
    pub fn value_and_grad(&mut self, id: ParamId) -> (&[f32], &mut [f32]) {
        let p = &self.infos[id.0];
        (&self.values[p.offset..p.offset + p.len()], &mut self.grads[p.offset..p.offset + p.len()])
    }

    /// Gradient of `id`, mutable.
    pub fn grad_mut(&mut self, id: ParamId) -> &mut [f32] {
        let p = &self.infos[id.0];
        &mut self.grads[p.offset..p.offset + p.len()]
    }

    /// The ternary cache of `id` and its gradient, together.
    pub fn ternary_and_grad(&mut self, id: ParamId) -> (Option<&TernaryCache>, &mut [f32]) {
        let p = &self.infos[id.0];
        (self.ternary[id.0].as_ref(), &mut self.grads[p.offset..p.offset + p.len()])
    }

    /// Zeroes every gradient.
    pub fn zero_grads(&mut self) {
        self.grads.fill(0.0);
    }

    /// Also pack Wqᵀ at every refresh, so BitLinear's input gradient can run on the integer
    /// kernels with int8-quantized output gradients (faster, no longer exact: see
    /// `ops::bitlinear`). Takes effect at the next [`Params::refresh_ternary`].
    pub fn set_int8_backward(&mut self, on: bool) {
        self.int8_backward = on;
        if !on {
            self.ternary.iter_mut().flatten().for_each(|c| c.packed_t = None);
        }
    }

    /// Re-ternarizes every BitLinear weight from its latent values; call after each update.
    /// `lambda` < 1 blends the full-precision weight in (fine-tuning phase-in).
    pub fn refresh_ternary(&mut self, lambda: f32, pool: &ThreadPool) -> crate::Result<()> {
        for (info, cache) in self.infos.iter().zip(self.ternary.iter_mut()) {
            let Some(c) = cache else { continue };
            let w = &self.values[info.offset..info.offset + info.len()];
            c.refresh(w, lambda, self.int8_backward, pool)?;
        }
        Ok(())
    }
}

impl TernaryCache {
    /// An empty cache for a `rows × cols` weight (filled by [`TernaryCache::refresh`]).
    pub fn new(rows: usize, cols: usize) -> crate::Result<Self> {
        let trits = vec![0i8; rows * cols];
        Ok(TernaryCache {
            packed: TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &trits, 1.0)?,
            trits,
            packed_t: None,
            trits_t: Vec::new(),
            gamma: 1.0,
            dense: vec![0.0; rows * cols],
            lambda: 1.0,
        })
    }

    /// Re-ternarizes from the latent weight `w` (this cache's shape): γ and the trits only.
    pub fn refresh_trits(&mut self, w: &[f32], pool: &ThreadPool) -> crate::Result<()> {
        let (rows, cols) = (self.packed.rows(), self.packed.cols());
        if w.len() != rows * cols {
            return Err(crate::Error::Config(format!(
                "BitLinear weight of {} values for a {rows}x{cols} cache",
                w.len()
            )));
        }
        let gamma = absmean(w);
        let chunk = cols.max(1);
        pool.run_chunks(&mut self.trits, chunk, &|_, rows, trits| {
            let w = &w[rows.start * chunk..rows.end * chunk];
            onebit_kernels::quant::ternarize_into(w, gamma, trits);
        });
        self.gamma = gamma;
        Ok(())
    }

    /// [`TernaryCache::refresh_trits`] and the packed matrix: what the integer forward
    /// needs (`dense`, `lambda` and `Wqᵀ` are left as they were).
    pub fn refresh_packed(&mut self, w: &[f32], pool: &ThreadPool) -> crate::Result<()> {
        self.refresh_trits(w, pool)?;
        self.packed.set_t2_trits(&self.trits, self.gamma)?;
        Ok(())
    }

    /// Writes the weight the STE backward multiplies, `W + λ(γ·Wq − W)` (exactly γ·Wq at
    /// λ = 1), from the current trits and γ into `dst` (this cache's shape).
    pub fn write_dense(&self, dst: &mut [f32], w: &[f32], lambda: f32, pool: &ThreadPool) {
        let (gamma, trits, chunk) = (self.gamma, &self.trits, self.packed.cols().max(1));
        pool.run_chunks(dst, chunk, &|_, rows, dense| {
            let r = rows.start * chunk..rows.end * chunk;
            for ((d, &t), &v) in dense.iter_mut().zip(&trits[r.clone()]).zip(&w[r]) {
                // Exactly γ·t at λ = 1, so the STE product matches the integer forward.
                *d = if lambda == 1.0 {
                    gamma * t as f32
                } else {
                    v + lambda * (gamma * t as f32 - v)
                };
            }
        });
    }

    /// Re-quantizes from the latent weight `w` (this cache's shape): trits, γ, the packed
    /// matrix, the dense product weight at `lambda`, and `Wqᵀ` when `transposed`.
    pub fn refresh(
        &mut self,
        w: &[f32],
        lambda: f32,
        transposed: bool,
        pool: &ThreadPool,
    ) -> crate::Result<()> {
        self.refresh_trits(w, pool)?;
        let mut dense = std::mem::take(&mut self.dense);
        self.write_dense(&mut dense, w, lambda, pool);
        self.dense = dense;
        let (rows, cols, gamma) = (self.packed.rows(), self.packed.cols(), self.gamma);
        let chunk = cols.max(1);
        let c = self;
        c.packed.set_t2_trits(&c.trits, gamma)?;
        if transposed {
            c.trits_t.resize(rows * cols, 0);
            for (r, row) in c.trits.chunks_exact(chunk).enumerate() {
                for (k, &t) in row.iter().enumerate() {
                    c.trits_t[k * rows + r] = t;
                }
            }
            match &mut c.packed_t {
                Some(m) => m.set_t2_trits(&c.trits_t, gamma)?,
                None => {
                    c.packed_t = Some(TernaryMatrix::from_trits(
                        TernaryFormat::T2,
                        cols,
                        rows,
                        &c.trits_t,
                        gamma,
                    )?)
                }
            }
        }
        c.lambda = lambda;
        Ok(())
    }
}

/// γ = max(mean|W|, 1e-5), summed in f64: the scale of a BitLinear weight.
pub fn absmean(w: &[f32]) -> f32 {
    // Eight f64 lanes: the sum vectorizes (every step re-quantizes every weight).
    let mut lanes = [0f64; 8];
    let chunks = w.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|v| v.abs() as f64).sum();
    for c in chunks {
        for i in 0..8 {
            lanes[i] += c[i].abs() as f64;
        }
    }
    let sum = lanes.iter().sum::<f64>() + tail;
    ((sum / w.len().max(1) as f64) as f32).max(EPS)
}

/// clamp(round_half_even(v/γ), -1, 1): the rule of `onebit_kernels::quant::ternarize_absmean`.
#[inline]
pub fn ternarize(v: f32, gamma: f32) -> i8 {
    onebit_kernels::quant::ternarize_value(v, gamma)
}
