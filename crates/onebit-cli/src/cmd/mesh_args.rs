//! `--mesh` and its companions, shared by `run`, `chat`, `bench` and `serve`, and [`Runner`]:
//! a local session, a pipeline head or a tensor-parallel head, whichever the flags asked for.

use super::model_args::ModelArgs;
use anyhow::{bail, Result};
use onebit_dist::auto;
use onebit_dist::hybrid::HybridLayout;
use onebit_dist::launch::{start_hybrid, start_pipeline, start_tensor, PipelineLaunch};
use onebit_dist::link_emulation::LinkEmulation;
use onebit_dist::pipeline::{PipelineHead, PipelineTimeouts};
use onebit_dist::plan::Strategy as PlanStrategy;
use onebit_dist::stage_wires::StageWires;
use onebit_dist::tensor::TensorHead;
use onebit_dist::wire::WireDtype;
use onebit_dist::Comm;
use onebit_gpu::GpuSession;
use onebit_model::{Engine, Model, Session, SessionOptions, TensorSplit};

/// The model (the head's part with a mesh), the mesh if any, and how the model is laid out.
pub type Loaded = (Model, Option<Box<dyn Comm>>, Layout);

/// Flags for running across a device mesh.
#[derive(clap::Args, Debug, Clone)]
pub struct MeshArgs {
    /// Run across the nodes of this mesh file (TOML: key_file, head, workers), each worker
    /// running `onebit worker`: the blocks are split into one contiguous range per node
    /// (pipeline), the head keeps the embeddings, the first blocks and the output head.
    #[arg(long, conflicts_with = "mpi")]
    pub mesh: Option<String>,
    /// Run across the ranks of the MPI job this process belongs to (`mpirun -n 2 onebit run
    /// MODEL --mpi …`): rank 0 leads and prints, the others serve their part; every rank
    /// needs the model file at the same path. Needs a onebit built with `--features mpi`.
    #[arg(long)]
    pub mpi: bool,
    /// How the model is split across the mesh: pp (pipeline: a range of blocks per node), tp
    /// (tensor parallel: a piece of every block per node, four exchanges per block, two with
    /// --tp-merge sum) or auto
    /// (with --mesh: measure the links and nodes, or reuse the measurements cached beside the
    /// mesh file, and run the planner's fastest plan for one sequence, which may be the head
    /// alone; `serve` takes the fastest for its --slots in flight), or hybrid (a pipeline of
    /// --groups: each stage's nodes split its blocks tensor-parallel, for tensor parallelism
    /// inside fast islands and a pipeline across a slow link).
    #[arg(long, default_value = "pp", value_parser = ["pp", "tp", "auto", "hybrid"])]
    pub strategy: String,
    /// With --strategy hybrid: nodes per stage in mesh order, head's first (e.g. 2,2: the
    /// head and the first worker split the first blocks, the other two the rest); --split
    /// then gives blocks per stage.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<usize>,
    /// With --strategy auto: measure the mesh again instead of reusing the cached figures.
    #[arg(long, requires = "mesh")]
    pub remeasure: bool,
    /// With --strategy auto: plan for decoding after this many positions of context (as
    /// `onebit plan --ctx`; a long chat decodes slower, and more of its time is attention,
    /// which tensor parallelism splits by KV heads). The figures are cached beside the mesh
    /// file for the last context measured.
    #[arg(long, default_value_t = 0, requires = "mesh")]
    pub plan_ctx: usize,
    /// Test mode for link-emulation benchmarks on one machine: hold every mesh message for
    /// DELAY_MS (± JITTER_MS) after it was sent, e.g. 5,2 for WiFi; the workers need the same
    /// flag.
    #[arg(long, value_name = "DELAY_MS[,JITTER_MS]", value_parser = LinkEmulation::parse, requires = "mesh", hide = true)]
    pub emulate_link: Option<LinkEmulation>,
    /// Blocks per node with --mesh, head first (e.g. 6,24); default: equal bytes per node.
    #[arg(long, value_delimiter = ',')]
    pub split: Vec<usize>,
    /// With --strategy tp: each node's share of every block and of the output head, head
    /// first (e.g. 2,3 for a node two thirds as fast as the other); with --strategy hybrid
    /// each node's share within its group; default: equal.
    #[arg(long, value_delimiter = ',')]
    pub shares: Vec<f64>,
    /// Threads per worker with --mesh.
    #[arg(long, default_value_t = 2)]
    pub worker_threads: usize,
    /// Activations on the wire with --mesh (a pipeline's hidden states, tensor parallelism's
    /// gathered pieces): f32 (exact), f16 (half the bytes) or q8 (int8 with a scale per row: a
    /// quarter), for slow links; f16/q8 change the logits slightly. auto: with --strategy
    /// auto the planner's choice, link by link (f32 unless a lossy type is predicted 10 %
    /// faster), else f32. A pipeline or hybrid also takes one type per link, as `onebit plan`
    /// prints them: hops=q8,f32 (each stage's hop on) or hops=q8,q8/groups=f32,- (and each
    /// stage's gathers; - for a stage of one node).
    #[arg(long, default_value = "auto")]
    pub wire: String,
    /// How tensor-parallel pieces meet: gather (`o` and `down` cut by rows, four gathers a
    /// block; with f32 on the wire the logits are one node's bit for bit), sum (cut by
    /// columns, each node's partial update summed: two exchanges a block, each node rounding
    /// its own piece of their input to int8; for slow links) or auto (sum where the wire is
    /// f16 or q8, which round anyway; else gather).
    #[arg(long, default_value = "auto", value_parser = ["auto", "gather", "sum"])]
    pub tp_merge: String,
    /// The element types the planner chose link by link (`--wire auto --strategy auto`), for
    /// the runner: one stage for a tensor-parallel plan.
    #[arg(skip)]
    pub chosen_wire: std::sync::Arc<std::sync::Mutex<Option<StageWires>>>,
    /// Set by `serve`: --strategy auto chooses the fastest plan for this many sequences in
    /// flight (its slots) instead of for one sequence.
    #[arg(skip)]
    pub in_flight: Option<usize>,
    /// Seconds a step may wait on the other nodes before the head reports the stalled node.
    #[arg(long, default_value_t = 5.0)]
    pub step_timeout: f64,
    /// Where the model runs: cpu, or gpu (wgpu: Vulkan, Metal, DX12; on a machine without a
    /// GPU, Mesa's lavapipe runs the same kernels on the CPU, slowly). `onebit kernels`
    /// lists the adapters.
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "gpu"], conflicts_with_all = ["mesh", "mpi"])]
    pub device: String,
}

