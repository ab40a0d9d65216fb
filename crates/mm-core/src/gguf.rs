//! GGUF files: the quantized-weight format of llama.cpp, stable-diffusion.cpp and
//! ComfyUI-GGUF (`flux1-schnell-Q8_0.gguf`, `t5-v1_1-xxl-encoder-Q8_0.gguf`, …).
//!
//! [`GgufFile::open`] memory-maps a GGUF file (versions 2 and 3, little-endian) and reads its
//! header, metadata and tensor table; tensor data is read from the mapping only when asked
//! for. Every count and length in the file is checked against the file's size before anything
//! is allocated for it, and every tensor's data range against the data section, so a
//! malformed or truncated file is an [`Error::Gguf`] naming what is wrong, never a panic.
//!
//! Tensors keep the names they are stored under (ComfyUI-GGUF's FLUX files use the original
//! BFL names, `double_blocks.0.img_attn.qkv.weight`; llama.cpp-style files names like
//! `enc.blk.0.attn_q.weight`). Shapes are given in PyTorch order (`[out, in]` for a linear
//! weight): the reverse of the GGUF dimension order, whose first dimension is the contiguous
//! one. [`GgufFile::dequantize`] turns any of F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
//! Q2_K, Q3_K, Q4_K, Q5_K and Q6_K into f32 values bit-exact with ggml and the `gguf` Python
//! package; [`quantize`] writes F32, F16, BF16, Q8_0 (bit-exact with `gguf.quants.quantize`)
//! and Q4_K. [`Weights::open`](crate::weights::Weights::open) loads a `.gguf` file into burn
//! modules like a safetensors checkpoint: the quantized weights of linear layers stay in their
//! blocks (see [`crate::quant`]), other tensors are dequantized as they load;
//! [`GgufFile::matrix`] reads one weight as a [`QuantizedMatrix`], whose product with f32
//! activations dequantizes a few rows at a time.
//!
//! ```no_run
//! # fn main() -> mm_core::Result<()> {
//! use mm_core::gguf::GgufFile;
//!
//! let file = GgufFile::open("flux1-schnell-Q8_0.gguf")?;
//! if let Some(arch) = file.metadata("general.architecture").and_then(|v| v.as_str()) {
//!     println!("architecture {arch}");
//! }
//! for tensor in file.tensors().iter().take(3) {
//!     println!("{} {:?} {:?}", tensor.name, tensor.shape, tensor.ggml_type);
//! }
//! let qkv = file.dequantize("double_blocks.0.img_attn.qkv.weight")?; // f32 values
//! let qkv = file.tensor::<2>("double_blocks.0.img_attn.qkv.weight", &mm_core::device::cpu())?;
//! println!("{:?}", qkv.dims()); // [9216, 3072]
//! # Ok(()) }
//! ```

use crate::device::runs_cpu_kernels;
use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use burn::tensor::{DType, Device, Shape, Tensor, TensorData};
use burn_store::bridge;
use memmap2::Mmap;

use crate::cpu::linear;
use crate::cpu::quant;
use crate::host::Values;
use crate::{Error, Result};

type PackTensor = burn_store::burn_pack::Tensor;

/// The GGUF magic: the file's first four bytes.
const MAGIC: [u8; 4] = *b"GGUF";

/// The metadata key of the data alignment.
const ALIGNMENT_KEY: &str = "general.alignment";

/// The data alignment when `general.alignment` is not set.
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// The most dimensions a tensor may have here (ggml has 4).
const MAX_DIMS: u32 = 8;

/// The deepest nesting of metadata arrays accepted.
const MAX_ARRAY_DEPTH: usize = 16;

macro_rules! ggml_types {
    ($($(#[$doc:meta])* $name:ident = $id:literal, $block:literal, $bytes:literal;)*) => {
        /// A ggml tensor type: how a GGUF tensor's values are stored. Names and ids are
        /// ggml's (`ggml_type`); the quantized types store whole blocks of
        /// [`block_size`](GgmlType::block_size) values in [`type_size`](GgmlType::type_size)
        /// bytes.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum GgmlType {
            $($(#[$doc])* $name,)*
        }

        impl GgmlType {
            /// The type of a ggml type id (`None` for an id this crate does not know).
            pub fn from_id(id: u32) -> Option<Self> {
                match id {
                    $($id => Some(Self::$name),)*
                    _ => None,
                }
            }

            /// The ggml type id.
            pub fn id(self) -> u32 {
                match self {
                    $(Self::$name => $id,)*
                }
            }

            /// Values per block (1 for the plain types).
            pub fn block_size(self) -> usize {
                match self {
                    $(Self::$name => $block,)*
                }
            }

            /// Bytes per block.
            pub fn type_size(self) -> usize {
                match self {
                    $(Self::$name => $bytes,)*
                }
            }

            /// ggml's name of the type (`"Q8_0"`).
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$name => stringify!($name),)*
                }
            }
        }
    };
}

