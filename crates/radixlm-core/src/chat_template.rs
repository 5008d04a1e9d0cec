//! Chat templates: renders a model's Jinja chat template (GGUF `tokenizer.chat_template`, or
//! `chat_template` in tokenizer_config.json) the way Hugging Face transformers' `apply_chat_template` does,
//! with minijinja set up like transformers' jinja2 environment:
//!
//! - `trim_blocks` and `lstrip_blocks` on, a single trailing newline of the template dropped, no autoescape;
//! - Python's string / dict / list methods (`.strip()`, `.split()`, `.startswith()`, `.items()`, `.get()`...)
//!   through minijinja-contrib's pycompat;
//! - `raise_exception(msg)` (an `ERR_CHAT_TEMPLATE` error carrying `msg`), `strftime_now(fmt)` (local time,
//!   Python's strftime), `tojson` as `json.dumps(x, ensure_ascii=False, indent=None, separators=None,
//!   sort_keys=False)`: no HTML escaping, Python's separators (`", "`, `": "`), the same four arguments;
//! - values print as Python's `str()` does: `True`, `None`, `{'a': 1}`, `['x']`, `1e-07`;
//! - `{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body;
//! - the context: `messages`, `tools`, `documents` (`none` unless given), `add_generation_prompt`,
//!   `bos_token` / `eos_token` (where the tokenizer has them), and every key of `chatTemplateKwargs`.
//!
//! Messages are arbitrary JSON objects passed through as they came (key order kept: templates print tool
//! schemas with `tojson`), normalized like transformers: keys whose value is null are dropped, and a
//! message with `reasoning_content`, `thinking` or `reasoning` gets the first of them under both
//! `thinking` and `reasoning_content`.
//!
//! Known limits: Python tuples print as lists (`('a', 1)` prints `['a', 1]`); `~` and `join` stringify with
//! minijinja's rules (`true` stays `True`, but a dict prints as JSON-ish text); Python's `repr` of exotic
//! non-printable code points is approximated.

use std::fmt::Write as _;

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{AutoEscape, Environment, ErrorKind};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use crate::error::{Error, ErrorCode, Result};
use crate::sampling::params::{camel, snake};

const TEMPLATE_NAME: &str = "chat_template";

// ---------------------------------------------------------------------------------------------------------
// JSON with ordered objects

/// A JSON value whose objects keep their key order (as Python dicts do; serde_json's default map sorts).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    pub fn parse(text: &str) -> std::result::Result<Json, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) | Json::UInt(_) | Json::Float(_) => "a number",
            Json::Str(_) => "a string",
            Json::Arr(_) => "an array",
            Json::Obj(_) => "an object",
        }
    }

    /// The template-side value (a minijinja map keeps insertion order with `preserve_order`).
    pub fn to_value(&self) -> Value {
        match self {
            Json::Null => Value::from(()),
            Json::Bool(b) => Value::from(*b),
            Json::Int(i) => Value::from(*i),
            Json::UInt(u) => Value::from(*u),
            Json::Float(f) => Value::from(*f),
            Json::Str(s) => Value::from(s.as_str()),
            Json::Arr(items) => Value::from(items.iter().map(Json::to_value).collect::<Vec<_>>()),
            Json::Obj(pairs) => pairs.iter().map(|(k, v)| (Value::from(k.as_str()), v.to_value())).collect(),
        }
    }
}

