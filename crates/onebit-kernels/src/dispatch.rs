//! CPU features detected once, the table of kernels per (format, ISA), the safe entry point
//! [`matmul`] that checks operands once and splits rows over the pool, and a quick
//! self-tune that times every kernel this CPU can run on a given shape.
//!
//! This is the only place that turns kernel function pointers into calls: the one
//! `unsafe` call is justified by the feature check made when the [`Kernel`] was built.

use crate::error::{Error, Result};
use crate::format::{lut, TernaryFormat, TernaryMatrix};
use crate::gemv::{MatmulArgs, MatmulFn};
use crate::pool::{split, ThreadPool};
use crate::quant::ActQuant;
use std::sync::OnceLock;
use std::time::Instant;

/// Instruction-set level of a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust, the definition of correct.
    Scalar,
    /// x86-64 AVX2.
    Avx2,
    /// x86-64 AVX-512 F/BW with VNNI (B3 also needs VBMI).
    Avx512,
    /// AVX-512 row kernels plus AMX-INT8 tiles for many tokens.
    Amx,
    /// aarch64 NEON.
    Neon,
    /// aarch64 NEON with the dot-product extension.
    NeonDot,
}

impl Isa {
    /// Every ISA.
    pub const ALL: [Isa; 6] =
        [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Amx, Isa::Neon, Isa::NeonDot];

    /// Lower-case name (`--kernel`, `ONEBIT_KERNEL`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
            Isa::Neon => "neon",
            Isa::NeonDot => "neon-dot",
        }
    }

    /// Parses [`Isa::name`].
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|i| i.name() == s)
    }

    /// The ISA `ONEBIT_KERNEL` names (`None` when it is unset or empty, as
    /// `ONEBIT_KERNEL= onebit ...` leaves it).
    pub fn requested() -> Result<Option<Isa>> {
        match std::env::var("ONEBIT_KERNEL") {
            Ok(name) if name.trim().is_empty() => Ok(None),
            Ok(name) => Isa::from_name(name.trim()).map(Some).ok_or_else(|| {
                let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
                Error::UnknownKernel(name, names.join(", "))
            }),
            Err(_) => Ok(None),
        }
    }

    /// The ISA every kernel family runs at in this process: the one `ONEBIT_KERNEL` names
    /// when this CPU has it, else the highest this CPU has. Decided once, so the ternary
    /// kernels, the head and the dense ops of one process never mix ISAs by accident.
    pub fn selected() -> Isa {
        static SELECTED: OnceLock<Isa> = OnceLock::new();
        *SELECTED.get_or_init(|| {
            let f = CpuFeatures::get();
            match Isa::requested() {
                Ok(Some(isa)) if f.has(isa) => isa,
                _ => Isa::ALL.into_iter().rfind(|&i| f.has(i)).unwrap_or(Isa::Scalar),
            }
        })
    }

    /// The ISA of the one-token (row) kernels of T2 and the head: [`Isa::selected`], except
    /// on an AMD CPU with AVX-512 when `ONEBIT_KERNEL` names none, where it is AVX2. Those
    /// kernels stream the weights from memory; on an AMD EPYC (Zen 4) the AVX2 ones, reading
    /// one row after another, did so faster than the AVX-512 ones, four rows a pass or one
    /// (2B4T decode at one token on 2 threads: 1.48x and ~1.2x; the run file
    /// `bench/runs/2026-12-07-zen4-row-kernels.txt`). The tiles for several tokens stay at
    /// [`Isa::selected`], where AVX-512's `vpdpbusd` pays. Decided once, like the selection.
    pub fn rows() -> Isa {
        static ROWS: OnceLock<Isa> = OnceLock::new();
        *ROWS.get_or_init(|| {
            let isa = Isa::selected();
            let amd_avx512 = matches!(isa, Isa::Avx512 | Isa::Amx) && CpuFeatures::get().amd;
            if amd_avx512 && matches!(Isa::requested(), Ok(None)) {
                Isa::Avx2
            } else {
                isa
            }
        })
    }
}

