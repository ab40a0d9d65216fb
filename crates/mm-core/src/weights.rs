//! Loading safetensors (and GGUF) weights into burn modules.
//!
//! [`Weights`] opens one `.safetensors` file, a sharded checkpoint (through its
//! `*.safetensors.index.json`), or a model folder holding either; or a GGUF file
//! ([`Weights::from_gguf`], whose quantized linear weights stay quantized, see [`crate::quant`];
//! its other tensors are dequantized as they are loaded). Only the headers are read up
//! front; each tensor's bytes are read from the file (not memory-mapped: a mapping would keep
//! every page read resident until the whole load ends, doubling the peak memory of loading a
//! half-precision checkpoint into f32), converted from the PyTorch layout and cast to the
//! compute dtype when it is applied to a module.
//!
//! ```no_run
//! # fn main() -> mm_core::Result<()> {
//! use mm_core::weights::Weights;
//! let weights = Weights::open("clip-vit-base-patch32")?
//!     // drop buffers the module does not keep, rename the rest as needed
//!     .rename(|name| (!name.ends_with("position_ids")).then(|| name.to_string()));
//! println!("{} tensors", weights.len());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::{Bool, DType, Device, Int, Shape, Tensor, TensorData};
use burn_store::bridge;
use burn_store::{
    ApplyError, FloatCastAdapter, ModuleAdapter, ModuleContext, ModuleSnapshot,
    PyTorchToBurnAdapter,
};

use crate::gguf::{self, GgmlType, GgufFile, QuantizedMatrix};
use crate::precision::{module_device, storage_dtype};
use crate::quant;
use crate::{Error, LoadReport, Result};

type PackTensor = burn_store::burn_pack::Tensor;

/// The safetensors file names looked for in a model folder, in order of preference.
const SINGLE_FILES: [&str; 2] = ["model.safetensors", "diffusion_pytorch_model.safetensors"];
const INDEX_FILES: [&str; 2] = [
    "model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors.index.json",
];

/// The largest safetensors header accepted (the format's own limit).
const MAX_HEADER: u64 = 100_000_000;

/// One tensor of a safetensors file: its name, its lazily read data, and — for a dtype that
/// cannot be read (float8, …) — that dtype's name (the data then only reports it).
type ShardTensor = (String, PackTensor, Option<String>);

