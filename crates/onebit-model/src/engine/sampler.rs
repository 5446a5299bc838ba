//! Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.
//! Buffers are sized once for the vocabulary, so sampling allocates nothing per token.
//!
//! A sample is a [`Draw`] (the settings and the uniform number, fixed before the logits
//! exist) and a pick from the logits ([`Sampler::pick`]). Every step of the pick is one a
//! device can repeat to the bit: candidates in a total order (logit, then index), products by
//! precomputed reciprocals instead of quotients, and `exp_f32`, the exponential the CPU and
//! the GPU kernels share; so an engine may pick on its device (`Engine::decode_sampled`) and
//! a seed gives the same tokens on either.

/// Sampling settings (`temperature == 0` is greedy).
#[derive(Clone, Debug, PartialEq)]
pub struct SamplerConfig {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1 = all).
    pub top_p: f32,
    /// Drop tokens below min_p × the top probability (0 = none).
    pub min_p: f32,
    /// Divide positive logits (multiply negative) of recent tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// RNG seed.
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.0,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 42,
        }
    }
}

impl SamplerConfig {
    /// The top-k candidates a sample keeps from a vocabulary of `vocab` (all where top-k is
    /// 0 or larger).
    pub fn candidates(&self, vocab: usize) -> usize {
        if self.top_k == 0 {
            vocab
        } else {
            self.top_k.min(vocab)
        }
    }

    /// Whether a device engine can pick these replies' tokens itself from a vocabulary of
    /// `vocab` ([`crate::Engine::samples`]): sampled, keeping at most [`DEVICE_TOP_K`]
    /// candidates.
    pub fn fits_device(&self, vocab: usize) -> bool {
        self.temperature > 0.0 && self.candidates(vocab) <= DEVICE_TOP_K
    }

    /// Checks every setting is in its range, naming the first that is not.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |what: &str, v: f32, range: &str| {
            Err(crate::Error::Sampling(format!("{what} {v} is out of range ({range})")))
        };
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return bad("temperature", t, "a finite number >= 0; 0 is greedy");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top-p", self.top_p, "above 0 and at most 1");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min-p", self.min_p, "0 to 1");
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            return bad("repeat penalty", r, "a finite number > 0; 1 is off");
        }
        Ok(())
    }
}

/// The greedy token of a row of logits: the largest, the lowest index among equals (a later
/// value must be strictly greater, so NaN is never chosen over an earlier number).
pub fn argmax(logits: &[f32]) -> u32 {
    // The fold's pick (`if v > best`), found in two passes that vectorize (a vocabulary-wide
    // row is 128k values; the fold's compare-and-select chain ran one value a cycle): the
    // largest value that is not NaN, then the first index holding it (-0 equals +0, as for
    // `>`). A NaN first value is never replaced, as in the fold.
    match logits.first() {
        None => return 0,
        Some(v) if v.is_nan() => return 0,
        Some(_) => {}
    }
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = logits.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in lanes.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let tail = chunks.remainder().iter();
    let top = lanes.iter().chain(tail).fold(f32::NEG_INFINITY, |a, &v| a.max(v));
    const BLOCK: usize = 256;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if block.iter().fold(false, |hit, &v| hit | (v == top)) {
            let at = block.iter().position(|&v| v == top).unwrap_or(0);
            return (b * BLOCK + at) as u32;
        }
    }
    0
}

/// The most candidates a draw may keep for an engine to pick on its device
/// ([`crate::Engine::samples`]): a top-k of at most this many.
pub const DEVICE_TOP_K: usize = 256;

/// One token draw: the settings and the uniform number of one sample, fixed before the logits
/// exist, so an engine on a device can make the pick [`Sampler::pick`] makes on the host. The
/// recent tokens the penalty looks at are `penalized[hist_start..hist_start + hist_len]` of
/// the list the draws were made into.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[repr(C)]
pub struct Draw {
    /// Softmax temperature; 0 picks the argmax.
    pub temperature: f32,
    /// `1 / temperature` (products, not quotients, so a device rounds as the host does).
    pub inv_temperature: f32,
    /// Candidates kept (the vocabulary when the setting is 0 or larger).
    pub top_k: u32,
    /// Top-p.
    pub top_p: f32,
    /// Min-p.
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    pub repeat_penalty: f32,
    /// `1 / repeat_penalty`.
    pub inv_penalty: f32,
    /// The draw's uniform number in [0, 1).
    pub u: f32,
    /// First of this draw's penalized tokens in the list.
    pub hist_start: u32,
    /// How many penalized tokens.
    pub hist_len: u32,
    /// Padding to 48 bytes (the device's record size).
    pub pad: [u32; 2],
}

