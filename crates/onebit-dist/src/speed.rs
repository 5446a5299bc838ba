//! Measuring a node for the planner: how long it takes to decode one token of a model's shape
//! alone, and how much memory it can give. The figure is measured, not assumed from core
//! counts, and without the model file (a worker may not have it yet): the engine's own pass
//! over blocks of the model's shape held in memory (`onebit_model::synthetic::timing_blocks`,
//! random trits in the T2 layout) and the int8 head, with as many distinct blocks as it takes
//! to exceed 256 MiB, so weights stream from memory as in a real decode rather than sit in
//! cache. The linears alone are timed too, over the same blocks, for
//! their share of the pass: tensor parallelism splits them, not the rest (norms, attention,
//! RoPE, the KV cache). On a mesh the nodes measure one after another, so nodes that share a
//! machine (the loopback tests) do not slow each other down.

use crate::collective::{all_gather, barrier};
use crate::comm::Comm;
use crate::error::{DistError, Result};
use onebit_kernels::head::q8_matmul;
use onebit_kernels::{matmul, ActQuant, Q8Matrix, TernaryFormat};
use onebit_model::{KvDtype, ModelConfig, Session, SessionOptions, StageInput};
use std::time::{Duration, Instant};

/// A node as measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeMeasure {
    /// Seconds to decode one token of the whole model alone.
    pub token_s: f64,
    /// Bytes of memory available.
    pub mem_bytes: u64,
    /// How a pass grows with the sequences in it.
    pub batch: BatchCurve,
}

/// Rows at which a node's pass is timed: the points of its [`BatchCurve`].
pub const CURVE_ROWS: [usize; 5] = [1, 2, 4, 8, 16];

/// How a node's decode pass grows with the rows (sequences) in it: the time of a pass over
/// each of [`CURVE_ROWS`] rows as a multiple of a one-row pass, for the blocks and for the
/// output head apart. Measured, not a line: on the 2B4T shape with one thread the engine's
/// decode pass took 1.5x, 1.8x, 2.3x and 3.0x one row's at 2, 4, 8 and 16 rows (the integer
/// kernels go from bandwidth-bound to compute-bound; AMX takes over from 12 rows), so a
/// slope fitted at 8 rows put a pipeline's 4-row micro-batches 15 % too fast
/// (bench/runs/2026-12-06-xeon-issue15-batch-curve.txt).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchCurve {
    /// The blocks' pass at each of [`CURVE_ROWS`], times their one-row pass (`blocks[0]` = 1).
    pub blocks: [f64; 5],
    /// The head's, likewise.
    pub head: [f64; 5],
    /// The share of the blocks' pass at each of [`CURVE_ROWS`] spent in their linears
    /// (quantizing their inputs included): what tensor parallelism divides between nodes;
    /// the rest (norms, RoPE, the KV cache) it prices as every node's, but for
    /// [`BatchCurve::context_share`].
    pub linear_share: [f64; 5],
    /// The share spent attending over the context the pass was timed after (0 on a fresh
    /// cache): tensor parallelism divides it by KV heads.
    pub context_share: [f64; 5],
    /// The output head's share of a one-row pass (blocks and head timed apart), or `None`
    /// where not measured: the planner then takes the head's share of the weight bytes.
    /// Measured, because the two stream at different rates: on a Zen 4 with one thread the
    /// int8 head took 10.9 of 42.6 ms (26 %) though it is 39 % of the 2B4T's bytes, and a
    /// pipeline split by bytes gave its first stage 6 blocks where 9 balanced the stages
    /// (bench/runs/2026-12-07-zen4-issue15-head-share.txt).
    pub head_share: Option<f64>,
}

impl BatchCurve {
    /// Every extra row adding `slope` of a one-row pass, blocks and head alike.
    pub fn linear(slope: f64) -> BatchCurve {
        let x = CURVE_ROWS.map(|r| 1.0 + slope * (r - 1) as f64);
        BatchCurve {
            blocks: x,
            head: x,
            linear_share: [1.0; 5],
            context_share: [0.0; 5],
            head_share: None,
        }
    }

