//! Loading a GGUF model (bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, onebit T2/B3, or f16/f32
//! masters ternarized on load) into a [`Model`], repacking linears into the kernel layout
//! chosen for this CPU.

use crate::config::ModelConfig;
use crate::engine::{Embedding, Head, HeadKind, Layer, Model, TernaryLinear};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use half::f16;
use onebit_kernels::quant::ternarize_absmean;
use onebit_kernels::{Q8Matrix, TernaryFormat, TernaryMatrix, ThreadPool};

mod source;

use source::to_f32;
pub(crate) use source::{decode_floats, FloatKind};
pub use source::{GgufModelFile, TensorSource};

/// How to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Threads for the model's pool.
    pub threads: usize,
    /// Kernel layout for the linears; `None` keeps B3/TQ1_0 files at 1.6 bits and uses T2 otherwise.
    pub layout: Option<TernaryFormat>,
    /// Head storage.
    pub head: HeadKind,
    /// Use T2/B3 weights and f16 embeddings in place from the mapped file (`Some(true)`),
    /// copy them into process memory (`Some(false)`: a few % faster decode, the copies can
    /// use huge pages), or decide by size (`None`: in place when the file exceeds half of
    /// the available memory).
    pub in_place: Option<bool>,
    /// Check the tensor data against the checksum onebit writes into its own files (one
    /// read of the whole file; files from other tools carry no checksum).
    pub verify: bool,
    /// Keep embeddings copied into memory in f32 instead of f16 (twice the bytes; exact
    /// for f32 checkpoints, e.g. to compare with the framework that trained them).
    pub f32_embeddings: bool,
    /// Load only part of the model (a pipeline stage of a device mesh); `None`: all of it.
    pub part: Option<ModelPart>,
    /// Load only this node's piece of every block and of the output head (a
    /// tensor-parallel mesh); with `part` too, its piece of the part's blocks and whole ends
    /// (a stage of a hybrid mesh, split over a group of nodes).
    pub tensor: Option<crate::engine::TensorPart>,
}

/// The part of a model one node of a pipeline holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelPart {
    /// The blocks, by index in the whole model.
    pub layers: std::ops::Range<usize>,
    /// Whether this node also holds the token embeddings, the final norm and the head (the
    /// node that samples; the others never read them, so they are not loaded there).
    pub ends: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            threads: 2,
            layout: None,
            head: HeadKind::Q8,
            in_place: None,
            verify: true,
            f32_embeddings: false,
            part: None,
            tensor: None,
        }
    }
}

/// The kernel layout for a matrix: the one asked for, else B3 for 1.6-bit sources, else T2.
fn target_layout(from: TernaryFormat, asked: Option<TernaryFormat>) -> TernaryFormat {
    asked.unwrap_or(match from {
        TernaryFormat::Tq1_0 | TernaryFormat::B3 => TernaryFormat::B3,
        _ => TernaryFormat::T2,
    })
}

/// A linear tensor of the file as a [`TernaryMatrix`] in the file's own layout.
///
/// Float tensors (and ggml block types) are used as the values they hold, as llama.cpp uses
/// them: values that are exactly `{-a, 0, +a}` (what BitNet converters write) become trits
/// with scale `a`; anything else is ternarized with absmean (BitNet's weight quantizer), which
/// changes the values and is only right for latent master weights.
pub fn ternary_matrix(
    f: &GgufModelFile,
    name: &str,
    rows: usize,
    cols: usize,
) -> Result<TernaryMatrix> {
    let (t, d) = f.tensor(name)?;
    if t.matrix_shape() != (rows as u64, cols as u64) {
        return Err(Error::BadTensor {
            name: name.into(),
            why: format!("shape {:?}, expected [{cols}, {rows}]", t.dims),
        });
    }
    let kerr = |source| Error::Kernel { name: name.into(), source };
    let scale_name = name.replace(".weight", ".scale");
    let scale_of = || -> Result<f32> { Ok(f.floats(&scale_name, 1)?[0]) };
    let m = match t.ty {
        // onebit's own layouts are the kernels' layouts: use the mapped bytes in place.
        GgmlType::OnebitT2 | GgmlType::OnebitB3 => {
            let format =
                if t.ty == GgmlType::OnebitT2 { TernaryFormat::T2 } else { TernaryFormat::B3 };
            let scale = Some(scale_of()?);
            return if f.in_place {
                let (owner, range) = f.shared(name)?;
                TernaryMatrix::from_shared(format, rows, cols, owner, range, scale)
            } else {
                TernaryMatrix::from_bytes(format, rows, cols, d.to_vec(), scale)
            }
            .map_err(kerr)
            .inspect(|m| release_if_copied(f, m));
        }
        ty => match ternary_format(ty) {
            Some(format) => TernaryMatrix::from_bytes(format, rows, cols, d.to_vec(), None),
            None if crate::gguf::dequant::is_dequantizable(ty) => {
                let w = to_f32(name, ty, d, rows * cols)?;
                let (trits, s) = exact_ternary(&w).unwrap_or_else(|| ternarize_absmean(&w));
                TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &trits, s)
            }
            None => {
                return Err(Error::BadTensor {
                    name: name.into(),
                    why: format!("type {ty:?} is not a ternary or float matrix"),
                })
            }
        },
    }
    .map_err(kerr)?;
    // Where the architecture defines them (llama.cpp's `bitnet`: `wq_scale`, ...), an optional
    // one-element `.scale` tensor multiplies the linear's output.
    let m = if f.scale_tensors && f.header.tensor(&scale_name).is_some() {
        m.scaled(scale_of()?).map_err(kerr)?
    } else {
        m
    };
    release_if_copied(f, &m);
    Ok(m)
}

