//! Training data: plain-text or JSONL files → token ids (through the model's tokenizer) →
//! a train/validation split → fixed-length windows served in a shuffled, resumable order.

use crate::error::{Error, Result};
use crate::rng::Rng;
use onebit_model::Tokenizer;
use serde::{Deserialize, Serialize};

/// Token streams for training and validation.
#[derive(Clone, Debug, Default)]
pub struct TokenData {
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out tokens (the tail of the corpus).
    pub val: Vec<u32>,
}

/// Reads documents: a `.jsonl` file gives one document per line (its `"text"` field), any
/// other file is one document.
pub fn read_documents(paths: &[String]) -> Result<Vec<String>> {
    let mut docs = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path).map_err(Error::io(path.as_str()))?;
        if path.ends_with(".jsonl") {
            for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                let v: serde_json::Value = serde_json::from_str(line)
                    .map_err(|e| Error::Data(format!("{path}:{}: {e}", i + 1)))?;
                let t = v.get("text").and_then(|t| t.as_str()).ok_or_else(|| {
                    Error::Data(format!("{path}:{}: no string field \"text\"", i + 1))
                })?;
                docs.push(t.to_string());
            }
        } else {
            docs.push(text);
        }
    }
    if docs.iter().all(|d| d.trim().is_empty()) {
        return Err(Error::Data("the data files hold no text".into()));
    }
    Ok(docs)
}

/// Tokenizes documents paragraph by paragraph (each keeps its trailing blank line, so the
/// stream is the tokenization of the whole text up to merges across paragraphs) and puts
/// `eos` between documents.
pub fn tokenize(tok: &Tokenizer, docs: &[String], eos: Option<u32>) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for d in docs {
        for para in d.split_inclusive("\n\n") {
            out.extend(tok.encode(para, false).map_err(|e| Error::Tokenizer(e.to_string()))?);
        }
        if let Some(e) = eos {
            out.push(e);
        }
    }
    Ok(out)
}

impl TokenData {
    /// Splits `tokens`, keeping the last `val_share` of them for validation.
    pub fn split(tokens: Vec<u32>, val_share: f32) -> Self {
        let n_val = ((tokens.len() as f64) * val_share.clamp(0.0, 0.5) as f64) as usize;
        let mut train = tokens;
        let val = train.split_off(train.len() - n_val);
        TokenData { train, val }
    }

    /// Cross-entropy (nats/token) of a unigram model fit on the training tokens (add-one
    /// smoothing) measured on the validation tokens: the bar a language model must clear.
    pub fn unigram_baseline(&self, vocab: usize) -> f32 {
        let mut counts = vec![1.0f64; vocab];
        for &t in &self.train {
            if (t as usize) < vocab {
                counts[t as usize] += 1.0;
            }
        }
        let total: f64 = counts.iter().sum();
        let n = self.val.len().max(1) as f64;
        (self.val.iter().map(|&t| -(counts[t as usize % vocab] / total).ln()).sum::<f64>() / n)
            as f32
    }
}

/// Serves `batch` windows of `seq + 1` tokens from the training stream, each epoch in a new
/// order drawn from (seed, epoch); its whole state is two integers, saved in checkpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Batcher {
    /// Tokens per sequence.
    pub seq: usize,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Order seed.
    pub seed: u64,
    /// Current epoch.
    pub epoch: u64,
    /// Next window within the epoch.
    pub pos: usize,
    #[serde(skip)]
    order: Vec<usize>,
    #[serde(skip)]
    order_epoch: Option<u64>,
}

impl Batcher {
    /// A batcher at the start of epoch 0.
    pub fn new(seq: usize, batch: usize, seed: u64) -> Self {
        Batcher { seq, batch, seed, epoch: 0, pos: 0, order: Vec::new(), order_epoch: None }
    }

    /// Windows per epoch in a stream of `n` tokens.
    pub fn windows(&self, n: usize) -> usize {
        if n <= self.seq {
            0
        } else {
            (n - 1) / self.seq
        }
    }

    /// Fills `tokens` and `targets` (`batch · seq` each) with the next windows of `data`.
    pub fn next(
        &mut self,
        data: &[u32],
        tokens: &mut Vec<u32>,
        targets: &mut Vec<u32>,
    ) -> Result<()> {
        let w = self.windows(data.len());
        if w == 0 {
            return Err(Error::Data(format!(
                "{} training tokens cannot fill one sequence of {} (+1)",
                data.len(),
                self.seq
            )));
        }
        tokens.clear();
        targets.clear();
        for _ in 0..self.batch {
            if self.pos >= w {
                self.pos = 0;
                self.epoch += 1;
            }
            if self.order_epoch != Some(self.epoch) || self.order.len() != w {
                self.order.clear();
                self.order.extend(0..w);
                Rng::new(self.seed ^ self.epoch.wrapping_mul(0xA24B_AED4_963E_E407))
                    .shuffle(&mut self.order);
                self.order_epoch = Some(self.epoch);
            }
            let start = self.order[self.pos] * self.seq;
            tokens.extend_from_slice(&data[start..start + self.seq]);
            targets.extend_from_slice(&data[start + 1..start + self.seq + 1]);
            self.pos += 1;
        }
        Ok(())
    }
}

