//! Text ↔ token ids through the `tokenizers` crate (a model's `tokenizer.json`).

use crate::error::{Error, Result};
use crate::gguf::Value;
use crate::json_mode::TokenBytes;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A loaded tokenizer (and, once JSON mode asks, its tokens' bytes).
pub struct Tokenizer(tokenizers::Tokenizer, OnceLock<Arc<TokenBytes>>);

/// Runs a call into the `tokenizers` crate with a panic turned into an error: crafted
/// tokenizer.json files make some of its deserializers and processors panic (0.22: the decoder
/// helper's `expect("Helper")`, TemplateProcessing naming a missing special token, the Strip
/// decoder; upstream PRs 2152, 2154 and 2156), and a model's files are user input.
fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> std::result::Result<T, tokenizers::Error>,
) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(terr),
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            Err(Error::Tokenizer(format!("{what} failed inside the tokenizers crate: {msg}")))
        }
    }
}

fn terr(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| Error::Io { path: path.into(), source })?;
        Self::from_json(&text).map_err(|e| Error::Tokenizer(format!("{path}: {e}")))
    }

    /// Parses `tokenizer.json` text.
    pub fn from_json(json: &str) -> Result<Self> {
        // Invalid JSON is refused here: the tokenizers crate panics on some of it.
        serde_json::from_str::<serde::de::IgnoredAny>(json)
            .map_err(|e| Error::Tokenizer(format!("not valid JSON: {e}")))?;
        guarded("parsing tokenizer.json", || json.parse::<tokenizers::Tokenizer>())
            .map(|t| Tokenizer(t, OnceLock::new()))
    }

    /// Finds the tokenizer of a model: `tokenizer.json` inside an HF directory or beside a file,
    /// else the vocabulary a GGUF file carries.
    pub fn for_model(model: &str) -> Result<Self> {
        let p = Path::new(model);
        // A missing model is the error to report, not the tokenizer that would sit beside it.
        if let Err(source) = std::fs::metadata(p) {
            return Err(Error::Io { path: model.into(), source });
        }
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
        Ok(guarded("encoding", || self.0.encode(text, special))?.get_ids().to_vec())
    }

    /// The token encoding with specials puts first (BOS), if it adds one.
    pub fn added_bos(&self) -> Option<u32> {
        let with = self.encode("a", true).ok()?;
        let without = self.encode("a", false).ok()?;
        (with.len() == without.len() + 1 && with[1..] == without[..]).then(|| with[0])
    }

    /// Text of `ids`, special tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        guarded("decoding", || self.0.decode(ids, true))
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> Result<String> {
        self.0.to_string(true).map_err(terr)
    }

    /// The string of a token id, if it is in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.0.id_to_token(id)
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.0.token_to_id(token)
    }

    /// Refuses a tokenizer that does not belong to a model with `rows` embedding rows: token
    /// ids beyond the rows, or far fewer tokens than rows (checkpoints pad their embedding to a
    /// round size, by up to a few hundred rows; more than max(256, rows / 64) is another model's).
    pub fn check_model_vocab(&self, rows: usize) -> Result<()> {
        let n = self.vocab_size();
        if n > rows {
            return Err(Error::Tokenizer(format!(
                "{n} tokens but the model has only {rows} embedding rows: not this model's tokenizer"
            )));
        }
        if rows - n > 256.max(rows / 64) {
            return Err(Error::Tokenizer(format!(
                "{n} tokens for a model of {rows} embedding rows: not this model's tokenizer"
            )));
        }
        Ok(())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.0.get_vocab_size(true)
    }

    /// Ids of the special tokens (added tokens marked special: BOS, EOS, chat markers).
    pub fn special_ids(&self) -> std::collections::HashSet<u32> {
        self.0
            .get_added_tokens_decoder()
            .iter()
            .filter(|(_, t)| t.special)
            .map(|(&id, _)| id)
            .collect()
    }

    /// Every token's bytes (JSON mode masks with them), worked out on first use.
    pub fn token_bytes(&self) -> Arc<TokenBytes> {
        Arc::clone(self.1.get_or_init(|| Arc::new(TokenBytes::from_tokenizer(self))))
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

/// GGUF metadata for a byte-level BPE `tokenizer.json`, with the pre-tokenizer under the
/// name llama.cpp and its forks accept (`gpt-2`): tokens, merges, control tokens.
pub fn gguf_metadata(tokenizer_json: &str) -> Result<Vec<(String, Value)>> {
    let bad = |m: String| Error::Tokenizer(format!("GGUF vocabulary: {m}"));
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
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
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

/// GPT-2's pre-tokenizer split (GGUF `tokenizer.ggml.pre = "gpt-2"`).
const GPT2_SPLIT: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";

/// Llama-3's pre-tokenizer split (GGUF `tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

impl Tokenizer {
    /// Builds the byte-level BPE tokenizer a GGUF file carries (`tokenizer.ggml.model = gpt2`,
    /// as bitnet.cpp and llama.cpp write for Llama-3 and GPT-2 style vocabularies): tokens,
    /// merges, control tokens as specials, BOS added when `add_bos_token` says so.
    pub fn from_gguf(g: &crate::gguf::GgufFile) -> Result<Self> {
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
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            Ok(Split::new(SplitPattern::Regex(re.into()), SplitDelimiterBehavior::Isolated, false)
                .map_err(terr)?
                .into())
        };
        // The pre-tokenizer names llama.cpp's llama-vocab.cpp knows, with its regexes.
        let pre: PreTokenizerWrapper = match g.get("tokenizer.ggml.pre").and_then(Value::as_str) {
            Some("llama-bpe" | "llama3" | "llama-v3" | "falcon3") => {
                Sequence::new(vec![split(LLAMA3_SPLIT)?, byte_level.into()]).into()
            }
            // SmolLM's tokenizer.json splits every digit before the byte-level regex.
            Some("smollm") => Sequence::new(vec![
                tokenizers::pre_tokenizers::digits::Digits::new(true).into(),
                ByteLevel::new(false, true, true).into(),
            ])
            .into(),
            // "gpt2" is what onebit wrote before it learned llama.cpp's name for it.
            Some("gpt-2" | "gpt2" | "mpt" | "olmo" | "phi-2" | "jais") => {
                ByteLevel::new(false, true, true).into()
            }
            // llama.cpp's LLAMA_VOCAB_PRE_TYPE_DEFAULT: four regexes applied in turn.
            None | Some("default") => Sequence::new(vec![
                split(r"[\p{P}\$\+<=>\^~\|]+")?,
                split(GPT2_SPLIT)?,
                split(r"\p{N}+")?,
                split(r"[0-9][0-9][0-9]")?,
                byte_level.into(),
            ])
            .into(),
            Some(other) => {
                return Err(bad(&format!(
                    "pre-tokenizer '{other}' is not supported (gpt-2, llama-bpe, llama3, \
                     smollm, default)"
                )))
            }
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
        Ok(Tokenizer(t, OnceLock::new()))
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
