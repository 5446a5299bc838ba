//! The one list of a model's tensors: names (GGUF style), shapes and roles, in file order.
//! Loaders, writers, synthetic models and the trainer all take their tensor names from here,
//! so a new tensor is added in one place.

use crate::config::ModelConfig;

/// The seven ternary linears of a block, as (GGUF short name, HF module path).
pub const LINEARS: [(&str, &str); 7] = [
    ("attn_q", "self_attn.q_proj"),
    ("attn_k", "self_attn.k_proj"),
    ("attn_v", "self_attn.v_proj"),
    ("attn_output", "self_attn.o_proj"),
    ("ffn_gate", "mlp.gate_proj"),
    ("ffn_up", "mlp.up_proj"),
    ("ffn_down", "mlp.down_proj"),
];

/// What a tensor is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Token embeddings (`vocab x hidden`), also the head when tied.
    Embedding,
    /// An RMSNorm weight (a vector).
    Norm,
    /// A ternary linear of a block.
    Linear,
    /// The untied output head (`vocab x hidden`).
    Output,
}

/// One tensor of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// GGUF name, e.g. `blk.3.attn_q.weight`.
    pub name: String,
    /// Rows (output features; 1 for a vector).
    pub rows: usize,
    /// Columns (input features, or the length of a vector).
    pub cols: usize,
    /// What it is for.
    pub role: Role,
}

impl TensorSpec {
    /// GGUF dimensions, innermost first (`[cols]` for a vector, `[cols, rows]` for a matrix).
    pub fn dims(&self) -> Vec<u64> {
        if self.role == Role::Norm {
            vec![self.cols as u64]
        } else {
            vec![self.cols as u64, self.rows as u64]
        }
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.rows * self.cols
    }

    /// Whether the tensor holds no values (never for a valid config).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ModelConfig {
    /// Every tensor of a model with this config, in the order files store them.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let (h, qd, kvd, ffn) = (self.hidden, self.q_dim(), self.kv_dim(), self.intermediate);
        let t = |name: String, rows, cols, role| TensorSpec { name, rows, cols, role };
        let mut v = vec![t("token_embd.weight".into(), self.vocab, h, Role::Embedding)];
        for i in 0..self.layers {
            let n = |s: &str| format!("blk.{i}.{s}.weight");
            v.push(t(n("attn_norm"), 1, h, Role::Norm));
            for (s, rows, cols) in
                [("attn_q", qd, h), ("attn_k", kvd, h), ("attn_v", kvd, h), ("attn_output", h, qd)]
            {
                v.push(t(n(s), rows, cols, Role::Linear));
            }
            if self.sub_norms {
                v.push(t(n("attn_sub_norm"), 1, qd, Role::Norm));
            }
            v.push(t(n("ffn_norm"), 1, h, Role::Norm));
            for (s, rows, cols) in [("ffn_gate", ffn, h), ("ffn_up", ffn, h), ("ffn_down", h, ffn)]
            {
                v.push(t(n(s), rows, cols, Role::Linear));
            }
            if self.sub_norms {
                v.push(t(n("ffn_sub_norm"), 1, ffn, Role::Norm));
            }
        }
        v.push(t("output_norm.weight".into(), 1, h, Role::Norm));
        if !self.tied_embeddings {
            v.push(t("output.weight".into(), self.vocab, h, Role::Output));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2b4t_has_the_tensors_bitnet_cpp_writes() {
        let c = ModelConfig::bitnet_2b4t();
        let t = c.tensors();
        // token_embd, 30 x (4 norms + 7 linears), output_norm; tied: no output.weight.
        assert_eq!(t.len(), 1 + 30 * 11 + 1);
        assert_eq!(t[0].dims(), vec![2560, 128256]);
        let q = t.iter().find(|s| s.name == "blk.0.attn_k.weight").unwrap();
        assert_eq!((q.rows, q.cols, q.dims()), (640, 2560, vec![2560, 640]));
        assert_eq!(t.iter().filter(|s| s.role == Role::Linear).count(), 210);
    }
}