impl MeshArgs {
    /// The model: with --mesh the head's part, once every worker has loaded its blocks (the
    /// mesh and the split come with it); else the whole model.
    pub fn load(&self, m: &ModelArgs, session: SessionOptions) -> Result<Loaded> {
        if self.mpi {
            return self.load_mpi(m, session);
        }
        self.load_leaving_out(m, session, &[], std::time::Duration::from_secs(600))
    }

    /// [`MeshArgs::load`] on the mesh file's workers but those in `skip` (indexes into its
    /// workers), each given `ready` to load its part.
    pub fn load_leaving_out(
        &self,
        m: &ModelArgs,
        session: SessionOptions,
        skip: &[usize],
        ready: std::time::Duration,
    ) -> Result<Loaded> {
        let Some(mesh) = self.mesh.clone() else {
            self.check_local()?;
            return Ok((m.load()?, None, Layout::One));
        };
        self.wire_spec()?;
        if !(self.step_timeout > 0.0 && self.step_timeout < 1e6) {
            bail!("--step-timeout must be a positive number of seconds");
        }
        let mut launch = PipelineLaunch {
            mesh,
            model: m.model.clone(),
            load: m.options()?,
            worker_threads: self.worker_threads.max(1),
            session,
            split: (!self.split.is_empty()).then(|| self.split.clone()),
            ready_timeout: ready,
            progress: super::transfer_bar::bars(),
            emulate: self.emulate_link,
            skip: skip.to_vec(),
            tensor_sums: false,
        };
        let mut shares = (!self.shares.is_empty()).then(|| self.shares.clone());
        let mut strategy = self.strategy.as_str();
        if self.plan_ctx > 0 && strategy != "auto" {
            bail!("--plan-ctx goes with --strategy auto (--strategy {strategy} plans nothing)");
        }
        if strategy == "auto" {
            if shares.is_some() || launch.split.is_some() {
                bail!("--strategy auto chooses the split itself: drop --shares and --split");
            }
            let config = onebit_model::ModelConfig::from_gguf(
                &onebit_model::load::GgufModelFile::open(&m.model)?.header,
            )?;
            super::plan::check_ctx("--plan-ctx", self.plan_ctx, &config)?;
            let measured = auto::measure(
                &launch.mesh,
                &config,
                launch.worker_threads,
                self.plan_ctx,
                self.remeasure,
                launch.emulate,
            )?;
            let fixed = match self.wire_spec()? {
                WireSpec::Auto => None,
                WireSpec::One(d) => Some(d),
                WireSpec::PerLink(_) => bail!(
                    "a --wire per link fixes one layout's links: with --strategy auto give \
                     --wire auto or one type"
                ),
            };
            let (k, goal) = match self.in_flight {
                Some(k) if k > 1 => (k, auto::Goal::InFlight),
                _ => (8, auto::Goal::OneSequence),
            };
            let (_, choice) = auto::choose_for(&config, 2.0, &measured, k, fixed, goal)?;
            *self.chosen_wire.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(choice.wires.clone());
            let aim = match goal {
                auto::Goal::OneSequence => String::new(),
                // Decode throughput: the prompts the server reads add their prefill to it.
                auto::Goal::InFlight => format!(" decoding {k} sequences in flight"),
            };
            eprintln!(
                "auto: {:?} with {} on the wire, predicted {:.1} tok/s{aim} (mesh {}; --remeasure to measure again)",
                choice.strategy,
                choice.wire_label(),
                goal.speed(&choice),
                if measured.cached {
                    format!("figures from {}", auto::cache_path(&launch.mesh))
                } else {
                    "measured now".into()
                }
            );
            match choice.strategy {
                PlanStrategy::Single { .. } => return Ok((m.load()?, None, Layout::One)),
                PlanStrategy::Tensor { .. } => {
                    strategy = "tp";
                    shares = Some(auto::speed_shares(&measured));
                }
                PlanStrategy::Pipeline { layers } => {
                    strategy = "pp";
                    launch.split = Some(layers);
                }
                PlanStrategy::Hybrid { groups, layers } => {
                    launch.split = Some(layers);
                    let shares = auto::speed_shares(&measured);
                    let (model, comm, layout) = start_hybrid(&launch, &groups, Some(&shares))?;
                    return Ok((model, Some(Box::new(comm)), Layout::Hybrid(layout)));
                }
            }
        }
        if (strategy == "hybrid") == self.groups.is_empty() {
            bail!("--strategy hybrid and --groups go together");
        }
        if strategy == "hybrid" {
            let (model, comm, layout) = start_hybrid(&launch, &self.groups, shares.as_deref())?;
            return Ok((model, Some(Box::new(comm)), Layout::Hybrid(layout)));
        }
        if strategy == "tp" {
            launch.tensor_sums = self.tensor_sums()?;
            let s = start_tensor(&launch, shares)?;
            return Ok((s.model, Some(Box::new(s.comm)), Layout::Tensor(s.split)));
        }
        if shares.is_some() {
            bail!("--shares needs --strategy tp (pipelines take --split)");
        }
        let s = start_pipeline(&launch)?;
        Ok((s.model, Some(Box::new(s.comm)), Layout::Pipeline(s.split)))
    }

