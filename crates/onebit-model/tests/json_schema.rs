//! Structured output's machine against the `jsonschema` crate: documents of hand-written
//! schemas and their prefixes, dead ends, tool calls, and random walks through the bytes the
//! machine accepts for random schemas, each completed document judged by the crate.

use onebit_model::json_schema::JsonSchema;
use onebit_model::schema_machine::{SchemaMachine, MAX_FRAMES};
use proptest::prelude::*;
use serde_json::{json, Value};

/// Some(complete?) after feeding `doc`, None when refused on the way.
fn run(s: &JsonSchema, doc: &str) -> Option<bool> {
    let mut m = SchemaMachine::new();
    m.feed_all(s, doc.as_bytes()).then(|| m.can_end(s))
}

/// Every prefix of `text` the machine takes goes on: some byte continues it, or it may end.
fn assert_prefixes_go_on(s: &JsonSchema, text: &str) {
    for cut in 1..text.len() {
        let mut m = SchemaMachine::new();
        if m.feed_all(s, &text.as_bytes()[..cut]) {
            let next = (0..=255u8).any(|b| m.clone().feed(s, b));
            assert!(next || m.can_end(s), "dead end after {}", &text[..cut]);
        }
    }
}

fn valid(schema: &Value, doc: &str) -> bool {
    let v: Value = serde_json::from_str(doc).unwrap();
    jsonschema::validator_for(schema).unwrap().is_valid(&v)
}

