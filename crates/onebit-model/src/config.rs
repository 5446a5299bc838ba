//! [`ModelConfig`]: the BitNet b1.58 family and its Llama-family switches, read from a
//! Hugging Face `config.json` or GGUF keys, and the `init --shape` presets.

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};
use serde::{Deserialize, Serialize};

/// Gated FFN activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// relu(x)² (BitNet b1.58).
    Relu2,
    /// x·sigmoid(x) (Llama).
    Silu,
}

/// RoPE base of an HF config: top-level `rope_theta` (transformers 4) or
/// `rope_parameters.rope_theta` (transformers 5); scaled RoPE variants are refused rather
/// than run as plain RoPE.
fn hf_rope_theta(v: &serde_json::Value) -> Result<f32> {
    let params = v.get("rope_parameters").filter(|p| !p.is_null());
    for scaling in [v.get("rope_scaling"), params.and_then(|p| p.get("rope_type"))] {
        let kind = match scaling {
            None | Some(serde_json::Value::Null) => continue,
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(obj) => obj
                .get("rope_type")
                .or_else(|| obj.get("type"))
                .and_then(|t| t.as_str())
                .unwrap_or("unknown")
                .to_string(),
        };
        if kind != "default" {
            return Err(Error::Config(format!(
                "config.json: RoPE scaling '{kind}' is not supported (plain RoPE only)"
            )));
        }
    }
    let theta = v
        .get("rope_theta")
        .or_else(|| params.and_then(|p| p.get("rope_theta")))
        .map(|t| {
            t.as_f64()
                .ok_or_else(|| Error::Config("config.json: rope_theta is not a number".into()))
        })
        .transpose()?
        .unwrap_or(10000.0);
    if !theta.is_finite() {
        return Err(Error::Config(format!("config.json: rope_theta is {theta}")));
    }
    Ok(theta as f32)
}

/// Most blocks a model may have.
pub const MAX_LAYERS: usize = 4096;

/// What a GGUF architecture name means, as the engine that defines it runs it. Every row
/// of the table in this crate's README is one arm of [`ArchRules::of`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArchRules {
    /// FFN gate activation.
    pub act: Activation,
    /// `attn_sub_norm` / `ffn_sub_norm` present.
    pub sub_norms: bool,
    /// RoPE on adjacent pairs (ggml's NORM) rather than halves (NEOX).
    pub rope_interleaved: bool,
    /// `output.weight` is read when present (else the head is always the embedding).
    pub reads_output: bool,
    /// Optional one-element `blk.N.<linear>.scale` tensors multiply a linear's output.
    pub scale_tensors: bool,
}

impl ArchRules {
    /// The architecture names onebit reads.
    pub const NAMES: [&'static str; 4] = ["llama", "bitnet", "bitnet-b1.58", "bitnet-25"];

    /// The rules of `arch`, or None for an architecture onebit does not run.
    pub fn of(arch: &str) -> Option<ArchRules> {
        let r = |act, sub_norms, rope_interleaved, reads_output, scale_tensors| ArchRules {
            act,
            sub_norms,
            rope_interleaved,
            reads_output,
            scale_tensors,
        };
        Some(match arch {
            // llama.cpp LLM_ARCH_LLAMA: SwiGLU, ROPE_TYPE_NORM (its converter permutes q/k).
            "llama" => r(Activation::Silu, false, true, true, false),
            // llama.cpp / bitnet.cpp / ik_llama.cpp LLM_ARCH_BITNET (1bitLLM): SwiGLU with
            // sub-norms, ROPE_TYPE_NEOX, head always tied, optional .scale tensors.
            "bitnet" => r(Activation::Silu, true, false, false, true),
            // ik_llama.cpp / bitnet.cpp LLM_ARCH_BITNET_B158 and _25 (2B4T): relu² gating.
            "bitnet-b1.58" | "bitnet-25" => r(Activation::Relu2, true, false, true, false),
            _ => return None,
        })
    }
}

/// Shape and switches of a decoder-only transformer with ternary linears.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Residual width.
    pub hidden: usize,
    /// Transformer blocks.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (GQA when fewer than `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// FFN width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context.
    pub max_positions: usize,
    /// RoPE base.
    pub rope_theta: f32,
    /// RoPE on adjacent pairs (llama.cpp GGUF, whose converters permute q/k) instead of halves.
    pub rope_interleaved: bool,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// FFN activation.
    pub act: Activation,
    /// BitNet's attn_sub_norm / ffn_sub_norm before o_proj and down_proj.
    pub sub_norms: bool,
    /// lm_head shares the embedding table.
    pub tied_embeddings: bool,
    /// Beginning-of-sequence token.
    pub bos: Option<u32>,
    /// End-of-sequence token.
    pub eos: Option<u32>,
}

