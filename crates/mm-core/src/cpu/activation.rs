//! Element-wise activations of f32 tensors on the flex CPU backend, vectorised (compiled for
//! AVX-512 and AVX2+FMA, picked at run time) and split across threads.
//!
//! burn-flex evaluates `sigmoid`, `silu` and `gelu` one element at a time with the C library's
//! `expf` / `erff` on one thread: on Stable Diffusion's `[2, 4096, 1280]` feed-forward
//! activation its `gelu` took 89 ms against PyTorch's 16 ms and these kernels' 21 ms, and
//! `silu` on a `[2, 320, 64, 64]` feature map 14.7 ms against 3.2 and 2.9 ms
//! (`benches/elementwise.rs`, `tools/bench/elementwise_bench.py`). These kernels overwrite the
//! input when the tensor owns its storage alone, so they allocate nothing.

use crate::device::runs_cpu_kernels;
use std::mem::MaybeUninit;

use burn::tensor::{DType, Device, Tensor};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::buffer;
use crate::cpu::simd::{dispatch, exp};

/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// An activation with a vectorised kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `x · sigmoid(x)`.
    Silu,
    /// `x · Φ(x)` (erf).
    Gelu,
    /// `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    GeluTanh,
    /// `x · sigmoid(1.702 x)`.
    QuickGelu,
}

/// Whether the kernels of this module take `x`: an f32 tensor of the flex device.
pub(crate) fn supports<const D: usize>(x: &Tensor<D>) -> bool {
    x.dtype() == DType::F32 && runs_cpu_kernels(&x.device())
}

/// `kind` applied to `x` (which [`supports`] takes).
pub(crate) fn apply<const D: usize>(x: Tensor<D>, kind: Kind) -> Tensor<D> {
    map_in_place(x, |x| x.par_chunks_mut(CHUNK).for_each(|x| run(x, kind)))
}

/// `x` (which [`supports`] takes) with `f` applied to its values: in place when `x` owns its
/// storage alone, else on a copy (a resnet's input, kept for the residual).
pub(crate) fn map_in_place<const D: usize>(x: Tensor<D>, f: impl Fn(&mut [f32])) -> Tensor<D> {
    let mut t = contiguous(x);
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous");
    if let Some(storage) = t.try_storage_mut::<f32>() {
        f(&mut storage[start..end]);
        return Tensor::from_primitive::<Flex>(t);
    }
    // A copy written in parallel into a fresh (huge-page) buffer, then transformed in place.
    let src = &t.storage::<f32>()[start..end];
    let copy = |dst: &mut [MaybeUninit<f32>]| {
        dst.par_chunks_mut(CHUNK)
            .zip(src.par_chunks(CHUNK))
            .for_each(|(dst, src)| {
                for (d, &s) in dst.iter_mut().zip(src) {
                    d.write(s);
                }
            })
    };
    // SAFETY: the chunks of `dst` and `src` pair up, so every element is written.
    let mut values = unsafe { buffer::init_with(src.len(), copy) };
    f(&mut values);
    let shape = t.layout().shape().clone();
    Tensor::from_data(values.into_data(shape), &Device::flex())
}

/// `kind` applied to `x` in place, on the calling thread.
pub(crate) fn run(x: &mut [f32], kind: Kind) {
    match kind {
        Kind::Silu => silu(x),
        Kind::Gelu => gelu(x),
        Kind::GeluTanh => gelu_tanh(x),
        Kind::QuickGelu => quick_gelu(x),
    }
}

/// diffusers' GEGLU on `[.., 2·n]` (which [`supports`] takes): the first `n` values of each
/// row times the exact GELU of the last `n`, as `[.., n]`.
pub(crate) fn geglu<const D: usize>(h: Tensor<D>) -> Tensor<D> {
    let t = contiguous(h);
    let mut dims = t.layout().shape().to_vec();
    let n = dims[D - 1] / 2;
    dims[D - 1] = n;
    let (start, end) = t.layout().contiguous_offsets().expect("contiguous");
    let rows = &t.storage::<f32>()[start..end];
    let per_task = (CHUNK / (2 * n).max(1)).max(1);
    let write = |out: &mut [MaybeUninit<f32>]| {
        out.par_chunks_mut(per_task * n.max(1))
            .zip(rows.par_chunks(per_task * 2 * n.max(1)))
            .for_each(|(out, rows)| {
                for (out, row) in out.chunks_exact_mut(n).zip(rows.chunks_exact(2 * n)) {
                    let (value, gate) = row.split_at(n);
                    for (o, &g) in out.iter_mut().zip(gate) {
                        o.write(g);
                    }
                    // SAFETY: every element of `out` was just written.
                    let out = unsafe { &mut *(out as *mut [MaybeUninit<f32>] as *mut [f32]) };
                    gelu(out);
                    mul(out, value);
                }
            })
    };
    // SAFETY: `write` writes every output row (the rows of `h` and of the output pair up).
    let out = unsafe { buffer::init_with(rows.len() / 2, write) };
    Tensor::from_data(out.into_data(dims), &Device::flex())
}

/// `x` (which [`supports`] takes) as a contiguous flex tensor.
pub(crate) fn contiguous<const D: usize>(x: Tensor<D>) -> FlexTensor {
    let t = x
        .try_into_primitive::<Flex>()
        .expect("a float tensor of the flex device is a flex primitive");
    if t.is_contiguous() {
        t
    } else {
        t.to_contiguous()
    }
}

