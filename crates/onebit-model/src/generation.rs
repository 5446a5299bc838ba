//! Text generation, one implementation for the CLI, the server and the Python package:
//! [`Sequence`] is one reply's state (sampler, streaming detokenization, stop strings, limits)
//! advanced one sampled token at a time by whoever runs the model — a single session here in
//! [`generate`], or a scheduler decoding many slots in one pass.
//!
//! Streaming follows llama.cpp: text that could still become a stop string is held back until
//! it does (then it is cut, never printed) or stops matching, and an incomplete UTF-8
//! character is never emitted.

use crate::constraint::Constraint;
use crate::engine::{Draw, Engine, Sampler, SamplerConfig};
use crate::error::Result;
use crate::json_schema::JsonSchema;
use crate::logprobs::{token_logprob, TokenLogprob};
use crate::tokenizer::{StreamDecoder, Tokenizer};

/// What a reply may do.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerationParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Sampling settings.
    pub sampling: SamplerConfig,
    /// The reply ends before the first of these strings (which is not part of it).
    pub stop: Vec<String>,
    /// Report each sampled token's log-probability with this many alternatives
    /// ([`Step::logprob`]); None: none.
    pub logprobs: Option<usize>,
    /// OpenAI's adjustments of the logits before sampling.
    pub adjust: LogitAdjust,
    /// The reply is one JSON object (OpenAI's JSON mode, [`crate::json_mode`]): tokens that
    /// cannot continue one are never sampled, and the reply ends when it closes.
    pub json_object: bool,
    /// The reply is one document of this JSON schema (structured output,
    /// [`crate::json_schema`]; over `json_object` when both are set): tokens that cannot
    /// continue one are never sampled, and the reply ends when it is complete.
    pub json_schema: Option<std::sync::Arc<JsonSchema>>,
    /// With `json_schema`: only a reply that starts with `{` is held to the schema, any
    /// other is free text (OpenAI's `tool_choice: "auto"`: a tool call or an answer).
    pub schema_optional: bool,
    /// With `json_schema`: how many more documents of it the reply may hold after the
    /// first, one a line (OpenAI's parallel tool calls); 0: one.
    pub schema_more: usize,
    /// The reply is a sentence of this GBNF grammar (llama.cpp's `grammar`,
    /// [`crate::gbnf`]): tokens that cannot continue one are never sampled, the end of
    /// sequence only where the grammar may end, and the reply ends when nothing may follow.
    pub grammar: Option<std::sync::Arc<crate::gbnf::Grammar>>,
}

/// OpenAI's adjustments of the logits before sampling (on the host: a reply using them is
/// never picked by the engine): biases of given tokens, and presence and frequency
/// penalties over the reply's own tokens, `logit -= count·frequency + (count > 0)·presence`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogitAdjust {
    /// (token, bias added to its logit); -100 or 100 in effect bans or forces a token.
    pub bias: Vec<(u32, f32)>,
    /// Subtracted once from the logit of every token the reply holds.
    pub presence_penalty: f32,
    /// Subtracted from a token's logit once for each time the reply holds it.
    pub frequency_penalty: f32,
}

impl LogitAdjust {
    /// Whether nothing is adjusted.
    pub fn is_off(&self) -> bool {
        self.bias.is_empty() && self.presence_penalty == 0.0 && self.frequency_penalty == 0.0
    }

    /// Checks the settings against a vocabulary of `vocab` tokens (OpenAI's ranges: biases
    /// -100 to 100, penalties -2 to 2), naming the first out of range.
    pub fn validate(&self, vocab: usize) -> Result<()> {
        let bad = |what: String| Err(crate::Error::Sampling(what));
        for (name, v) in [
            ("presence penalty", self.presence_penalty),
            ("frequency penalty", self.frequency_penalty),
        ] {
            if !(-2.0..=2.0).contains(&v) {
                return bad(format!("{name} {v} is out of range (-2 to 2)"));
            }
        }
        for &(t, b) in &self.bias {
            if t as usize >= vocab {
                return bad(format!("logit bias for token {t}, outside the vocabulary of {vocab}"));
            }
            if !(-100.0..=100.0).contains(&b) {
                return bad(format!("logit bias {b} for token {t} is out of range (-100 to 100)"));
            }
        }
        Ok(())
    }
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            max_tokens: 128,
            sampling: SamplerConfig::default(),
            stop: Vec::new(),
            logprobs: None,
            adjust: LogitAdjust::default(),
            json_object: false,
            json_schema: None,
            schema_more: 0,
            grammar: None,
            schema_optional: false,
        }
    }
}