/// The CPU features kernels care about, detected once per process.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2.
    pub avx2: bool,
    /// AVX-512 F + BW.
    pub avx512bw: bool,
    /// AVX-512 VNNI (`vpdpbusd`).
    pub avx512vnni: bool,
    /// AVX-512 VBMI (`vpermi2b`).
    pub avx512vbmi: bool,
    /// VEX-encoded VNNI (reported, not used yet).
    pub avxvnni: bool,
    /// AMX-TILE + AMX-INT8 with the tile state granted by the OS.
    pub amx: bool,
    /// NEON.
    pub neon: bool,
    /// NEON dot product (`sdot`).
    pub dotprod: bool,
    /// FMA3 (the dense f32 kernels' fused multiply-add).
    pub fma: bool,
    /// F16C (the f16 KV cache's widening).
    pub f16c: bool,
    /// An AMD CPU (CPUID vendor `AuthenticAMD`): see [`Isa::rows`].
    pub amd: bool,
}

impl CpuFeatures {
    /// The features of this CPU (detected on first call).
    pub fn get() -> &'static CpuFeatures {
        static F: OnceLock<CpuFeatures> = OnceLock::new();
        F.get_or_init(detect)
    }

    /// Whether kernels of `isa` for `format` can run here.
    pub fn supports(&self, isa: Isa, format: TernaryFormat) -> bool {
        match isa {
            Isa::Scalar => true,
            Isa::Avx2 => self.avx2,
            Isa::Avx512 => {
                self.avx512bw && self.avx512vnni && (format != TernaryFormat::B3 || self.avx512vbmi)
            }
            Isa::Amx => self.amx && self.supports(Isa::Avx512, format),
            Isa::Neon => self.neon,
            Isa::NeonDot => self.neon && self.dotprod,
        }
    }

    /// Whether this CPU has `isa` at all (the ternary T2 kernels' requirements).
    pub fn has(&self, isa: Isa) -> bool {
        self.supports(isa, TernaryFormat::T2)
    }

    /// Space-separated list of the detected features.
    pub fn summary(&self) -> String {
        let all = [
            ("avx2", self.avx2),
            ("avx512bw", self.avx512bw),
            ("avx512vnni", self.avx512vnni),
            ("avx512vbmi", self.avx512vbmi),
            ("avxvnni", self.avxvnni),
            ("amx-int8", self.amx),
            ("neon", self.neon),
            ("dotprod", self.dotprod),
        ];
        let on: Vec<&str> = all.iter().filter(|f| f.1).map(|f| f.0).collect();
        if on.is_empty() {
            "none".into()
        } else {
            on.join(" ")
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        avx2: is_x86_feature_detected!("avx2"),
        avx512bw: is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw"),
        avx512vnni: is_x86_feature_detected!("avx512vnni"),
        avx512vbmi: is_x86_feature_detected!("avx512vbmi"),
        avxvnni: is_x86_feature_detected!("avxvnni"),
        amx: crate::gemm::amx::available(),
        fma: is_x86_feature_detected!("fma"),
        f16c: is_x86_feature_detected!("f16c"),
        amd: {
            // CPUID leaf 0 spells the vendor in EBX, EDX, ECX.
            #[allow(unused_unsafe)] // safe in newer toolchains
            // SAFETY: CPUID leaf 0 exists on every x86-64 CPU.
            let r = unsafe { std::arch::x86_64::__cpuid(0) };
            [r.ebx, r.edx, r.ecx] == [0x6874_7541, 0x6974_6E65, 0x444D_4163]
        },
        ..CpuFeatures::default()
    }
}

