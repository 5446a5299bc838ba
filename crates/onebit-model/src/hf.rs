//! Hugging Face model directories: `config.json` + `*.safetensors` (+ `tokenizer.json`).
//! Linears are either transformers' packed BitNet weights (`uint8[rows/4, cols]` with a
//! one-element `weight_scale`) or bf16/f16/f32 masters, ternarized on load.
//!
//! `weight_scale` means different things per `quantization_config.linear_class`:
//! `bitlinear` divides by it (it is 1/mean|W|), `autobitlinear` multiplies (it is mean|W|,
//! the 2B4T checkpoint's class). Packed files without the key are read as `autobitlinear`.

use crate::config::ModelConfig;
use crate::engine::Model;
use crate::error::{Error, Result};
use crate::load::{build_model, decode_floats, FloatKind, LoadOptions, TensorSource};
use crate::mmap::Mapped;
use onebit_kernels::quant::ternarize_absmean;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::Path;

/// How a packed checkpoint's `weight_scale` is applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScaleMeaning {
    /// `y = x·W / weight_scale` (transformers `BitLinear`).
    Divide,
    /// `y = x·W · weight_scale` (transformers `AutoBitLinear`).
    Multiply,
}

/// An opened HF directory.
pub struct HfDir {
    /// Parsed config.
    pub config: ModelConfig,
    scale: ScaleMeaning,
    files: Vec<Mapped>,
    index: HashMap<String, usize>,
    dir: String,
}

/// The HF tensor name for a GGUF-style name.
pub fn hf_name(gguf: &str) -> String {
    let fixed = match gguf {
        "token_embd.weight" => return "model.embed_tokens.weight".into(),
        "output_norm.weight" => return "model.norm.weight".into(),
        "output.weight" => return "lm_head.weight".into(),
        other => other,
    };
    let Some(rest) = fixed.strip_prefix("blk.") else { return fixed.into() };
    let (layer, tail) = rest.split_once('.').unwrap_or((rest, ""));
    let part = match tail.trim_end_matches(".weight") {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "attn_sub_norm" => "self_attn.attn_sub_norm",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        "ffn_sub_norm" => "mlp.ffn_sub_norm",
        other => other,
    };
    format!("model.layers.{layer}.{part}.weight")
}

fn floats_of(name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    let kind = match dtype {
        Dtype::F32 => FloatKind::F32,
        Dtype::F16 => FloatKind::F16,
        Dtype::BF16 => FloatKind::Bf16,
        other => {
            return Err(Error::BadTensor {
                name: name.into(),
                why: format!("dtype {other:?} where floats are needed"),
            })
        }
    };
    Ok(decode_floats(kind, data))
}

impl HfDir {
    /// Opens `dir`: reads config.json and maps every `*.safetensors` file in it.
    pub fn open(dir: &str) -> Result<HfDir> {
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |source| Error::Io { path: p, source }
        };
        let cfg_path = Path::new(dir).join("config.json");
        let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
        let config = ModelConfig::from_hf_json(&text)?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| Error::Config(e.to_string()))?;
        let scale = match v.pointer("/quantization_config/linear_class").and_then(|c| c.as_str()) {
            Some("bitlinear") => ScaleMeaning::Divide,
            Some("autobitlinear") | None => ScaleMeaning::Multiply,
            Some(other) => {
                return Err(Error::Config(format!("config.json: unknown linear_class '{other}'")))
            }
        };
        let mut paths: Vec<_> = std::fs::read_dir(dir)
            .map_err(io(Path::new(dir)))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(Error::Config(format!("{dir}: no *.safetensors files")));
        }
        let mut files = Vec::new();
        let mut index = HashMap::new();
        for p in &paths {
            let m = Mapped::open(&p.display().to_string())?;
            let st = SafeTensors::deserialize(m.bytes()).map_err(|e| Error::BadTensor {
                name: p.display().to_string(),
                why: format!("safetensors: {e}"),
            })?;
            for name in st.names() {
                index.insert(name.to_string(), files.len());
            }
            files.push(m);
        }
        Ok(HfDir { config, scale, files, index, dir: dir.into() })
    }

    fn get(&self, gguf_name: &str) -> Result<(Dtype, Vec<usize>, &[u8])> {
        let name = hf_name(gguf_name);
        let &i = self.index.get(&name).ok_or_else(|| Error::MissingTensor(name.clone()))?;
        let st = SafeTensors::deserialize(self.files[i].bytes()).expect("parsed when opened");
        let t = st
            .tensor(&name)
            .map_err(|e| Error::BadTensor { name: name.clone(), why: e.to_string() })?;
        Ok((t.dtype(), t.shape().to_vec(), t.data()))
    }

    /// The directory path.
    pub fn path(&self) -> &str {
        &self.dir
    }
}

