//! The fused ops training is built from, one per file, each a `<op>_forward` /
//! `<op>_backward` pair in llm.c's style: arguments are outputs, then inputs, then sizes;
//! gradient buffers are named `d<name>`; parameter and input gradients ACCUMULATE (`+=`), so
//! one tensor may feed several ops. Rows are tokens (`batch · seq`), row-major.
//!
//! Each op is written by hand rather than derived by a general autograd because the fused
//! form is where the speed is (one pass over memory instead of five) and because BitLinear's
//! straight-through estimator is not the derivative of anything.

pub mod act;
pub mod attention;
pub mod bitlinear;
pub mod bitlinear_layer;
pub mod cross_entropy;
pub mod embedding;
pub mod linear;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