/// A sampler with its RNG state and scratch.
pub struct Sampler {
    cfg: SamplerConfig,
    vocab: usize,
    rng: u64,
    idx: Vec<u32>,
    probs: Vec<f32>,
    penalized: Vec<u32>,
}

/// `a` before `b` in the candidates' order: larger logit first ([`f32::total_cmp`]), the
/// lower index among equals, so the order is one a device can repeat.
fn before(logits: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b))
}

impl Sampler {
    /// A sampler for a vocabulary of `vocab` tokens.
    pub fn new(cfg: SamplerConfig, vocab: usize) -> Self {
        let rng = cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        // The tail the penalty reads is at most the context; a huge setting must not reserve.
        let n = cfg.repeat_last_n.min(1 << 16);
        Sampler {
            cfg,
            vocab,
            rng,
            idx: Vec::with_capacity(vocab),
            probs: Vec::with_capacity(vocab),
            penalized: Vec::with_capacity(n),
        }
    }

    fn uniform(&mut self) -> f32 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 40) as f32 / (1u64 << 24) as f32
    }

    /// The next draw given `history` (the context the penalty looks at): advances the RNG
    /// as [`Sampler::sample`] does and appends the penalized tail of `history` to
    /// `penalized`.
    pub fn draw(&mut self, history: &[u32], penalized: &mut Vec<u32>) -> Draw {
        let c = &self.cfg;
        let (mut hist_start, mut hist_len) = (penalized.len() as u32, 0);
        if c.repeat_penalty != 1.0 {
            let tail = &history[history.len().saturating_sub(c.repeat_last_n)..];
            penalized.extend_from_slice(tail);
            hist_len = tail.len() as u32;
        } else {
            hist_start = 0;
        }
        let top_k = c.candidates(self.vocab);
        let mut d = Draw {
            temperature: c.temperature,
            inv_temperature: if c.temperature > 0.0 { 1.0 / c.temperature } else { 0.0 },
            top_k: top_k as u32,
            top_p: c.top_p,
            min_p: c.min_p,
            repeat_penalty: c.repeat_penalty,
            inv_penalty: 1.0 / c.repeat_penalty,
            u: 0.0,
            hist_start,
            hist_len,
            pad: [0; 2],
        };
        if c.temperature > 0.0 {
            d.u = self.uniform();
        }
        d
    }

    /// Picks the next token from `logits` (modified in place by the penalty), given `history`.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let mut penalized = std::mem::take(&mut self.penalized);
        penalized.clear();
        let d = self.draw(history, &mut penalized);
        let next = self.pick(logits, &d, &penalized);
        self.penalized = penalized;
        next
    }

    /// The token `d` picks from `logits` (the penalty edits them in place; `penalized` is the
    /// list `d` was drawn into): the definition a device's sampler repeats.
    pub fn pick(&mut self, logits: &mut [f32], d: &Draw, penalized: &[u32]) -> u32 {
        penalize(logits, 0, d, penalized);
        if d.temperature <= 0.0 {
            return argmax(logits);
        }
        top_k(logits, d.top_k as usize, &mut self.idx);
        let j = choose(&mut self.probs, self.idx.iter().map(|&i| logits[i as usize]), d);
        self.idx[j]
    }

    /// [`Sampler::pick`]'s choice where the candidates are already known: the first
    /// `d.top_k` tokens of the penalized row in the candidates' order ([`candidate_order`]),
    /// as (logit, token). A tensor-parallel mesh finds them node by node.
    pub fn pick_among(&mut self, cands: &[(f32, u32)], d: &Draw) -> u32 {
        let j = choose(&mut self.probs, cands.iter().map(|c| c.0), d);
        cands.get(j).map_or(0, |c| c.1)
    }
}

/// Applies `d`'s repetition penalty to the logits of tokens `base..base + logits.len()`
/// (`logits[0]` is token `base`), once for each time a token is in the draw's list.
pub fn penalize(logits: &mut [f32], base: u32, d: &Draw, penalized: &[u32]) {
    let h = d.hist_start as usize;
    for &t in &penalized[h..h + d.hist_len as usize] {
        if let Some(l) = t.checked_sub(base).and_then(|i| logits.get_mut(i as usize)) {
            *l = if *l > 0.0 { *l * d.inv_penalty } else { *l * d.repeat_penalty };
        }
    }
}