#[cfg(target_arch = "aarch64")]
fn detect() -> CpuFeatures {
    CpuFeatures {
        neon: std::arch::is_aarch64_feature_detected!("neon"),
        dotprod: std::arch::is_aarch64_feature_detected!("dotprod"),
        ..CpuFeatures::default()
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detect() -> CpuFeatures {
    CpuFeatures::default()
}

/// Below this many tokens the row kernels (one pass over the weights per token) are used;
/// from it on, the decode-once GEMM kernels.
pub const GEMM_MIN_TOKENS: usize = 4;

/// One runnable kernel: a (format, ISA) pair with its row and GEMM entry points.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    format: TernaryFormat,
    isa: Isa,
    /// The ISA of `gemv` (not `isa` where [`Isa::rows`] says so).
    row_isa: Isa,
    gemv: MatmulFn,
    gemm: MatmulFn,
}

fn table(format: TernaryFormat, isa: Isa) -> Option<(MatmulFn, MatmulFn)> {
    use crate::gemv::scalar;
    use TernaryFormat as F;
    let same = |f: MatmulFn| Some((f, f));
    match (format, isa) {
        (F::T2, Isa::Scalar) => same(scalar::t2),
        (F::B3, Isa::Scalar) => same(scalar::b3),
        (F::I2S, Isa::Scalar) => same(scalar::i2s),
        (F::HfPacked, Isa::Scalar) => same(scalar::hf),
        (F::Tq2_0, Isa::Scalar) => same(scalar::tq2),
        (F::Tq1_0, Isa::Scalar) => same(scalar::tq1),
        (F::Iq2Bn, Isa::Scalar) => same(scalar::iq2bn),
        (F::Iq1Bn, Isa::Scalar) => same(scalar::iq1bn),
        (F::Lut, Isa::Scalar) => same(crate::lut::scalar::lut),
        #[cfg(target_arch = "x86_64")]
        (F::T2, Isa::Avx2) => Some((crate::gemv::avx2::t2, crate::gemm::avx2::t2)),
        #[cfg(target_arch = "x86_64")]
        (F::B3, Isa::Avx2) => Some((crate::gemv::avx2::b3, crate::gemm::avx2::b3)),
        #[cfg(target_arch = "x86_64")]
        (F::Lut, Isa::Avx2) => same(crate::lut::avx2::lut),
        #[cfg(target_arch = "x86_64")]
        (F::T2, Isa::Avx512) => Some((crate::gemv::avx512::t2, crate::gemm::avx512::t2)),
        #[cfg(target_arch = "x86_64")]
        (F::B3, Isa::Avx512) => Some((crate::gemv::avx512::b3, crate::gemm::avx512::b3)),
        #[cfg(target_arch = "x86_64")]
        (F::T2, Isa::Amx) => Some((crate::gemv::avx512::t2, crate::gemm::amx::t2)),
        #[cfg(target_arch = "x86_64")]
        (F::B3, Isa::Amx) => Some((crate::gemv::avx512::b3, crate::gemm::amx::b3)),
        #[cfg(target_arch = "aarch64")]
        (F::Lut, Isa::Neon) => same(crate::lut::neon::lut),
        #[cfg(target_arch = "aarch64")]
        (F::T2, Isa::Neon) => same(crate::gemv::neon::t2),
        #[cfg(target_arch = "aarch64")]
        (F::B3, Isa::Neon) => same(crate::gemv::neon::b3),
        #[cfg(target_arch = "aarch64")]
        (F::T2, Isa::NeonDot) => same(crate::gemv::neon::t2_dot),
        #[cfg(target_arch = "aarch64")]
        (F::B3, Isa::NeonDot) => same(crate::gemv::neon::b3_dot),
        _ => None,
    }
}

impl Kernel {
    /// The kernel for `format` at `isa`, if it exists and this CPU can run it.
    pub fn get(format: TernaryFormat, isa: Isa) -> Result<Kernel> {
        let unavailable = || Error::Unavailable(format!("{}/{}", format.name(), isa.name()));
        if !CpuFeatures::get().supports(isa, format) {
            return Err(unavailable());
        }
        let (gemv, gemm) = table(format, isa).ok_or_else(unavailable)?;
        Ok(Kernel { format, isa, row_isa: isa, gemv, gemm })
    }

    /// Every kernel for `format` this CPU can run, scalar first.
    pub fn available(format: TernaryFormat) -> Vec<Kernel> {
        Isa::ALL.into_iter().filter_map(|isa| Kernel::get(format, isa).ok()).collect()
    }

    /// The highest-ISA kernel for `format` (T2's one-token rows at [`Isa::rows`]), or the one
    /// `ONEBIT_KERNEL` names. B3 keeps its AVX-512 rows: its AVX2 decode is compute-bound
    /// (6912x2560 at one token, 2 threads, on Zen 4: 340-370 µs vs 200 µs).
    pub fn best(format: TernaryFormat) -> Result<Kernel> {
        if let Some(isa) = Isa::requested()? {
            return Kernel::get(format, isa);
        }
        let mut k = Kernel::available(format)
            .pop()
            .ok_or_else(|| Error::Unavailable(format.name().into()))?;
        let rows = Isa::rows();
        if format == TernaryFormat::T2 && rows != k.isa {
            if let Some((gemv, _)) = table(format, rows) {
                k.gemv = gemv;
                k.row_isa = rows;
            }
        }
        Ok(k)
    }

    /// The layout this kernel reads.
    pub fn format(&self) -> TernaryFormat {
        self.format
    }
    /// Its instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }
    /// The ISA of its one-token (row) kernel: [`Kernel::isa`] unless [`Isa::rows`] differs.
    pub fn row_isa(&self) -> Isa {
        self.row_isa
    }
    /// `family/format/isa` (`+rows-isa` where the rows run at another), for tables and JSON.
    pub fn name(&self) -> String {
        let family = if self.format == TernaryFormat::Lut { "lut" } else { "mad" };
        let rows = if self.row_isa == self.isa {
            String::new()
        } else {
            format!("+rows-{}", self.row_isa.name())
        };
        format!("{family}/{}/{}{rows}", self.format.name(), self.isa.name())
    }
}

/// `out[t·rows + r] = scale · Σ_k T[r][k]·q[t][k] / a_t` for every token of `x`.
///
/// Checks shapes once, then splits rows over the pool; allocates nothing (after the
/// first call on each thread, which sizes its scratch buffer).
pub fn matmul(
    pool: &ThreadPool,
    kernel: &Kernel,
    w: &TernaryMatrix,
    x: &ActQuant,
    out: &mut [f32],
) -> Result<()> {
    matmul_many(pool, x, &mut [(kernel, w, out)])
}

fn args<'a>(
    kernel: &Kernel,
    w: &'a TernaryMatrix,
    x: &'a ActQuant,
    out: &mut [f32],
) -> Result<MatmulArgs<'a>> {
    if kernel.format != w.format() {
        return Err(Error::Unavailable(format!(
            "{} on a {} matrix",
            kernel.name(),
            w.format().name()
        )));
    }
    if x.cols() != w.cols() {
        return Err(Error::Mismatch { op: "matmul cols", expected: w.cols(), found: x.cols() });
    }
    let (rows, tokens) = (w.rows(), x.tokens());
    if out.len() < rows * tokens {
        return Err(Error::Mismatch {
            op: "matmul out",
            expected: rows * tokens,
            found: out.len(),
        });
    }
    let row_bytes = match w.format() {
        TernaryFormat::T2 => crate::format::t2::row_bytes(w.cols()),
        TernaryFormat::B3 => crate::format::b3::row_bytes(w.cols()),
        TernaryFormat::Lut => lut::tile_bytes(w.cols()),
        TernaryFormat::Iq2Bn => crate::format::iq2bn::row_bytes(w.cols()),
        TernaryFormat::Iq1Bn => crate::format::iq1bn::row_bytes(w.cols()),
        _ => 0,
    };
    if x.padded_cols() < w.format().padded_cols(w.cols()) {
        return Err(Error::Mismatch {
            op: "matmul activation padding",
            expected: w.format().padded_cols(w.cols()),
            found: x.padded_cols(),
        });
    }
    Ok(MatmulArgs {
        w: w.bytes(),
        row_bytes,
        cols: w.cols(),
        rows,
        act: x.q(),
        act_stride: x.padded_cols(),
        act_scale: x.scales(),
        act_sum: x.sums(),
        tokens,
        w_scale: w.scale(),
        out: out.as_mut_ptr(),
        out_stride: rows,
    })
}