impl ModelConfig {
    /// BitNet b1.58 2B4T exactly (microsoft/bitnet-b1.58-2B-4T's config.json).
    pub fn bitnet_2b4t() -> Self {
        ModelConfig {
            hidden: 2560,
            layers: 30,
            heads: 20,
            kv_heads: 5,
            head_dim: 128,
            intermediate: 6912,
            vocab: 128256,
            max_positions: 4096,
            rope_theta: 500000.0,
            rope_interleaved: false,
            rms_eps: 1e-5,
            act: Activation::Relu2,
            sub_norms: true,
            tied_embeddings: true,
            bos: Some(128000),
            eos: Some(128001),
        }
    }

    /// Names accepted by [`ModelConfig::preset`].
    pub const PRESETS: [&'static str; 12] =
        ["micro", "tiny", "125m", "350m", "1b", "2b4t", "3b", "7b", "13b", "30b", "70b", "100b"];

    /// A BitNet b1.58 shape by name (the sizes bitnet.cpp benchmarks; 100b as 118 Llama-70B
    /// blocks). `micro` is one block of 256 with 64-wide heads, the smallest shape whose rows
    /// fill every packed layout's block (TQ1_0/TQ2_0/IQ2_BN need 256 columns), for tests.
    pub fn preset(name: &str) -> Result<Self> {
        let base = ModelConfig::bitnet_2b4t();
        let shape = |hidden, layers, heads, kv_heads, intermediate, vocab| ModelConfig {
            hidden,
            layers,
            heads,
            kv_heads,
            head_dim: hidden / heads,
            intermediate,
            vocab,
            max_positions: 2048,
            rope_theta: 10000.0,
            tied_embeddings: false,
            bos: Some(1),
            eos: Some(2),
            ..base.clone()
        };
        Ok(match name {
            "micro" => shape(256, 1, 4, 2, 256, 256),
            "tiny" => shape(64, 2, 4, 2, 160, 256),
            "125m" => shape(768, 12, 12, 12, 3072, 32000),
            "350m" => shape(1024, 24, 16, 16, 4096, 32000),
            "1b" => shape(1536, 24, 16, 16, 4096, 32000),
            "2b4t" => base,
            "3b" => shape(3200, 26, 32, 32, 8640, 32000),
            "7b" => shape(4096, 32, 32, 32, 11008, 32000),
            "13b" => shape(5120, 40, 40, 40, 13824, 32000),
            "30b" => shape(6656, 60, 52, 52, 17920, 32000),
            "70b" => shape(8192, 80, 64, 8, 28672, 32000),
            "100b" => shape(8192, 118, 64, 8, 28672, 32000),
            _ => {
                return Err(Error::Config(format!(
                    "unknown shape '{name}' (known: {})",
                    Self::PRESETS.join(", ")
                )))
            }
        })
    }

    /// Checks the relations the engine relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let dims = [
            self.hidden,
            self.layers,
            self.heads,
            self.kv_heads,
            self.head_dim,
            self.intermediate,
            self.vocab,
        ];
        if dims.contains(&0) {
            return bad(format!("zero dimension in {self:?}"));
        }
        if dims.iter().any(|&d| d > 1 << 24) || self.max_positions > 1 << 24 {
            return bad("a dimension exceeds 2^24".into());
        }
        // The deepest published models have a few hundred blocks; a count in the millions is
        // a corrupted or hostile file, and listing its tensors alone would take minutes.
        if self.layers > MAX_LAYERS {
            return bad(format!("{} layers exceed the limit of {MAX_LAYERS}", self.layers));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "heads {} not a multiple of kv_heads {}",
                self.heads, self.kv_heads
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim {} is odd (RoPE rotates pairs)", self.head_dim));
        }
        let ok = self.rms_eps > 0.0
            && self.rms_eps < 1.0
            && self.rope_theta > 1.0
            && self.rope_theta.is_finite();
        if !ok {
            return bad(format!(
                "rms_eps {} or rope_theta {} out of range",
                self.rms_eps, self.rope_theta
            ));
        }
        Ok(())
    }

    /// Width of the query projection.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }
    /// Width of each of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Ternary parameters (the seven linears of every block).
    pub fn ternary_params(&self) -> u64 {
        let (h, i) = (self.hidden as u64, self.intermediate as u64);
        let attn = h * self.q_dim() as u64 * 2 + h * self.kv_dim() as u64 * 2;
        (attn + 3 * h * i) * self.layers as u64
    }

    /// Reads a Hugging Face `config.json` (BitNet or Llama model types).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Config(format!("config.json: {e}")))?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64).map(|n| n as usize);
        let need = |k: &str| {
            num(k)
                .ok_or_else(|| Error::Config(format!("config.json: missing or non-integer '{k}'")))
        };
        let model_type = v.get("model_type").and_then(|m| m.as_str()).unwrap_or("llama");
        let act = match v
            .get("hidden_act")
            .and_then(|a| a.as_str())
            .unwrap_or(if model_type == "bitnet" { "relu2" } else { "silu" })
        {
            "relu2" => Activation::Relu2,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(Error::Config(format!("config.json: unsupported hidden_act '{other}'")))
            }
        };
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let token = |k: &str| {
            v.get(k)
                .and_then(|t| t.as_u64().or_else(|| t.as_array()?.first()?.as_u64()))
                .map(|t| t as u32)
        };
        let c = ModelConfig {
            hidden,
            layers: need("num_hidden_layers")?,
            heads,
            kv_heads: num("num_key_value_heads").unwrap_or(heads),
            head_dim: num("head_dim").unwrap_or(hidden / heads.max(1)),
            intermediate: need("intermediate_size")?,
            vocab: need("vocab_size")?,
            max_positions: num("max_position_embeddings").unwrap_or(2048),
            rope_theta: hf_rope_theta(&v)?,
            rope_interleaved: false,
            rms_eps: v.get("rms_norm_eps").and_then(|t| t.as_f64()).unwrap_or(1e-5) as f32,
            act,
            sub_norms: model_type == "bitnet",
            tied_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|t| t.as_bool())
                .unwrap_or(model_type == "bitnet"),
            bos: token("bos_token_id"),
            eos: token("eos_token_id"),
        };
        c.validate()?;
        Ok(c)
    }

    /// Reads the `{arch}.*` keys of a GGUF file. The architecture name decides the FFN,
    /// the sub-norms, the RoPE pairing and whether `output.weight` is read, as the engine
    /// that defines the name runs it ([`ArchRules`]); onebit's own files (`onebit.version`)
    /// carry `onebit.*` switches that take precedence.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config("GGUF: no general.architecture".into()))?
            .to_string();
        let onebit = g.get("onebit.version").is_some();
        let rules = ArchRules::of(&arch).ok_or_else(|| {
            Error::Config(format!(
                "GGUF architecture '{arch}' is not supported (known: {})",
                ArchRules::NAMES.join(", ")
            ))
        })?;
        let key = |k: &str| g.get(&format!("{arch}.{k}"));
        let need = |k: &str| {
            key(k)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| Error::Config(format!("GGUF: missing or non-integer '{arch}.{k}'")))
        };
        let float = |k: &str, default: f64| -> Result<f32> {
            let v = match key(k) {
                None => default,
                Some(v) => v
                    .as_f64()
                    .ok_or_else(|| Error::Config(format!("GGUF: '{arch}.{k}' is not a number")))?,
            };
            if !v.is_finite() {
                return Err(Error::Config(format!("GGUF: '{arch}.{k}' is {v}")));
            }
            Ok(v as f32)
        };
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let flag =
            |k: &str, default: bool| g.get(k).map_or(default, |v| matches!(v, Value::Bool(true)));
        let act = match g.get("onebit.ffn_act").and_then(Value::as_str) {
            Some("silu") => Activation::Silu,
            Some("relu2") => Activation::Relu2,
            Some(other) => {
                return Err(Error::Config(format!("GGUF: unknown onebit.ffn_act '{other}'")))
            }
            None => rules.act,
        };
        let vocab = match key("vocab_size").and_then(Value::as_u64) {
            Some(v) => v as usize,
            None => match g.get("tokenizer.ggml.tokens") {
                Some(Value::Array(t)) => t.len(),
                _ => match g.tensor("token_embd.weight") {
                    Some(t) if t.dims.len() == 2 => t.dims[1] as usize,
                    _ => {
                        return Err(Error::Config(
                            "GGUF: no vocab_size, no tokenizer.ggml.tokens, no token_embd".into(),
                        ))
                    }
                },
            },
        };
        let head_dim = key("attention.key_length")
            .and_then(Value::as_u64)
            .map_or(hidden / heads.max(1), |v| v as usize);
        if let Some(rot) = key("rope.dimension_count").and_then(Value::as_u64) {
            if rot as usize != head_dim {
                return Err(Error::Config(format!(
                    "GGUF: RoPE on {rot} of {head_dim} head dimensions (partial rotary) is not supported"
                )));
            }
        }
        let rope_interleaved =
            if onebit { !flag("onebit.rope_rotate_half", true) } else { rules.rope_interleaved };
        let layers = need("block_count")?;
        // Seven linears a block: a header claiming more blocks than its tensors can hold is
        // refused before anything is sized by it. A mesh node's shard holds only its blocks.
        let held = match crate::shard::shard_identity(g) {
            Some((_, crate::shard::ShardSpan::Blocks(r))) => {
                if r.start >= r.end || r.end > layers {
                    return Err(Error::Config(format!(
                        "GGUF: a shard of blocks {}..{} of a model of {layers}",
                        r.start, r.end
                    )));
                }
                r.len()
            }
            _ => layers,
        };
        if held.saturating_mul(7) > g.tensors.len() && !g.tensors.is_empty() {
            return Err(Error::Config(format!(
                "GGUF: block_count {layers} but the file holds only {} tensors",
                g.tensors.len()
            )));
        }
        let c = ModelConfig {
            hidden,
            layers,
            heads,
            kv_heads: key("attention.head_count_kv")
                .and_then(Value::as_u64)
                .map_or(heads, |v| v as usize),
            head_dim,
            intermediate: need("feed_forward_length")?,
            vocab,
            max_positions: key("context_length")
                .and_then(Value::as_u64)
                .map_or(2048, |v| v as usize),
            rope_theta: float("rope.freq_base", 10000.0)?,
            rope_interleaved,
            rms_eps: float("attention.layer_norm_rms_epsilon", 1e-5)?,
            act,
            sub_norms: flag("onebit.sub_norms", rules.sub_norms),
            tied_embeddings: match g.get(crate::shard::TIED_KEY) {
                Some(Value::Bool(t)) => *t,
                _ => !rules.reads_output || g.tensor("output.weight").is_none(),
            },
            bos: g.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64).map(|v| v as u32),
            eos: g.get("tokenizer.ggml.eos_token_id").and_then(Value::as_u64).map(|v| v as u32),
        };
        c.validate()?;
        Ok(c)
    }

    /// The GGUF keys that [`ModelConfig::from_gguf`] reads back (architecture `bitnet-b1.58`).
    pub fn to_gguf(&self) -> Vec<(String, Value)> {
        let a = "bitnet-b1.58";
        let k = |s: &str| format!("{a}.{s}");
        let mut m = vec![
            ("general.architecture".to_string(), Value::String(a.into())),
            ("onebit.version".into(), Value::U32(1)),
            (k("vocab_size"), Value::U32(self.vocab as u32)),
            (k("context_length"), Value::U32(self.max_positions as u32)),
            (k("embedding_length"), Value::U32(self.hidden as u32)),
            (k("block_count"), Value::U32(self.layers as u32)),
            (k("feed_forward_length"), Value::U32(self.intermediate as u32)),
            (k("rope.dimension_count"), Value::U32(self.head_dim as u32)),
            (k("attention.head_count"), Value::U32(self.heads as u32)),
            (k("attention.head_count_kv"), Value::U32(self.kv_heads as u32)),
            (k("attention.layer_norm_rms_epsilon"), Value::F32(self.rms_eps)),
            (k("rope.freq_base"), Value::F32(self.rope_theta)),
            (
                "onebit.ffn_act".into(),
                Value::String(
                    match self.act {
                        Activation::Relu2 => "relu2",
                        Activation::Silu => "silu",
                    }
                    .into(),
                ),
            ),
            ("onebit.sub_norms".into(), Value::Bool(self.sub_norms)),
            ("onebit.rope_rotate_half".into(), Value::Bool(!self.rope_interleaved)),
        ];
        if let Some(b) = self.bos {
            m.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
        }
        if let Some(e) = self.eos {
            m.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
        }
        m
    }
}
