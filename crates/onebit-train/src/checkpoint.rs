//! Checkpoints: one safetensors file holding every parameter (`param/<name>`) and both AdamW
//! moments (`adam_m/…`, `adam_v/…`), with the run config and loop state (step, optimizer
//! step count, data position) as JSON in the header metadata. Written to a temporary file,
//! synced, then renamed over the target, so a crash never leaves a half-written checkpoint.
//! Resuming restores everything the next step depends on: the continued loss is bit-identical.

use crate::data::Batcher;
use crate::error::{Error, Result};
use crate::model::TrainModel;
use crate::trainer::{TrainConfig, Trainer};
use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Loop state stored next to the tensors.
#[derive(Debug, Serialize, Deserialize)]
struct State {
    format: u32,
    step: u64,
    adam_t: u64,
    batcher: Batcher,
}

/// The checksum a checkpoint carries (`onebit.checksum`): xxh3-64 over every tensor's name
/// and bytes in name order, then the config and state JSON, so a flipped byte anywhere in
/// the data or the run state is caught before training resumes or a model is exported.
fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, &'a [u8])>,
    config: &str,
    state: &str,
) -> String {
    let mut sorted: Vec<(&str, &[u8])> = tensors.collect();
    sorted.sort_by_key(|(n, _)| *n);
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (n, b) in sorted {
        h.update(n.as_bytes());
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    }
    h.update(config.as_bytes());
    h.update(state.as_bytes());
    format!("xxh3-64:{:016x}", h.digest())
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes `t` to `path` atomically.
pub fn save(t: &Trainer, path: &str) -> Result<()> {
    onebit_model::output::write_atomic(path, &to_bytes(t, path)?)?;
    Ok(())
}

/// The bytes of a checkpoint of `t` (`path` only names it in errors).
pub fn to_bytes(t: &Trainer, path: &str) -> Result<Vec<u8>> {
    let bad = |why: String| Error::Checkpoint { path: path.into(), why };
    let p = &t.model.params;
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for info in p.infos() {
        let r = info.offset..info.offset + info.len();
        let shape = vec![info.rows, info.cols];
        owned.push((
            format!("param/{}", info.name),
            shape.clone(),
            f32_bytes(&p.values[r.clone()]),
        ));
        owned.push((
            format!("adam_m/{}", info.name),
            shape.clone(),
            f32_bytes(&t.opt.m[r.clone()]),
        ));
        owned.push((format!("adam_v/{}", info.name), shape, f32_bytes(&t.opt.v[r])));
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let state = State { format: 1, step: t.step, adam_t: t.opt.t, batcher: t.batcher.clone() };
    let config = serde_json::to_string(&t.cfg).map_err(|e| bad(e.to_string()))?;
    let state = serde_json::to_string(&state).map_err(|e| bad(e.to_string()))?;
    let sum = checksum(owned.iter().map(|(n, _, b)| (n.as_str(), b.as_slice())), &config, &state);
    let mut meta = HashMap::new();
    meta.insert("onebit.config".to_string(), config);
    meta.insert("onebit.state".to_string(), state);
    meta.insert("onebit.checksum".to_string(), sum);
    safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))
}

/// Checks a checkpoint's data against its checksum (checkpoints from before checksums carry
/// none and are read as they are).
fn verify(path: &str, bytes: &[u8], st: &safetensors::SafeTensors<'_>) -> Result<()> {
    let bad = |why: String| Error::Checkpoint { path: path.into(), why };
    let (_, meta) =
        safetensors::SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let m = meta.metadata().as_ref().ok_or_else(|| bad("no metadata".into()))?;
    let Some(want) = m.get("onebit.checksum") else { return Ok(()) };
    let tensors: Vec<(String, &[u8])> =
        st.tensors().into_iter().map(|(n, v)| (n, v.data())).collect();
    let key = |k: &str| m.get(k).ok_or_else(|| bad(format!("metadata key {k} is missing")));
    let (config, state) = (key("onebit.config")?, key("onebit.state")?);
    let got = checksum(tensors.iter().map(|(n, b)| (n.as_str(), *b)), config, state);
    if &got != want {
        return Err(bad(format!(
            "data does not match the checkpoint's checksum ({want} written, {got} read): the file is corrupted"
        )));
    }
    Ok(())
}

