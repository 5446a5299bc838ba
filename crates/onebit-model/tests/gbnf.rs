//! GBNF grammars against llama.cpp's own reader: `fixtures/gbnf/verdicts.json` holds
//! ik_llama.cpp's gbnf-validator's verdict on ~2000 inputs of the grammars beside it
//! (made by bench/gbnf/make-fixtures.py); the grammar reader must agree on every one,
//! including where an invalid input fails. Then the mask against a token-by-token reader.

use onebit_model::gbnf::Grammar;
use onebit_model::gbnf_machine::GrammarMachine;
use onebit_model::json_mode::TokenBytes;
use onebit_model::tokenizer::Tokenizer;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/gbnf"))
}

/// (valid, where it failed and how) as the validator reports it: characters read before the
/// one refused, or all of them and "Unexpected end of input".
fn verdict(g: &Arc<Grammar>, input: &str) -> (bool, Option<(usize, &'static str)>) {
    let mut m = GrammarMachine::new(g.clone());
    for (i, c) in input.chars().enumerate() {
        let mut buf = [0u8; 4];
        if !m.feed_all(c.encode_utf8(&mut buf).as_bytes()) {
            return (false, Some((i, "Unexpected character")));
        }
    }
    if m.can_end() {
        (true, None)
    } else {
        (false, Some((input.chars().count(), "Unexpected end of input")))
    }
}

#[test]
fn every_verdict_of_llama_cpp_is_ours() {
    let text = std::fs::read_to_string(fixtures().join("verdicts.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    let mut grammars: HashMap<String, Result<Arc<Grammar>, String>> = HashMap::new();
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() > 1500);
    for c in cases {
        let name = c["grammar"].as_str().unwrap();
        let g = grammars.entry(name.to_string()).or_insert_with(|| {
            let src = std::fs::read_to_string(fixtures().join(name)).unwrap();
            Grammar::parse(&src).map(Arc::new).map_err(|e| e.to_string())
        });
        if !c["parsed"].as_bool().unwrap() {
            assert!(g.is_err(), "{name}: llama.cpp refuses it, we parsed it");
            continue;
        }
        let g = g.as_ref().unwrap_or_else(|e| panic!("{name}: {e}"));
        let input = c["input"].as_str().unwrap();
        let (valid, at) = verdict(g, input);
        assert_eq!(valid, c["valid"].as_bool().unwrap(), "{name}: {input:?}");
        if let Some((pos, why)) = at {
            assert_eq!(pos as u64, c["error_pos"].as_u64().unwrap(), "{name}: {input:?}");
            assert_eq!(why, c["error"].as_str().unwrap(), "{name}: {input:?}");
        }
    }
}

/// Parse errors say what and where.
#[test]
fn grammar_errors_name_the_place() {
    for (text, says) in [
        ("root ::= \"a\"\nbad ::= [b-\n", "line 3, column 1: unexpected end of input in a class"),
        ("root ::= \"a\"\nbad ::= \"b\" & \"c\"\n", "line 2, column 13: expecting a newline"),
        ("root ::= \"a\" missing\n", "undefined rule missing"),
        ("root ::= x\nx ::= x \"1\" | \"1\"\n", "left recursion: rule x"),
        // Each time round leaves one more "x" to read: never ends, so refused.
        ("root ::= r\nr ::= g r \"x\" | \"y\"\ng ::= o\no ::= \"a\" | \"\"\n", "left recursion"),
        ("rot ::= \"a\"\n", "no root rule"),
        ("root ::= \"a\"{,2}\n", "expecting an int"),
        ("root ::= \"a\"{3,2}\n", "repetition"),
        ("root ::= \"a\"{2000}\n", "more than 1000"),
        ("root ::= *\n", "expecting an item before *"),
        ("root ::= \"\\q\"\n", "unknown escape"),
        ("root ::= \"a\"\nroot ::= \"b\"\n", "defined twice"),
        ("root ::= \"a\" )\n", "expecting a newline"),
        ("root ::= (\"a\"\n", "expecting )"),
        ("root ::= \"\\u12\"\n", "4 hex digits"),
    ] {
        let e = Grammar::parse(text).unwrap_err().to_string();
        assert!(e.contains(says), "{text:?}: {e}");
    }
}

/// Hostile grammars: an error or a reader, never a panic, a hang or a blow-up.
#[test]
fn hostile_grammars_are_refused_or_read() {
    let deep = format!("root ::= {}\"a\"{}\n", "(".repeat(5000), ")".repeat(5000));
    let _ = Grammar::parse(&deep);
    let huge = format!("root ::= \"{}\"{{1000}}\n", "a".repeat(1100));
    assert!(Grammar::parse(&huge).unwrap_err().to_string().contains("grows past"));
    // A million characters by references, not copies: fine.
    let g = Arc::new(Grammar::parse("root ::= (\"a\"{1000}){1000}\n").unwrap());
    assert!(GrammarMachine::new(g).feed_all(&[b'a'; 3000]));
    for t in ["", "root", "root ::= [", "root ::= \"", "root ::= [^", "::=", "root ::= \"\\"] {
        assert!(Grammar::parse(t).is_err(), "{t:?}");
    }
    // An ambiguous grammar read over a long input stays small: states are sets, not paths.
    let g = Arc::new(Grammar::parse("root ::= (\"a\" | \"a\" \"a\" | \"aaa\")*\n").unwrap());
    let mut m = GrammarMachine::new(g);
    assert!(m.feed_all("a".repeat(5000).as_bytes()) && m.can_end());
}

/// The mask lets through exactly the tokens whose bytes a fresh reader of the same text
/// accepts, on the shipped tokenizer, along a reply of the arithmetic grammar.
#[test]
fn the_mask_is_the_readers_verdict_per_token() {
    let tok = Tokenizer::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/austen.tokenizer.json"
    ))
    .unwrap();
    let bytes = TokenBytes::from_tokenizer(&tok);
    let n = tok.vocab_size();
    for name in ["arith.gbnf", "json.gbnf", "unicode.gbnf", "list.gbnf"] {
        let src = std::fs::read_to_string(fixtures().join(name)).unwrap();
        let g = Arc::new(Grammar::parse(&src).unwrap());
        let mut m = GrammarMachine::new(g.clone());
        let mut text: Vec<u8> = Vec::new();
        for step in 0..12 {
            let mut logits = vec![0f32; n];
            let left = m.mask(&bytes, &mut logits, Some(0));
            let mut allowed = Vec::new();
            for id in 1..n as u32 {
                let b = bytes.get(id);
                let mut fresh = GrammarMachine::new(g.clone());
                let ok = !b.is_empty() && fresh.feed_all(&text) && fresh.feed_all(b);
                assert_eq!(
                    ok,
                    logits[id as usize] == 0.0,
                    "{name} after {:?}: token {id} {:?}",
                    String::from_utf8_lossy(&text),
                    String::from_utf8_lossy(b)
                );
                if ok {
                    allowed.push(id);
                }
            }
            assert_eq!(m.can_end(), logits[0] == 0.0);
            assert_eq!(left, allowed.len() + m.can_end() as usize);
            if allowed.is_empty() {
                break;
            }
            // Take an allowed token (spread over the choices), as sampling would.
            let pick = allowed[(step * 7919) % allowed.len()];
            assert!(m.feed_all(bytes.get(pick)));
            text.extend_from_slice(bytes.get(pick));
        }
    }
}