/// The copy is what we keep: drop the mapped pages so RSS does not hold both.
fn release_if_copied(f: &GgufModelFile, m: &TernaryMatrix) {
    if !m.is_shared() {
        f.release();
    }
}

/// The packed layout of an ecosystem ternary tensor type.
pub fn ternary_format(ty: GgmlType) -> Option<TernaryFormat> {
    Some(match ty {
        GgmlType::I2S => TernaryFormat::I2S,
        GgmlType::Tq1_0 => TernaryFormat::Tq1_0,
        GgmlType::Tq2_0 => TernaryFormat::Tq2_0,
        GgmlType::Iq2Bn => TernaryFormat::Iq2Bn,
        GgmlType::Iq1Bn => TernaryFormat::Iq1Bn,
        GgmlType::OnebitT2 => TernaryFormat::T2,
        GgmlType::OnebitB3 => TernaryFormat::B3,
        _ => return None,
    })
}

/// Trits and scale of values that are exactly `{-a, 0, +a}` for one `a > 0`.
fn exact_ternary(w: &[f32]) -> Option<(Vec<i8>, f32)> {
    let a = w.iter().map(|v| v.abs()).find(|&v| v != 0.0).unwrap_or(1.0);
    if !a.is_finite() {
        return None;
    }
    let trits = w
        .iter()
        .map(|&v| match v {
            0.0 => Some(0),
            v if v == a => Some(1),
            v if v == -a => Some(-1),
            _ => None,
        })
        .collect::<Option<Vec<i8>>>()?;
    Some((trits, a))
}

fn linear(
    f: &dyn TensorSource,
    name: &str,
    rows: usize,
    cols: usize,
    layout: Option<TernaryFormat>,
) -> Result<TernaryLinear> {
    let kerr = |source| Error::Kernel { name: name.into(), source };
    let m = f.ternary(name, rows, cols)?;
    let target = target_layout(m.format(), layout);
    let m = if m.format() == target { m } else { m.repack(target).map_err(kerr)? };
    TernaryLinear::new(m).map_err(kerr)
}

/// Loads a GGUF model.
pub fn load_gguf(path: &str, opts: &LoadOptions) -> Result<Model> {
    let mut f = GgufModelFile::open(path)?;
    f.in_place = opts.in_place.unwrap_or_else(|| {
        let size = f.map.bytes().len() as u64;
        onebit_kernels::machine::available_memory().is_some_and(|avail| size > avail / 2)
    });
    tracing::info!(
        "{path}: weights {}",
        if f.in_place { "used in place (mmap)" } else { "copied" }
    );
    let config = ModelConfig::from_gguf(&f.header)?;
    // Refused before any weight is read, paged in or copied: a node held to a budget
    // (`--mem-limit`, a cgroup) says so instead of being killed halfway.
    let (held, what) = part_bytes(&f.header, &config, opts);
    onebit_kernels::machine::check_memory(&format!("{what} of {path}"), held)
        .map_err(Error::Config)?;
    if opts.verify {
        f.verify()?;
    }
    build_model(&f, config, opts)
}

