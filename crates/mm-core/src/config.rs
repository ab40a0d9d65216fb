//! Reading Hugging Face JSON config files (`config.json`, `preprocessor_config.json`, ...).
//!
//! Model configs are plain serde structs that mirror the fields of the Hugging Face files,
//! with `#[serde(default)]` values equal to the `transformers` defaults; unknown fields are
//! ignored, so configs written by newer versions still load.

use std::path::Path;

use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Reads and parses a JSON file; a parse error names the file and the offending field.
pub fn read_json<T: DeserializeOwned>(path: impl AsRef<Path>) -> Result<T> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                what: "config file".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Config {
        path: path.to_path_buf(),
        source,
    })
}

/// Parses a JSON string (a config built in memory or embedded in another file).
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|source| Error::Config {
        path: "<string>".into(),
        source,
    })
}