/// The tensors of one safetensors file, each read (with positioned reads, one at a time) only
/// when it is loaded. The header is checked whole first: a file shorter than its header says
/// (truncated) is an error here, not when a tensor is reached. A tensor of a dtype safetensors
/// knows but burn cannot hold (float8, 4- and 6-bit floats, complex) is kept, its bytes never
/// read: loading it is an [`Error::UnsupportedDtype`].
fn read_shard(path: &Path) -> Result<Vec<ShardTensor>> {
    use std::io::Read;
    let bad = |reason: String| Error::Safetensors {
        path: path.to_path_buf(),
        reason,
    };
    let io = |e: std::io::Error| bad(e.to_string());
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut n = [0u8; 8];
    file.read_exact(&mut n)
        .map_err(|_| bad("the file is shorter than a safetensors header".into()))?;
    let header_len = u64::from_le_bytes(n);
    if header_len > MAX_HEADER || 8 + header_len > file_len {
        return Err(bad(format!(
            "header of {header_len} bytes in a file of {file_len} bytes (truncated?)"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(io)?;
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("invalid header: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut out = Vec::with_capacity(header.len());
    let mut end_max = 0;
    // One handle for all of the file's tensors (kept open, so that a file deleted or
    // replaced after opening still loads what was opened).
    let file = std::sync::Arc::new(std::sync::Mutex::new(file));
    for (name, entry) in header {
        if name == "__metadata__" {
            continue;
        }
        let info: TensorEntry =
            serde_json::from_value(entry).map_err(|e| bad(format!("tensor '{name}': {e}")))?;
        let (dtype, bits) = match safetensors_dtype(&info.dtype) {
            Some(dtype) => (Some(dtype), 8 * dtype.size() as u64),
            None => {
                let bits = stored_bits(&info.dtype)
                    .ok_or_else(|| bad(format!("tensor '{name}': unknown dtype {}", info.dtype)))?;
                (None, bits)
            }
        };
        let (start, end) = info.data_offsets;
        let numel = info
            .shape
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d as u64));
        let expected = numel
            .and_then(|n| n.checked_mul(bits))
            .map(|b| b.div_ceil(8));
        if start > end || expected != Some(end - start) {
            return Err(bad(format!(
                "tensor '{name}': offsets {start}..{end} do not hold {:?} {:?}",
                info.dtype, info.shape
            )));
        }
        end_max = end_max.max(end);
        let shape = Shape::from(info.shape.clone());
        let Some(dtype) = dtype else {
            let (stored, file_path) = (info.dtype.clone(), path.display().to_string());
            let tensor = bridge::deferred(name.clone(), DType::U8, shape, None, move || {
                Err(burn_store::burn_pack::Error::ValidationError(format!(
                    "{file_path}: dtype {stored} cannot be read"
                )))
            });
            out.push((name, tensor, Some(info.dtype)));
            continue;
        };
        let file_path = path.to_path_buf();
        let file = file.clone();
        let read_shape = info.shape.clone();
        let tensor = bridge::deferred(name.clone(), dtype, shape, None, move || {
            read_tensor(&file, data_start + start, end - start)
                .map(|bytes| TensorData::from_bytes_vec(bytes, read_shape.clone(), dtype))
                .map_err(|e| {
                    burn_store::burn_pack::Error::ValidationError(format!(
                        "cannot read {}: {e}",
                        file_path.display()
                    ))
                })
        });
        out.push((name, tensor, None));
    }
    if end_max > data_len {
        return Err(bad(format!(
            "the header places data up to byte {end_max} but the file holds {data_len} \
             (truncated?)"
        )));
    }
    Ok(out)
}

/// `len` bytes of `file` from `offset`.
fn read_tensor(
    file: &std::sync::Mutex<std::fs::File>,
    offset: u64,
    len: u64,
) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = file
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = vec![0u8; len as usize];
    file.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// One entry of a safetensors header.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// The burn dtype of a safetensors dtype name.
fn safetensors_dtype(name: &str) -> Option<DType> {
    Some(match name {
        "F64" => DType::F64,
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "I16" => DType::I16,
        "I8" => DType::I8,
        "U64" => DType::U64,
        "U32" => DType::U32,
        "U8" => DType::U8,
        "BOOL" => DType::Bool(burn::tensor::BoolStore::Native),
        _ => return None,
    })
}

/// The width in bits of a safetensors dtype that [`safetensors_dtype`] has no burn dtype for
/// (`F8_E4M3`, `F4`, `C64`, …); `None` for a name safetensors does not know.
fn stored_bits(name: &str) -> Option<u64> {
    let dtype: safetensors::Dtype =
        serde_json::from_value(serde_json::Value::String(name.to_string())).ok()?;
    Some(dtype.bitsize() as u64)
}

/// A tensor whose dtype cannot be read: its name in the file and that dtype.
#[derive(Debug, Clone)]
struct Unreadable {
    stored_name: String,
    dtype: String,
}

/// A lazily read set of named tensors from one or more safetensors files.
#[derive(Clone)]
pub struct Weights {
    source: String,
    tensors: BTreeMap<String, PackTensor>,
    /// The tensors of `tensors` stored in a dtype that cannot be read, by current name.
    unreadable: BTreeMap<String, Unreadable>,
    /// The matrices of `tensors` stored in ggml blocks (GGUF), by current name: a linear
    /// layer's weight takes them as they are.
    quantized: BTreeMap<String, QuantRef>,
    /// The type linear weights are quantized to as they load ([`Weights::quantize`]).
    quantize: Option<GgmlType>,
    dtype: DType,
}

/// Rows of a quantized matrix of a GGUF file, in order: a whole tensor, a part of a fused
/// one, or its halves swapped.
#[derive(Clone)]
struct QuantRef {
    file: Arc<GgufFile>,
    stored: String,
    cols: usize,
    rows: Vec<Range<usize>>,
}

impl QuantRef {
    /// The number of rows.
    fn len(&self) -> usize {
        self.rows.iter().map(ExactSizeIterator::len).sum()
    }

    /// The rows `range` of this matrix's rows.
    fn select(&self, range: Range<usize>) -> Self {
        let (mut rows, mut at) = (Vec::new(), 0);
        for r in &self.rows {
            let (lo, hi) = (range.start.max(at), range.end.min(at + r.len()));
            if lo < hi {
                rows.push(r.start + lo - at..r.start + hi - at);
            }
            at += r.len();
        }
        Self {
            rows,
            ..self.clone()
        }
    }

    /// The matrix, its blocks copied out of the file.
    fn matrix(&self) -> Result<QuantizedMatrix> {
        self.file.matrix_rows(&self.stored, &self.rows)
    }
}

impl std::fmt::Debug for Weights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Weights")
            .field("source", &self.source)
            .field("tensors", &self.tensors.len())
            .field("dtype", &self.dtype)
            .finish()
    }
}

impl Weights {
    /// Opens a `.safetensors` file, a `*.safetensors.index.json` of a sharded checkpoint, a
    /// GGUF file ([`Weights::from_gguf`]: a `.gguf` name or a file starting with `GGUF`), or a
    /// folder holding `model.safetensors` (or `diffusion_pytorch_model.safetensors`) or their
    /// sharded index.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            let found = INDEX_FILES
                .iter()
                .chain(SINGLE_FILES.iter())
                .map(|name| path.join(name))
                .find(|p| p.is_file());
            return match found {
                Some(file) => Self::open(file),
                None => Err(Error::MissingFile {
                    what: "model weights (model.safetensors or model.safetensors.index.json)"
                        .into(),
                    path: path.to_path_buf(),
                    hint: String::new(),
                }),
            };
        }
        if !path.is_file() {
            return Err(Error::MissingFile {
                what: "weights file".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            });
        }
        if is_gguf(path) {
            return Self::from_gguf(path);
        }
        let is_index = path.to_string_lossy().ends_with(".index.json");
        let files = if is_index {
            shard_files(path)?
        } else {
            vec![path.to_path_buf()]
        };
        Self::from_files(&files, path.display().to_string())
    }

    /// Opens a GGUF file (llama.cpp, stable-diffusion.cpp, ComfyUI-GGUF): every tensor under
    /// its stored name, with its PyTorch shape (the GGUF dimensions reversed). Tensors are
    /// read from the mapped file when they are loaded: a quantized matrix (Q8_0, Q4_K, …; see
    /// [`GgmlType::can_dequantize`](crate::gguf::GgmlType::can_dequantize)) that is a linear
    /// layer's weight is kept in its blocks ([`crate::quant`]); other quantized tensors are
    /// dequantized to f32, F16 / BF16 / F32 ones read as stored; then cast as
    /// [`Weights::with_dtype`] says, like safetensors tensors. A malformed file is an [`Error::Gguf`] here; a tensor of a type
    /// that cannot be dequantized is reported when it is loaded.
    ///
    /// ```no_run
    /// # fn main() -> mm_core::Result<()> {
    /// let weights = mm_core::weights::Weights::from_gguf("flux1-schnell-Q8_0.gguf")?;
    /// assert!(weights.contains("double_blocks.0.img_attn.qkv.weight"));
    /// # Ok(()) }
    /// ```
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = Arc::new(GgufFile::open(path)?);
        let tensors = file
            .tensors()
            .iter()
            .map(|info| (info.name.clone(), gguf::deferred_tensor(&file, info)))
            .collect();
        let quantized = file
            .tensors()
            .iter()
            .filter(|info| info.ggml_type.is_block_quantized() && info.ggml_type.can_dequantize())
            .filter_map(|info| match info.shape[..] {
                [rows, cols] => Some((
                    info.name.clone(),
                    QuantRef {
                        file: file.clone(),
                        stored: info.name.clone(),
                        cols,
                        rows: std::iter::once(0..rows).collect(),
                    },
                )),
                _ => None,
            })
            .collect();
        Ok(Self {
            source: path.display().to_string(),
            tensors,
            // A tensor of a type that cannot be dequantized fails when it is loaded.
            unreadable: BTreeMap::new(),
            quantized,
            quantize: None,
            dtype: DType::F32,
        })
    }

    /// Opens several safetensors files as one set of tensors (the shards of a checkpoint).
    /// A name present in two files is an error.
    pub fn from_files(files: &[PathBuf], source: impl Into<String>) -> Result<Self> {
        let (mut tensors, mut unreadable) = (BTreeMap::new(), BTreeMap::new());
        for file in files {
            if !file.is_file() {
                return Err(Error::MissingFile {
                    what: "weights shard".into(),
                    path: file.clone(),
                    hint: String::new(),
                });
            }
            for (name, tensor, dtype) in read_shard(file)? {
                if let Some(dtype) = dtype {
                    let stored_name = name.clone();
                    unreadable.insert(name.clone(), Unreadable { stored_name, dtype });
                }
                if tensors.insert(name.clone(), tensor).is_some() {
                    return Err(Error::Safetensors {
                        path: file.clone(),
                        reason: format!("tensor '{name}' is also in another shard"),
                    });
                }
            }
        }
        Ok(Self {
            source: source.into(),
            tensors,
            unreadable,
            quantized: BTreeMap::new(),
            quantize: None,
            dtype: DType::F32,
        })
    }

    /// Where the tensors come from (a path), for messages.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when there are no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Whether a tensor of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The stored shape of a tensor.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.to_vec())
    }

    /// The stored dtype of a tensor (`None` for a tensor stored in a dtype that cannot be read:
    /// see [`unreadable_dtype`](Self::unreadable_dtype)).
    pub fn stored_dtype(&self, name: &str) -> Option<DType> {
        if self.unreadable.contains_key(name) {
            return None;
        }
        self.tensors.get(name).map(|t| t.dtype)
    }

    /// The safetensors dtype of a tensor stored in a dtype that cannot be read (`F8_E4M3`,
    /// `F8_E5M2`, `F4`, `C64`, …), `None` for the others.
    pub fn unreadable_dtype(&self, name: &str) -> Option<&str> {
        self.unreadable.get(name).map(|u| u.dtype.as_str())
    }

    /// Checks that every tensor can be read: the first one stored in a dtype that cannot be
    /// read (float8, …) is an [`Error::UnsupportedDtype`] naming it (by its name in the file)
    /// and its dtype. [`load_into`](Self::load_into) and [`tensor`](Self::tensor) check this
    /// first.
    pub fn check_readable(&self) -> Result<()> {
        match self.unreadable.values().next() {
            None => Ok(()),
            Some(u) => Err(Error::UnsupportedDtype {
                file: self.source.clone(),
                tensor: u.stored_name.clone(),
                dtype: u.dtype.clone(),
            }),
        }
    }

    /// The float dtype parameters are stored in once loaded (default `F32`). With `F16`/`BF16`
    /// every tensor of rank ≥ 2 (linear and convolution weights, embedding tables) is kept in
    /// half precision, halving a model's memory; vectors (norm scales, biases) take the
    /// [`compute_dtype`](crate::precision::compute_dtype) of the device: f32 on the flex CPU
    /// backend, which computes in f32 (see [`crate::precision::storage_dtype`]).
    pub fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The float dtype parameters are stored in once loaded (see [`Weights::with_dtype`]).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Quantizes the weights of linear layers to `ggml_type` as they load (see
    /// [`crate::quant`]): each `[out, in]` matrix whose `in` is a whole number of the type's
    /// blocks (32 values for Q8_0, 256 for Q4_K) is read, quantized and kept in its blocks,
    /// one layer at a time; other parameters load as [`Weights::with_dtype`] says. Matrices
    /// a GGUF file already stores quantized keep their own type. `ggml_type` must be one
    /// [`GgmlType::can_quantize`] accepts (Q8_0, Q4_K; F16 / BF16 / F32 store no blocks:
    /// use [`Weights::with_dtype`]).
    pub fn quantize(mut self, ggml_type: GgmlType) -> Self {
        self.quantize = Some(ggml_type);
        self
    }

    /// The type linear weights are quantized to as they load ([`Weights::quantize`]).
    pub fn quantization(&self) -> Option<GgmlType> {
        self.quantize
    }

    /// Renames tensors: `f` returns the new name, or `None` to drop the tensor (a buffer the
    /// module does not keep, say).
    pub fn rename(self, mut f: impl FnMut(&str) -> Option<String>) -> Self {
        let (mut unreadable, mut quantized) = (BTreeMap::new(), BTreeMap::new());
        let tensors = self
            .tensors
            .into_iter()
            .filter_map(|(name, mut tensor)| {
                let new = f(&name)?;
                if let Some(u) = self.unreadable.get(&name) {
                    unreadable.insert(new.clone(), u.clone());
                }
                if let Some(q) = self.quantized.get(&name) {
                    quantized.insert(new.clone(), q.clone());
                }
                tensor.name = new.clone();
                Some((new, tensor))
            })
            .collect();
        Self {
            tensors,
            unreadable,
            quantized,
            ..self
        }
    }

    /// Renames tensors by their leading segments: a name takes the first rule `(from, to)`
    /// whose `from` it starts with, `from` replaced by `to`; a name no rule matches is kept.
    ///
    /// End a prefix with a dot to match whole segments. Rules are tried in order, so put a
    /// more specific prefix first; an identity rule (`("a.b.", "a.b.")`) keeps names already
    /// in the wanted layout out of reach of a broader rule after it (`("a.", "a.b.")`).
    pub fn rename_prefixes(self, rules: &[(&str, &str)]) -> Self {
        self.rename(|name| {
            Some(
                match rules.iter().find(|(from, _)| name.starts_with(from)) {
                    Some((from, to)) => format!("{to}{}", &name[from.len()..]),
                    None => name.to_string(),
                },
            )
        })
    }

    /// Gives tensors another shape with the same number of elements (a 1×1 convolution kernel
    /// stored for a linear layer, say). `f(name, stored shape)` returns the new shape, or
    /// `None` to leave the tensor as it is. Nothing is read until the tensor is loaded; a shape
    /// with another element count is an error.
    pub fn reshape(self, mut f: impl FnMut(&str, &[usize]) -> Option<Vec<usize>>) -> Result<Self> {
        let (mut tensors, mut quantized) = (BTreeMap::new(), self.quantized.clone());
        for (name, tensor) in self.tensors {
            let stored = tensor.shape.to_vec();
            let tensor = match f(&name, &stored) {
                Some(shape) if shape != stored => {
                    if shape.iter().product::<usize>() != stored.iter().product::<usize>() {
                        return Err(Error::Safetensors {
                            path: self.source.clone().into(),
                            reason: format!("cannot reshape '{name}' from {stored:?} to {shape:?}"),
                        });
                    }
                    // A reshaped quantized matrix loads dequantized.
                    quantized.remove(&name);
                    let (dtype, target) = (tensor.dtype, Shape::from(shape));
                    let declared = target.clone();
                    bridge::map_data(tensor, name.clone(), dtype, declared, move |data| {
                        let (bytes, _, dtype) = data.into_parts();
                        TensorData::from_bytes(bytes, target.clone(), dtype)
                    })
                }
                _ => tensor,
            };
            tensors.insert(name, tensor);
        }
        Ok(Self {
            tensors,
            quantized,
            ..self
        })
    }

    /// Splits tensors into equal parts along their first dimension (a fused query-key-value
    /// projection into three, say). `f(name)` returns the names of the parts, or `None` to keep
    /// the tensor whole. Nothing is read until a part is loaded; a first dimension that the
    /// number of parts does not divide is an error.
    pub fn split(self, mut f: impl FnMut(&str) -> Option<Vec<String>>) -> Result<Self> {
        let shapes: BTreeMap<String, Vec<usize>> = (self.tensors.iter())
            .map(|(name, t)| (name.clone(), t.shape.to_vec()))
            .collect();
        let (source, mut bad) = (self.source.clone(), None);
        let split = self.split_rows(|name| {
            let (parts, shape) = (f(name)?, &shapes[name]);
            let (rows, n) = (shape.first().copied().unwrap_or(0), parts.len());
            if n == 0 || rows % n != 0 {
                let reason = format!("cannot split '{name}' of shape {shape:?} into {n} parts");
                bad.get_or_insert(reason);
                return None;
            }
            Some(parts.into_iter().map(|p| (p, rows / n)).collect())
        })?;
        match bad {
            Some(reason) => Err(Error::Safetensors {
                path: source.into(),
                reason,
            }),
            None => Ok(split),
        }
    }

    /// Splits tensors into consecutive parts along their first dimension (FLUX's fused
    /// query-key-value-MLP projection, say). `f(name)` returns the parts as `(name, rows)`, or
    /// `None` to keep the tensor whole. Nothing is read until a part is loaded (a quantized
    /// matrix's parts stay quantized); rows that do not add up to the first dimension are an
    /// error.
    pub fn split_rows(
        self,
        mut f: impl FnMut(&str) -> Option<Vec<(String, usize)>>,
    ) -> Result<Self> {
        let (mut tensors, mut unreadable) = (BTreeMap::new(), self.unreadable);
        let mut quantized = self.quantized;
        for (name, tensor) in self.tensors {
            let Some(parts) = f(&name) else {
                tensors.insert(name, tensor);
                continue;
            };
            let shape = tensor.shape.to_vec();
            let total: usize = parts.iter().map(|(_, rows)| rows).sum();
            if parts.is_empty() || shape.is_empty() || total != shape[0] || total == 0 {
                let rows: Vec<usize> = parts.iter().map(|(_, rows)| *rows).collect();
                return Err(Error::Safetensors {
                    path: self.source.clone().into(),
                    reason: format!("cannot split '{name}' of shape {shape:?} into rows {rows:?}"),
                });
            }
            if let Some(u) = unreadable.remove(&name) {
                unreadable.extend(parts.iter().map(|(p, _)| (p.clone(), u.clone())));
            }
            let whole = quantized.remove(&name);
            let mut first = 0;
            for (part, rows) in parts {
                let range = first..first + rows;
                first += rows;
                if let Some(q) = &whole {
                    quantized.insert(part.clone(), q.select(range.clone()));
                }
                let mut part_shape = shape.clone();
                part_shape[0] = rows;
                let (dtype, target) = (tensor.dtype, Shape::from(part_shape));
                let declared = target.clone();
                let total = shape[0];
                let piece =
                    bridge::map_data(tensor.clone(), part.clone(), dtype, declared, move |data| {
                        let bytes = data.as_bytes();
                        let row = bytes.len() / total;
                        TensorData::from_bytes_vec(
                            bytes[range.start * row..range.end * row].to_vec(),
                            target.clone(),
                            dtype,
                        )
                    });
                tensors.insert(part, piece);
            }
        }
        Ok(Self {
            tensors,
            unreadable,
            quantized,
            ..self
        })
    }

    /// Transposes the 2-D tensors `f` selects (a projection stored as `[in, out]` for a
    /// linear layer's `[out, in]` weight, say). Nothing is read until the tensor is loaded; a
    /// selected tensor that is not 2-D is an error.
    pub fn transpose(self, mut f: impl FnMut(&str) -> bool) -> Result<Self> {
        let (mut tensors, mut quantized) = (BTreeMap::new(), self.quantized.clone());
        for (name, tensor) in self.tensors {
            if !f(&name) {
                tensors.insert(name, tensor);
                continue;
            }
            // A transposed quantized matrix loads dequantized.
            quantized.remove(&name);
            let &[rows, cols] = &tensor.shape.to_vec()[..] else {
                return Err(Error::Safetensors {
                    path: self.source.clone().into(),
                    reason: format!(
                        "cannot transpose '{name}' of shape {:?}: not a matrix",
                        tensor.shape.to_vec()
                    ),
                });
            };
            let (dtype, target) = (tensor.dtype, Shape::from([cols, rows]));
            let declared = target.clone();
            let transposed = bridge::map_data(tensor, name.clone(), dtype, declared, move |data| {
                let (bytes, size) = (data.as_bytes(), dtype.size());
                let mut out = vec![0u8; bytes.len()];
                for (i, element) in bytes.chunks_exact(size).enumerate() {
                    let (r, c) = (i / cols, i % cols);
                    let at = (c * rows + r) * size;
                    out[at..at + size].copy_from_slice(element);
                }
                TensorData::from_bytes_vec(out, target.clone(), dtype)
            });
            tensors.insert(name, transposed);
        }
        Ok(Self {
            tensors,
            quantized,
            ..self
        })
    }

    /// Swaps the two halves along the first dimension of the tensors `f` selects (an adaptive
    /// norm's `(shift, scale)` projection stored for a layer that splits it `(scale, shift)`:
    /// diffusers' `swap_scale_shift`). Nothing is read until the tensor is loaded; a selected
    /// tensor whose first dimension is odd is an error.
    pub fn swap_halves(self, mut f: impl FnMut(&str) -> bool) -> Result<Self> {
        let (mut tensors, mut quantized) = (BTreeMap::new(), self.quantized.clone());
        for (name, tensor) in self.tensors {
            let shape = tensor.shape.to_vec();
            let tensor = match shape.first() {
                _ if !f(&name) => tensor,
                Some(&rows) if rows % 2 == 0 => {
                    if let Some(q) = quantized.get_mut(&name) {
                        let (top, bottom) = (q.select(0..rows / 2), q.select(rows / 2..rows));
                        q.rows = [bottom.rows, top.rows].concat();
                    }
                    let (dtype, declared) = (tensor.dtype, tensor.shape.clone());
                    bridge::map_data(tensor, name.clone(), dtype, declared, |data| {
                        let mut bytes = data.as_bytes().to_vec();
                        let half = bytes.len() / 2;
                        bytes.rotate_left(half);
                        TensorData::from_bytes_vec(bytes, data.shape().clone(), data.dtype())
                    })
                }
                _ => {
                    return Err(Error::Safetensors {
                        path: self.source.clone().into(),
                        reason: format!("cannot swap the halves of '{name}' of shape {shape:?}"),
                    });
                }
            };
            tensors.insert(name, tensor);
        }
        Ok(Self {
            tensors,
            quantized,
            ..self
        })
    }

    /// Adds a tensor that `make` builds when it is loaded (one a checkpoint does not store: an
    /// identity projection, say), replacing any tensor of that name. `make` must give `shape`
    /// and `dtype`.
    pub fn insert_with(
        mut self,
        name: impl Into<String>,
        shape: Vec<usize>,
        dtype: DType,
        make: impl Fn() -> TensorData + Send + Sync + 'static,
    ) -> Self {
        let name = name.into();
        let tensor = bridge::deferred(name.clone(), dtype, Shape::from(shape), None, move || {
            Ok(make())
        });
        self.unreadable.remove(&name);
        self.quantized.remove(&name);
        self.tensors.insert(name, tensor);
        self
    }

    /// Keeps only the tensors under `prefix` (followed by a dot) and removes the prefix.
    pub fn select_prefix(self, prefix: &str) -> Self {
        let dotted = format!("{prefix}.");
        self.rename(|name| name.strip_prefix(&dotted).map(str::to_string))
    }

    /// Reads one tensor (any float dtype) onto `device`, in [`Weights::dtype`] if it has rank ≥ 2
    /// and in that dtype's compute dtype on `device` otherwise.
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        if let Some(u) = self.unreadable.get(name) {
            return Err(Error::UnsupportedDtype {
                file: self.source.clone(),
                tensor: u.stored_name.clone(),
                dtype: u.dtype.clone(),
            });
        }
        let pack = self.tensors.get(name).ok_or_else(|| {
            Error::from(LoadReport {
                source: self.source.clone(),
                missing: vec![name.to_string()],
                ..Default::default()
            })
        })?;
        if pack.shape.num_dims() != D {
            return Err(LoadReport {
                source: self.source.clone(),
                mismatched: vec![(name.to_string(), vec![0; D], pack.shape.to_vec())],
                ..Default::default()
            }
            .into());
        }
        let data = bridge::to_data(pack).map_err(|e| Error::Safetensors {
            path: self.source.clone().into(),
            reason: format!("cannot read '{name}': {e}"),
        })?;
        Ok(Tensor::<D>::from_data(data, device).cast(storage_dtype(self.dtype, D, device)))
    }

    /// Loads the tensors into `module` strictly: every parameter must be found with the right
    /// shape, and every tensor must be used. All problems are reported together in one
    /// [`Error::Load`]. Tensor names are in the PyTorch convention (`weight`/`bias` of norms,
    /// `[out, in]` linear weights); scalar (0-d) tensors load into 1-element parameters.
    /// Enum variants add no segment to a parameter's path, so a `Vec` of an enum of layers
    /// mirrors an `nn.Sequential` of mixed layers (`layers.3.conv.0.weight`).
    ///
    /// Linear weights stored quantized (a GGUF file's Q8_0, Q4_K, … matrices) or quantized as
    /// they load ([`Weights::quantize`]) stay in their blocks: see [`crate::quant`].
    pub fn load_into<M: ModuleSnapshot>(&self, module: M) -> Result<M> {
        self.check_readable()?;
        let device = module_device(&module);
        let (mut module, attached) = self.attach_quantized(module, &device)?;
        let tensors: Vec<PackTensor> = (self.tensors.iter())
            .filter(|(name, _)| !attached.contains(*name))
            .map(|(_, tensor)| scalar_as_vector(tensor))
            .collect();
        let cast = StorageCast {
            matrices: FloatCastAdapter::to(storage_dtype(self.dtype, 2, &device)),
            vectors: FloatCastAdapter::to(storage_dtype(self.dtype, 1, &device)),
        };
        let adapter: Box<dyn ModuleAdapter> = Box::new(PyTorchToBurnAdapter.chain(cast));
        let result = module.apply(tensors, None, Some(adapter), true);

        let mut report = LoadReport {
            source: self.source.clone(),
            missing: (result.missing.iter())
                .map(|(p, _)| pytorch_name(p))
                .filter(|name| !attached.contains(name))
                .collect(),
            unexpected: result.unused.clone(),
            ..Default::default()
        };
        for error in &result.errors {
            match error {
                ApplyError::ShapeMismatch {
                    path,
                    expected,
                    found,
                } => {
                    let name = pytorch_name(path);
                    let stored = self.shape(&name).unwrap_or_else(|| found.to_vec());
                    let mut expected = expected.to_vec();
                    // The adapter transposed a linear weight: state the expectation in the
                    // stored (PyTorch) layout too.
                    if found.to_vec() != stored && expected.len() == 2 {
                        expected.reverse();
                    }
                    report.mismatched.push((name, expected, stored));
                }
                ApplyError::DTypeMismatch {
                    path,
                    expected,
                    found,
                } => report.failed.push((
                    pytorch_name(path),
                    format!("expected dtype {expected:?}, found {found:?}"),
                )),
                ApplyError::AdapterError { path, message }
                | ApplyError::LoadError { path, message } => {
                    report.failed.push((pytorch_name(path), message.clone()))
                }
            }
        }
        if report.is_clean() {
            Ok(module)
        } else {
            Err(report.into())
        }
    }
}