    /// The blocks' share of a one-row pass: the measured one, else `by_bytes` (the blocks'
    /// share of the weight bytes).
    pub fn block_frac(&self, by_bytes: f64) -> f64 {
        self.head_share.map_or(by_bytes, |h| 1.0 - h)
    }

    /// The blocks' pass over `rows` rows, times one row's.
    pub fn blocks_x(&self, rows: f64) -> f64 {
        interpolate(&self.blocks, rows)
    }

    /// The head's pass over `rows` rows, times one row's.
    pub fn head_x(&self, rows: f64) -> f64 {
        interpolate(&self.head, rows)
    }

    /// A whole pass over `rows` rows, times one row's ([`BatchCurve::block_frac`] of
    /// `by_bytes` the blocks' share of one row's).
    pub fn pass_x(&self, rows: f64, by_bytes: f64) -> f64 {
        let f = self.block_frac(by_bytes);
        f * self.blocks_x(rows) + (1.0 - f) * self.head_x(rows)
    }

    /// The linears' share of the blocks' pass over `rows` rows.
    pub fn linear_share_at(&self, rows: f64) -> f64 {
        interpolate(&self.linear_share, rows)
    }

    /// The context's attention's share of the blocks' pass over `rows` rows.
    pub fn context_share_at(&self, rows: f64) -> f64 {
        interpolate(&self.context_share, rows)
    }

    /// The element-wise mean of several nodes' curves (a stage run by a group); the head's
    /// share only where every curve has one.
    pub fn mean(curves: impl Iterator<Item = BatchCurve>) -> BatchCurve {
        let zero = [0.0; 5];
        let mut sum = BatchCurve {
            blocks: zero,
            head: zero,
            linear_share: zero,
            context_share: zero,
            head_share: Some(0.0),
        };
        let mut n = 0.0;
        for c in curves {
            sum.head_share = sum.head_share.zip(c.head_share).map(|(a, b)| a + b);
            for i in 0..5 {
                sum.blocks[i] += c.blocks[i];
                sum.head[i] += c.head[i];
                sum.linear_share[i] += c.linear_share[i];
                sum.context_share[i] += c.context_share[i];
            }
            n += 1.0;
        }
        if n == 0.0 {
            return BatchCurve::linear(0.0);
        }
        let avg = |x: [f64; 5]| x.map(|v| v / n);
        BatchCurve {
            blocks: avg(sum.blocks),
            head: avg(sum.head),
            linear_share: avg(sum.linear_share),
            context_share: avg(sum.context_share),
            head_share: sum.head_share.map(|h| h / n),
        }
    }

    /// Every point finite, the first 1, none below it nor absurdly above; every share a
    /// fraction.
    fn sane(&self) -> bool {
        let shares = self.linear_share.iter().all(|v| (0.01..=1.0).contains(v))
            && self.context_share.iter().all(|v| (0.0..=1.0).contains(v))
            && self.head_share.is_none_or(|h| (0.001..=0.999).contains(&h));
        shares
            && [&self.blocks, &self.head]
                .iter()
                .all(|x| x[0] == 1.0 && x.iter().all(|v| v.is_finite() && (0.5..=64.0).contains(v)))
    }
}

/// Piecewise linear through (CURVE_ROWS[i], x[i]); below one row the first point, beyond the
/// last the last segment extended.
fn interpolate(x: &[f64; 5], rows: f64) -> f64 {
    let r = CURVE_ROWS.map(|r| r as f64);
    if rows <= r[0] {
        return x[0];
    }
    let i = (1..4).find(|&i| rows <= r[i]).unwrap_or(4);
    x[i - 1] + (x[i] - x[i - 1]) * (rows - r[i - 1]) / (r[i] - r[i - 1])
}

/// The shape fields the measurement needs, as a job carries them.
pub(crate) fn shape_words(c: &ModelConfig) -> [u32; 7] {
    [c.hidden, c.layers, c.heads, c.kv_heads, c.head_dim, c.intermediate, c.vocab].map(|v| v as u32)
}

