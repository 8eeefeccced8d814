//! Reading a forge's JSON with explicit paths, shared by every source: each error names the
//! field (`object_attributes.id: expected an unsigned integer`), times are normalized to
//! RFC 3339 with milliseconds, and ids beyond 32 bits are kept.

use serde_json::Value;

use crate::time;

/// Why a body is not a delivery we can read: the field and what was wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

pub type Result<T> = std::result::Result<T, ParseError>;

pub fn field<'a>(v: &'a Value, name: &str) -> Option<&'a Value> {
    v.as_object().and_then(|o| o.get(name))
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn req_str(v: &Value, name: &str) -> Result<String> {
    req_str_at(v, name, name)
}

pub fn req_str_at(v: &Value, path: &str, name: &str) -> Result<String> {
    opt_str(v, path, name)?.ok_or_else(|| ParseError(format!("{path}: required field is missing")))
}

pub fn opt_str(v: &Value, path: &str, name: &str) -> Result<Option<String>> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ParseError(format!(
            "{path}: expected a string, got {}",
            type_name(other)
        ))),
    }
}

pub fn req_u64(v: &Value, path: &str, name: &str) -> Result<u64> {
    opt_u64(v, path, name)?.ok_or_else(|| ParseError(format!("{path}: required field is missing")))
}

pub fn opt_u64(v: &Value, path: &str, name: &str) -> Result<Option<u64>> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| ParseError(format!("{path}: expected an unsigned 64-bit integer, got {n}"))),
        Some(other) => Err(ParseError(format!(
            "{path}: expected an unsigned integer, got {}",
            type_name(other)
        ))),
    }
}

pub fn opt_f64(v: &Value, path: &str, name: &str) -> Result<Option<f64>> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(other) => Err(ParseError(format!(
            "{path}: expected a number, got {}",
            type_name(other)
        ))),
    }
}

pub fn opt_bool(v: &Value, path: &str, name: &str) -> Result<Option<bool>> {
    match field(v, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ParseError(format!(
            "{path}: expected a boolean, got {}",
            type_name(other)
        ))),
    }
}

pub fn opt_time(v: &Value, path: &str, name: &str) -> Result<Option<String>> {
    match opt_str(v, path, name)? {
        None => Ok(None),
        Some(s) => time::normalize(&s)
            .map(Some)
            .ok_or_else(|| ParseError(format!("{path}: not a time the forge sends: {s:?}"))),
    }
}