/// Sets `key` in place when present (Python dict assignment keeps the key's position), else appends it.
fn upsert(pairs: &mut Vec<(String, Json)>, key: &str, value: Json) {
    match pairs.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => pairs.push((key.to_string(), value)),
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Json, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> std::result::Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_none<E: de::Error>(self) -> std::result::Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Json, D::Error> {
                Json::deserialize(d)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> std::result::Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<Json, E> {
                Ok(i64::try_from(v).map(Json::Int).unwrap_or(Json::UInt(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Json, E> {
                Ok(Json::Str(v.to_string()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> std::result::Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    upsert(&mut pairs, &k, v); // a repeated key: the last value wins, at the first position
                }
                Ok(Json::Obj(pairs))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Int(i) => s.serialize_i64(*i),
            Json::UInt(u) => s.serialize_u64(*u),
            Json::Float(f) => s.serialize_f64(*f),
            Json::Str(v) => s.serialize_str(v),
            Json::Arr(items) => s.collect_seq(items),
            Json::Obj(pairs) => {
                let mut m = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// The request

/// One conversation to render, validated and normalized.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Json>,
    pub tools: Option<Vec<Json>>,
    pub documents: Option<Vec<Json>>,
    /// Extra template variables, in the caller's order.
    pub kwargs: Vec<(String, Json)>,
    pub add_generation_prompt: bool,
}

/// Template variables `chatTemplateKwargs` may not redefine (transformers passes them by keyword).
const RESERVED: [&str; 4] = ["messages", "tools", "documents", "add_generation_prompt"];

fn bad_input(msg: impl Into<String>) -> Error {
    Error::invalid_input(msg)
}

impl ChatRequest {
    /// `{ messages, tools?, documents?, chatTemplateKwargs?, addGenerationPrompt? }` as JSON text (snake_case
    /// keys accepted). `addGenerationPrompt` defaults to true.
    pub fn from_json(text: &str) -> Result<Self> {
        let json = Json::parse(text).map_err(|e| bad_input(format!("chat request: invalid JSON: {e}")))?;
        Self::from_parsed(json)
    }

    pub fn from_parsed(json: Json) -> Result<Self> {
        let Json::Obj(pairs) = json else {
            return Err(bad_input(format!("chat request: expected an object, got {}", json.kind())));
        };
        let mut seen = Vec::<String>::new();
        let mut req = ChatRequest { messages: Vec::new(), tools: None, documents: None, kwargs: Vec::new(), add_generation_prompt: true };
        let mut has_messages = false;
        for (raw, value) in pairs {
            let key = snake(&raw);
            if seen.contains(&key) {
                return Err(bad_input(format!("options.{}: given twice (camelCase and snake_case)", camel(&key))));
            }
            seen.push(key.clone());
            match key.as_str() {
                "messages" => {
                    req.messages = normalize_messages(value)?;
                    has_messages = true;
                }
                "tools" => req.tools = list_of_objects(value, "tools")?,
                "documents" => req.documents = list_of_objects(value, "documents")?,
                "chat_template_kwargs" => match value {
                    Json::Null => {}
                    Json::Obj(kw) => {
                        if let Some((k, _)) = kw.iter().find(|(k, _)| RESERVED.contains(&k.as_str())) {
                            return Err(bad_input(format!(
                                "options.chatTemplateKwargs.{k}: `{k}` is set by radixlm itself and cannot be overridden"
                            )));
                        }
                        req.kwargs = kw;
                    }
                    other => {
                        return Err(bad_input(format!("options.chatTemplateKwargs: expected an object, got {}", other.kind())))
                    }
                },
                "add_generation_prompt" => match value {
                    Json::Null => {}
                    Json::Bool(b) => req.add_generation_prompt = b,
                    other => {
                        return Err(bad_input(format!("options.addGenerationPrompt: expected a boolean, got {}", other.kind())))
                    }
                },
                _ => return Err(bad_input(format!("options.{}: unknown option", camel(&key)))),
            }
        }
        if !has_messages {
            return Err(bad_input("messages: missing"));
        }
        Ok(req)
    }
}

fn list_of_objects(value: Json, what: &str) -> Result<Option<Vec<Json>>> {
    match value {
        Json::Null => Ok(None),
        Json::Arr(items) => {
            if let Some((i, item)) = items.iter().enumerate().find(|(_, t)| !matches!(t, Json::Obj(_))) {
                return Err(bad_input(format!("options.{what}[{i}]: expected an object, got {}", item.kind())));
            }
            Ok(Some(items))
        }
        other => Err(bad_input(format!("options.{what}: expected an array of objects, got {}", other.kind()))),
    }
}

/// What transformers does before rendering: objects only, null-valued keys dropped, reasoning aliased.
fn normalize_messages(value: Json) -> Result<Vec<Json>> {
    let Json::Arr(items) = value else {
        return Err(bad_input(format!("messages: expected an array of message objects, got {}", value.kind())));
    };
    if items.is_empty() {
        return Err(bad_input("messages: the conversation is empty (give at least one message)"));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let Json::Obj(pairs) = m else {
                return Err(bad_input(format!("messages[{i}]: expected a message object, got {}", m.kind())));
            };
            let pairs: Vec<(String, Json)> = pairs.into_iter().filter(|(_, v)| *v != Json::Null).collect();
            let reasoning = ["reasoning_content", "thinking", "reasoning"]
                .iter()
                .find_map(|k| pairs.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()));
            Ok(Json::Obj(match reasoning {
                None => pairs,
                // {"thinking": r, **message, "reasoning_content": r}
                Some(r) => {
                    let mut out = vec![("thinking".to_string(), r.clone())];
                    for (k, v) in pairs {
                        upsert(&mut out, &k, v);
                    }
                    upsert(&mut out, "reasoning_content", r);
                    out
                }
            }))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// The template

/// A compiled chat template. Build it once per model; rendering is `&self` and thread-safe.
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChatTemplate")
    }
}

/// The error `raise_exception` raises, found again in the render error's source chain.
#[derive(Debug)]
struct Raised(String);

impl std::fmt::Display for Raised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Raised {}

fn template_error(what: &str, e: &minijinja::Error) -> Error {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(r) = s.downcast_ref::<Raised>() {
            return Error::new(ErrorCode::ChatTemplate, format!("the chat template raised an exception: {}", r.0));
        }
        source = s.source();
    }
    Error::new(ErrorCode::ChatTemplate, format!("{what}: {e}"))
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is ERR_CHAT_TEMPLATE.
    pub fn new(source: &str) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_debug(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(|out, _state, value| {
            let text = match value.as_str() {
                Some(s) => return out.write_str(s).map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure)),
                None => py_str(value),
            };
            out.write_str(&text).map_err(|_| minijinja::Error::from(ErrorKind::WriteFailure))
        });
        env.add_filter("tojson", tojson_filter);
        env.add_filter("string", |v: &Value| Value::from(py_str(v)));
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|e| template_error("the chat template does not compile", &e))?;
        Ok(ChatTemplate { env })
    }

    /// Renders one conversation. `bos_token` / `eos_token` are defined in the template only when given
    /// (transformers passes the tokenizer's special tokens that are set); `chatTemplateKwargs` override them.
    pub fn render(&self, req: &ChatRequest, bos_token: Option<&str>, eos_token: Option<&str>) -> Result<String> {
        let mut ctx: Vec<(String, Value)> = Vec::new();
        let mut set = |k: &str, v: Value| match ctx.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => ctx.push((k.to_string(), v)),
        };
        if let Some(b) = bos_token {
            set("bos_token", Value::from(b));
        }
        if let Some(e) = eos_token {
            set("eos_token", Value::from(e));
        }
        for (k, v) in &req.kwargs {
            set(k, v.to_value());
        }
        let list = |items: &Option<Vec<Json>>| match items {
            Some(items) => Value::from(items.iter().map(Json::to_value).collect::<Vec<_>>()),
            None => Value::from(()),
        };
        set("messages", Value::from(req.messages.iter().map(Json::to_value).collect::<Vec<_>>()));
        set("tools", list(&req.tools));
        set("documents", list(&req.documents));
        set("add_generation_prompt", Value::from(req.add_generation_prompt));
        let ctx: Value = ctx.into_iter().collect();
        let tmpl = self.env.get_template(TEMPLATE_NAME).map_err(|e| template_error("chat template", &e))?;
        tmpl.render(ctx).map_err(|e| template_error("the chat template failed to render", &e))
    }
}

/// `{% generation %}` / `{% endgeneration %}` (transformers' assistant-token tracker) become an always-true
/// `if` block, keeping their whitespace-control markers, so the body renders exactly as under jinja2.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner = &tag[2..end];
        let body = inner.trim_start_matches(['-', '+']).trim_end_matches(['-', '+']);
        let lead = &inner[..inner.len() - inner.trim_start_matches(['-', '+']).len()];
        let trail = &inner[inner.trim_end_matches(['-', '+']).len()..];
        let replacement = match body.trim() {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(r) => {
                let _ = write!(out, "{{%{lead} {r} {trail}%}}");
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn raise_exception(message: Value) -> std::result::Result<Value, minijinja::Error> {
    let msg = py_str(&message);
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("raise_exception: {msg}")).with_source(Raised(msg)))
}

/// Python's `datetime.now().strftime(fmt)`: local time; `%f` is microseconds, and `%z` / `%Z` are empty
/// (the datetime is naive).
fn strftime_now(format: &str) -> std::result::Result<String, minijinja::Error> {
    let now = chrono::Local::now().naive_local();
    let mut fmt = String::with_capacity(format.len());
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            fmt.push(c);
            continue;
        }
        match chars.next() {
            Some('f') => {
                let _ = write!(fmt, "{:06}", now.and_utc().timestamp_subsec_micros());
            }
            Some('z') | Some('Z') => {}
            Some(other) => {
                fmt.push('%');
                fmt.push(other);
            }
            None => fmt.push('%'),
        }
    }
    let mut out = String::new();
    write!(out, "{}", now.format(&fmt))
        .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, format!("strftime_now: invalid format {format:?}")))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------------------