ggml_types! {
    /// 32-bit float.
    F32 = 0, 1, 4;
    /// IEEE half precision.
    F16 = 1, 1, 2;
    /// 32 values: an f16 scale and 4-bit values offset by 8.
    Q4_0 = 2, 32, 18;
    /// 32 values: f16 scale and minimum, 4-bit values.
    Q4_1 = 3, 32, 20;
    /// 32 values: an f16 scale and 5-bit values offset by 16.
    Q5_0 = 6, 32, 22;
    /// 32 values: f16 scale and minimum, 5-bit values.
    Q5_1 = 7, 32, 24;
    /// 32 values: an f16 scale and 8-bit values.
    Q8_0 = 8, 32, 34;
    /// 32 values: f16 scale and sum, 8-bit values (ggml's intermediate type).
    Q8_1 = 9, 32, 36;
    /// 256 values: 2-bit values in 16 groups with 4-bit scales and minimums.
    Q2_K = 10, 256, 84;
    /// 256 values: 3-bit values in 16 groups with 6-bit scales.
    Q3_K = 11, 256, 110;
    /// 256 values: 4-bit values in 8 groups with 6-bit scales and minimums.
    Q4_K = 12, 256, 144;
    /// 256 values: 5-bit values in 8 groups with 6-bit scales and minimums.
    Q5_K = 13, 256, 176;
    /// 256 values: 6-bit values in 16 groups with 8-bit scales.
    Q6_K = 14, 256, 210;
    /// 256 values: an f32 scale and 8-bit values (ggml's intermediate type).
    Q8_K = 15, 256, 292;
    /// 256 values, importance-quantized at 2.06 bits.
    IQ2_XXS = 16, 256, 66;
    /// 256 values, importance-quantized at 2.31 bits.
    IQ2_XS = 17, 256, 74;
    /// 256 values, importance-quantized at 3.06 bits.
    IQ3_XXS = 18, 256, 98;
    /// 256 values, importance-quantized at 1.56 bits.
    IQ1_S = 19, 256, 50;
    /// 32 values, non-linear 4-bit levels.
    IQ4_NL = 20, 32, 18;
    /// 256 values, importance-quantized at 3.44 bits.
    IQ3_S = 21, 256, 110;
    /// 256 values, importance-quantized at 2.5 bits.
    IQ2_S = 22, 256, 82;
    /// 256 values, non-linear 4-bit levels with 6-bit scales.
    IQ4_XS = 23, 256, 136;
    /// 8-bit integer.
    I8 = 24, 1, 1;
    /// 16-bit integer.
    I16 = 25, 1, 2;
    /// 32-bit integer.
    I32 = 26, 1, 4;
    /// 64-bit integer.
    I64 = 27, 1, 8;
    /// 64-bit float.
    F64 = 28, 1, 8;
    /// 256 values, importance-quantized at 1.75 bits.
    IQ1_M = 29, 256, 56;
    /// bfloat16.
    BF16 = 30, 1, 2;
    /// 256 ternary values at 1.69 bits.
    TQ1_0 = 34, 256, 54;
    /// 256 ternary values at 2.06 bits.
    TQ2_0 = 35, 256, 66;
    /// 32 values: a shared 8-bit exponent and 4-bit floats (OCP microscaling).
    MXFP4 = 39, 32, 17;
}

impl GgmlType {
    /// Whether [`GgufFile::dequantize`] and [`dequantize`] read this type: F32, F16, BF16,
    /// Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K and Q6_K.
    pub fn can_dequantize(self) -> bool {
        quant::can_dequantize(self)
    }

    /// Whether [`quantize`] writes this type: F32, F16, BF16, Q8_0 and Q4_K.
    pub fn can_quantize(self) -> bool {
        quant::can_quantize(self)
    }

    /// Whether values are stored in blocks sharing a scale (Q8_0, Q4_K, …), not one by one
    /// (F32, F16, BF16, F64 and the integer types).
    pub fn is_block_quantized(self) -> bool {
        self.block_size() > 1
    }

    /// The bytes `elements` values take, or `None` when `elements` is not a whole number of
    /// blocks (or the size overflows).
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let block = self.block_size() as u64;
        elements
            .is_multiple_of(block)
            .then(|| (elements / block).checked_mul(self.type_size() as u64))
            .flatten()
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The type of a metadata value, with GGUF's ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ValueType {
    /// `u8` (id 0).
    U8,
    /// `i8` (id 1).
    I8,
    /// `u16` (id 2).
    U16,
    /// `i16` (id 3).
    I16,
    /// `u32` (id 4).
    U32,
    /// `i32` (id 5).
    I32,
    /// `f32` (id 6).
    F32,
    /// A boolean byte, 0 or 1 (id 7).
    Bool,
    /// A length-prefixed UTF-8 string (id 8).
    String,
    /// A typed, length-prefixed array (id 9).
    Array,
    /// `u64` (id 10).
    U64,
    /// `i64` (id 11).
    I64,
    /// `f64` (id 12).
    F64,
}

impl ValueType {
    /// The type of a GGUF value type id.
    pub fn from_id(id: u32) -> Option<Self> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The fewest bytes a value of this type takes in a file (an empty string or array: its
    /// length prefix, and an array's element type).
    fn min_size(self) -> u64 {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => 1,
            U16 | I16 => 2,
            U32 | I32 | F32 => 4,
            U64 | I64 | F64 | String => 8,
            Array => 12,
        }
    }
}

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetadataValue {
    /// `u8`.
    U8(u8),
    /// `i8`.
    I8(i8),
    /// `u16`.
    U16(u16),
    /// `i16`.
    I16(i16),
    /// `u32`.
    U32(u32),
    /// `i32`.
    I32(i32),
    /// `f32`.
    F32(f32),
    /// A boolean.
    Bool(bool),
    /// A string (bytes that are not UTF-8 are replaced by U+FFFD).
    String(String),
    /// An array of values of one type (arrays may nest).
    Array {
        /// The type of every element (also known when the array is empty).
        element: ValueType,
        /// The elements.
        values: Vec<MetadataValue>,
    },
    /// `u64`.
    U64(u64),
    /// `i64`.
    I64(i64),
    /// `f64`.
    F64(f64),
}

