//! Building blocks shared by several models: activations named as in HF configs, and
//! multi-head attention on top of burn's fused attention kernel.

use crate::device::runs_cpu_kernels;
use burn::config::Config;
use burn::module::{Module, Param};
use burn::nn::{GroupNorm, Initializer};
use burn::tensor::activation;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Bool, DType, Device, Int, Tensor};

use crate::cpu::{self, activation::Kind};
use serde::{Deserialize, Serialize};

/// The activation functions named by the `hidden_act` field of Hugging Face configs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    /// Exact (erf) GELU: `gelu`.
    #[default]
    #[serde(rename = "gelu")]
    Gelu,
    /// tanh-approximated GELU: `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`.
    #[serde(alias = "gelu_new", alias = "gelu_fast", rename = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `x * sigmoid(1.702 x)`, as in OpenAI CLIP: `quick_gelu`.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// `relu`.
    #[serde(rename = "relu")]
    Relu,
    /// `silu` / `swish`.
    #[serde(alias = "swish", rename = "silu")]
    Silu,
}

impl Activation {
    /// Applies the activation.
    ///
    /// f32 tensors on the flex CPU backend go through vectorised, multi-threaded kernels (4–5×
    /// burn-flex's element-at-a-time `silu` / `gelu` / `sigmoid`, `benches/elementwise.rs`), in
    /// place when the tensor owns its storage alone.
    pub fn forward<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if let Some(kind) = self.kind()
            && cpu::activation::supports(&x)
        {
            return cpu::activation::apply(x, kind);
        }
        match self {
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::QuickGelu => quick_gelu(x),
            Activation::Relu => activation::relu(x),
            Activation::Silu => activation::silu(x),
        }
    }

    /// The vectorised CPU kernel of this activation (none for `relu`, which burn-flex runs fast).
    fn kind(self) -> Option<Kind> {
        match self {
            Activation::Gelu => Some(Kind::Gelu),
            Activation::GeluTanh => Some(Kind::GeluTanh),
            Activation::QuickGelu => Some(Kind::QuickGelu),
            Activation::Silu => Some(Kind::Silu),
            Activation::Relu => None,
        }
    }
}

/// `act(norm(x))` for a group norm over axis 1 of `x` (`[batch, channels, ..]`), as the
/// resnet blocks of diffusion models apply it. f32 tensors on the flex CPU backend take one
/// fused pass per group (about 5× burn's chain of tensor operations followed by `silu` on a
/// `[2, 320, 64, 64]` map, `benches/elementwise.rs`), in place when the tensor owns its storage
/// alone; other tensors take `GroupNorm::forward`.
pub fn group_norm<const D: usize>(
    norm: &GroupNorm,
    x: Tensor<D>,
    act: Option<Activation>,
) -> Tensor<D> {
    let kind = act.and_then(Activation::kind);
    let (y, activated) = if cpu::activation::supports(&x) && D > 2 {
        // The affine parameters as host values: read only here, where the kernel runs on the
        // CPU (on a GPU device this would be a read-back per call).
        let values = |p: &Option<Param<Tensor<1>>>| {
            p.as_ref().and_then(|p| {
                p.val()
                    .cast(DType::F32)
                    .into_data()
                    .try_into_vec::<f32>()
                    .ok()
            })
        };
        let (gamma, beta) = (values(&norm.gamma), values(&norm.beta));
        let p = cpu::norm::GroupNorm {
            groups: norm.num_groups,
            gamma: gamma.as_deref(),
            beta: beta.as_deref(),
            epsilon: norm.epsilon,
            act: kind,
        };
        (cpu::norm::group_norm(x, &p), kind.is_some())
    } else {
        (norm.forward(x), false)
    };
    match act {
        Some(act) if !activated => act.forward(y),
        _ => y,
    }
}

/// Layer normalisation over the last axis with a learned scale and shift, as
/// `torch.nn.LayerNorm`: burn's `LayerNorm` with the same parameters (`gamma` and `beta`,
/// the checkpoints' `weight` and `bias`) and the same results, whose `forward` runs one fused
/// pass per row on f32 tensors of the flex CPU backend (burn-flex's zero-fills its output on
/// one thread first).
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use mm_core::nn::LayerNormConfig;
///
/// let device = Device::flex();
/// let norm = LayerNormConfig::new(4).with_epsilon(1e-6).init(&device);
/// let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 4.0]], &device);
/// let y: Vec<f32> = norm.forward(x).into_data().to_vec().unwrap();
/// assert!((y[0] + 1.3416).abs() < 1e-3 && (y[3] - 1.3416).abs() < 1e-3);
/// ```
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// The scale (`weight` in checkpoints).
    pub gamma: Param<Tensor<1>>,
    /// The shift (`bias`), if the layer has one.
    pub beta: Option<Param<Tensor<1>>>,
    /// Added to the variance.
    pub epsilon: f64,
}

