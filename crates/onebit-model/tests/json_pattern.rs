//! `pattern` in structured output against the `jsonschema` crate: every short JSON string
//! over an alphabet of characters and escapes, for a set of ECMA-262 patterns, is completed
//! by the machine exactly when jsonschema accepts it (within the subset the machine writes:
//! no `\u` escapes), and no prefix the machine accepts is a dead end.

use onebit_model::json_schema::JsonSchema;
use onebit_model::schema_machine::SchemaMachine;
use serde_json::{json, Value};

/// Patterns a schema may carry, from pydantic/OpenAI examples and the corners of ECMA-262.
const PATTERNS: &[&str] = &[
    r"^[a-z]+$",
    r"ab",
    r"^\d{1,2}-\d$",
    r"^\w+\.?$",
    r"^(a|b1)*$",
    r"^[^a]*$",
    r"\s",
    r"^.a$",
    r"^\S+$",
    r#"^"?\\?$"#,
    r"^é[a-é]?$",
    r"1$",
    r"^\bab?",
    r"^-?\d+(\.\d+)?$",
    r"^[A-Z]{1,2}\d?$|^$",
    // After `a` only control characters JSON must write as `\u` escapes, which the machine
    // does not write: `a` is refused at once rather than left as a dead end.
    r"^a[\x01\x02]|^b",
];

