//! onebit-dist: the device mesh (one model across several consumer machines). The pipeline
//! executor ([`pipeline`]) runs a model's blocks split over the nodes, the tensor-parallel
//! executor ([`tensor`]) a piece of every block on every node, the hybrid ([`hybrid`]) a
//! pipeline of tensor-parallel groups, all behind the engine seam
//! (`onebit_model::Engine`) and started from a mesh file by [`launch`]. Underneath, the
//! communication layer moves bytes between nodes: the
//! [`Comm`] trait (send and receive with a deadline on every call) with an in-process backend
//! for tests ([`InProcComm`]) and a TCP backend for home clusters ([`TcpComm`]: TCP_NODELAY,
//! versioned length-prefixed frames with a size limit, authenticated and encrypted with the
//! Noise protocol and a pre-shared key through the `snow` crate), and the collectives a
//! tensor-parallel step needs ([`collective`]), deterministic so every rank holds bit-identical
//! sums.
//!
//! Why hand-written: the collectives are a few loops over `send`/`recv` whose order must be
//! deadlock-free on blocking sockets and whose summation order must be the same on every rank;
//! the cryptography is `snow`'s, the framing is ours because it carries the size limit and
//! version check a rogue peer must hit before any allocation.

// Only the MPI backend needs `unsafe` (see its module documentation).
#![cfg_attr(not(feature = "mpi"), forbid(unsafe_code))]
#![cfg_attr(feature = "mpi", deny(unsafe_code))]

pub mod auto;
pub mod bootstrap;
pub mod collective;
pub mod comm;
pub mod error;
pub mod frame;
pub mod hybrid;
pub mod inproc;
pub mod key;
pub mod launch;
pub mod launch_ranks;
pub mod link_emulation;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod pipeline;
pub mod plan;
mod plan_stages;
pub mod probe;
pub mod shard_stream;
mod sock;
pub mod speed;
pub mod stage_job;
pub mod stage_wires;
pub mod tcp;
pub mod tensor;
mod tensor_msg;
pub mod wire;
pub mod worker_stage;
pub mod worker_tensor;

pub use comm::Comm;
pub use error::{DistError, Result};
pub use inproc::InProcComm;
pub use tcp::{TcpComm, TcpConfig};