impl Weights {
    /// Attaches the quantized matrices of `module`'s linear weights ([`crate::quant`]): the
    /// GGUF matrices stored quantized, and with [`Weights::quantize`] the others whose width
    /// is a whole number of blocks. Returns the module and the names of the tensors used. A
    /// matrix of another shape than its layer's is left to the strict load to report.
    fn attach_quantized<M: Module>(
        &self,
        module: M,
        device: &Device,
    ) -> Result<(M, BTreeSet<String>)> {
        let mut attached = BTreeSet::new();
        if self.quantized.is_empty() && self.quantize.is_none() {
            return Ok((module, attached));
        }
        let mut matrices = HashMap::new();
        for (id, name, shape) in linear_weights(&module) {
            let matrix = match (self.quantized.get(&name), self.tensors.get(&name)) {
                (Some(q), _) if [q.len(), q.cols] == shape[..] => q.matrix()?,
                (None, Some(tensor)) if tensor.shape.to_vec() == shape => match self.quantize {
                    Some(ty) if shape[1] % ty.block_size() == 0 => {
                        self.quantized_now(ty, &name, tensor, [shape[0], shape[1]])?
                    }
                    _ => continue,
                },
                _ => continue,
            };
            matrices.insert(id, matrix);
            attached.insert(name);
        }
        let dtype = storage_dtype(self.dtype, 2, device);
        Ok((quant::attach(module, matrices, dtype), attached))
    }

