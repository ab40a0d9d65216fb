//! Half-precision weights with the arithmetic each backend does best.
//!
//! A model loaded with [`Weights::with_dtype`](crate::weights::Weights::with_dtype)`(BF16 |
//! F16)` keeps its matrices — linear and convolution weights, embedding tables: every tensor of
//! rank ≥ 2 — in that dtype, half the memory of f32. Where the backend computes fast in half
//! precision (GPUs), the whole model then runs in it. On the flex CPU backend, whose bf16
//! matmul is 3–6× slower than its f32 one (`benches/linear.rs`), the model computes in f32
//! instead ([`compute_dtype`]): the small vectors (norm scales, biases) load as f32, and the
//! layer functions here convert each weight on the fly — a linear layer through this crate's
//! blocked half → f32 kernel, which reads every weight once at two bytes.
//!
//! Models call [`linear`], [`conv2d`] and [`embedding`] instead of the layers' own `forward`;
//! with weights and activations of the same dtype they are exactly that `forward`.
//!
//! ```no_run
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::{DType, Device, Tensor};
//! use mm_core::precision::{compute_dtype, linear};
//! use mm_core::weights::Weights;
//!
//! # fn main() -> mm_core::Result<()> {
//! let device = Device::flex();
//! // A checkpoint's linear layer, its weight kept in bf16 (half the memory of f32).
//! let weights = Weights::open("layer.safetensors")?.with_dtype(DType::BF16);
//! let layer: Linear = weights.load_into(LinearConfig::new(4096, 4096).init(&device))?;
//! assert_eq!(compute_dtype(DType::BF16, &device), DType::F32); // the CPU computes in f32
//! let y = linear(&layer, Tensor::<2>::ones([1, 4096], &device));
//! assert_eq!(y.dtype(), DType::F32);
//! # Ok(())
//! # }
//! ```

use crate::device::runs_cpu_kernels;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::sync::Arc;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::nn::{Embedding, Linear};
use burn::tensor::{DType, Device, Int, Tensor};
use burn_flex::{Flex, FlexTensor};

use crate::cpu::conv::{self, Weight};
use crate::cpu::linear::{self, HalfMatrix};
use crate::cpu::packed::{Cacheable, WeightCache};
use crate::host::{Values, View};
use crate::quant::quantized_weight;

/// The dtype a model whose weights are stored in `storage` computes in on `device`: f32 on the
/// flex CPU backend (its f32 arithmetic is the fast one), `storage` elsewhere.
pub fn compute_dtype(storage: DType, device: &Device) -> DType {
    if is_half(storage) && *device == Device::flex() {
        DType::F32
    } else {
        storage
    }
}

/// The arithmetic of the matrix products (linear layers, convolutions, attention) on the flex
/// CPU backend, chosen per call with [`autocast`].
///
/// - [`ComputeDtype::F32`] (the default): f32 products, whatever the weights' storage dtype.
/// - [`ComputeDtype::Bf16`]: both operands of each product rounded to bfloat16 (to nearest,
///   ties to even) and the sums kept in f32 — what `torch.autocast("cpu",
///   dtype=torch.bfloat16)` does for PyTorch's linear layers, convolutions and matmuls. On
///   CPUs with AMX (Intel Sapphire Rapids and later) the products run on its tiles, several
///   times f32's multiply-adds per cycle; with AVX512-BF16 alone (AMD Zen 4, Intel Cooper
///   Lake) on `vdpbf16ps`; elsewhere a portable kernel gives the same results (within a
///   rounding of the sums) but no speed-up.
///   Everything else — norms, softmax, activations, residual additions, the one-token decoding
///   products — stays f32. Weights stored in bf16
///   ([`Weights::with_dtype`](crate::weights::Weights::with_dtype)) are used as they are.
///
/// Other backends (and burn's autodiff device) compute as their tensors' dtype says; the
/// setting does not apply there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ComputeDtype {
    /// f32 products.
    #[default]
    F32,
    /// bf16 products with f32 accumulation.
    Bf16,
}

thread_local! {
    static AUTOCAST: Cell<ComputeDtype> = const { Cell::new(ComputeDtype::F32) };
    /// The packed weights of the outermost bf16 scope on this thread.
    static WEIGHTS: RefCell<Option<Arc<WeightCache>>> = const { RefCell::new(None) };
}

