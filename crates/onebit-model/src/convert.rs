//! `onebit convert`: rewrite a GGUF model with its ternary linears in another layout
//! (bitnet.cpp I2_S, llama.cpp TQ1_0/TQ2_0, onebit T2/B3). Every other tensor is copied
//! byte for byte; metadata is rewritten from the parsed config (so the result reads back
//! identically) plus the source's `general.*` and `tokenizer.*` keys.

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::gguf::{GgmlType, GgufWriter, TensorPlan};
use crate::load::{ternary_matrix, GgufModelFile};
use crate::synthetic::linear_type;
use onebit_kernels::TernaryFormat;
use std::io::BufWriter;

const LINEARS: [&str; 7] =
    ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];

fn is_linear(name: &str) -> bool {
    name.starts_with("blk.") && LINEARS.iter().any(|l| name.ends_with(&format!(".{l}.weight")))
}

/// Converts `src` to `dst` with linears in `to`; `progress(done, total)` counts tensors.
pub fn convert_gguf(
    src: &str,
    dst: &str,
    to: TernaryFormat,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let ty = linear_type(to)?;
    let f = GgufModelFile::open(src)?;
    let config = ModelConfig::from_gguf(&f.header)?;
    let mut meta = config.to_gguf();
    for (k, v) in &f.header.metadata {
        let keep =
            (k.starts_with("general.") && k != "general.architecture" && k != "general.alignment")
                || (k.starts_with("tokenizer.") && !meta.iter().any(|(m, _)| m == k));
        if keep {
            meta.push((k.clone(), v.clone()));
        }
    }
    let separate_scale = matches!(ty, GgmlType::OnebitT2 | GgmlType::OnebitB3);
    let mut plan = Vec::new();
    for t in &f.header.tensors {
        if t.name.ends_with(".scale") && is_linear(&t.name.replace(".scale", ".weight")) {
            continue;
        }
        if is_linear(&t.name) {
            plan.push(TensorPlan { name: t.name.clone(), dims: t.dims.clone(), ty });
            if separate_scale {
                plan.push(TensorPlan {
                    name: t.name.replace(".weight", ".scale"),
                    dims: vec![1],
                    ty: GgmlType::F32,
                });
            }
        } else {
            plan.push(TensorPlan { name: t.name.clone(), dims: t.dims.clone(), ty: t.ty });
        }
    }
    let io = |source| Error::Io { path: dst.into(), source };
    let gg = |source| Error::Gguf { path: dst.into(), source };
    let out = std::fs::File::create(dst).map_err(io)?;
    let mut w =
        GgufWriter::new(BufWriter::with_capacity(1 << 22, out), &meta, &plan).map_err(gg)?;
    let total = plan.len();
    let mut done = 0;
    let mut pending_scale = None;
    for p in &plan {
        if let Some(scale) = pending_scale.take() {
            let s: f32 = scale;
            w.write_tensor(&p.name, &s.to_le_bytes()).map_err(gg)?;
        } else if is_linear(&p.name) {
            let (rows, cols) = f.tensor(&p.name)?.0.matrix_shape();
            let m = ternary_matrix(&f, &p.name, rows as usize, cols as usize)?;
            let m =
                m.repack(to).map_err(|source| Error::Kernel { name: p.name.clone(), source })?;
            w.write_tensor(&p.name, m.bytes()).map_err(gg)?;
            if separate_scale {
                pending_scale = Some(m.scale());
            }
        } else {
            w.write_tensor(&p.name, f.tensor(&p.name)?.1).map_err(gg)?;
        }
        done += 1;
        progress(done, total);
    }
    w.finish().map_err(gg)?;
    Ok(())
}
