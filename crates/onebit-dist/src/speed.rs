//! Measuring a node for the planner: how long it takes to decode one token of a model's shape
//! alone, and how much memory it can give. The figure is measured, not assumed from core
//! counts: every linear of a block at the model's shapes (random trits in the T2 layout) and
//! the int8 head, in as many distinct copies of the block as it takes to exceed 256 MiB, so
//! weights stream from memory as in a real decode rather than sit in cache. Attention is left
//! out (a few % at short contexts). On a mesh the nodes measure one after another, so nodes
//! that share a machine (the loopback tests) do not slow each other down.

use crate::collective::{all_gather, barrier};
use crate::comm::Comm;
use crate::error::{DistError, Result};
use onebit_kernels::head::q8_matmul;
use onebit_kernels::{
    matmul, ActQuant, Kernel, Q8Matrix, TernaryFormat, TernaryMatrix, ThreadPool,
};
use onebit_model::ModelConfig;
use std::time::{Duration, Instant};

/// A node as measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeMeasure {
    /// Seconds to decode one token of the whole model alone.
    pub token_s: f64,
    /// Bytes of memory available.
    pub mem_bytes: u64,
    /// Extra time per additional sequence in one pass, as a fraction of `token_s`, from a
    /// pass over [`BATCH_ROWS`] rows.
    pub batch_slope: f64,
}

/// Rows of the batched pass that measures the batch slope.
pub const BATCH_ROWS: usize = 8;

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

/// Measures this node on `c`'s shape with `threads` threads.
pub fn measure_node(c: &ModelConfig, threads: usize) -> Result<NodeMeasure> {
    let kerr = |e: onebit_kernels::Error| DistError::Usage(format!("speed measurement: {e}"));
    let pool = ThreadPool::new(threads.max(1));
    let (h, qd, kvd, f) = (c.hidden, c.q_dim(), c.kv_dim(), c.intermediate);
    let shapes = [(qd, h), (kvd, h), (kvd, h), (h, qd), (f, h), (f, h), (h, f)];
    let mut rng = Lcg(0x9E37_79B9_7F4A_7C15);
    let first = shapes
        .iter()
        .map(|&(r, k)| {
            let trits: Vec<i8> = (0..r * k).map(|_| (rng.next() % 3) as i8 - 1).collect();
            TernaryMatrix::from_trits(TernaryFormat::T2, r, k, &trits, 1.0)
        })
        .collect::<onebit_kernels::Result<Vec<_>>>()
        .map_err(kerr)?;
    let block_bytes: usize = first.iter().map(|m| m.bytes().len()).sum();
    let copies = (256usize << 20).div_ceil(block_bytes.max(1)).clamp(1, c.layers.max(1));
    let mut blocks = vec![first];
    for _ in 1..copies {
        let copy = blocks[0]
            .iter()
            .zip(&shapes)
            .map(|(m, &(r, k))| {
                TernaryMatrix::from_bytes(TernaryFormat::T2, r, k, m.bytes().to_vec(), Some(1.0))
            })
            .collect::<onebit_kernels::Result<Vec<_>>>()
            .map_err(kerr)?;
        blocks.push(copy);
    }
    let head = Q8Matrix::from_row_fn(c.vocab, h, |_, row| {
        row.iter_mut().for_each(|v| *v = (rng.next() % 255) as f32 - 127.0)
    });
    let kernel = Kernel::best(TernaryFormat::T2).map_err(kerr)?;
    let act = |rows: usize, n: usize, rng: &mut Lcg| {
        let mut a = ActQuant::new(rows, n);
        let x: Vec<f32> =
            (0..rows * n).map(|_| (rng.next() % 2001) as f32 / 1000.0 - 1.0).collect();
        a.quantize(&x);
        a
    };
    let mut out = vec![0f32; BATCH_ROWS * f.max(qd).max(h).max(c.vocab)];
    let mut median = |rows: usize| -> Result<f64> {
        let xs = [act(rows, h, &mut rng), act(rows, qd, &mut rng), act(rows, f, &mut rng)];
        let mut pass = || -> Result<Duration> {
            let t = Instant::now();
            for l in 0..c.layers {
                for (m, &(r, k)) in blocks[l % copies].iter().zip(&shapes) {
                    let x = &xs[if k == h {
                        0
                    } else if k == qd {
                        1
                    } else {
                        2
                    }];
                    matmul(&pool, &kernel, m, x, &mut out[..rows * r]).map_err(kerr)?;
                }
            }
            q8_matmul(&pool, &head, &xs[0], &mut out[..rows * c.vocab]).map_err(kerr)?;
            Ok(t.elapsed())
        };
        pass()?;
        let mut times = (0..3).map(|_| pass()).collect::<Result<Vec<_>>>()?;
        times.sort();
        Ok(times[1].as_secs_f64())
    };
    let token_s = median(1)?;
    let batch_s = median(BATCH_ROWS)?;
    let batch_slope = ((batch_s / token_s - 1.0) / (BATCH_ROWS - 1) as f64).max(0.0);
    let mem_bytes = onebit_kernels::machine::available_memory().unwrap_or(0);
    Ok(NodeMeasure { token_s, mem_bytes, batch_slope })
}

/// Every rank measures itself in turn (rank 0 first) and all ranks get every figure.
pub fn measure_mesh(
    comm: &mut dyn Comm,
    c: &ModelConfig,
    threads: usize,
    deadline: Instant,
) -> Result<Vec<NodeMeasure>> {
    let mut mine = None;
    for r in 0..comm.size() {
        if r == comm.rank() {
            mine = Some(measure_node(c, threads)?);
        }
        barrier(comm, deadline)?;
    }
    let m = mine.expect("every rank measures in its turn");
    let mut bytes = m.token_s.to_le_bytes().to_vec();
    bytes.extend(m.mem_bytes.to_le_bytes());
    bytes.extend(m.batch_slope.to_le_bytes());
    let mut all = Vec::new();
    all_gather(comm, &bytes, &mut all, deadline)?;
    all.iter()
        .enumerate()
        .map(|(r, b)| match <[u8; 24]>::try_from(&b[..]) {
            Ok(b) => {
                let token_s = f64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
                let mem_bytes = u64::from_le_bytes(b[8..16].try_into().expect("8 bytes"));
                let batch_slope = f64::from_le_bytes(b[16..].try_into().expect("8 bytes"));
                let sane = token_s.is_finite() && token_s > 0.0;
                if sane && batch_slope.is_finite() && (0.0..=16.0).contains(&batch_slope) {
                    Ok(NodeMeasure { token_s, mem_bytes, batch_slope })
                } else {
                    Err(DistError::Frame {
                        peer: r.to_string(),
                        why: "a speed out of range".into(),
                    })
                }
            }
            Err(_) => Err(DistError::Frame {
                peer: r.to_string(),
                why: format!("a node measure of {} bytes", b.len()),
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_shape_measures_a_positive_time_and_shapes_round_trip() {
        let c = ModelConfig::preset("tiny").unwrap();
        let m = measure_node(&c, 1).unwrap();
        assert!(m.token_s > 0.0 && m.token_s < 1.0, "{m:?}");
        let back = shape_config(shape_words(&c)).unwrap();
        assert_eq!(shape_words(&back), shape_words(&c));
        assert!(shape_config([0, 1, 1, 1, 1, 1, 1]).is_err());
        assert!(shape_config([u32::MAX; 7]).is_err());
    }
}
