//! [`TrainModel`]: the engine's architecture (BitNet b1.58 and its Llama-family switches,
//! from the same [`ModelConfig`]) as a composition of tape ops. Every linear inside a block
//! is a BitLinear; embeddings, norms and the head stay f32. Parameter names follow the
//! engine's GGUF names, so export is a rename-free copy.

use crate::error::{Error, Result};
use crate::params::{ParamId, ParamKind, Params};
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use onebit_model::tensors::Role;
use onebit_model::ModelConfig;

/// The parameters of one transformer block.
#[derive(Clone, Debug)]
pub struct LayerIds {
    /// Pre-attention RMSNorm gain.
    pub attn_norm: ParamId,
    /// Query projection.
    pub q: ParamId,
    /// Key projection.
    pub k: ParamId,
    /// Value projection.
    pub v: ParamId,
    /// Output projection.
    pub o: ParamId,
    /// BitNet's norm before `o` (absent in Llama).
    pub attn_sub_norm: Option<ParamId>,
    /// Pre-FFN RMSNorm gain.
    pub ffn_norm: ParamId,
    /// FFN gate projection.
    pub gate: ParamId,
    /// FFN up projection.
    pub up: ParamId,
    /// FFN down projection.
    pub down: ParamId,
    /// BitNet's norm before `down` (absent in Llama).
    pub ffn_sub_norm: Option<ParamId>,
}

/// A trainable model: config, parameters and where each one sits.
#[derive(Debug)]
pub struct TrainModel {
    /// The architecture.
    pub config: ModelConfig,
    /// All weights and gradients.
    pub params: Params,
    /// Token embeddings (also the head when tied).
    pub embed: ParamId,
    /// The blocks.
    pub layers: Vec<LayerIds>,
    /// Final RMSNorm gain.
    pub out_norm: ParamId,
    /// Untied output head.
    pub head: Option<ParamId>,
}

/// (name, rows, cols, kind) of every parameter of `c`, in file order: the model crate's one
/// tensor plan ([`ModelConfig::tensors`]) with each role mapped to how it trains.
pub fn param_specs(c: &ModelConfig) -> Vec<(String, usize, usize, ParamKind)> {
    c.tensors()
        .into_iter()
        .map(|t| {
            let kind = match t.role {
                Role::Embedding => ParamKind::Embedding,
                Role::Norm => ParamKind::Norm,
                Role::Linear => ParamKind::Ternary,
                Role::Output => ParamKind::Dense,
            };
            (t.name, t.rows, t.cols, kind)
        })
        .collect()
}

impl TrainModel {
    /// A freshly initialised model: matrices ~ N(0, 0.02²), norm gains 1.
    pub fn new(config: ModelConfig, seed: u64) -> Result<Self> {
        let mut m = Self::zeroed(config)?;
        let mut rng = Rng::new(seed);
        for i in 0..m.params.infos().len() {
            let kind = m.params.infos()[i].kind;
            let vals = m.params.value_mut(ParamId(i));
            match kind {
                ParamKind::Norm => vals.fill(1.0),
                _ => vals.iter_mut().for_each(|v| *v = 0.02 * rng.normal()),
            }
        }
        Ok(m)
    }

    /// A model with every parameter zero (loaders fill it).
    pub fn zeroed(config: ModelConfig) -> Result<Self> {
        config.validate()?;
        let params = Params::new(&param_specs(&config))?;
        let id = |n: &str| params.find(n).ok_or_else(|| Error::Config(format!("no parameter {n}")));
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            let opt = |s: &str| params.find(&n(s));
            layers.push(LayerIds {
                attn_norm: id(&n("attn_norm"))?,
                q: id(&n("attn_q"))?,
                k: id(&n("attn_k"))?,
                v: id(&n("attn_v"))?,
                o: id(&n("attn_output"))?,
                attn_sub_norm: opt("attn_sub_norm"),
                ffn_norm: id(&n("ffn_norm"))?,
                gate: id(&n("ffn_gate"))?,
                up: id(&n("ffn_up"))?,
                down: id(&n("ffn_down"))?,
                ffn_sub_norm: opt("ffn_sub_norm"),
            });
        }
        Ok(TrainModel {
            embed: id("token_embd.weight")?,
            out_norm: id("output_norm.weight")?,
            head: params.find("output.weight"),
            layers,
            params,
            config,
        })
    }

    /// Records the forward pass of the tape's current batch; returns (logits, mean loss).
    /// Call [`crate::params::Params::refresh_ternary`] after every weight change first.
    pub fn forward(&self, tape: &mut Tape) -> Result<(Var, Var)> {
        let c = &self.config;
        let p = &self.params;
        tape.set_model_constants(c.rms_eps, c.rope_theta, c.rope_interleaved);
        let mut x = tape.embedding(p, self.embed)?;
        for l in &self.layers {
            tape.begin_block();
            let h = tape.rmsnorm(p, x, l.attn_norm)?;
            let q = tape.bitlinear(p, h, l.q)?;
            let k = tape.bitlinear(p, h, l.k)?;
            let v = tape.bitlinear(p, h, l.v)?;
            let q = tape.rope(p, q, c.head_dim)?;
            let k = tape.rope(p, k, c.head_dim)?;
            let mut a = tape.attention(p, q, k, v, c.heads, c.kv_heads)?;
            if let Some(w) = l.attn_sub_norm {
                a = tape.rmsnorm(p, a, w)?;
            }
            let o = tape.bitlinear(p, a, l.o)?;
            let x1 = tape.add(p, x, o)?;
            let h = tape.rmsnorm(p, x1, l.ffn_norm)?;
            let g = tape.bitlinear(p, h, l.gate)?;
            let u = tape.bitlinear(p, h, l.up)?;
            let mut f = tape.gated(p, g, u, c.act)?;
            if let Some(w) = l.ffn_sub_norm {
                f = tape.rmsnorm(p, f, w)?;
            }
            let d = tape.bitlinear(p, f, l.down)?;
            let x2 = tape.add(p, x1, d)?;
            x = tape.end_block(p, x2)?;
        }
        let xn = tape.rmsnorm(p, x, self.out_norm)?;
        let logits = tape.linear(p, xn, self.head.unwrap_or(self.embed))?;
        let loss = tape.cross_entropy(p, logits)?;
        Ok((logits, loss))
    }

    /// Parameters of the ternary (BitLinear) layers.
    pub fn ternary_params(&self) -> usize {
        self.params.infos().iter().filter(|i| i.kind == ParamKind::Ternary).map(|i| i.len()).sum()
    }
}