    /// The tensor `name` read and quantized to `ty`.
    fn quantized_now(
        &self,
        ty: GgmlType,
        name: &str,
        tensor: &PackTensor,
        [rows, cols]: [usize; 2],
    ) -> Result<QuantizedMatrix> {
        let data = bridge::to_data(tensor).map_err(|e| Error::Safetensors {
            path: self.source.clone().into(),
            reason: format!("cannot read '{name}': {e}"),
        })?;
        let values =
            data.convert::<f32>()
                .try_into_vec::<f32>()
                .map_err(|e| Error::Safetensors {
                    path: self.source.clone().into(),
                    reason: format!("cannot read '{name}' as f32: {e:?}"),
                })?;
        QuantizedMatrix::quantize(ty, [rows, cols], &values).map_err(|e| match e {
            Error::InvalidInput(reason) => {
                Error::InvalidInput(format!("quantizing '{name}': {reason}"))
            }
            e => e,
        })
    }
}

/// Casts float tensors of rank ≥ 2 with one adapter and the others with another.
#[derive(Clone)]
struct StorageCast {
    matrices: FloatCastAdapter,
    vectors: FloatCastAdapter,
}

impl ModuleAdapter for StorageCast {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        if tensor.shape.num_dims() >= 2 {
            self.matrices.adapt(tensor, ctx)
        } else {
            self.vectors.adapt(tensor, ctx)
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// The (PyTorch name, PyTorch shape) of every parameter a module expects, sorted by name: what
/// a checkpoint for it must contain.
///
/// Only shapes are read (`Param::lazy_shape`): a freshly built model whose parameters are still
/// uninitialised (burn initialises lazily) is never materialised, so this works for
/// full-size (7B) models without allocating their weights. Names and shapes follow the
/// PyTorch layout as `load_into` expects it: `[out, in]` linear weights, `weight`/`bias` of
/// norms, no segment for enum variants.
pub fn expected_tensors<M: Module>(module: &M) -> Vec<(String, Vec<usize>)> {
    let mut collector = ShapeCollector::default();
    module.visit(&mut collector);
    let mut out = collector.out;
    out.sort();
    out
}

/// The weights of `module`'s linear layers: parameter id, PyTorch name, `[out, in]` shape.
pub(crate) fn linear_weights<M: Module>(module: &M) -> Vec<(ParamId, String, Vec<usize>)> {
    let mut collector = ShapeCollector::default();
    module.visit(&mut collector);
    collector.linears
}

/// Walks a module like burn-store's collector with `BurnToPyTorchAdapter`, reading shapes
/// lazily.
#[derive(Default)]
struct ShapeCollector {
    path: Vec<String>,
    containers: Vec<String>,
    out: Vec<(String, Vec<usize>)>,
    /// The weights of linear layers: id, PyTorch name, `[out, in]` shape.
    linears: Vec<(ParamId, String, Vec<usize>)>,
}

impl ShapeCollector {
    /// Whether the parameter being visited is a linear layer's weight.
    fn is_linear_weight(&self) -> bool {
        let leaf = self.path.last().map(String::as_str);
        self.module_type() == Some("Struct:Linear") && leaf == Some("weight")
    }

    /// The type of the innermost module around the visited parameter.
    fn module_type(&self) -> Option<&str> {
        self.containers
            .iter()
            .rev()
            .find(|c| c.starts_with("Struct:") || c.starts_with("Enum:"))
            .map(String::as_str)
    }

    fn push(&mut self, mut shape: Vec<usize>) {
        let name = self.path.join(".");
        let name = match self.module_type() {
            Some("Struct:Linear") if self.is_linear_weight() && shape.len() == 2 => {
                shape.reverse();
                name
            }
            Some(
                "Struct:BatchNorm" | "Struct:LayerNorm" | "Struct:GroupNorm" | "Struct:RmsNorm",
            ) => pytorch_name(&name),
            _ => name,
        };
        self.out.push((name, shape));
    }
}

impl ModuleVisitor for ShapeCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.containers.push(container_type.to_string());
        if !container_type.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }

