//! The fuzz targets and their seeds. Seeds are small (tens of KB) so a long run reaches ten
//! million executions per target in hours, and valid, so mutations start deep in each parser.

use crate::Target;
use onebit_kernels::{TernaryFormat, TernaryMatrix};
use onebit_model::chat_template::{ChatTemplate, Message};
use onebit_model::gguf::{GgmlType, GgufFile, GgufWriter, TensorPlan, Value};
use onebit_model::tensors::Role;
use onebit_model::{ModelConfig, Tokenizer};

/// Every target.
pub fn all() -> Vec<Box<dyn Target>> {
    vec![
        Box::new(Gguf),
        Box::new(Checkpoint),
        Box::new(TokenizerJson),
        Box::new(Template),
        Box::new(Gbnf),
        Box::new(Schema),
    ]
}

/// The byte-level alphabet GPT-2 style vocabularies start with, plus a few merges.
fn bpe_vocab() -> (Vec<String>, Vec<String>) {
    let mut tokens: Vec<String> = (0u8..=255)
        .map(|b| {
            // GPT-2's byte-to-unicode map: printable Latin-1 stays, the rest shifts to 256+.
            let printable = matches!(b, 33..=126 | 161..=172 | 174..=255);
            let c = if printable {
                b as u32
            } else {
                256 + (0u8..b).filter(|x| !matches!(x, 33..=126 | 161..=172 | 174..=255)).count()
                    as u32
            };
            char::from_u32(c).unwrap().to_string()
        })
        .collect();
    let merges = vec!["t h".to_string(), "th e".into(), "Ġ t".into(), "a n".into()];
    tokens.extend(["th", "the", "Ġt", "an", "<|endoftext|>"].map(String::from));
    (tokens, merges)
}

fn tiny_model(linear: TernaryFormat, embed: GgmlType, seed: u64) -> Vec<u8> {
    let c = ModelConfig {
        vocab: 261,
        max_positions: 64,
        tied_embeddings: true,
        ..ModelConfig::preset("micro").unwrap()
    };
    let (tokens, merges) = bpe_vocab();
    let mut meta = c.to_gguf();
    meta.extend([
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("gpt-2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::String).collect()),
        ),
        ("tokenizer.chat_template".into(), Value::String(TEMPLATES[0].into())),
        (onebit_model::gguf::CHECKSUM_KEY.into(), Value::String(String::new())),
    ]);
    let ty = onebit_model::synthetic::linear_type(linear).unwrap();
    let separate = matches!(linear, TernaryFormat::T2 | TernaryFormat::B3);
    let mut s = seed | 1;
    let mut next = || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut plan = Vec::new();
    let mut data = Vec::new();
    for t in c.tensors() {
        match t.role {
            Role::Norm => {
                plan.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty: GgmlType::F32 });
                data.push((0..t.len()).flat_map(|_| 1f32.to_le_bytes()).collect());
            }
            Role::Embedding | Role::Output => {
                let n = embed.tensor_bytes(t.cols as u64, t.rows as u64).unwrap() as usize;
                plan.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty: embed });
                data.push(
                    (0..n / 2)
                        .flat_map(|_| {
                            half::f16::from_f32((next() % 100) as f32 / 1e3).to_le_bytes()
                        })
                        .collect(),
                );
            }
            Role::Linear => {
                let trits: Vec<i8> = (0..t.len()).map(|_| (next() % 3) as i8 - 1).collect();
                let m = TernaryMatrix::from_trits(linear, t.rows, t.cols, &trits, 0.03).unwrap();
                plan.push(TensorPlan { name: t.name.clone(), dims: t.dims(), ty });
                data.push(m.bytes().to_vec());
                if separate {
                    plan.push(TensorPlan {
                        name: t.name.replace(".weight", ".scale"),
                        dims: vec![1],
                        ty: GgmlType::F32,
                    });
                    data.push(0.03f32.to_le_bytes().to_vec());
                }
            }
        }
    }
    let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()), &meta, &plan).unwrap();
    for (p, d) in plan.iter().zip(&data) {
        w.write_tensor(&p.name, d).unwrap();
    }
    let patch = w.checksum_patch();
    let mut out = w.finish().unwrap().into_inner();
    if let Some((at, b)) = patch {
        out[at as usize..at as usize + b.len()].copy_from_slice(&b);
    }
    out
}

/// GGUF files: parse, then everything onebit derives from a header before loading weights.
pub struct Gguf;