/// A config of the shape in `w` (the fields the measurement reads; the rest are 2B4T's).
pub(crate) fn shape_config(w: [u32; 7]) -> std::result::Result<ModelConfig, String> {
    let [hidden, layers, heads, kv_heads, head_dim, intermediate, vocab] = w.map(|v| v as usize);
    let c = ModelConfig {
        hidden,
        layers,
        heads,
        kv_heads,
        head_dim,
        intermediate,
        vocab,
        ..ModelConfig::bitnet_2b4t()
    };
    let big = [hidden, heads * head_dim, intermediate, vocab].iter().any(|&d| d > 1 << 20);
    if big || layers > 4096 || c.validate().is_err() {
        return Err(format!("a shape the planner cannot measure: {w:?}"));
    }
    Ok(c)
}

/// Knuth's MMIX LCG, high bits: any values do for timing.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }
}

/// Measures this node on `c`'s shape with `threads` threads, decoding after `ctx` positions.
///
/// A measurement whose curve is out of range (a pass preempted by another process: CI once
/// timed one row 5x slower than two on the tiny shape) is taken again, up to
/// [`MEASURE_TRIES`] times, rather than handed to the planner, which refuses such figures.
pub fn measure_node(c: &ModelConfig, threads: usize, ctx: usize) -> Result<NodeMeasure> {
    let mut last = None;
    for _ in 0..MEASURE_TRIES {
        let m = measure_once(c, threads, ctx)?;
        if m.batch.sane() {
            return Ok(m);
        }
        tracing::warn!("speed measurement out of range (another process busy?), measuring again");
        last = Some(m);
    }
    Err(DistError::Usage(format!(
        "speed measurement: out of range {MEASURE_TRIES} times in a row (is the node busy?): {last:?}"
    )))
}

/// How many times [`measure_node`] measures before it gives up on a noisy node.
pub const MEASURE_TRIES: usize = 3;