/// The configuration of a [`LayerNorm`], as burn's `LayerNormConfig`.
#[derive(Config, Debug)]
pub struct LayerNormConfig {
    /// The size of the last axis.
    pub d_model: usize,
    /// Added to the variance.
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Whether the layer has a shift (`beta`).
    #[config(default = true)]
    pub bias: bool,
}

impl LayerNormConfig {
    /// The layer with a unit scale and a zero shift.
    pub fn init(&self, device: &Device) -> LayerNorm {
        LayerNorm {
            gamma: Initializer::Ones.init([self.d_model], device),
            beta: self
                .bias
                .then(|| Initializer::Zeros.init([self.d_model], device)),
            epsilon: self.epsilon,
        }
    }
}

impl LayerNorm {
    /// `(x - mean) / sqrt(var + epsilon) · gamma + beta` over the last axis of `x`.
    ///
    /// # Panics
    ///
    /// When the last axis of `x` is not the layer's size.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let gamma = self.gamma.val();
        let [width] = gamma.dims();
        assert_eq!(x.dims()[D - 1], width, "the last axis is the layer's size");
        let beta = self.beta.as_ref().map(|b| b.val());
        if cpu::activation::supports(&x) {
            let values = |t: Tensor<1>| t.cast(DType::F32).into_data().try_into_vec::<f32>();
            let gamma = values(gamma).expect("f32 values");
            let beta = match beta {
                Some(beta) => values(beta).expect("f32 values"),
                None => vec![0.0; width],
            };
            return cpu::norm::layer_norm(x, &gamma, &beta, self.epsilon);
        }
        // As burn's: f16 inputs widened to f32 for the sums.
        let dtype = x.dtype();
        let wide = if dtype == DType::F16 {
            DType::F32
        } else {
            dtype
        };
        let y = burn::tensor::module::layer_norm(
            x.cast(wide),
            gamma.cast(wide),
            beta.map(|b| b.cast(wide)),
            self.epsilon,
        );
        y.cast(dtype)
    }
}

/// Layer normalisation over the last axis without affine parameters (PyTorch's
/// `nn.LayerNorm(dim, elementwise_affine=False)`, as the diffusion transformers' adaptive norms
/// use it): `(x - mean) / sqrt(var + epsilon)` per row. f32 tensors on the flex CPU backend take
/// [`LayerNorm`]'s kernel with a unit scale and no shift.
///
/// ```
/// use burn::tensor::{Device, Tensor};
/// use mm_core::nn::layer_norm;
///
/// let x = Tensor::<2>::from_floats([[1.0, 2.0, 3.0, 4.0]], &Device::flex());
/// let y: Vec<f32> = layer_norm(x, 1e-6).into_data().to_vec().unwrap();
/// assert!((y[0] + 1.3416).abs() < 1e-3 && (y[3] - 1.3416).abs() < 1e-3);
/// ```
pub fn layer_norm<const D: usize>(x: Tensor<D>, epsilon: f64) -> Tensor<D> {
    let width = x.dims()[D - 1];
    if cpu::activation::supports(&x) {
        let (ones, zeros) = (vec![1.0; width], vec![0.0; width]);
        return cpu::norm::layer_norm(x, &ones, &zeros, epsilon);
    }
    let centered = x.clone() - x.mean_dim(D - 1);
    let var = centered.clone().powi_scalar(2).mean_dim(D - 1);
    centered / (var + epsilon).sqrt()
}

/// diffusers' GEGLU gate on `[.., 2·n]`: the first half of the last axis times the exact GELU
/// of the second half, as `[.., n]` (one fused pass for f32 tensors on the flex backend).
pub fn geglu<const D: usize>(h: Tensor<D>) -> Tensor<D> {
    if cpu::activation::supports(&h) {
        return cpu::activation::geglu(h);
    }
    let n = h.dims()[D - 1] / 2;
    h.clone().narrow(D - 1, 0, n) * activation::gelu(h.narrow(D - 1, n, n))
}

/// `x * sigmoid(1.702 x)`.
pub fn quick_gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.clone() * activation::sigmoid(x * 1.702)
}

/// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
pub fn gelu_tanh<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let inner =
        (x.clone() + x.clone().powi_scalar(3) * 0.044715) * (2.0 / std::f64::consts::PI).sqrt();
    x * (inner.tanh() + 1.0) * 0.5
}