/// Bytes of the file's tensors a load with `opts` holds, and a name for that part: the
/// blocks of a pipeline part (and the ends with it), a tensor-parallel piece's share of the
/// blocks (by its hidden rows) and the ends, or everything.
fn part_bytes(g: &crate::gguf::GgufFile, c: &ModelConfig, opts: &LoadOptions) -> (u64, String) {
    let (mut blocks, mut ends) = (vec![0u64; c.layers], 0u64);
    for t in &g.tensors {
        match crate::shard::block_of(&t.name) {
            Some(b) if b < c.layers => blocks[b] += t.size,
            _ => ends += t.size,
        }
    }
    match (&opts.part, &opts.tensor) {
        (Some(p), t) => {
            let held: u64 = blocks.get(p.layers.clone()).map_or(0, |b| b.iter().sum());
            let (held, piece) = match t {
                Some(t) => {
                    let share = t.split.hidden_range(t.rank).len() as f64 / c.hidden.max(1) as f64;
                    ((held as f64 * share) as u64, format!(", tensor piece {}", t.rank))
                }
                None => (held, String::new()),
            };
            let what = format!("blocks {}..{}{piece}", p.layers.start, p.layers.end);
            (held + if p.ends { ends } else { 0 }, what)
        }
        (None, Some(t)) => {
            let share = t.split.hidden_range(t.rank).len() as f64 / c.hidden.max(1) as f64;
            let held = (blocks.iter().sum::<u64>() as f64 * share) as u64 + ends;
            (held, format!("tensor piece {} of {}", t.rank, t.split.nodes()))
        }
        (None, None) => (blocks.iter().sum::<u64>() + ends, "the weights".into()),
    }
}

/// Builds a [`Model`] from any tensor source.
pub fn build_model(f: &dyn TensorSource, config: ModelConfig, opts: &LoadOptions) -> Result<Model> {
    let c = &config;
    let h = c.hidden;
    let whole = ModelPart { layers: 0..c.layers, ends: true };
    if let Some(t) = &opts.tensor {
        t.split.check(c)?;
        if t.rank >= t.split.nodes() {
            return Err(Error::Config(format!(
                "tensor piece of rank {} of {} nodes",
                t.rank,
                t.split.nodes()
            )));
        }
    }
    // With a pipeline part too (a stage of a hybrid mesh) the piece is of the part's blocks
    // only; the ends, where held, are whole.
    let tensor_head = opts.tensor.is_some() && opts.part.is_none();
    let part = opts.part.clone().unwrap_or(whole);
    if part.layers.start > part.layers.end || part.layers.end > c.layers {
        return Err(Error::Config(format!(
            "layers {}..{} of a model of {} layers",
            part.layers.start, part.layers.end, c.layers
        )));
    }
    if !part.ends {
        let mut layers = Vec::with_capacity(part.layers.len());
        for i in part.layers.clone() {
            layers.push(load_layer(f, c, i, opts)?);
        }
        check_norms(&layers, part.layers.start, None)?;
        f.release();
        return Ok(Model {
            config,
            embed: Embedding::Absent,
            layers,
            first_layer: part.layers.start,
            norm: Vec::new(),
            head: Head::Absent,
            pool: model_pool(opts.threads),
            tensor: opts.tensor.clone(),
            tensor_head: false,
        });
    }
    let embed = match f.rows_in_place("token_embd.weight", c.vocab, h) {
        Some((bytes, start, ty, row_bytes)) => Embedding::Mapped { bytes, start, ty, row_bytes },
        None if opts.f32_embeddings => {
            Embedding::OwnedF32(f.floats("token_embd.weight", c.vocab * h)?)
        }
        None => Embedding::Owned(
            f.floats("token_embd.weight", c.vocab * h)?.into_iter().map(f16::from_f32).collect(),
        ),
    };
    let mut layers = Vec::with_capacity(part.layers.len());
    for i in part.layers.clone() {
        layers.push(load_layer(f, c, i, opts)?);
    }
    let norm = f.floats("output_norm.weight", h)?;
    // The head is quantized row by row from wherever its rows live, so no full-precision
    // copy of a vocab x hidden matrix is held when the file maps one.
    let head_src: Vec<f32>;
    let output: Embedding;
    let head_rows: &dyn Fn(usize, &mut [f32]) = if c.tied_embeddings {
        &|r: usize, buf: &mut [f32]| embed.row(r, h, buf)
    } else if let Some((bytes, start, ty, row_bytes)) = f.rows_in_place("output.weight", c.vocab, h)
    {
        output = Embedding::Mapped { bytes, start, ty, row_bytes };
        &|r: usize, buf: &mut [f32]| output.row(r, h, buf)
    } else {
        head_src = f.floats("output.weight", c.vocab * h)?;
        &|r: usize, buf: &mut [f32]| buf.copy_from_slice(&head_src[r * h..(r + 1) * h])
    };
    let mut bad_row = None;
    let mut fill = |r: usize, buf: &mut [f32]| {
        head_rows(r, buf);
        if bad_row.is_none() && !buf.iter().all(|v| v.is_finite()) {
            bad_row = Some(r);
        }
        // The pages of rows already quantized leave RSS as the head fills, so a large
        // vocabulary is not resident twice (mapped and quantized) at the peak.
        if r % 8192 == 8191 {
            f.release();
        }
    };
    // A node of a tensor-parallel mesh holds only its rows of the head (rows are quantized
    // one by one, so they are the same rows as in the whole head).
    let rows = match &opts.tensor {
        Some(t) if tensor_head => t.split.vocab_range(t.rank),
        _ => 0..c.vocab,
    };
    let (first, n_rows) = (rows.start, rows.len());
    let mut fill = |r: usize, buf: &mut [f32]| fill(first + r, buf);
    let head = match opts.head {
        HeadKind::Q8 => Head::Q8(Q8Matrix::from_row_fn(n_rows, h, &mut fill)),
        HeadKind::Q4 => Head::Q8(Q8Matrix::from_row_fn_bits(n_rows, h, 4, &mut fill)),
        HeadKind::F32 => {
            let mut w = vec![0f32; n_rows * h];
            for (r, row) in w.chunks_exact_mut(h).enumerate() {
                fill(r, row);
            }
            Head::F32(w)
        }
    };
    let head_name = if c.tied_embeddings { "token_embd.weight" } else { "output.weight" };
    if let Some(r) = bad_row {
        return Err(non_finite(head_name, &format!("row {r}")));
    }
    if !c.tied_embeddings {
        let mut buf = vec![0f32; h];
        for r in 0..c.vocab {
            embed.row(r, h, &mut buf);
            if !buf.iter().all(|v| v.is_finite()) {
                return Err(non_finite("token_embd.weight", &format!("row {r}")));
            }
        }
    }
    check_norms(&layers, part.layers.start, Some(&norm))?;
    f.release();
    let first_layer = part.layers.start;
    let pool = model_pool(opts.threads);
    let tensor = opts.tensor.clone();
    Ok(Model { config, embed, layers, first_layer, norm, head, pool, tensor, tensor_head })
}

