//! Half-precision weights with the arithmetic each backend does best.
//!
//! A model loaded with [`Weights::with_dtype`](crate::weights::Weights::with_dtype)`(BF16 |
//! F16)` keeps its matrices — linear and convolution weights, embedding tables: every tensor of
//! rank ≥ 2 — in that dtype, half the memory of f32. Where the backend computes fast in half
//! precision (GPUs), the whole model then runs in it. On the flex CPU backend, whose
//! half-precision matmul is about 9× slower than its f32 one, the model computes in f32
//! instead ([`compute_dtype`]): the small vectors (norm scales, biases) load as f32, and the
//! layer functions here convert each weight on the fly — a linear layer through this crate's
//! blocked half → f32 kernel, which reads every weight once at two bytes.
//!
//! Models call [`linear`], [`conv2d`] and [`embedding`] instead of the layers' own `forward`;
//! with weights and activations of the same dtype they are exactly that `forward`.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use burn_flex::Flex;

use crate::cpu_linear::{self, HalfMatrix};

/// The dtype a model whose weights are stored in `storage` computes in on `device`: f32 on the
/// flex CPU backend (its f32 arithmetic is the fast one), `storage` elsewhere.
pub fn compute_dtype(storage: DType, device: &Device) -> DType {
    if is_half(storage) && *device == Device::flex() {
        DType::F32
    } else {
        storage
    }
}

/// The [`compute_dtype`] of a model whose parameter `weight` is stored as it is.
pub fn compute_dtype_of<const D: usize>(weight: &Tensor<D>) -> DType {
    compute_dtype(weight.dtype(), &weight.device())
}

/// The [`compute_dtype`] of `module`, judged by its first float parameter of rank ≥ 2 (f32
/// when it has none).
pub fn module_compute_dtype<M: Module>(module: &M) -> DType {
    struct First(Option<DType>);
    impl ModuleVisitor for First {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D >= 2 && self.0.is_none() {
                self.0 = Some(compute_dtype_of(&param.val()));
            }
        }
    }
    let mut first = First(None);
    module.visit(&mut first);
    first.0.unwrap_or(DType::F32)
}

/// Whether `dtype` is a 16-bit float.
pub fn is_half(dtype: DType) -> bool {
    matches!(dtype, DType::BF16 | DType::F16)
}

/// `layer.forward(x)` for any weight dtype: `x`'s dtype is the one computed in. f32
/// activations with half weights on the flex backend use the blocked conversion kernel;
/// other mixes cast the weight for the call.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    let weight = layer.weight.val();
    if weight.dtype() == dtype {
        return layer.forward(x);
    }
    let [k, n] = weight.dims();
    let dims = x.dims();
    let m = x.shape().num_elements() / k.max(1);
    let out = matmul(x.reshape([m, k]), weight);
    let out = match &layer.bias {
        Some(bias) => out + bias.val().cast(dtype).unsqueeze(),
        None => out,
    };
    let mut shape = dims;
    shape[D - 1] = n;
    out.reshape(shape)
}

/// `x[m, k] · w[k, n]` in `x`'s dtype, for a weight `w` of any dtype. f32 activations and a
/// half-precision weight on the flex backend — stored `[k, n]`, or `[n, k]` and transposed
/// with [`Tensor::transpose`] (a tied language-model head) — use the blocked conversion
/// kernel; other mixes cast the weight for the call.
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let dtype = x.dtype();
    if w.dtype() == dtype {
        return x.matmul(w);
    }
    let [m, k] = x.dims();
    let [_, n] = w.dims();
    let flex = (dtype == DType::F32 && is_half(w.dtype()))
        .then(|| w.clone().try_into_primitive::<Flex>().ok())
        .flatten();
    let Some((w, start, transposed)) = flex.and_then(|t| {
        let layout = t.layout();
        let (kk, nn) = (k as isize, n as isize);
        let transposed = match layout.strides() {
            [s0, s1] if (*s0, *s1) == (nn, 1) => false,
            [s0, s1] if (*s0, *s1) == (1, kk) => true,
            _ => return None,
        };
        let start = layout.start_offset();
        Some((t, start, transposed))
    }) else {
        return x.matmul(w.cast(dtype));
    };
    let device = x.device();
    let x = x.into_data();
    let x = x.as_slice::<f32>().expect("an f32 tensor");
    let end = start + k * n;
    let half = match w.dtype() {
        DType::BF16 => HalfMatrix::bf16(&w.storage()[start..end], transposed),
        _ => HalfMatrix::f16(&w.storage()[start..end], transposed),
    };
    let out = cpu_linear::matmul(x, m, k, half, n);
    Tensor::from_data(TensorData::new(out, [m, n]), &device)
}

/// `layer.forward(x)` for any weight dtype: with weights in another dtype than `x`, they are
/// cast to `x`'s for the call (one layer at a time, so the f32 copy is transient).
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    if layer.weight.val().dtype() == x.dtype() {
        return layer.forward(x);
    }
    cast_params(layer.clone(), x.dtype()).forward(x)
}

/// The embeddings of `ids` (`[batch, seq]`) in the [`compute_dtype`] of the table's dtype.
pub fn embedding(layer: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    let dtype = compute_dtype_of(&layer.weight.val());
    layer.forward(ids).cast(dtype)
}

/// `module` stored as [`Weights::with_dtype`](crate::weights::Weights::with_dtype) stores a
/// checkpoint: parameters of rank ≥ 2 in `dtype`, the others in its [`compute_dtype`] on the
/// module's device. For models built in memory (random weights for a benchmark, say).
pub fn with_storage_dtype<M: Module>(module: M, dtype: DType) -> M {
    struct Store {
        matrices: DType,
        vectors: DType,
    }
    impl ModuleMapper for Store {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = if D >= 2 { self.matrices } else { self.vectors };
            param.map(|t| t.cast(dtype))
        }
    }
    let device = module
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex);
    let vectors = compute_dtype(dtype, &device);
    module.map(&mut Store {
        matrices: dtype,
        vectors,
    })
}

/// `module` with every float parameter cast to `dtype`.
pub fn cast_params<M: Module>(module: M, dtype: DType) -> M {
    struct Cast(DType);
    impl ModuleMapper for Cast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let dtype = self.0;
            param.map(|t| t.cast(dtype))
        }
    }
    module.map(&mut Cast(dtype))
}
