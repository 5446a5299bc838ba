//! Export to the engine: a GGUF file in the engine's layout (ternary tensors in a chosen
//! packed format with their γ, f16 or f32 embeddings, f32 norms) carrying the model config
//! and, when given, the tokenizer as a GGUF `gpt2` vocabulary, so one file runs anywhere.

use crate::error::{Error, Result};
use crate::model::TrainModel;
use crate::ParamId;
use half::f16;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use onebit_model::gguf::{GgmlType, GgufWriter, Value};
use onebit_model::synthetic::{linear_type, tensor_plan};
use std::io::BufWriter;

/// Export settings.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Ternary layout (T2, B3, I2_S, TQ1_0, TQ2_0).
    pub format: TernaryFormat,
    /// Keep embeddings (and an untied head) in f32 instead of f16.
    pub f32_embeddings: bool,
    /// `general.name`.
    pub name: String,
    /// Further metadata (a source GGUF's `tokenizer.*` keys when fine-tuning).
    pub extra: Vec<(String, Value)>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: TernaryFormat::T2,
            f32_embeddings: false,
            name: "onebit".into(),
            extra: Vec::new(),
        }
    }
}

/// GGUF metadata for a byte-level BPE `tokenizer.json` (tokens, merges, control tokens).
pub fn tokenizer_metadata(tokenizer_json: &str) -> Result<Vec<(String, Value)>> {
    let bad = |m: String| Error::Tokenizer(format!("export: {m}"));
    let v: serde_json::Value =
        serde_json::from_str(tokenizer_json).map_err(|e| bad(e.to_string()))?;
    let model = &v["model"];
    if model["type"].as_str() != Some("BPE") {
        return Err(bad("only BPE tokenizers can be embedded in GGUF".into()));
    }
    let vocab = model["vocab"].as_object().ok_or_else(|| bad("model.vocab is not a map".into()))?;
    let mut tokens = vec![None; vocab.len()];
    for (tok, id) in vocab {
        let id = id.as_u64().ok_or_else(|| bad(format!("token {tok} has no integer id")))? as usize;
        *tokens
            .get_mut(id)
            .ok_or_else(|| bad(format!("token id {id} is beyond the vocabulary")))? =
            Some(tok.clone());
    }
    let mut types = vec![1i32; tokens.len()];
    if let Some(added) = v["added_tokens"].as_array() {
        for a in added {
            if let (Some(id), Some(s)) = (a["id"].as_u64(), a["content"].as_str()) {
                let id = id as usize;
                if id >= tokens.len() {
                    tokens.resize(id + 1, None);
                    types.resize(id + 1, 1);
                }
                tokens[id] = Some(s.to_string());
                if a["special"].as_bool() == Some(true) {
                    types[id] = 3;
                }
            }
        }
    }
    let tokens: Vec<String> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            t.ok_or_else(|| bad(format!("token id {i} is unused (gaps cannot be stored)")))
        })
        .collect::<Result<_>>()?;
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or_else(|| bad("model.merges is missing".into()))?
        .iter()
        .map(|m| match m {
            serde_json::Value::String(s) => Ok(Value::String(s.clone())),
            serde_json::Value::Array(p) if p.len() == 2 => Ok(Value::String(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            _ => Err(bad("a merge is neither \"a b\" nor [a, b]".into())),
        })
        .collect::<Result<_>>()?;
    Ok(vec![
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".into(), Value::Array(merges)),
        ("tokenizer.ggml.add_bos_token".into(), Value::Bool(false)),
    ])
}

/// Writes `m` (its current ternary caches, i.e. after the last update) to `path`.
pub fn export_gguf(
    m: &TrainModel,
    tokenizer_json: Option<&str>,
    path: &str,
    opts: &ExportOptions,
) -> Result<()> {
    let c = &m.config;
    let mut plan = tensor_plan(c, linear_type(opts.format)?);
    if opts.f32_embeddings {
        for t in &mut plan {
            if t.ty == GgmlType::F16 {
                t.ty = GgmlType::F32;
            }
        }
    }
    let mut meta = c.to_gguf();
    meta.push(("general.name".into(), Value::String(opts.name.clone())));
    if let Some(tj) = tokenizer_json {
        meta.extend(tokenizer_metadata(tj)?);
    }
    meta.extend(
        opts.extra
            .iter()
            .filter(|(k, _)| !meta.iter().any(|(m, _)| m == k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let file = std::fs::File::create(path).map_err(Error::io(path))?;
    let gg = |source| onebit_model::Error::Gguf { path: path.into(), source };
    let mut w = GgufWriter::new(BufWriter::new(file), &meta, &plan).map_err(gg)?;
    for t in &plan {
        let param_name = t.name.replace(".scale", ".weight");
        let id: ParamId = m
            .params
            .find(&param_name)
            .ok_or_else(|| Error::Config(format!("export: no parameter for tensor {}", t.name)))?;
        let bytes: Vec<u8> = if t.name.ends_with(".scale") {
            let cache = m
                .params
                .ternary(id)
                .ok_or_else(|| Error::Config(format!("{param_name} is not ternary")))?;
            cache.gamma.to_le_bytes().to_vec()
        } else {
            match t.ty {
                GgmlType::F32 => m.params.value(id).iter().flat_map(|v| v.to_le_bytes()).collect(),
                GgmlType::F16 => m
                    .params
                    .value(id)
                    .iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
                _ => {
                    let info = m.params.info(id);
                    let cache = m
                        .params
                        .ternary(id)
                        .ok_or_else(|| Error::Config(format!("{param_name} is not ternary")))?;
                    TernaryMatrix::from_trits(
                        opts.format,
                        info.rows,
                        info.cols,
                        &cache.trits,
                        cache.gamma,
                    )?
                    .bytes()
                    .to_vec()
                }
            }
        };
        w.write_tensor(&t.name, &bytes).map_err(gg)?;
    }
    w.finish().map_err(gg)?;
    Ok(())
}
