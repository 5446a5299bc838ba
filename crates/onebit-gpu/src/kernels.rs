//! Single kernels run once on host data: what the tests compare bit for bit against the
//! CPU's scalar kernels, and what a kernel benchmark times. Each call uploads its inputs,
//! launches one kernel and reads the output back.

use crate::context::GpuContext;
use crate::error::{Error, Result};
use crate::ops::{uniform, AqP, Grid, Kernel, MatP, Op, Quad};
use crate::pack::{
    act_stride, act_words, codes_of_act_words, head_row_words, head_rows, pack_ternary,
    ternary_words,
};
use crate::weights::storage;
use onebit_kernels::{ActQuant, Q8Matrix, TernaryMatrix};

/// Launches `op` over `n` rows and reads back `bytes` of `out`.
fn run(ctx: &GpuContext, op: &Op, n: u32, out: &wgpu::Buffer, bytes: usize) -> Result<Vec<u8>> {
    use wgpu::BufferUsages as U;
    let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read"),
        size: bytes.max(4) as u64,
        usage: U::MAP_READ | U::COPY_DST,
        mapped_at_creation: false,
    });
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        op.record(&ctx.pipes, &mut pass, n);
    }
    enc.copy_buffer_to_buffer(out, 0, &read, 0, bytes as u64);
    ctx.queue.submit([enc.finish()]);
    let slice = read.slice(..bytes as u64);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Device(format!("waiting for the device: {e:?}")))?;
    rx.recv()
        .map_err(|_| Error::Device("the readback was dropped".into()))?
        .map_err(|e| Error::Device(format!("reading back: {e}")))?;
    let v = slice.get_mapped_range().to_vec();
    Ok(v)
}

fn zeros(ctx: &GpuContext, bytes: usize) -> wgpu::Buffer {
    storage(ctx, "out", &vec![0u8; bytes.max(4)])
}

fn matmul(
    ctx: &GpuContext,
    kernel: Kernel,
    (w, scale, rows, kw): (Vec<u32>, Vec<f32>, usize, usize),
    x: &ActQuant,
    tiled_from: Option<u32>,
) -> Result<Vec<f32>> {
    let n = x.tokens();
    let p = MatP {
        rows: rows as u32,
        kw: kw as u32,
        out_stride: rows as u32,
        accumulate: 0,
        act_stride: act_stride(x.cols()) as u32,
        row_base: 0,
        pad: [0; 2],
    };
    let out = zeros(ctx, n * rows * 4);
    let bufs = [
        uniform(ctx, &Quad([n as u32, 0, 0, 0])),
        uniform(ctx, &p),
        storage(ctx, "w", &w),
        storage(ctx, "scale", &scale),
        storage(ctx, "act", &act_words(x)),
        storage(ctx, "act scales", x.scales()),
        storage(ctx, "act sums", x.sums()),
    ];
    let refs: Vec<&wgpu::Buffer> = bufs.iter().chain([&out]).collect();
    let mut op = Op::new(ctx, kernel, Grid::Matmul { rows: rows as u32 }, &refs);
    if let Some(from) = tiled_from {
        op.tiled_from = from;
    }
    Ok(bytemuck::cast_slice(&run(ctx, &op, n as u32, &out, n * rows * 4)?).to_vec())
}

/// `out[t][r] = Σ_k T[r][k]·q[t][k] · scale / a_t` on the device, by the kernel a pass of
/// `x.tokens()` rows would use (the tiled one from 16 tokens up).
pub fn ternary_matmul(ctx: &GpuContext, m: &TernaryMatrix, x: &ActQuant) -> Result<Vec<f32>> {
    ternary_with(ctx, m, x, None)
}

/// [`ternary_matmul`] on the chosen kernel whatever the token count: the tiled one
/// (`tiled`) or the row one.
pub fn ternary_matmul_on(
    ctx: &GpuContext,
    m: &TernaryMatrix,
    x: &ActQuant,
    tiled: bool,
) -> Result<Vec<f32>> {
    ternary_with(ctx, m, x, Some(if tiled { 0 } else { u32::MAX }))
}

fn ternary_with(
    ctx: &GpuContext,
    m: &TernaryMatrix,
    x: &ActQuant,
    tiled_from: Option<u32>,
) -> Result<Vec<f32>> {
    let (rows, cols) = (m.rows(), m.cols());
    let w = pack_ternary(&m.to_trits(), rows, cols);
    let args = (w, vec![m.scale(); rows], rows, ternary_words(cols));
    matmul(ctx, Kernel::Ternary, args, x, tiled_from)
}

