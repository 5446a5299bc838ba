//! Text ↔ token ids through the `tokenizers` crate (a model's `tokenizer.json`).

use crate::error::{Error, Result};
use std::path::Path;

/// A loaded tokenizer.
pub struct Tokenizer(tokenizers::Tokenizer);

fn terr(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &str) -> Result<Self> {
        tokenizers::Tokenizer::from_file(path)
            .map(Tokenizer)
            .map_err(|e| Error::Tokenizer(format!("{path}: {e}")))
    }

    /// Finds the tokenizer of a model: `tokenizer.json` inside an HF directory or beside a file,
    /// else the vocabulary a GGUF file carries.
    pub fn for_model(model: &str) -> Result<Self> {
        let p = Path::new(model);
        let candidate =
            if p.is_dir() { p.join("tokenizer.json") } else { p.with_file_name("tokenizer.json") };
        if !candidate.exists() {
            if p.is_file() && model.ends_with(".gguf") {
                let f = crate::load::GgufModelFile::open(model)?;
                if f.header.get("tokenizer.ggml.model").is_some() {
                    return Self::from_gguf(&f.header);
                }
            }
            return Err(Error::Tokenizer(format!(
                "no tokenizer for {model}: expected {} or a vocabulary inside the GGUF file \
                 (pass --tokenizer PATH)",
                candidate.display()
            )));
        }
        Self::from_file(&candidate.display().to_string())
    }

    /// Token ids of `text` (with the tokenizer's special tokens, e.g. BOS, when `special`).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self.0.encode(text, special).map_err(terr)?.get_ids().to_vec())
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.0.decode(ids, true).map_err(terr)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.0.get_vocab_size(true)
    }
}

/// Turns a growing list of generated ids into text pieces to print, decoding only a short
/// window per token (re-decoding the whole reply would be quadratic in its length).
///
/// The window starts one emitted piece back, as Hugging Face's streamers and llama.cpp do:
/// decoders that treat the first token specially (SentencePiece drops its leading space)
/// then see the same context for the old and the new text, so the difference is exact.
/// Text ending in an incomplete UTF-8 sequence (decoded as U+FFFD) is held back.
#[derive(Debug, Default)]
pub struct StreamDecoder {
    prefix: usize,
    read: usize,
    prefix_text: String,
}

impl StreamDecoder {
    /// A decoder for a reply that has no tokens yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The new text that `ids` (all tokens of the reply so far; the last one just appended)
    /// adds, or `None` while it is still an incomplete character.
    pub fn next_piece(&mut self, tok: &Tokenizer, ids: &[u32]) -> Result<Option<String>> {
        let cur = tok.decode(&ids[self.prefix..])?;
        let old = self.prefix_text.len();
        if cur.len() <= old || cur.ends_with('\u{FFFD}') || !cur.is_char_boundary(old) {
            return Ok(None);
        }
        let piece = cur[old..].to_string();
        self.prefix = self.read;
        self.read = ids.len();
        self.prefix_text = tok.decode(&ids[self.prefix..self.read])?;
        Ok(Some(piece))
    }

    /// Text not yet returned by [`StreamDecoder::next_piece`] (an incomplete character at the
    /// end of the reply, decoded with U+FFFD).
    pub fn rest(&self, tok: &Tokenizer, ids: &[u32]) -> Result<String> {
        let cur = tok.decode(&ids[self.prefix..])?;
        Ok(cur.get(self.prefix_text.len()..).unwrap_or_default().to_string())
    }
}