impl MetadataValue {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value of any integer type, if it is one and fits in a `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.integer().and_then(|v| u64::try_from(v).ok())
    }

    /// The value of any integer type, if it is one and fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.integer().and_then(|v| i64::try_from(v).ok())
    }

    /// The value of any integer type.
    fn integer(&self) -> Option<i128> {
        Some(match *self {
            Self::U8(v) => v.into(),
            Self::I8(v) => v.into(),
            Self::U16(v) => v.into(),
            Self::I16(v) => v.into(),
            Self::U32(v) => v.into(),
            Self::I32(v) => v.into(),
            Self::U64(v) => v.into(),
            Self::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// The value of a float type (`f32` widened exactly).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(v) => Some(v),
            _ => None,
        }
    }

    /// The elements, if this is an array.
    pub fn as_array(&self) -> Option<&[MetadataValue]> {
        match self {
            Self::Array { values, .. } => Some(values),
            _ => None,
        }
    }

    /// The type of this value.
    pub fn value_type(&self) -> ValueType {
        match self {
            Self::U8(_) => ValueType::U8,
            Self::I8(_) => ValueType::I8,
            Self::U16(_) => ValueType::U16,
            Self::I16(_) => ValueType::I16,
            Self::U32(_) => ValueType::U32,
            Self::I32(_) => ValueType::I32,
            Self::F32(_) => ValueType::F32,
            Self::Bool(_) => ValueType::Bool,
            Self::String(_) => ValueType::String,
            Self::Array { .. } => ValueType::Array,
            Self::U64(_) => ValueType::U64,
            Self::I64(_) => ValueType::I64,
            Self::F64(_) => ValueType::F64,
        }
    }
}

/// The part of a GGUF file being read when it ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Magic, version and counts (24 bytes).
    Header,
    /// The metadata key/value pairs.
    Metadata,
    /// The tensor table (names, dimensions, types, offsets).
    TensorInfo,
    /// The tensors' data.
    TensorData,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Metadata => "metadata",
            Section::TensorInfo => "tensor table",
            Section::TensorData => "tensor data",
        })
    }
}

/// What is wrong with a GGUF file (the `kind` of [`Error::Gguf`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file does not start with `GGUF`.
    #[error("not a GGUF file: it starts with {found:02x?}, not \"GGUF\"")]
    BadMagic {
        /// The first four bytes.
        found: [u8; 4],
    },
    /// A version other than 2 or 3 (version 1, a big-endian file, or a newer format).
    #[error("unsupported GGUF version {version}{}", version_hint(*.version))]
    UnsupportedVersion {
        /// The version field as read (little-endian).
        version: u32,
    },
    /// The file ends before `section` does.
    #[error(
        "truncated in the {section}: {needed} bytes needed at offset {offset}, but the file has {file_len}"
    )]
    Truncated {
        /// The part being read.
        section: Section,
        /// Where the read started.
        offset: u64,
        /// The bytes it needed.
        needed: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A metadata entry that cannot be read (an unknown value type, a boolean that is neither
    /// 0 nor 1, a repeated key, an unusable `general.alignment`, arrays nested too deep).
    #[error("metadata '{key}': {reason}")]
    InvalidMetadata {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor table entry that cannot be read (too many dimensions, a repeated name, an
    /// element count that overflows).
    #[error("tensor '{tensor}': {reason}")]
    InvalidTensorInfo {
        /// The tensor.
        tensor: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor whose ggml type id is unknown: its size cannot be computed.
    #[error("tensor '{tensor}': unknown ggml type id {id}")]
    UnknownType {
        /// The tensor.
        tensor: String,
        /// The type id.
        id: u32,
    },
    /// A tensor of a type this crate cannot dequantize (see [`GgmlType::can_dequantize`]).
    #[error("tensor '{tensor}': ggml type {ggml_type} (id {}) cannot be dequantized", .ggml_type.id())]
    UnsupportedType {
        /// The tensor.
        tensor: String,
        /// Its type.
        ggml_type: GgmlType,
    },
    /// A tensor whose data starts past the end of the file (a bad offset).
    #[error(
        "tensor '{tensor}': data at bytes {start}..{end} lies outside the file of {file_len} bytes"
    )]
    OutOfBounds {
        /// The tensor.
        tensor: String,
        /// Its first byte in the file.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's size.
        file_len: u64,
    },
    /// A tensor whose data offset is not a multiple of the file's alignment.
    #[error(
        "tensor '{tensor}': data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    Misaligned {
        /// The tensor.
        tensor: String,
        /// Its offset in the data section.
        offset: u64,
        /// `general.alignment` (32 by default).
        alignment: u64,
    },
    /// A tensor whose shape does not fit its type or the request (a row that is not a whole
    /// number of blocks, a rank other than the one asked for).
    #[error("tensor '{tensor}': {reason}")]
    ShapeMismatch {
        /// The tensor.
        tensor: String,
        /// What does not fit.
        reason: String,
    },
    /// No tensor of this name.
    #[error("no tensor '{0}'")]
    MissingTensor(String),
}

/// The hint of [`GgufError::UnsupportedVersion`].
fn version_hint(version: u32) -> &'static str {
    match version {
        1 => " (GGUF v1 is not read; re-save the file with a current tool)",
        v if matches!(v.swap_bytes(), 2 | 3) => " (a big-endian file; only little-endian is read)",
        _ => " (versions 2 and 3 are read)",
    }
}

/// One tensor of a GGUF file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensor {
    /// The name as stored.
    pub name: String,
    /// The shape in PyTorch order (the GGUF dimensions reversed: the last one is contiguous).
    pub shape: Vec<usize>,
    /// How the values are stored.
    pub ggml_type: GgmlType,
    /// The position of its data in the file, in bytes.
    pub offset: u64,
    /// The size of its data in bytes.
    pub size: u64,
}

impl GgufTensor {
    /// The number of values.
    pub fn num_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// A memory-mapped GGUF file: its metadata, its tensor table, and the tensors' data read
/// from the mapping on demand.
///
/// The file must not be modified while it is open (a mapped file that shrinks makes reads
/// fault); replacing it (a new file under the same name) is harmless.
pub struct GgufFile {
    path: PathBuf,
    map: Mmap,
    index: Index,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.index.version)
            .field("metadata", &self.index.metadata.len())
            .field("tensors", &self.index.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Maps the file and reads its header, metadata and tensor table, checking that every
    /// tensor's data lies in the file (aligned, whole blocks of its type).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.is_file() {
            return Err(Error::MissingFile {
                what: "GGUF file".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            });
        }
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the mapping is read-only, and the file is documented to stay unmodified
        // while it is open (as for every reader of memory-mapped model files).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let index = Index::parse(&map).map_err(|kind| Error::Gguf {
            path: path.to_path_buf(),
            kind,
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            index,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version (2 or 3).
    pub fn version(&self) -> u32 {
        self.index.version
    }

    /// The alignment of the tensors' data (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.index.alignment
    }

    /// Where the data section starts in the file, in bytes.
    pub fn data_offset(&self) -> u64 {
        self.index.data_offset
    }

    /// The value of a metadata key.
    pub fn metadata(&self, key: &str) -> Option<&MetadataValue> {
        self.index.keys.get(key).map(|&i| &self.index.metadata[i].1)
    }

    /// Every metadata entry, in file order.
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &MetadataValue)> {
        self.index.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The tensors, in file order.
    pub fn tensors(&self) -> &[GgufTensor] {
        &self.index.tensors
    }

    /// The tensor of this name.
    pub fn tensor_info(&self, name: &str) -> Option<&GgufTensor> {
        self.index.names.get(name).map(|&i| &self.index.tensors[i])
    }

    /// A 2-D tensor as a [`QuantizedMatrix`] (its blocks copied out of the mapping): a linear
    /// weight kept quantized. Another rank, or a type that cannot be dequantized, is an error.
    pub fn matrix(&self, name: &str) -> Result<QuantizedMatrix> {
        let info = self.dequantizable(name)?;
        let &[rows, cols] = info.shape.as_slice() else {
            return Err(self.error(GgufError::ShapeMismatch {
                tensor: name.to_string(),
                reason: format!("shape {:?} is not a matrix", info.shape),
            }));
        };
        QuantizedMatrix::new(info.ggml_type, [rows, cols], self.bytes_of(info).to_vec())
    }

    /// The rows `rows` (in order) of a quantized matrix, its blocks copied out of the mapping
    /// (whose pages are then released): a part of a fused projection kept quantized.
    pub(crate) fn matrix_rows(&self, name: &str, rows: &[Range<usize>]) -> Result<QuantizedMatrix> {
        let info = self.dequantizable(name)?;
        let (&[total, cols], Some(row_bytes)) = (
            info.shape.as_slice(),
            info.ggml_type
                .bytes_for(*info.shape.last().unwrap_or(&0) as u64),
        ) else {
            return Err(self.error(GgufError::ShapeMismatch {
                tensor: name.to_string(),
                reason: format!("shape {:?} is not a matrix of whole blocks", info.shape),
            }));
        };
        let (bytes, row_bytes) = (self.bytes_of(info), row_bytes as usize);
        let mut data = Vec::with_capacity(rows.iter().map(|r| r.len()).sum::<usize>() * row_bytes);
        for r in rows {
            if r.end > total {
                return Err(self.error(GgufError::ShapeMismatch {
                    tensor: name.to_string(),
                    reason: format!("rows {r:?} of a matrix of {total}"),
                }));
            }
            data.extend_from_slice(&bytes[r.start * row_bytes..r.end * row_bytes]);
        }
        self.release(info);
        let n = data.len() / row_bytes.max(1);
        QuantizedMatrix::new(info.ggml_type, [n, cols], data)
    }

    /// The stored bytes of a tensor (its blocks, as in the file).
    pub fn raw(&self, name: &str) -> Result<&[u8]> {
        let info = self.info(name)?;
        Ok(self.bytes_of(info))
    }

    /// A tensor's values in f32, in PyTorch (row-major) order: bit-exact with
    /// `gguf.quants.dequantize` for the types of [`GgmlType::can_dequantize`]; any other type
    /// is [`GgufError::UnsupportedType`].
    pub fn dequantize(&self, name: &str) -> Result<Vec<f32>> {
        let info = self.dequantizable(name)?;
        let n = info.num_elements();
        crate::limits::check_memory(format_args!("dequantizing '{name}'"), n as u64 * 4)?;
        let mut out = vec![0.0f32; n];
        quant::dequantize(info.ggml_type, self.bytes_of(info), &mut out);
        Ok(out)
    }

    /// A tensor as an f32 burn tensor on `device` ([`GgufFile::dequantize`]d), with its
    /// PyTorch shape; a rank other than `D` is [`GgufError::ShapeMismatch`].
    pub fn tensor<const D: usize>(&self, name: &str, device: &Device) -> Result<Tensor<D>> {
        let info = self.info(name)?;
        if info.shape.len() != D {
            return Err(self.error(GgufError::ShapeMismatch {
                tensor: name.to_string(),
                reason: format!("shape {:?} asked for as a rank-{D} tensor", info.shape),
            }));
        }
        let values = self.dequantize(name)?;
        Ok(Tensor::from_data(
            TensorData::new(values, info.shape.clone()),
            device,
        ))
    }

    /// Lets the kernel drop the mapped pages of a tensor's data (they are read again from the
    /// file if needed): after a tensor is copied out, its pages need not stay resident.
    pub(crate) fn release(&self, info: &GgufTensor) {
        #[cfg(unix)]
        {
            // SAFETY: the mapping is a read-only file mapping: dropping its pages loses
            // nothing (they are read back from the unmodified file on the next access).
            let _ = unsafe {
                self.map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    info.offset as usize,
                    info.size as usize,
                )
            };
        }
        #[cfg(not(unix))]
        let _ = info;
    }

    /// The tensor of this name, or [`GgufError::MissingTensor`].
    fn info(&self, name: &str) -> Result<&GgufTensor> {
        self.tensor_info(name)
            .ok_or_else(|| self.error(GgufError::MissingTensor(name.to_string())))
    }

    /// The tensor of this name if its type can be dequantized, or
    /// [`GgufError::UnsupportedType`].
    fn dequantizable(&self, name: &str) -> Result<&GgufTensor> {
        let info = self.info(name)?;
        if !info.ggml_type.can_dequantize() {
            return Err(self.error(GgufError::UnsupportedType {
                tensor: name.to_string(),
                ggml_type: info.ggml_type,
            }));
        }
        Ok(info)
    }

    /// A tensor's bytes (checked to lie in the file when it was opened).
    fn bytes_of(&self, info: &GgufTensor) -> &[u8] {
        &self.map[info.offset as usize..(info.offset + info.size) as usize]
    }

    /// `kind` as an error about this file.
    fn error(&self, kind: GgufError) -> Error {
        Error::Gguf {
            path: self.path.clone(),
            kind,
        }
    }
}

/// A weight matrix kept in a ggml block format (Q8_0, Q4_K, …: any type of
/// [`GgmlType::can_dequantize`]) for products with f32 activations that never dequantize it
/// whole: a linear layer's `[out, in]` weight at its quantized size (Q8_0: 1.06 bytes a value).
///
/// [`QuantizedMatrix::forward`] computes `x · Wᵀ`. On the flex CPU backend, a few rows of `x`
/// (decoding, ≤ 4) take dot products with the weight's rows dequantized 16 at a time; more
/// rows, one f32 `gemm` per (row block, column block) with the weight's rows dequantized a
/// 2 MiB block at a time, as the half-precision kernel does. Elsewhere the weight is
/// dequantized for the call.
///
/// ```
/// use burn::tensor::Tensor;
/// use mm_core::gguf::{GgmlType, QuantizedMatrix};
///
/// # fn main() -> mm_core::Result<()> {
/// let device = mm_core::device::cpu();
/// let w: Vec<f32> = (0..8 * 64).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
/// let layer = QuantizedMatrix::quantize(GgmlType::Q8_0, [8, 64], &w)?; // [out, in]
/// let x = Tensor::<2>::ones([3, 64], &device);
/// let y = layer.forward(x)?; // [3, 8]
/// assert_eq!(y.dims(), [3, 8]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct QuantizedMatrix {
    ggml_type: GgmlType,
    shape: [usize; 2],
    data: Arc<[u8]>,
}