/// The first `k` (at least 1) tokens of `logits` in the candidates' order, into `idx` in
/// that order.
pub fn top_k(logits: &[f32], k: usize, idx: &mut Vec<u32>) {
    idx.clear();
    let n = logits.len();
    let k = k.clamp(1, n.max(1));
    // A selection over a whole vocabulary (128k tokens) moves every index through a
    // comparator that reads two logits; a few candidates of a large row are found instead
    // among the values at or above a threshold no larger than the k-th largest (the k-th
    // largest of every STRIDE-th value: at least those k values reach it, and about
    // k·STRIDE in all do), compared as integers in `total_cmp`'s order.
    const STRIDE: usize = 16;
    if n >= SMALL_ROW && k * STRIDE <= n {
        idx.extend(logits.iter().step_by(STRIDE).map(|&v| order_key(v)));
        let at = idx.len() - k;
        let threshold = *idx.select_nth_unstable(at).1;
        idx.clear();
        let keys = logits.iter().map(|&v| order_key(v));
        idx.extend((0..n as u32).zip(keys).filter(|&(_, key)| key >= threshold).map(|(i, _)| i));
    } else {
        idx.extend(0..n as u32);
    }
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| before(logits, a, b));
        idx.truncate(k);
    }
    idx.sort_unstable_by(|&a, &b| before(logits, a, b));
}

/// Rows shorter than this are selected from whole.
const SMALL_ROW: usize = 1024;

/// `v`'s place in [`f32::total_cmp`]'s order as an unsigned integer (negative values'
/// bits reversed, positive ones above them).
fn order_key(v: f32) -> u32 {
    let b = v.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 1 << 31
    }
}

/// The candidates' order on (logit, token) pairs: as [`Sampler::pick`] orders a row's tokens.
pub fn candidate_order(a: &(f32, u32), b: &(f32, u32)) -> std::cmp::Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

