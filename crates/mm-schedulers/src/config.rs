//! Reading `scheduler_config.json` and building schedulers from each other's configs.
//!
//! Every scheduler has a serde config struct with diffusers' defaults. Like
//! `Scheduler.from_config(other.config)` in diffusers, any config can be read
//! by any scheduler: keys it does not know are ignored, keys it lacks take
//! the defaults, `null` means "default".

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Result, SchedulerError};

/// A scheduler config struct (one per scheduler).
pub trait SchedulerConfig: Serialize + DeserializeOwned + Default + Clone {
    /// The diffusers class name of the scheduler this config builds.
    const CLASS_NAME: &'static str;

    /// Parses a config from a JSON value (unknown keys ignored, `null` = default).
    fn from_value(v: &Value) -> Result<Self> {
        Ok(serde_json::from_value(strip(v))?)
    }

    /// Parses a config from JSON text.
    /// Python's non-standard `Infinity` / `-Infinity` / `NaN` tokens (which
    /// `json.dump` writes, e.g. `lambda_min_clipped`) are read as `null`.
    fn from_json_str(s: &str) -> Result<Self> {
        Self::from_value(&parse_json(s)?)
    }

    /// Reads a `scheduler_config.json`.
    fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_json_str(&std::fs::read_to_string(path)?)
    }

    /// Cross-construction: reads the compatible keys of another scheduler's
    /// config (e.g. Euler ancestral from a DDIM config), like diffusers'
    /// `from_config(other.config)`.
    fn from_config<C: Serialize>(other: &C) -> Result<Self> {
        Self::from_value(&serde_json::to_value(other)?)
    }

    /// Serializes to a JSON value in diffusers' key names, with `_class_name`.
    fn to_value(&self) -> Result<Value> {
        let mut v = serde_json::to_value(self)?;
        if let Value::Object(m) = &mut v {
            m.insert("_class_name".into(), Value::String(Self::CLASS_NAME.into()));
        }
        Ok(v)
    }
}

/// Parses JSON text, reading Python's `Infinity`, `-Infinity` and `NaN`
/// tokens outside strings as `null`.
pub fn parse_json(s: &str) -> Result<Value> {
    let mut out = String::with_capacity(s.len());
    let mut in_str = false;
    let mut escaped = false;
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if in_str {
            in_str = c != '"' || escaped;
            escaped = c == '\\' && !escaped;
        } else if c == '"' {
            in_str = true;
        } else if let Some(tok) = ["-Infinity", "Infinity", "NaN"]
            .iter()
            .find(|t| rest.starts_with(**t))
        {
            out.push_str("null");
            rest = &rest[tok.len()..];
            continue;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    Ok(serde_json::from_str(&out)?)
}

/// Drops `null` values and private `_…` keys so that serde defaults apply.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, v)| !k.starts_with('_') && !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The `_class_name` of a config JSON, if present.
pub fn class_name_of(v: &Value) -> Option<&str> {
    v.get("_class_name").and_then(Value::as_str)
}

pub(crate) fn invalid(msg: impl Into<String>) -> SchedulerError {
    SchedulerError::InvalidConfig(msg.into())
}