impl fmt::Debug for QuantizedMatrix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuantizedMatrix")
            .field("ggml_type", &self.ggml_type)
            .field("shape", &self.shape)
            .finish()
    }
}

impl QuantizedMatrix {
    /// The `[rows, cols]` matrix (PyTorch order: rows of `cols` values, whole blocks) stored in
    /// `data`; a type that cannot be dequantized or data of another size is
    /// [`Error::InvalidInput`].
    pub fn new(ggml_type: GgmlType, shape: [usize; 2], data: Vec<u8>) -> Result<Self> {
        let [rows, cols] = shape;
        let blocks = whole_blocks(
            ggml_type,
            ggml_type.can_dequantize(),
            cols,
            ggml_type.block_size(),
            "columns",
        )?;
        let size = rows
            .checked_mul(blocks)
            .and_then(|b| b.checked_mul(ggml_type.type_size()));
        if size != Some(data.len()) {
            return Err(Error::InvalidInput(format!(
                "{} bytes do not hold a {ggml_type} matrix of shape {shape:?}",
                data.len()
            )));
        }
        Ok(Self {
            ggml_type,
            shape,
            data: data.into(),
        })
    }

    /// `values` (`[rows, cols]`, row-major) [`quantize`]d to `ggml_type`.
    pub fn quantize(ggml_type: GgmlType, shape: [usize; 2], values: &[f32]) -> Result<Self> {
        if shape[0].checked_mul(shape[1]) != Some(values.len()) {
            return Err(Error::InvalidInput(format!(
                "{} values for a matrix of shape {shape:?}",
                values.len()
            )));
        }
        Self::new(ggml_type, shape, quantize(ggml_type, values)?)
    }

