//! Shards of a model file for the device mesh, on the shipped model and on the files
//! llama.cpp, ik_llama.cpp and bitnet.cpp wrote themselves: a block shard holds exactly its
//! blocks' tensors, byte for byte, the source's metadata and config, and a checksum that
//! verifies; a whole shard gives bit-identical logits; a flipped byte fails the checksum.

use onebit_model::gguf::GgufFile;
use onebit_model::load::{GgufModelFile, LoadOptions};
use onebit_model::shard::{shard_identity, ShardSpan, ShardWriter};
use onebit_model::{KvDtype, Model, ModelConfig, Session, SessionOptions};
use std::io::Cursor;

fn files() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut v = vec![format!("{root}/../../models/austen.gguf")];
    for p in ["llamacpp-tq2_0", "llamacpp-tq1_0", "ik-iq2_bn", "bitnetcpp-i2_s"] {
        v.push(format!("{root}/tests/fixtures/peers/{p}.gguf"));
    }
    v
}

/// The shard's bytes as a receiver stores them: written, then the checksum patched in.
fn shard(src: &GgufModelFile, span: &ShardSpan) -> Vec<u8> {
    let w = ShardWriter::new(src, span, &[7; 32]).unwrap();
    let total = w.planned_len().unwrap();
    let mut out = Cursor::new(Vec::new());
    let mut last = (0, 0);
    let (at, patch) = w.write(&mut out, &mut |d, t| last = (d, t)).unwrap();
    let mut b = out.into_inner();
    assert_eq!(b.len() as u64, total);
    assert_eq!(last, (total, total));
    b[at as usize..at as usize + patch.len()].copy_from_slice(&patch);
    b
}

fn logits(path: &str) -> Vec<f32> {
    let m =
        Model::from_pretrained(path, &LoadOptions { threads: 1, ..Default::default() }).unwrap();
    let o = SessionOptions { max_ctx: 32, max_batch: 8, slots: 1, kv: KvDtype::F32 };
    let mut s = Session::with_options(&m, o);
    let l = s.forward(&[1, 5, 9, 2]).unwrap().to_vec();
    l
}

#[test]
fn a_block_shard_holds_its_blocks_byte_for_byte_and_verifies() {
    for path in files() {
        let src = GgufModelFile::open(&path).unwrap();
        let config = ModelConfig::from_gguf(&src.header).unwrap();
        // Blocks 1..n-1 (the peers' files have two blocks: the second).
        let end = if config.layers > 2 { config.layers - 1 } else { config.layers };
        let span = ShardSpan::Blocks(1..end);
        let b = shard(&src, &span);
        let g = GgufFile::parse(&b).unwrap();
        g.verify_checksum(&b).unwrap();
        assert_eq!(ModelConfig::from_gguf(&g).unwrap(), config, "{path}");
        assert_eq!(shard_identity(&g), Some(("07".repeat(32), span)), "{path}");
        let mut want = 0;
        for t in &src.header.tensors {
            let block = t.name.strip_prefix("blk.").and_then(|r| r.split('.').next());
            let inside =
                block.and_then(|n| n.parse::<usize>().ok()).is_some_and(|n| (1..end).contains(&n));
            match g.tensor(&t.name) {
                Some(s) => {
                    assert!(inside, "{path}: {} is not in the span", t.name);
                    assert_eq!((&s.dims, s.ty), (&t.dims, t.ty));
                    assert_eq!(g.data(&b, s), src.tensor(&t.name).unwrap().1, "{}", t.name);
                    want += 1;
                }
                None => assert!(!inside, "{path}: {} missing", t.name),
            }
        }
        assert_eq!(g.tensors.len(), want);
        for (k, v) in &src.header.metadata {
            if k != onebit_model::gguf::CHECKSUM_KEY {
                assert_eq!(g.get(k), Some(v), "{path}: {k}");
            }
        }
        // One flipped bit of tensor data is caught.
        let mut bad = b.clone();
        let last = bad.len() - 1 - (bad.len() - 1 - g.data_offset as usize) / 2;
        bad[last] ^= 1;
        assert!(GgufFile::parse(&bad).unwrap().verify_checksum(&bad).is_err());
    }
}

#[test]
fn a_whole_shard_runs_bit_identically() {
    let tmp = tempfile::Builder::new().prefix("onebit-shard-").tempdir().unwrap();
    let dir = tmp.path();
    for path in files() {
        let src = GgufModelFile::open(&path).unwrap();
        let b = shard(&src, &ShardSpan::Whole);
        assert_eq!(GgufFile::parse(&b).unwrap().tensors.len(), src.header.tensors.len());
        let out = dir.join("whole.gguf");
        std::fs::write(&out, &b).unwrap();
        assert_eq!(logits(&out.display().to_string()), logits(&path), "{path}");
    }
}

#[test]
fn spans_cover_what_they_hold_and_nothing_else() {
    let (w, b) = (ShardSpan::Whole, |a, z| ShardSpan::Blocks(a..z));
    assert!(w.covers(&w) && w.covers(&b(0, 3)));
    assert!(b(2, 9).covers(&b(2, 9)) && b(2, 9).covers(&b(3, 5)));
    assert!(!b(2, 9).covers(&b(1, 5)) && !b(2, 9).covers(&b(5, 10)) && !b(0, 30).covers(&w));
    let src = GgufModelFile::open(&files()[0]).unwrap();
    for bad in [b(3, 3), b(4, 2), b(0, 99)] {
        assert!(ShardWriter::new(&src, &bad, &[0; 32]).is_err(), "{bad:?}");
    }
}
