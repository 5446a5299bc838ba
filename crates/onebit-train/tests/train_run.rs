//! End to end on real text (Persuasion, committed in data/): train a BPE tokenizer, train a
//! tiny BitNet for a CI-sized run and beat the unigram baseline; checkpoint/resume is
//! bit-identical; the exported GGUF runs in the engine with the training model's logits.

use onebit_model::config::Activation;
use onebit_model::load::{load_gguf, LoadOptions};
use onebit_model::{HeadKind, ModelConfig, Session, Tokenizer};
use onebit_train::data::{read_documents, tokenize, train_tokenizer, TokenData};
use onebit_train::export::{export_gguf, ExportOptions};
use onebit_train::schedule::Schedule;
use onebit_train::trainer::{TrainConfig, Trainer};
use onebit_train::{checkpoint, Error};

fn corpus() -> String {
    format!("{}/../../data/persuasion.txt", env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder (gone when the `TempDir` drops, a failed test's too) and its path.
fn tmp(name: &str) -> (tempfile::TempDir, String) {
    let d = tempfile::Builder::new().prefix(&format!("onebit-train-{name}-")).tempdir().unwrap();
    let path = d.path().display().to_string();
    (d, path)
}

fn data(dir: &str, vocab: usize) -> (TokenData, Tokenizer, String) {
    let tj = format!("{dir}/tokenizer.json");
    train_tokenizer(&[corpus()], vocab, &tj).unwrap();
    let tok = Tokenizer::from_file(&tj).unwrap();
    let docs = read_documents(&[corpus()]).unwrap();
    let ids = tokenize(&tok, &docs, tok.token_id("<|endoftext|>")).unwrap();
    (TokenData::split(ids, 0.1), tok, tj)
}

fn config(vocab: usize, steps: u64) -> TrainConfig {
    TrainConfig {
        model: ModelConfig {
            hidden: 64,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            head_dim: 16,
            intermediate: 128,
            vocab,
            max_positions: 64,
            rope_theta: 10_000.0,
            rope_interleaved: false,
            rms_eps: 1e-5,
            act: Activation::Relu2,
            sub_norms: true,
            tied_embeddings: true,
            bos: None,
            eos: None,
        },
        seq: 64,
        batch: 8,
        accum: 1,
        schedule: Schedule { lr: 4e-3, warmup: 20, steps, ..Default::default() },
        adamw: Default::default(),
        seed: 1,
        threads: 2,
        checkpointing: false,
        clipped_ste: false,
        lambda_warmup: 0,
        int8_backward: false,
        eval_every: 0,
        eval_batches: 8,
        monitor_every: 50,
        save_every: 0,
        val_share: 0.1,
    }
}

#[test]
fn short_run_beats_the_unigram_baseline() {
    short_run(false);
}

#[test]
fn short_run_with_int8_backward_beats_the_unigram_baseline() {
    short_run(true);
}

fn short_run(int8_backward: bool) {
    let (_scratch, dir) = tmp(if int8_backward { "run8" } else { "run" });
    let (data, tok, _) = data(&dir, 512);
    let mut cfg = config(tok.vocab_size(), 200);
    cfg.int8_backward = int8_backward;
    let mut t = Trainer::new(cfg).unwrap();
    let before = t.evaluate(&data.val, 8).unwrap();
    let mut reports = 0;
    for _ in 0..200 {
        let r = t.train_step(&data).unwrap();
        if let Some(m) = r.monitor {
            reports += 1;
            assert_eq!(m.layers.len(), 2 * 7);
            let l = &m.layers[0];
            assert!(
                (l.neg + l.zero + l.pos - 1.0).abs() < 1e-4
                    && l.act_clip > 0.0
                    && l.grad_norm > 0.0
            );
        }
    }
    let after = t.evaluate(&data.val, 8).unwrap();
    let unigram = data.unigram_baseline(tok.vocab_size());
    println!(
        "int8 backward {int8_backward}: val loss {before:.3} -> {after:.3} (unigram baseline {unigram:.3}, ppl {:.1})",
        after.exp()
    );
    assert_eq!(reports, 4);
    assert!(after < unigram, "val loss {after} did not get below the unigram baseline {unigram}");
}

#[test]
fn a_stop_during_a_message_ends_the_run_after_that_step() {
    // An observer turning Ctrl-C into a stop may meet it at the monitor's message, not at the
    // step event: the run still stops after that step, with its checkpoint.
    let (_scratch, dir) = tmp("stop");
    let (data, tok, _) = data(&dir, 512);
    let mut t = Trainer::new(config(tok.vocab_size(), 200)).unwrap();
    let mut stopped_at = None;
    let mut on = |ev: onebit_train::run::RunEvent<'_>| match ev {
        onebit_train::run::RunEvent::Message(m)
            if m.starts_with("step ") && stopped_at.is_none() =>
        {
            stopped_at = Some(m.to_string());
            false
        }
        _ => true,
    };
    let finished = onebit_train::run::train_loop(&mut t, &data, &dir, &mut on).unwrap();
    assert!(!finished);
    assert_eq!(t.step, 50, "stopped at {stopped_at:?}");
    assert!(std::path::Path::new(&format!("{dir}/checkpoint.safetensors")).exists());
    let lines = std::fs::read_to_string(format!("{dir}/metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 50);
}

#[test]
fn resume_continues_bit_identically() {
    let (_scratch, dir) = tmp("resume");
    let (data, tok, _) = data(&dir, 400);
    let mut cfg = config(tok.vocab_size(), 10);
    cfg.accum = 2;
    cfg.batch = 2;
    let mut a = Trainer::new(cfg.clone()).unwrap();
    for _ in 0..3 {
        a.train_step(&data).unwrap();
    }
    let ck = format!("{dir}/ck.safetensors");
    checkpoint::save(&a, &ck).unwrap();
    let straight: Vec<u32> = (0..3).map(|_| a.train_step(&data).unwrap().loss.to_bits()).collect();
    let mut b = checkpoint::load(&ck, None).unwrap();
    assert_eq!(b.step, 3);
    let resumed: Vec<u32> = (0..3).map(|_| b.train_step(&data).unwrap().loss.to_bits()).collect();
    assert_eq!(straight, resumed);
    assert_eq!(a.model.params.values, b.model.params.values);

    // Hostile checkpoints: truncated, not safetensors, wrong shape.
    let bytes = std::fs::read(&ck).unwrap();
    let cut = format!("{dir}/cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(checkpoint::load(&cut, None), Err(Error::Checkpoint { .. })));
    std::fs::write(&cut, b"not a checkpoint").unwrap();
    assert!(matches!(checkpoint::load(&cut, None), Err(Error::Checkpoint { .. })));
    let mut other = cfg.clone();
    other.model.hidden = 32;
    other.model.head_dim = 8;
    assert!(checkpoint::load(&ck, Some(other)).is_err());
}

#[test]
fn exported_model_runs_in_the_engine_with_the_same_logits() {
    export_check(false);
}

#[test]
fn exported_llama_model_runs_in_the_engine_with_the_same_logits() {
    export_check(true);
}

fn export_check(llama: bool) {
    let (_scratch, dir) = tmp(if llama { "export-llama" } else { "export" });
    let (data, tok, tj) = data(&dir, 400);
    let mut cfg = config(tok.vocab_size(), 30);
    if llama {
        cfg.model.act = Activation::Silu;
        cfg.model.sub_norms = false;
        cfg.model.tied_embeddings = false;
        cfg.model.rope_interleaved = true;
    }
    let mut t = Trainer::new(cfg).unwrap();
    for _ in 0..30 {
        t.train_step(&data).unwrap();
    }
    let path = format!("{dir}/m.gguf");
    let opts = ExportOptions { f32_embeddings: true, ..Default::default() };
    let tjson = std::fs::read_to_string(&tj).unwrap();
    export_gguf(&t.model, Some(&tjson), &path, &[], &opts).unwrap();
    let prompt: Vec<u32> = data.val[..24].to_vec();
    let want = t.logits(&prompt).unwrap();
    let model =
        load_gguf(&path, &LoadOptions { threads: 2, head: HeadKind::F32, ..Default::default() })
            .unwrap();
    let mut s = Session::new(&model, 64, 64);
    let vocab = tok.vocab_size();
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    for (i, &id) in prompt.iter().enumerate() {
        let got = s.forward(&[id]).unwrap();
        let row = &want[i * vocab..(i + 1) * vocab];
        let err = got.iter().zip(row).fold(0.0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < 1e-3, "position {i}: relative error {err}");
    }
    // The tokenizer travels inside the GGUF file.
    let from_file = Tokenizer::for_model(&path).unwrap();
    let text = "It was a truth, Anne thought.";
    assert_eq!(from_file.encode(text, false).unwrap(), tok.encode(text, false).unwrap());
}

mod mutation {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// A checkpoint with random bytes overwritten loads or fails with an error, never panics.
        #[test]
        fn mutated_checkpoints_never_panic(pos in any::<prop::sample::Index>(), vals in prop::collection::vec(any::<u8>(), 1..16)) {
            let (_scratch, dir) = tmp("mutate");
            let ck = format!("{dir}/ck.safetensors");
            if !std::path::Path::new(&ck).exists() {
                let mut cfg = config(64, 2);
                cfg.model.layers = 1;
                checkpoint::save(&Trainer::new(cfg).unwrap(), &ck).unwrap();
            }
            let mut bytes = std::fs::read(&ck).unwrap();
            // Bias towards the header, where the structure is.
            let limit = if pos.index(2) == 0 { 512.min(bytes.len()) } else { bytes.len() };
            let at = pos.index(limit);
            for (i, v) in vals.iter().enumerate() {
                if at + i < bytes.len() {
                    bytes[at + i] = *v;
                }
            }
            let bad = format!("{dir}/bad-{}.safetensors", at);
            std::fs::write(&bad, &bytes).unwrap();
            let _ = checkpoint::load(&bad, None);
            std::fs::remove_file(&bad).unwrap();
        }
    }
}

#[test]
fn clipped_ste_zeroes_the_gradient_of_saturated_latents() {
    let (_scratch, dir) = tmp("clip");
    let (data, tok, _) = data(&dir, 300);
    let mut cfg = config(tok.vocab_size(), 5);
    cfg.clipped_ste = true;
    cfg.batch = 2;
    let mut t = Trainer::new(cfg).unwrap();
    // Push some latents far outside the rounding range.
    let id = t.model.params.find("blk.0.attn_q.weight").unwrap();
    t.model.params.value_mut(id).iter_mut().step_by(7).for_each(|v| *v *= 40.0);
    t.refresh().unwrap();
    let before = t.model.params.value(id).to_vec();
    let gamma = t.model.params.ternary(id).unwrap().gamma;
    t.train_step(&data).unwrap();
    let g = t.model.params.grad(id);
    let saturated: Vec<usize> =
        (0..before.len()).filter(|&i| (before[i] / gamma).abs() > 1.5).collect();
    assert!(!saturated.is_empty());
    assert!(saturated.iter().all(|&i| g[i] == 0.0), "saturated latents got a gradient");
    assert!(g.iter().any(|&v| v != 0.0), "the others still learn");
}