// Python's str(), repr() and json.dumps()

/// Python's `repr(float)`: shortest round-trip digits, exponent form below 1e-4 and from 1e16.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    let sci = format!("{:e}", f.abs()); // shortest digits: "1.5e16", "1e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let decpt = exp + 1;
    let sign = if f < 0.0 { "-" } else { "" };
    if decpt > 16 || decpt <= -4 {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits };
        let e_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{e_sign}{:02}", exp.abs())
    } else if decpt <= 0 {
        format!("{sign}0.{}{digits}", "0".repeat((-decpt) as usize))
    } else if decpt as usize >= digits.len() {
        format!("{sign}{digits}{}.0", "0".repeat(decpt as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(decpt as usize);
        format!("{sign}{a}.{b}")
    }
}

fn number_str(v: &Value) -> String {
    if v.is_integer() {
        v.to_string()
    } else {
        f64::try_from(v.clone()).map(py_float_repr).unwrap_or_else(|_| v.to_string())
    }
}

/// Whether Python's `str.isprintable()` holds for a non-ASCII char (no Unicode tables here: the control,
/// format, separator and private-use ranges that occur in practice).
fn py_printable(c: char) -> bool {
    let u = c as u32;
    !matches!(u,
        0x80..=0xa0 | 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x1680 | 0x180e | 0x2000..=0x200f
        | 0x2028..=0x202f | 0x205f..=0x2064 | 0x2066..=0x206f | 0x3000 | 0xe000..=0xf8ff | 0xfeff
        | 0xfff9..=0xfffb | 0xe0001 | 0xe0020..=0xe007f | 0xf0000..=0x10ffff)
}

/// Python's `repr(str)`.
fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if c.is_ascii() || py_printable(c) => out.push(c),
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push(quote);
    out
}