/// Splits `[batch, seq, heads * head_dim]` into `[batch, heads, seq, head_dim]`.
///
/// # Panics
///
/// When `heads` is 0 or does not divide the last dimension. The models of this workspace
/// validate their configs on load ([`crate::config::Checks::heads`]), so a config cannot
/// bring them here with such sizes.
pub fn split_heads(x: Tensor<3>, heads: usize) -> Tensor<4> {
    let [b, s, d] = x.dims();
    x.reshape([b, s, heads, d / heads]).swap_dims(1, 2)
}

/// Merges `[batch, heads, seq, head_dim]` back into `[batch, seq, heads * head_dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}

/// Scaled dot-product attention over `[batch, heads, seq, head_dim]` tensors. `key_padding`
/// (`[batch, seq_k]`, true = ignore that key) and `causal` combine; a query with no visible key
/// gets zeros.
///
/// f32 tensors on the flex CPU backend go through this crate's kernel: query blocks in
/// parallel, a vectorised softmax, the heads of `split_heads` views read in place and the
/// result laid out so that [`merge_heads`] needs no copy (measured against burn-flex's kernel:
/// 2.2× as fast at 1,024 tokens × 80 dims, 1.5× at 4,096 queries × 77 keys, 1.2× at CLIP's
/// 50 or 77 tokens, `benches/attention.rs`). Other dtypes and backends take burn's fused
/// `module::attention`.
pub fn scaled_dot_product_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_padding: Option<Tensor<2, Bool>>,
    causal: bool,
) -> Tensor<4> {
    let device = q.device();
    let (sk, d) = (k.dims()[2], k.dims()[3]);
    let f32s = [q.dtype(), k.dtype(), v.dtype()] == [DType::F32; 3];
    if f32s && sk > 0 && d > 0 && runs_cpu_kernels(&device) {
        let padding = key_padding.map(|m| {
            let ids: Vec<i64> = m.int().into_data().try_into_vec_as().expect("integer mask");
            ids.into_iter().map(|x| x != 0).collect::<Vec<bool>>()
        });
        return cpu::attention::attention_tensors(q, k, v, padding.as_deref(), causal);
    }
    let [b, h, sq, _] = q.dims();
    let mask = key_padding.map(|m| m.reshape([b, 1, 1, sk]).expand([b, h, sq, sk]));
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    attention(q, k, v, mask, None, options)
}

/// Grouped-query attention, as a decoder with a key/value cache runs it: `q` is `[batch,
/// heads, seq_q, head_dim]`, `k` and `v` are `[batch, kv_heads, seq_k, head_dim]` where
/// `kv_heads` divides `heads` and key head `g` serves query heads `g·rep .. (g+1)·rep`
/// (`rep = heads / kv_heads`; 1 for plain multi-head attention). `mask` is `[batch, 1, seq_q,
/// seq_k]` (true = hidden); `causal` as in burn's `module::attention`.
///
/// A decoding step (one query) with f32 tensors on the flex backend reads the keys and values
/// where they lie — a prefix view of a cache buffer is not copied — with no repetition of the
/// shared heads; other cases run burn's fused `module::attention` (the key heads repeated
/// `rep` times, except for one query, where each group's queries become the rows of its key
/// head).
///
/// ```
/// use burn::tensor::{Device, Distribution, Tensor};
/// use mm_core::nn::grouped_attention;
///
/// let device = Device::flex();
/// let q = Tensor::<4>::random([1, 8, 1, 16], Distribution::Default, &device);
/// let kv = Tensor::<4>::random([1, 2, 5, 16], Distribution::Default, &device);
/// let out = grouped_attention(q, kv.clone(), kv, None, false);
/// assert_eq!(out.dims(), [1, 8, 1, 16]);
/// ```
pub fn grouped_attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    mask: Option<Tensor<4, Bool>>,
    causal: bool,
) -> Tensor<4> {
    let [b, h, sq, d] = q.dims();
    let [_, kv_heads, sk, dv] = v.dims();
    let rep = h / kv_heads;
    let f32s = [q.dtype(), k.dtype(), v.dtype()] == [DType::F32; 3];
    let per_batch = mask.as_ref().is_none_or(|m| m.dims()[1] == 1);
    if sq == 1 && f32s && per_batch && runs_cpu_kernels(&q.device()) {
        let hidden = mask.clone().map(|m| {
            let m = m.reshape([b, sk]).int().into_data();
            let m: Vec<i64> = m.try_into_vec_as().expect("integer mask");
            m.into_iter().map(|x| x != 0).collect::<Vec<bool>>()
        });
        let out =
            cpu::attention::decode_tensors(q.clone(), k.clone(), v.clone(), hidden.as_deref());
        if let Some(out) = out {
            return out;
        }
    }
    let options = AttentionModuleOptions {
        scale: None,
        softcap: None,
        is_causal: causal,
    };
    if sq == 1 && rep > 1 {
        // The `rep` query heads sharing a key head are that head's query rows.
        let q = q.reshape([b, kv_heads, rep, d]);
        let mask = mask.map(|m| m.expand([b, kv_heads, rep, sk]));
        return attention(q, k, v, mask, None, options).reshape([b, h, 1, dv]);
    }
    let repeat = |x: Tensor<4>| {
        let [_, _, s, dx] = x.dims();
        x.unsqueeze_dim::<5>(2)
            .expand([b, kv_heads, rep, s, dx])
            .reshape([b, h, s, dx])
    };
    let (k, v) = if rep > 1 {
        (repeat(k), repeat(v))
    } else {
        (k, v)
    };
    let mask = mask.map(|m| m.expand([b, h, sq, sk]));
    attention(q, k, v, mask, None, options)
}