    /// The type the values are stored in.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// `[rows, cols]`: a linear layer's `[out, in]`.
    pub fn shape(&self) -> [usize; 2] {
        self.shape
    }

    /// The stored blocks, row after row.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// The values in f32, row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.shape[0] * self.shape[1]];
        quant::dequantize(self.ggml_type, &self.data, &mut out);
        out
    }

    /// `x · Wᵀ` (`x`: `[..., cols]` → `[..., rows]`) in `x`'s dtype; a last dimension other
    /// than `cols` is [`Error::InvalidInput`].
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Result<Tensor<D>> {
        let [n, k] = self.shape;
        let mut dims = x.dims();
        if dims[D - 1] != k {
            return Err(Error::InvalidInput(format!(
                "input of shape {dims:?} for a {n} × {k} quantized matrix (its last dimension \
                 must be {k})"
            )));
        }
        let m = dims[..D - 1].iter().product::<usize>();
        dims[D - 1] = n;
        let (device, dtype) = (x.device(), x.dtype());
        let rows = quant::QuantRows::new(self.ggml_type, &self.data, k);
        if let Some(rows) = rows.filter(|_| dtype == DType::F32 && runs_cpu_kernels(&device)) {
            let values = Values::new(x);
            let compute = crate::precision::autocast_dtype();
            let out = linear::matmul(values.as_slice(), m, k, rows, n, compute);
            return Ok(Tensor::from_data(out.into_data(dims), &device));
        }
        let w = Tensor::<2>::from_data(TensorData::new(self.dequantize(), self.shape), &device);
        let out = x.reshape([m, k]).matmul(w.cast(dtype).transpose());
        Ok(out.reshape(dims))
    }
}