fn measure_once(c: &ModelConfig, threads: usize, ctx: usize) -> Result<NodeMeasure> {
    let kerr = |e: onebit_kernels::Error| DistError::Usage(format!("speed measurement: {e}"));
    // Room for the context (the shape's positions did not travel with the job).
    let c = &ModelConfig { max_positions: c.max_positions.max(ctx + TIMED_PASSES), ..c.clone() };
    let (h, qd, f) = (c.hidden, c.q_dim(), c.intermediate);
    let merr = |e: onebit_model::Error| DistError::Usage(format!("speed measurement: {e}"));
    // One set of blocks for both timings: the engine's pass and the linears alone.
    let model = onebit_model::synthetic::timing_blocks(c, TernaryFormat::T2, 256 << 20, threads)
        .map_err(merr)?;
    let pool = &model.pool;
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
    let head = Q8Matrix::from_row_fn(c.vocab, h, |_, row| {
        row.iter_mut().for_each(|v| *v = (rng.next() % 255) as f32 - 127.0)
    });
    let rows_max = CURVE_ROWS[4];
    let values = |n: usize, rng: &mut Lcg| -> Vec<f32> {
        (0..rows_max * n).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect()
    };
    let inputs = [values(h, &mut rng), values(qd, &mut rng), values(f, &mut rng)];
    let mut out = vec![0f32; rows_max * f.max(qd).max(h).max(c.vocab)];
    // Seconds of the blocks' pass and of the head's over `rows` rows (medians of three). A
    // block quantizes its four inputs as the engine does (that work grows with the rows too).
    let mut median = |rows: usize| -> Result<(f64, f64)> {
        let mut xs = [h, qd, f].map(|n| ActQuant::new(rows, n));
        let mut pass = || -> Result<(Duration, Duration)> {
            let t = Instant::now();
            for l in 0..c.layers {
                for (i, lin) in model.layers[l].linears().into_iter().enumerate() {
                    let (r, k) = (lin.w.rows(), lin.w.cols());
                    let which = if k == h {
                        0
                    } else if k == qd {
                        1
                    } else {
                        2
                    };
                    // q/k/v share one quantized input; o, gate (with up) and down each
                    // quantize their own.
                    if matches!(i, 0 | 3 | 4 | 6) {
                        xs[which].quantize(&inputs[which][..rows * k]);
                    }
                    matmul(pool, lin.kernel(), &lin.w, &xs[which], &mut out[..rows * r])
                        .map_err(kerr)?;
                }
            }
            let blocks_t = t.elapsed();
            let t = Instant::now();
            xs[0].quantize(&inputs[0][..rows * h]);
            q8_matmul(pool, &head, &xs[0], &mut out[..rows * c.vocab]).map_err(kerr)?;
            Ok((blocks_t, t.elapsed()))
        };
        pass()?;
        let times = (0..3).map(|_| pass()).collect::<Result<Vec<_>>>()?;
        let mid = |part: fn(&(Duration, Duration)) -> Duration| {
            let mut v: Vec<Duration> = times.iter().map(part).collect();
            v.sort();
            v[1].as_secs_f64()
        };
        Ok((mid(|t| t.0), mid(|t| t.1)))
    };
    let mut points = [(0.0, 0.0); 5];
    for (p, &rows) in points.iter_mut().zip(&CURVE_ROWS) {
        *p = median(rows)?;
    }
    let engine = engine_blocks(&model, ctx)?;
    // Attention over a context: what the pass after `ctx` positions takes beyond a fresh
    // cache's. Tensor parallelism splits it by heads as it splits the linears.
    let fresh = if ctx > 0 { engine_blocks(&model, 0)? } else { engine };
    let (e1, h1) = (engine[0], points[0].1);
    // Noise can put the linears alone above the engine's whole pass.
    let linear_share: [f64; 5] =
        std::array::from_fn(|i| (points[i].0 / engine[i]).clamp(0.05, 1.0));
    let context_share = std::array::from_fn(|i| {
        ((engine[i] - fresh[i]).max(0.0) / engine[i]).min(1.0 - linear_share[i])
    });
    let batch = BatchCurve {
        blocks: engine.map(|e| e / e1),
        head: points.map(|p| p.1 / h1),
        linear_share,
        context_share,
        head_share: Some(h1 / (e1 + h1)),
    };
    let token_s = e1 + h1;
    let mem_bytes = onebit_kernels::machine::available_memory().unwrap_or(0);
    Ok(NodeMeasure { token_s, mem_bytes, batch })
}

/// Timed passes per point of the engine's curve (the first a warm-up).
pub const TIMED_PASSES: usize = 4;

/// Rows per pass while the measurement fills the sequences' context.
const FILL_ROWS: usize = 64;

/// Seconds of the engine's own pass over every block of `c`'s shape at each of
/// [`CURVE_ROWS`] rows (medians of three after a warm-up), each row a sequence of its own
/// decoding after `ctx` positions (filled once, untimed; each point starts again from there):
/// the linears, attention over the cache and everything around them.
fn engine_blocks(model: &onebit_model::Model, ctx: usize) -> Result<[f64; 5]> {
    let merr = |e: onebit_model::Error| DistError::Usage(format!("speed measurement: {e}"));
    let c = &model.config;
    let rows_max = CURVE_ROWS[4];
    let o = SessionOptions {
        max_ctx: ctx + TIMED_PASSES,
        max_batch: rows_max.max(if ctx > 0 { FILL_ROWS } else { 0 }),
        slots: rows_max,
        kv: KvDtype::F16,
    };
    let mut session = Session::try_with_options(model, o).map_err(merr)?;
    let mut rng = Lcg(0x2545_F491_4F6C_DD1D);
    let wide = rows_max.max(FILL_ROWS);
    let x: Vec<f32> =
        (0..wide * c.hidden).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect();
    if ctx > 0 {
        tracing::info!("filling {rows_max} sequences with {ctx} positions before timing");
    }
    for slot in 0..rows_max {
        let mut left = ctx;
        while left > 0 {
            let n = left.min(FILL_ROWS);
            session.stage(StageInput::Hidden(&x[..n * c.hidden]), &vec![slot; n]).map_err(merr)?;
            left -= n;
        }
    }
    let slots: Vec<usize> = (0..rows_max).collect();
    let mut out = [0.0; 5];
    for (o, &rows) in out.iter_mut().zip(&CURVE_ROWS) {
        for s in 0..rows_max {
            session.truncate_slot(s, ctx).map_err(merr)?;
        }
        let mut times = Vec::with_capacity(TIMED_PASSES);
        for _ in 0..TIMED_PASSES {
            let t = Instant::now();
            session
                .stage(StageInput::Hidden(&x[..rows * c.hidden]), &slots[..rows])
                .map_err(merr)?;
            times.push(t.elapsed());
        }
        times[1..].sort();
        *o = times[2].as_secs_f64();
    }
    Ok(out)
}

