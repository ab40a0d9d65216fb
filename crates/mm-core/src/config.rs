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

/// A check of a config's values, naming the model in its error: `Checks::new("CLIPTextConfig")`
/// then [`positive`](Checks::positive), [`heads`](Checks::heads), … and
/// [`parameters`](Checks::parameters) last, which estimates the weights' memory against
/// [`crate::limits::memory_limit`] before anything is allocated.
///
/// ```
/// use mm_core::config::Checks;
///
/// let err = Checks::new("ViTConfig").heads("hidden_size", 768, 10).unwrap_err();
/// assert!(err.to_string().contains("not a multiple of num_attention_heads (10)"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    model: &'a str,
}

impl<'a> Checks<'a> {
    /// Checks of the config of `model` (its config class name, e.g. `ViTConfig`).
    pub fn new(model: &'a str) -> Self {
        Self { model }
    }

    /// Fails with [`Error::InvalidConfig`] and `message` unless `ok`.
    pub fn require(self, ok: bool, message: impl FnOnce() -> String) -> Result<Self> {
        if ok {
            Ok(self)
        } else {
            Err(Error::InvalidConfig(format!(
                "{}: {}",
                self.model,
                message()
            )))
        }
    }

    /// Every named value must be at least 1.
    pub fn positive(self, fields: &[(&str, usize)]) -> Result<Self> {
        fields.iter().try_fold(self, |checks, &(name, value)| {
            checks.require(value > 0, || {
                format!("{name} must be at least 1, got {value}")
            })
        })
    }

    /// `heads` must be positive and divide `width` (the value of the field named `field`).
    pub fn heads(self, field: &str, width: usize, heads: usize) -> Result<Self> {
        self.require(heads > 0 && width.is_multiple_of(heads), || {
            format!(
                "{field} ({width}) is not a multiple of num_attention_heads ({heads}); each head \
                 needs an equal share"
            )
        })
    }

    /// A layer-norm / RMS-norm epsilon must be finite and not negative.
    pub fn epsilon(self, field: &str, eps: f64) -> Result<Self> {
        self.require(eps.is_finite() && eps >= 0.0, || {
            format!("{field} must be a finite number >= 0, got {eps}")
        })
    }

    /// The model's weights (`parameters`, an estimate from the config, in `f64` so that no
    /// config can overflow it) must fit in [`crate::limits::memory_limit`] at 2 bytes each,
    /// the smallest storage this workspace loads (bf16 / f16; f32 needs twice that): a config
    /// with a billion layers fails here with [`Error::TooLarge`] instead of aborting while the
    /// model is built, and a 7B model that fits in bf16 is not refused for its f32 size.
    pub fn parameters(self, parameters: f64) -> Result<Self> {
        // `as` saturates: an absurd estimate becomes u64::MAX, never a wrapped small number.
        crate::limits::check_memory(
            format_args!(
                "a model of this {} (about {:.3e} parameters, at 2 bytes each)",
                self.model, parameters
            ),
            (parameters * 2.0) as u64,
        )?;
        Ok(self)
    }
}

/// Parameter count of a pre-norm transformer encoder stack: `layers` × (q, k, v, out
/// projections with biases, a two-layer MLP with biases, two norms with weight and bias).
pub fn encoder_parameters(layers: usize, hidden: usize, intermediate: usize) -> f64 {
    let (d, i) = (hidden as f64, intermediate as f64);
    layers as f64 * (4.0 * (d * d + d) + 2.0 * d * i + i + d + 4.0 * d)
}