/// A tensor of `file` for [`Weights`](crate::weights::Weights), read when it is loaded: F16,
/// BF16, F32, F64 and integer tensors as their bytes in the matching burn dtype, quantized
/// ones dequantized to f32 (a type that cannot be is an error then). The tensor's pages of the
/// mapping are released once it is read.
pub(crate) fn deferred_tensor(file: &Arc<GgufFile>, info: &GgufTensor) -> PackTensor {
    let stored = match info.ggml_type {
        GgmlType::F32 => Some(DType::F32),
        GgmlType::F16 => Some(DType::F16),
        GgmlType::BF16 => Some(DType::BF16),
        GgmlType::F64 => Some(DType::F64),
        GgmlType::I8 => Some(DType::I8),
        GgmlType::I16 => Some(DType::I16),
        GgmlType::I32 => Some(DType::I32),
        GgmlType::I64 => Some(DType::I64),
        _ => None,
    };
    let (file, info) = (file.clone(), info.clone());
    let shape = Shape::from(info.shape.clone());
    let dtype = stored.unwrap_or(DType::F32);
    bridge::deferred(info.name.clone(), dtype, shape, None, move || {
        let data = match stored {
            Some(dtype) => Ok(TensorData::from_bytes_vec(
                file.bytes_of(&info).to_vec(),
                info.shape.clone(),
                dtype,
            )),
            None => file
                .dequantize(&info.name)
                .map(|values| TensorData::new(values, info.shape.clone())),
        };
        file.release(&info);
        data.map_err(|e| burn_store::burn_pack::Error::ValidationError(e.to_string()))
    })
}

/// `bytes` (whole blocks of `ty`) as f32 values, bit-exact with `gguf.quants.dequantize` for
/// the types of [`GgmlType::can_dequantize`].
///
/// ```
/// use mm_core::gguf::{GgmlType, dequantize, quantize};
/// let x: Vec<f32> = (0..64).map(|i| i as f32 / 8.0 - 4.0).collect();
/// let q = quantize(GgmlType::Q8_0, &x)?; // 2 blocks of 34 bytes
/// assert_eq!(q.len(), 68);
/// let y = dequantize(GgmlType::Q8_0, &q)?;
/// assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 0.02));
/// # Ok::<(), mm_core::Error>(())
/// ```
pub fn dequantize(ty: GgmlType, bytes: &[u8]) -> Result<Vec<f32>> {
    let blocks = whole_blocks(
        ty,
        ty.can_dequantize(),
        bytes.len(),
        ty.type_size(),
        "bytes",
    )?;
    let mut out = vec![0.0f32; blocks * ty.block_size()];
    quant::dequantize(ty, bytes, &mut out);
    Ok(out)
}

/// `values` (whole blocks of `ty`) in the stored form of `ty`, for the types of
/// [`GgmlType::can_quantize`]: F32, F16, BF16 and Q8_0 bit-exact with
/// `gguf.quants.quantize` (and Q8_0 with ggml's reference quantizer); Q4_K fits each
/// 32-value sub-block's scale and minimum by weighted least squares (the `gguf` package
/// cannot quantize Q4_K; the round-trip error is about 7 % of the values' RMS for Gaussian
/// values). A non-finite value, or a block whose scale does not fit an f16, is an error.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    let blocks = whole_blocks(
        ty,
        ty.can_quantize(),
        values.len(),
        ty.block_size(),
        "values",
    )?;
    // The f16 scales must hold the largest magnitude over the top level: 127 for Q8_0's
    // values, 63 for Q4_K's 6-bit sub-block minimums (the stricter of its two limits).
    let top = match ty {
        GgmlType::Q8_0 => Some(127.0),
        GgmlType::Q4_K => Some(63.0),
        _ => None,
    };
    if let Some(top) = top {
        let limit = f32::from(half::f16::MAX) * top;
        if let Some(v) = values.iter().find(|v| !v.is_finite() || v.abs() > limit) {
            return Err(Error::InvalidInput(format!(
                "cannot quantize {v} to {ty} (finite values of magnitude at most {limit} are)"
            )));
        }
    }
    let mut out = vec![0u8; blocks * ty.type_size()];
    quant::quantize(ty, values, &mut out);
    Ok(out)
}