/// Why a reply ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// A stop string appeared.
    Stop,
    /// `max_tokens` were generated.
    Length,
    /// The sequence's context is full.
    ContextFull,
    /// The caller stopped it (a client went away, Ctrl-C).
    Cancelled,
    /// The reply's JSON document was complete ([`GenerationParams::json_object`],
    /// [`GenerationParams::json_schema`]).
    Complete,
}

impl FinishReason {
    /// The OpenAI API's `finish_reason`.
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Eos | FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Complete => "stop",
            FinishReason::Length | FinishReason::ContextFull => "length",
        }
    }
}

/// What one sampled token did.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// The token to feed the model next (None once the reply is over).
    pub feed: Option<u32>,
    /// Text that became printable with this token (often empty: held back or mid-character).
    pub piece: String,
    /// Set when the reply ended with this token.
    pub finish: Option<FinishReason>,
    /// The sampled token's log-probability (the end-of-sequence token's too), when the
    /// reply asked for them.
    pub logprob: Option<TokenLogprob>,
}

/// One reply being generated.
pub struct Sequence {
    params: GenerationParams,
    sampler: Sampler,
    eos: Option<u32>,
    stream: StreamDecoder,
    ids: Vec<u32>,
    text: String,
    printed: usize,
    longest_stop: usize,
    finish: Option<FinishReason>,
    /// With logprobs and a repetition penalty: the logits before the penalty edits them;
    /// scratch for the top alternatives.
    raw: Vec<f32>,
    idx: Vec<u32>,
    /// How often each token is in the reply (for the presence and frequency penalties).
    counts: std::collections::HashMap<u32, u32>,
    /// The stop string that ended the reply (its index).
    stopped_by: Option<usize>,
    /// JSON mode or a schema: the recognizer after the reply's bytes so far.
    json: Option<Constraint>,
}

impl Sequence {
    /// A reply for a model of `vocab` tokens ending at `eos`; the sampling settings are
    /// range-checked here.
    pub fn new(params: GenerationParams, vocab: usize, eos: Option<u32>) -> Result<Self> {
        params.sampling.validate()?;
        params.adjust.validate(vocab)?;
        let sampler = Sampler::new(params.sampling.clone(), vocab);
        let longest_stop = params.stop.iter().map(String::len).max().unwrap_or(0);
        Ok(Sequence {
            sampler,
            eos,
            stream: StreamDecoder::new(),
            ids: Vec::new(),
            text: String::new(),
            printed: 0,
            longest_stop,
            finish: None,
            raw: Vec::new(),
            idx: Vec::new(),
            counts: Default::default(),
            stopped_by: None,
            json: Constraint::new(
                params.json_object,
                params.json_schema.as_ref(),
                params.schema_optional,
                params.schema_more,
                params.grammar.as_ref(),
            ),
            params,
        })
    }

    /// Samples the next token from `logits` (the model's output after the last token fed;
    /// the repetition penalty edits it in place). `history` is the context the penalty looks
    /// at, `room` the positions left in the sequence's context.
    pub fn step(
        &mut self,
        tok: &Tokenizer,
        logits: &mut [f32],
        history: &[u32],
        room: usize,
    ) -> Result<Step> {
        if let Some(done) = self.ended(tok) {
            return Ok(done);
        }
        let Some(n) = self.params.logprobs else {
            self.adjust(logits);
            self.mask(tok, logits)?;
            let next = self.sampler.sample(logits, history);
            return self.push(tok, next, room);
        };
        // The penalties and JSON mode edit the row in place; the log-probabilities are the
        // model's own.
        let edits = self.params.sampling.repeat_penalty != 1.0
            || !self.params.adjust.is_off()
            || self.json.is_some();
        if edits {
            self.raw.clear();
            self.raw.extend_from_slice(logits);
        }
        self.adjust(logits);
        self.mask(tok, logits)?;
        let next = self.sampler.sample(logits, history);
        let row = if edits { &self.raw[..] } else { &logits[..] };
        let lp = token_logprob(row, next, n, &mut self.idx);
        let mut step = self.push(tok, next, room)?;
        step.logprob = Some(lp);
        Ok(step)
    }