    /// Refuses mesh flags on a run that has no mesh (they would be silently ignored).
    fn check_local(&self) -> Result<()> {
        let set = [
            ("--strategy", self.strategy != "pp"),
            ("--split", !self.split.is_empty()),
            ("--shares", !self.shares.is_empty()),
            ("--groups", !self.groups.is_empty()),
            ("--worker-threads", self.worker_threads != 2),
            ("--wire", self.wire != "auto"),
            ("--tp-merge", self.tp_merge != "auto"),
            ("--step-timeout", self.step_timeout != 5.0),
        ];
        match set.iter().find(|(_, on)| *on) {
            Some((flag, _)) => bail!("{flag} needs --mesh or --mpi"),
            None => Ok(()),
        }
    }

    /// [`MeshArgs::load`] on an MPI job's ranks: rank 0 returns its part and the mesh; the
    /// other ranks serve theirs and end the process when the head says stop.
    #[cfg(feature = "mpi")]
    fn load_mpi(&self, m: &ModelArgs, session: SessionOptions) -> Result<Loaded> {
        use onebit_dist::launch_ranks::{start_ranks, RankLaunch, RankStart, Strategy};
        self.wire_spec()?;
        if self.strategy == "auto" {
            bail!("--strategy auto measures a --mesh; with --mpi choose pp or tp");
        }
        let comm = onebit_dist::mpi::MpiComm::world()?;
        let rank = comm.rank();
        if (self.strategy == "hybrid") == self.groups.is_empty() {
            bail!("--strategy hybrid and --groups go together");
        }
        let blocks = (!self.split.is_empty()).then(|| self.split.clone());
        let strategy = if self.strategy == "tp" {
            Strategy::Tensor((!self.shares.is_empty()).then(|| self.shares.clone()))
        } else if self.strategy == "hybrid" {
            if !self.shares.is_empty() {
                bail!("with --mpi, hybrid groups split their blocks equally: drop --shares");
            }
            Strategy::Hybrid { groups: self.groups.clone(), blocks }
        } else {
            if !self.shares.is_empty() {
                bail!("--shares needs --strategy tp (pipelines take --split)");
            }
            Strategy::Pipeline((!self.split.is_empty()).then(|| self.split.clone()))
        };
        let launch = RankLaunch {
            model: m.model.clone(),
            load: m.options()?,
            worker_threads: self.worker_threads.max(1),
            session,
            strategy,
            timeouts: self.timeouts(),
            ready_timeout: std::time::Duration::from_secs(600),
            tensor_sums: self.tensor_sums()?,
        };
        match start_ranks(Box::new(comm), &launch)? {
            RankStart::Head { model, comm, layout } => {
                let layout = match layout {
                    onebit_dist::launch::Layout::Pipeline(s) => Layout::Pipeline(s),
                    onebit_dist::launch::Layout::Tensor(s) => Layout::Tensor(s),
                    onebit_dist::launch::Layout::Hybrid(h) => Layout::Hybrid(h),
                };
                Ok((*model, Some(comm), layout))
            }
            RankStart::Served(w) => {
                // MPI is finalized (the mesh is gone); this rank's part of the command is done.
                // One write for the whole line: the ranks share the terminal, and a line
                // written in pieces interleaves with another rank's.
                let line = format!(
                    "rank {rank} done: {} steps, {:.1} MB in, {:.1} MB out\n",
                    w.steps,
                    w.received as f64 / 1e6,
                    w.sent as f64 / 1e6
                );
                eprint!("{line}");
                std::process::exit(0)
            }
        }
    }