    fn exit_module(&mut self, _name: &str, container_type: &str) {
        self.containers.pop();
        if !container_type.starts_with("Enum:") {
            self.path.pop();
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.push(param.lazy_shape().to_vec());
        if D == 2 && self.is_linear_weight() {
            let (name, shape) = self.out.last().cloned().expect("just pushed");
            self.linears.push((param.id, name, shape));
        }
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<D, Int>>) {
        self.push(param.lazy_shape().to_vec());
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<D, Bool>>) {
        self.push(param.lazy_shape().to_vec());
    }
}

/// Norm parameters are `gamma`/`beta` in burn and `weight`/`bias` in checkpoints.
fn pytorch_name(path: &str) -> String {
    if let Some(stem) = path.strip_suffix(".gamma") {
        format!("{stem}.weight")
    } else if let Some(stem) = path.strip_suffix(".beta") {
        format!("{stem}.bias")
    } else {
        path.to_string()
    }
}

/// burn has no rank-0 tensors: a 0-d tensor (`logit_scale`) is offered as a 1-element vector.
fn scalar_as_vector(tensor: &PackTensor) -> PackTensor {
    if tensor.shape.num_dims() != 0 {
        return tensor.clone();
    }
    let shape = Shape::new([1]);
    let target = shape.clone();
    bridge::map_data(
        tensor.clone(),
        tensor.name.clone(),
        tensor.dtype,
        shape,
        move |data: TensorData| {
            let (bytes, _, dtype) = data.into_parts();
            TensorData::from_bytes(bytes, target.clone(), dtype)
        },
    )
}

/// Whether `path` is a GGUF file: a `.gguf` name, or the `GGUF` magic.
fn is_gguf(path: &Path) -> bool {
    use std::io::Read;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        return true;
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| &magic == b"GGUF")
}

