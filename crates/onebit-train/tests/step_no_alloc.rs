//! A training step reuses its buffers. After two warm-up steps (the tape sizes its slots, pool
//! threads grow their kernel scratch), refreshing the ternary caches, resetting the tape and
//! zeroing gradients allocate nothing, and a whole forward + backward pass allocates the same
//! small number of blocks every step, with gradient checkpointing off and on: what remains are
//! the `gemm` crate's per-call packing buffers in the dense f32 products (the head, dX), which
//! that crate allocates itself. Counted on every thread of the process.

#[path = "../../onebit-kernels/tests/common/alloc_count.rs"]
mod alloc_count;

use alloc_count::{allocations, assert_counter_works};
use onebit_model::ModelConfig;
use onebit_train::model::TrainModel;
use onebit_train::Tape;

#[test]
fn training_steps_reuse_their_buffers() {
    assert_counter_works();
    let config =
        ModelConfig { vocab: 64, max_positions: 16, ..ModelConfig::preset("tiny").unwrap() };
    let (batch, seq) = (2, 8);
    let tokens: Vec<u32> = (0..batch * seq).map(|i| (i * 7 % 64) as u32).collect();
    let targets: Vec<u32> = tokens.iter().map(|t| (t + 1) % 64).collect();
    for checkpointing in [false, true] {
        let mut m = TrainModel::new(config.clone(), 1).unwrap();
        let mut tape = Tape::new(2);
        tape.set_checkpointing(checkpointing);
        for _ in 0..2 {
            m.params.refresh_ternary(1.0, tape.pool()).unwrap();
            tape.reset(batch, seq, &tokens, &targets, config.vocab).unwrap();
            m.forward(&mut tape).unwrap();
            m.params.zero_grads();
            tape.backward(&mut m.params).unwrap();
        }
        let mut per_step = Vec::new();
        for _ in 0..3 {
            let refresh = allocations(|| m.params.refresh_ternary(1.0, tape.pool()).unwrap());
            let reset =
                allocations(|| tape.reset(batch, seq, &tokens, &targets, config.vocab).unwrap());
            let zero = allocations(|| m.params.zero_grads());
            assert_eq!((refresh, reset, zero), (0, 0, 0), "checkpointing {checkpointing}");
            per_step.push(allocations(|| {
                m.forward(&mut tape).unwrap();
                tape.backward(&mut m.params).unwrap();
            }));
        }
        eprintln!("checkpointing {checkpointing}: {per_step:?} allocations per forward+backward");
        assert!(per_step.iter().all(|&n| n == per_step[0]), "{per_step:?}");
    }
}