    #[cfg(not(feature = "mpi"))]
    fn load_mpi(&self, _: &ModelArgs, _: SessionOptions) -> Result<Loaded> {
        bail!("this onebit was built without MPI: rebuild with `cargo build --release --features mpi`")
    }

    /// What generation runs on: a pipeline head over `comm`, or a local session.
    pub fn runner<'m>(
        &self,
        model: &'m Model,
        comm: Option<Box<dyn Comm>>,
        layout: &Layout,
        opts: SessionOptions,
    ) -> Result<Runner<'m>> {
        if self.device == "gpu" {
            let ctx = std::sync::Arc::new(onebit_gpu::GpuContext::new()?);
            eprintln!(
                "gpu: {} ({}, {})",
                ctx.adapter().name,
                ctx.adapter().backend,
                ctx.adapter().device_type
            );
            // The device keeps its KV cache in f32 whatever --kv says.
            let opts = SessionOptions { kv: onebit_model::KvDtype::F32, ..opts };
            return Ok(Runner::Gpu(Box::new(GpuSession::new(ctx, model, opts)?)));
        }
        let session = Session::try_with_options(model, opts)?;
        let comm = match (layout, comm) {
            (Layout::Hybrid(h), Some(c)) => {
                let head = PipelineHead::hybrid(session, c, &h.ring()?, self.timeouts())?;
                return Ok(Runner::Mesh(Box::new(self.sending(head, layout)?)));
            }
            (_, comm) => comm,
        };
        Ok(match comm {
            Some(c) if model.tensor_head => {
                let wire = self.wire_dtype()?;
                eprintln!("wire: {}", wire.name());
                Runner::Tensor(Box::new(
                    TensorHead::new(session, c, self.timeouts())?.with_wire(wire)?,
                ))
            }
            Some(c) => {
                let head = PipelineHead::new(session, c, self.timeouts())?;
                Runner::Mesh(Box::new(self.sending(head, layout)?))
            }
            None => Runner::Local(Box::new(session)),
        })
    }

    /// What `--wire` says.
    fn wire_spec(&self) -> Result<WireSpec> {
        if self.wire == "auto" {
            return Ok(WireSpec::Auto);
        }
        if let Some(d) = WireDtype::from_name(&self.wire) {
            return Ok(WireSpec::One(d));
        }
        if self.wire.contains('=') {
            let w = StageWires::parse(&self.wire).map_err(|e| anyhow::anyhow!("--wire {e}"))?;
            return Ok(WireSpec::PerLink(w));
        }
        bail!("unknown --wire '{}' (auto, f32, f16, q8, or per link: hops=…)", self.wire)
    }

    /// Whether a tensor-parallel mesh sums the products of `o` and `down` (`--tp-merge`).
    pub fn tensor_sums(&self) -> Result<bool> {
        Ok(match self.tp_merge.as_str() {
            "sum" => true,
            "gather" => false,
            _ => self.wire_dtype()? != WireDtype::F32,
        })
    }

    /// The `--wire` element type of a tensor-parallel mesh (auto: the planner's choice where
    /// it chose a tensor-parallel plan, else f32).
    pub fn wire_dtype(&self) -> Result<WireDtype> {
        match self.wire_spec()? {
            WireSpec::Auto => {
                let chosen = self.chosen_wire.lock().unwrap_or_else(|p| p.into_inner());
                let tensor = chosen.as_ref().filter(|w| w.stages() == 1);
                Ok(tensor.map_or(WireDtype::F32, |w| w.gathers[0]))
            }
            WireSpec::One(d) => Ok(d),
            WireSpec::PerLink(_) => {
                bail!("--wire per link sets a pipeline's or hybrid's links; tensor parallelism sends one type")
            }
        }
    }

    /// The element types link by link of a pipeline or hybrid `layout` (`None` for another),
    /// said on stderr as the head starts.
    pub fn layout_wires(&self, layout: &Layout) -> Result<Option<StageWires>> {
        let sizes = match layout {
            Layout::Pipeline(split) => vec![1; split.len()],
            Layout::Hybrid(h) => h.sizes(),
            Layout::One | Layout::Tensor(_) => return Ok(None),
        };
        let wires = self.stage_wires(sizes.len())?;
        eprintln!("wire: {}", wires.label(&sizes));
        Ok(Some(wires))
    }

    /// `head` sending in the element types of `layout`.
    fn sending<'m>(&self, head: PipelineHead<'m>, layout: &Layout) -> Result<PipelineHead<'m>> {
        Ok(match self.layout_wires(layout)? {
            Some(w) => head.with_wires(w)?,
            None => head,
        })
    }

    /// The element types, link by link, of a pipeline or hybrid of `stages` stages: the
    /// planner's where it chose such a plan (`--wire auto`), else what `--wire` says.
    pub fn stage_wires(&self, stages: usize) -> Result<StageWires> {
        Ok(match self.wire_spec()? {
            WireSpec::Auto => {
                let chosen = self.chosen_wire.lock().unwrap_or_else(|p| p.into_inner());
                match chosen.as_ref().filter(|w| w.stages() == stages && stages > 1) {
                    Some(w) => w.clone(),
                    None => StageWires::uniform(stages, WireDtype::F32),
                }
            }
            WireSpec::One(d) => StageWires::uniform(stages, d),
            WireSpec::PerLink(w) if w.stages() == stages => w,
            WireSpec::PerLink(w) => {
                bail!("--wire gives types for {} stages; this mesh runs {stages}", w.stages())
            }
        })
    }

    /// The waits of a pipeline step.
    pub fn timeouts(&self) -> PipelineTimeouts {
        PipelineTimeouts {
            step: std::time::Duration::from_secs_f64(self.step_timeout),
            ..Default::default()
        }
    }
}