/// Python's `repr()` of a template value (how items print inside a printed list or dict).
fn py_repr(v: &Value) -> String {
    match v.kind() {
        ValueKind::String => py_repr_str(v.as_str().unwrap_or_default()),
        ValueKind::Undefined => "Undefined".into(),
        _ => py_str(v),
    }
}

/// Python's `str()` of a template value: what `{{ value }}` prints under jinja2.
pub fn py_str(v: &Value) -> String {
    match v.kind() {
        ValueKind::Undefined => String::new(),
        ValueKind::None => "None".into(),
        ValueKind::Bool => (if v.is_true() { "True" } else { "False" }).into(),
        ValueKind::Number => number_str(v),
        ValueKind::String => v.as_str().unwrap_or_default().to_string(),
        ValueKind::Seq | ValueKind::Iterable => match v.try_iter() {
            Ok(items) => format!("[{}]", items.map(|x| py_repr(&x)).collect::<Vec<_>>().join(", ")),
            Err(_) => v.to_string(),
        },
        ValueKind::Map => match v.try_iter() {
            Ok(keys) => {
                let items: Vec<String> = keys
                    .map(|k| {
                        let val = v.get_item(&k).unwrap_or_default();
                        format!("{}: {}", py_repr(&k), py_repr(&val))
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            Err(_) => v.to_string(),
        },
        _ => v.to_string(),
    }
}

struct DumpOpts {
    ensure_ascii: bool,
    indent: Option<String>,
    item_sep: String,
    key_sep: String,
    sort_keys: bool,
}

fn json_str(s: &str, ensure_ascii: bool, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if ensure_ascii && (c as u32) >= 0x7f => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{:04x}", unit);
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn not_serializable(v: &Value) -> minijinja::Error {
    let what = match v.kind() {
        ValueKind::Undefined => "Undefined".to_string(),
        k => k.to_string(),
    };
    minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: Object of type {what} is not JSON serializable"))
}

fn newline_indent(opts: &DumpOpts, level: usize, out: &mut String) {
    if let Some(ind) = &opts.indent {
        out.push('\n');
        for _ in 0..level {
            out.push_str(ind);
        }
    }
}

/// Python's `json.dumps` of a template value.
fn dump(v: &Value, opts: &DumpOpts, level: usize, out: &mut String) -> std::result::Result<(), minijinja::Error> {
    match v.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => {
            if v.is_integer() {
                let _ = write!(out, "{v}");
            } else {
                let f = f64::try_from(v.clone()).map_err(|_| not_serializable(v))?;
                out.push_str(&if f.is_nan() {
                    "NaN".into()
                } else if f.is_infinite() {
                    (if f > 0.0 { "Infinity" } else { "-Infinity" }).into()
                } else {
                    py_float_repr(f)
                });
            }
        }
        ValueKind::String => json_str(v.as_str().unwrap_or_default(), opts.ensure_ascii, out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                dump(item, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push(']');
        }
        ValueKind::Map => {
            let mut items: Vec<(String, Value)> = Vec::new();
            for k in v.try_iter()? {
                let key = match k.kind() {
                    ValueKind::String => k.as_str().unwrap_or_default().to_string(),
                    ValueKind::Number => number_str(&k),
                    ValueKind::Bool => (if k.is_true() { "true" } else { "false" }).into(),
                    ValueKind::None => "null".into(),
                    other => {
                        return Err(minijinja::Error::new(
                            ErrorKind::InvalidOperation,
                            format!("tojson: keys must be str, int, float, bool or None, not {other}"),
                        ))
                    }
                };
                let val = v.get_item(&k)?;
                items.push((key, val));
            }
            if opts.sort_keys {
                items.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if items.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, (k, val)) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(&opts.item_sep);
                }
                newline_indent(opts, level + 1, out);
                json_str(k, opts.ensure_ascii, out);
                out.push_str(&opts.key_sep);
                dump(val, opts, level + 1, out)?;
            }
            newline_indent(opts, level, out);
            out.push('}');
        }
        _ => return Err(not_serializable(v)),
    }
    Ok(())
}

/// `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`, positional or by name.
fn tojson_filter(value: &Value, args: Rest<Value>) -> std::result::Result<Value, minijinja::Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    let mut args = args.0;
    let kwargs = match args.last() {
        Some(last) if last.is_kwargs() => Some(Kwargs::try_from(args.pop().unwrap_or_default())?),
        _ => None,
    };
    if args.len() > NAMES.len() {
        return Err(minijinja::Error::new(ErrorKind::TooManyArguments, "tojson takes at most 4 arguments"));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (i, a) in args.into_iter().enumerate() {
        given[i] = Some(a);
    }
    if let Some(kw) = &kwargs {
        for name in kw.args() {
            let Some(i) = NAMES.iter().position(|n| *n == name) else {
                return Err(minijinja::Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson() got an unexpected keyword argument '{name}'"),
                ));
            };
            if given[i].is_some() {
                return Err(minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson() got multiple values for '{name}'")));
            }
            given[i] = Some(kw.get::<Value>(name)?);
        }
    }
    let [ensure_ascii, indent, separators, sort_keys] = given;
    let present = |v: &Option<Value>| v.as_ref().filter(|v| !v.is_none() && !v.is_undefined()).cloned();
    let indent = match present(&indent) {
        None => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or_default().to_string()),
        Some(v) => {
            let n = i64::try_from(v.clone())
                .map_err(|_| minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: indent must be an integer or a string"))?;
            Some(" ".repeat(n.max(0) as usize))
        }
    };
    let (item_sep, key_sep) = match present(&separators) {
        Some(seps) => {
            let parts: Vec<Value> = seps.try_iter()?.collect();
            match parts.as_slice() {
                [a, b] if a.as_str().is_some() && b.as_str().is_some() => {
                    (a.as_str().unwrap_or_default().to_string(), b.as_str().unwrap_or_default().to_string())
                }
                _ => {
                    return Err(minijinja::Error::new(ErrorKind::InvalidOperation, "tojson: separators must be two strings"))
                }
            }
        }
        None if indent.is_some() => (",".to_string(), ": ".to_string()),
        None => (", ".to_string(), ": ".to_string()),
    };
    let opts = DumpOpts {
        ensure_ascii: present(&ensure_ascii).is_some_and(|v| v.is_true()),
        indent,
        item_sep,
        key_sep,
        sort_keys: present(&sort_keys).is_some_and(|v| v.is_true()),
    };
    let mut out = String::new();
    dump(value, &opts, 0, &mut out)?;
    Ok(Value::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tokenizer::TokenizerInfo;
    use std::path::PathBuf;

    fn repo() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn goldens() -> Json {
        let text = std::fs::read_to_string(repo().join("__test__/goldens/chat-templates.json")).expect("chat goldens");
        Json::parse(&text).expect("golden JSON")
    }

    fn render_str(template: &str, request: &str) -> Result<String> {
        ChatTemplate::new(template)?.render(&ChatRequest::from_json(request)?, Some("<s>"), Some("</s>"))
    }

    fn msgs(content: &str) -> String {
        format!(r#"{{"messages": [{{"role": "user", "content": {}}}]}}"#, serde_json::to_string(content).unwrap())
    }

    #[test]
    fn chat_template_goldens_render_byte_identical() {
        let g = goldens();
        let templates = g.get("templates").unwrap();
        let Some(Json::Arr(cases)) = g.get("cases") else { panic!("no cases") };
        let mut compiled = std::collections::HashMap::new();
        let mut checked = 0;
        for case in cases {
            let name = case.get("name").and_then(Json::as_str).unwrap();
            let tname = case.get("template").and_then(Json::as_str).unwrap();
            let t = templates.get(tname).unwrap();
            let tmpl = compiled.entry(tname).or_insert_with(|| ChatTemplate::new(t.get("template").unwrap().as_str().unwrap()).unwrap());
            let req = ChatRequest::from_parsed(case.get("request").unwrap().clone()).unwrap();
            let got = tmpl.render(&req, t.get("bosToken").and_then(Json::as_str), t.get("eosToken").and_then(Json::as_str));
            match (case.get("text"), case.get("error")) {
                (Some(Json::Str(want)), _) => {
                    let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
                    assert_eq!(&got, want, "{name}: rendered text differs");
                }
                (_, Some(Json::Str(msg))) => {
                    let e = got.expect_err(name);
                    assert_eq!(e.code, ErrorCode::ChatTemplate, "{name}: {e}");
                    if case.get("errorType").and_then(Json::as_str) == Some("TemplateError") {
                        assert_eq!(e.message, format!("the chat template raised an exception: {msg}"), "{name}");
                    }
                }
                _ => panic!("{name}: neither text nor error"),
            }
            checked += 1;
        }
        assert!(checked >= 23, "only {checked} cases");
    }

    #[test]
    fn chat_template_golden_ids_match_tokenizer_without_special_tokens() {
        let g = goldens();
        let templates = g.get("templates").unwrap();
        let Some(Json::Arr(cases)) = g.get("cases") else { panic!("no cases") };
        let mut tokenizers = std::collections::HashMap::new();
        let mut checked = 0;
        for case in cases {
            let (Some(Json::Str(text)), Some(Json::Arr(ids))) = (case.get("text"), case.get("ids")) else { continue };
            let tname = case.get("template").and_then(Json::as_str).unwrap();
            let dir = repo().join(templates.get(tname).unwrap().get("tokenizer").and_then(Json::as_str).unwrap());
            let tk = tokenizers.entry(tname).or_insert_with(|| TokenizerInfo::from_hf_dir(&dir, &dir).unwrap());
            let want: Vec<u32> = ids.iter().map(|i| if let Json::Int(i) = i { *i as u32 } else { panic!() }).collect();
            assert_eq!(tk.encode_with(text, false).unwrap(), want, "{}", case.get("name").and_then(Json::as_str).unwrap());
            checked += 1;
        }
        assert!(checked >= 14, "only {checked} cases with ids");
    }

    #[test]
    fn chat_template_tokenizer_info_renders_with_its_own_template_and_tokens() {
        let dir = repo().join("__test__/fixtures/tiny-qwen2");
        let tk = TokenizerInfo::from_hf_dir(&dir, &dir).unwrap();
        let req = ChatRequest::from_json(&msgs("hi")).unwrap();
        let text = tk.apply_chat_template(&req).unwrap();
        assert!(text.starts_with("<|im_start|>system\nYou are Qwen"), "{text}");
        assert!(text.ends_with("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"), "{text}");
        // compiled once
        assert!(std::ptr::eq(tk.compiled_chat_template().unwrap(), tk.compiled_chat_template().unwrap()));
        let mut no_template = TokenizerInfo::from_hf_dir(&dir, &dir).unwrap();
        no_template.chat_template = None;
        let e = no_template.apply_chat_template(&req).unwrap_err();
        assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
        assert!(e.message.contains("no chat template"), "{e}");
    }

    #[test]
    fn chat_template_raise_exception_is_a_coded_error_with_the_message() {
        let t = "{% if messages[0].role != 'system' %}{{ raise_exception('System message required, got ' + messages[0].role) }}{% endif %}ok";
        let e = render_str(t, &msgs("x")).unwrap_err();
        assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
        assert_eq!(e.message, "the chat template raised an exception: System message required, got user");
        // Other render failures carry minijinja's description.
        let e = render_str("{{ messages[0].nope.deeper }}", &msgs("x")).unwrap_err();
        assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
        assert!(e.message.starts_with("the chat template failed to render"), "{e}");
        let e = ChatTemplate::new("{% for m in messages %}{{ m }").unwrap_err();
        assert_eq!(e.code(), "ERR_CHAT_TEMPLATE");
        assert!(e.message.starts_with("the chat template does not compile"), "{e}");
    }

    #[test]
    fn chat_template_tojson_is_pythons_json_dumps() {
        let req = r#"{"messages": [{"role": "user", "content": "x"}], "chatTemplateKwargs": {"v": {"z": "<a href='x'>&amp;</a>", "a": [1, 2.5, true, null, {}, []], "é": "日本 🦀\u0001\u007f"}}}"#;
        let r = |t: &str| render_str(t, req).unwrap();
        assert_eq!(
            r("{{ v | tojson }}"),
            "{\"z\": \"<a href='x'>&amp;</a>\", \"a\": [1, 2.5, true, null, {}, []], \"é\": \"日本 🦀\\u0001\u{7f}\"}"
        );
        assert_eq!(
            r("{{ v | tojson(ensure_ascii=true, sort_keys=true) }}"),
            r#"{"a": [1, 2.5, true, null, {}, []], "z": "<a href='x'>&amp;</a>", "\u00e9": "\u65e5\u672c \ud83e\udd80\u0001\u007f"}"#
        );
        assert_eq!(r("{{ v.a | tojson(indent=2) }}"), "[\n  1,\n  2.5,\n  true,\n  null,\n  {},\n  []\n]");
        assert_eq!(r("{{ v.a | tojson(false, '\t') }}"), "[\n\t1,\n\t2.5,\n\ttrue,\n\tnull,\n\t{},\n\t[]\n]");
        assert_eq!(r("{{ v.a | tojson(separators=(',', ':')) }}"), "[1,2.5,true,null,{},[]]");
        assert_eq!(r("{{ 'quote\"back\\\\slash\n' | tojson }}"), r#""quote\"back\\slash\n""#);
        let e = render_str("{{ nothing | tojson }}", req).unwrap_err();
        assert!(e.message.contains("not JSON serializable"), "{e}");
        let e = render_str("{{ v | tojson(bogus=1) }}", req).unwrap_err();
        assert!(e.message.contains("unexpected keyword argument 'bogus'"), "{e}");
    }

    #[test]
    fn chat_template_strftime_now_formats_local_time() {
        let fmt = "%Y-%m-%d|%d %b %Y|%z%Z|%%";
        for _ in 0..3 {
            let before = chrono::Local::now().format("%Y-%m-%d|%d %b %Y||%%").to_string();
            let got = render_str(&format!("{{{{ strftime_now('{fmt}') }}}}"), &msgs("x")).unwrap();
            if got == before {
                let micros = render_str("{{ strftime_now('%f') }}", &msgs("x")).unwrap();
                assert_eq!(micros.len(), 6, "{micros}");
                assert!(micros.chars().all(|c| c.is_ascii_digit()));
                return;
            }
        }
        panic!("strftime_now disagrees with the local clock");
    }

    #[test]
    fn chat_template_prints_values_like_python() {
        let req = r#"{"messages": [{"role": "user", "content": "x"}], "chatTemplateKwargs": {"d": {"k": "it's", "n": null, "f": 1e-7, "b": false, "l": ["a\"b", 3]}, "big": 1e16, "small": 0.0001, "neg": -2.5}}"#;
        let got = render_str("{{ d }} {{ big }} {{ small }} {{ neg }} {{ d.f }} {{ d.b | string }} {{ undefined_var }}.", req).unwrap();
        assert_eq!(got, r#"{'k': "it's", 'n': None, 'f': 1e-07, 'b': False, 'l': ['a"b', 3]} 1e+16 0.0001 -2.5 1e-07 False ."#);
        for (f, s) in [(1.0, "1.0"), (0.1, "0.1"), (1e15, "1000000000000000.0"), (1.5e16, "1.5e+16"), (1e-5, "1e-05"), (-0.0, "-0.0"), (123.456, "123.456"), (1e300, "1e+300")] {
            assert_eq!(py_float_repr(f), s);
        }
        assert_eq!(py_repr_str("a'b\"c\\\u{7}é\u{a0}"), r#"'a\'b"c\\\x07é\xa0'"#);
    }

    #[test]
    fn chat_template_whitespace_and_generation_tags_follow_transformers() {
        // trim_blocks + lstrip_blocks; the template's final newline is dropped.
        let t = "{% for m in messages %}\n    {% if true %}\n[{{ m.content }}]\n    {% endif %}\n{% endfor %}\n";
        assert_eq!(render_str(t, &msgs("a")).unwrap(), "[a]\n");
        let t = "A{%- generation -%}  B  {%- endgeneration %}C{% generation %}D{% endgeneration %}";
        assert_eq!(render_str(t, &msgs("a")).unwrap(), "ABCD");
        assert_eq!(rewrite_generation_tags("{%+ generation -%}"), "{%+ if true -%}");
    }

    #[test]
    fn chat_template_context_has_tokens_kwargs_and_defaults() {
        let t = "{{ bos_token }}|{{ eos_token }}|{{ add_generation_prompt }}|{{ tools is none }}|{{ documents is none }}|{{ flag }}";
        assert_eq!(render_str(t, &msgs("x")).unwrap(), "<s>|</s>|True|True|True|");
        let req = r#"{"messages": [{"role": "user", "content": "x"}], "add_generation_prompt": false, "chat_template_kwargs": {"flag": 7, "bos_token": "B"}, "tools": [{"name": "f"}]}"#;
        assert_eq!(render_str(t, req).unwrap(), "B|</s>|False|False|True|7");
        // Without special tokens the names are undefined, not none.
        let out = ChatTemplate::new("{{ bos_token is defined }}").unwrap().render(&ChatRequest::from_json(&msgs("x")).unwrap(), None, None);
        assert_eq!(out.unwrap(), "False");
    }

    #[test]
    fn chat_template_requests_are_validated() {
        let bad = |s: &str| ChatRequest::from_json(s).unwrap_err();
        for (req, what) in [
            (r#"{"messages": "hi"}"#, "messages: expected an array"),
            (r#"{"messages": []}"#, "the conversation is empty"),
            (r#"{"messages": [{"role": "user", "content": "x"}, "hi"]}"#, "messages[1]: expected a message object, got a string"),
            (r#"{"messages": [[]]}"#, "messages[0]: expected a message object, got an array"),
            (r#"{}"#, "messages: missing"),
            (r#"{"messages": [{}], "bogus": 1}"#, "options.bogus: unknown option"),
            (r#"{"messages": [{}], "tools": {}}"#, "options.tools: expected an array"),
            (r#"{"messages": [{}], "tools": [1]}"#, "options.tools[0]: expected an object"),
            (r#"{"messages": [{}], "documents": ["d"]}"#, "options.documents[0]: expected an object"),
            (r#"{"messages": [{}], "chatTemplateKwargs": []}"#, "options.chatTemplateKwargs: expected an object"),
            (r#"{"messages": [{}], "chatTemplateKwargs": {"messages": 1}}"#, "cannot be overridden"),
            (r#"{"messages": [{}], "addGenerationPrompt": 1}"#, "options.addGenerationPrompt: expected a boolean"),
            (r#"{"messages": [{}], "addGenerationPrompt": true, "add_generation_prompt": true}"#, "given twice"),
            ("[1]", "expected an object"),
            ("{", "invalid JSON"),
        ] {
            let e = bad(req);
            assert_eq!(e.code(), "ERR_INVALID_INPUT", "{req}");
            assert!(e.message.contains(what), "{req}: {e}");
        }
        // Null keys dropped; reasoning aliased the way transformers does it.
        let r = ChatRequest::from_json(
            r#"{"messages": [{"role": "assistant", "content": "a", "tool_calls": null, "reasoning": "r", "reasoning_content": null}]}"#,
        )
        .unwrap();
        let Json::Obj(m) = &r.messages[0] else { panic!() };
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["thinking", "role", "content", "reasoning", "reasoning_content"]);
        assert!(r.add_generation_prompt);
    }
}