/// Runs `f` with the CPU kernels' matrix products in `dtype` (on this thread; the setting
/// before is restored afterwards, also when `f` panics). The pipelines of `mm-diffusion` and
/// `mm-vlm` take a `compute_dtype` option that wraps their model calls in this.
///
/// In bf16, the outermost scope keeps the f32 weights that its linear layers and
/// convolutions pack to bf16 until it ends, as `torch.autocast` keeps its casts: a weight
/// met a second time is packed into the scope's cache and read from there after that, so a
/// denoising loop run in one scope packs no weights from its third step on (a weight used
/// once costs nothing more). It costs the memory of the packed copies (half the f32
/// weights' size) for the length of the scope, and holds each cached weight's tensor alive
/// meanwhile.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Distribution, Tensor};
/// use mm_core::precision::{ComputeDtype, autocast, linear};
///
/// let device = Device::flex();
/// let layer = LinearConfig::new(256, 64).init(&device);
/// let x = Tensor::<2>::random([32, 256], Distribution::Normal(0.0, 1.0), &device);
/// let f32 = linear(&layer, x.clone());
/// let bf16 = autocast(ComputeDtype::Bf16, || linear(&layer, x));
/// // bf16 keeps about 3 significant digits of each operand; the sums are f32.
/// let err: f32 = (f32.clone() - bf16).abs().max().into_scalar();
/// assert!(err < 0.05 * f32.abs().max().into_scalar::<f32>());
/// ```
pub fn autocast<R>(dtype: ComputeDtype, f: impl FnOnce() -> R) -> R {
    let _scope = Autocast::enter(dtype);
    f()
}

/// The scope of an [`autocast`] setting, for code that cannot wrap its work in a closure: the
/// setting holds on this thread until the value is dropped, which restores the one before.
///
/// ```
/// use mm_core::precision::{Autocast, ComputeDtype, autocast_dtype};
///
/// {
///     let _bf16 = Autocast::enter(ComputeDtype::Bf16);
///     assert_eq!(autocast_dtype(), ComputeDtype::Bf16);
/// }
/// assert_eq!(autocast_dtype(), ComputeDtype::F32);
/// ```
#[must_use = "the setting ends when the value is dropped"]
pub struct Autocast {
    before: ComputeDtype,
    /// Set when this scope made the thread's weight cache: the cache before (none).
    cache_before: Option<Option<Arc<WeightCache>>>,
}

impl Autocast {
    /// Sets `dtype` on this thread until the returned value is dropped (the outermost bf16
    /// scope also keeps the packed weights meanwhile: [`autocast`]).
    pub fn enter(dtype: ComputeDtype) -> Self {
        let outermost = dtype == ComputeDtype::Bf16 && WEIGHTS.with_borrow(Option::is_none);
        Self {
            before: AUTOCAST.replace(dtype),
            cache_before: outermost.then(|| WEIGHTS.replace(Some(Arc::default()))),
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        AUTOCAST.set(self.before);
        if let Some(before) = self.cache_before.take() {
            WEIGHTS.set(before);
        }
    }
}

/// The packed weights of this thread's bf16 scope, when its products are bf16.
fn weight_cache() -> Option<Arc<WeightCache>> {
    if autocast_dtype() == ComputeDtype::Bf16 {
        WEIGHTS.with_borrow(Clone::clone)
    } else {
        None
    }
}

/// How far the output of a computation with bf16 products is from the f32 one:
/// [`compute_error`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComputeError {
    /// `max |bf16 − f32| / max |f32|`.
    pub max_relative: f32,
    /// `rms(bf16 − f32) / rms(f32)`.
    pub rms_relative: f32,
}

impl std::fmt::Display for ComputeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "max |Δ| / max |f32| {:.2e}, rms(Δ) / rms(f32) {:.2e}",
            self.max_relative, self.rms_relative
        )
    }
}