    /// Applies the reply's [`LogitAdjust`] to `logits`.
    fn adjust(&self, logits: &mut [f32]) {
        let a = &self.params.adjust;
        if a.is_off() {
            return;
        }
        if a.presence_penalty != 0.0 || a.frequency_penalty != 0.0 {
            for (&t, &c) in &self.counts {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l -= c as f32 * a.frequency_penalty + a.presence_penalty;
                }
            }
        }
        for &(t, b) in &a.bias {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }

    /// JSON mode or a schema: −∞ for every token that cannot continue the reply's document
    /// (the end-of-sequence token included, unless the document may end there).
    fn mask(&mut self, tok: &Tokenizer, logits: &mut [f32]) -> Result<()> {
        match &mut self.json {
            Some(c) => c.mask(tok, logits, self.eos),
            None => Ok(()),
        }
    }

    /// Whether this reply's tokens must be sampled from its logits on the host
    /// ([`Sequence::step`]), never picked by the engine: it reports log-probabilities,
    /// adjusts the logits ([`LogitAdjust`]) or is in JSON mode.
    pub fn needs_host(&self) -> bool {
        self.params.logprobs.is_some() || !self.params.adjust.is_off() || self.json.is_some()
    }

    /// Whether every token of this reply is the plain argmax of the model's logits (greedy,
    /// no repetition penalty), so the engine may pick it ([`Engine::decode_argmax`]) and
    /// [`Sequence::step_chosen`] take it.
    pub fn is_greedy(&self) -> bool {
        let s = &self.params.sampling;
        s.temperature <= 0.0 && s.repeat_penalty == 1.0
    }

    /// The draw of this reply's next token given `history` (advancing its sampler as
    /// [`Sequence::step`] would), for an engine that picks it ([`Engine::decode_sampled`]);
    /// [`Sequence::step_chosen`] then takes the token.
    pub fn draw(&mut self, history: &[u32], penalized: &mut Vec<u32>) -> Draw {
        self.sampler.draw(history, penalized)
    }

    /// The sampling settings of this reply.
    pub fn sampling(&self) -> &SamplerConfig {
        &self.params.sampling
    }

    /// [`Sequence::step`] with the token already picked by the engine: the argmax for a
    /// reply that [`Sequence::is_greedy`], or the pick of this reply's [`Sequence::draw`].
    pub fn step_chosen(&mut self, tok: &Tokenizer, next: u32, room: usize) -> Result<Step> {
        if let Some(done) = self.ended(tok) {
            return Ok(done);
        }
        self.push(tok, next, room)
    }

    /// The step of a reply that has already ended, or reached its token limit.
    fn ended(&mut self, tok: &Tokenizer) -> Option<Step> {
        if let Some(f) = self.finish {
            return Some(Step { feed: None, piece: String::new(), finish: Some(f), logprob: None });
        }
        if self.ids.len() >= self.params.max_tokens {
            return Some(self.end(tok, FinishReason::Length, String::new()));
        }
        None
    }