/// What `--wire` says.
enum WireSpec {
    /// The planner's choice under --strategy auto, else f32.
    Auto,
    /// One type on every link.
    One(WireDtype),
    /// One type per hop and per group's gathers.
    PerLink(StageWires),
}

/// How a model was laid out over the mesh.
pub enum Layout {
    /// One process.
    One,
    /// Blocks per node, head first.
    Pipeline(Vec<usize>),
    /// Every node's piece of every block.
    Tensor(TensorSplit),
    /// Stages of one node or of a tensor-parallel group.
    Hybrid(HybridLayout),
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layout::One => write!(f, "one node"),
            Layout::Pipeline(s) => write!(f, "pipeline, blocks per node {s:?}"),
            Layout::Tensor(s) if s.sums => write!(
                f,
                "tensor parallel, query heads {:?} · FFN columns {:?} · o and down by columns, partial updates summed",
                s.q_heads, s.ffn
            ),
            Layout::Tensor(s) => write!(
                f,
                "tensor parallel, query heads {:?} · FFN columns {:?} · hidden rows {:?}",
                s.q_heads, s.ffn, s.hidden
            ),
            Layout::Hybrid(h) => write!(
                f,
                "hybrid, nodes per stage {:?} · blocks per stage {:?}",
                h.sizes(),
                h.stages.iter().map(|s| s.blocks).collect::<Vec<_>>()
            ),
        }
    }
}