impl TensorSource for HfDir {
    fn floats(&self, name: &str, len: usize) -> Result<Vec<f32>> {
        let (dtype, shape, data) = self.get(name)?;
        if shape.iter().product::<usize>() != len {
            return Err(Error::BadTensor {
                name: hf_name(name),
                why: format!("shape {shape:?}, expected {len} values"),
            });
        }
        floats_of(&hf_name(name), dtype, data)
    }

    fn ternary(&self, name: &str, rows: usize, cols: usize) -> Result<TernaryMatrix> {
        let (dtype, shape, data) = self.get(name)?;
        let hf = hf_name(name);
        let bad = |why: String| Error::BadTensor { name: hf.clone(), why };
        let kerr = |source| Error::Kernel { name: hf.clone(), source };
        match dtype {
            Dtype::U8 => {
                if shape != [rows / 4, cols] || !rows.is_multiple_of(4) {
                    return Err(bad(format!(
                        "packed shape {shape:?}, expected [{}, {cols}]",
                        rows / 4
                    )));
                }
                let sname = hf.replace(".weight", ".weight_scale");
                let &i =
                    self.index.get(&sname).ok_or_else(|| Error::MissingTensor(sname.clone()))?;
                let st =
                    SafeTensors::deserialize(self.files[i].bytes()).expect("parsed when opened");
                let s = st
                    .tensor(&sname)
                    .map_err(|e| Error::BadTensor { name: sname.clone(), why: e.to_string() })?;
                let v = floats_of(&sname, s.dtype(), s.data())?;
                let ws = *v.first().ok_or_else(|| bad("empty weight_scale".into()))?;
                let scale = match self.scale {
                    ScaleMeaning::Multiply => ws,
                    ScaleMeaning::Divide => 1.0 / ws,
                };
                TernaryMatrix::from_bytes(
                    TernaryFormat::HfPacked,
                    rows,
                    cols,
                    data.to_vec(),
                    Some(scale),
                )
                .map_err(kerr)
            }
            Dtype::F32 | Dtype::F16 | Dtype::BF16 => {
                if shape != [rows, cols] {
                    return Err(bad(format!("shape {shape:?}, expected [{rows}, {cols}]")));
                }
                let (trits, s) = ternarize_absmean(&floats_of(&hf, dtype, data)?);
                TernaryMatrix::from_trits(TernaryFormat::T2, rows, cols, &trits, s).map_err(kerr)
            }
            other => Err(bad(format!("dtype {other:?} is not a packed or float matrix"))),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.index.contains_key(&hf_name(name))
    }
}

/// Loads an HF directory.
pub fn load_hf(dir: &str, opts: &LoadOptions) -> Result<Model> {
    let d = HfDir::open(dir)?;
    let config = d.config.clone();
    build_model(&d, config, opts)
}

/// `v` with every object's keys in sorted order (serde_json keeps insertion order here).
fn sorted_keys(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut kv: Vec<_> = m.into_iter().collect();
            kv.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k, sorted_keys(v))).collect())
        }
        serde_json::Value::Array(a) => a.into_iter().map(sorted_keys).collect(),
        other => other,
    }
}

