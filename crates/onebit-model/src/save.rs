//! Writing a model as a GGUF file for a [`Target`] engine, from any [`TensorSource`] (a GGUF
//! file being converted, a training checkpoint being exported): the architecture name and
//! keys the engine reads, its tokenizer keys, its RoPE pairing (q/k rows permuted where the
//! engine pairs differently) and tensor types it computes with. Everything that can be
//! checked is checked before the first byte is written, and the file appears only when
//! complete ([`crate::output::AtomicFile`]).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, TensorPlan, Value};
use crate::load::{ternary_format, TensorSource};
use crate::output::{check_output, AtomicFile};
use crate::target::Target;
use crate::tensors::Role;
use half::f16;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use std::path::Path;

/// What to write.
#[derive(Clone, Debug)]
pub struct SaveOptions {
    /// The engine the file is for.
    pub target: Target,
    /// Type of the ternary linears: a ternary layout, or F32/F16 values (scale · trit).
    pub linear: GgmlType,
    /// Type of embeddings and an untied head: `None` keeps the source's type where the
    /// target reads it (else F16); F16 or F32 otherwise.
    pub embeddings: Option<GgmlType>,
    /// `general.*` and `tokenizer.*` keys to carry (the source's, or a tokenizer's).
    pub metadata: Vec<(String, Value)>,
}

/// What was written.
#[derive(Clone, Debug, PartialEq)]
pub struct SaveReport {
    /// Architecture name in the file.
    pub arch: &'static str,
    /// Linears written in another type than asked (shape the type cannot hold).
    pub fallbacks: Vec<(String, GgmlType)>,
    /// Whether q/k rows were permuted for the target's RoPE pairing.
    pub permuted_qk: bool,
    /// File size.
    pub bytes: u64,
}

/// Writes the model `src` (shaped by `config`) to `path` for `o.target`; `inputs` are the
/// files `src` reads (never overwritten); `progress(done, total)` counts tensors.
pub fn save_gguf(
    src: &dyn TensorSource,
    config: &ModelConfig,
    path: &Path,
    inputs: &[&Path],
    o: &SaveOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<SaveReport> {
    config.validate()?;
    check_output(path, inputs)?;
    crate::output::check_replaces(path, b"GGUF", "GGUF")?;
    let target = o.target;
    let arch = target.arch(config)?;
    let permute = target.permute_qk(config, arch);
    let mut fallbacks = Vec::new();
    let mut plan = Vec::new();
    let mut linear_types = Vec::new();
    for t in config.tensors() {
        let ty = match t.role {
            Role::Norm => GgmlType::F32,
            Role::Embedding | Role::Output => embedding_type(src, &t.name, target, o.embeddings)?,
            Role::Linear => {
                let ty =
                    target.linear_type(o.linear, arch, t.rows, t.cols).map_err(|e| match e {
                        Error::Target { target, why } => {
                            Error::Target { target, why: format!("tensor {}: {why}", t.name) }
                        }
                        other => other,
                    })?;
                if ty != o.linear {
                    fallbacks.push((t.name.clone(), ty));
                }
                linear_types.push(ty);
                ty
            }
        };
        plan.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty });
        if t.role == Role::Linear && matches!(ty, GgmlType::OnebitT2 | GgmlType::OnebitB3) {
            let name = t.name.replace(".weight", ".scale");
            plan.push(TensorPlan { name, dims: vec![1], ty: GgmlType::F32 });
        }
    }
    let mut meta = metadata(config, arch, target, o, &linear_types)?;
    // Our own files carry a checksum of their tensor data; files for other engines do not
    // (their tools copy unknown keys into files whose data they rewrite).
    meta.retain(|(k, _)| k != crate::gguf::CHECKSUM_KEY);
    if target == Target::Onebit {
        meta.push((crate::gguf::CHECKSUM_KEY.into(), Value::String(String::new())));
    }
    let gg = |source| Error::Gguf { path: path.display().to_string(), source };
    let file = AtomicFile::create(path)?;
    let mut w = GgufWriter::new(file, &meta, &plan).map_err(gg)?;
    let specs = config.tensors();
    let mut pending_scale = None;
    let mut spec_at = 0;
    for (i, p) in plan.iter().enumerate() {
        if let Some(scale) = pending_scale.take() {
            let s: f32 = scale;
            w.write_tensor(&p.name, &s.to_le_bytes()).map_err(gg)?;
            progress(i + 1, plan.len());
            continue;
        }
        let spec = &specs[spec_at];
        spec_at += 1;
        let bytes = match spec.role {
            Role::Norm => f32_bytes(&src.floats(&spec.name, spec.len())?),
            Role::Embedding | Role::Output => match src.raw(&spec.name) {
                Some((ty, raw)) if ty == p.ty => raw.to_vec(),
                _ => encode_floats(&src.floats(&spec.name, spec.len())?, p.ty),
            },
            Role::Linear => {
                let m = src.ternary(&spec.name, spec.rows, spec.cols)?;
                let qk =
                    spec.name.ends_with(".attn_q.weight") || spec.name.ends_with(".attn_k.weight");
                let m = if permute && qk {
                    permute_heads(&m, config.head_dim, !config.rope_interleaved)
                        .map_err(|source| Error::Kernel { name: spec.name.clone(), source })?
                } else {
                    m
                };
                if matches!(p.ty, GgmlType::OnebitT2 | GgmlType::OnebitB3) {
                    pending_scale = Some(m.scale());
                }
                encode_linear(&m, p.ty)
                    .map_err(|source| Error::Kernel { name: spec.name.clone(), source })?
            }
        };
        w.write_tensor(&p.name, &bytes).map_err(gg)?;
        progress(i + 1, plan.len());
    }
    let patch = w.checksum_patch();
    let mut file = w.finish().map_err(gg)?;
    if let Some((at, bytes)) = patch {
        file.patch(at, &bytes)?;
    }
    file.commit()?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(SaveReport { arch, fallbacks, permuted_qk: permute, bytes })
}

