//! Single CUDA kernels run once on host data, as `crate::kernels` does for wgpu: what the
//! tests compare bit for bit against the CPU's scalar kernels. Each call uploads its inputs,
//! launches one kernel and reads the output back.

use super::CudaDevice;
use crate::error::{Error, Result};
use crate::pack::{
    act_stride, act_words, codes_of_act_words, head_row_words, head_rows, pack_ternary,
    ternary_words,
};
use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg, ValidAsZeroBits};
use onebit_kernels::{ActQuant, Q8Matrix, TernaryMatrix};

/// Indices into `CudaDevice::funcs` (the order of `KERNEL_NAMES`).
const TERNARY: usize = 0;
const INT8: usize = 1;
const ACT_QUANT: usize = 2;
const ARGMAX: usize = 3;

fn err(e: cudarc::driver::DriverError) -> Error {
    Error::Device(format!("CUDA: {e}"))
}

fn up<T: DeviceRepr>(d: &CudaDevice, v: &[T]) -> Result<CudaSlice<T>> {
    d.stream.clone_htod(v).map_err(err)
}

fn zeros<T: DeviceRepr + ValidAsZeroBits>(d: &CudaDevice, n: usize) -> Result<CudaSlice<T>> {
    d.stream.alloc_zeros(n.max(1)).map_err(err)
}

fn down<T: DeviceRepr + Default + Clone>(
    d: &CudaDevice,
    s: &CudaSlice<T>,
    n: usize,
) -> Result<Vec<T>> {
    let mut v = d.stream.clone_dtoh(s).map_err(err)?;
    v.truncate(n);
    Ok(v)
}

fn matmul(
    d: &CudaDevice,
    func: usize,
    (w, scale, rows, kw): (Vec<u32>, Vec<f32>, usize, usize),
    x: &ActQuant,
) -> Result<Vec<f32>> {
    let n = x.tokens();
    if n == 0 || rows == 0 {
        return Ok(vec![0.0; n * rows]);
    }
    let (w, scale) = (up(d, &w)?, up(d, &scale)?);
    let act = up(d, &act_words(x))?;
    let (scales, sums) = (up(d, x.scales())?, up(d, x.sums())?);
    let mut out = zeros::<f32>(d, n * rows)?;
    let (n32, rows32, kw32) = (n as u32, rows as u32, kw as u32);
    let (stride, zero) = (act_stride(x.cols()) as u32, 0u32);
    let cfg = LaunchConfig {
        grid_dim: (rows.div_ceil(8) as u32, n.div_ceil(8) as u32, 1),
        block_dim: (64, 1, 1),
        shared_mem_bytes: 0,
    };
    let mut b = d.stream.launch_builder(&d.funcs[func]);
    b.arg(&w).arg(&scale).arg(&act).arg(&scales).arg(&sums).arg(&mut out);
    b.arg(&n32).arg(&rows32).arg(&kw32).arg(&rows32).arg(&zero).arg(&stride).arg(&zero);
    // SAFETY: the argument list matches the kernel's signature in kernels.cu, and every
    // buffer is at least as long as the grid reads or writes (rows x kw weight words,
    // n x stride activation words, n x rows outputs).
    unsafe { b.launch(cfg) }.map_err(err)?;
    down(d, &out, n * rows)
}

/// `out[t][r] = Σ_k T[r][k]·q[t][k] · scale / a_t` on a CUDA device (the ternary kernel).
pub fn ternary_matmul(d: &CudaDevice, m: &TernaryMatrix, x: &ActQuant) -> Result<Vec<f32>> {
    let (rows, cols) = (m.rows(), m.cols());
    let w = pack_ternary(&m.to_trits(), rows, cols);
    matmul(d, TERNARY, (w, vec![m.scale(); rows], rows, ternary_words(cols)), x)
}

/// `out[t][r] = (Σ_k W[r][k]·q[t][k]) · row_scale[r] / a_t` on a CUDA device (the head).
pub fn int8_matmul(d: &CudaDevice, m: &Q8Matrix, x: &ActQuant) -> Result<Vec<f32>> {
    let (w, scale) = head_rows(m, 0..m.rows());
    matmul(d, INT8, (w, scale, m.rows(), head_row_words(m.cols())), x)
}

/// Per-token int8 quantization of `x` (`tokens x cols`) on a CUDA device, after RMSNorm
/// with `norm` when given: the int8 rows, the scales and the sums.
pub fn act_quant(
    d: &CudaDevice,
    x: &[f32],
    cols: usize,
    norm: Option<(&[f32], f32)>,
) -> Result<(Vec<i8>, Vec<f32>, Vec<i32>)> {
    let n = x.len() / cols.max(1);
    if n == 0 {
        return Ok((Vec::new(), Vec::new(), Vec::new()));
    }
    let stride = act_stride(cols);
    let ones = vec![1.0f32; cols];
    let (xs, w) = (up(d, x)?, up(d, norm.map_or(&ones[..], |n| n.0))?);
    let (gather, mut tmp) = (zeros::<u32>(d, 1)?, zeros::<f32>(d, n * cols)?);
    let mut act = zeros::<u32>(d, n * stride)?;
    let (mut scales, mut sums) = (zeros::<f32>(d, n)?, zeros::<i32>(d, n)?);
    let (n32, cols32, stride32, zero) = (n as u32, cols as u32, stride as u32, 0u32);
    let (use_norm, eps) = (norm.is_some() as u32, norm.map_or(0.0f32, |n| n.1));
    let cfg =
        LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = d.stream.launch_builder(&d.funcs[ACT_QUANT]);
    b.arg(&xs).arg(&w).arg(&gather).arg(&mut tmp).arg(&mut act).arg(&mut scales).arg(&mut sums);
    b.arg(&n32).arg(&cols32).arg(&cols32).arg(&zero).arg(&zero).arg(&use_norm);
    b.arg(&stride32).arg(&eps).arg(&zero).arg(&zero);
    // SAFETY: arguments in the kernel's order; x and tmp hold n x cols floats, act n x stride
    // words, scales and sums n values; gather is not read (gather = 0).
    unsafe { b.launch(cfg) }.map_err(err)?;
    let words = down(d, &act, n * stride)?;
    let q = codes_of_act_words(&words, n, cols);
    Ok((q, down(d, &scales, n)?, down(d, &sums, n)?))
}

/// The index of the largest value of each row of `logits` (the lowest among equals).
pub fn argmax(d: &CudaDevice, logits: &[f32], vocab: usize) -> Result<Vec<u32>> {
    let n = logits.len() / vocab.max(1);
    if n == 0 {
        return Ok(Vec::new());
    }
    let l = up(d, logits)?;
    let mut ids = zeros::<u32>(d, n)?;
    let (n32, v32) = (n as u32, vocab as u32);
    let cfg =
        LaunchConfig { grid_dim: (n as u32, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 };
    let mut b = d.stream.launch_builder(&d.funcs[ARGMAX]);
    b.arg(&l).arg(&mut ids).arg(&n32).arg(&v32);
    // SAFETY: arguments in the kernel's order; logits hold n x vocab floats, ids n values.
    unsafe { b.launch(cfg) }.map_err(err)?;
    down(d, &ids, n)
}