    /// Takes sampled token `next`: streams its text, applies the stop strings and limits.
    fn push(&mut self, tok: &Tokenizer, next: u32, room: usize) -> Result<Step> {
        if Some(next) == self.eos {
            return Ok(self.end(tok, FinishReason::Eos, String::new()));
        }
        self.ids.push(next);
        if let Some(m) = &mut self.json {
            // The mask let only tokens through that keep the object valid.
            m.feed(tok.token_bytes().get(next));
        }
        if !self.params.adjust.is_off() {
            *self.counts.entry(next).or_insert(0) += 1;
        }
        let mut piece = String::new();
        if let Some(p) = self.stream.next_piece(tok, &self.ids)? {
            let mut from = self.text.len().saturating_sub(self.longest_stop);
            while !self.text.is_char_boundary(from) {
                from -= 1;
            }
            self.text.push_str(&p);
            let hit = (self.params.stop.iter().enumerate())
                .filter_map(|(i, s)| self.text[from..].find(s.as_str()).map(|at| (at, i)))
                .min();
            if let Some((at, i)) = hit {
                let cut = from + at;
                self.stopped_by = Some(i);
                piece.push_str(&self.text[self.printed.min(cut)..cut]);
                self.text.truncate(cut);
                self.printed = cut;
                self.finish = Some(FinishReason::Stop);
                return Ok(Step { feed: None, piece, finish: self.finish, logprob: None });
            }
            let upto = self.text.len() - stop_prefix_len(&self.text, &self.params.stop);
            if upto > self.printed {
                piece.push_str(&self.text[self.printed..upto]);
                self.printed = upto;
            }
        }
        if self.json.as_ref().is_some_and(Constraint::is_done) {
            return Ok(self.end(tok, FinishReason::Complete, piece));
        }
        if self.ids.len() >= self.params.max_tokens {
            return Ok(self.end(tok, FinishReason::Length, piece));
        }
        if room == 0 {
            return Ok(self.end(tok, FinishReason::ContextFull, piece));
        }
        Ok(Step { feed: Some(next), piece, finish: None, logprob: None })
    }

    /// Ends the reply early (the caller stopped it); returns the text not yet emitted.
    pub fn cancel(&mut self, tok: &Tokenizer) -> String {
        if self.finish.is_some() {
            return String::new();
        }
        self.end(tok, FinishReason::Cancelled, String::new()).piece
    }

    /// Ends the reply: a held-back tail that did not become a stop string is emitted; an
    /// incomplete character at the very end joins the text but is not emitted.
    fn end(&mut self, tok: &Tokenizer, why: FinishReason, mut piece: String) -> Step {
        piece.push_str(&self.text[self.printed..]);
        self.printed = self.text.len();
        if let Ok(rest) = self.stream.rest(tok, &self.ids) {
            self.text.push_str(&rest);
        }
        self.finish = Some(why);
        Step { feed: None, piece, finish: Some(why), logprob: None }
    }

    /// The reply so far (stop string excluded).
    pub fn text(&self) -> &str {
        &self.text
    }
    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }
    /// Why the reply ended, once it has.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }
    /// The stop string that ended the reply ([`FinishReason::Stop`]).
    pub fn stop_word(&self) -> Option<&str> {
        self.stopped_by.map(|i| self.params.stop[i].as_str())
    }
}

/// Bytes at the end of `text` that are a proper prefix of some stop string (0 if none).
pub fn stop_prefix_len(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|s| (1..s.len()).rev().filter(|&k| s.is_char_boundary(k)).map(move |k| &s[..k]))
        .filter(|p| text.ends_with(p))
        .map(str::len)
        .max()
        .unwrap_or(0)
}

/// What [`generate`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    /// The reply (stop string excluded).
    pub text: String,
    /// Tokens generated.
    pub tokens: usize,
    /// Why it ended.
    pub finish: FinishReason,
}

/// Feeds `feed` to slot 0 of `session` (appending it to `consumed`, which mirrors what the
/// session has seen), then generates `seq` to its end, handing each printable piece to
/// `on_piece`; a piece callback returning false cancels the reply.
pub fn generate(
    session: &mut dyn Engine,
    consumed: &mut Vec<u32>,
    feed: &[u32],
    seq: &mut Sequence,
    tok: &Tokenizer,
    on_piece: &mut dyn FnMut(&str) -> bool,
) -> Result<Generated> {
    let mut logits = session.forward_slot(0, feed)?.to_vec();
    consumed.extend_from_slice(feed);
    // A greedy reply lets the engine pick each next token (on a GPU: one id back per step),
    // and so does a sampled one where the engine samples on its device.
    let host = seq.needs_host();
    let greedy = !host && seq.is_greedy();
    let on_engine = !host && !greedy && session.samples(seq.sampling());
    let (mut chosen, mut penalized) = (Vec::with_capacity(1), Vec::new());
    loop {
        let room = session.capacity().saturating_sub(session.position_of(0)?);
        let step = match chosen.first() {
            Some(&next) => seq.step_chosen(tok, next, room)?,
            None => seq.step(tok, &mut logits, consumed, room)?,
        };
        if !step.piece.is_empty() && !on_piece(&step.piece) {
            seq.cancel(tok);
            break;
        }
        match step.feed {
            Some(t) if greedy => {
                session.decode_argmax(&[t], &[0], &mut chosen)?;
                consumed.push(t);
            }
            Some(t) if on_engine => {
                consumed.push(t);
                penalized.clear();
                let d = seq.draw(consumed, &mut penalized);
                session.decode_sampled(&[t], &[0], &[d], &penalized, &mut chosen)?;
            }
            Some(t) => {
                logits.copy_from_slice(session.forward_slot(0, &[t])?);
                consumed.push(t);
            }
            None => break,
        }
    }
    let finish = seq.finish_reason().unwrap_or(FinishReason::Cancelled);
    Ok(Generated { text: seq.text().to_string(), tokens: seq.tokens().len(), finish })
}

