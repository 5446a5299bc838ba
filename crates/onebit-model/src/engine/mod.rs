//! The inference engine: [`Model`] (weights in kernel layouts, built once) and [`Session`]
//! (KV cache and every activation buffer, sized once; the decode loop allocates nothing).
//! One forward serves every file format: linears are [`TernaryLinear`]s whatever layout they
//! came in, and the head is an int8 or f32 matrix ([`HeadKind`]).

mod forward;
mod kv_cache;
mod sampler;
mod seam;
mod tensor;

pub use forward::{Session, SessionOptions, StageInput};
pub use kv_cache::KvDtype;
pub use sampler::{
    argmax, candidate_order, penalize, top_k, Draw, Sampler, SamplerConfig, DEVICE_TOP_K,
};
pub use seam::{Engine, WireStats};
pub use tensor::{ShardExchange, TensorPart, TensorSplit};

use crate::config::ModelConfig;
use half::f16;
use onebit_kernels::{
    dense, matmul, matmul_many, ActQuant, Kernel, Q8Matrix, TernaryMatrix, ThreadPool,
};

/// A ternary linear layer with the kernel chosen for its layout on this CPU.
pub struct TernaryLinear {
    /// The weights.
    pub w: TernaryMatrix,
    kernel: Kernel,
}

impl TernaryLinear {
    /// Wraps a matrix with the best kernel for its layout (or the one `ONEBIT_KERNEL` names).
    pub fn new(w: TernaryMatrix) -> onebit_kernels::Result<Self> {
        let kernel = Kernel::best(w.format())?;
        Ok(TernaryLinear { w, kernel })
    }

    /// The kernel in use.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    fn forward(&self, pool: &ThreadPool, x: &ActQuant, out: &mut [f32]) {
        matmul(pool, &self.kernel, &self.w, x, out).expect("shapes checked at load");
    }
}

/// Runs several linears on the same input in one pool dispatch (q/k/v, gate/up).
pub(crate) fn forward_many(
    pool: &ThreadPool,
    x: &ActQuant,
    ops: &mut [(&TernaryLinear, &mut [f32])],
) {
    match ops {
        [(l0, o0), (l1, o1)] => matmul_many(
            pool,
            x,
            &mut [(&l0.kernel, &l0.w, &mut **o0), (&l1.kernel, &l1.w, &mut **o1)],
        ),
        [(l0, o0), (l1, o1), (l2, o2)] => matmul_many(
            pool,
            x,
            &mut [
                (&l0.kernel, &l0.w, &mut **o0),
                (&l1.kernel, &l1.w, &mut **o1),
                (&l2.kernel, &l2.w, &mut **o2),
            ],
        ),
        _ => {
            for (l, o) in ops.iter_mut() {
                l.forward(pool, x, o);
            }
            Ok(())
        }
    }
    .expect("shapes checked at load");
}

/// How the output head is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadKind {
    /// int8 rows with per-row scales (default: half the bytes of f16, read every token).
    Q8,
    /// f32 rows (exact reference; four times the bytes of Q8).
    F32,
    /// 4-bit rows (-7..7) with per-row least-squares scales: half the bytes of Q8.
    Q4,
}

/// The output projection.
pub enum Head {
    /// int8 or 4-bit rows; activations are quantized per token to int8 as for the ternary layers.
    Q8(Q8Matrix),
    /// f32 rows `vocab x hidden`.
    F32(Vec<f32>),
    /// Not loaded: a pipeline stage that does not sample ([`crate::load::ModelPart`]).
    Absent,
}

impl Head {
    /// Bytes read per token.
    pub fn bytes(&self) -> usize {
        match self {
            Head::Q8(m) => m.bytes(),
            Head::F32(w) => w.len() * 4,
            Head::Absent => 0,
        }
    }
}

/// One transformer block.
pub struct Layer {
    /// Pre-attention RMSNorm weight.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub q: TernaryLinear,
    /// Key projection.
    pub k: TernaryLinear,
    /// Value projection.
    pub v: TernaryLinear,
    /// Output projection.
    pub o: TernaryLinear,
    /// BitNet sub-norm before `o`.
    pub attn_sub_norm: Option<Vec<f32>>,
    /// Pre-FFN RMSNorm weight.
    pub ffn_norm: Vec<f32>,
    /// Gate projection.
    pub gate: TernaryLinear,
    /// Up projection.
    pub up: TernaryLinear,
    /// Down projection.
    pub down: TernaryLinear,
    /// BitNet sub-norm before `down`.
    pub ffn_sub_norm: Option<Vec<f32>>,
}

impl Layer {
    /// The seven linears.
    pub fn linears(&self) -> [&TernaryLinear; 7] {
        [&self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down]
    }
}

/// Token embeddings, `vocab x hidden`: f16 rows owned, or rows of any float or ggml block
/// type used in place from the mapped file (only the rows of tokens actually seen are ever
/// paged in; a quantized row is dequantized when it is looked up, as ggml's `get_rows` does).
pub enum Embedding {
    /// Rows held in memory.
    Owned(Vec<f16>),
    /// Rows held in memory in f32 (`LoadOptions::f32_embeddings`: exact for f32 sources).
    OwnedF32(Vec<f32>),
    /// Rows in a shared buffer, starting at byte `start`.
    Mapped {
        /// The mapped file.
        bytes: onebit_kernels::SharedBytes,
        /// Offset of row 0.
        start: usize,
        /// Element type of the rows.
        ty: crate::gguf::GgmlType,
        /// Bytes per row.
        row_bytes: usize,
    },
    /// Not loaded: a pipeline stage that takes hidden states, not tokens.
    Absent,
}

