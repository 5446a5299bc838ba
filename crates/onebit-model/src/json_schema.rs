//! Structured output (OpenAI's `response_format: {"type": "json_schema"}`, llama-server's
//! `json_schema`): a JSON Schema compiled into a graph of nodes that
//! [`crate::schema_machine::SchemaMachine`] follows byte by byte, so a reply masked by it is a
//! document the schema accepts.
//!
//! Compiled: `type` (one or a list), `properties`, `required`, `additionalProperties` (false,
//! true, or a schema for a map; a map's keys take `propertyNames` as a string schema,
//! `maxProperties`, `minProperties` up to 1, and `patternProperties` of one pattern:
//! pydantic's `dict[constr(pattern=...), V]`, whose replies write only keys of the pattern),
//! `items`, `prefixItems`, `minItems`, `maxItems`, `uniqueItems` (on arrays of an enum or
//! const: each value at most once), `enum`, `const`, `minLength`, `maxLength`, `pattern`
//! (ECMA-262, [`crate::json_pattern`]), `format` `date`, `time`, `date-time`, `uuid` and
//! `ipv4` (held to patterns; other formats are annotations), bounds on numbers (`minimum`,
//! `maximum`, `exclusiveMinimum`, `exclusiveMaximum`) and `multipleOf` (decimal, at most 9
//! decimals; a bounded non-integer is written with at most 9 decimals and no exponent,
//! [`crate::json_number`]), `anyOf` / `oneOf` whose alternatives begin with different bytes
//! (an object or a null, a string or a number...) or are objects told apart by their first
//! key or its const / enum value (a discriminator), `allOf` of one schema, and `$ref` to a
//! JSON pointer inside the document (`#/$defs/...`, `#/definitions/...`, `#`; recursion
//! included). Annotations (`title`, `description`, `default`, `examples`, the other
//! `format`s — an annotation unless a validator opts in, JSON Schema 2020-12 §7.2 — ...) are
//! ignored. Any other keyword (`not`, `if`, `dependentRequired`, `unevaluatedProperties`...)
//! is refused, naming it and where it is: a constraint dropped silently would let through
//! replies the schema rejects.
//!
//! Replies are a subset of what the schema accepts, never more: properties come in the
//! schema's order (as OpenAI's structured outputs write them; an optional one may be left
//! out, a required one never), an object with declared properties gets no others, a string
//! holds no surrogate `\u` escapes (a character outside the BMP is written in UTF-8), and
//! `oneOf` is read as `anyOf` where that is safe: alternatives that begin differently, or
//! objects that no reply can satisfy two of (checked when compiling; otherwise refused).
//!
//! Written here: the Rust JSON Schema crates validate whole documents; masking asks of
//! each of a vocabulary's tokens whether its bytes can still extend the reply, which needs
//! the schema as a machine whose state is copied per token.

use crate::json_number::{gcd, scaled, Range, DIGITS, FRACTION, MAX_MULTIPLE};
use crate::json_pattern::{format_pattern, Pattern};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Index of a node in [`JsonSchema`].
pub type NodeId = u16;

/// Node 0: any JSON value.
pub(crate) const ANY: NodeId = 0;
/// Node 1: the literals `true`, `false`, `null` (what an unconstrained value may spell).
pub(crate) const ANY_WORD: NodeId = 1;

/// No upper limit on a string's length or an array's items.
pub(crate) const UNBOUNDED: u32 = u32::MAX;

/// Most nodes a schema may compile to.
pub const MAX_NODES: usize = 4096;
/// Most values of one `enum`, and properties of one object (a mask reads them per token).
pub const MAX_CHOICES: usize = 1024;
/// Deepest nesting of subschemas (through `$ref`s too) compiled.
pub const MAX_NESTING: usize = 128;
/// Most distinct `pattern`s one schema may hold.
pub const MAX_PATTERNS: usize = 64;
/// Most automaton table cells (states × byte classes) of one schema's patterns together.
pub const MAX_PATTERN_CELLS: usize = 1 << 21;

/// One property of an object node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Prop {
    /// The key as JSON writes it, quotes included.
    pub key: Vec<u8>,
    /// Its value's node.
    pub value: NodeId,
    /// Whether the object must hold it.
    pub required: bool,
}

/// What a value at a node may be.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Node {
    /// Any JSON value.
    Any,
    /// One of these values, as compact JSON.
    Literals(Vec<Vec<u8>>),
    /// A number; `integer`: no fraction or exponent; `range`: its bounds (a bounded
    /// non-integer is written without an exponent, see [`crate::json_number`]).
    Number { integer: bool, range: Option<Range> },
    /// A string of `min..=max` characters (Unicode scalar values, as JSON Schema counts);
    /// `pattern`: the index in [`JsonSchema::patterns`] of the regex it matches.
    String { min: u32, max: u32, pattern: Option<u16> },
    /// An object: `props` in order; with none, keys of `extra`'s values (a map), or no keys.
    /// A map's keys are strings of `names` (`propertyNames`), `min..=max` of them.
    Object {
        props: Vec<Prop>,
        extra: Option<NodeId>,
        last_required: Option<u16>,
        names: NodeId,
        min: u32,
        max: u32,
    },
    /// An array: item i is `prefix[i]`, then `items` (None: no more); `min..=max` items;
    /// `unique`: `items` is a [`Node::Literals`] of at most 64 values, each written once.
    Array { prefix: Vec<NodeId>, items: Option<NodeId>, min: u32, max: u32, unique: bool },
    /// One of these, chosen by the value's first byte.
    Choice(Vec<NodeId>),
    /// An object that is one of several object nodes (`anyOf` / `oneOf` of objects) until
    /// its first key says which: `props` are the keys any of them may begin with; a key of
    /// one alternative routes to `(object, next property)` at once, a key several begin with
    /// routes by its value (a literal of the merged `Literals` in `props`: one route per
    /// literal). `empty`: `{}` is one of the alternatives.
    Union { props: Vec<Prop>, routes: Vec<Vec<(NodeId, u16)>>, empty: bool },
    /// In an object: the node of the literal an earlier property's value matched (the
    /// arguments of the function a tool call named).
    ByTag(Vec<NodeId>),
    /// A `$ref` being compiled (replaced before compiling ends).
    Pending,
}

