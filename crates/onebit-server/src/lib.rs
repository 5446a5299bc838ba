//! onebit-server: an OpenAI-compatible HTTP server over the onebit engine.
//!
//! - [`scheduler`]: the engine thread — one session with N slots, a bounded queue, prompts
//!   prefilled in chunks between decode steps, every busy slot decoded in one pass
//!   (continuous batching), prefix reuse across requests, cancellation on disconnect.
//! - [`routes`]: `POST /v1/chat/completions`, `POST /v1/completions` (streamed as
//!   server-sent events or whole), `GET /v1/models`, `GET /health`, `GET /metrics`
//!   (Prometheus text) and a chat page at `/` (one embedded HTML file, no CDN).
//! - [`openai`]: request and response bodies, validation, the OpenAI error body.
//!
//! axum and tokio serve HTTP; inference never runs on the async runtime.

#![forbid(unsafe_code)]

pub mod logprobs;
pub mod metrics;
pub mod native;
pub mod openai;
pub mod reply;
pub mod routes;
pub mod scheduler;
pub mod tokenize;

use axum::routing::{get, post};
use axum::Router;
use onebit_model::chat_template::ChatTemplate;
use onebit_model::{KvDtype, Model, Tokenizer};
pub use scheduler::Backend;
use scheduler::{Engine, EngineConfig};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A setting that cannot work.
    #[error("{0}")]
    Config(String),
}

/// How to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Address to listen on (loopback by default).
    pub host: String,
    /// Port (0 picks a free one).
    pub port: u16,
    /// Sequences decoded together.
    pub slots: usize,
    /// Context positions per slot.
    pub ctx: usize,
    /// Prompt tokens read per slot per engine step.
    pub prefill_chunk: usize,
    /// Requests that may wait for a slot before the server answers 503.
    pub queue: usize,
    /// KV cache element type.
    pub kv: KvDtype,
    /// Bearer token required on /v1 routes.
    pub api_key: Option<String>,
    /// An origin allowed by CORS (none by default: browsers on other origins are refused).
    pub cors_origin: Option<String>,
    /// Largest request body in bytes.
    pub body_limit: usize,
    /// The id clients name the model by.
    pub model_id: String,
    /// With the engine on a mesh: what to load on this node alone if the mesh loses a node
    /// (`None`: requests fail from then on, each saying why).
    pub fallback: Option<Fallback>,
}

/// What to do when the mesh breaks: form it again without the node that failed, or else
/// load the whole model on this node.
#[derive(Clone)]
pub struct Fallback {
    /// The model file.
    pub model: String,
    /// How to load it.
    pub load: onebit_model::load::LoadOptions,
    /// Forms the mesh again without the failed node (tried first, each time the mesh breaks).
    pub reform: Option<Reform>,
}

/// Forms a mesh again without the node that broke it: given why the mesh broke, the head's
/// part and the backend to run it on, or why not.
pub type Reform =
    std::sync::Arc<dyn Fn(&str) -> Result<(onebit_model::Model, Backend), String> + Send + Sync>;

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("model", &self.model)
            .field("load", &self.load)
            .field("reform", &self.reform.is_some())
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8080,
            slots: 4,
            ctx: 2048,
            prefill_chunk: 64,
            queue: 64,
            kv: KvDtype::F16,
            api_key: None,
            cors_origin: None,
            body_limit: 1 << 20,
            model_id: "onebit".into(),
            fallback: None,
        }
    }
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    stop: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    engine: Arc<Engine>,
}

impl Server {
    /// Starts the engine and the HTTP server (on its own threads) and returns once listening.
    pub fn start(
        model: Model,
        tok: Tokenizer,
        template: ChatTemplate,
        cfg: ServerConfig,
    ) -> Result<Server, ServerError> {
        Self::start_on(model, tok, template, cfg, Backend::Local)
    }

