//! One recorded kernel launch ([`Op`]): its pipeline, its bind group (made once, when the
//! session is built) and how its grid grows with the rows of a pass; the kernels' parameter
//! blocks (uniforms, fixed per launch).

use crate::context::{GpuContext, Pipelines};
use bytemuck::{Pod, Zeroable};
use wgpu::util::DeviceExt;

/// The matmul kernels' parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct MatP {
    pub rows: u32,
    pub kw: u32,
    pub out_stride: u32,
    pub accumulate: u32,
    pub act_stride: u32,
    pub row_base: u32,
    pub pad: [u32; 2],
}

/// The activation quantizer's parameters.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct AqP {
    pub cols: u32,
    pub in_stride: u32,
    pub in_off: u32,
    pub mode: u32,
    pub norm: u32,
    pub act_stride: u32,
    pub eps: f32,
    pub gather: u32,
    pub up_off: u32,
    pub pad: [u32; 3],
}

/// RoPE / attention parameters (attention uses every field, RoPE the first eight).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct AttP {
    pub heads: u32,
    pub kv_heads: u32,
    pub hd: u32,
    pub qkv_stride: u32,
    pub qd: u32,
    pub kvd: u32,
    pub slot_stride: u32,
    /// RoPE: 1 for interleaved pairs; attention: positions per slot.
    pub extra: u32,
    pub scale: f32,
    pub pad: [u32; 3],
}

/// Four words (embedding lookup, argmax).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
pub(crate) struct Quad(pub [u32; 4]);

/// A uniform buffer holding `v`.
pub(crate) fn uniform<T: Pod>(ctx: &GpuContext, v: &T) -> wgpu::Buffer {
    ctx.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("params"),
        contents: bytemuck::bytes_of(v),
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
    })
}

/// Which kernel an op launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    Ternary,
    Int8,
    ActQuant,
    RopeKv,
    Attention,
    Embed,
    Argmax,
    Sample,
}

impl Kernel {
    pub fn pipeline(self, p: &Pipelines) -> &wgpu::ComputePipeline {
        match self {
            Kernel::Ternary => &p.ternary,
            Kernel::Int8 => &p.int8,
            Kernel::ActQuant => &p.act_quant,
            Kernel::RopeKv => &p.rope_kv,
            Kernel::Attention => &p.attention,
            Kernel::Embed => &p.embed,
            Kernel::Argmax => &p.argmax,
            Kernel::Sample => &p.sample,
        }
    }
}

/// How a launch's grid follows the `n` rows of a pass.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Grid {
    /// Eight output rows per workgroup (groups beyond 32768 wrap into z), eight rows of
    /// tokens per y; from [`Op::tiled_from`] rows, 32 × 32 tiles instead.
    Matmul { rows: u32 },
    /// One workgroup per row.
    Rows,
    /// `per_row` invocations per row in workgroups of `wg` (beyond 65535 groups wrap into y).
    Threads { per_row: u32, wg: u32 },
    /// One workgroup per (head, row).
    Heads { heads: u32 },
}

impl Grid {
    /// Workgroup counts for `n` rows.
    pub fn size(self, n: u32) -> (u32, u32, u32) {
        match self {
            Grid::Matmul { rows } => {
                let groups = rows.div_ceil(8);
                (groups.min(32768), n.div_ceil(8), groups.div_ceil(32768))
            }
            Grid::Rows => (n, 1, 1),
            Grid::Threads { per_row, wg } => {
                let groups = (n * per_row).div_ceil(wg);
                if groups <= 65535 {
                    (groups, 1, 1)
                } else {
                    (65535, groups.div_ceil(65535), 1)
                }
            }
            Grid::Heads { heads } => (heads, n, 1),
        }
    }
}

/// Rows of tokens from which a ternary product runs the tiled kernel: below, the row kernel's
/// eight tokens per workgroup leave little to share (a decode step of a few sequences).
pub(crate) const TILED_FROM: u32 = 16;

/// One kernel launch of a pass.
pub(crate) struct Op {
    pub kernel: Kernel,
    pub bind: wgpu::BindGroup,
    pub grid: Grid,
    /// Rows of a pass from which a ternary product switches to the tiled kernel
    /// (`u32::MAX`: never).
    pub tiled_from: u32,
}

impl Op {
    /// An op binding `buffers` to bindings 0, 1, 2, … of `kernel`'s group 0.
    pub fn new(ctx: &GpuContext, kernel: Kernel, grid: Grid, buffers: &[&wgpu::Buffer]) -> Op {
        let pipe = kernel.pipeline(&ctx.pipes);
        let entries: Vec<wgpu::BindGroupEntry> = buffers
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupEntry {
                binding: i as u32,
                resource: b.as_entire_binding(),
            })
            .collect();
        let bind = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipe.get_bind_group_layout(0),
            entries: &entries,
        });
        let tiled_from = if kernel == Kernel::Ternary { TILED_FROM } else { u32::MAX };
        Op { kernel, bind, grid, tiled_from }
    }

    /// Records this launch for `n` rows.
    pub fn record(&self, pipes: &Pipelines, pass: &mut wgpu::ComputePass<'_>, n: u32) {
        let (pipe, (x, y, z)) = match self.grid {
            Grid::Matmul { rows } if n >= self.tiled_from => {
                let groups = rows.div_ceil(32);
                (&pipes.ternary_tiled, (groups.min(32768), n.div_ceil(32), groups.div_ceil(32768)))
            }
            grid => (self.kernel.pipeline(pipes), grid.size(n)),
        };
        pass.set_pipeline(pipe);
        pass.set_bind_group(0, &self.bind, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}