/// The number of blocks of `ty` in `len` items (`per_block` a block) when `supported`;
/// otherwise, or when they are not whole blocks, [`Error::InvalidInput`].
fn whole_blocks(
    ty: GgmlType,
    supported: bool,
    len: usize,
    per_block: usize,
    items: &str,
) -> Result<usize> {
    if !supported {
        return Err(Error::InvalidInput(format!(
            "ggml type {ty} is not supported here (dequantized: F32, F16, BF16, Q4_0, Q4_1, \
             Q5_0, Q5_1, Q8_0, Q2_K … Q6_K; quantized: F32, F16, BF16, Q8_0, Q4_K)"
        )));
    }
    if !len.is_multiple_of(per_block) {
        return Err(Error::InvalidInput(format!(
            "{len} {items} are not whole {ty} blocks of {per_block}"
        )));
    }
    Ok(len / per_block)
}

/// What a GGUF file's header, metadata and tensor table say.
struct Index {
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, MetadataValue)>,
    keys: HashMap<String, usize>,
    tensors: Vec<GgufTensor>,
    names: HashMap<String, usize>,
}

impl Index {
    /// Reads a whole file's bytes: header, metadata, tensor table, and the checks of every
    /// tensor's data range.
    fn parse(bytes: &[u8]) -> Result<Self, GgufError> {
        let mut r = Reader {
            bytes,
            pos: 0,
            section: Section::Header,
        };
        let magic: [u8; 4] = r.array()?;
        if magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = u32::from_le_bytes(r.array()?);
        if !matches!(version, 2 | 3) {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let n_tensors = r.u64()?;
        let n_kv = r.u64()?;

        r.section = Section::Metadata;
        // A key/value pair takes at least 13 bytes (key length, value type, a 1-byte value).
        r.check_count(n_kv, 13)?;
        let mut metadata = Vec::with_capacity(n_kv as usize);
        let mut keys = HashMap::with_capacity(n_kv as usize);
        for _ in 0..n_kv {
            let key = r.string()?;
            let ty = r.value_type(&key)?;
            let value = r.value(ty, &key, 0)?;
            if keys.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::InvalidMetadata {
                    key,
                    reason: "the key appears twice".into(),
                });
            }
            metadata.push((key, value));
        }
        let alignment = match keys.get(ALIGNMENT_KEY).map(|&i| &metadata[i].1) {
            None => DEFAULT_ALIGNMENT,
            Some(MetadataValue::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(value) => {
                return Err(GgufError::InvalidMetadata {
                    key: ALIGNMENT_KEY.into(),
                    reason: format!("{value:?} is not a power of two of type u32"),
                });
            }
        };

        r.section = Section::TensorInfo;
        // A tensor entry takes at least 24 bytes (name length, rank, type, offset).
        r.check_count(n_tensors, 24)?;
        let mut infos = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            infos.push(r.tensor_info()?);
        }
        let data_offset = (r.pos as u64).next_multiple_of(alignment);

        let file_len = bytes.len() as u64;
        let mut tensors = Vec::with_capacity(infos.len());
        let mut names = HashMap::with_capacity(infos.len());
        for (name, dims, ty, offset) in infos {
            let tensor = checked_tensor(name, dims, ty, offset, data_offset, alignment, file_len)?;
            if names.insert(tensor.name.clone(), tensors.len()).is_some() {
                return Err(GgufError::InvalidTensorInfo {
                    tensor: tensor.name,
                    reason: "the name appears twice".into(),
                });
            }
            tensors.push(tensor);
        }
        Ok(Self {
            version,
            alignment,
            data_offset,
            metadata,
            keys,
            tensors,
            names,
        })
    }
}

/// A tensor table entry as read: name, GGUF dimensions, type id, data offset.
type RawInfo = (String, Vec<u64>, u32, u64);