/// The type embeddings (or an untied head) are written in.
fn embedding_type(
    src: &dyn TensorSource,
    name: &str,
    target: Target,
    asked: Option<GgmlType>,
) -> Result<GgmlType> {
    match asked {
        Some(ty @ (GgmlType::F16 | GgmlType::F32)) => Ok(ty),
        Some(other) => Err(Error::Target {
            target: target.name(),
            why: format!("embeddings can be written as F16 or F32, not {other:?}"),
        }),
        // Float and ggml block types are read by every engine; ternary ones are not.
        None => Ok(match src.raw(name) {
            Some((ty, _)) if crate::gguf::dequant::is_dequantizable(ty) => ty,
            _ => GgmlType::F16,
        }),
    }
}

/// The keys of the file: the architecture's hyper-parameters, then the carried keys.
fn metadata(
    c: &ModelConfig,
    arch: &'static str,
    target: Target,
    o: &SaveOptions,
    linear_types: &[GgmlType],
) -> Result<Vec<(String, Value)>> {
    let mut meta = if target == Target::Onebit { c.to_gguf() } else { peer_keys(c, arch) };
    if target != Target::Onebit {
        if let Some(ft) = linear_types.first().and_then(|&t| target.file_type(t)) {
            meta.push(("general.file_type".into(), Value::U32(ft)));
        }
    }
    let own = |k: &str| meta.iter().any(|(m, _)| m == k);
    let mut carried: Vec<(String, Value)> = o
        .metadata
        .iter()
        .filter(|(k, _)| {
            let general = k.starts_with("general.")
                && !matches!(
                    k.as_str(),
                    "general.architecture" | "general.alignment" | "general.file_type"
                );
            (general || k.starts_with("tokenizer.")) && !own(k)
        })
        .cloned()
        .collect();
    // llama.cpp and its forks know the GPT-2 pre-tokenizer as "gpt-2" (onebit wrote "gpt2"
    // before it checked); every file gets the name the engines accept.
    for (k, v) in carried.iter_mut() {
        if k == "tokenizer.ggml.pre" && v.as_str() == Some("gpt2") {
            *v = Value::String("gpt-2".into());
        }
    }
    if target != Target::Onebit {
        peer_tokenizer(&mut carried, c, target)?;
    }
    meta.extend(carried);
    Ok(meta)
}

/// `{arch}.*` keys as llama.cpp-family engines read them (strict types: u32 counts, f32 floats).
fn peer_keys(c: &ModelConfig, arch: &str) -> Vec<(String, Value)> {
    let k = |s: &str| format!("{arch}.{s}");
    let u = |v: usize| Value::U32(v as u32);
    vec![
        ("general.architecture".into(), Value::String(arch.into())),
        (k("vocab_size"), u(c.vocab)),
        (k("context_length"), u(c.max_positions)),
        (k("embedding_length"), u(c.hidden)),
        (k("block_count"), u(c.layers)),
        (k("feed_forward_length"), u(c.intermediate)),
        (k("rope.dimension_count"), u(c.head_dim)),
        (k("attention.head_count"), u(c.heads)),
        (k("attention.head_count_kv"), u(c.kv_heads)),
        (k("attention.key_length"), u(c.head_dim)),
        (k("attention.value_length"), u(c.head_dim)),
        (k("attention.layer_norm_rms_epsilon"), Value::F32(c.rms_eps)),
        (k("rope.freq_base"), Value::F32(c.rope_theta)),
    ]
}

