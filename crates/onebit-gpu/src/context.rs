//! [`GpuContext`]: the adapter, device and queue, and every compute pipeline compiled once.
//! [`adapters`] lists what wgpu finds (`onebit kernels` prints it).

use crate::error::{Error, Result};

/// What wgpu reports about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    /// Device name (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)").
    pub name: String,
    /// Vulkan, Metal or Dx12.
    pub backend: String,
    /// Discrete, integrated, virtual or CPU.
    pub device_type: String,
    /// Driver name and version.
    pub driver: String,
    /// Largest storage buffer binding, bytes.
    pub max_storage_binding: u64,
    /// Largest workgroup count per dimension.
    pub max_workgroups: u32,
}

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::from_env_or_default();
    desc.backends = wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12;
    wgpu::Instance::new(&desc)
}

fn summary(a: &wgpu::Adapter) -> AdapterSummary {
    let (i, l) = (a.get_info(), a.limits());
    AdapterSummary {
        name: i.name,
        backend: format!("{:?}", i.backend),
        device_type: format!("{:?}", i.device_type),
        driver: format!("{} {}", i.driver, i.driver_info).trim().to_string(),
        max_storage_binding: l.max_storage_buffer_binding_size as u64,
        max_workgroups: l.max_compute_workgroups_per_dimension,
    }
}

/// Every adapter wgpu finds, in its order (the first is the one [`GpuContext::new`] picks
/// unless `ONEBIT_GPU_ADAPTER` names another by a substring of its name).
pub fn adapters() -> Vec<AdapterSummary> {
    instance().enumerate_adapters(wgpu::Backends::all()).iter().map(summary).collect()
}

/// The compute pipelines, one per kernel.
pub(crate) struct Pipelines {
    pub ternary: wgpu::ComputePipeline,
    /// The ternary product for prompt chunks; shares `ternary`'s bind group layout, so one
    /// bind group serves either and a pass picks by its row count.
    pub ternary_tiled: wgpu::ComputePipeline,
    pub int8: wgpu::ComputePipeline,
    pub act_quant: wgpu::ComputePipeline,
    pub rope_kv: wgpu::ComputePipeline,
    pub attention: wgpu::ComputePipeline,
    pub embed: wgpu::ComputePipeline,
    pub argmax: wgpu::ComputePipeline,
    pub sample: wgpu::ComputePipeline,
}

/// An open device with its queue and compiled kernels.
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    pub(crate) pipes: Pipelines,
    info: AdapterSummary,
}

fn pick(list: Vec<wgpu::Adapter>) -> Result<wgpu::Adapter> {
    let want = std::env::var("ONEBIT_GPU_ADAPTER").ok().map(|s| s.to_lowercase());
    let names: Vec<String> = list.iter().map(|a| a.get_info().name).collect();
    let rank = |a: &wgpu::Adapter| match a.get_info().device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ => 3,
    };
    let mut list: Vec<wgpu::Adapter> = match &want {
        Some(w) => {
            list.into_iter().filter(|a| a.get_info().name.to_lowercase().contains(w)).collect()
        }
        None => list,
    };
    list.sort_by_key(rank);
    list.into_iter().next().ok_or_else(|| {
        Error::NoAdapter(match want {
            Some(w) => format!("none of {names:?} matches ONEBIT_GPU_ADAPTER={w}"),
            None => {
                "install a Vulkan driver (on Debian: mesa-vulkan-drivers for the CPU's lavapipe)"
                    .into()
            }
        })
    })
}

impl GpuContext {
    /// Opens the best adapter (a discrete GPU before an integrated one before the CPU's
    /// lavapipe) and compiles the kernels.
    pub fn new() -> Result<Self> {
        let adapter = pick(instance().enumerate_adapters(wgpu::Backends::all()))?;
        let info = summary(&adapter);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("onebit"),
            required_features: wgpu::Features::empty(),
            required_limits: limits,
            ..Default::default()
        }))
        .map_err(|e| Error::Device(format!("{}: {e}", info.name)))?;
        let pipes = Pipelines::new(&device)?;
        tracing::info!("GPU: {} ({}, {})", info.name, info.backend, info.device_type);
        Ok(GpuContext { device, queue, pipes, info })
    }

    /// The adapter in use.
    pub fn adapter(&self) -> &AdapterSummary {
        &self.info
    }

    /// Largest storage buffer binding, bytes.
    pub fn max_binding(&self) -> u64 {
        self.info.max_storage_binding
    }
}

impl Pipelines {
    fn new(device: &wgpu::Device) -> Result<Self> {
        device.push_error_scope(wgpu::ErrorFilter::Validation);
        let matmul_layout = matmul_layout(device);
        let make_in = |src: &str, entry: &str, layout: Option<&wgpu::PipelineLayout>| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let matmul = include_str!("shaders/matmul.wgsl");
        let (step, exp) = (include_str!("shaders/step.wgsl"), include_str!("shaders/exp.wgsl"));
        let whole = |src: &str| format!("{step}\n{exp}\n{src}");
        let make = |src: &str, entry: &str| make_in(&whole(src), entry, None);
        let mm = |entry: &str| make_in(&whole(matmul), entry, Some(&matmul_layout));
        let p = Pipelines {
            ternary: mm("ternary_main"),
            ternary_tiled: mm("ternary_tiled_main"),
            int8: mm("int8_main"),
            act_quant: make(include_str!("shaders/act_quant.wgsl"), "main"),
            rope_kv: make(include_str!("shaders/rope_kv.wgsl"), "main"),
            attention: make(include_str!("shaders/attention.wgsl"), "main"),
            embed: make(include_str!("shaders/embed.wgsl"), "main"),
            argmax: make(include_str!("shaders/argmax.wgsl"), "main"),
            sample: make(include_str!("shaders/sample.wgsl"), "main"),
        };
        match pollster::block_on(device.pop_error_scope()) {
            Some(e) => Err(Error::Device(format!("compiling the kernels: {e}"))),
            None => Ok(p),
        }
    }
}

/// The matmul kernels' layout, written out so `ternary_main` and `ternary_tiled_main` accept
/// the same bind groups: the pass uniform, the parameters, five read-only arrays (weights,
/// row scales, activations, their scales and sums) and the output.
fn matmul_layout(device: &wgpu::Device) -> wgpu::PipelineLayout {
    let entry = |binding: u32, ty: wgpu::BufferBindingType| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer { ty, has_dynamic_offset: false, min_binding_size: None },
        count: None,
    };
    use wgpu::BufferBindingType as B;
    let mut entries = vec![entry(0, B::Uniform), entry(1, B::Uniform)];
    entries.extend((2..7).map(|b| entry(b, B::Storage { read_only: true })));
    entries.push(entry(7, B::Storage { read_only: false }));
    let group = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("matmul"),
        entries: &entries,
    });
    device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("matmul"),
        bind_group_layouts: &[&group],
        push_constant_ranges: &[],
    })
}