/// Reads the run config stored in a checkpoint.
pub fn read_config(path: &str) -> Result<TrainConfig> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    Ok(parse(path, &bytes)?.0)
}

fn parse(path: &str, bytes: &[u8]) -> Result<(TrainConfig, State)> {
    let bad = |why: String| Error::Checkpoint { path: path.into(), why };
    let (_, meta) = safetensors::SafeTensors::read_metadata(bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let m = meta
        .metadata()
        .as_ref()
        .ok_or_else(|| bad("no onebit metadata (not a onebit checkpoint)".into()))?;
    let get = |k: &str| m.get(k).ok_or_else(|| bad(format!("metadata key {k} is missing")));
    let cfg: TrainConfig =
        serde_json::from_str(get("onebit.config")?).map_err(|e| bad(format!("config: {e}")))?;
    let state: State =
        serde_json::from_str(get("onebit.state")?).map_err(|e| bad(format!("state: {e}")))?;
    if state.format != 1 {
        return Err(bad(format!("checkpoint format {} is not supported", state.format)));
    }
    cfg.validate().map_err(|e| bad(e.to_string()))?;
    Ok((cfg, state))
}

/// Restores a run from `path`; `override_cfg` may change settings that do not affect the
/// model's shape (steps, LR, threads, eval and save cadence).
pub fn load(path: &str, override_cfg: Option<TrainConfig>) -> Result<Trainer> {
    let bytes = std::fs::read(path).map_err(Error::io(path))?;
    load_bytes(path, &bytes, override_cfg)
}

/// [`load`] from the bytes of a checkpoint (`path` only names it in errors).
pub fn load_bytes(path: &str, bytes: &[u8], override_cfg: Option<TrainConfig>) -> Result<Trainer> {
    let bad = |why: String| Error::Checkpoint { path: path.into(), why };
    let (saved_cfg, state) = parse(path, bytes)?;
    let cfg = match override_cfg {
        Some(c) if c.model != saved_cfg.model => {
            return Err(bad("the requested model shape differs from the checkpoint's".into()))
        }
        Some(c) => c,
        None => saved_cfg,
    };
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    verify(path, bytes, &st)?;
    let mut model = TrainModel::zeroed(cfg.model.clone())?;
    let mut m = vec![0.0; model.params.count()];
    let mut v = vec![0.0; model.params.count()];
    let infos = model.params.infos().to_vec();
    for info in &infos {
        let r = info.offset..info.offset + info.len();
        for (prefix, dst) in [
            ("param", &mut model.params.values[r.clone()]),
            ("adam_m", &mut m[r.clone()]),
            ("adam_v", &mut v[r.clone()]),
        ] {
            let name = format!("{prefix}/{}", info.name);
            let t = st.tensor(&name).map_err(|_| bad(format!("tensor {name} is missing")))?;
            if t.dtype() != Dtype::F32 || t.shape() != [info.rows, info.cols] {
                return Err(bad(format!(
                    "tensor {name}: {:?} {:?}, expected F32 [{}, {}]",
                    t.dtype(),
                    t.shape(),
                    info.rows,
                    info.cols
                )));
            }
            for (d, c) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                *d = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
    }
    if let Some(bad_val) = model.params.values.iter().find(|x| !x.is_finite()) {
        return Err(bad(format!("a parameter holds {bad_val}")));
    }
    let mut batcher = state.batcher;
    batcher.seq = cfg.seq;
    batcher.batch = cfg.batch;
    let mut t = Trainer::with_model(cfg, model)?;
    t.opt.m = m;
    t.opt.v = v;
    t.opt.t = state.adam_t;
    t.step = state.step;
    t.batcher = batcher;
    t.refresh()?;
    Ok(t)
}
