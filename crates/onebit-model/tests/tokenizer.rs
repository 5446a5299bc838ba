//! The byte-level BPE tokenizer built from a GGUF file's own vocabulary (as bitnet.cpp and
//! llama.cpp write it): merges apply, control tokens are special, BOS is added, text round-trips.

use onebit_model::gguf::{GgufFile, GgufWriter, Value};
use onebit_model::Tokenizer;

fn gguf_with_vocab(pre: &str) -> Vec<u8> {
    let mut alphabet: Vec<char> =
        tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let mut tokens: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
    tokens.extend(["he", "ll", "hell", "34", "<|begin|>"].map(String::from));
    let mut types = vec![Value::I32(1); tokens.len()];
    *types.last_mut().unwrap() = Value::I32(3);
    let meta = vec![
        ("general.architecture".to_string(), Value::String("llama".into())),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String(pre.into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(["h e", "l l", "he ll", "3 4"].map(|m| Value::String(m.into())).to_vec()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::U32(tokens.len() as u32 - 1)),
    ];
    GgufWriter::new(Vec::new(), &meta, &[]).unwrap().finish().unwrap()
}

#[test]
fn gguf_vocabulary_encodes_and_round_trips() {
    for pre in ["llama-bpe", "gpt2", "gpt-2", "default"] {
        let bytes = gguf_with_vocab(pre);
        let g = GgufFile::parse(&bytes).unwrap();
        let t = Tokenizer::from_gguf(&g).unwrap();
        let bos = t.token_id("<|begin|>").unwrap();
        let ids = t.encode("hello wörld", true).unwrap();
        assert_eq!(ids[0], bos, "{pre}: BOS first");
        assert_eq!(ids[1], t.token_id("hell").unwrap(), "{pre}: merges applied");
        assert_eq!(t.decode(&ids).unwrap(), "hello wörld", "{pre}");
        // The control token in text is one special token, not its bytes.
        let ids = t.encode("<|begin|>hi", false).unwrap();
        assert_eq!(ids[0], bos);
    }
}

#[test]
fn unsupported_or_broken_vocabularies_are_errors() {
    let meta = vec![("tokenizer.ggml.model".to_string(), Value::String("llama".into()))];
    let b = GgufWriter::new(Vec::new(), &meta, &[]).unwrap().finish().unwrap();
    assert!(Tokenizer::from_gguf(&GgufFile::parse(&b).unwrap()).is_err());
    let meta = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), Value::Array(vec![Value::String("a".into())])),
        ("tokenizer.ggml.merges".into(), Value::Array(vec![Value::String("nospace".into())])),
    ];
    let b = GgufWriter::new(Vec::new(), &meta, &[]).unwrap().finish().unwrap();
    assert!(Tokenizer::from_gguf(&GgufFile::parse(&b).unwrap()).is_err());
    // A pre-tokenizer whose regexes onebit does not implement is refused, not guessed.
    let e = Tokenizer::from_gguf(&GgufFile::parse(&gguf_with_vocab("qwen2")).unwrap());
    assert!(e.err().unwrap().to_string().contains("pre-tokenizer 'qwen2'"));
}

#[test]
fn llama_cpp_default_pre_tokenizer_splits_digits_in_threes() {
    // GPT-2's regex keeps "1234" one piece, so the merge "3 4" applies; llama.cpp's DEFAULT
    // cuts digit runs into triples ("123" | "4"), so it cannot.
    let tok =
        |pre: &str| Tokenizer::from_gguf(&GgufFile::parse(&gguf_with_vocab(pre)).unwrap()).unwrap();
    let (gpt2, default) = (tok("gpt-2"), tok("default"));
    let merged = gpt2.token_id("34").unwrap();
    assert!(gpt2.encode("1234", false).unwrap().contains(&merged));
    let ids = default.encode("1234", false).unwrap();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(default.decode(&ids).unwrap(), "1234");
}
