//! The error type shared by every `mm` crate.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout `mm-core`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when loading or running a model from user-supplied files and
/// inputs. No `mm` API panics on bad input: it returns one of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file the model needs is not there.
    #[error("{what} not found at {path}{hint}")]
    MissingFile {
        /// What the file is (e.g. "model weights").
        what: String,
        /// Where it was looked for.
        path: PathBuf,
        /// How to obtain it, starting with a separator, or empty.
        hint: String,
    },
    /// A safetensors file is malformed or truncated.
    #[error("invalid safetensors file {path}: {reason}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tensor is stored in a dtype that cannot be read (float8 — the `F8_E4M3` T5 of
    /// `sd3_medium_incl_clips_t5xxlfp8.safetensors` —, 4- or 6-bit floats, complex numbers).
    /// The file opens: only loading such a tensor fails.
    #[error(
        "tensor '{tensor}' of {file} is stored as {dtype}, which cannot be read (F64, F32, \
         F16, BF16 and integer tensors can); convert it to F16 / BF16 / F32, or leave out the \
         model it belongs to"
    )]
    UnsupportedDtype {
        /// Where the tensors come from (a path).
        file: String,
        /// The tensor's name in the file.
        tensor: String,
        /// Its safetensors dtype (`F8_E4M3`, `F8_E5M2`, …).
        dtype: String,
    },
    /// A GGUF file is malformed or truncated, or holds a tensor that cannot be read.
    #[error("invalid GGUF file {path}: {kind}")]
    Gguf {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        kind: crate::gguf::GgufError,
    },
    /// Loading weights into a model found missing, unexpected or mis-shaped tensors.
    #[error("{0}")]
    Load(Box<LoadReport>),
    /// A JSON config file could not be parsed into the expected structure.
    #[error("invalid config {path}: {source}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parse error (names the field and line).
        source: serde_json::Error,
    },
    /// A config parsed but holds values the model cannot use.
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// An image could not be decoded or has an unusable size or mode.
    #[error("invalid image{}: {reason}", .path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Image {
        /// The file, when the image came from one.
        path: Option<PathBuf>,
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be loaded or could not encode the text.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// An argument or input tensor is unusable (empty label list, wrong shape, NaN, ...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The work would need more memory (or a larger image) than the limits of
    /// [`crate::limits`] allow; checked before allocating.
    #[error("{what} needs {needed}, more than the {limit}; {hint}")]
    TooLarge {
        /// What would be allocated (a model from its config, a call, an image).
        what: String,
        /// The estimate (e.g. `1.2 TiB`, `400000000 pixels`).
        needed: String,
        /// The limit it exceeds.
        limit: String,
        /// How to raise the limit.
        hint: String,
    },
}

/// Every problem found while loading weights into a module, reported together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Where the weights came from.
    pub source: String,
    /// Tensors the module expects that the weights do not have.
    pub missing: Vec<String>,
    /// Tensors in the weights that the module has no place for.
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes: (name, expected, found).
    pub mismatched: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Other per-tensor failures (unreadable data, unsupported dtype): (name, message).
    pub failed: Vec<(String, String)>,
}

impl LoadReport {
    /// True when nothing went wrong.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.failed.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "cannot load weights from {}:", self.source)?;
        let list = |f: &mut fmt::Formatter<'_>, title: &str, items: &[String]| -> fmt::Result {
            if items.is_empty() {
                return Ok(());
            }
            writeln!(f, "  {} {title}:", items.len())?;
            for item in items.iter().take(20) {
                writeln!(f, "    {item}")?;
            }
            if items.len() > 20 {
                writeln!(f, "    ... and {} more", items.len() - 20)?;
            }
            Ok(())
        };
        list(f, "missing tensors", &self.missing)?;
        list(f, "unexpected tensors", &self.unexpected)?;
        let mismatched: Vec<String> = self
            .mismatched
            .iter()
            .map(|(n, e, g)| format!("{n}: expected shape {e:?}, found {g:?}"))
            .collect();
        list(f, "mis-shaped tensors", &mismatched)?;
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(n, m)| format!("{n}: {m}"))
            .collect();
        list(f, "unreadable tensors", &failed)
    }
}

impl From<LoadReport> for Error {
    fn from(report: LoadReport) -> Self {
        Error::Load(Box::new(report))
    }
}
