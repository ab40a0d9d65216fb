//! Linear layers whose weights stay quantized in memory (ggml blocks: Q8_0, Q4_K, …).
//!
//! A weight matrix loaded from a GGUF file's quantized tensor, or quantized while it is loaded
//! ([`Weights::quantize`](crate::weights::Weights::quantize)), is attached to its burn
//! `Linear` layer as a [`QuantizedWeight`]: a burn parameter *reparameterization* that holds
//! the [`QuantizedMatrix`]. The layer keeps its type, its name and its `[in, out]` shape, so
//! every model of the workspace takes quantized weights without a change:
//!
//! - [`crate::precision::linear`] (the one function models call for their linear layers)
//!   multiplies f32 activations on the flex CPU backend by the blocks directly, dequantizing
//!   16 rows at a time into a scratch buffer ([`QuantizedMatrix::forward`]): memory holds the
//!   quantized bytes only (1.06 bytes per value for Q8_0, 0.56 for Q4_K);
//! - anything else (another backend, autodiff, bf16 activations, or code that reads
//!   `weight.val()`) sees the dequantized f32 matrix, computed once on first use.
//!
//! ```no_run
//! use burn::nn::{Linear, LinearConfig};
//! use mm_core::gguf::GgmlType;
//! use mm_core::quant::quantized_weight;
//! use mm_core::weights::Weights;
//!
//! # fn main() -> mm_core::Result<()> {
//! let device = mm_core::device::cpu();
//! // A linear layer's f32 checkpoint, quantized to Q8_0 as it loads.
//! let weights = Weights::open("layer.safetensors")?.quantize(GgmlType::Q8_0);
//! let layer: Linear = weights.load_into(LinearConfig::new(4096, 4096).init(&device))?;
//! let matrix = quantized_weight(&layer).expect("kept quantized");
//! assert_eq!(matrix.ggml_type(), GgmlType::Q8_0);
//! # Ok(()) }
//! ```

use std::collections::{HashMap, HashSet};

use burn::module::{Module, ModuleVisitor, Param, ParamId, Reparameterization, Reparameterizer};
use burn::nn::Linear;
use burn::tensor::{DType, Device, Shape, Tensor, TensorData};

use crate::gguf::{GgmlType, QuantizedMatrix};
use crate::weights::linear_weights;
use crate::{Error, Result};

/// The quantized matrix of a linear layer's weight, attached to the weight parameter (see the
/// [module documentation](self)). Its `apply` is the identity: the parameter's base value is
/// the dequantized matrix, built only when something reads it.
#[derive(Module, Debug)]
pub struct QuantizedWeight {
    /// The `[out, in]` matrix (PyTorch order).
    #[module(skip)]
    pub matrix: QuantizedMatrix,
}

impl Reparameterization for QuantizedWeight {
    const NAME: &'static str = "quantized";

    fn apply<const D: usize>(&self, base: Tensor<D>) -> Tensor<D> {
        base
    }
}

/// The quantized matrix of `layer`'s weight, when it is kept quantized.
pub fn quantized_weight(layer: &Linear) -> Option<&QuantizedMatrix> {
    layer
        .weight
        .reparameterization::<QuantizedWeight>()
        .map(|q| &q.matrix)
}