/// The thread pool, capped to the CPUs there are.
fn model_pool(asked: usize) -> ThreadPool {
    let (threads, capped) = onebit_kernels::machine::cap_threads(asked);
    if capped {
        tracing::warn!("{asked} threads requested, {threads} CPUs available: using {threads}");
    }
    ThreadPool::new(threads)
}

/// Block `i` of the file.
fn load_layer(
    f: &dyn TensorSource,
    c: &ModelConfig,
    i: usize,
    opts: &LoadOptions,
) -> Result<Layer> {
    let (h, qd, kvd, ffn) = (c.hidden, c.q_dim(), c.kv_dim(), c.intermediate);
    let n = |s: &str| format!("blk.{i}.{s}.weight");
    // A tensor-parallel node keeps only its rows of each linear (every node reads the file),
    // or, for `o` and `down` where the split sums their products, its columns.
    let piece = |s: &str, rows, cols| -> Option<(std::ops::Range<usize>, bool)> {
        let t = opts.tensor.as_ref()?;
        let (sp, r) = (&t.split, t.rank);
        let (q, kv) = (sp.q_range(r), sp.kv_range(c, r));
        let (p, by_cols) = match s {
            "attn_q" => (q.start * c.head_dim..q.end * c.head_dim, false),
            "attn_k" | "attn_v" => (kv.start * c.head_dim..kv.end * c.head_dim, false),
            "ffn_gate" | "ffn_up" => (sp.ffn_range(r), false),
            "attn_output" if sp.sums => (sp.att_range(c, r), true),
            "ffn_down" if sp.sums => (sp.ffn_range(r), true),
            _ => (sp.hidden_range(r), false),
        };
        (p.len() != if by_cols { cols } else { rows }).then_some((p, by_cols))
    };
    let lin = |s: &str, rows, cols| {
        let l = linear(f, &n(s), rows, cols, opts.layout)?;
        match piece(s, rows, cols) {
            None => Ok(l),
            Some((p, by_cols)) => {
                // A column cut inside a packed block of the file's layout (TQ2_0's 256)
                // goes to the kernel layout that takes any width.
                let w = if by_cols {
                    l.w.select_cols(p.clone())
                        .or_else(|_| l.w.repack(TernaryFormat::T2).and_then(|m| m.select_cols(p)))
                } else {
                    l.w.select_rows(p)
                };
                w.and_then(TernaryLinear::new)
                    .map_err(|source| Error::Kernel { name: n(s), source })
            }
        }
    };
    let sub = |s: &str, len| if c.sub_norms { f.floats(&n(s), len).map(Some) } else { Ok(None) };
    Ok(Layer {
        attn_norm: f.floats(&n("attn_norm"), h)?,
        q: lin("attn_q", qd, h)?,
        k: lin("attn_k", kvd, h)?,
        v: lin("attn_v", kvd, h)?,
        o: lin("attn_output", h, qd)?,
        attn_sub_norm: sub("attn_sub_norm", qd)?,
        ffn_norm: f.floats(&n("ffn_norm"), h)?,
        gate: lin("ffn_gate", ffn, h)?,
        up: lin("ffn_up", ffn, h)?,
        down: lin("ffn_down", h, ffn)?,
        ffn_sub_norm: sub("ffn_sub_norm", ffn)?,
    })
}

