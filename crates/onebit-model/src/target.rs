//! Which engine a written model file is for. Each engine reads its own architecture names,
//! metadata keys, tokenizer keys and tensor types; [`Target`] says what to write so that the
//! engine runs the model exactly as onebit does, or why it cannot, before anything is written.
//!
//! The versions these rules were checked against (their sources, and runs of their own
//! binaries on files we wrote): llama.cpp c392e50, ik_llama.cpp 8337e4c, bitnet.cpp c82b5e6
//! (its llama.cpp fork at 406a503). The table is in this crate's README.

use crate::config::{Activation, ArchRules, ModelConfig};
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// An engine that a model file is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// onebit itself: any layout, `onebit.*` keys for the switches.
    Onebit,
    /// Upstream llama.cpp: TQ1_0 / TQ2_0 linears.
    LlamaCpp,
    /// ik_llama.cpp: IQ2_BN / IQ1_BN linears, relu² models as `bitnet-25`.
    IkLlamaCpp,
    /// Microsoft's bitnet.cpp: I2_S (or TQ) linears.
    BitnetCpp,
}

impl Target {
    /// Every target.
    pub const ALL: [Target; 4] =
        [Target::Onebit, Target::LlamaCpp, Target::IkLlamaCpp, Target::BitnetCpp];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Target::Onebit => "onebit",
            Target::LlamaCpp => "llama.cpp",
            Target::IkLlamaCpp => "ik_llama.cpp",
            Target::BitnetCpp => "bitnet.cpp",
        }
    }

    /// Parses [`Target::name`].
    pub fn from_name(s: &str) -> Option<Target> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    fn refuse<T>(self, why: String) -> Result<T> {
        Err(Error::Target { target: self.name(), why })
    }

    /// The architecture name this target runs `c` as, or why it cannot run it.
    pub fn arch(self, c: &ModelConfig) -> Result<&'static str> {
        let silu = c.act == Activation::Silu;
        // The `bitnet` graph of llama.cpp and its forks declares wq and wo as hidden x hidden
        // and never reads output.weight.
        let bitnet_fits = silu && c.sub_norms && c.tied_embeddings && c.q_dim() == c.hidden;
        let why_not_bitnet = || {
            if !c.tied_embeddings {
                "its head is not tied to the embeddings (the `bitnet` graph always ties it)".into()
            } else if c.q_dim() != c.hidden {
                format!(
                    "heads x head_dim = {} differs from hidden = {} (the `bitnet` graph needs them equal)",
                    c.q_dim(),
                    c.hidden
                )
            } else {
                String::new()
            }
        };
        match self {
            Target::Onebit => Ok("bitnet-b1.58"),
            Target::LlamaCpp | Target::BitnetCpp => match (c.act, c.sub_norms) {
                (Activation::Silu, true) if bitnet_fits => Ok("bitnet"),
                (Activation::Silu, true) => self.refuse(why_not_bitnet()),
                (Activation::Silu, false) => Ok("llama"),
                (Activation::Relu2, _) => self.refuse(
                    "its FFN is relu²-gated (BitNet b1.58 2B4T family); this engine runs BitNet \
                     only as the SiLU-gated `bitnet` architecture (use --for ik_llama.cpp)"
                        .into(),
                ),
            },
            Target::IkLlamaCpp => match (c.act, c.sub_norms) {
                (Activation::Relu2, true) => Ok("bitnet-25"),
                (Activation::Silu, true) if bitnet_fits => Ok("bitnet"),
                (Activation::Silu, true) => self.refuse(why_not_bitnet()),
                (Activation::Silu, false) => Ok("llama"),
                (Activation::Relu2, false) => self.refuse(
                    "a relu² FFN without sub-norms matches none of its architectures".into(),
                ),
            },
        }
    }

    /// Whether q/k rows must be permuted for `arch`'s RoPE pairing.
    pub fn permute_qk(self, c: &ModelConfig, arch: &str) -> bool {
        self != Target::Onebit
            && ArchRules::of(arch).is_some_and(|r| r.rope_interleaved != c.rope_interleaved)
    }

    /// Linear types this target computes with.
    pub fn linear_types(self) -> &'static [GgmlType] {
        use GgmlType::*;
        match self {
            Target::Onebit => &[OnebitT2, OnebitB3, I2S, Tq1_0, Tq2_0, Iq2Bn, Iq1Bn, F32, F16],
            Target::LlamaCpp => &[Tq1_0, Tq2_0, Q8_0, F32, F16],
            Target::IkLlamaCpp => &[Iq2Bn, Iq1Bn, Q8_0, F32, F16],
            Target::BitnetCpp => &[I2S, Tq1_0, Tq2_0, Q8_0, F32, F16],
        }
    }

    /// The type a `rows x cols` linear is written in when `asked` is wanted: `asked` if the
    /// target computes with it and the shape fits, else (for the other engines) Q8_0, which
    /// holds ternary values exactly up to its f16 block scale, or F16 when even that does not
    /// fit. onebit's own files take no fallback: the caller asked for a layout.
    pub fn linear_type(
        self,
        asked: GgmlType,
        arch: &str,
        rows: usize,
        cols: usize,
    ) -> Result<GgmlType> {
        if !self.linear_types().contains(&asked) {
            let names: Vec<String> = self.linear_types().iter().map(|t| format!("{t:?}")).collect();
            return self.refuse(format!(
                "cannot compute with {asked:?} linears (it can: {})",
                names.join(", ")
            ));
        }
        let fits = asked.tensor_bytes(cols as u64, rows as u64).is_some()
            && (asked != GgmlType::I2S || (cols.is_multiple_of(128) && arch.starts_with("bitnet")));
        if fits {
            return Ok(asked);
        }
        if self == Target::Onebit {
            return Err(Error::Target {
                target: self.name(),
                why: format!("{asked:?} cannot hold a {rows} x {cols} linear (columns do not fill its blocks)"),
            });
        }
        Ok(if cols.is_multiple_of(32) { GgmlType::Q8_0 } else { GgmlType::F16 })
    }

    /// `general.file_type` for linears of `ty` (the engine's `llama_ftype`).
    pub fn file_type(self, ty: GgmlType) -> Option<u32> {
        Some(match (self, ty) {
            (_, GgmlType::F32) => 0,
            (_, GgmlType::F16) => 1,
            (_, GgmlType::Q8_0) => 7,
            (Target::LlamaCpp | Target::BitnetCpp, GgmlType::Tq1_0) => 36,
            (Target::LlamaCpp | Target::BitnetCpp, GgmlType::Tq2_0) => 37,
            (Target::BitnetCpp, GgmlType::I2S) => 40,
            (Target::IkLlamaCpp, GgmlType::Iq1Bn) => 136,
            (Target::IkLlamaCpp, GgmlType::Iq2Bn) => 137,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(act: Activation, sub_norms: bool) -> ModelConfig {
        ModelConfig { act, sub_norms, ..ModelConfig::preset("tiny").unwrap() }
    }

    #[test]
    fn each_engine_runs_the_architectures_it_defines() {
        let relu = ModelConfig { tied_embeddings: true, ..cfg(Activation::Relu2, true) };
        assert_eq!(Target::IkLlamaCpp.arch(&relu).unwrap(), "bitnet-25");
        assert!(Target::LlamaCpp.arch(&relu).is_err());
        assert!(Target::BitnetCpp.arch(&relu).is_err());
        let silu = ModelConfig { tied_embeddings: true, ..cfg(Activation::Silu, true) };
        for t in [Target::LlamaCpp, Target::IkLlamaCpp, Target::BitnetCpp] {
            assert_eq!(t.arch(&silu).unwrap(), "bitnet");
            // bitnet is NEOX: a rotate-half model needs no permutation, an adjacent-pairs one does.
            assert!(!t.permute_qk(&silu, "bitnet"));
            let inter = ModelConfig { rope_interleaved: true, ..silu.clone() };
            assert!(t.permute_qk(&inter, "bitnet"));
        }
        let untied = cfg(Activation::Silu, true);
        assert!(Target::LlamaCpp.arch(&untied).unwrap_err().to_string().contains("tied"));
        assert_eq!(Target::LlamaCpp.arch(&cfg(Activation::Silu, false)).unwrap(), "llama");
        assert!(Target::LlamaCpp.permute_qk(&cfg(Activation::Silu, false), "llama"));
    }

    #[test]
    fn shapes_a_type_cannot_hold_fall_back_or_are_refused() {
        use GgmlType::*;
        assert_eq!(Target::LlamaCpp.linear_type(Tq2_0, "bitnet", 256, 512).unwrap(), Tq2_0);
        assert_eq!(Target::LlamaCpp.linear_type(Tq2_0, "bitnet", 256, 672).unwrap(), Q8_0);
        // 688 columns (the shipped model's FFN) do not fill Q8_0's blocks of 32 either.
        assert_eq!(Target::LlamaCpp.linear_type(Tq2_0, "bitnet", 256, 688).unwrap(), F16);
        assert_eq!(Target::IkLlamaCpp.linear_type(Iq2Bn, "bitnet-25", 256, 100).unwrap(), F16);
        assert_eq!(Target::BitnetCpp.linear_type(I2S, "bitnet", 64, 192).unwrap(), Q8_0);
        assert!(Target::LlamaCpp.linear_type(Iq2Bn, "bitnet", 256, 256).is_err());
        assert!(Target::Onebit.linear_type(Tq2_0, "bitnet-b1.58", 256, 688).is_err());
    }
}