/// `1 + exp(-a)` for `a` clamped to at most 88, where [`exp`] is accurate; beyond, the
/// activation's value is 0 or `x` to f32 precision either way.
#[inline(always)]
fn one_plus_exp_neg(a: f32) -> f32 {
    let e = -a;
    1.0 + exp(if e > 88.0 { 88.0 } else { e })
}

/// `erfc(z)` for `z ≥ 0`, relative error below 1.2e-7 (the Chebyshev fit of Numerical Recipes,
/// §6.2, evaluated with [`exp`]).
#[inline(always)]
fn erfc(z: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.5 * z);
    let mut p = 0.170_872_77_f32;
    p = p * t - 0.822_152_23;
    p = p * t + 1.488_515_9;
    p = p * t - 1.135_204;
    p = p * t + 0.278_868_07;
    p = p * t - 0.186_288_06;
    p = p * t + 0.096_784_18;
    p = p * t + 0.374_091_96;
    p = p * t + 1.000_023_7;
    p = p * t - 1.265_512_2;
    t * exp(p - z * z)
}

dispatch! {
    /// `x ← x · sigmoid(x)`.
    fn silu(x: &mut [f32]) -> () {
        for v in x.iter_mut() {
            *v /= one_plus_exp_neg(*v);
        }
    }
}

dispatch! {
    /// `x ← x · sigmoid(1.702 x)`.
    fn quick_gelu(x: &mut [f32]) -> () {
        for v in x.iter_mut() {
            *v /= one_plus_exp_neg(1.702 * *v);
        }
    }
}

dispatch! {
    /// `x ← x · Φ(x) = x (1 + erf(x / √2)) / 2`.
    fn gelu(x: &mut [f32]) -> () {
        for v in x.iter_mut() {
            let c = erfc(v.abs() * std::f32::consts::FRAC_1_SQRT_2);
            let r = if *v >= 0.0 { 2.0 - c } else { c };
            *v *= 0.5 * r;
        }
    }
}

dispatch! {
    /// `x ← 0.5 x (1 + tanh(u))` with `u = √(2/π) (x + 0.044715 x³)`, computed as
    /// `x / (1 + exp(-2u))`.
    fn gelu_tanh(x: &mut [f32]) -> () {
        const K: f32 = 0.797_884_6; // √(2/π)
        for v in x.iter_mut() {
            let u = K * (*v + 0.044_715 * *v * *v * *v);
            *v /= one_plus_exp_neg(2.0 * u);
        }
    }
}

dispatch! {
    /// `x ← x · y`.
    fn mul(x: &mut [f32], y: &[f32]) -> () {
        for (a, b) in x.iter_mut().zip(y) {
            *a *= b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{TensorData, activation};

    /// Values over the whole useful range, both tails included.
    fn inputs(device: &Device) -> Tensor<2> {
        let values: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 6e-3).collect();
        let mut values = values;
        values.extend([
            -1e4, -200.0, -90.0, -20.0, 20.0, 90.0, 200.0, 1e4, 0.0, -0.0,
        ]);
        let n = values.len();
        Tensor::from_data(TensorData::new(values, [2, n / 2]), device)
    }

    /// The largest error relative to `max(|reference|, 1)`.
    fn max_rel(ours: Tensor<2>, reference: Tensor<2>) -> f32 {
        let (a, b) = (ours.into_data(), reference.into_data());
        let (a, b) = (a.as_slice::<f32>().unwrap(), b.as_slice::<f32>().unwrap());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs().max(1.0))
            .fold(0.0, f32::max)
    }

    /// Each kernel against burn's element-at-a-time (libm) version, in place and on a shared
    /// tensor (which must be left untouched).
    #[test]
    fn kernels_match_the_scalar_definitions() {
        let device = Device::flex();
        let x = inputs(&device);
        type Reference = fn(Tensor<2>) -> Tensor<2>;
        let cases: [(Kind, Reference, f32); 4] = [
            (Kind::Silu, activation::silu, 1e-6),
            (Kind::Gelu, activation::gelu, 2e-6),
            (Kind::GeluTanh, |x| activation::gelu_approximate(x), 2e-6),
            (
                Kind::QuickGelu,
                |x| x.clone() * activation::sigmoid(x * 1.702),
                1e-6,
            ),
        ];
        for (kind, reference, tol) in cases {
            let want = reference(x.clone());
            let shared = apply(x.clone(), kind);
            let err = max_rel(shared, want.clone());
            assert!(err < tol, "{kind:?}: {err}");
            let owned = Tensor::from_data(x.to_data(), &device);
            let err = max_rel(apply(owned, kind), want);
            assert!(err < tol, "{kind:?}: {err}");
        }
        assert_eq!(
            x.to_data(),
            inputs(&device).to_data(),
            "the shared input is unchanged"
        );
    }

    #[test]
    fn geglu_matches_its_definition() {
        let device = Device::flex();
        let values: Vec<f32> = (0..40_000).map(|i| (i as f32 - 20_000.0) * 6e-4).collect();
        let h = Tensor::<3>::from_data(TensorData::new(values, [4, 5, 2000]), &device);
        let h = Tensor::cat(vec![h.clone(), h.flip([2])], 2);
        let want = h.clone().narrow(2, 0, 2000) * activation::gelu(h.clone().narrow(2, 2000, 2000));
        let ours = geglu(h);
        assert_eq!(ours.dims(), [4, 5, 2000]);
        let err = (ours - want).abs().max().into_scalar::<f32>();
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn only_f32_flex_tensors_are_supported() {
        let device = Device::flex();
        assert!(supports(&inputs(&device)));
        assert!(!supports(&inputs(&device).cast(DType::BF16)));
    }
}