/// A compiled JSON Schema ([module docs](self)).
#[derive(Clone, Debug, PartialEq)]
pub struct JsonSchema {
    pub(crate) nodes: Vec<Node>,
    /// The bytes each node's values may begin with (a 256-bit set).
    pub(crate) first: Vec<[u64; 4]>,
    pub(crate) root: NodeId,
    /// The compiled `pattern`s of string nodes.
    pub(crate) patterns: Vec<Pattern>,
}

/// Why a schema could not be compiled: the problem and the JSON pointer of the subschema.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("json_schema at '{at}': {why}")]
pub struct SchemaError {
    /// The subschema's JSON pointer (`""` for the root).
    pub at: String,
    /// What is wrong or unsupported.
    pub why: String,
}

/// Keywords that say nothing about which documents are valid.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "format",
    "$schema",
    "$id",
    "$anchor",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
    "$defs",
    "definitions",
    "strict",
    "discriminator",
];

/// The assertion keywords of the typed schemas compiled here, with the type each implies
/// when a schema names none (`type` itself implies nothing).
const SUPPORTED: &[(&str, &str)] = &[
    ("type", "any"),
    ("properties", "object"),
    ("required", "object"),
    ("additionalProperties", "object"),
    ("propertyNames", "object"),
    ("patternProperties", "object"),
    ("minProperties", "object"),
    ("maxProperties", "object"),
    ("items", "array"),
    ("prefixItems", "array"),
    ("additionalItems", "any"),
    ("minItems", "array"),
    ("maxItems", "array"),
    ("uniqueItems", "array"),
    ("minLength", "string"),
    ("maxLength", "string"),
    ("pattern", "string"),
    ("minimum", "number"),
    ("maximum", "number"),
    ("exclusiveMinimum", "number"),
    ("exclusiveMaximum", "number"),
    ("multipleOf", "number"),
];

/// A `multipleOf` in units of the node's scale: 10⁻⁹ for a `number`, 1 for an `integer`,
/// whose multiples of 2.5 are those of 5 (and of 0.5, every integer).
fn multiple_of(v: &Value, integer: bool) -> Result<u128, String> {
    let Value::Number(n) = v else { return Err("must be a number".into()) };
    let text = n.to_string();
    let units = scaled(&text, FRACTION, true);
    if units != scaled(&text, FRACTION, false) {
        return Err(format!("more than {FRACTION} decimals is not supported"));
    }
    let units = match units {
        Some(u) if u > 0 => u as u128,
        _ => return Err("must be greater than 0".into()),
    };
    if units > MAX_MULTIPLE {
        return Err("must be at most 1e18".into());
    }
    Ok(if integer { units / gcd(units, 10u128.pow(FRACTION)) } else { units })
}

fn set(bits: &mut [u64; 4], b: u8) {
    bits[b as usize / 64] |= 1 << (b % 64);
}

/// Whether `b` is in the 256-bit set `bits`.
pub(crate) fn has(bits: &[u64; 4], b: u8) -> bool {
    bits[b as usize / 64] >> (b % 64) & 1 == 1
}

struct Compiler<'a> {
    root: &'a Value,
    nodes: Vec<Node>,
    patterns: Vec<Pattern>,
    refs: HashMap<String, NodeId>,
    depth: usize,
}

fn err<T>(at: &str, why: impl Into<String>) -> Result<T, SchemaError> {
    Err(SchemaError { at: at.to_string(), why: why.into() })
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0) => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Refuses literals of which two are equal numbers written differently (`1` and `1.0`): JSON
/// Schema's uniqueness compares values, the machine compares the literals' bytes.
fn equal_numbers(literals: &[Vec<u8>], at: &str) -> Result<(), SchemaError> {
    let numbers: Vec<f64> =
        literals.iter().filter_map(|l| serde_json::from_slice::<Value>(l).ok()?.as_f64()).collect();
    for (i, a) in numbers.iter().enumerate() {
        if numbers[i + 1..].contains(a) {
            return err(at, format!("uniqueItems over an enum holding {a} twice"));
        }
    }
    Ok(())
}

fn count(o: &Map<String, Value>, k: &str, at: &str) -> Result<Option<u32>, SchemaError> {
    match o.get(k) {
        None => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) => Ok(Some(n.min(UNBOUNDED as u64 - 1) as u32)),
            None => err(at, format!("{k} must be a non-negative integer")),
        },
    }
}