/// Writes `config` and tensors from `src` as an HF directory transformers loads with its own
/// BitNet support: packed ternary linears (`autobitlinear`, offline: weight_scale multiplies),
/// f32 embeddings and norms, q/k in the rotate-half pairing HF models use, config.json, and
/// (given a tokenizer) tokenizer.json with a tokenizer_config.json. Every file is written
/// atomically; nothing is written before the tensors have been read.
pub fn write_hf(
    src: &dyn TensorSource,
    config: &ModelConfig,
    dir: &str,
    tokenizer: Option<&crate::Tokenizer>,
) -> Result<()> {
    use crate::tensors::Role;
    use safetensors::tensor::TensorView;
    let c = config;
    c.validate()?;
    if c.sub_norms && c.q_dim() != c.hidden {
        return Err(Error::Target {
            target: "transformers",
            why: format!(
                "BitNetForCausalLM's attn_sub_norm spans hidden = {}, but heads x head_dim = {}",
                c.hidden,
                c.q_dim()
            ),
        });
    }
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let f32s = |v: Vec<f32>| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    for t in c.tensors() {
        let name = hf_name(&t.name);
        match t.role {
            Role::Norm => {
                tensors.push((name, Dtype::F32, vec![t.cols], f32s(src.floats(&t.name, t.len())?)))
            }
            Role::Embedding | Role::Output => tensors.push((
                name,
                Dtype::F32,
                vec![t.rows, t.cols],
                f32s(src.floats(&t.name, t.len())?),
            )),
            Role::Linear => {
                let kerr = |source| Error::Kernel { name: t.name.clone(), source };
                let m = src.ternary(&t.name, t.rows, t.cols)?;
                let qk = t.name.ends_with(".attn_q.weight") || t.name.ends_with(".attn_k.weight");
                let m = if qk && c.rope_interleaved {
                    crate::save::permute_heads(&m, c.head_dim, false).map_err(kerr)?
                } else {
                    m
                };
                let m = m.repack(TernaryFormat::HfPacked).map_err(kerr)?;
                tensors.push((
                    name.replace(".weight", ".weight_scale"),
                    Dtype::F32,
                    vec![1],
                    m.scale().to_le_bytes().to_vec(),
                ));
                tensors.push((name, Dtype::U8, vec![t.rows / 4, t.cols], m.bytes().to_vec()));
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Config(format!("safetensors: {e}")))?;
    let bytes = safetensors::serialize(views, None)
        .map_err(|e| Error::Config(format!("safetensors: {e}")))?;
    let io = |source| Error::Io { path: dir.into(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let at = |f: &str| Path::new(dir).join(f);
    crate::output::write_atomic(at("model.safetensors"), &bytes)?;
    let act = match c.act {
        crate::config::Activation::Relu2 => "relu2",
        crate::config::Activation::Silu => "silu",
    };
    let cfg = serde_json::json!({
        "architectures": [if c.sub_norms { "BitNetForCausalLM" } else { "LlamaForCausalLM" }],
        "model_type": if c.sub_norms { "bitnet" } else { "llama" },
        "hidden_size": c.hidden, "num_hidden_layers": c.layers, "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads, "head_dim": c.head_dim, "intermediate_size": c.intermediate,
        "vocab_size": c.vocab, "max_position_embeddings": c.max_positions, "rope_theta": c.rope_theta,
        "rms_norm_eps": c.rms_eps, "hidden_act": act, "tie_word_embeddings": c.tied_embeddings,
        "bos_token_id": c.bos.or(c.eos), "eos_token_id": c.eos,
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"},
    });
    // Keys sorted, as transformers writes them (and as the recorded fixtures hash them).
    let text = serde_json::to_string_pretty(&sorted_keys(cfg)).expect("json");
    crate::output::write_atomic(at("config.json"), text.as_bytes())?;
    if let Some(tok) = tokenizer {
        crate::output::write_atomic(at("tokenizer.json"), tok.to_json()?.as_bytes())?;
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
        let tc = serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": name(c.bos.or(c.eos)), "eos_token": name(c.eos),
            "model_max_length": c.max_positions,
        });
        let text = serde_json::to_string_pretty(&tc).expect("json");
        crate::output::write_atomic(at("tokenizer_config.json"), text.as_bytes())?;
    }
    Ok(())
}