/// The position `d` picks among candidates of logits `vals` (in the candidates' order):
/// softmax at the temperature, then top-p and min-p, then the draw's uniform number.
fn choose(probs: &mut Vec<f32>, vals: impl Iterator<Item = f32>, d: &Draw) -> usize {
    probs.clear();
    let mut vals = vals.peekable();
    let Some(&top) = vals.peek() else { return 0 };
    let mut total = 0.0;
    for v in vals {
        let p = onebit_kernels::dense::exp_f32((v - top) * d.inv_temperature);
        probs.push(p);
        total += p;
    }
    let (mut keep, mut cum) = (0, 0.0);
    for &p in probs.iter() {
        if keep > 0 && (cum >= d.top_p * total || p < d.min_p * probs[0]) {
            break;
        }
        cum += p;
        keep += 1;
    }
    let mut r = d.u * cum;
    for (j, &p) in probs[..keep].iter().enumerate() {
        r -= p;
        if r <= 0.0 {
            return j;
        }
    }
    keep - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::default(), 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let cfg = SamplerConfig { temperature: 1.0, top_k: 1, ..SamplerConfig::default() };
        let mut s = Sampler::new(cfg, 4);
        assert_eq!(s.sample(&mut [0.1, 3.0, -1.0, 2.9], &[]), 1);
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(SamplerConfig { seed, ..cfg.clone() }, 4);
            (0..32).map(|_| s.sample(&mut [1.0, 1.0, 1.0, 1.0], &[])).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert!(
            draw(7).iter().any(|&t| t != draw(7)[0]),
            "uniform logits should give varied tokens"
        );
    }

    #[test]
    fn equal_logits_keep_the_lowest_indices() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            min_p: 0.0,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, 6);
        let mut seen = [false; 6];
        for _ in 0..64 {
            seen[s.sample(&mut [0.5; 6], &[]) as usize] = true;
        }
        assert_eq!(seen, [true, true, false, false, false, false]);
    }

    #[test]
    fn a_draw_then_a_pick_is_a_sample() {
        let cfg = SamplerConfig { temperature: 0.7, repeat_penalty: 1.3, ..Default::default() };
        let (mut a, mut b) = (Sampler::new(cfg.clone(), 50), Sampler::new(cfg, 50));
        let mut pen = Vec::new();
        for step in 0..40u32 {
            let row: Vec<f32> =
                (0..50u32).map(|i| ((i * 7 + step * 13) % 17) as f32 * 0.3).collect();
            let history = [step % 50, (step * 3) % 50, 7];
            pen.clear();
            let d = b.draw(&history, &mut pen);
            assert_eq!(d.hist_len, 3);
            let want = a.sample(&mut row.clone(), &history);
            assert_eq!(b.pick(&mut row.clone(), &d, &pen), want, "step {step}");
        }
    }

    #[test]
    fn a_huge_penalty_window_reserves_nothing_up_front() {
        let cfg =
            SamplerConfig { repeat_last_n: usize::MAX, repeat_penalty: 2.0, ..Default::default() };
        let mut s = Sampler::new(cfg, 3);
        assert_eq!(s.sample(&mut [1.0, 2.0, 0.0], &[1, 1]), 0);
    }

    #[test]
    fn repeat_penalty_demotes_history() {
        let cfg = SamplerConfig { repeat_penalty: 2.0, ..SamplerConfig::default() };
        let mut s = Sampler::new(cfg, 3);
        assert_eq!(s.sample(&mut [1.0, 1.5, 0.0], &[1]), 0);
    }

    #[test]
    fn min_p_drops_unlikely_tokens() {
        let cfg = SamplerConfig {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..SamplerConfig::default()
        };
        let mut s = Sampler::new(cfg, 3);
        for _ in 0..50 {
            assert_eq!(s.sample(&mut [5.0, 0.0, 0.0], &[]), 0);
        }
    }

    /// The definition `argmax` must keep: the first value strictly above every earlier pick.
    fn argmax_by_fold(logits: &[f32]) -> u32 {
        logits.iter().enumerate().fold(0, |b, (i, &v)| if v > logits[b] { i } else { b }) as u32
    }

    proptest::proptest! {
        #[test]
        fn argmax_picks_as_the_fold_does(
            row in proptest::collection::vec(
                proptest::prop_oneof![
                    8 => -4.0f32..4.0,
                    1 => proptest::sample::select(vec![
                        0.0f32, -0.0, 4.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, f32::MAX,
                    ]),
                ],
                0..700,
            ),
        ) {
            proptest::prop_assert_eq!(argmax(&row), argmax_by_fold(&row));
        }
    }

    #[test]
    fn argmax_edge_rows() {
        let nan = f32::NAN;
        for row in [
            vec![],
            vec![nan, 5.0],
            vec![1.0, nan, 5.0, nan],
            vec![-0.0, 0.0],
            vec![0.0, -0.0, 0.0],
            vec![f32::NEG_INFINITY; 300],
            (0..1000).map(|i| (i % 17) as f32).collect(),
        ] {
            assert_eq!(argmax(&row), argmax_by_fold(&row), "{row:?}");
        }
    }

    /// The definition `top_k` must keep: a selection over the whole row.
    fn top_k_whole(logits: &[f32], k: usize) -> Vec<u32> {
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        idx.sort_by(|&a, &b| before(logits, a, b));
        idx.truncate(k.clamp(1, logits.len().max(1)));
        idx
    }

    proptest::proptest! {
        #[test]
        fn top_k_is_the_first_k_of_the_whole_row_in_order(
            row in proptest::collection::vec(
                proptest::prop_oneof![
                    6 => -8.0f32..8.0,
                    2 => proptest::strategy::Strategy::prop_map(-3i32..3, |v| v as f32),
                    1 => proptest::sample::select(vec![
                        0.0f32, -0.0, f32::NAN, -f32::NAN, f32::INFINITY, f32::NEG_INFINITY,
                    ]),
                ],
                1..5000,
            ),
            k in 1usize..300,
        ) {
            let mut idx = Vec::new();
            top_k(&row, k, &mut idx);
            proptest::prop_assert_eq!(idx, top_k_whole(&row, k));
        }
    }

    #[test]
    fn order_keys_follow_total_cmp() {
        let vals = [
            f32::NAN,
            -f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            1e-45,
            -1e-45,
            f32::MAX,
            f32::MIN,
        ];
        for a in vals {
            for b in vals {
                assert_eq!(order_key(a).cmp(&order_key(b)), a.total_cmp(&b), "{a} {b}");
            }
        }
    }
}