/// Generates one reply per prompt together: prompt `i` is prefilled into slot `i` of
/// `session` (which needs that many slots; they are reset first), then every unfinished reply
/// advances in one decode pass per token, the engine's multi-sequence decode.
/// `on_piece(i, piece)` returning false cancels reply `i`.
pub fn generate_batch(
    session: &mut dyn Engine,
    prompts: &[Vec<u32>],
    seqs: &mut [Sequence],
    tok: &Tokenizer,
    on_piece: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generated>> {
    let n = prompts.len();
    if seqs.len() != n || session.slots() < n {
        return Err(crate::Error::Batch {
            op: "generate_batch",
            why: format!(
                "{n} prompts, {} replies, a session of {} slots",
                seqs.len(),
                session.slots()
            ),
        });
    }
    let vocab = session.vocab();
    let mut logits = vec![0f32; n * vocab];
    let mut history: Vec<Vec<u32>> = prompts.to_vec();
    for (i, p) in prompts.iter().enumerate() {
        session.reset_slot(i)?;
        logits[i * vocab..(i + 1) * vocab].copy_from_slice(session.forward_slot(i, p)?);
    }
    let (mut active, mut tokens, mut slots): (Vec<usize>, Vec<u32>, Vec<usize>) =
        ((0..n).collect(), Vec::with_capacity(n), Vec::with_capacity(n));
    // When every reply is greedy, or the engine samples them all on its device, the engine
    // picks the tokens: `chosen[i]` after the prompt.
    let host = seqs.iter().any(Sequence::needs_host);
    let greedy = !host && seqs.iter().all(Sequence::is_greedy);
    let on_engine = !host && !greedy && seqs.iter().all(|s| session.samples(s.sampling()));
    let (mut chosen, mut ids) = (vec![None; n], Vec::with_capacity(n));
    let (mut draws, mut penalized) = (Vec::with_capacity(n), Vec::new());
    while !active.is_empty() {
        tokens.clear();
        slots.clear();
        for &i in &active {
            let room = session.capacity().saturating_sub(session.position_of(i)?);
            let row = &mut logits[i * vocab..(i + 1) * vocab];
            let step = match chosen[i] {
                Some(next) => seqs[i].step_chosen(tok, next, room)?,
                None => seqs[i].step(tok, row, &history[i], room)?,
            };
            if !step.piece.is_empty() && !on_piece(i, &step.piece) {
                seqs[i].cancel(tok);
                continue;
            }
            if let Some(t) = step.feed {
                tokens.push(t);
                slots.push(i);
                history[i].push(t);
            }
        }
        if !tokens.is_empty() && (greedy || on_engine) {
            if greedy {
                session.decode_argmax(&tokens, &slots, &mut ids)?;
            } else {
                draws.clear();
                penalized.clear();
                for &i in &slots {
                    draws.push(seqs[i].draw(&history[i], &mut penalized));
                }
                session.decode_sampled(&tokens, &slots, &draws, &penalized, &mut ids)?;
            }
            for (&i, &next) in slots.iter().zip(&ids) {
                chosen[i] = Some(next);
            }
        } else if !tokens.is_empty() {
            let out = session.decode(&tokens, &slots)?;
            for (j, &i) in slots.iter().enumerate() {
                logits[i * vocab..(i + 1) * vocab]
                    .copy_from_slice(&out[j * vocab..(j + 1) * vocab]);
            }
        }
        std::mem::swap(&mut active, &mut slots);
    }
    Ok(seqs
        .iter()
        .map(|s| Generated {
            text: s.text().to_string(),
            tokens: s.tokens().len(),
            finish: s.finish_reason().unwrap_or(FinishReason::Cancelled),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_that_could_start_a_stop_string_is_held_back() {
        let stops = ["</s>".to_string(), "User:".to_string(), "é!".to_string()];
        assert_eq!(stop_prefix_len("Hello </", &stops), 2);
        assert_eq!(stop_prefix_len("Hello <", &stops), 1);
        assert_eq!(stop_prefix_len("ask the Use", &stops), 3);
        assert_eq!(stop_prefix_len("café", &stops), "é".len());
        assert_eq!(stop_prefix_len("Hello", &stops), 0);
        // A whole stop string is found by the search, not held here.
        assert_eq!(stop_prefix_len("x</s>", &stops), 0);
        assert_eq!(stop_prefix_len("", &stops), 0);
        assert_eq!(stop_prefix_len("abc", &[]), 0);
    }

    fn tokenizer() -> Tokenizer {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/austen.tokenizer.json");
        Tokenizer::from_file(p).unwrap()
    }

    #[test]
    fn presence_and_frequency_penalties_and_biases_move_the_logits_as_openai_defines() {
        let (tok, vocab) = (tokenizer(), 4096);
        let adjust = LogitAdjust { bias: vec![], presence_penalty: 0.3, frequency_penalty: 0.2 };
        let params =
            GenerationParams { max_tokens: 8, adjust, logprobs: Some(1), ..Default::default() };
        let mut seq = Sequence::new(params, vocab, None).unwrap();
        assert!(seq.needs_host());
        let mut raw = vec![0.0f32; vocab];
        (raw[3], raw[4]) = (1.0, 0.6);
        // By hand: 3 (1.0); then 3 is 1.0 - 0.2 - 0.3 = 0.5 < 0.6: 4; then 3 at 0.5 beats 4 at
        // 0.6 - 0.5 = 0.1; then 3 at 1.0 - 2·0.2 - 0.3 = 0.3 still beats 4.
        let mut picked = vec![];
        for _ in 0..4 {
            let mut l = raw.clone();
            let step = seq.step(&tok, &mut l, &[], 100).unwrap();
            // The log-probability is the model's own, before the penalties.
            let lp = step.logprob.unwrap();
            let lse = crate::logprobs::log_sum_exp(&raw);
            assert!((lp.logprob as f64 - (raw[lp.token as usize] as f64 - lse)).abs() < 1e-6);
            picked.push(step.feed.unwrap());
        }
        assert_eq!(picked, [3, 4, 3, 3]);
        // A bias moves one token; -100 bans one.
        let adjust = LogitAdjust { bias: vec![(5, 1.5), (3, -100.0)], ..Default::default() };
        let params = GenerationParams { max_tokens: 2, adjust, ..Default::default() };
        let mut seq = Sequence::new(params, vocab, None).unwrap();
        let mut l = raw.clone();
        assert_eq!(seq.step(&tok, &mut l, &[], 100).unwrap().feed, Some(5));
        // Out of range: named.
        for bad in [
            LogitAdjust { presence_penalty: 2.5, ..Default::default() },
            LogitAdjust { bias: vec![(4096, 1.0)], ..Default::default() },
            LogitAdjust { bias: vec![(1, -101.0)], ..Default::default() },
        ] {
            let params = GenerationParams { adjust: bad, ..Default::default() };
            assert!(Sequence::new(params, vocab, None).is_err());
        }
    }

    #[test]
    fn finish_reasons_map_to_openai() {
        assert_eq!(FinishReason::Length.openai(), "length");
        assert_eq!(FinishReason::ContextFull.openai(), "length");
        assert_eq!(FinishReason::Stop.openai(), "stop");
        assert_eq!(FinishReason::Eos.openai(), "stop");
    }
}