/// Runs `output` with f32 and with bf16 products ([`autocast`]) and measures how far apart
/// the two results are: the quality check of [`ComputeDtype::Bf16`] for a model or a layer.
///
/// ```
/// use burn::nn::LinearConfig;
/// use burn::tensor::{Device, Distribution, Tensor};
/// use mm_core::precision::{compute_error, linear};
///
/// let device = Device::flex();
/// let layer = LinearConfig::new(512, 512).init(&device);
/// let x = Tensor::<2>::random([64, 512], Distribution::Normal(0.0, 1.0), &device);
/// let error = compute_error(|| linear(&layer, x.clone()));
/// // Each operand rounded to 8 significant bits: about 2⁻⁹ relative per product.
/// assert!(error.rms_relative < 1e-2, "{error}");
/// ```
pub fn compute_error<const D: usize>(output: impl Fn() -> Tensor<D>) -> ComputeError {
    let reference = autocast(ComputeDtype::F32, &output);
    let rounded = autocast(ComputeDtype::Bf16, &output);
    let rms = |t: Tensor<D>| t.powi_scalar(2).mean().sqrt().into_scalar::<f32>();
    let max = |t: Tensor<D>| t.abs().max().into_scalar::<f32>();
    let diff = rounded - reference.clone();
    ComputeError {
        max_relative: max(diff.clone()) / max(reference.clone()),
        rms_relative: rms(diff) / rms(reference),
    }
}

/// The arithmetic [`autocast`] selected on this thread.
pub fn autocast_dtype() -> ComputeDtype {
    AUTOCAST.get()
}

/// The dtype a parameter of rank `rank` is stored in when a model's weights are kept in
/// `dtype` ([`Weights::with_dtype`](crate::weights::Weights::with_dtype)): matrices (rank ≥ 2)
/// in `dtype`, vectors in its [`compute_dtype`] on `device`.
pub fn storage_dtype(dtype: DType, rank: usize, device: &Device) -> DType {
    if rank >= 2 {
        dtype
    } else {
        compute_dtype(dtype, device)
    }
}

/// The device `module`'s parameters live on (the CPU for a module without parameters).
pub(crate) fn module_device<M: Module>(module: &M) -> Device {
    module
        .devices()
        .into_iter()
        .next()
        .unwrap_or_else(Device::flex)
}