/// The shard files named by a `*.safetensors.index.json` (`weight_map` values), in order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>> {
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let index_data: Index = crate::config::read_json(index)?;
    let dir = index.parent().unwrap_or_else(|| Path::new("."));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in index_data.weight_map.values() {
        let path = dir.join(file);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The parameters whose checkpoints hold a 0-d tensor (burn keeps them as 1-element vectors):
/// the temperature and bias of CLIP and SigLIP.
const SCALAR_PARAMETERS: [&str; 2] = ["logit_scale", "logit_bias"];

/// Writes `module`'s parameters to a safetensors file in the PyTorch convention that
/// [`Weights::load_into`] reads — `[out, in]` linear weights, `weight` / `bias` norm names,
/// CLIP's `logit_scale` as a 0-d tensor, the `{"format": "pt"}` metadata — so that the file
/// loads back into the same module, and into transformers / diffusers when the module mirrors
/// their layout (the crates' models do). Float parameters are written as `dtype`
/// ([`DType::F32`], [`DType::F16`] or [`DType::BF16`]); integer and boolean buffers as they
/// are. A quantized linear weight is written dequantized.
///
/// ```
/// # fn main() -> mm_core::Result<()> {
/// use burn::nn::LinearConfig;
/// use burn::tensor::{DType, Device};
/// use mm_core::weights::{save_safetensors, Weights};
/// let device = Device::flex();
/// let layer = LinearConfig::new(3, 2).init(&device);
/// let path = std::env::temp_dir().join("mm-save-doc.safetensors");
/// save_safetensors(&layer, &path, DType::F32)?;
/// assert_eq!(Weights::open(&path)?.shape("weight"), Some(vec![2, 3]));
/// # Ok(()) }
/// ```
pub fn save_safetensors<M: ModuleSnapshot>(
    module: &M,
    path: impl AsRef<Path>,
    dtype: DType,
) -> Result<()> {
    let path = path.as_ref();
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::InvalidInput(format!(
            "weights can be saved as F32, F16 or BF16, not {dtype:?}"
        )));
    }
    let adapter: Box<dyn ModuleAdapter> = Box::new(burn_store::BurnToPyTorchAdapter);
    let mut tensors = Vec::new();
    for tensor in module.collect(None, Some(adapter), true) {
        let name = pytorch_name(&tensor.name);
        let data = bridge::to_data(&tensor)
            .map_err(|e| Error::InvalidInput(format!("parameter {name} cannot be read: {e}")))?;
        let data = if data.dtype().is_float() {
            data.convert_dtype(dtype)
        } else {
            data
        };
        let mut shape = data.shape().to_vec();
        if shape == [1] && SCALAR_PARAMETERS.iter().any(|s| name.ends_with(s)) {
            shape.clear();
        }
        let st_dtype = match data.dtype() {
            DType::F32 => safetensors::Dtype::F32,
            DType::F16 => safetensors::Dtype::F16,
            DType::BF16 => safetensors::Dtype::BF16,
            DType::I64 => safetensors::Dtype::I64,
            DType::I32 => safetensors::Dtype::I32,
            DType::Bool(_) | DType::U8 => safetensors::Dtype::U8,
            other => {
                return Err(Error::InvalidInput(format!(
                    "parameter {name} has dtype {other:?}, which is not saved"
                )));
            }
        };
        tensors.push((name, st_dtype, shape, data.into_bytes()));
    }
    let views = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Safetensors {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(views, Some(metadata), path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        other => Error::Safetensors {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })
}