/// Every rank measures itself in turn (rank 0 first, each decoding after `ctx` positions) and
/// all ranks get every figure.
pub fn measure_mesh(
    comm: &mut dyn Comm,
    c: &ModelConfig,
    threads: usize,
    ctx: usize,
    deadline: Instant,
) -> Result<Vec<NodeMeasure>> {
    let mut mine = None;
    for r in 0..comm.size() {
        if r == comm.rank() {
            mine = Some(measure_node(c, threads, ctx)?);
        }
        barrier(comm, deadline)?;
    }
    let m = mine.expect("every rank measures in its turn");
    let mut all = Vec::new();
    all_gather(comm, &encode_measure(&m), &mut all, deadline)?;
    all.iter()
        .enumerate()
        .map(|(r, b)| {
            decode_measure(b).map_err(|why| DistError::Frame { peer: r.to_string(), why })
        })
        .collect()
}

/// Bytes of an encoded [`NodeMeasure`]: seconds per token, memory, the curve's ten points,
/// the five linear shares, the five context shares, the head's share (NaN: none).
const MEASURE_BYTES: usize = 8 * 23;

fn encode_measure(m: &NodeMeasure) -> Vec<u8> {
    let mut b = m.token_s.to_le_bytes().to_vec();
    b.extend(m.mem_bytes.to_le_bytes());
    let c = &m.batch;
    for v in c.blocks.iter().chain(&c.head).chain(&c.linear_share).chain(&c.context_share) {
        b.extend(v.to_le_bytes());
    }
    b.extend(c.head_share.unwrap_or(f64::NAN).to_le_bytes());
    b
}