    /// [`Server::start`] with the engine on `backend`: this process, or a pipeline over a
    /// device mesh whose head part `model` is.
    pub fn start_on(
        model: Model,
        tok: Tokenizer,
        template: ChatTemplate,
        cfg: ServerConfig,
        backend: Backend,
    ) -> Result<Server, ServerError> {
        if cfg.slots == 0 || cfg.queue == 0 || cfg.prefill_chunk == 0 {
            return Err(ServerError::Config(
                "slots, queue and prefill chunk must be at least 1".into(),
            ));
        }
        let ctx = cfg.ctx.min(model.config.max_positions);
        let (vocab, eos, bos) = (model.config.vocab, model.config.eos, model.config.bos);
        let metrics = Arc::new(metrics::Metrics::default());
        let tok = Arc::new(tok);
        let engine_cfg = EngineConfig {
            slots: cfg.slots,
            ctx,
            prefill_chunk: cfg.prefill_chunk,
            queue: cfg.queue,
            kv: cfg.kv,
        };
        let engine = Arc::new(
            Engine::start(
                model,
                tok.clone(),
                engine_cfg,
                metrics.clone(),
                backend,
                cfg.fallback.clone(),
            )
            .map_err(ServerError::Config)?,
        );
        let app = Arc::new(routes::App {
            engine: engine.clone(),
            tok,
            template,
            model_id: cfg.model_id.clone(),
            ctx,
            vocab,
            eos,
            bos,
            api_key: cfg.api_key.clone(),
            metrics,
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            next_id: 0.into(),
        });
        let mut router = Router::new()
            .route("/", get(routes::page))
            .route("/health", get(routes::health))
            .route("/metrics", get(routes::metrics))
            .route("/v1/models", get(routes::models))
            .route("/props", get(routes::props))
            .route("/v1/chat/completions", post(routes::chat))
            .route("/v1/completions", post(routes::completions))
            .route("/completion", post(native::completion))
            .route("/completions", post(native::completion))
            .route("/tokenize", post(tokenize::tokenize))
            .route("/detokenize", post(tokenize::detokenize))
            .route("/tokenizer_info", get(tokenize::info))
            .route("/apply-template", post(tokenize::apply_template))
            .layer(axum::extract::DefaultBodyLimit::max(cfg.body_limit))
            .with_state(app);
        if let Some(origin) = &cfg.cors_origin {
            let origin = origin
                .parse::<axum::http::HeaderValue>()
                .map_err(|e| ServerError::Config(format!("CORS origin {origin}: {e}")))?;
            router = router.layer(
                tower_http::cors::CorsLayer::new()
                    .allow_origin(origin)
                    .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
                    .allow_headers([
                        axum::http::header::CONTENT_TYPE,
                        axum::http::header::AUTHORIZATION,
                    ]),
            );
        }
        let addr_text = format!("{}:{}", cfg.host, cfg.port);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| ServerError::Config(e.to_string()))?;
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(&addr_text))
            .map_err(|source| ServerError::Bind { addr: addr_text.clone(), source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServerError::Bind { addr: addr_text, source })?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("onebit-http".into())
            .spawn(move || {
                rt.block_on(async move {
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    if let Err(e) =
                        axum::serve(listener, router).with_graceful_shutdown(shutdown).await
                    {
                        tracing::error!("server: {e}");
                    }
                });
            })
            .map_err(|e| ServerError::Config(e.to_string()))?;
        Ok(Server {
            addr,
            stop: std::sync::Mutex::new(Some(stop)),
            thread: std::sync::Mutex::new(Some(thread)),
            engine,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops: running replies end (finish reason "stop"), queued ones are refused, then the
    /// HTTP server finishes the responses in flight and returns.
    pub fn stop(self) {
        self.shutdown();
    }

    /// [`Server::stop`] through a shared reference (another thread may still be reading a
    /// response); later calls do nothing.
    pub fn shutdown(&self) {
        self.engine.shutdown();
        if let Some(s) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}