/// `out[t][r] = (Σ_k W[r][k]·q[t][k]) · row_scale[r] / a_t` on the device (the head kernel).
pub fn int8_matmul(ctx: &GpuContext, m: &Q8Matrix, x: &ActQuant) -> Result<Vec<f32>> {
    let (w, scale) = head_rows(m, 0..m.rows());
    matmul(ctx, Kernel::Int8, (w, scale, m.rows(), head_row_words(m.cols())), x, None)
}

/// Per-token int8 quantization of `x` (`tokens x cols`) on the device, after RMSNorm with
/// `norm` when given: the int8 rows, the scales and the sums.
pub fn act_quant(
    ctx: &GpuContext,
    x: &[f32],
    cols: usize,
    norm: Option<(&[f32], f32)>,
) -> Result<(Vec<i8>, Vec<f32>, Vec<i32>)> {
    let n = x.len() / cols;
    let stride = act_stride(cols);
    let p = AqP {
        cols: cols as u32,
        in_stride: cols as u32,
        in_off: 0,
        mode: 0,
        norm: norm.is_some() as u32,
        act_stride: stride as u32,
        eps: norm.map_or(0.0, |n| n.1),
        gather: 0,
        up_off: 0,
        pad: [0; 3],
    };
    let ones = vec![1.0f32; cols];
    let (act, scales, sums) = (zeros(ctx, n * stride * 4), zeros(ctx, n * 4), zeros(ctx, n * 4));
    let bufs = [
        uniform(ctx, &Quad([n as u32, 0, 0, 0])),
        uniform(ctx, &p),
        storage(ctx, "x", x),
        storage(ctx, "w", norm.map_or(&ones[..], |n| n.0)),
        zeros(ctx, 4),
        zeros(ctx, n * cols * 4),
    ];
    let refs: Vec<&wgpu::Buffer> = bufs.iter().chain([&act, &scales, &sums]).collect();
    let op = Op::new(ctx, Kernel::ActQuant, Grid::Rows, &refs);
    let words: Vec<u32> =
        bytemuck::cast_slice(&run(ctx, &op, n as u32, &act, n * stride * 4)?).to_vec();
    let q = codes_of_act_words(&words, n, cols);
    let a = bytemuck::cast_slice(&run(ctx, &op, n as u32, &scales, n * 4)?).to_vec();
    let s = bytemuck::cast_slice(&run(ctx, &op, n as u32, &sums, n * 4)?).to_vec();
    Ok((q, a, s))
}

/// The token each row of `logits` gives by its draw (`draws[i]`, penalized tokens from
/// `penalized`) on the device's sampler: what the host's `Sampler::pick` picks. The draws
/// must have temperature > 0 and a top-k of at most `onebit_model::DEVICE_TOP_K`.
pub fn sample(
    ctx: &GpuContext,
    logits: &[f32],
    vocab: usize,
    draws: &[onebit_model::Draw],
    penalized: &[u32],
) -> Result<Vec<u32>> {
    let n = logits.len() / vocab;
    let ids = zeros(ctx, n * 4);
    let recs: Vec<[u32; 12]> = draws.iter().map(crate::engine::draw_words).collect();
    let bufs = [
        uniform(ctx, &Quad([n as u32, 0, 0, 0])),
        uniform(ctx, &Quad([vocab as u32, 0, 0, 0])),
        storage(ctx, "logits", logits),
        storage(ctx, "draws", &recs),
        storage(ctx, "penalized", &[penalized, &[0]].concat()),
    ];
    let refs: Vec<&wgpu::Buffer> = bufs.iter().chain([&ids]).collect();
    let op = Op::new(ctx, Kernel::Sample, Grid::Rows, &refs);
    Ok(bytemuck::cast_slice(&run(ctx, &op, n as u32, &ids, n * 4)?).to_vec())
}

/// The index of the largest value of each row of `logits` (the lowest among equals).
pub fn argmax(ctx: &GpuContext, logits: &[f32], vocab: usize) -> Result<Vec<u32>> {
    let n = logits.len() / vocab;
    let ids = zeros(ctx, n * 4);
    let bufs = [
        uniform(ctx, &Quad([n as u32, 0, 0, 0])),
        uniform(ctx, &Quad([vocab as u32, 0, 0, 0])),
        storage(ctx, "logits", logits),
    ];
    let refs: Vec<&wgpu::Buffer> = bufs.iter().chain([&ids]).collect();
    let op = Op::new(ctx, Kernel::Argmax, Grid::Rows, &refs);
    Ok(bytemuck::cast_slice(&run(ctx, &op, n as u32, &ids, n * 4)?).to_vec())
}