/// Patterns beside `minLength` / `maxLength` (None: no maxLength), as pydantic's
/// `constr(min_length=..., max_length=..., pattern=...)` writes them.
const BOUNDED: &[(&str, u32, Option<u32>)] = &[
    (r"^[a-z]+$", 2, Some(3)),
    ("ab", 0, Some(3)),
    ("1$", 3, None),
    (r"^\w+\.?$", 1, Some(2)),
    (r"^(a|b1)*$", 2, Some(4)),
    (r"^.a$", 2, Some(2)),
    ("é", 2, Some(4)),
    (r"\s", 0, Some(1)),
    ("^[^a]*$", 3, None),
    (r#"^"?\\?$"#, 2, Some(2)),
];

/// Every pattern schema the tests walk: each pattern alone, then the bounded ones.
fn schemas() -> Vec<Value> {
    let plain = PATTERNS.iter().map(|p| json!({"type": "string", "pattern": p}));
    let bounded = BOUNDED.iter().map(|&(p, min, max)| {
        let mut v = json!({"type": "string", "pattern": p, "minLength": min});
        if let Some(max) = max {
            v["maxLength"] = json!(max);
        }
        v
    });
    plain.chain(bounded).collect()
}

/// The pieces a string is made of: characters, escapes, multi-byte UTF-8, a `\u` escape
/// (which the machine does not write) and an Arabic-Indic digit (`\d` is ASCII in ECMA).
const PIECES: &[&str] =
    &["a", "b", "1", "-", " ", "é", "\\\"", "\\\\", "\\n", "\\u0061", ".", "A", "٣"];

fn strings(len: usize) -> Vec<String> {
    let mut all = vec![String::new()];
    let mut layer = vec![String::new()];
    for _ in 0..len {
        layer = layer.iter().flat_map(|t| PIECES.iter().map(move |p| format!("{t}{p}"))).collect();
        all.extend(layer.iter().cloned());
    }
    all
}

#[test]
fn patterns_agree_with_jsonschema_on_every_short_string() {
    let texts = strings(4);
    for schema in schemas() {
        let pattern = &schema;
        let s = JsonSchema::compile(&schema).unwrap_or_else(|e| panic!("{pattern}: {e}"));
        let validator = jsonschema::validator_for(&schema).unwrap();
        let ascii_only = schema["pattern"].as_str().unwrap().contains(r"\b");
        let (mut accepted, mut checked) = (0, 0);
        for body in &texts {
            let doc = format!("\"{body}\"");
            let mut m = SchemaMachine::new();
            let fed = m.feed_all(&s, doc.as_bytes());
            let v: Value = serde_json::from_str(&doc).unwrap();
            let valid = validator.is_valid(&v);
            let subset = !body.contains("\\u") && (!ascii_only || v.as_str().unwrap().is_ascii());
            assert!(!fed || valid, "{doc} completed but refused by jsonschema for {pattern}");
            assert!(!valid || !subset || fed, "{doc} valid but refused for {pattern}");
            // Every prefix the machine takes (here: the body without its closing quote)
            // goes on: some byte is accepted (that a close stays reachable, not only a next
            // byte, is the walks' test below).
            let mut open = SchemaMachine::new();
            if open.feed_all(&s, &doc.as_bytes()[..doc.len() - 1]) {
                assert!(
                    (0..=255u8).any(|b| open.clone().feed(&s, b)),
                    "dead end after {} for {pattern}",
                    &doc[..doc.len() - 1]
                );
                checked += 1;
            }
            accepted += fed as usize;
        }
        // Each pattern both accepts and refuses some strings of the alphabet.
        assert!(accepted > 0 && accepted < texts.len(), "{pattern}: {accepted} accepted");
        assert!(checked > 0, "{pattern}");
    }
}

/// From wherever a random walk through the bytes the machine allows has got to (partway
/// through a multi-byte character or an escape too), the string can still be closed: a
/// breadth-first search over the machine's states finds the closing quote.
#[test]
fn random_walks_inside_patterned_strings_can_always_close() {
    let extra = [r"^\n\t$", r"^[\u00e9-\u00ea]{2}$", r"x{3,5}y", r"^(ab|cd)+$"];
    let extra = extra.iter().map(|p| json!({"type": "string", "pattern": p}));
    let long = [(r"^(ab|cde)+$", 9, 10), ("x", 30, 40), (r"^[^é]*é", 5, 5)];
    let long = long
        .iter()
        .map(|(p, a, b)| json!({"type": "string", "pattern": p, "minLength": a, "maxLength": b}));
    let formats = ["date", "time", "date-time", "uuid", "ipv4"];
    let formats = formats.iter().map(|f| json!({"type": "string", "format": f}));
    for schema in schemas().into_iter().chain(extra).chain(long).chain(formats) {
        let pattern = &schema;
        let s = JsonSchema::compile(&schema).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        for steps in 0..24 {
            let mut m = SchemaMachine::new();
            let mut doc = vec![b'"'];
            assert!(m.feed(&s, b'"'));
            for _ in 0..steps {
                let ok: Vec<u8> =
                    (0..=255u8).filter(|&b| b != b'"' && m.clone().feed(&s, b)).collect();
                if ok.is_empty() {
                    break;
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let b = ok[(rng % ok.len() as u64) as usize];
                assert!(m.feed(&s, b));
                doc.push(b);
            }
            // Shortest completion, over distinct machine states.
            let mut seen = vec![m];
            let mut frontier = vec![(m, doc.clone())];
            let mut closed = None;
            while closed.is_none() && !frontier.is_empty() && seen.len() < 4_000 {
                let mut next = Vec::new();
                for (m, d) in &frontier {
                    for b in 0..=255u8 {
                        let mut n = *m;
                        if !n.feed(&s, b) || seen.contains(&n) {
                            continue;
                        }
                        let mut d = d.clone();
                        d.push(b);
                        if n.is_done() {
                            closed = Some(d);
                            break;
                        }
                        seen.push(n);
                        next.push((n, d));
                    }
                }
                frontier = next;
            }
            let text = String::from_utf8_lossy(&doc).into_owned();
            let closed =
                closed.unwrap_or_else(|| panic!("{pattern}: no way to close after {text}"));
            let v: Value = serde_json::from_slice(&closed).unwrap();
            assert!(validator.is_valid(&v), "{v} for {pattern}");
        }
    }
}

#[test]
fn patterns_inside_objects_and_tool_calls() {
    let schema = json!({"type": "object", "properties": {
        "code": {"type": "string", "pattern": "^[A-Z]{3}-\\d{2}$"},
        "note": {"type": "string"}}, "required": ["code"]});
    let s = JsonSchema::compile(&schema).unwrap();
    for (doc, ok) in [
        (r#"{"code": "ABC-12", "note": "x"}"#, true),
        (r#"{"code": "ABC-1"}"#, false),
        (r#"{"code": "abc-12"}"#, false),
    ] {
        let mut m = SchemaMachine::new();
        assert_eq!(m.feed_all(&s, doc.as_bytes()) && m.is_done(), ok, "{doc}");
    }
    let tools = vec![(
        "lookup".to_string(),
        Some(
            json!({"type": "object", "properties": {"zip": {"pattern": "^\\d{5}$"}}, "required": ["zip"]}),
        ),
    )];
    let s = JsonSchema::tool_call(&tools).unwrap();
    let call = r#"{"name": "lookup", "arguments": {"zip": "02139"}}"#;
    let mut m = SchemaMachine::new();
    assert!(m.feed_all(&s, call.as_bytes()) && m.is_done());
    let mut m = SchemaMachine::new();
    assert!(!m.feed_all(&s, br#"{"name": "lookup", "arguments": {"zip": "0213x"#));
}

/// `format`: the machine completes a string exactly when jsonschema (formats checked)
/// accepts it, within the subset it writes (capital `T` and `Z`, no leap second), over
/// every month and day of leap and common years, times at their edges, and IPv4 octets.
#[test]
fn formats_agree_with_jsonschema() {
    let check = |format: &str, texts: &[String], subset: &dyn Fn(&str) -> bool| {
        let schema = json!({"type": "string", "format": format});
        let s = JsonSchema::compile(&schema).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let mut accepted = 0;
        for t in texts {
            let doc = format!("\"{t}\"");
            let mut m = SchemaMachine::new();
            let done = m.feed_all(&s, doc.as_bytes()) && m.is_done();
            let valid = validator.is_valid(&json!(t));
            assert!(!done || valid, "{format}: {t} completed but invalid");
            assert!(!valid || !subset(t) || done, "{format}: {t} valid but refused");
            accepted += done as usize;
        }
        assert!(accepted > 0 && accepted < texts.len(), "{format}: {accepted}");
    };
    let mut dates = Vec::new();
    for y in ["0000", "1900", "1999", "2000", "2023", "2024", "2100", "2400"] {
        for m in 0..=13 {
            for d in 0..=32 {
                dates.push(format!("{y}-{m:02}-{d:02}"));
            }
        }
    }
    check("date", &dates, &|_| true);
    let mut times = Vec::new();
    for h in ["00", "09", "19", "23", "24"] {
        for mi in ["00", "59", "60"] {
            for s in ["00", "59", "60"] {
                for frac in ["", ".5", ".", ".123456789"] {
                    for off in ["Z", "z", "+00:00", "-23:59", "+24:00", "", "+05", "-05:60"] {
                        times.push(format!("{h}:{mi}:{s}{frac}{off}"));
                    }
                }
            }
        }
    }
    let subset = |t: &str| !t.contains('z') && &t[6..8] != "60";
    check("time", &times, &subset);
    let date_times: Vec<String> = ["2024-02-29", "2023-02-29", "2000-12-31"]
        .iter()
        .flat_map(|d| times.iter().step_by(7).map(move |t| format!("{d}T{t}")))
        .collect();
    check("date-time", &date_times, &|t| subset(&t[11..]));
    let octets = ["0", "00", "01", "9", "10", "99", "100", "199", "249", "250", "255", "256"];
    let ips: Vec<String> = (0..octets.len().pow(4))
        .map(|i| {
            let o = |k: u32| octets[i / octets.len().pow(k) % octets.len()];
            format!("{}.{}.{}.{}", o(0), o(1), o(2), o(3))
        })
        .collect();
    check("ipv4", &ips, &|_| true);
    let uuids: Vec<String> = [
        "123e4567-e89b-12d3-a456-426614174000",
        "123E4567-E89B-12D3-A456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "123e4567-e89b-12d3-a456-42661417400",
        "123e4567-e89b-12d3-a456-4266141740000",
        "g23e4567-e89b-12d3-a456-426614174000",
    ]
    .map(String::from)
    .to_vec();
    check("uuid", &uuids, &|t| t.len() == 36);
}