impl Embedding {
    /// Writes row `id` (of width `hidden`) as f32 into `out`.
    pub fn row(&self, id: usize, hidden: usize, out: &mut [f32]) {
        match self {
            Embedding::Owned(v) => {
                for (d, s) in out.iter_mut().zip(&v[id * hidden..(id + 1) * hidden]) {
                    *d = s.to_f32();
                }
            }
            Embedding::OwnedF32(v) => {
                out[..hidden].copy_from_slice(&v[id * hidden..(id + 1) * hidden])
            }
            Embedding::Mapped { bytes, start, ty, row_bytes } => {
                let at = start + id * row_bytes;
                let b = &(**bytes).as_ref()[at..at + row_bytes];
                let ok = crate::gguf::dequant::dequantize(*ty, b, &mut out[..hidden]);
                debug_assert!(ok, "row type and length checked at load");
            }
            // Sessions refuse tokens for a model without embeddings before they get here.
            Embedding::Absent => out[..hidden].fill(0.0),
        }
    }
}

/// A loaded model, ready to run.
pub struct Model {
    /// Shape and switches.
    pub config: ModelConfig,
    /// Token embeddings.
    pub embed: Embedding,
    /// Blocks: all of them, or those of one pipeline stage.
    pub layers: Vec<Layer>,
    /// Index in the whole model of `layers[0]` (0 unless this is a later pipeline stage).
    pub first_layer: usize,
    /// Final RMSNorm weight.
    pub norm: Vec<f32>,
    /// Output projection.
    pub head: Head,
    /// The threads every product runs on.
    pub pool: ThreadPool,
    /// This node's piece of every block in a tensor-parallel mesh; `None`: whole blocks.
    pub tensor: Option<TensorPart>,
    /// Whether the head holds only this node's vocabulary rows of `tensor` (rank 0 gathers
    /// the logits); false for whole heads, as on the head stage of a hybrid mesh.
    pub tensor_head: bool,
}

impl Model {
    /// Loads a model from a GGUF file (bitnet.cpp, llama.cpp or onebit) or a Hugging Face
    /// directory, with weights in this CPU's fastest kernel layout.
    ///
    /// ```no_run
    /// use onebit_model::{load::LoadOptions, Model, Session};
    /// let model = Model::from_pretrained("model.gguf", &LoadOptions::default())?;
    /// let mut session = Session::new(&model, 2048, 128);
    /// let logits = session.forward(&[1, 2, 3])?;
    /// # Ok::<(), onebit_model::Error>(())
    /// ```
    pub fn from_pretrained(path: &str, opts: &crate::load::LoadOptions) -> crate::Result<Model> {
        crate::load::load_any(path, opts)
    }

    /// Whether this model holds every block, the embeddings and the head (not a pipeline stage).
    pub fn is_whole(&self) -> bool {
        self.has_ends() && self.first_layer == 0 && self.layers.len() == self.config.layers
    }

    /// Whether this model holds the embeddings, the final norm and the head.
    pub fn has_ends(&self) -> bool {
        !matches!(self.head, Head::Absent)
    }

    /// Bytes of ternary weights (all layers).
    pub fn ternary_bytes(&self) -> usize {
        self.layers.iter().flat_map(|l| l.linears()).map(|l| l.w.bytes().len()).sum()
    }

    /// Bytes read per decoded token: ternary weights, the head, one embedding row, norms.
    pub fn bytes_per_token(&self) -> usize {
        self.ternary_bytes() + self.head.bytes() + self.config.hidden * 2
    }

    /// Average stored bits per ternary weight.
    pub fn ternary_bpw(&self) -> f64 {
        // A pipeline stage holds some of the blocks, a tensor-parallel node some rows of each.
        let held: usize =
            self.layers.iter().flat_map(|l| l.linears()).map(|l| l.w.rows() * l.w.cols()).sum();
        self.ternary_bytes() as f64 * 8.0 / held.max(1) as f64
    }

    /// `kernel name` of the first linear (all share one layout).
    pub fn kernel_name(&self) -> String {
        self.layers.first().map_or_else(|| "none".into(), |l| l.q.kernel().name())
    }

    pub(crate) fn head_forward(&self, x: &ActQuant, xf: &[f32], out: &mut [f32]) {
        match &self.head {
            // The session sized `x` and `out` from this model's config.
            Head::Q8(m) => onebit_kernels::head::q8_matmul(&self.pool, m, x, out)
                .expect("head shapes fixed by the session"),
            Head::F32(w) => {
                // The rows held (all of them, or a tensor-parallel node's piece).
                let h = self.config.hidden;
                let v = w.len() / h;
                for (o, x) in out.chunks_exact_mut(v).zip(xf.chunks_exact(h)) {
                    dense::gemv_f32(&self.pool, w, v, h, x, o)
                }
            }
            // Sessions refuse to run the head of a model that has none.
            Head::Absent => out.fill(0.0),
        }
    }
}