/// Turns an HF `attention_mask` (`[batch, seq]`, 1 = token, 0 = padding) into the key padding
/// mask [`scaled_dot_product_attention`] takes (true = padding).
pub fn padding_mask(attention_mask: Tensor<2, Int>) -> Tensor<2, Bool> {
    attention_mask.equal_elem(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Distribution};

    /// The CPU kernel must agree with burn's fused kernel, padding and causal masks included,
    /// on contiguous tensors and on the strided views `split_heads` makes (read in place), its
    /// result merged back by `merge_heads`.
    #[test]
    fn cpu_kernel_agrees_with_burn() {
        // 2,085 keys: the kernel transposes the keys first (from 2,048).
        for (b, h, sq, sk, d) in [(2, 3, 40, 549, 16), (1, 2, 9, 2085, 8), (2, 2, 5, 7, 4)] {
            agrees_with_burn(b, h, sq, sk, d);
        }
    }

    fn agrees_with_burn(b: usize, h: usize, sq: usize, sk: usize, d: usize) {
        let device = Device::flex();
        let rand =
            |s: usize| Tensor::<4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
        let (q, k, v) = (rand(sq), rand(sk), rand(sk));
        let padding = Tensor::<2, Int>::from_data(
            burn::tensor::TensorData::new(
                (0..b * sk)
                    .map(|i| i64::from(i % 7 == 3))
                    .collect::<Vec<_>>(),
                [b, sk],
            ),
            &device,
        )
        .equal_elem(1);
        // The same values as split_heads views of [b, s, h·d] tensors.
        let split = |t: &Tensor<4>| split_heads(merge_heads(t.clone()), h);
        for (causal, views) in [(false, false), (true, false), (false, true), (true, true)] {
            let (qv, kv, vv) = if views {
                (split(&q), split(&k), split(&v))
            } else {
                (q.clone(), k.clone(), v.clone())
            };
            let ours = scaled_dot_product_attention(qv, kv, vv, Some(padding.clone()), causal);
            let ours = split_heads(merge_heads(ours), h);
            let mask = padding
                .clone()
                .reshape([b, 1, 1, sk])
                .expand([b, h, sq, sk]);
            let options = AttentionModuleOptions {
                scale: None,
                softcap: None,
                is_causal: causal,
            };
            let theirs = attention(q.clone(), k.clone(), v.clone(), Some(mask), None, options);
            let diff = (ours - theirs).abs().max().into_scalar::<f32>();
            assert!(
                diff < 1e-5,
                "{sk} keys, causal={causal} views={views}: {diff}"
            );
        }
    }

    /// One query per head over a strided prefix view of a larger key/value buffer, with
    /// grouped heads and a per-batch mask: the in-place kernel must agree with burn's fused
    /// kernel on repeated, contiguous keys and values.
    #[test]
    fn grouped_decoding_agrees_with_burn() {
        let device = Device::flex();
        let (b, h, kv_heads, sk, d) = (2, 8, 2, 37, 16);
        let rand =
            |dims: [usize; 4]| Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let q = rand([b, h, 1, d]);
        let (kb, vb) = (rand([b, kv_heads, 50, d]), rand([b, kv_heads, 50, d]));
        let (k, v) = (
            kb.slice(burn::tensor::s![.., .., 0..sk]),
            vb.slice(burn::tensor::s![.., .., 0..sk]),
        );
        let hidden: Vec<bool> = (0..b * sk).map(|i| i % 5 == 2).collect();
        let mask = Tensor::<4, Bool>::from_data(
            burn::tensor::TensorData::new(hidden, [b, 1, 1, sk]),
            &device,
        );
        let kernel = cpu::attention::decode_tensors(q.clone(), k.clone(), v.clone(), None);
        assert!(kernel.is_some(), "strided f32 views go through the kernel");
        let rep = h / kv_heads;
        let repeat = |x: Tensor<4>| {
            x.unsqueeze_dim::<5>(2)
                .expand([b, kv_heads, rep, sk, d])
                .reshape([b, h, sk, d])
        };
        let options = AttentionModuleOptions {
            scale: None,
            softcap: None,
            is_causal: false,
        };
        for mask in [None, Some(mask)] {
            let ours = grouped_attention(q.clone(), k.clone(), v.clone(), mask.clone(), false);
            let theirs = attention(
                q.clone(),
                repeat(k.clone()),
                repeat(v.clone()),
                mask.map(|m| m.expand([b, h, 1, sk])),
                None,
                options,
            );
            let diff = (ours - theirs).abs().max().into_scalar::<f32>();
            assert!(diff < 1e-5, "{diff}");
        }
    }

    /// [`LayerNorm`] against burn's `LayerNorm` with the same parameters, with and without a
    /// shift, on a strided view (copied first) and on a contiguous tensor, and in f16 (burn's
    /// path, widened for the sums).
    #[test]
    fn layer_norm_agrees_with_burn() {
        let device = Device::flex();
        let x = Tensor::<3>::random([3, 70, 40], Distribution::Normal(0.5, 2.0), &device);
        let random = |mean| Tensor::random([40], Distribution::Normal(mean, 0.5), &device);
        for bias in [true, false] {
            let config = LayerNormConfig::new(40).with_bias(bias).with_epsilon(1e-6);
            let mut ours = config.init(&device);
            ours.gamma = Param::from_tensor(random(1.0));
            ours.beta = bias.then(|| Param::from_tensor(random(0.0)));
            let mut burns = burn::nn::LayerNormConfig::new(40)
                .with_bias(bias)
                .with_epsilon(1e-6)
                .init(&device);
            burns.gamma = ours.gamma.clone();
            burns.beta = ours.beta.clone();
            for x in [x.clone(), x.clone().swap_dims(0, 1)] {
                let want = burns.forward(x.clone());
                let diff = (ours.forward(x) - want).abs().max().into_scalar::<f32>();
                assert!(diff < 1e-5, "bias={bias}: {diff}");
            }
            let half = |t: Tensor<3>| t.cast(DType::F16);
            let f16 = ours.forward(half(x.clone())).cast(DType::F32);
            let want = burns.forward(half(x.clone())).cast(DType::F32);
            assert!((f16 - want).abs().max().into_scalar::<f32>() < 1e-2);
        }
    }

    /// The fused group norm (+ activation) against burn's `GroupNorm` followed by the
    /// activation, on an owned and on a shared tensor, with and without the affine parameters.
    #[test]
    fn group_norm_agrees_with_burn() {
        let device = Device::flex();
        let x = Tensor::<4>::random([2, 12, 5, 7], Distribution::Normal(0.5, 2.0), &device);
        for affine in [true, false] {
            let mut norm = burn::nn::GroupNormConfig::new(3, 12)
                .with_affine(affine)
                .init(&device);
            if affine {
                norm.gamma = Some(Param::from_tensor(Tensor::random(
                    [12],
                    Distribution::Normal(1.0, 0.5),
                    &device,
                )));
                norm.beta = Some(Param::from_tensor(Tensor::random(
                    [12],
                    Distribution::Normal(0.0, 0.5),
                    &device,
                )));
            }
            for act in [None, Some(Activation::Silu), Some(Activation::Relu)] {
                let plain = norm.forward(x.clone());
                let want = act.map_or(plain.clone(), |a| match a {
                    Activation::Relu => activation::relu(plain.clone()),
                    _ => activation::silu(plain.clone()),
                });
                let shared = group_norm(&norm, x.clone(), act);
                let owned = group_norm(&norm, Tensor::from_data(x.to_data(), &device), act);
                for ours in [shared, owned] {
                    let diff = (ours - want.clone()).abs().max().into_scalar::<f32>();
                    assert!(diff < 1e-5, "affine={affine} {act:?}: {diff}");
                }
            }
        }
    }
}