/// What generation runs on.
pub enum Runner<'m> {
    /// One process.
    Local(Box<Session<'m>>),
    /// A pipeline over a mesh.
    Mesh(Box<PipelineHead<'m>>),
    /// A tensor-parallel mesh.
    Tensor(Box<TensorHead<'m>>),
    /// The GPU backend.
    Gpu(Box<GpuSession>),
}

impl<'m> Runner<'m> {
    /// The engine generation drives.
    pub fn engine(&mut self) -> &mut dyn Engine {
        match self {
            Runner::Local(s) => s.as_mut(),
            Runner::Mesh(p) => p.as_mut(),
            Runner::Tensor(t) => t.as_mut(),
            Runner::Gpu(g) => g.as_mut(),
        }
    }

    /// What the head has sent, received and waited for on the mesh so far (None off a mesh).
    pub fn wire_stats(&self) -> Option<onebit_dist::pipeline::WireStats> {
        match self {
            Runner::Mesh(p) => Some(p.wire()),
            Runner::Tensor(t) => Some(t.wire()),
            Runner::Local(_) | Runner::Gpu(_) => None,
        }
    }

    /// With a mesh: the split, passes, bytes on the wire and waits per pass; on the GPU:
    /// kernel launches and submissions per pass.
    pub fn wire_summary(&self, layout: &Layout) -> Option<String> {
        if let Runner::Gpu(g) = self {
            let c = g.counters;
            let passes = c.passes.max(1) as f64;
            return Some(format!(
                "gpu: {} · {} passes · {:.1} kernel launches and {:.1} submissions per pass",
                g.adapter().name,
                c.passes,
                c.dispatches as f64 / passes,
                c.submissions as f64 / passes
            ));
        }
        if let Runner::Tensor(t) = self {
            let w = t.wire();
            let steps = w.steps.max(1) as f64;
            return Some(format!(
                "mesh: {layout} · {} exchanges · {:.1} kB sent and received by the head per exchange · {:.3} ms per exchange (waiting included)",
                w.steps,
                (w.sent + w.received) as f64 / steps / 1e3,
                w.wait.as_secs_f64() / steps * 1e3
            ));
        }
        let Runner::Mesh(p) = self else { return None };
        let w = p.wire();
        let steps = w.steps.max(1) as f64;
        Some(format!(
            "mesh: {layout} · {} passes · {:.1} kB on the wire per pass (out and back) · {:.2} ms per pass waiting on the other nodes",
            w.steps,
            (w.sent + w.received) as f64 / steps / 1e3,
            w.wait.as_secs_f64() / steps * 1e3
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        mesh: MeshArgs,
    }

    #[test]
    fn wire_auto_is_the_planners_choice_else_f32_and_a_fixed_type_stays() {
        let auto = Flags::parse_from(["t", "--mesh", "m.toml"]).mesh;
        assert_eq!(auto.wire, "auto");
        assert_eq!(auto.wire_dtype().unwrap(), WireDtype::F32);
        assert_eq!(auto.stage_wires(2).unwrap(), StageWires::uniform(2, WireDtype::F32));
        *auto.chosen_wire.lock().unwrap() = Some(StageWires::uniform(1, WireDtype::Q8));
        // The runner sees the choice, clones included (the server's re-planning holds one).
        assert_eq!(auto.clone().wire_dtype().unwrap(), WireDtype::Q8);
        // A pipeline's or hybrid's types, link by link, go to a ring of as many stages only.
        let mixed = StageWires {
            hops: vec![WireDtype::Q8, WireDtype::F32],
            gathers: vec![WireDtype::F32, WireDtype::F32],
        };
        *auto.chosen_wire.lock().unwrap() = Some(mixed.clone());
        assert_eq!(auto.clone().stage_wires(2).unwrap(), mixed);
        assert_eq!(auto.stage_wires(3).unwrap(), StageWires::uniform(3, WireDtype::F32));
        assert_eq!(auto.wire_dtype().unwrap(), WireDtype::F32);
        let fixed = Flags::parse_from(["t", "--mesh", "m.toml", "--wire", "f16"]).mesh;
        *fixed.chosen_wire.lock().unwrap() = Some(StageWires::uniform(1, WireDtype::Q8));
        assert_eq!(fixed.wire_dtype().unwrap(), WireDtype::F16);
        assert_eq!(fixed.stage_wires(2).unwrap(), StageWires::uniform(2, WireDtype::F16));
        let bad = Flags::parse_from(["t", "--mesh", "m.toml", "--wire", "f8"]).mesh;
        assert!(bad.wire_dtype().unwrap_err().to_string().contains("unknown --wire 'f8'"));
        // Per link: a pipeline's or hybrid's of as many stages; tensor parallelism refuses it.
        let per = Flags::parse_from(["t", "--mesh", "m.toml", "--wire", "hops=q8,f32"]).mesh;
        assert_eq!(per.stage_wires(2).unwrap(), StageWires::parse("hops=q8,f32").unwrap());
        assert!(per.stage_wires(3).unwrap_err().to_string().contains("2 stages; this mesh runs 3"));
        assert!(per.wire_dtype().unwrap_err().to_string().contains("tensor parallelism"));
        let bad = Flags::parse_from(["t", "--mesh", "m.toml", "--wire", "hops=q8,f9"]).mesh;
        assert!(bad.stage_wires(2).unwrap_err().to_string().contains("unknown element type 'f9'"));
    }
}
