//! `onebit info`: architecture, shapes, tensor types and bytes of a model file.

use anyhow::Result;
use onebit_model::load::GgufModelFile;
use onebit_model::{KvDtype, ModelConfig};
use std::collections::BTreeMap;

/// Flags of `onebit info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model file (GGUF).
    model: String,
}

/// Runs `onebit info`.
pub fn run(a: Args) -> Result<()> {
    let f = GgufModelFile::open(&a.model)?;
    let c = ModelConfig::from_gguf(&f.header)?;
    let arch = f.header.get("general.architecture").and_then(|v| v.as_str()).unwrap_or("?");
    println!("file: {} (GGUF v{})", a.model, f.header.version);
    println!("architecture: {arch}");
    println!(
        "shape: hidden {} · layers {} · heads {}/{} kv · head_dim {} · ffn {} ({:?}) · vocab {} · ctx {}",
        c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.act, c.vocab, c.max_positions
    );
    println!(
        "switches: sub_norms {} · tied embeddings {} · rope θ {} ({}) · rms eps {}",
        c.sub_norms,
        c.tied_embeddings,
        c.rope_theta,
        if c.rope_interleaved { "adjacent pairs" } else { "rotate half" },
        c.rms_eps
    );
    let mut by_type: BTreeMap<String, (usize, u64)> = BTreeMap::new();
    for t in &f.header.tensors {
        let e = by_type.entry(format!("{:?}", t.ty)).or_default();
        e.0 += 1;
        e.1 += t.size;
    }
    println!("tensors: {}", f.header.tensors.len());
    let sum = f.header.get(onebit_model::gguf::CHECKSUM_KEY).and_then(|v| v.as_str());
    match sum {
        Some(s) => {
            f.verify()?;
            println!("checksum: {s} (tensor data verified)");
        }
        None => println!("checksum: none (not written by onebit)"),
    }
    for (ty, (n, bytes)) in by_type {
        println!("  {ty:<10} {n:>5} tensors {:>12.1} MB", bytes as f64 / 1e6);
    }
    let ternary: u64 = f
        .header
        .tensors
        .iter()
        .filter(|t| t.dims.len() == 2 && t.name.starts_with("blk."))
        .map(|t| t.size)
        .sum();
    println!(
        "ternary params {} in {:.1} MB: {:.3} bits per weight",
        c.ternary_params(),
        ternary as f64 / 1e6,
        ternary as f64 * 8.0 / c.ternary_params() as f64
    );
    // K and V of every layer for one context position, per `--kv-cache` type.
    let values = (2 * c.layers * c.kv_dim()) as f64;
    let per = |kv: KvDtype| values * kv.bytes_per_value() / 1e3;
    println!(
        "KV cache per context token: {:.1} KB f16 · {:.1} KB q8 · {:.1} KB f32 ({} positions in f16: {:.0} MB)",
        per(KvDtype::F16),
        per(KvDtype::Q8),
        per(KvDtype::F32),
        c.max_positions,
        per(KvDtype::F16) * c.max_positions as f64 / 1e3
    );
    Ok(())
}