/// Most products [`matmul_many`] runs in one dispatch.
pub const MAX_FUSED: usize = 4;

/// Several products over the same activations (q/k/v, gate/up) in one pool dispatch: the
/// rows of all matrices are split over the threads together, so one barrier serves them all
/// and small matrices do not leave threads idle.
pub fn matmul_many(
    pool: &ThreadPool,
    x: &ActQuant,
    ops: &mut [(&Kernel, &TernaryMatrix, &mut [f32])],
) -> Result<()> {
    if ops.len() > MAX_FUSED {
        return Err(Error::Mismatch {
            op: "matmul_many count",
            expected: MAX_FUSED,
            found: ops.len(),
        });
    }
    if ops.len() > 1 && ops.iter().any(|o| o.1.format() == TernaryFormat::Lut) {
        // Lut ranges must start on 32-row tiles of each matrix: run those one at a time.
        for (k, w, out) in ops.iter_mut() {
            matmul_many(pool, x, &mut [(*k, *w, &mut **out)])?;
        }
        return Ok(());
    }
    let mut all: [Option<(MatmulArgs<'_>, MatmulFn, usize)>; MAX_FUSED] = [None; MAX_FUSED];
    let tokens = x.tokens();
    let mut total = 0;
    for (slot, (kernel, w, out)) in all.iter_mut().zip(ops.iter_mut()) {
        let a = args(kernel, w, x, out)?;
        let f = if tokens >= GEMM_MIN_TOKENS { kernel.gemm } else { kernel.gemv };
        total += a.rows;
        *slot = Some((a, f, w.rows()));
    }
    let align =
        if ops.iter().any(|o| o.1.format() == TernaryFormat::Lut) { lut::TILE_ROWS } else { 4 };
    let threads = pool.threads();
    let all = &all;
    pool.run(&|i| {
        let mine = split(total, threads, i, align);
        let mut base = 0;
        for (a, f, rows) in all.iter().flatten() {
            let (s, e) = (mine.start.max(base), mine.end.min(base + rows));
            if s < e {
                // SAFETY: the kernel's ISA was checked when it was built; operands were checked
                // by `args`; each thread gets a disjoint row range of each output.
                unsafe { f(a, s - base, e - base) };
            }
            base += rows;
        }
    });
    Ok(())
}

/// Times every kernel this CPU can run for `format` on a `rows x cols` product with
/// `tokens` tokens (random data, `reps` runs each) and returns the fastest with its median seconds.
pub fn self_tune(
    pool: &ThreadPool,
    format: TernaryFormat,
    rows: usize,
    cols: usize,
    tokens: usize,
    reps: usize,
) -> Result<(Kernel, f64)> {
    let trits: Vec<i8> = (0..rows * cols).map(|i| ((i * 2654435761) >> 7) as i8 % 2).collect();
    let w = TernaryMatrix::from_trits(format, rows, cols, &trits, 1.0)?;
    let xs: Vec<f32> = (0..tokens * cols).map(|i| ((i * 40503) % 255) as f32 - 127.0).collect();
    let mut x = ActQuant::new(tokens, cols);
    x.quantize(&xs);
    let mut out = vec![0f32; rows * tokens];
    let mut best: Option<(Kernel, f64)> = None;
    for k in Kernel::available(format) {
        if k.isa == Isa::Scalar && Kernel::available(format).len() > 1 {
            continue;
        }
        matmul(pool, &k, &w, &x, &mut out)?;
        let mut times: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                matmul(pool, &k, &w, &x, &mut out).map(|_| t.elapsed().as_secs_f64())
            })
            .collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        let med = times[times.len() / 2];
        if best.as_ref().is_none_or(|b| med < b.1) {
            best = Some((k, med));
        }
    }
    best.ok_or_else(|| Error::Unavailable(format.name().into()))
}