/// Llama-3's pre-tokenizer split (GGUF `tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Builds the byte-level BPE tokenizer a GGUF file carries (`tokenizer.ggml.model = gpt2`,
    /// as bitnet.cpp and llama.cpp write for Llama-3 and GPT-2 style vocabularies): tokens,
    /// merges, control tokens as specials, BOS added when `add_bos_token` says so.
    pub fn from_gguf(g: &crate::gguf::GgufFile) -> Result<Self> {
        use crate::gguf::Value;
        use tokenizers::models::bpe::BPE;
        use tokenizers::pre_tokenizers::byte_level::ByteLevel;
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};
        let bad = |m: &str| Error::Tokenizer(format!("GGUF tokenizer: {m}"));
        match g.get("tokenizer.ggml.model").and_then(Value::as_str) {
            Some("gpt2") => {}
            Some(other) => {
                return Err(bad(&format!(
                    "model '{other}' is not supported (only gpt2 byte-level BPE)"
                )))
            }
            None => return Err(bad("no tokenizer.ggml.model key")),
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            match g.get(key) {
                Some(Value::Array(v)) => v
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(String::from)
                            .ok_or_else(|| bad(&format!("{key} holds a non-string")))
                    })
                    .collect(),
                _ => Err(bad(&format!("no {key} array"))),
            }
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(&format!("merge '{m}' has no space")))
            })
            .collect::<Result<_>>()?;
        let vocab: tokenizers::models::bpe::Vocab =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(terr)?;
        let mut t = tokenizers::Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, true, false);
        let pre: PreTokenizerWrapper = match g.get("tokenizer.ggml.pre").and_then(Value::as_str) {
            Some("llama-bpe") | Some("llama3") => {
                let split = Split::new(
                    SplitPattern::Regex(LLAMA3_SPLIT.into()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(terr)?;
                Sequence::new(vec![split.into(), byte_level.into()]).into()
            }
            // SmolLM's tokenizer.json splits every digit before the byte-level regex.
            Some("smollm") => Sequence::new(vec![
                tokenizers::pre_tokenizers::digits::Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            _ => ByteLevel::new(false, true, true).into(),
        };
        t.with_pre_tokenizer(Some(pre));
        t.with_decoder(Some(ByteLevel::default()));
        if let Some(Value::Array(types)) = g.get("tokenizer.ggml.token_type") {
            // Type 3 is "control" in llama.cpp's vocabulary: <|begin_of_text|> and the like.
            let specials: Vec<AddedToken> = types
                .iter()
                .zip(&tokens)
                .filter(|(ty, _)| ty.as_u64() == Some(3))
                .map(|(_, tok)| AddedToken::from(tok.clone(), true))
                .collect();
            t.add_special_tokens(&specials);
        }
        let bos = g.get("tokenizer.ggml.bos_token_id").and_then(Value::as_u64);
        let add_bos = !matches!(g.get("tokenizer.ggml.add_bos_token"), Some(Value::Bool(false)));
        if let (Some(bos), true) = (bos, add_bos) {
            let name = tokens
                .get(bos as usize)
                .ok_or_else(|| bad("bos_token_id outside the vocabulary"))?;
            let post = tokenizers::processors::template::TemplateProcessing::builder()
                .try_single(format!("{name} $A"))
                .map_err(|e| bad(&e.to_string()))?
                .special_tokens(vec![(name.clone(), bos as u32)])
                .build()
                .map_err(|e| bad(&e.to_string()))?;
            t.with_post_processor(Some(post));
        }
        Ok(Tokenizer(t))
    }
}

#[cfg(test)]
mod stream_tests {
    use super::*;

    /// Streaming piece by piece gives exactly the text of decoding all ids at once, including
    /// characters split over several byte-level tokens.
    #[test]
    fn streamed_pieces_concatenate_to_the_full_decode() {
        let path = format!("{}/../../models/austen.tokenizer.json", env!("CARGO_MANIFEST_DIR"));
        let tok = Tokenizer::from_file(&path).unwrap();
        let text = "Émile said — \"café, naïve ✓ 日本語\" — and 🎉 left.\n  Two  spaces.";
        let ids = tok.encode(text, false).unwrap();
        assert!(ids.len() > 20);
        let mut d = StreamDecoder::new();
        let (mut streamed, mut held) = (String::new(), 0);
        for n in 1..=ids.len() {
            match d.next_piece(&tok, &ids[..n]).unwrap() {
                Some(p) => streamed.push_str(&p),
                None => held += 1,
            }
        }
        streamed.push_str(&d.rest(&tok, &ids).unwrap());
        assert_eq!(streamed, tok.decode(&ids).unwrap());
        assert_eq!(streamed, text);
        assert!(held > 0, "multi-byte characters span tokens, so some pieces are held back");
    }
}