/// The [`compute_dtype`] of a linear layer: f32 for a weight kept quantized
/// ([`crate::quant`]) on the flex backend, read without dequantizing it.
pub fn linear_compute_dtype(layer: &Linear) -> DType {
    match quantized_weight(layer) {
        Some(_) if runs_cpu_kernels(&layer.weight.lazy_device()) => DType::F32,
        _ => compute_dtype_of(&layer.weight.val()),
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
            // A parameter not yet built (a weight kept quantized) is not materialised for this.
            if D >= 2 && self.0.is_none() && param.is_initialized() {
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

/// `layer.forward(x)` for any weight dtype: `x`'s dtype is the one computed in. On the flex
/// backend, f32 weights run one `gemm` straight into a fresh output buffer that holds the bias
/// (2× as fast as `Linear::forward` at the UNet's 8192 × 320 × 2560, whose product copies its
/// output once more to realign it and adds the bias in another pass), and half weights with
/// f32 activations the blocked conversion kernel; other mixes cast the weight for the call.
///
/// A weight kept quantized ([`crate::quant`]) multiplies f32 activations on the flex backend
/// through the quantized kernel ([`QuantizedMatrix::forward`](crate::gguf::QuantizedMatrix::forward));
/// elsewhere it is dequantized once, on first use.
pub fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let dtype = x.dtype();
    if let Some(matrix) = quantized_weight(layer)
        && dtype == DType::F32
        && runs_cpu_kernels(&x.device())
        && let Ok(out) = matrix.forward(x.clone())
    {
        return match &layer.bias {
            Some(bias) => out + bias.val().cast(dtype).unsqueeze(),
            None => out,
        };
    }
    let weight = layer.weight.val();
    if weight.dtype() == dtype {
        if dtype == DType::F32 && runs_cpu_kernels(&x.device()) {
            return linear_f32(layer, x);
        }
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

/// An f32 linear layer on the flex backend through [`f32_product`]; what that does not handle
/// takes `Linear::forward`.
fn linear_f32<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let bias = layer.bias.as_ref().map(|b| b.val());
    let weight = layer.weight.val();
    let owner = owner(weight.clone());
    f32_product(&x, weight, bias, Some(&owner)).unwrap_or_else(|| layer.forward(x))
}

/// The owner of a weight's cache entry ([`Cacheable`]): makes clones of its tensor, which keep
/// the storage the entry's key names alive.
fn owner<T: Clone + Send + Sync + 'static>(weight: T) -> impl Fn() -> Box<dyn Any + Send> + Sync {
    move || Box::new(weight.clone())
}

/// `x[.., k] · w[k, n] (+ bias)` for f32 tensors of the flex device through
/// [`linear::matmul_f32`], reading them where they lie (`w` with any strides, a
/// transposed view included); `None` when `x` or the bias is not contiguous, or a tensor is
/// not an f32 tensor of the flex device. A weight with an `owner` (cloning its tensor) is
/// packed into the scope's cache in bf16 ([`autocast`]).
fn f32_product<const D: usize>(
    x: &Tensor<D>,
    w: Tensor<2>,
    bias: Option<Tensor<1>>,
    owner: Option<&(dyn Fn() -> Box<dyn Any + Send> + Sync)>,
) -> Option<Tensor<D>> {
    let [k, n] = w.dims();
    let input = View::new(x.clone())?;
    let x_values = input.contiguous()?;
    let w = View::<2>::new(w)?;
    let bias = match bias {
        Some(b) => Some(View::<1>::new(b)?),
        None => None,
    };
    let bias = match &bias {
        Some(b) => Some(b.contiguous()?),
        None => None,
    };
    if k == 0 {
        return None;
    }
    let [rs, cs] = w.strides();
    let m = x_values.len() / k;
    let compute = autocast_dtype();
    let cacheable = owner
        .zip(weight_cache())
        .map(|(owner, cache)| Cacheable { cache, owner });
    let weight = linear::F32Weight {
        values: w.data(),
        strides: (rs, cs),
        cacheable,
    };
    let out = linear::matmul_f32(x_values, m, k, weight, n, bias, compute);
    let mut shape = x.dims();
    shape[D - 1] = n;
    Some(Tensor::from_data(out.into_data(shape), &x.device()))
}

/// `x[m, k] · w[k, n]` in `x`'s dtype, for a weight `w` of any dtype. On the flex backend,
/// f32 by f32 runs one `gemm` into a fresh buffer; f32 activations and a half-precision weight
/// — stored `[k, n]`, or `[n, k]` and transposed with [`Tensor::transpose`] (a tied
/// language-model head) — use the blocked conversion kernel; other mixes cast the weight for
/// the call.
pub fn matmul(x: Tensor<2>, w: Tensor<2>) -> Tensor<2> {
    let dtype = x.dtype();
    if w.dtype() == dtype {
        let flex = dtype == DType::F32 && runs_cpu_kernels(&x.device());
        return flex
            .then(|| f32_product(&x, w.clone(), None, None))
            .flatten()
            .unwrap_or_else(|| x.matmul(w));
    }
    let [m, k] = x.dims();
    let [_, n] = w.dims();
    let flex = (dtype == DType::F32 && is_half(w.dtype()) && runs_cpu_kernels(&x.device()))
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
    let x = Values::new(x);
    let x = x.as_slice();
    let end = start + k * n;
    let half = match w.dtype() {
        DType::BF16 => HalfMatrix::bf16(&w.storage()[start..end], transposed),
        _ => HalfMatrix::f16(&w.storage()[start..end], transposed),
    };
    let out = linear::matmul(x, m, k, half, n, autocast_dtype());
    Tensor::from_data(out.into_data([m, n]), &device)
}

/// `layer.forward(x)` for any weight dtype: with weights in another dtype than `x`, they are
/// cast to `x`'s for the call (one layer at a time, so the f32 copy is transient). f32
/// convolutions with stride 1 (symmetric padding, no dilation or groups) on the flex backend,
/// and in bf16 products ([`ComputeDtype::Bf16`]) those with equal strides too, use this
/// crate's implicit-GEMM kernel (1.15–1.27× as fast as burn-flex's at Stable
/// Diffusion's 3×3 shapes, `benches/conv.rs`; 1×1 kernels as one product per image, as fast
/// as burn-flex's, into a recycled buffer, see [`crate::memory`]).
pub fn conv2d(layer: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let dtype = x.dtype();
    if dtype == DType::F32
        && let Some(padding) = cpu_conv_padding(layer, &x)
        && let Some((weight, range)) = cpu_conv_weight(layer)
    {
        return cpu_conv(layer, (&weight, range), x, padding);
    }
    if layer.weight.val().dtype() == dtype {
        layer.forward(x)
    } else {
        cast_params(layer.clone(), dtype).forward(x)
    }
}

/// The `(ph, pw)` padding when the CPU kernel handles `layer`'s convolution of `x` (never
/// for an `x` on the autodiff device: its gradient must flow).
fn cpu_conv_padding(layer: &Conv2d, x: &Tensor<4>) -> Option<(usize, usize)> {
    let [kh, kw] = layer.kernel_size;
    // Strides above 1 in bf16 products only.
    let [sy, sx] = layer.stride;
    let strided = sy != 1 && autocast_dtype() == ComputeDtype::Bf16;
    if !runs_cpu_kernels(&x.device())
        || sy != sx
        || (sy != 1 && !strided)
        || layer.dilation != [1, 1]
        || layer.groups != 1
    {
        return None;
    }
    let (ph, pw) = match layer.padding {
        PaddingConfig2d::Valid => (0, 0),
        PaddingConfig2d::Same if kh % 2 == 1 && kw % 2 == 1 => (kh / 2, kw / 2),
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => (t, l),
        _ => return None,
    };
    let [_, _, h, w] = x.dims();
    (h + 2 * ph >= kh && w + 2 * pw >= kw).then_some((ph, pw))
}

/// The weight as a contiguous float flex tensor, with the range of its storage holding it.
fn cpu_conv_weight(layer: &Conv2d) -> Option<(FlexTensor, Range<usize>)> {
    let w = layer.weight.val().try_into_primitive::<Flex>().ok()?;
    let float = matches!(w.dtype(), DType::F32 | DType::BF16 | DType::F16);
    let (start, end) = w.layout().contiguous_offsets().filter(|_| float)?;
    Some((w, start..end))
}

/// The convolution through [`cpu_conv`](crate::cpu::conv); `w` and `range` come from
/// [`cpu_conv_weight`].
fn cpu_conv(
    layer: &Conv2d,
    (w, range): (&FlexTensor, Range<usize>),
    x: Tensor<4>,
    (ph, pw): (usize, usize),
) -> Tensor<4> {
    let weight = match w.dtype() {
        DType::BF16 => Weight::Half(HalfMatrix::bf16(&w.storage()[range], false)),
        DType::F16 => Weight::Half(HalfMatrix::f16(&w.storage()[range], false)),
        _ => Weight::F32(&w.storage::<f32>()[range]),
    };
    let [batch, c, h, width] = x.dims();
    let [o, _, kh, kw] = layer.weight.dims();
    let bias = layer
        .bias
        .as_ref()
        .map(|b| b.val().cast(DType::F32).into_data());
    let device = x.device();
    let data = Values::new(x);
    let owner = owner(w.clone());
    let conv = conv::Conv {
        x: data.as_slice(),
        weight,
        bias: bias
            .as_ref()
            .map(|b| b.as_slice::<f32>().expect("an f32 bias")),
        batch,
        c,
        h,
        w: width,
        o,
        kh,
        kw,
        ph,
        pw,
        stride: layer.stride[0],
        compute: autocast_dtype(),
        cacheable: weight_cache().map(|cache| Cacheable {
            cache,
            owner: &owner,
        }),
    };
    let (ho, wo) = conv.out_size();
    let out = conv::conv2d(&conv);
    Tensor::from_data(out.into_data([batch, o, ho, wo]), &device)
}

/// The embeddings of `ids` (`[batch, seq]`) in the [`compute_dtype`] of the table's dtype.
pub fn embedding(layer: &Embedding, ids: Tensor<2, Int>) -> Tensor<3> {
    let dtype = compute_dtype_of(&layer.weight.val());
    layer.forward(ids).cast(dtype)
}

/// `module` stored as [`Weights::with_dtype`](crate::weights::Weights::with_dtype) stores a
/// checkpoint ([`storage_dtype`]): parameters of rank ≥ 2 in `dtype`, the others in its
/// [`compute_dtype`] on the module's device. For models built in memory (random weights for a
/// benchmark, say).
pub fn with_storage_dtype<M: Module>(module: M, dtype: DType) -> M {
    let device = module_device(&module);
    module.map(&mut CastByRank {
        matrices: storage_dtype(dtype, 2, &device),
        vectors: storage_dtype(dtype, 1, &device),
    })
}

/// `module` with every float parameter cast to `dtype`.
pub fn cast_params<M: Module>(module: M, dtype: DType) -> M {
    module.map(&mut CastByRank {
        matrices: dtype,
        vectors: dtype,
    })
}

/// Casts float parameters of rank ≥ 2 to `matrices` and the others to `vectors`.
struct CastByRank {
    matrices: DType,
    vectors: DType,
}

impl ModuleMapper for CastByRank {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = if D >= 2 { self.matrices } else { self.vectors };
        param.map(|t| t.cast(dtype))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::LinearConfig;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::Distribution;

    fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
        (a - b).abs().max().into_scalar::<f32>()
    }

    /// The outermost bf16 scope keeps the packed weights: the calls after the first give the
    /// results of a fresh scope, each layer's weight its own, an f32 scope inside computes in
    /// f32, and the cache ends with the scope.
    #[test]
    fn bf16_scope_keeps_packed_weights() {
        let device = Device::flex();
        let layer = LinearConfig::new(64, 48).init(&device);
        let other = LinearConfig::new(64, 48).init(&device);
        let conv = Conv2dConfig::new([8, 8], [3, 3])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .init(&device);
        let x = Tensor::<2>::random([32, 64], Distribution::Normal(0.0, 1.0), &device);
        let image = Tensor::<4>::random([2, 8, 9, 9], Distribution::Normal(0.0, 1.0), &device);
        let fresh = |f: &dyn Fn() -> Tensor<2>| autocast(ComputeDtype::Bf16, f);
        let (once, other_once) = (
            fresh(&|| linear(&layer, x.clone())),
            fresh(&|| linear(&other, x.clone())),
        );
        let conv_once = autocast(ComputeDtype::Bf16, || conv2d(&conv, image.clone()));
        let f32 = linear(&layer, x.clone());
        {
            let _scope = Autocast::enter(ComputeDtype::Bf16);
            assert!(weight_cache().is_some());
            // Met once, twice (packed into the cache), then taken from it.
            for _ in 0..3 {
                assert_eq!(max_diff(linear(&layer, x.clone()), once.clone()), 0.0);
                assert_eq!(max_diff(linear(&other, x.clone()), other_once.clone()), 0.0);
                assert_eq!(
                    max_diff(conv2d(&conv, image.clone()), conv_once.clone()),
                    0.0
                );
                let inner = autocast(ComputeDtype::F32, || linear(&layer, x.clone()));
                assert_eq!(max_diff(inner, f32.clone()), 0.0);
            }
            assert!(max_diff(once.clone(), f32.clone()) > 0.0, "bf16 rounds");
        }
        assert!(weight_cache().is_none());
        assert!(
            WEIGHTS.with_borrow(Option::is_none),
            "the scope's cache is dropped"
        );
    }

    /// The CPU convolution kernel (and the fallback for what it does not handle) agrees with
    /// burn's `Conv2d::forward`, for f32 and half-precision weights, and in bf16 products
    /// (strides of 2 included) with burn's on the bf16-rounded input and weight.
    #[test]
    fn conv2d_agrees_with_burn() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 5, 9, 7], Distribution::Normal(0.0, 1.0), &device);
        for (kernel, stride, padding) in [
            ([3, 3], [1, 1], PaddingConfig2d::Explicit(1, 1, 1, 1)),
            ([1, 1], [1, 1], PaddingConfig2d::Valid),
            ([3, 3], [1, 1], PaddingConfig2d::Same),
            ([3, 3], [1, 1], PaddingConfig2d::Valid),
            // burn's path in f32, this crate's in bf16 products
            ([3, 3], [2, 2], PaddingConfig2d::Explicit(1, 1, 1, 1)),
        ] {
            let layer = Conv2dConfig::new([5, 6], kernel)
                .with_stride(stride)
                .with_padding(padding.clone())
                .init(&device);
            let want = layer.forward(x.clone());
            let err = max_diff(conv2d(&layer, x.clone()), want);
            assert!(err < 1e-5, "{kernel:?} {stride:?} {padding:?}: {err}");
            for dtype in [DType::BF16, DType::F16] {
                let half = cast_params(layer.clone(), dtype);
                let want = cast_params(half.clone(), DType::F32).forward(x.clone());
                let err = max_diff(conv2d(&half, x.clone()), want);
                assert!(err < 1e-5, "{dtype:?} {kernel:?} {stride:?}: {err}");
            }
            // The weight rounded, the bias not (the products add it in f32).
            let rounded = cast_params(with_storage_dtype(layer.clone(), DType::BF16), DType::F32);
            let want = rounded.forward(x.clone().cast(DType::BF16).cast(DType::F32));
            let got = autocast(ComputeDtype::Bf16, || conv2d(&layer, x.clone()));
            let err = max_diff(got, want);
            assert!(
                err < 1e-5,
                "bf16 products {kernel:?} {stride:?} {padding:?}: {err}"
            );
        }
    }

    /// The f32 linear kernel agrees with `Linear::forward` (and `matmul` with burn's): with and
    /// without a bias, with more and with fewer rows than columns, on a shared input (read in place), a strided one (burn's path), one
    /// row, and a weight that is a transposed view of `[out, in]` storage (as PyTorch
    /// checkpoints hold it).
    #[test]
    fn f32_linear_agrees_with_burn() {
        let device = Device::flex();
        // More rows than columns (gemm's own threading), and fewer (columns split between
        // the threads, 75 not a multiple of the 16-column alignment).
        for (bias, out, rows) in [
            (true, 40, 70),
            (false, 40, 70),
            (true, 75, 20),
            (false, 75, 20),
        ] {
            let mut layer = LinearConfig::new(48, out).with_bias(bias).init(&device);
            let x = Tensor::<3>::random([2, rows, 48], Distribution::Normal(0.0, 1.0), &device);
            let strided = x.clone().swap_dims(0, 1);
            let one = x.clone().narrow(1, 0, 1);
            for x in [x.clone(), strided, one] {
                let want = layer.forward(x.clone());
                assert!(
                    max_diff(linear(&layer, x.clone()), want) < 1e-5,
                    "bias={bias}"
                );
            }
            let stored =
                Tensor::<2>::from_data(layer.weight.val().transpose().into_data(), &device);
            layer.weight = Param::from_tensor(stored.transpose());
            let want = layer.forward(x.clone());
            let err = max_diff(linear(&layer, x.clone()), want);
            assert!(err < 1e-5, "bias={bias}, transposed");
            // matmul: the same kernel without a bias.
            let (x2, w) = (x.reshape([2 * rows, 48]), layer.weight.val());
            let want = x2.clone().matmul(w.clone());
            assert!(max_diff(matmul(x2, w), want) < 1e-5, "matmul");
        }
    }

    /// Half-precision linear weights, stored `[in, out]` or used transposed, give what the
    /// f32 product of the same rounded weights gives.
    #[test]
    fn linear_and_matmul_with_half_weights() {
        let device = Device::flex();
        let layer = LinearConfig::new(48, 40).init(&device);
        for rows in [1, 3, 70] {
            let x = Tensor::<3>::random([1, rows, 48], Distribution::Normal(0.0, 1.0), &device);
            for dtype in [DType::BF16, DType::F16] {
                let half = with_storage_dtype(layer.clone(), dtype);
                assert_eq!(half.weight.val().dtype(), dtype);
                let want = cast_params(half.clone(), DType::F32).forward(x.clone());
                assert!(max_diff(linear(&half, x.clone()), want) < 1e-5);
                let w_t = half.weight.val().transpose(); // [out, in] viewed transposed
                let stored =
                    Tensor::<2>::from_data(w_t.clone().cast(DType::F32).into_data(), &device);
                let w = stored.cast(dtype).transpose();
                let x2 = x.clone().reshape([rows, 48]);
                let want = x2.clone().matmul(w.clone().cast(DType::F32));
                assert!(max_diff(matmul(x2, w), want) < 1e-5);
            }
        }
    }
}
