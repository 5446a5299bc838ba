//! `onebit serve`: the OpenAI-compatible server (onebit-server) on a model.

use super::mesh_args::{Layout, MeshArgs};
use super::model_args::ModelArgs;
use anyhow::{Context, Result};
use onebit_model::chat_template::ChatTemplate;
use onebit_model::SessionOptions;
use onebit_server::{Backend, Fallback, Reform, Server, ServerConfig};
use std::sync::Arc;

/// Flags of `onebit serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    m: super::model_args::ModelArgs,
    #[command(flatten)]
    mesh: super::mesh_args::MeshArgs,
    /// Address to listen on (loopback: reachable from this machine only).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Sequences decoded together (continuous batching).
    #[arg(long, default_value_t = 4)]
    slots: usize,
    /// Context positions per slot.
    #[arg(long, default_value_t = 2048)]
    ctx: usize,
    /// Prompt tokens read per slot between decode steps.
    #[arg(long, default_value_t = 64)]
    prefill_chunk: usize,
    /// Requests that may wait for a slot; beyond, the server answers 503 with Retry-After.
    #[arg(long, default_value_t = 64)]
    queue: usize,
    /// KV cache element type: f16, f32 or q8.
    #[arg(long, default_value = "f16")]
    kv_cache: String,
    /// Require `Authorization: Bearer KEY` on /v1 routes.
    #[arg(long)]
    api_key: Option<String>,
    /// Allow this origin through CORS (default: none).
    #[arg(long)]
    cors_origin: Option<String>,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    body_limit: usize,
    /// The model id clients use (default: the model file's name without extension).
    #[arg(long)]
    alias: Option<String>,
    /// tokenizer.json (default: inside the model directory or beside the model file).
    #[arg(long)]
    tokenizer: Option<String>,
}

/// Runs `onebit serve` until Ctrl-C.
pub fn run(a: Args) -> Result<()> {
    let kv = onebit_model::KvDtype::from_name(&a.kv_cache)
        .with_context(|| format!("unknown --kv-cache '{}' (f16, f32, q8)", a.kv_cache))?;
    let tok = match &a.tokenizer {
        Some(p) => onebit_model::Tokenizer::from_file(p)?,
        None => onebit_model::Tokenizer::for_model(&a.m.model)?,
    };
    let template = ChatTemplate::for_model(&a.m.model)?;
    // With --mesh every node's session is sized as the server's engine sizes its own.
    let opts = onebit_model::SessionOptions {
        max_ctx: a.ctx,
        max_batch: a.prefill_chunk.max(a.slots),
        slots: a.slots,
        kv,
    };
    // --strategy auto plans for the slots busy at once, not for one sequence.
    let mesh = MeshArgs { in_flight: Some(a.slots), ..a.mesh.clone() };
    let (model, comm, split) = mesh.load(&a.m, opts)?;
    tok.check_model_vocab(model.config.vocab)?;
    let model_id = a.alias.clone().unwrap_or_else(|| {
        let p = std::path::Path::new(&a.m.model);
        p.file_stem().map_or_else(|| "onebit".into(), |s| s.to_string_lossy().into_owned())
    });
    let cfg = ServerConfig {
        host: a.host,
        port: a.port,
        slots: a.slots,
        ctx: a.ctx,
        prefill_chunk: a.prefill_chunk,
        queue: a.queue,
        kv,
        api_key: a.api_key,
        cors_origin: a.cors_origin,
        body_limit: a.body_limit,
        model_id: model_id.clone(),
        // A mesh that loses a node: form it again without that node, or serve on from this
        // node alone if the model fits here.
        fallback: a
            .mesh
            .mesh
            .is_some()
            .then(|| -> Result<Fallback> {
                Ok(Fallback {
                    model: a.m.model.clone(),
                    load: a.m.options()?,
                    reform: Some(reformer(&mesh, &a.m, opts)),
                })
            })
            .transpose()?,
    };
    let slots = cfg.slots;
    let backend = match comm {
        Some(c) => {
            eprintln!("mesh: {split}");
            mesh_backend(&mesh, c, &split, &model)?
        }
        None if mesh.device == "gpu" => {
            let ctx = onebit_gpu::GpuContext::new()?;
            eprintln!(
                "gpu: {} ({}, {})",
                ctx.adapter().name,
                ctx.adapter().backend,
                ctx.adapter().device_type
            );
            Backend::Gpu(std::sync::Arc::new(ctx))
        }
        None => Backend::Local,
    };
    let server = Server::start_on(model, tok, template, cfg, backend)?;
    eprintln!(
        "serving '{model_id}' on http://{} ({slots} slots); chat page at /, API at /v1; Ctrl-C stops",
        server.addr()
    );
    let (tx, rx) = std::sync::mpsc::channel();
    ctrlc_wait(tx)?;
    let _ = rx.recv();
    eprintln!("stopping: finishing running replies");
    server.stop();
    Ok(())
}

/// Blocks Ctrl-C (SIGINT) and SIGTERM from killing the process; `tx` fires on either.
fn ctrlc_wait(tx: std::sync::mpsc::Sender<()>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::spawn(move || {
        rt.block_on(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        });
        let _ = tx.send(());
    });
    Ok(())
}

/// The server's backend for a mesh laid out as `layout` whose head holds `model`.
fn mesh_backend(
    mesh: &MeshArgs,
    comm: Box<dyn onebit_dist::Comm>,
    layout: &Layout,
    model: &onebit_model::Model,
) -> Result<Backend> {
    let t = mesh.timeouts();
    Ok(match layout {
        Layout::Hybrid(h) => Backend::Hybrid(comm, h.ring()?, t, mesh.layout_wires(layout)?),
        _ if model.tensor_head => Backend::Tensor(comm, t, mesh.wire_dtype()?),
        _ => Backend::Mesh(comm, t, mesh.layout_wires(layout)?),
    })
}

/// Forms the server's mesh again from the workers that still answer ([`MeshArgs::reform`]).
fn reformer(mesh: &MeshArgs, m: &ModelArgs, session: SessionOptions) -> Reform {
    let (mesh, m) = (mesh.clone(), m.clone());
    Arc::new(move |why: &str| {
        let (model, comm, layout) = mesh.reform(&m, session, why)?;
        let comm = comm.ok_or("no mesh formed")?;
        let backend = mesh_backend(&mesh, comm, &layout, &model).map_err(|e| e.to_string())?;
        Ok((model, backend))
    })
}