/// `module` with the weights of its linear layers quantized to `ggml_type` and kept in their
/// blocks: those whose input width is a whole number of the type's blocks, and that are not
/// quantized already. For models built in memory (random weights for a benchmark, a model
/// just trained); checkpoints quantize as they load with
/// [`Weights::quantize`](crate::weights::Weights::quantize), which never holds the whole
/// model in f32.
///
/// ```
/// use burn::nn::LinearConfig;
/// use mm_core::gguf::GgmlType;
/// use mm_core::quant::{quantize_linears, quantized_weight};
///
/// let device = mm_core::device::cpu();
/// let layer = LinearConfig::new(64, 8).init(&device);
/// let layer = quantize_linears(layer, GgmlType::Q8_0)?;
/// assert_eq!(quantized_weight(&layer).unwrap().shape(), [8, 64]);
/// # Ok::<(), mm_core::Error>(())
/// ```
pub fn quantize_linears<M: Module>(module: M, ggml_type: GgmlType) -> Result<M> {
    let mut quantized = QuantizedIds::default();
    module.visit(&mut quantized);
    let targets: HashMap<ParamId, [usize; 2]> = linear_weights(&module)
        .into_iter()
        .filter(|(id, _, shape)| {
            shape[1] % ggml_type.block_size() == 0 && !quantized.ids.contains(id)
        })
        .map(|(id, _, shape)| (id, [shape[0], shape[1]]))
        .collect();
    let mut reader = Reader {
        targets,
        matrices: HashMap::new(),
        ggml_type,
        error: None,
    };
    module.visit(&mut reader);
    if let Some(e) = reader.error {
        return Err(e);
    }
    Ok(attach(module, reader.matrices, DType::F32))
}

/// Reads and quantizes the linear weights of [`quantize_linears`].
struct Reader {
    targets: HashMap<ParamId, [usize; 2]>,
    matrices: HashMap<ParamId, QuantizedMatrix>,
    ggml_type: GgmlType,
    error: Option<Error>,
}

impl ModuleVisitor for Reader {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(&[rows, cols]) = self.targets.get(&param.id) else {
            return;
        };
        if self.error.is_some() {
            return;
        }
        // burn's `[in, out]` weight, read as PyTorch's `[out, in]`.
        let values = param.val().transpose().into_data().convert::<f32>();
        let quantized = values
            .as_slice::<f32>()
            .map_err(|e| Error::InvalidInput(format!("a linear weight: {e:?}")))
            .and_then(|v| QuantizedMatrix::quantize(self.ggml_type, [rows, cols], v));
        match quantized {
            Ok(matrix) => {
                self.matrices.insert(param.id, matrix);
            }
            Err(e) => self.error = Some(e),
        }
    }
}

/// The ids of the parameters that carry a [`QuantizedWeight`]: a parameter's
/// reparameterization is visited right after the parameter itself.
#[derive(Default)]
struct QuantizedIds {
    last: Option<ParamId>,
    ids: HashSet<ParamId>,
}

impl ModuleVisitor for QuantizedIds {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        if container_type == "Reparameterization" && name == QuantizedWeight::NAME {
            self.ids.extend(self.last);
        }
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.last = Some(param.id);
    }
}

/// Attaches quantized matrices to the float parameters of the given ids (linear weights,
/// `[in, out]` in burn), replacing their values by the lazily dequantized matrices in
/// `dtype`.
pub(crate) fn attach<M: Module>(
    module: M,
    matrices: HashMap<ParamId, QuantizedMatrix>,
    dtype: DType,
) -> M {
    if matrices.is_empty() {
        return module;
    }
    module.apply_reparameterization(Attach { matrices, dtype })
}

/// The [`Reparameterizer`] of [`attach`].
struct Attach {
    matrices: HashMap<ParamId, QuantizedMatrix>,
    dtype: DType,
}

impl Reparameterizer for Attach {
    type Reparam = QuantizedWeight;

    fn reparameterize<const D: usize>(
        &mut self,
        _path: &str,
        param: Param<Tensor<D>>,
    ) -> (Param<Tensor<D>>, Option<QuantizedWeight>) {
        let Some(matrix) = self.matrices.remove(&param.id).filter(|_| D == 2) else {
            return (param, None);
        };
        let [rows, cols] = matrix.shape();
        let (source, dtype) = (matrix.clone(), self.dtype);
        let init = move |device: &Device, _: bool| {
            let values = TensorData::new(source.dequantize(), [rows, cols]);
            Tensor::<2>::from_data(values, device)
                .transpose()
                .cast(dtype)
                .reshape::<D, _>(Shape::from([cols, rows]))
        };
        let base = Param::uninitialized(
            param.id,
            init,
            param.lazy_device(),
            false,
            Shape::from([cols, rows]),
        );
        (base, Some(QuantizedWeight { matrix }))
    }
}