impl Target for Gguf {
    fn name(&self) -> &'static str {
        "gguf"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for (i, f) in [
            TernaryFormat::T2,
            TernaryFormat::B3,
            TernaryFormat::I2S,
            TernaryFormat::Tq1_0,
            TernaryFormat::Tq2_0,
            TernaryFormat::Iq2Bn,
            TernaryFormat::Iq1Bn,
        ]
        .into_iter()
        .enumerate()
        {
            let embed = [GgmlType::F16, GgmlType::Q6K, GgmlType::Q8_0, GgmlType::Q4K][i % 4];
            v.push(tiny_model(f, embed, i as u64 + 1));
        }
        v
    }
    fn run(&self, input: &[u8]) {
        let Ok(g) = GgufFile::parse(input) else { return };
        let _ = g.verify_checksum(input);
        let config = onebit_model::ModelConfig::from_gguf(&g);
        if let Ok(t) = Tokenizer::from_gguf(&g) {
            if let Ok(ids) = t.encode("the tether than", true) {
                let _ = t.decode(&ids);
            }
        }
        // The chat template a header carries is the `template` target's job (a template that
        // runs to its fuel limit costs milliseconds, which would slow this target tenfold).
        let Ok(c) = config else { return };
        for t in c.tensors() {
            let Some(info) = g.tensor(&t.name) else { continue };
            let bytes = g.data(input, info);
            if t.role == Role::Linear {
                if let Some(f) = onebit_model::load::ternary_format(info.ty) {
                    let scale = Some(0.5);
                    if let Ok(m) =
                        TernaryMatrix::from_bytes(f, t.rows, t.cols, bytes.to_vec(), scale)
                    {
                        let _ = m.repack(TernaryFormat::T2);
                    }
                }
            } else if onebit_model::gguf::dequant::is_dequantizable(info.ty) && t.len() <= 1 << 20 {
                let _ = onebit_model::gguf::dequant::to_f32(info.ty, bytes, t.len());
            }
        }
    }
}

/// Training checkpoints: header, run config, checksum, every tensor, model rebuilt.
pub struct Checkpoint;

impl Target for Checkpoint {
    fn name(&self) -> &'static str {
        "checkpoint"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let mut cfg = onebit_train::trainer::TrainConfig::reference(16);
        cfg.model = ModelConfig {
            hidden: 16,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            head_dim: 8,
            intermediate: 16,
            vocab: 16,
            max_positions: 8,
            ..cfg.model
        };
        cfg.seq = 8;
        cfg.batch = 1;
        cfg.threads = 1;
        let t = onebit_train::trainer::Trainer::new(cfg).expect("a tiny trainer");
        vec![onebit_train::checkpoint::to_bytes(&t, "seed").expect("checkpoint bytes")]
    }
    fn run(&self, input: &[u8]) {
        let _ = onebit_train::checkpoint::load_bytes("fuzz", input, None);
    }
}

/// `tokenizer.json` files: parse, encode, decode.
pub struct TokenizerJson;

impl Target for TokenizerJson {
    fn name(&self) -> &'static str {
        "tokenizer"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        let (tokens, merges) = bpe_vocab();
        let vocab: serde_json::Map<String, serde_json::Value> =
            tokens.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
        let bpe = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": tokens.len() - 1, "content": "<|endoftext|>", "single_word": false,
                "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": merges}
        });
        let word = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
"model":{"type":"WordLevel","vocab":{"w0":0,"the":1,"than":2},"unk_token":"w0"}}"#;
        vec![bpe.to_string().into_bytes(), word.as_bytes().to_vec()]
    }
    fn run(&self, input: &[u8]) {
        let Ok(text) = std::str::from_utf8(input) else { return };
        let Ok(t) = Tokenizer::from_json(text) else { return };
        if let Ok(ids) = t.encode("the tether than <|endoftext|> ünïcödé", true) {
            let _ = t.decode(&ids);
        }
    }
}

/// Chat templates in the dialects real models ship (Llama 3, ChatML, Zephyr, Gemma).
const TEMPLATES: [&str; 4] = [
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}",
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}",
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\n' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ '<|system|>\n' + message['content'] + eos_token }}{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% if loop.last and add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}{% endfor %}",
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{{ '<start_of_turn>' + message['role'] + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
];

fn conversation() -> Vec<Message> {
    let m = |role: &str, content: &str| Message { role: role.into(), content: content.into() };
    vec![
        m("system", "Be brief."),
        m("user", "Hi {{ there }}"),
        m("assistant", "Hello."),
        m("user", "And?"),
    ]
}

/// Chat templates: compile and render a fixed conversation.
pub struct Template;

impl Target for Template {
    fn name(&self) -> &'static str {
        "template"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        TEMPLATES.iter().map(|t| t.as_bytes().to_vec()).collect()
    }
    fn run(&self, input: &[u8]) {
        let Ok(src) = std::str::from_utf8(input) else { return };
        let _ = ChatTemplate::from_source(src, "<s>", "</s>").render(&conversation());
    }
}

/// GBNF grammars as llama-server takes them: parse, then read the grammar's own text and a
/// fixed probe with it (a reply's bytes are the other input a grammar meets).
pub struct Gbnf;

