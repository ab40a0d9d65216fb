//! Stride-1 2-D convolution on the CPU, for f32 tensors on the flex backend, as a sum of
//! `kh · kw` matrix products over shifted views of the padded input ("implicit GEMM").
//!
//! burn-flex lowers a convolution to an explicit im2col matrix (`kh · kw` copies of the input)
//! or to a direct loop. Here the input is copied once, zero-padded, as `[channels, Hp · Wp]`
//! rows; for the tap `(ky, kx)` the input pixels that output `(y, x)` needs sit at the fixed
//! offset `ky · Wp + kx` from `y · Wp + x`, so every tap is one `gemm` of the weight slice
//! `[out, in]` (a strided view of the weight, not copied) by a contiguous window of the padded
//! rows, accumulated into an output laid out with the padded row width `Wp`. The `Wp - W_out`
//! extra columns per row are dropped at the end.

use std::cell::RefCell;

use gemm::Parallelism;
use rayon::prelude::*;

use crate::cpu_linear::HalfMatrix;

/// Buffers kept between calls on a thread (the padded input, the accumulator, a converted
/// half-precision weight): freshly allocated, their page faults cost as much as a convolution
/// of Stable Diffusion's deepest level. They hold at most the largest layer's sizes.
#[derive(Default)]
struct Scratch {
    padded: Vec<f32>,
    acc: Vec<f32>,
    weight: Vec<f32>,
    taps: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The weight of a convolution: f32, or half-precision bits converted for the call.
#[derive(Clone, Copy)]
pub(crate) enum Weight<'a> {
    F32(&'a [f32]),
    Half(HalfMatrix<'a>),
}

/// The problem: `x` is `[batch, c, h, w]`, `weight` `[o, c, kh, kw]`, both contiguous;
/// padding `(ph, pw)` on both sides of each axis.
pub(crate) struct Conv<'a> {
    pub x: &'a [f32],
    pub weight: Weight<'a>,
    pub bias: Option<&'a [f32]>,
    pub batch: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kh: usize,
    pub kw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl Conv<'_> {
    /// The output height and width.
    pub fn out_size(&self) -> (usize, usize) {
        (
            self.h + 2 * self.ph + 1 - self.kh,
            self.w + 2 * self.pw + 1 - self.kw,
        )
    }
}

/// The convolution as `[batch, o, h_out, w_out]`.
pub(crate) fn conv2d(p: &Conv) -> Vec<f32> {
    let Conv {
        batch,
        c,
        h,
        w,
        o,
        kw,
        ph,
        pw,
        ..
    } = *p;
    let (ho, wo) = p.out_size();
    let (hp, wp) = (h + 2 * ph, w + 2 * pw);
    // Each channel's padded rows, plus `kw - 1` zeros so the last tap's window stays inside.
    let plane = hp * wp + kw - 1;
    let n = ho * wp;
    let mut out = vec![0.0f32; batch * o * ho * wo];
    SCRATCH.with_borrow_mut(|scratch| {
        let Scratch {
            padded,
            acc,
            weight,
            taps,
        } = scratch;
        let weight = match p.weight {
            Weight::F32(w) => w,
            Weight::Half(half) => {
                weight.resize(half.bits.len(), 0.0);
                half.all_to_f32(weight);
                weight
            }
        };
        taps.resize(weight.len(), 0.0);
        tap_major(weight, c, p.kh * kw, taps);
        padded.clear();
        padded.resize(c * plane, 0.0);
        acc.resize(o * n, 0.0);
        run(p, taps, padded, acc, &mut out);
    });
    out
}

/// The weight `[o, c, taps]` rearranged as `[o, taps, c]`, so that each tap's `[o, c]` slice
/// has unit column stride: `gemm` packs it faster (measured for one tap's product, 2 threads:
/// 1,280 channels at 16 × 16 took 3.0 instead of 4.9 ms, 640 at 32 × 32 3.0 instead of 3.5,
/// 320 at 64 × 64 2.7 instead of 3.0; the rearrangement costs one pass over the weight).
fn tap_major(src: &[f32], c: usize, taps: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(c * taps)
        .zip(src.par_chunks(c * taps))
        .for_each(|(dst, src)| {
            for (ic, w) in src.chunks_exact(taps).enumerate() {
                for (t, &v) in w.iter().enumerate() {
                    dst[t * c + ic] = v;
                }
            }
        });
}

/// [`conv2d`] with its buffers: `weight` is `[o, kh · kw, c]` ([`tap_major`]); `padded` is
/// zeroed, `[c, plane]`; `acc` is `[o, n]`.
fn run(p: &Conv, weight: &[f32], padded: &mut [f32], acc: &mut [f32], out: &mut [f32]) {
    let Conv {
        batch,
        c,
        h,
        w,
        o,
        kh,
        kw,
        ph,
        pw,
        ..
    } = *p;
    let (ho, wo) = p.out_size();
    let wp = w + 2 * pw;
    let plane = padded.len() / c;
    let n = ho * wp;
    for b in 0..batch {
        let x = &p.x[b * c * h * w..(b + 1) * c * h * w];
        for (dst, src) in padded.chunks_exact_mut(plane).zip(x.chunks_exact(h * w)) {
            for (y, row) in src.chunks_exact(w).enumerate() {
                let start = (y + ph) * wp + pw;
                dst[start..start + w].copy_from_slice(row);
            }
        }
        for ky in 0..kh {
            for kx in 0..kw {
                let tap = ky * kw + kx;
                let first = tap == 0;
                // SAFETY: `acc` is [o, n]; the weight view [o, c] has strides (c·kh·kw, 1)
                // from `tap · c`; the input window [c, n] has row stride `plane` from
                // `ky · wp + kx`, and its last element `(c-1)·plane + ky·wp + kx + n - 1` is
                // inside `padded` (n + (kh-1)·wp + kw - 1 ≤ plane).
                unsafe {
                    gemm::gemm(
                        o,
                        n,
                        c,
                        acc.as_mut_ptr(),
                        1,
                        n as isize,
                        !first,
                        weight.as_ptr().add(tap * c),
                        1,
                        (c * kh * kw) as isize,
                        padded.as_ptr().add(ky * wp + kx),
                        1,
                        plane as isize,
                        if first { 0.0 } else { 1.0 },
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::Rayon(0),
                    );
                }
            }
        }
        let out_b = &mut out[b * o * ho * wo..(b + 1) * o * ho * wo];
        for (ch, (dst, src)) in out_b
            .chunks_exact_mut(ho * wo)
            .zip(acc.chunks_exact(n))
            .enumerate()
        {
            let bias = p.bias.map_or(0.0, |bias| bias[ch]);
            for (d, s) in dst.chunks_exact_mut(wo).zip(src.chunks_exact(wp)) {
                for (d, s) in d.iter_mut().zip(s) {
                    *d = s + bias;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::bf16;
    use half::slice::HalfBitsSliceExt;

    /// The convolution by its definition, with the weight as f32 values.
    fn direct(p: &Conv, weight: &[f32]) -> Vec<f32> {
        let (ho, wo) = p.out_size();
        let mut out = vec![0.0; p.batch * p.o * ho * wo];
        for b in 0..p.batch {
            for oc in 0..p.o {
                for y in 0..ho {
                    for x in 0..wo {
                        let mut s = p.bias.map_or(0.0, |bias| f64::from(bias[oc]));
                        for ic in 0..p.c {
                            for ky in 0..p.kh {
                                for kx in 0..p.kw {
                                    let (iy, ix) = (y + ky, x + kx);
                                    if iy < p.ph
                                        || ix < p.pw
                                        || iy - p.ph >= p.h
                                        || ix - p.pw >= p.w
                                    {
                                        continue;
                                    }
                                    let xi = ((b * p.c + ic) * p.h + iy - p.ph) * p.w + ix - p.pw;
                                    let wi = ((oc * p.c + ic) * p.kh + ky) * p.kw + kx;
                                    s += f64::from(p.x[xi]) * f64::from(weight[wi]);
                                }
                            }
                        }
                        out[((b * p.o + oc) * ho + y) * wo + x] = s as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_a_direct_convolution() {
        for &(batch, c, h, w, o, kh, kw, ph, pw, bias) in &[
            (2, 3, 7, 5, 4, 3, 3, 1, 1, true),
            (1, 5, 6, 9, 3, 1, 1, 0, 0, false),
            (2, 2, 8, 8, 3, 5, 5, 2, 2, true),
            (1, 4, 5, 6, 2, 3, 3, 0, 0, true), // valid: the output shrinks
            (1, 3, 4, 4, 2, 3, 1, 1, 0, false), // rectangular kernel
        ] {
            let x: Vec<f32> = (0..batch * c * h * w)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                .collect();
            let weight: Vec<f32> = (0..o * c * kh * kw)
                .map(|i| ((i * 13 % 11) as f32 - 5.0) / 9.0)
                .collect();
            let b: Vec<f32> = (0..o).map(|i| i as f32 * 0.25 - 0.5).collect();
            let bits: Vec<u16> = weight
                .iter()
                .map(|&v| bf16::from_f32(v).to_bits())
                .collect();
            let rounded: Vec<f32> = bits.iter().map(|&b| bf16::from_bits(b).to_f32()).collect();
            let half = HalfMatrix::bf16(bits.reinterpret_cast(), false);
            let mut p = Conv {
                x: &x,
                weight: Weight::F32(&weight),
                bias: bias.then_some(&b[..]),
                batch,
                c,
                h,
                w,
                o,
                kh,
                kw,
                ph,
                pw,
            };
            for (want, label) in [(direct(&p, &weight), "f32"), (direct(&p, &rounded), "bf16")] {
                if label == "bf16" {
                    p.weight = Weight::Half(half);
                }
                let err = conv2d(&p)
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    err < 1e-4,
                    "{label} {c}x{h}x{w} k{kh}x{kw} p{ph},{pw}: {err}"
                );
            }
        }
    }
}