/// Trains a byte-level BPE tokenizer of `vocab` entries on `files` and saves it as
/// `tokenizer.json` at `out`; `<|endoftext|>` is token 0. The pre-tokenizer is the one a
/// GGUF `gpt2` vocabulary implies, so an exported model carries the same tokenizer.
pub fn train_tokenizer(files: &[String], vocab: usize, out: &str) -> Result<()> {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::{AddedToken, Tokenizer as HfTok};
    let terr = |e: tokenizers::Error| Error::Tokenizer(e.to_string());
    if vocab < 300 {
        return Err(Error::Tokenizer(format!(
            "vocabulary of {vocab} is below the 256 bytes + merges a BPE needs"
        )));
    }
    let trainer = BpeTrainerBuilder::new()
        .vocab_size(vocab)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(vec![AddedToken::from("<|endoftext|>", true)])
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok = HfTok::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    let mut trainer = tokenizers::models::TrainerWrapper::BpeTrainer(trainer);
    tok.train_from_files(&mut trainer, files.to_vec()).map_err(terr)?;
    let json = tok.to_string(true).map_err(terr)?;
    onebit_model::output::write_atomic(out, json.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batcher_covers_every_window_once_per_epoch_and_resumes() {
        let data: Vec<u32> = (0..101).collect();
        let mut b = Batcher::new(10, 3, 5);
        assert_eq!(b.windows(data.len()), 10);
        let (mut t, mut g) = (Vec::new(), Vec::new());
        let mut starts = Vec::new();
        for _ in 0..3 {
            b.next(&data, &mut t, &mut g).unwrap();
            for (w, tg) in t.chunks(10).zip(g.chunks(10)) {
                assert!(
                    w.iter().zip(tg).all(|(a, b)| b - a == 1),
                    "targets are inputs shifted by one"
                );
                starts.push(w[0]);
            }
        }
        b.next(&data, &mut t, &mut g).unwrap(); // crosses into epoch 1
        starts.push(t[0]);
        let mut first: Vec<u32> = starts[..10].to_vec();
        first.sort();
        assert_eq!(first, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        assert_eq!(b.epoch, 1);
        // A copy restored from its serialized state continues identically.
        let mut c: Batcher = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        let (mut t2, mut g2) = (Vec::new(), Vec::new());
        b.next(&data, &mut t, &mut g).unwrap();
        c.next(&data, &mut t2, &mut g2).unwrap();
        assert_eq!((t, g), (t2, g2));
        assert!(Batcher::new(200, 1, 0).next(&data, &mut Vec::new(), &mut Vec::new()).is_err());
    }

    #[test]
    fn split_and_unigram_baseline() {
        let d = TokenData::split((0..100).map(|i| i % 4).collect(), 0.1);
        assert_eq!((d.train.len(), d.val.len()), (90, 10));
        // Uniform over 4 symbols: ln 4 nats, up to add-one smoothing.
        assert!((d.unigram_baseline(4) - 4f32.ln()).abs() < 0.01);
    }

    #[test]
    fn jsonl_documents_and_bad_lines() {
        let tmp = tempfile::Builder::new().prefix("onebit-data-").tempdir().unwrap();
        let dir = tmp.path();
        let p = dir.join("a.jsonl").display().to_string();
        std::fs::write(&p, "{\"text\": \"one\"}\n\n{\"text\": \"two\"}\n").unwrap();
        assert_eq!(read_documents(std::slice::from_ref(&p)).unwrap(), vec!["one", "two"]);
        std::fs::write(&p, "{\"text\": \"one\"}\n{\"body\": 1}\n").unwrap();
        let e = read_documents(std::slice::from_ref(&p)).unwrap_err().to_string();
        assert!(e.contains("a.jsonl:2") && e.contains("text"), "{e}");
        std::fs::write(&p, "not json\n").unwrap();
        assert!(read_documents(std::slice::from_ref(&p)).is_err());
        assert!(read_documents(&[dir.join("none.txt").display().to_string()]).is_err());
    }
}