const GRAMMARS: [&str; 4] = [
    "root ::= value\nvalue ::= object | array | string | [0-9]+ | (\"true\" | \"null\")\nobject ::= \"{\" (string \":\" value (\",\" string \":\" value)*)? \"}\"\narray ::= \"[\" (value (\",\" value)*)? \"]\"\nstring ::= \"\\\"\" [^\"\\\\]* \"\\\"\"\n",
    "root ::= (\"Yes\" | \"No\") \", \" [a-z]{1,8} (\" \" [a-z]{1,8}){0,3} \".\"\n",
    "# comment\nroot ::= [α-ω]+ \" \" [^a-z\\u00e9]* \"\\U0001F600\"? .\n",
    "root ::= (\"a\"? \"b\"?)* x{2,4}\nx ::= (\"(\" x \")\") | \"\"\n",
];

impl Target for Gbnf {
    fn name(&self) -> &'static str {
        "gbnf"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        GRAMMARS.iter().map(|g| g.as_bytes().to_vec()).collect()
    }
    fn run(&self, input: &[u8]) {
        let Ok(src) = std::str::from_utf8(input) else { return };
        let Ok(g) = onebit_model::gbnf::Grammar::parse(src) else { return };
        let g = std::sync::Arc::new(g);
        for probe in [input, "Yes, a b.{\"k\":[1,2]}((()))ab αβ é😀".as_bytes()] {
            let mut m = onebit_model::gbnf_machine::GrammarMachine::new(g.clone());
            for &b in probe.iter().take(256) {
                if !m.feed_all(&[b]) {
                    break;
                }
            }
            let _ = (m.can_end(), m.is_done());
        }
    }
}

/// JSON schemas for structured output: compile, then read a fixed probe with the machine.
pub struct Schema;

const SCHEMAS: [&str; 4] = [
    r#"{"type":"object","properties":{"name":{"type":"string","maxLength":8},"age":{"type":"integer","minimum":0,"maximum":120},"p":{"type":"number","exclusiveMinimum":0,"maximum":1}},"required":["name","age"],"additionalProperties":false}"#,
    r#"{"oneOf":[{"type":"object","properties":{"kind":{"const":"a"},"v":{"type":"array","items":{"enum":[1,"x",null]}}},"required":["kind"]},{"type":"object","properties":{"kind":{"const":"b"}},"required":["kind"]},{"type":"null"}]}"#,
    r##"{"$defs":{"t":{"type":"object","properties":{"c":{"type":"array","items":{"$ref":"#/$defs/t"}}}}},"$ref":"#/$defs/t"}"##,
    r##"{"type":"object","properties":{"tag":{"type":"string","pattern":"^#[a-z]+\\d?$","minLength":2,"maxLength":9},"born":{"type":"string","format":"date"},"ids":{"type":"array","items":{"enum":["x","y",3]},"uniqueItems":true,"maxItems":2},"ip":{"type":"string","format":"ipv4"},"k":{"type":"number","multipleOf":0.25,"maximum":9},"m":{"additionalProperties":{"type":"integer"},"propertyNames":{"maxLength":3},"minProperties":1,"maxProperties":2}},"required":["tag"]}"##,
];

/// Replies the schema target feeds every compiled schema (the last one reads the patterned,
/// formatted, unique-item, multipleOf and map leaves of the last seed to its end).
const SCHEMA_PROBES: [&[u8]; 2] = [
    br#"{"name": "ab", "age": 42, "p": 0.5, "kind": "a", "v": [1, "x"], "c": [{"c": []}]}"#,
    br##"{"tag": "#abc1", "born": "2024-02-29", "ids": ["x", 3], "ip": "10.0.0.255", "k": -1.75, "m": {"ab": 1}}"##,
];

impl Target for Schema {
    fn name(&self) -> &'static str {
        "schema"
    }
    fn seeds(&self) -> Vec<Vec<u8>> {
        SCHEMAS.iter().map(|s| s.as_bytes().to_vec()).collect()
    }
    fn run(&self, input: &[u8]) {
        let Ok(text) = std::str::from_utf8(input) else { return };
        let Ok(s) = onebit_model::json_schema::JsonSchema::from_json(text) else { return };
        for probe in SCHEMA_PROBES {
            let mut m = onebit_model::schema_machine::SchemaMachine::new();
            for &b in probe {
                if !m.feed(&s, b) {
                    break;
                }
            }
            let _ = m.can_end(&s);
        }
    }
}

#[cfg(test)]
mod tests {
    /// The seeds start deep in the readers: every grammar and schema is accepted.
    #[test]
    fn grammar_and_schema_seeds_are_valid() {
        for g in super::GRAMMARS {
            onebit_model::gbnf::Grammar::parse(g).unwrap_or_else(|e| panic!("{g}: {e}"));
        }
        for s in super::SCHEMAS {
            onebit_model::json_schema::JsonSchema::from_json(s)
                .unwrap_or_else(|e| panic!("{s}: {e}"));
        }
        let s = onebit_model::json_schema::JsonSchema::from_json(super::SCHEMAS[3]).unwrap();
        let mut m = onebit_model::schema_machine::SchemaMachine::new();
        assert!(super::SCHEMA_PROBES[1].iter().all(|&b| m.feed(&s, b)) && m.can_end(&s));
    }
}