impl JsonSchema {
    /// Compiles `schema` (a JSON Schema document), or says which part it cannot honour.
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let mut c = Compiler {
            root: schema,
            nodes: Self::base(),
            patterns: Vec::new(),
            refs: HashMap::new(),
            depth: 0,
        };
        let root = c.compile(schema, "")?;
        Self::finish(c.nodes, c.patterns, root)
    }

    /// The nodes every schema starts with: [`ANY`] and [`ANY_WORD`].
    fn base() -> Vec<Node> {
        vec![Node::Any, Node::Literals(vec![b"true".to_vec(), b"false".to_vec(), b"null".to_vec()])]
    }

    /// The schema of `nodes` from `root`, with each node's first bytes, checked that every
    /// choice can be made by its first byte.
    fn finish(nodes: Vec<Node>, patterns: Vec<Pattern>, root: NodeId) -> Result<Self, SchemaError> {
        let mut s = JsonSchema { nodes, first: Vec::new(), root, patterns };
        s.first =
            (0..s.nodes.len()).map(|i| s.first_bytes(i as NodeId, 0)).collect::<Result<_, _>>()?;
        s.check_choices()?;
        Ok(s)
    }

    /// Parses and compiles a schema written as JSON text.
    pub fn from_json(text: &str) -> Result<Self, SchemaError> {
        let v: Value = serde_json::from_str(text)
            .map_err(|e| SchemaError { at: String::new(), why: format!("not JSON: {e}") })?;
        Self::compile(&v)
    }

    fn first_bytes(&self, id: NodeId, depth: usize) -> Result<[u64; 4], SchemaError> {
        let mut bits = [0u64; 4];
        match &self.nodes[id as usize] {
            Node::Any => {
                for &b in b"{[\"-0123456789tfn" {
                    set(&mut bits, b);
                }
            }
            Node::Literals(c) => c.iter().for_each(|l| set(&mut bits, l[0])),
            Node::Number { .. } => b"-0123456789".iter().for_each(|&b| set(&mut bits, b)),
            Node::String { .. } => set(&mut bits, b'"'),
            Node::Object { .. } | Node::Union { .. } => set(&mut bits, b'{'),
            Node::Array { .. } => set(&mut bits, b'['),
            Node::Choice(alts) | Node::ByTag(alts) => {
                if depth > 2 * MAX_NESTING {
                    return err("", "a $ref refers back to itself before any value begins");
                }
                for &a in alts {
                    let f = self.first_bytes(a, depth + 1)?;
                    (0..4).for_each(|i| bits[i] |= f[i]);
                }
            }
            Node::Pending => return err("", "a $ref was left unresolved"),
        }
        Ok(bits)
    }

    /// Every choice's alternatives begin with different bytes (the machine picks one by the
    /// first byte and never looks back).
    fn check_choices(&self) -> Result<(), SchemaError> {
        for n in &self.nodes {
            let Node::Choice(alts) = n else { continue };
            for (i, &a) in alts.iter().enumerate() {
                for &b in &alts[i + 1..] {
                    let (fa, fb) = (&self.first[a as usize], &self.first[b as usize]);
                    if let Some(x) = (0..=255u8).find(|&x| has(fa, x) && has(fb, x)) {
                        return err(
                            "",
                            format!(
                                "two anyOf/oneOf alternatives (or types) both begin with {:?}; \
                                 onebit picks an alternative by its first byte",
                                x as char
                            ),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The node a value must match first.
    pub(crate) fn root(&self) -> NodeId {
        self.root
    }

    /// A call of one of `tools` (name, JSON schema of its arguments; None: no arguments):
    /// `{"name": <one of the names>, "arguments": <that function's arguments>}`, the form
    /// a reply takes under OpenAI's `tool_choice` (each schema its own document for `$ref`s).
    pub fn tool_call(tools: &[(String, Option<Value>)]) -> Result<Self, SchemaError> {
        if tools.is_empty() || tools.len() > MAX_CHOICES {
            return err("", format!("a tool call needs 1 to {MAX_CHOICES} tools"));
        }
        let none =
            serde_json::json!({"type": "object", "properties": {}, "additionalProperties": false});
        let (mut nodes, mut patterns) = (Self::base(), Vec::new());
        let (mut names, mut args) = (Vec::new(), Vec::new());
        for (name, params) in tools {
            let params = params.as_ref().unwrap_or(&none);
            let at = format!("/tools/{name}/parameters");
            let mut c = Compiler { root: params, nodes, patterns, refs: HashMap::new(), depth: 0 };
            args.push(c.compile(params, &at)?);
            (nodes, patterns) = (c.nodes, c.patterns);
            let n = serde_json::to_vec(name)
                .map_err(|e| SchemaError { at: at.clone(), why: e.to_string() })?;
            if names.contains(&n) {
                return err(&at, format!("two tools are named {name:?}"));
            }
            names.push(n);
        }
        let mut c = Compiler { root: &none, nodes, patterns, refs: HashMap::new(), depth: 0 };
        let name = c.push(Node::Literals(names), "/tools")?;
        let arguments = c.push(Node::ByTag(args), "/tools")?;
        let props = vec![
            Prop { key: b"\"name\"".to_vec(), value: name, required: true },
            Prop { key: b"\"arguments\"".to_vec(), value: arguments, required: true },
        ];
        let tools = Node::Object {
            props,
            extra: None,
            last_required: Some(1),
            names: ANY,
            min: 0,
            max: UNBOUNDED,
        };
        let root = c.push(tools, "/tools")?;
        Self::finish(c.nodes, c.patterns, root)
    }
}

impl Compiler<'_> {
    fn push(&mut self, n: Node, at: &str) -> Result<NodeId, SchemaError> {
        if self.nodes.len() >= MAX_NODES {
            return err(at, format!("the schema compiles to more than {MAX_NODES} nodes"));
        }
        self.nodes.push(n);
        Ok((self.nodes.len() - 1) as NodeId)
    }

    fn compile(&mut self, v: &Value, at: &str) -> Result<NodeId, SchemaError> {
        if self.depth >= MAX_NESTING {
            return err(at, format!("subschemas nest deeper than {MAX_NESTING}"));
        }
        self.depth += 1;
        let id = self.compile_inner(v, at);
        self.depth -= 1;
        id
    }

    fn compile_inner(&mut self, v: &Value, at: &str) -> Result<NodeId, SchemaError> {
        let o = match v {
            Value::Bool(true) => return Ok(ANY),
            Value::Bool(false) => return err(at, "the schema false accepts nothing"),
            Value::Object(o) => o,
            _ => return err(at, "a schema must be an object or a boolean"),
        };
        let assertions: Vec<&str> =
            o.keys().map(String::as_str).filter(|k| !ANNOTATIONS.contains(k)).collect();
        for k in ["$ref", "anyOf", "oneOf", "allOf"] {
            if o.contains_key(k) && assertions.len() > 1 {
                let other = assertions.iter().find(|&&a| a != k).unwrap_or(&"");
                return err(
                    at,
                    format!("{k} beside {other} is not supported (wrap them in one allOf item)"),
                );
            }
        }
        if let Some(r) = o.get("$ref") {
            return self.reference(r, at);
        }
        for k in ["anyOf", "oneOf"] {
            if let Some(alts) = o.get(k) {
                let Some(alts) = alts.as_array().filter(|a| !a.is_empty()) else {
                    return err(at, format!("{k} must be a non-empty array"));
                };
                let ids = (alts.iter().enumerate())
                    .map(|(i, a)| self.compile(a, &format!("{at}/{k}/{i}")))
                    .collect::<Result<Vec<_>, _>>()?;
                return self.choice(ids, at, k == "oneOf");
            }
        }
        if let Some(all) = o.get("allOf") {
            return match all.as_array().map(Vec::as_slice) {
                Some([one]) => self.compile(one, &format!("{at}/allOf/0")),
                _ => err(at, "allOf is supported with exactly one schema"),
            };
        }
        if let Some(vals) = o.get("enum").or_else(|| o.get("const")) {
            return self.literals(o, vals, at);
        }
        let types: Vec<&str> = match o.get("type") {
            None => vec![Self::implied_type(o)],
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) if !ts.is_empty() => {
                let mut v = Vec::new();
                for t in ts {
                    match t.as_str() {
                        Some(t) => v.push(t),
                        None => return err(at, "type must be a string or an array of strings"),
                    }
                }
                if v.contains(&"number") {
                    v.retain(|&t| t != "integer");
                }
                v
            }
            Some(_) => return err(at, "type must be a string or a non-empty array of strings"),
        };
        let ids = (types.iter())
            .map(|t| self.typed(o, t, at, &assertions))
            .collect::<Result<Vec<_>, _>>()?;
        if ids.len() == 1 {
            Ok(ids[0])
        } else {
            self.choice(ids, at, false)
        }
    }

    /// The value of one of `ids` (`one_of`: of exactly one).
    fn choice(&mut self, ids: Vec<NodeId>, at: &str, one_of: bool) -> Result<NodeId, SchemaError> {
        if ids.len() == 1 {
            return Ok(ids[0]);
        }
        let mut flat = Vec::new();
        for id in ids {
            self.flatten(id, &mut flat, 0);
        }
        // Objects with declared properties all begin with `{`: one union tells them apart
        // by their first key (maps and other values stay alternatives of their own).
        let (objects, mut alts): (Vec<NodeId>, Vec<NodeId>) = flat.into_iter().partition(|&id| {
            matches!(&self.nodes[id as usize], Node::Object { props, .. } if !props.is_empty())
        });
        if objects.len() > 1 {
            if one_of {
                self.exclusive(&objects, at)?;
            }
            alts.push(self.union(&objects, at)?);
        } else {
            alts.extend(objects);
        }
        if alts.len() == 1 {
            return Ok(alts[0]);
        }
        self.push(Node::Choice(alts), at)
    }

    /// For `oneOf`: no document the machine writes for one of `objects` is also a document
    /// of another. Each other object requires a key this one does not declare (the machine
    /// writes declared keys only), or is closed to a key this one requires, or both hold a
    /// const / enum of a key this one requires with no value in common.
    fn exclusive(&self, objects: &[NodeId], at: &str) -> Result<(), SchemaError> {
        let props = |id: NodeId| match &self.nodes[id as usize] {
            Node::Object { props, .. } => props.as_slice(),
            _ => &[],
        };
        let closed =
            |id: NodeId| matches!(&self.nodes[id as usize], Node::Object { extra: None, .. });
        let lits = |id: NodeId| match &self.nodes[self.resolve(id) as usize] {
            Node::Literals(l) => Some(l),
            _ => None,
        };
        for (i, &a) in objects.iter().enumerate() {
            for (j, &b) in objects.iter().enumerate().filter(|&(j, _)| j != i) {
                let (pa, pb) = (props(a), props(b));
                let lacks = pb.iter().any(|q| q.required && !pa.iter().any(|p| p.key == q.key));
                let forbids = closed(b)
                    && pa.iter().any(|p| p.required && !pb.iter().any(|q| q.key == p.key));
                let differs = pa.iter().filter(|p| p.required).any(|p| {
                    pb.iter().any(|q| {
                        q.key == p.key
                            && match (lits(p.value), lits(q.value)) {
                                (Some(x), Some(y)) => x.iter().all(|v| !y.contains(v)),
                                _ => false,
                            }
                    })
                });
                if !lacks && !forbids && !differs {
                    return err(
                        at,
                        format!(
                            "oneOf objects {i} and {j}: a reply written for one could also be \
                             one of the other (oneOf needs exactly one); give them a \
                             discriminating const, or use anyOf"
                        ),
                    );
                }
            }
        }
        Ok(())
    }

    /// The alternatives of `id` with nested choices (and resolved `$ref`s, which are
    /// one-alternative choices) taken apart.
    fn flatten(&self, id: NodeId, out: &mut Vec<NodeId>, depth: usize) {
        match &self.nodes[id as usize] {
            Node::Choice(alts) if depth < MAX_NESTING => {
                alts.iter().for_each(|&a| self.flatten(a, out, depth + 1))
            }
            _ => out.push(id),
        }
    }

    /// The node of `id` behind resolved `$ref`s.
    fn resolve(&self, mut id: NodeId) -> NodeId {
        for _ in 0..MAX_NESTING {
            match &self.nodes[id as usize] {
                Node::Choice(alts) if alts.len() == 1 => id = alts[0],
                _ => break,
            }
        }
        id
    }

    /// One object node for several (each with declared properties): the keys each may
    /// begin with (its optional keys up to and including its first required one) route to
    /// it; a key that several may begin with must hold a const or enum in each of them, with
    /// no value in two (a discriminator, as `{"type": "cat", ...}`).
    fn union(&mut self, alts: &[NodeId], at: &str) -> Result<NodeId, SchemaError> {
        let mut props: Vec<Prop> = Vec::new();
        let mut owners: Vec<Vec<(NodeId, u16)>> = Vec::new();
        let mut empty = false;
        for &a in alts {
            let Node::Object { props: ps, .. } = &self.nodes[a as usize] else { continue };
            let first_required = ps.iter().position(|p| p.required);
            empty |= first_required.is_none();
            for (i, p) in ps[..=first_required.unwrap_or(ps.len() - 1)].iter().enumerate() {
                match props.iter().position(|q| q.key == p.key) {
                    Some(k) => owners[k].push((a, i as u16)),
                    None => {
                        props.push(Prop { key: p.key.clone(), value: p.value, required: false });
                        owners.push(vec![(a, i as u16)]);
                    }
                }
            }
        }
        let mut routes = Vec::new();
        for (k, own) in owners.iter().enumerate() {
            if let [(a, i)] = own[..] {
                routes.push(vec![(a, i + 1)]);
                continue;
            }
            let key = String::from_utf8_lossy(&props[k].key).into_owned();
            let (mut lits, mut route) = (Vec::new(), Vec::new());
            for &(a, i) in own {
                let Node::Object { props: ps, .. } = &self.nodes[a as usize] else { continue };
                let Node::Literals(l) = &self.nodes[self.resolve(ps[i as usize].value) as usize]
                else {
                    return err(
                        at,
                        format!(
                            "two anyOf/oneOf objects may both begin with the key {key}, which is \
                             not a const or enum in each; onebit tells object alternatives apart \
                             by their first key or its value"
                        ),
                    );
                };
                for lit in l {
                    if lits.contains(lit) {
                        let lit = String::from_utf8_lossy(lit);
                        return err(
                            at,
                            format!("two anyOf/oneOf objects may both begin with {key}: {lit}"),
                        );
                    }
                    lits.push(lit.clone());
                    route.push((a, i + 1));
                }
            }
            if lits.len() > MAX_CHOICES {
                return err(at, format!("more than {MAX_CHOICES} values of {key} in anyOf/oneOf"));
            }
            props[k].value = self.push(Node::Literals(lits), at)?;
            routes.push(route);
        }
        self.push(Node::Union { props, routes, empty }, at)
    }

    fn implied_type(o: &Map<String, Value>) -> &'static str {
        ["object", "array", "string", "number"]
            .into_iter()
            .find(|&t| SUPPORTED.iter().any(|&(k, implies)| implies == t && o.contains_key(k)))
            .unwrap_or("any")
    }

    fn reference(&mut self, r: &Value, at: &str) -> Result<NodeId, SchemaError> {
        let Some(r) = r.as_str() else { return err(at, "$ref must be a string") };
        if let Some(&id) = self.refs.get(r) {
            return Ok(id);
        }
        let Some(pointer) = r.strip_prefix('#') else {
            return err(
                at,
                format!("$ref {r:?}: only references inside the schema (#...) are supported"),
            );
        };
        let root = self.root;
        let Some(target) = root.pointer(pointer) else {
            return err(at, format!("$ref {r:?} points at nothing in the schema"));
        };
        let id = self.push(Node::Pending, at)?;
        self.refs.insert(r.to_string(), id);
        let compiled = self.compile(target, pointer)?;
        self.nodes[id as usize] = Node::Choice(vec![compiled]);
        Ok(id)
    }

    fn literals(
        &mut self,
        o: &Map<String, Value>,
        vals: &Value,
        at: &str,
    ) -> Result<NodeId, SchemaError> {
        let list: Vec<&Value> = match (o.contains_key("enum"), vals) {
            (true, Value::Array(a)) => a.iter().collect(),
            (true, _) => return err(at, "enum must be an array"),
            (false, v) => vec![v],
        };
        let types: Option<Vec<&str>> = match o.get("type") {
            None => None,
            Some(Value::String(t)) => Some(vec![t.as_str()]),
            Some(Value::Array(ts)) => Some(ts.iter().filter_map(Value::as_str).collect()),
            Some(_) => return err(at, "type must be a string or an array of strings"),
        };
        let fits = |v: &Value| {
            types.as_ref().is_none_or(|ts| {
                let t = json_type(v);
                ts.contains(&t) || (t == "integer" && ts.contains(&"number"))
            })
        };
        for k in o.keys() {
            let known = ["enum", "const", "type"].contains(&k.as_str())
                || ANNOTATIONS.contains(&k.as_str());
            if !known {
                return err(at, format!("{k} beside enum/const is not supported"));
            }
        }
        let mut lits: Vec<Vec<u8>> = Vec::new();
        for v in list.into_iter().filter(|v| fits(v)) {
            let bytes = serde_json::to_vec(v)
                .map_err(|e| SchemaError { at: at.into(), why: e.to_string() })?;
            if !lits.contains(&bytes) {
                lits.push(bytes);
            }
        }
        if lits.is_empty() {
            return err(at, "no value of enum/const has the schema's type");
        }
        if lits.len() > MAX_CHOICES || lits.iter().any(|l| l.len() > 4096) {
            return err(
                at,
                format!("enum holds more than {MAX_CHOICES} values or a value over 4 kB"),
            );
        }
        self.push(Node::Literals(lits), at)
    }

    fn typed(
        &mut self,
        o: &Map<String, Value>,
        t: &str,
        at: &str,
        assertions: &[&str],
    ) -> Result<NodeId, SchemaError> {
        if !["object", "array", "string", "integer", "number", "boolean", "null", "any"]
            .contains(&t)
        {
            return err(at, format!("unknown type {t:?}"));
        }
        // A keyword of another type listed beside this one ({"type": ["string", "null"],
        // "maxLength": 5}) applies to that type's values only, as JSON Schema reads it.
        if let Some(k) = assertions.iter().find(|k| !SUPPORTED.iter().any(|&(s, _)| s == **k)) {
            return err(at, format!("keyword {k} is not supported"));
        }
        match t {
            "any" => Ok(ANY),
            "null" => self.push(Node::Literals(vec![b"null".to_vec()]), at),
            "boolean" => self.push(Node::Literals(vec![b"true".to_vec(), b"false".to_vec()]), at),
            "string" => {
                let min = count(o, "minLength", at)?.unwrap_or(0);
                let max = count(o, "maxLength", at)?.unwrap_or(UNBOUNDED);
                if min > max {
                    return err(at, format!("minLength {min} is above maxLength {max}"));
                }
                let pattern = self.pattern(o, at, min, max)?;
                self.push(Node::String { min, max, pattern }, at)
            }
            "integer" | "number" => self.number(o, t == "integer", at),
            "object" => self.object(o, at),
            _ => self.array(o, at),
        }
    }

    /// The string's `pattern`, compiled ([`crate::json_pattern`]).
    fn pattern(
        &mut self,
        o: &Map<String, Value>,
        at: &str,
        min: u32,
        max: u32,
    ) -> Result<Option<u16>, SchemaError> {
        // A format is held to its pattern; beside a pattern it stays an annotation.
        let format = o.get("format").and_then(Value::as_str).and_then(format_pattern);
        let p = match (o.get("pattern"), &format) {
            (Some(p), _) => match p.as_str() {
                Some(p) => p,
                None => return err(at, "pattern must be a string"),
            },
            (None, Some(f)) => f.as_str(),
            (None, None) => return Ok(None),
        };
        if let Some(i) = self.patterns.iter().position(|q| q.is(p, min, max)) {
            return Ok(Some(i as u16));
        }
        let compiled =
            Pattern::compile(p, min, max).map_err(|why| SchemaError { at: at.into(), why })?;
        let cells: usize =
            self.patterns.iter().map(Pattern::cells).sum::<usize>() + compiled.cells();
        if self.patterns.len() >= MAX_PATTERNS || cells > MAX_PATTERN_CELLS {
            return err(
                at,
                format!("more than {MAX_PATTERNS} patterns or {MAX_PATTERN_CELLS} automaton cells in one schema"),
            );
        }
        self.patterns.push(compiled);
        Ok(Some(self.patterns.len() as u16 - 1))
    }

    fn number(
        &mut self,
        o: &Map<String, Value>,
        integer: bool,
        at: &str,
    ) -> Result<NodeId, SchemaError> {
        let scale = if integer { 0 } else { FRACTION as u8 };
        let mut range = Range { min: i128::MIN, max: i128::MAX, scale, multiple: 1 };
        let mut bounded = false;
        if let Some(v) = o.get("multipleOf") {
            range.multiple = multiple_of(v, integer).map_err(|why| SchemaError {
                at: at.to_string(),
                why: format!("multipleOf {v}: {why}"),
            })?;
            bounded = true;
        }
        for (k, lower, exclusive) in [
            ("minimum", true, false),
            ("exclusiveMinimum", true, true),
            ("maximum", false, false),
            ("exclusiveMaximum", false, true),
        ] {
            let Some(v) = o.get(k) else { continue };
            // Read from the number's text: 0.1 is 0.1, not the double nearest to it.
            let bound = match v {
                Value::Number(n) => scaled(&n.to_string(), scale as u32, lower != exclusive),
                _ => None,
            };
            let Some(bound) = bound else {
                return err(at, format!("{k} must be a number"));
            };
            // The least value above an exclusive lower bound, the greatest below an upper.
            let bound = match (lower, exclusive) {
                (true, true) => bound + 1,
                (false, true) => bound - 1,
                _ => bound,
            };
            if lower {
                range.min = range.min.max(bound);
            } else {
                range.max = range.max.min(bound);
            }
            bounded = true;
        }
        if bounded && !range.reachable() {
            return err(
                at,
                if integer {
                    "no integer lies within the bounds".to_string()
                } else {
                    format!(
                        "no number of at most {DIGITS} digits and {FRACTION} decimals lies within the bounds"
                    )
                },
            );
        }
        self.push(Node::Number { integer, range: bounded.then_some(range) }, at)
    }

    fn object(&mut self, o: &Map<String, Value>, at: &str) -> Result<NodeId, SchemaError> {
        let required: Vec<&str> = match o.get("required") {
            None => Vec::new(),
            Some(Value::Array(r)) => {
                match r.iter().map(Value::as_str).collect::<Option<Vec<_>>>() {
                    Some(r) => r,
                    None => return err(at, "required must be an array of strings"),
                }
            }
            Some(_) => return err(at, "required must be an array of strings"),
        };
        let mut props = Vec::new();
        if let Some(p) = o.get("properties") {
            let Some(p) = p.as_object() else { return err(at, "properties must be an object") };
            if p.len() > MAX_CHOICES {
                return err(at, format!("more than {MAX_CHOICES} properties"));
            }
            for (name, schema) in p {
                let value = self.compile(schema, &format!("{at}/properties/{name}"))?;
                let key = serde_json::to_vec(name)
                    .map_err(|e| SchemaError { at: at.into(), why: e.to_string() })?;
                props.push(Prop { key, value, required: required.contains(&name.as_str()) });
            }
        }
        // A required key without a schema of its own: any value.
        for r in &required {
            if !props.iter().any(|p| p.key == serde_json::to_vec(r).unwrap_or_default()) {
                let key = serde_json::to_vec(r)
                    .map_err(|e| SchemaError { at: at.into(), why: e.to_string() })?;
                props.push(Prop { key, value: ANY, required: true });
            }
        }
        let mut extra = match o.get("additionalProperties") {
            None | Some(Value::Bool(true)) => Some(ANY),
            Some(Value::Bool(false)) => None,
            Some(s) => Some(self.compile(s, &format!("{at}/additionalProperties"))?),
        };
        let last_required = props.iter().rposition(|p| p.required).map(|i| i as u16);
        if props.len() > MAX_CHOICES {
            return err(at, format!("more than {MAX_CHOICES} properties"));
        }
        let mut names = o.get("propertyNames").cloned();
        if let Some(pp) = o.get("patternProperties") {
            // pydantic's dict[constr(pattern=P), V]: the reply's keys all match P and hold a
            // V (keys that do not match, which additionalProperties governs, are never written).
            let one = pp.as_object().filter(|m| m.len() == 1).and_then(|m| m.iter().next());
            let (Some((pattern, value)), true) = (one, props.is_empty()) else {
                return err(
                    at,
                    "patternProperties is supported as one pattern on an object without properties",
                );
            };
            let mut keys = match names {
                None => Map::new(),
                Some(Value::Object(n))
                    if !n.contains_key("pattern") && !n.contains_key("format") =>
                {
                    n
                }
                Some(_) => return err(
                    at,
                    "patternProperties beside a propertyNames pattern or format is not supported",
                ),
            };
            // A propertyNames of another type stays so, and is refused as keys below.
            keys.entry("type").or_insert("string".into());
            keys.insert("pattern".into(), pattern.as_str().into());
            names = Some(Value::Object(keys));
            let pointer = pattern.replace('~', "~0").replace('/', "~1");
            extra = Some(self.compile(value, &format!("{at}/patternProperties/{pointer}"))?);
        }
        let (min, max, names) = self.map_bounds(o, names.as_ref(), &props, extra.is_some(), at)?;
        self.push(Node::Object { props, extra, last_required, names, min, max }, at)
    }

    /// `minProperties`, `maxProperties` and `propertyNames`: held on a map (no declared
    /// properties) as bounds on its keys; beside declared properties only where they hold
    /// whatever the reply writes (it writes no keys but those, every required one).
    fn map_bounds(
        &mut self,
        o: &Map<String, Value>,
        names: Option<&Value>,
        props: &[Prop],
        extra: bool,
        at: &str,
    ) -> Result<(u32, u32, NodeId), SchemaError> {
        let min = count(o, "minProperties", at)?.unwrap_or(0);
        let max = count(o, "maxProperties", at)?.unwrap_or(UNBOUNDED);
        let names = match names {
            None => ANY,
            Some(n) => self.compile(n, &format!("{at}/propertyNames"))?,
        };
        if !props.is_empty() {
            let required = props.iter().filter(|p| p.required).count() as u32;
            if max < props.len() as u32 {
                return err(at, "maxProperties below the number of properties is not supported");
            }
            if min > required {
                return err(
                    at,
                    "minProperties above the number of required properties is not supported",
                );
            }
            if names != ANY {
                return err(at, "propertyNames beside properties is not supported");
            }
            return Ok((0, UNBOUNDED, ANY));
        }
        if !matches!(self.nodes[names as usize], Node::Any | Node::String { .. }) {
            return err(
                at,
                "propertyNames must be a string schema (minLength, maxLength, pattern, format)",
            );
        }
        if min > max || min > 0 && !extra {
            return err(at, format!("no object has {min} to {max} properties here"));
        }
        // Two keys the reply writes may be equal, and a parser keeps one of them.
        if min > 1 {
            return err(at, "minProperties above 1 on a map is not supported");
        }
        Ok((min, max, names))
    }

    fn array(&mut self, o: &Map<String, Value>, at: &str) -> Result<NodeId, SchemaError> {
        let mut prefix = Vec::new();
        let tuple = match o.get("prefixItems") {
            Some(Value::Array(p)) => Some(("prefixItems", p)),
            Some(_) => return err(at, "prefixItems must be an array"),
            None => match o.get("items") {
                Some(Value::Array(p)) => Some(("items", p)),
                _ => None,
            },
        };
        if let Some((k, p)) = tuple {
            for (i, s) in p.iter().enumerate() {
                prefix.push(self.compile(s, &format!("{at}/{k}/{i}"))?);
            }
        }
        let items = match (o.get("items"), o.contains_key("prefixItems")) {
            (Some(Value::Array(_)), false) => match o.get("additionalItems") {
                Some(Value::Bool(false)) => None,
                _ => Some(ANY),
            },
            (None, _) | (Some(Value::Bool(true)), _) => Some(ANY),
            (Some(Value::Bool(false)), _) => None,
            (Some(s), _) => Some(self.compile(s, &format!("{at}/items"))?),
        };
        let min = count(o, "minItems", at)?.unwrap_or(0);
        let mut max = count(o, "maxItems", at)?.unwrap_or(UNBOUNDED);
        if items.is_none() {
            max = max.min(prefix.len() as u32);
        }
        if min > max {
            return err(
                at,
                format!("minItems {min} is above the most items the array may hold ({max})"),
            );
        }
        let unique = match o.get("uniqueItems") {
            None | Some(Value::Bool(false)) => false,
            Some(Value::Bool(true)) => true,
            Some(_) => return err(at, "uniqueItems must be a boolean"),
        };
        let mut items = items;
        if unique {
            let values =
                items.map(|i| self.resolve(i)).filter(|_| prefix.is_empty()).and_then(|i| {
                    match &self.nodes[i as usize] {
                        Node::Literals(c) if c.len() <= 64 => Some((i, c.len() as u32)),
                        _ => None,
                    }
                });
            let Some((literals, n)) = values else {
                return err(
                    at,
                    "uniqueItems is supported on arrays whose items are an enum or const of at \
                     most 64 values (no prefixItems)",
                );
            };
            if let Node::Literals(c) = &self.nodes[literals as usize] {
                equal_numbers(c, at)?;
            }
            items = Some(literals);
            max = max.min(n);
            if min > max {
                return err(at, format!("minItems {min} is above the {n} distinct items"));
            }
        }
        self.push(Node::Array { prefix, items, min, max, unique }, at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        for (schema, says) in [
            (json!({"type": "string", "pattern": "(?<=a)b"}), "look-around"),
            (json!({"type": "string", "pattern": "^ab$", "maxLength": 1}), "no string of 0 to 1"),
            (json!({"type": "string", "pattern": "^a", "maxLength": 5000}), "above 1024"),
            (json!({"type": "string", "pattern": 3}), "pattern must be a string"),
            (json!({"not": {"type": "null"}}), "not"),
            (
                json!({"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1e-12}),
                "9 decimals",
            ),
            (json!({"type": "number", "minimum": "0"}), "minimum must be a number"),
            (json!({"type": "array", "uniqueItems": true}), "uniqueItems is supported"),
            (json!({"type": "array", "items": {"enum": [1, 1.0]}, "uniqueItems": true}), "twice"),
            (
                json!({"type": "array", "items": {"enum": [1, 2]}, "uniqueItems": true, "minItems": 3}),
                "2 distinct",
            ),
            (json!({"anyOf": [{"type": "string"}, {"enum": ["a"]}]}), "both begin with '\"'"),
            (json!({"anyOf": [{"type": "object"}, {"properties": {}}]}), "both begin with '{'"),
            (json!({"$ref": "#/$defs/x"}), "points at nothing"),
            (json!({"$ref": "https://example.com/s.json"}), "only references inside"),
            (json!({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}), "refers back"),
            (json!({"type": "string", "minLength": 3, "maxLength": 2}), "minLength 3"),
            (json!({"type": "integer", "minimum": 3, "maximum": 2}), "no integer"),
            (json!({"enum": [1, 2], "type": "string"}), "no value of enum"),
            (json!(false), "accepts nothing"),
            (json!({"type": "date"}), "unknown type"),
            (json!({"allOf": [{}, {}]}), "exactly one"),
            (json!({"type": "array", "items": false, "minItems": 1}), "minItems 1"),
        ] {
            let e = JsonSchema::compile(&schema).unwrap_err();
            assert!(e.to_string().contains(says), "{schema}: {e}");
        }
        let e = JsonSchema::compile(&json!({"properties": {"a": {"not": {}}}})).unwrap_err();
        assert_eq!(e.at, "/properties/a");
        for (m, says) in [
            (json!(0), "multipleOf 0: must be greater than 0"),
            (json!(-2), "multipleOf -2: must be greater than 0"),
            (json!("5"), "multipleOf \"5\": must be a number"),
            (json!(1e-10), "more than 9 decimals is not supported"),
            (json!(1e19), "must be at most 1e18"),
        ] {
            let e = JsonSchema::compile(&json!({"type": "number", "multipleOf": m})).unwrap_err();
            assert!(e.to_string().contains(says), "{m}: {e}");
        }
        let e = JsonSchema::compile(
            &json!({"type": "integer", "multipleOf": 7, "minimum": 1, "maximum": 6}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no integer"), "{e}");
    }

    /// Hostile schemas: long `$ref` chains, huge enums, arbitrary JSON — an error or a
    /// machine, never a panic or a stack overflow.
    #[test]
    fn hostile_schemas_are_refused_not_crashed_on() {
        let mut defs = serde_json::Map::new();
        for i in 0..5000 {
            defs.insert(format!("d{i}"), json!({"$ref": format!("#/$defs/d{}", i + 1)}));
        }
        defs.insert("d5000".into(), json!({"type": "integer"}));
        let chain = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        assert!(JsonSchema::compile(&chain).unwrap_err().why.contains("nest deeper"));
        let big = json!({"enum": (0..5000).collect::<Vec<_>>()});
        assert!(JsonSchema::compile(&big).unwrap_err().why.contains("more than 1024"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        #[test]
        fn arbitrary_json_never_panics(v in arbitrary_schema(), bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            if let Ok(s) = JsonSchema::compile(&v) {
                let mut m = crate::schema_machine::SchemaMachine::new();
                for b in bytes {
                    if !m.feed(&s, b) {
                        break;
                    }
                }
                let _ = m.can_end(&s);
            }
        }
    }

    fn arbitrary_schema() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let keys = prop_oneof![
            Just("type"),
            Just("properties"),
            Just("required"),
            Just("items"),
            Just("prefixItems"),
            Just("enum"),
            Just("const"),
            Just("anyOf"),
            Just("oneOf"),
            Just("allOf"),
            Just("$ref"),
            Just("minLength"),
            Just("maxLength"),
            Just("minItems"),
            Just("maxItems"),
            Just("minimum"),
            Just("maximum"),
            Just("exclusiveMinimum"),
            Just("additionalProperties"),
            Just("$defs"),
            Just("a"),
            Just("object"),
            Just("string"),
            Just("integer"),
            Just("#"),
            Just("#/$defs/a"),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-5i64..5).prop_map(Value::from),
            (-1e3f64..1e3).prop_map(Value::from),
            keys.clone().prop_map(|k| Value::String(k.to_string())),
        ];
        leaf.prop_recursive(5, 48, 5, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec((keys.clone(), inner), 0..5).prop_map(
                    |kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
                ),
            ]
        })
    }

    #[test]
    fn annotations_and_integer_bounds_compile() {
        let s = JsonSchema::compile(&json!({
            "title": "t", "description": "d", "type": "object",
            "properties": {"n": {"type": "integer", "exclusiveMinimum": 0.5, "maximum": 9.7, "format": "int32"}},
            "required": ["n"], "additionalProperties": false
        }))
        .unwrap();
        let Node::Object { props, extra, last_required, .. } = &s.nodes[s.root as usize] else {
            panic!()
        };
        assert_eq!((extra, last_required), (&None, &Some(0)));
        assert_eq!(props[0].key, b"\"n\"");
        assert_eq!(
            s.nodes[props[0].value as usize],
            Node::Number {
                integer: true,
                range: Some(Range { min: 1, max: 9, scale: 0, multiple: 1 })
            }
        );
    }
}