/// The tensor of a table entry, once its type is known, its rows are whole blocks and its
/// data lies aligned in the file.
fn checked_tensor(
    name: String,
    dims: Vec<u64>,
    id: u32,
    offset: u64,
    data_offset: u64,
    alignment: u64,
    file_len: u64,
) -> Result<GgufTensor, GgufError> {
    let Some(ggml_type) = GgmlType::from_id(id) else {
        return Err(GgufError::UnknownType { tensor: name, id });
    };
    let shape: Vec<u64> = dims.iter().rev().copied().collect();
    let overflow = || GgufError::InvalidTensorInfo {
        tensor: name.clone(),
        reason: format!("dimensions {shape:?} overflow"),
    };
    let elements = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .filter(|&n| usize::try_from(n).is_ok())
        .ok_or_else(overflow)?;
    let row = dims.first().copied().unwrap_or(1);
    let block = ggml_type.block_size() as u64;
    if !row.is_multiple_of(block) {
        return Err(GgufError::ShapeMismatch {
            tensor: name,
            reason: format!(
                "rows of {row} values are not whole {ggml_type} blocks of {block} (shape {shape:?})"
            ),
        });
    }
    let size = ggml_type.bytes_for(elements).ok_or_else(overflow)?;
    if !offset.is_multiple_of(alignment) {
        return Err(GgufError::Misaligned {
            tensor: name,
            offset,
            alignment,
        });
    }
    let start = data_offset.checked_add(offset);
    let end = start.and_then(|s| s.checked_add(size));
    match (start, end) {
        (Some(start), Some(end)) if end <= file_len => Ok(GgufTensor {
            shape: shape.iter().map(|&d| d as usize).collect(),
            name,
            ggml_type,
            offset: start,
            size,
        }),
        // Data that starts in the file but runs past its end: the file was cut short.
        (Some(start), Some(end)) if start <= file_len && size > 0 => Err(GgufError::Truncated {
            section: Section::TensorData,
            offset: start,
            needed: end - start,
            file_len,
        }),
        (start, end) => Err(GgufError::OutOfBounds {
            tensor: name,
            start: start.unwrap_or(u64::MAX),
            end: end.unwrap_or(u64::MAX),
            file_len,
        }),
    }
}

/// A cursor over a file's bytes; every read past the end is [`GgufError::Truncated`] in the
/// current section.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    section: Section,
}

impl<'a> Reader<'a> {
    /// The next `n` bytes.
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let remaining = (self.bytes.len() - self.pos) as u64;
        if n > remaining {
            return Err(self.truncated(n));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.bytes[start..self.pos])
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, GgufError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, GgufError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A length-prefixed string (invalid UTF-8 replaced).
    fn string(&mut self) -> Result<String, GgufError> {
        let len = self.u64()?;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    /// [`GgufError::Truncated`] for a read of `needed` bytes here.
    fn truncated(&self, needed: u64) -> GgufError {
        GgufError::Truncated {
            section: self.section,
            offset: self.pos as u64,
            needed,
            file_len: self.bytes.len() as u64,
        }
    }

    /// Refuses `count` items of at least `min_size` bytes each when the rest of the file is
    /// too short to hold them, before anything is allocated for them.
    fn check_count(&self, count: u64, min_size: u64) -> Result<(), GgufError> {
        let needed = count.saturating_mul(min_size);
        if needed > (self.bytes.len() - self.pos) as u64 {
            return Err(self.truncated(needed));
        }
        Ok(())
    }

    /// A value type id of the entry `key`.
    fn value_type(&mut self, key: &str) -> Result<ValueType, GgufError> {
        let id = self.u32()?;
        ValueType::from_id(id).ok_or_else(|| GgufError::InvalidMetadata {
            key: key.to_string(),
            reason: format!("unknown value type id {id}"),
        })
    }

    /// A value of type `ty` of the entry `key`, inside `depth` arrays.
    fn value(
        &mut self,
        ty: ValueType,
        key: &str,
        depth: usize,
    ) -> Result<MetadataValue, GgufError> {
        use MetadataValue as V;
        Ok(match ty {
            ValueType::U8 => V::U8(u8::from_le_bytes(self.array()?)),
            ValueType::I8 => V::I8(i8::from_le_bytes(self.array()?)),
            ValueType::U16 => V::U16(u16::from_le_bytes(self.array()?)),
            ValueType::I16 => V::I16(i16::from_le_bytes(self.array()?)),
            ValueType::U32 => V::U32(self.u32()?),
            ValueType::I32 => V::I32(i32::from_le_bytes(self.array()?)),
            ValueType::F32 => V::F32(f32::from_le_bytes(self.array()?)),
            ValueType::U64 => V::U64(self.u64()?),
            ValueType::I64 => V::I64(i64::from_le_bytes(self.array()?)),
            ValueType::F64 => V::F64(f64::from_le_bytes(self.array()?)),
            ValueType::Bool => match self.array::<1>()? {
                [0] => V::Bool(false),
                [1] => V::Bool(true),
                [b] => {
                    return Err(GgufError::InvalidMetadata {
                        key: key.to_string(),
                        reason: format!("boolean byte {b}"),
                    });
                }
            },
            ValueType::String => V::String(self.string()?),
            ValueType::Array => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(GgufError::InvalidMetadata {
                        key: key.to_string(),
                        reason: format!("arrays nested more than {MAX_ARRAY_DEPTH} deep"),
                    });
                }
                let element = self.value_type(key)?;
                let len = self.u64()?;
                self.check_count(len, element.min_size())?;
                let mut values = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    values.push(self.value(element, key, depth + 1)?);
                }
                V::Array { element, values }
            }
        })
    }

    /// One tensor table entry.
    fn tensor_info(&mut self) -> Result<RawInfo, GgufError> {
        let name = self.string()?;
        let rank = self.u32()?;
        if rank > MAX_DIMS {
            return Err(GgufError::InvalidTensorInfo {
                tensor: name,
                reason: format!("{rank} dimensions (at most {MAX_DIMS} are read)"),
            });
        }
        let dims = (0..rank)
            .map(|_| self.u64())
            .collect::<Result<Vec<_>, _>>()?;
        let id = self.u32()?;
        let offset = self.u64()?;
        Ok((name, dims, id, offset))
    }
}