/// Makes the carried tokenizer keys ones the engine accepts: a vocabulary must be present,
/// as many tokens as the model has rows (padded with unused `[PAD{i}]` tokens, as llama.cpp's
/// converters pad), and explicit BOS/EOS ids (the engines otherwise assume 11).
fn peer_tokenizer(meta: &mut Vec<(String, Value)>, c: &ModelConfig, target: Target) -> Result<()> {
    let refuse = |why: String| Error::Target { target: target.name(), why };
    let get = |m: &Vec<(String, Value)>, k: &str| m.iter().position(|(n, _)| n == k);
    let Some(ti) = get(meta, "tokenizer.ggml.tokens") else {
        return Err(refuse(
            "the model carries no vocabulary (tokenizer.ggml.tokens); pass --tokenizer".into(),
        ));
    };
    let n_tokens = match &meta[ti].1 {
        Value::Array(t) => t.len(),
        _ => return Err(refuse("tokenizer.ggml.tokens is not an array".into())),
    };
    if n_tokens > c.vocab {
        return Err(refuse(format!(
            "the vocabulary has {n_tokens} tokens but the model only {} embedding rows",
            c.vocab
        )));
    }
    if let Value::Array(t) = &mut meta[ti].1 {
        t.extend((n_tokens..c.vocab).map(|i| Value::String(format!("[PAD{i}]"))));
    }
    if let Some(i) = get(meta, "tokenizer.ggml.token_type") {
        if let Value::Array(t) = &mut meta[i].1 {
            t.resize(c.vocab, Value::I32(5));
        }
    }
    let id = |v: Option<u32>| v.map(Value::U32);
    let bos = get(meta, "tokenizer.ggml.bos_token_id").map(|i| meta[i].1.clone()).or(id(c.bos));
    let eos = get(meta, "tokenizer.ggml.eos_token_id").map(|i| meta[i].1.clone()).or(id(c.eos));
    meta.retain(|(k, _)| k != "tokenizer.ggml.bos_token_id" && k != "tokenizer.ggml.eos_token_id");
    if let Some(b) = bos.clone().or(eos.clone()) {
        meta.push(("tokenizer.ggml.bos_token_id".into(), b));
    }
    if let Some(e) = eos.or(bos) {
        meta.push(("tokenizer.ggml.eos_token_id".into(), e));
    }
    Ok(())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Floats encoded as F32, F16 or Q8_0.
fn encode_floats(v: &[f32], ty: GgmlType) -> Vec<u8> {
    match ty {
        GgmlType::F16 => v.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
        GgmlType::Q8_0 => crate::gguf::dequant::quantize_q8_0(v),
        _ => f32_bytes(v),
    }
}

/// A ternary matrix as bytes of `ty`: a packed layout, or its values (scale · trit).
fn encode_linear(m: &TernaryMatrix, ty: GgmlType) -> onebit_kernels::Result<Vec<u8>> {
    match ternary_format(ty) {
        Some(f) => Ok(m.repack(f)?.bytes().to_vec()),
        None => {
            let s = m.scale();
            let values: Vec<f32> = m.to_trits().iter().map(|&t| t as f32 * s).collect();
            Ok(encode_floats(&values, ty))
        }
    }
}

/// Reorders the rows of every head of a q or k projection between the two RoPE pairings:
/// to adjacent pairs (row 2i ← i, 2i+1 ← half + i, what llama.cpp's converter does for
/// `llama`) or back to halves. Attention scores are unchanged because q and k move together.
pub fn permute_heads(
    m: &TernaryMatrix,
    head_dim: usize,
    to_interleaved: bool,
) -> onebit_kernels::Result<TernaryMatrix> {
    let (rows, cols) = (m.rows(), m.cols());
    let trits = m.to_trits();
    let half = head_dim / 2;
    let mut out = vec![0i8; trits.len()];
    for r in 0..rows {
        let (head, d) = (r / head_dim * head_dim, r % head_dim);
        // Row d of the halves layout is row `paired(d)` of the adjacent-pairs layout.
        let paired = if d < half { 2 * d } else { 2 * (d - half) + 1 };
        let (to, from) = if to_interleaved { (head + paired, r) } else { (r, head + paired) };
        out[to * cols..(to + 1) * cols].copy_from_slice(&trits[from * cols..(from + 1) * cols]);
    }
    TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &out, m.scale())
}