/// Every norm weight of `layers` (block `first` onwards) and the final `norm` is finite.
fn check_norms(layers: &[Layer], first: usize, norm: Option<&Vec<f32>>) -> Result<()> {
    for (name, v) in layers
        .iter()
        .enumerate()
        .flat_map(|(i, l)| {
            [("attn_norm", Some(&l.attn_norm)), ("ffn_norm", Some(&l.ffn_norm))]
                .into_iter()
                .chain([
                    ("attn_sub_norm", l.attn_sub_norm.as_ref()),
                    ("ffn_sub_norm", l.ffn_sub_norm.as_ref()),
                ])
                .filter_map(move |(n, v)| v.map(|v| (format!("blk.{}.{n}.weight", first + i), v)))
        })
        .chain(norm.map(|n| ("output_norm.weight".to_string(), n)))
    {
        if let Some(at) = v.iter().position(|x| !x.is_finite()) {
            return Err(non_finite(&name, &format!("value {at}")));
        }
    }
    Ok(())
}

fn non_finite(name: &str, at: &str) -> Error {
    Error::BadTensor { name: name.into(), why: format!("{at} is NaN or infinite") }
}

/// Loads a model from a GGUF file or a Hugging Face directory.
pub fn load_any(path: &str, opts: &LoadOptions) -> Result<Model> {
    if std::path::Path::new(path).is_dir() {
        crate::hf::load_hf(path, opts)
    } else {
        load_gguf(path, opts)
    }
}

/// Whether loading `path` turns full-precision linears into ternary ones that were never
/// trained for it: the first block's query weight holds float values that are not already
/// `{-a, 0, +a}`, and the model is not a BitNet one (whose float linears are QAT latent
/// weights, for which absmean is the right quantizer). Such a model needs fine-tuning.
pub fn needs_finetuning(path: &str) -> Result<bool> {
    let (src, config, bitnet): (Box<dyn TensorSource>, ModelConfig, bool) =
        if std::path::Path::new(path).is_dir() {
            let d = crate::hf::HfDir::open(path)?;
            let cfg = std::fs::read_to_string(std::path::Path::new(path).join("config.json"))
                .unwrap_or_default();
            let v: serde_json::Value = serde_json::from_str(&cfg).unwrap_or_default();
            let arch = v["architectures"].to_string().to_lowercase();
            let quant = v["quantization_config"]["quant_method"].as_str().unwrap_or("");
            let bitnet = arch.contains("bitnet") || matches!(quant, "bitnet" | "onebit");
            let c = d.config.clone();
            (Box::new(d), c, bitnet)
        } else {
            let f = GgufModelFile::open(path)?;
            let c = ModelConfig::from_gguf(&f.header)?;
            let arch = f.header.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
            let bitnet = arch.starts_with("bitnet");
            (Box::new(f), c, bitnet)
        };
    let name = "blk.0.attn_q.weight";
    Ok(match src.floats(name, config.q_dim() * config.hidden) {
        Ok(w) => !bitnet && exact_ternary(&w).is_none(),
        // Packed ternary layouts are not float values.
        Err(_) => false,
    })
}