/// Accepted documents, and refused ones (which jsonschema refuses too, or which are
/// outside the subset the machine writes, marked `false`).
#[test]
fn documents_of_a_schema_and_their_prefixes() {
    let schema = json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 4},
            "age": {"type": "integer", "minimum": 18, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["a", "b", 7]}, "maxItems": 2},
            "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"const": "cat"}}, "required": ["kind"]}]},
            "score": {"type": ["number", "null"]}
        },
        "required": ["name", "age"],
        "additionalProperties": false
    });
    let s = JsonSchema::compile(&schema).unwrap();
    for doc in [
        r#"{"name":"Ann","age":18}"#,
        r#"{ "name" : "Bé\n", "age": 120 , "tags": ["a", 7], "pet": {"kind":"cat"}, "score": -1.5e3 }"#,
        r#"{"name":"x","age":99,"pet":null,"score":null}"#,
        r#"{"name":"\u00e9","age":20,"score":0}"#,
    ] {
        assert_eq!(run(&s, doc), Some(true), "{doc}");
        assert!(valid(&schema, doc), "{doc}");
        let mut m = SchemaMachine::new();
        for (i, &b) in doc.as_bytes().iter().enumerate() {
            assert!(!m.is_done(), "{doc} done at {i}");
            assert!(m.feed(&s, b), "{doc} refused at {i}");
        }
        assert!(m.is_done());
    }
    for (doc, jsonschema_refuses) in [
        (r#"{"name":"","age":20}"#, true),
        (r#"{"name":"Annie","age":20}"#, true),
        (r#"{"name":"Ann","age":17}"#, true),
        (r#"{"name":"Ann","age":121}"#, true),
        (r#"{"name":"Ann","age":20.5}"#, true),
        (r#"{"name":"Ann"}"#, true),
        (r#"{"age":20}"#, true),
        (r#"{"name":"Ann","age":20,"x":1}"#, true),
        (r#"{"name":"Ann","age":20,"tags":["c"]}"#, true),
        (r#"{"name":"Ann","age":20,"tags":["a","b","a"]}"#, true),
        (r#"{"name":"Ann","age":20,"pet":{"kind":"dog"}}"#, true),
        (r#"{"name":"Ann","age":20,"pet":{}}"#, true),
        (r#"{"name":"Ann","age":20,"score":"1"}"#, true),
        (r#"{"age":20,"name":"Ann"}"#, false),
        (r#"{"name":"Ann","age":20.0}"#, false),
        (r#"{"name":"\ud83d\ude00","age":20}"#, false),
        (r#" {"name":"Ann","age":20}"#, false),
    ] {
        assert_ne!(run(&s, doc), Some(true), "{doc}");
        assert_eq!(!valid(&schema, doc.trim()), jsonschema_refuses, "{doc}");
    }
    // No dead ends on the way: an age of 1 may still become 18, 19 or 100..=120, 2 may
    // become 20..=29, 13 nothing.
    assert!(run(&s, r#"{"name":"A","age":1"#).is_some());
    assert!(run(&s, r#"{"name":"A","age":2"#).is_some());
    assert!(run(&s, r#"{"name":"A","age":13"#).is_none());
    assert!(run(&s, r#"{"name":"A","age":0"#).is_none());
    assert!(run(&s, r#"{"name":"A","age":-"#).is_none());
    assert!(run(&s, r#"{"name":"ABCD"#).is_some());
    assert!(run(&s, r#"{"name":"ABCDE"#).is_none());
}

#[test]
fn top_level_scalars_end_where_they_may() {
    let s = JsonSchema::compile(&json!({"type": "integer", "maximum": 50})).unwrap();
    assert_eq!(run(&s, "5"), Some(true));
    assert_eq!(run(&s, "50"), Some(true));
    assert_eq!(run(&s, "51"), None);
    assert_eq!(run(&s, "-"), Some(false));
    assert_eq!(run(&s, "5 "), None);
    let s = JsonSchema::compile(&json!({"enum": [1, 12, "x"]})).unwrap();
    assert_eq!(run(&s, "1"), Some(true));
    assert_eq!(run(&s, "12"), Some(true));
    assert_eq!(run(&s, "13"), None);
    let mut m = SchemaMachine::new();
    assert!(m.feed_all(&s, b"\"x\"") && m.is_done());
}

#[test]
fn recursive_references_and_maps() {
    let schema = json!({
        "$defs": {"node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]}
        }, "required": ["v", "next"]}},
        "type": "object",
        "properties": {"list": {"$ref": "#/$defs/node"}, "counts": {"additionalProperties": {"type": "integer"}}},
        "required": ["list", "counts"]
    });
    let s = JsonSchema::compile(&schema).unwrap();
    let doc = r#"{"list":{"v":1,"next":{"v":2,"next":null}},"counts":{"a":1,"b\"":-2}}"#;
    assert_eq!(run(&s, doc), Some(true));
    assert!(valid(&schema, doc));
    assert_eq!(run(&s, r#"{"list":{"v":1,"next":{"v":2}},"counts":{}}"#), None);
    assert_eq!(run(&s, r#"{"list":{"v":1,"next":null},"counts":{"a":"1"}}"#), None);
}

#[test]
fn a_tool_call_takes_the_arguments_of_the_function_it_names() {
    let weather = json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city"]});
    let s = JsonSchema::tool_call(&[
        ("get_weather".into(), Some(weather)),
        ("get_time".into(), None),
        ("get".into(), Some(json!({"$defs": {"u": {"type": "string"}}, "properties": {"url": {"$ref": "#/$defs/u"}}, "required": ["url"]}))),
    ])
    .unwrap();
    for doc in [
        r#"{"name": "get_weather", "arguments": {"city": "Bath", "days": 3}}"#,
        r#"{"name":"get_time","arguments":{}}"#,
        r#"{"name":"get","arguments":{"url":"x"}}"#,
    ] {
        assert_eq!(run(&s, doc), Some(true), "{doc}");
    }
    for doc in [
        r#"{"name":"get_time","arguments":{"city":"Bath"}}"#,
        r#"{"name":"get_weather","arguments":{"url":"x"}}"#,
        r#"{"name":"get_weather","arguments":{"city":"Bath","days":8}}"#,
        r#"{"name":"set_time","arguments":{}}"#,
        r#"{"arguments":{},"name":"get_time"}"#,
    ] {
        assert_ne!(run(&s, doc), Some(true), "{doc}");
    }
    assert!(JsonSchema::tool_call(&[]).is_err());
    let twice = [("f".to_string(), None), ("f".to_string(), None)];
    assert!(JsonSchema::tool_call(&twice).unwrap_err().why.contains("two tools"));
}

#[test]
fn nesting_is_capped() {
    let s = JsonSchema::compile(&json!({})).unwrap();
    let deep = "[".repeat(MAX_FRAMES);
    assert!(SchemaMachine::new().feed_all(&s, deep.as_bytes()));
    assert!(!SchemaMachine::new().feed_all(&s, (deep + "[").as_bytes()));
}

/// Every string of up to five bytes of a number's alphabet, for bounded numbers at the top
/// level and inside an array (bounds and `multipleOf`): what the machine completes is valid under jsonschema, what
/// jsonschema accepts in the machine's subset (no exponent) the machine completes, and no
/// prefix it accepts is a dead end.
#[test]
fn bounded_numbers_agree_with_jsonschema_on_every_short_text() {
    let alphabet = b"-0123456789.e";
    let any_number = JsonSchema::compile(&json!({"type": "number"})).unwrap();
    for bounds in [
        json!({"minimum": 0.1, "maximum": 0.3}),
        json!({"exclusiveMinimum": 0, "exclusiveMaximum": 1}),
        json!({"minimum": -2.5, "maximum": -0.5}),
        json!({"minimum": -1, "exclusiveMaximum": 1}),
        json!({"minimum": 1.5, "maximum": 1.5}),
        json!({"minimum": 100, "maximum": 100.05}),
        json!({"minimum": -0.001}),
        json!({"exclusiveMaximum": 30}),
        json!({"minimum": 0.07, "exclusiveMaximum": 0.0701}),
        json!({"multipleOf": 5}),
        json!({"multipleOf": 0.25, "minimum": -1, "maximum": 3}),
        json!({"multipleOf": 0.1}),
        json!({"multipleOf": 3, "exclusiveMinimum": 10, "maximum": 40}),
        json!({"multipleOf": 2.5}),
        json!({"multipleOf": 0.01, "exclusiveMinimum": 0}),
        json!({"multipleOf": 0.07, "maximum": 1}),
        json!({"multipleOf": 1e-9}),
        json!({"multipleOf": 1e18}),
    ] {
        for integer in [false, true] {
            let mut schema = bounds.clone();
            schema["type"] = json!(if integer { "integer" } else { "number" });
            let Ok(s) = JsonSchema::compile(&schema) else {
                assert!(integer, "{schema} refused");
                continue;
            };
            let validator = jsonschema::validator_for(&schema).unwrap();
            let array = json!({"type": "array", "items": schema});
            let sa = JsonSchema::compile(&array).unwrap();
            let mut texts: Vec<Vec<u8>> = vec![vec![]];
            for _ in 0..5 {
                let mut next = Vec::new();
                for t in &texts {
                    for &b in alphabet {
                        let mut u = t.clone();
                        u.push(b);
                        next.push(u);
                    }
                }
                for t in &next {
                    let text = std::str::from_utf8(t).unwrap();
                    let mut m = SchemaMachine::new();
                    let fed = m.feed_all(&s, t);
                    let parsed = serde_json::from_str::<Value>(text).ok().filter(Value::is_number);
                    let valid = parsed.as_ref().is_some_and(|v| validator.is_valid(v));
                    if fed {
                        let stuck = !m.can_end(&s) && (0..=255u8).all(|b| !m.clone().feed(&s, b));
                        assert!(!stuck, "dead end after {text} for {schema}");
                    }
                    let done = fed && m.can_end(&s);
                    assert!(!done || valid, "{text} completed but invalid for {schema}");
                    let subset = !(text.contains('e') || integer && text.contains('.'));
                    assert!(!valid || !subset || done, "{text} valid but refused for {schema}");
                    // Inside an array the number ends at `]` instead.
                    let inner = format!("[{text}]");
                    let done_inner = SchemaMachine::new().feed_all(&sa, inner.as_bytes());
                    assert_eq!(done_inner && valid, done_inner, "{inner} for {array}");
                    assert!(!valid || !subset || done_inner, "{inner} refused for {array}");
                }
                // Go on from every prefix of a JSON number (bounds aside): a valid text whose
                // prefix the bounded machine refused is then caught.
                texts = next
                    .into_iter()
                    .filter(|t| SchemaMachine::new().feed_all(&any_number, t))
                    .collect();
            }
        }
    }
}

/// `uniqueItems` over an enum (pydantic's `set[Literal[...]]`): every array of up to five
/// items drawn from the enum (repeats included), compact and spaced, is completed by the
/// machine exactly when jsonschema accepts it, and no accepted prefix is a dead end.
#[test]
fn unique_items_agree_with_jsonschema_on_every_short_array() {
    let values = [json!("a"), json!("ab"), json!(1), json!(12), json!(true), json!([1, "a"])];
    for (min, max) in [(0, None), (2, None), (0, Some(3)), (5, None)] {
        let mut schema = json!({"type": "array", "items": {"enum": values}, "uniqueItems": true,
                                "minItems": min});
        if let Some(max) = max {
            schema["maxItems"] = json!(max);
        }
        let s = JsonSchema::compile(&schema).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut arrays: Vec<Vec<usize>> = vec![vec![]];
        let mut layer = arrays.clone();
        for _ in 0..5 {
            layer = layer
                .iter()
                .flat_map(|a| (0..values.len()).map(move |i| [a.clone(), vec![i]].concat()))
                .collect();
            arrays.extend(layer.iter().cloned());
        }
        let mut accepted = 0;
        for a in &arrays {
            let v = Value::Array(a.iter().map(|&i| values[i].clone()).collect());
            let items: Vec<String> = a.iter().map(|&i| values[i].to_string()).collect();
            for text in [v.to_string(), format!("[{}]", items.join(", "))] {
                let done = run(&s, &text) == Some(true);
                assert_eq!(done, validator.is_valid(&v), "{text} for {schema}");
                accepted += done as usize;
                assert_prefixes_go_on(&s, &text);
            }
        }
        assert!(accepted > 0, "{schema}");
    }
}

/// Maps with `propertyNames`, `minProperties` and `maxProperties` (pydantic's
/// `dict[constr(...), int]` with `min_length` / `max_length`): every map of up to three
/// entries over a few keys and values, compact and spaced, is completed by the machine
/// exactly when jsonschema accepts it (repeated keys aside: a parser keeps one of them; and
/// keys outside a `patternProperties` pattern, never written), and no accepted prefix is a
/// dead end.
#[test]
fn maps_agree_with_jsonschema_on_every_short_map() {
    let keys = ["a", "b", "ab", "abc", "d", "", "é"];
    let values = [json!(1), json!("x")];
    for bounds in [
        json!({"propertyNames": {"pattern": "^[a-c]+$", "maxLength": 2}}),
        json!({"propertyNames": {"minLength": 2}, "maxProperties": 2}),
        json!({"minProperties": 1, "maxProperties": 1}),
        json!({"propertyNames": {"type": "string", "format": "date"}}),
        json!({"minProperties": 1, "propertyNames": {"pattern": "b"}}),
        // pydantic's dict[constr(pattern=...), int], as OpenAI's strict mode sends it and not.
        json!({"patternProperties": {"^[ab]+$": {"type": "integer"}}, "additionalProperties": false,
               "propertyNames": {"maxLength": 2}, "maxProperties": 2}),
        json!({"patternProperties": {"b": {"type": "integer"}}}),
    ] {
        // Keys the reply writes: under patternProperties only those of its pattern (others,
        // which additionalProperties would let through, are valid but never written).
        let unwritten = |k: &str| {
            bounds.get("patternProperties").is_some_and(|p| p.get("b").is_some())
                && !k.contains('b')
        };
        let mut schema = bounds.clone();
        schema["type"] = json!("object");
        if schema.get("additionalProperties").is_none() {
            schema["additionalProperties"] = json!({"type": "integer"});
        }
        let s = JsonSchema::compile(&schema).unwrap();
        let validator = jsonschema::options().should_validate_formats(true).build(&schema).unwrap();
        let mut maps: Vec<Vec<(usize, usize)>> = vec![vec![]];
        let mut layer = maps.clone();
        let (nk, nv) = (keys.len(), values.len());
        for _ in 0..3 {
            layer = layer
                .iter()
                .flat_map(|m| {
                    (0..nk)
                        .flat_map(move |k| (0..nv).map(move |v| [m.clone(), vec![(k, v)]].concat()))
                })
                .collect();
            maps.extend(layer.iter().cloned());
        }
        let mut accepted = 0;
        for m in &maps {
            let entries: Vec<String> =
                m.iter().map(|&(k, v)| format!("{}: {}", json!(keys[k]), values[v])).collect();
            let compact: Vec<String> =
                m.iter().map(|&(k, v)| format!("{}:{}", json!(keys[k]), values[v])).collect();
            let repeats = (1..m.len()).any(|i| m[..i].iter().any(|e| e.0 == m[i].0))
                || m.iter().any(|e| unwritten(keys[e.0]));
            for text in
                [format!("{{{}}}", compact.join(",")), format!("{{{}}}", entries.join(", "))]
            {
                let v: Value = serde_json::from_str(&text).unwrap();
                let done = run(&s, &text) == Some(true);
                let valid = validator.is_valid(&v);
                assert!(!done || valid, "{text} completed but invalid for {schema}");
                assert!(!valid || repeats || done, "{text} valid but refused for {schema}");
                accepted += done as usize;
                assert_prefixes_go_on(&s, &text);
            }
        }
        assert!(accepted > 0, "{schema}");
    }
    for (schema, says) in [
        (json!({"additionalProperties": {}, "minProperties": 2}), "minProperties above 1 on a map"),
        (json!({"additionalProperties": false, "minProperties": 1}), "no object has 1 to"),
        (json!({"maxProperties": 1, "minProperties": 2}), "no object has 2 to 1"),
        (json!({"propertyNames": {"enum": ["a"]}}), "propertyNames must be a string schema"),
        (json!({"properties": {"a": {}}, "propertyNames": {"maxLength": 1}}), "beside properties"),
        (json!({"properties": {"a": {}, "b": {}}, "maxProperties": 1}), "maxProperties below"),
        (json!({"properties": {"a": {}}, "minProperties": 1}), "minProperties above"),
        (
            json!({"patternProperties": {"a": {}, "b": {}}}),
            "one pattern on an object without properties",
        ),
        (json!({"properties": {"a": {}}, "patternProperties": {"a": {}}}), "without properties"),
        (
            json!({"patternProperties": {"a": {}}, "propertyNames": {"pattern": "b"}}),
            "beside a propertyNames pattern",
        ),
        (json!({"patternProperties": {"(?=a)": {}}}), "look-around"),
        (
            json!({"patternProperties": {"a": {}}, "propertyNames": {"type": "integer"}}),
            "must be a string schema",
        ),
    ] {
        let e = JsonSchema::compile(&schema).unwrap_err();
        assert!(e.why.contains(says), "{schema}: {e}");
    }
    // Beside declared properties, bounds every reply meets are accepted.
    let ok = json!({"properties": {"a": {}, "b": {}}, "required": ["a"], "maxProperties": 2, "minProperties": 1});
    assert!(JsonSchema::compile(&ok).is_ok());
}

/// Bounds are read from the schema's text: 0.1 is a tenth, and 0.3 is allowed under
/// `maximum: 0.3` (the double nearest 0.3 is below it; the decimal is not).
#[test]
fn decimal_bounds_are_exact_and_replies_have_no_exponent() {
    let s =
        JsonSchema::compile(&json!({"type": "number", "minimum": 0.1, "maximum": 0.3})).unwrap();
    for (doc, ok) in [
        ("0.1", Some(true)),
        ("0.3", Some(true)),
        ("0.30000", Some(true)),
        ("0.300000001", None),
        ("0.2999999999", None),
        ("0.099999999", None),
        ("0.25", Some(true)),
        ("1e-1", None),
        ("0.", Some(false)),
    ] {
        assert_eq!(run(&s, doc), ok, "{doc}");
    }
    let unbounded = JsonSchema::compile(&json!({"type": "number"})).unwrap();
    assert_eq!(run(&unbounded, "1.5e-7"), Some(true));
    let e =
        JsonSchema::compile(&json!({"type": "number", "minimum": 2, "maximum": 1})).unwrap_err();
    assert!(e.why.contains("lies within the bounds"), "{e}");
}

/// anyOf / oneOf of objects: routed by their first key, or by its const value.
#[test]
fn object_alternatives_are_told_apart_by_their_first_key() {
    let pets = json!({"oneOf": [
        {"type": "object", "properties": {"pet": {"const": "cat"}, "lives": {"type": "integer", "minimum": 1, "maximum": 9}},
         "required": ["pet", "lives"]},
        {"type": "object", "properties": {"pet": {"enum": ["dog", "wolf"]}, "bark": {"type": "boolean"}},
         "required": ["pet"], "additionalProperties": false},
        {"type": "object", "properties": {"fish": {"type": "string"}}, "required": ["fish"]},
        {"type": "null"}
    ]});
    let s = JsonSchema::compile(&pets).unwrap();
    for (doc, ok) in [
        (r#"{"pet": "cat", "lives": 7}"#, Some(true)),
        (r#"{"pet": "cat", "lives": 10}"#, None),
        (r#"{"pet": "cat", "bark": true}"#, None),
        (r#"{"pet": "cat"}"#, None),
        (r#"{"pet": "wolf", "bark": true}"#, Some(true)),
        (r#"{"pet": "dog"}"#, Some(true)),
        (r#"{"pet": "dog", "lives": 3}"#, None),
        (r#"{"pet": "cow"}"#, None),
        (r#"{"fish": "cod"}"#, Some(true)),
        (r#"{"fish": "cod", "pet": "cat"}"#, None),
        (r#"{}"#, None),
        (r#"null"#, Some(true)),
        (r#"{"pet": "cat", "lives": 7"#, Some(false)),
    ] {
        assert_eq!(run(&s, doc), ok, "{doc}");
        if ok == Some(true) {
            assert!(valid(&pets, doc), "{doc}");
        }
    }
    // An optional key before the first required one routes too; {} where one allows it.
    let s = JsonSchema::compile(&json!({"anyOf": [
        {"properties": {"note": {"type": "string"}, "a": {"type": "integer"}}, "required": ["a"]},
        {"properties": {"b": {"type": "integer"}}}
    ]}))
    .unwrap();
    for (doc, ok) in [
        (r#"{"note": "x", "a": 1}"#, Some(true)),
        (r#"{"note": "x"}"#, None),
        (r#"{"a": 1}"#, Some(true)),
        (r#"{"b": 1}"#, Some(true)),
        (r#"{}"#, Some(true)),
    ] {
        assert_eq!(run(&s, doc), ok, "{doc}");
    }
    // oneOf: a closed object with no required key and one that requires a key it lacks.
    let closed = json!({"oneOf": [
        {"properties": {"a": {"type": "string"}}, "additionalProperties": false},
        {"properties": {"b": {"type": "integer"}}, "required": ["b"], "additionalProperties": false}
    ]});
    let s = JsonSchema::compile(&closed).unwrap();
    for doc in [r#"{}"#, r#"{"a": "x"}"#, r#"{"b": 2}"#] {
        assert_eq!(run(&s, doc), Some(true), "{doc}");
        assert!(valid(&closed, doc), "{doc}");
    }
    // Refused: a shared first key with no literal value; a oneOf whose objects overlap.
    for (schema, says) in [
        (
            json!({"anyOf": [{"properties": {"a": {"type": "string"}}, "required": ["a"]},
                          {"properties": {"a": {"type": "integer"}}, "required": ["a"]}]}),
            "not a const or enum",
        ),
        (
            json!({"anyOf": [{"properties": {"a": {"const": 1}}, "required": ["a"]},
                          {"properties": {"a": {"enum": [2, 1]}}, "required": ["a"]}]}),
            "both begin with \"a\": 1",
        ),
        (
            json!({"oneOf": [{"properties": {"a": {"type": "string"}, "b": {}}, "required": ["a"]},
                          {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]}),
            "oneOf objects 0 and 1",
        ),
    ] {
        let e = JsonSchema::compile(&schema).unwrap_err();
        assert!(e.why.contains(says), "{schema}: {e}");
    }
}

fn schema_strategy() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(json!({"type": "string"})),
        (0u32..3, 0u32..4)
            .prop_map(|(a, b)| json!({"type": "string", "minLength": a, "maxLength": a + b})),
        Just(json!({"type": "integer"})),
        (-300i64..300, 0i64..500)
            .prop_map(|(a, b)| json!({"type": "integer", "minimum": a, "maximum": a + b})),
        (-50i64..50).prop_map(|a| json!({"type": "integer", "exclusiveMaximum": a})),
        (1i64..30, -100i64..100)
            .prop_map(|(m, a)| json!({"type": "integer", "multipleOf": m, "minimum": a})),
        (1i64..200).prop_map(|m| json!({"type": "number", "multipleOf": m as f64 / 100.0})),
        Just(json!({"type": "number"})),
        (-300i64..300, 0i64..500).prop_map(|(a, b)| {
            json!({"type": "number", "minimum": a as f64 / 10.0, "maximum": (a + b) as f64 / 100.0 + a as f64 / 10.0})
        }),
        // Fourteen digits before the point leave one decimal (an f64's fifteen in all).
        (1i64..9, 0i64..100, 0i64..30).prop_map(|(a, b, c)| {
            let x = a as f64 * 1.111_111_111_111e13;
            json!({"type": "number", "minimum": x + b as f64 / 100.0, "maximum": x + (b + c) as f64 / 100.0})
        }),
        (-50i64..50, 1i64..40).prop_map(|(a, b)| {
            json!({"type": "number", "exclusiveMinimum": a as f64 / 7.0, "exclusiveMaximum": a as f64 / 7.0 + b as f64 / 1000.0})
        }),
        Just(json!({"type": "boolean"})),
        Just(json!({"type": "null"})),
        Just(json!({})),
        Just(json!({"type": ["string", "null"], "maxLength": 3})),
        Just(json!({"enum": ["red", "green", 1, 12, null, [1, "a"], {"k": true}]})),
        Just(json!({"const": "x\"y"})),
        Just(json!({"type": "string", "pattern": "^[a-c]*$"})),
        Just(json!({"type": "string", "pattern": "b|\\d"})),
        Just(json!({"type": "string", "pattern": "^[a-c]*$", "minLength": 1, "maxLength": 3})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            (prop::collection::vec((inner.clone(), any::<bool>()), 0..4), any::<bool>()).prop_map(|(ps, closed)| {
                let mut props = serde_json::Map::new();
                let mut req = Vec::new();
                for (i, (p, r)) in ps.into_iter().enumerate() {
                    let k = ["a", "ab", "b", "a\"c"][i].to_string();
                    if r {
                        req.push(Value::String(k.clone()));
                    }
                    props.insert(k, p);
                }
                json!({"type": "object", "properties": props, "required": req, "additionalProperties": !closed})
            }),
            inner.clone().prop_map(|s| json!({"type": "object", "additionalProperties": s})),
            (inner.clone(), 0u32..2, 1u32..3).prop_map(|(s, min, max)| {
                json!({"type": "object", "additionalProperties": s, "propertyNames": {"pattern": "^[a-c]{1,2}$"},
                       "minProperties": min, "maxProperties": max})
            }),
            (inner.clone(), 0u32..3, 0u32..3).prop_map(|(s, a, b)| json!({"type": "array", "items": s, "minItems": a, "maxItems": a + b})),
            (prop::collection::vec(inner.clone(), 1..3)).prop_map(|p| json!({"type": "array", "prefixItems": p, "items": false})),
            inner.clone().prop_map(|s| json!({"type": "array", "items": s})),
            (0u32..4, any::<bool>()).prop_map(|(min, three)| {
                let values = if three { json!(["x", "xy", 1]) } else { json!([true, false, null, 0, 10]) };
                json!({"type": "array", "items": {"enum": values}, "uniqueItems": true, "minItems": min})
            }),
            inner.clone().prop_map(|s| json!({"anyOf": [{"type": "null"}, s]})),
            // Objects told apart by a discriminator (anyOf or oneOf, open or closed).
            (prop::collection::vec((inner.clone(), any::<bool>()), 2..4), any::<bool>(), any::<bool>()).prop_map(
                |(alts, one_of, closed)| {
                    let alts: Vec<Value> = alts.into_iter().enumerate().map(|(i, (v, req))| {
                        let mut required = vec![json!("kind")];
                        if req {
                            required.push(json!("v"));
                        }
                        let kind = [json!("cat"), json!("dog"), json!(3)][i].clone();
                        json!({"type": "object", "properties": {"kind": {"const": kind}, "v": v},
                               "required": required, "additionalProperties": !closed})
                    }).collect();
                    json!({(if one_of { "oneOf" } else { "anyOf" }): alts})
                }
            ),
            // Random objects under oneOf: compiled only where no reply can match two.
            prop::collection::vec((prop::collection::vec((0usize..4, inner.clone(), any::<bool>()), 1..4), any::<bool>()), 2..4)
                .prop_map(|alts| {
                    let alts: Vec<Value> = alts.into_iter().map(|(ps, closed)| {
                        let mut props = serde_json::Map::new();
                        let mut req = Vec::new();
                        for (k, v, r) in ps {
                            let k = ["a", "b", "c", "d"][k].to_string();
                            if r && !req.contains(&json!(k)) {
                                req.push(json!(k));
                            }
                            props.insert(k, v);
                        }
                        json!({"type": "object", "properties": props, "required": req, "additionalProperties": !closed})
                    }).collect();
                    json!({"oneOf": alts})
                }),
            // Objects told apart by their first key (an optional key may come before it).
            (prop::collection::vec(inner, 2..4), any::<bool>()).prop_map(|(alts, one_of)| {
                let alts: Vec<Value> = alts.into_iter().enumerate().map(|(i, v)| {
                    let key = ["a", "ab", "b"][i];
                    json!({"properties": {format!("o{i}"): {"type": "null"}, key: v, "z": {"type": "boolean"}},
                           "required": [key]})
                }).collect();
                json!({(if one_of { "oneOf" } else { "anyOf" }): alts})
            }),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// jsonschema is the oracle. A random walk through the bytes the machine accepts
    /// never finds a dead end (some byte is always accepted until the document is
    /// complete), and every document it completes is one jsonschema accepts.
    #[test]
    fn walks_never_stall_and_end_in_valid_documents(schema in schema_strategy(), seed in any::<u64>()) {
        let Ok(s) = JsonSchema::compile(&schema) else { return Ok(()) };
        let validator = jsonschema::validator_for(&schema).unwrap();
        let mut rng = seed | 1;
        let mut next = |n: usize| {
            rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut m = SchemaMachine::new();
        let mut doc = Vec::new();
        for _ in 0..600 {
            if m.is_done() || (m.can_end(&s) && next(4) == 0) {
                break;
            }
            let ok: Vec<u8> = (0..=255u8).filter(|&b| m.clone().feed(&s, b)).collect();
            // Where no byte may follow, the document may end (the mask lets EOS through).
            prop_assert!(!ok.is_empty() || m.can_end(&s), "dead end after {:?}", String::from_utf8_lossy(&doc));
            if ok.is_empty() {
                break;
            }
            // Lean on structure, so that walks end: closing brackets and quotes first.
            let pick = ["]", "}", "\"", ",", ":", "n", "t", "1", "-"]
                .iter()
                .map(|c| c.as_bytes()[0])
                .find(|b| ok.contains(b) && next(3) != 0)
                .unwrap_or_else(|| ok[next(ok.len())]);
            prop_assert!(m.feed(&s, pick));
            doc.push(pick);
        }
        if m.can_end(&s) {
            let text = String::from_utf8(doc).unwrap();
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => prop_assert!(validator.is_valid(&v), "{} refused by jsonschema for {}", text, schema),
                // JSON's grammar has no range; serde_json's f64 does.
                Err(e) => prop_assert!(e.to_string().contains("out of range"), "{}: {}", text, e),
            }
        }
    }

    /// Whatever the machine accepts whole is valid under jsonschema, for random
    /// documents and random schemas.
    #[test]
    fn accepted_random_documents_are_valid(schema in schema_strategy(), v in any_json(), pretty in any::<bool>()) {
        let Ok(s) = JsonSchema::compile(&schema) else { return Ok(()) };
        // Pretty-printed: two-space indents, as the machine's whitespace allows.
    let doc = if pretty { serde_json::to_string_pretty(&v).unwrap() } else { v.to_string() };
        if run(&s, &doc) == Some(true) {
            prop_assert!(jsonschema::validator_for(&schema).unwrap().is_valid(&v), "{} for {}", doc, schema);
        }
    }
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-400i64..400).prop_map(Value::from),
        (-1e3f64..1e3).prop_map(Value::from),
        prop_oneof![Just("red".to_string()), Just("x\"y".to_string()), "[a-c]{0,5}"]
            .prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(
                (prop_oneof![Just("a"), Just("ab"), Just("b"), Just("k")], inner),
                0..4
            )
            .prop_map(|kv| Value::Object(
                kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
            )),
        ]
    })
}