fn decode_measure(b: &[u8]) -> std::result::Result<NodeMeasure, String> {
    if b.len() != MEASURE_BYTES {
        return Err(format!("a node measure of {} bytes", b.len()));
    }
    let word = |i: usize| <[u8; 8]>::try_from(&b[8 * i..8 * i + 8]).expect("8 bytes");
    let f = |i: usize| f64::from_le_bytes(word(i));
    let token_s = f(0);
    let batch = BatchCurve {
        blocks: std::array::from_fn(|i| f(2 + i)),
        head: std::array::from_fn(|i| f(7 + i)),
        linear_share: std::array::from_fn(|i| f(12 + i)),
        context_share: std::array::from_fn(|i| f(17 + i)),
        head_share: Some(f(22)).filter(|h| !h.is_nan()),
    };
    if !(token_s.is_finite() && token_s > 0.0 && batch.sane()) {
        return Err("a speed out of range".into());
    }
    Ok(NodeMeasure { token_s, mem_bytes: u64::from_le_bytes(word(1)), batch })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_shape_measures_a_positive_time_and_shapes_round_trip() {
        let c = ModelConfig::preset("tiny").unwrap();
        let m = measure_node(&c, 1, 0).unwrap();
        assert!(m.token_s > 0.0 && m.token_s < 1.0, "{m:?}");
        let back = shape_config(shape_words(&c)).unwrap();
        assert_eq!(shape_words(&back), shape_words(&c));
        assert!(shape_config([0, 1, 1, 1, 1, 1, 1]).is_err());
        assert!(shape_config([u32::MAX; 7]).is_err());
        assert!(m.batch.sane(), "{m:?}");
        assert!(m.batch.head_share.is_some_and(|h| h > 0.0 && h < 1.0), "{m:?}");
        assert_eq!(decode_measure(&encode_measure(&m)), Ok(m));
        // After a context longer than the tiny shape's positions and than one fill pass: the
        // session is sized for it and every point starts from the same context.
        let ctx = c.max_positions + FILL_ROWS + 3;
        let long = measure_node(&c, 1, ctx).unwrap();
        assert!(long.batch.sane() && long.token_s > 0.0, "{long:?}");
        assert_eq!(m.batch.context_share, [0.0; 5], "no context, no share");
    }

    #[test]
    fn the_curve_interpolates_between_its_points_and_extends_the_last_segment() {
        let c = BatchCurve {
            blocks: [1.0, 1.5, 1.8, 2.2, 3.0],
            head: [1.0, 1.1, 1.2, 1.4, 1.8],
            linear_share: [0.9, 0.88, 0.85, 0.8, 0.75],
            context_share: [0.05, 0.06, 0.08, 0.1, 0.2],
            head_share: Some(0.25),
        };
        assert_eq!(c.blocks_x(1.0), 1.0);
        assert!((c.context_share_at(12.0) - 0.15).abs() < 1e-12);
        assert_eq!(c.blocks_x(0.5), 1.0);
        assert_eq!(c.blocks_x(3.0), 1.65);
        assert!((c.blocks_x(6.0) - 2.0).abs() < 1e-12);
        assert!((c.blocks_x(24.0) - 3.8).abs() < 1e-12);
        assert!((c.head_x(16.0) - 1.8).abs() < 1e-12);
        // The measured head share, not the bytes' (0.5 here), weighs the two curves.
        assert!((c.pass_x(4.0, 0.5) - (0.75 * 1.8 + 0.25 * 1.2)).abs() < 1e-12);
        let l = BatchCurve::linear(0.25);
        assert!((l.pass_x(3.0, 0.6) - (0.6 * 1.5 + 0.4 * 1.5)).abs() < 1e-12);
        assert_eq!((l.block_frac(0.6), c.block_frac(0.6)), (0.6, 0.75));
        assert!((l.blocks_x(8.0) - 2.75).abs() < 1e-12 && (l.head_x(11.0) - 3.5).abs() < 1e-12);
        let m = BatchCurve::mean([c, l].into_iter());
        assert!((m.blocks[4] - (3.0 + 4.75) / 2.0).abs() < 1e-12);
        assert!((m.context_share[4] - 0.1).abs() < 1e-12);
        assert_eq!(m.head_share, None, "one curve without a measured head share");
        let both = BatchCurve::mean([c, BatchCurve { head_share: Some(0.35), ..c }].into_iter());
        assert!((both.head_share.unwrap() - 0.3).abs() < 1e-12);
        let good = NodeMeasure { token_s: 0.05, mem_bytes: 7 << 30, batch: c };
        let bytes = encode_measure(&good);
        assert_eq!(decode_measure(&bytes), Ok(good));
        assert!(decode_measure(&bytes[..90]).is_err());
        let mut bad = bytes.clone();
        bad[8 * 16..8 * 17].copy_from_slice(&1.5f64.to_le_bytes()); // a share above the whole
        assert!(decode_measure(&bad).is_err());
        let mut bad = bytes.clone();
        bad[8 * 21..8 * 22].copy_from_slice(&(-0.1f64).to_le_bytes()); // a negative context share
        assert!(decode_measure(&bad).is_err());
        let mut bad = bytes.clone();
        bad[8 * 22..].copy_from_slice(&1.0f64.to_le_bytes()); // a pass all head
        assert!(decode_measure(&bad).is_err());
        let mut none = bytes.clone();
        none[8 * 22..].copy_from_slice(&f64::NAN.to_le_bytes());
        assert_eq!(decode_measure(&none).unwrap().batch.head_share, None);
        let mut bad = bytes.clone();
        bad[16..24].copy_from_slice(&2.0f64.to_le_bytes()); // a first point other than 1
        assert!(decode_measure(&bad).unwrap_err().contains("out of range"));
        bad[..8].copy_from_slice(&f64::NAN.to_le_bytes());
        assert!(decode_measure(&bad).is_err());
    }
}
