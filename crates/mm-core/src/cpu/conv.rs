//! 2-D convolution on the CPU, for f32 tensors on the flex backend, as matrix products over
//! shifted views of the input: stride 1 with f32 products, any stride with bf16 products.
//!
//! burn-flex lowers a convolution to an explicit im2col matrix (`kh · kw` copies of the input)
//! or to a direct loop. Here, with f32 products, the input is copied once, zero-padded, as
//! `[channels, batch, Hp · Wp]` rows; for the tap `(ky, kx)` the input pixels that output
//! `(y, x)` needs sit at the fixed offset `ky · Wp + kx` from `y · Wp + x`, and the output is
//! laid out with the padded row width `Wp` (the `Wp - W_out` extra columns per row are dropped
//! at the end). Two ways to multiply ([`Strategy`]):
//!
//! - large feature maps: every tap is one `gemm` of its `[out, in]` weight slice by a
//!   contiguous window of the padded rows (no copy of the input per tap), accumulated; the
//!   weight is rearranged tap-major first so that each slice has unit stride;
//! - small feature maps (deep levels, where the weight dominates): the `kh · kw` windows are
//!   stacked as rows of one matrix and multiplied by the weight as stored in one `gemm`, which
//!   packs the weight once instead of once per tap.
//!
//! With bf16 products the input is packed once per phase `(ky mod stride, kx)`, each tap a
//! window of its phase at an offset that keeps the AMX tile loads on cache lines, the taps
//! summed in the kernel's registers and the output written where it lies ([`phases`]).
//!
//! A 1 × 1 kernel without padding needs no padded copy: one `gemm` per image reads the input
//! where it lies. Its output, like every output here, is a pooled [`Buffer`] (burn-flex's
//! own product writes its output twice, and always into fresh pages).

use std::cell::RefCell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::buffer::{self, Buffer, SharedOut};
use crate::cpu::bf16;
use crate::cpu::gemm::{Operand, Packed, Product};
use crate::cpu::linear::HalfMatrix;
use crate::cpu::packed::{Cacheable, Key, Packing};
use crate::precision::ComputeDtype;

/// Buffers kept between calls on a thread (the padded input, the accumulator, a converted
/// half-precision weight): freshly allocated, their page faults cost as much as a convolution
/// of Stable Diffusion's deepest level. They hold at most the largest layer's sizes.
#[derive(Default)]
struct Scratch {
    padded: AlignedVec<f32>,
    acc: AlignedVec<f32>,
    weight: AlignedVec<f32>,
    /// The tap-major weight ([`Strategy::Taps`]) or the stacked windows
    /// ([`Strategy::Stacked`]).
    work: AlignedVec<f32>,
    /// [`Strategy::Phases`]: the weight and the input's phases as bf16 pairs.
    packed_weight: AlignedVec<u32>,
    packed_input: AlignedVec<u32>,
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
/// padding `(ph, pw)` on both sides of each axis; `stride` along both (above 1 only with bf16
/// products).
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
    pub stride: usize,
    /// The arithmetic of the products.
    pub compute: ComputeDtype,
    /// In bf16, the autocast scope's cache, which may keep an f32 weight packed.
    pub cacheable: Option<Cacheable<'a>>,
}

impl Conv<'_> {
    /// The output height and width.
    pub fn out_size(&self) -> (usize, usize) {
        (
            (self.h + 2 * self.ph - self.kh) / self.stride + 1,
            (self.w + 2 * self.pw - self.kw) / self.stride + 1,
        )
    }
}

/// How the taps of a convolution are multiplied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Strategy {
    /// One `gemm` per tap over a shifted window of the padded input (no copy of the input per
    /// tap), the weight rearranged tap-major: for large feature maps and small weights.
    Taps,
    /// One `gemm` of the weight as stored (`[o, c · kh · kw]`) by the `kh · kw` shifted windows
    /// stacked as rows: for small feature maps, where the weight is the larger operand and
    /// packing it once instead of once per tap and image is what counts.
    Stacked,
    /// A 1 × 1 kernel without padding: one `gemm` per image, straight from the input.
    Pointwise,
    /// bf16 products: the input packed once per phase, the taps summed in the kernel's
    /// registers, the output written in place ([`phases`]).
    Phases,
}

impl Strategy {
    /// [`Strategy::Stacked`] when the output columns (`batch · h_out · wp`) are at most
    /// [`STACK_RATIO`] times the output channels. Measured with 3 × 3 kernels, batch 2, 2
    /// threads (taps / stacked, ms): 320 channels at 64 × 64 (ratio 26) 63.7 / 71.2; 640 at
    /// 32 × 32 (3.4) 63.7 / 63.8; 1,280 at 16 × 16 (0.45) 76.9 / 63.7.
    fn choose(p: &Conv) -> Self {
        if p.kh * p.kw == 1 && p.ph + p.pw == 0 && p.stride == 1 {
            return Strategy::Pointwise;
        }
        if p.compute == ComputeDtype::Bf16 {
            return Strategy::Phases;
        }
        let (ho, _) = p.out_size();
        let columns = p.batch * ho * (p.w + 2 * p.pw);
        if columns <= STACK_RATIO * p.o {
            Strategy::Stacked
        } else {
            Strategy::Taps
        }
    }
}

/// Output columns per output channel up to which [`Strategy::Stacked`] is chosen.
const STACK_RATIO: usize = 4;

/// The convolution as `[batch, o, h_out, w_out]`.
pub(crate) fn conv2d(p: &Conv) -> Buffer {
    conv2d_with(p, Strategy::choose(p))
}

fn conv2d_with(p: &Conv, strategy: Strategy) -> Buffer {
    let (ho, wo) = p.out_size();
    let write = |out: &mut [MaybeUninit<f32>]| {
        SCRATCH.with_borrow_mut(|scratch| compute(p, strategy, scratch, out))
    };
    // SAFETY: `compute` ends with `extract`, which writes every output element.
    unsafe { buffer::init_with(p.batch * p.o * ho * wo, write) }
}

/// The convolution into `out`, through the buffers of `scratch`.
fn compute(p: &Conv, strategy: Strategy, scratch: &mut Scratch, out: &mut [MaybeUninit<f32>]) {
    let Scratch {
        padded,
        acc,
        weight,
        work,
        packed_weight,
        packed_input,
    } = scratch;
    let weight = match p.weight {
        Weight::F32(w) => w,
        Weight::Half(half) => {
            let weight = weight.sized(half.bits.len());
            half.all_to_f32(weight);
            weight
        }
    };
    match strategy {
        Strategy::Pointwise => pointwise(p, weight, out),
        Strategy::Phases => {
            // An f32 weight packed once per autocast scope; else into the scratch.
            let cached = match (p.weight, &p.cacheable) {
                (Weight::F32(stored), Some(cacheable)) => {
                    let (o, c, taps) = (p.o, p.c, p.kh * p.kw);
                    let key = Key::new(stored, Packing::Taps { o, c, taps });
                    cacheable.words(key, |words| pack_weight(p, stored, words))
                }
                _ => None,
            };
            let packed = match &cached {
                Some(words) => &words[..],
                None => {
                    pack_weight(p, weight, packed_weight);
                    &packed_weight[..]
                }
            };
            phases(p, packed, packed_input, out);
        }
        Strategy::Taps | Strategy::Stacked => {
            assert_eq!(p.stride, 1, "f32 convolutions of stride 1");
            let layout = Layout::new(p);
            let padded = layout.pad(p, padded);
            let (acc, image) = if strategy == Strategy::Taps {
                let work = work.sized(weight.len());
                tap_major(weight, p.c, p.kh * p.kw, work);
                (layout.per_tap(p, work, padded, acc), layout.plane)
            } else {
                let stacked = layout.stack(p, padded, work);
                (layout.stacked(p, weight, stacked, acc), layout.n)
            };
            layout.extract(p, acc, image, out);
        }
    }
}

/// [`Strategy::Pointwise`]: image `b`'s output `[o, h · w]` = weight `[o, c]` · its input
/// `[c, h · w]` (+ the bias, written first and accumulated onto), one `gemm` per image.
fn pointwise(p: &Conv, weight: &[f32], out: &mut [MaybeUninit<f32>]) {
    let hw = p.h * p.w;
    if let Some(bias) = p.bias {
        out.par_chunks_mut(hw).enumerate().for_each(|(i, row)| {
            for o in row {
                o.write(bias[i % p.o]);
            }
        });
    }
    if hw == 0 {
        return;
    }
    // Tasks of (image, column range), at least one per thread, each a single-threaded gemm.
    let parts = rayon::current_num_threads()
        .div_ceil(p.batch)
        .min(hw.div_ceil(64));
    let out = SharedOut(out.as_mut_ptr().cast::<f32>());
    (0..p.batch * parts).into_par_iter().for_each(|task| {
        let (b, part) = (task / parts, task % parts);
        let (c0, c1) = (hw * part / parts, hw * (part + 1) / parts);
        let image = &p.x[b * p.c * hw + c0..];
        // SAFETY: this task alone writes columns c0..c1 of image b's [o, hw] output
        // (row-major), which the bias fill above wrote when it is read; the weight is [o, c]
        // and the input image [c, hw], both row-major.
        let product = Product {
            m: p.o,
            n: c1 - c0,
            k: p.c,
            // SAFETY: this task alone writes columns c0..c1 of image b's [o, hw] output
            // (row-major), which the bias fill above wrote when it is read.
            dst: unsafe { out.at(b * p.o * hw + c0) },
            dst_rs: hw,
            accumulate: p.bias.is_some(),
            lhs: Operand::new(weight, p.c, 1).into(),
            rhs: Operand::new(image, hw, 1).into(),
            scale: 1.0,
            parallel: false,
        };
        // SAFETY: as above; the weight is [o, c] and the input image [c, hw], both row-major.
        unsafe { product.run(p.compute) };
    });
}

/// Where things are: the input zero-padded to `hp × wp` per channel, each image's output
/// computed with the padded row width `wp` (`n = h_out · wp` columns, the last `wp - w_out` of
/// each row dropped at the end).
struct Layout {
    wp: usize,
    /// Values per channel and image in the padded buffer: `hp · wp`, plus `kw - 1` zeros so the
    /// last tap's window stays inside.
    plane: usize,
    /// Output columns per image.
    n: usize,
}

impl Layout {
    fn new(p: &Conv) -> Self {
        let (ho, _) = p.out_size();
        let (hp, wp) = (p.h + 2 * p.ph, p.w + 2 * p.pw);
        Self {
            wp,
            plane: hp * wp + p.kw - 1,
            n: ho * wp,
        }
    }

    /// The offset of tap `t`'s window from an output's position.
    fn offset(&self, p: &Conv, t: usize) -> usize {
        (t / p.kw) * self.wp + t % p.kw
    }

    /// Copies the input into `padded` as `[c, batch, plane]`, zero-padded (the buffer is
    /// reused between calls: every value is written).
    fn pad<'a>(&self, p: &Conv, padded: &'a mut AlignedVec<f32>) -> &'a [f32] {
        let Conv {
            batch,
            c,
            h,
            w,
            ph,
            pw,
            ..
        } = *p;
        let padded = padded.sized(c * batch * self.plane);
        padded
            .par_chunks_mut(self.plane)
            .enumerate()
            .for_each(|(i, dst)| {
                let (ic, b) = (i / batch, i % batch);
                let src = &p.x[(b * c + ic) * h * w..][..h * w];
                let (top, rest) = dst.split_at_mut(ph * self.wp);
                top.fill(0.0);
                let (rows, bottom) = rest.split_at_mut(h * self.wp);
                for (dst, row) in rows.chunks_exact_mut(self.wp).zip(src.chunks_exact(w)) {
                    dst[..pw].fill(0.0);
                    dst[pw..pw + w].copy_from_slice(row);
                    dst[pw + w..].fill(0.0);
                }
                bottom.fill(0.0);
            });
        padded
    }

    /// [`Strategy::Taps`]: `acc` (`[o, cols]`, image `b` from column `b · plane`) accumulates
    /// one product per tap of the tap-major weight by a window of `padded` spanning every image.
    /// The columns are split evenly between the threads, each running its taps with a
    /// single-threaded `gemm` (measured against one multi-threaded `gemm` per tap, 3 alternating
    /// runs each: 58.0–59.3 against 60.7–62.6 ms at 320 channels × 64², the same at 640 × 32²).
    fn per_tap<'a>(
        &self,
        p: &Conv,
        weight: &[f32],
        padded: &[f32],
        acc: &'a mut AlignedVec<f32>,
    ) -> &'a [f32] {
        let Conv { batch, c, o, .. } = *p;
        let taps = p.kh * p.kw;
        let cols = self.columns(p);
        let acc = acc.sized(o * cols);
        let parts = rayon::current_num_threads().min(cols.div_ceil(64)).max(1);
        let out = SharedOut(acc.as_mut_ptr());
        (0..parts).into_par_iter().for_each(|part| {
            let (c0, c1) = (cols * part / parts, cols * (part + 1) / parts);
            for t in 0..taps {
                let first = t == 0;
                // The window [c, cols] starts at column offset(t) of the padded rows; its last
                // element (c-1)·batch·plane + offset(t) + cols - 1 ≤ c·batch·plane - 1 because
                // offset(t) + n ≤ hp·wp + kw - 1 = plane.
                let window = &padded[self.offset(p, t) + c0..];
                let product = Product {
                    m: o,
                    n: c1 - c0,
                    k: c,
                    // SAFETY: this part alone writes columns c0..c1 of `acc` ([o, cols]).
                    dst: unsafe { out.at(c0) },
                    dst_rs: cols,
                    accumulate: !first,
                    lhs: Operand::new(&weight[t * c..], c * taps, 1).into(),
                    rhs: Operand::new(window, batch * self.plane, 1).into(),
                    scale: 1.0,
                    parallel: false,
                };
                // SAFETY: the weight slice is [o, c] (rows c·taps apart), the window [c, cols]
                // (rows batch·plane apart) inside `padded`.
                unsafe { product.run(p.compute) };
            }
        });
        acc
    }

    /// The accumulator's columns of [`Strategy::Taps`]: every image's `plane`, the last one's
    /// cut to its `n` output columns.
    fn columns(&self, p: &Conv) -> usize {
        (p.batch - 1) * self.plane + self.n
    }

    /// [`Strategy::Stacked`]: the windows as `[c · taps, batch · n]` rows (row `ic · taps + t`,
    /// the order of the stored weight's columns).
    fn stack<'a>(&self, p: &Conv, padded: &[f32], stacked: &'a mut AlignedVec<f32>) -> &'a [f32] {
        let Conv { batch, c, .. } = *p;
        let taps = p.kh * p.kw;
        let stacked = stacked.sized(c * taps * batch * self.n);
        stacked
            .par_chunks_mut(batch * self.n)
            .enumerate()
            .for_each(|(row, dst)| {
                let (ic, t) = (row / taps, row % taps);
                for (b, dst) in dst.chunks_exact_mut(self.n).enumerate() {
                    let src = (ic * batch + b) * self.plane + self.offset(p, t);
                    dst.copy_from_slice(&padded[src..src + self.n]);
                }
            });
        stacked
    }

    /// [`Strategy::Stacked`]: `acc` (`[o, batch · n]`) = weight `[o, c · taps]` · `stacked`.
    fn stacked<'a>(
        &self,
        p: &Conv,
        weight: &[f32],
        stacked: &[f32],
        acc: &'a mut AlignedVec<f32>,
    ) -> &'a [f32] {
        let k = p.c * p.kh * p.kw;
        let cols = p.batch * self.n;
        let acc = acc.sized(p.o * cols);
        let product = Product {
            m: p.o,
            n: cols,
            k,
            dst: acc.as_mut_ptr(),
            dst_rs: cols,
            accumulate: false,
            lhs: Operand::new(weight, k, 1).into(),
            rhs: Operand::new(stacked, cols, 1).into(),
            scale: 1.0,
            parallel: true,
        };
        // SAFETY: `acc` is [o, cols], the weight [o, k] and `stacked` [k, cols], row-major.
        unsafe { product.run(p.compute) };
        acc
    }

    /// Drops the padding columns of `acc` (`[o, cols]` or wider rows, image `b` from column
    /// `b · image`) and adds the bias, into `out` (`[batch, o, h_out, w_out]`, every element
    /// written).
    fn extract(&self, p: &Conv, acc: &[f32], image: usize, out: &mut [MaybeUninit<f32>]) {
        let (ho, wo) = p.out_size();
        let cols = acc.len() / p.o;
        out.par_chunks_mut(ho * wo)
            .enumerate()
            .for_each(|(i, dst)| {
                let (b, oc) = (i / p.o, i % p.o);
                let bias = p.bias.map_or(0.0, |bias| bias[oc]);
                let src = &acc[oc * cols + b * image..];
                for (d, s) in dst.chunks_exact_mut(wo).zip(src.chunks(self.wp)) {
                    for (d, s) in d.iter_mut().zip(s) {
                        d.write(s + bias);
                    }
                }
            });
    }
}

/// [`Strategy::Phases`]: the convolution in bf16 products, with `weight` as [`pack_weight`]
/// packs it and the input packed into `words`, into `out` (every element written).
///
/// Output `(y, x)` reads input `(s·y + ky - ph, s·x + kx - pw)` for tap `(ky, kx)` at stride
/// `s`. The input is packed once per phase `(ky mod s, kx)`: the phase's rows `r` hold the
/// input row `s·r + ky mod s - ph` at the columns `s·x + kx - pw` for `x < w_out` (zeros
/// outside the input), so the tap reads its phase at rows `y + ky / s`: a window at the fixed
/// offset `(ky / s) · w_out` from the output's position `y · w_out + x`. The output is laid out
/// as the input's phases are, so each image's `[o, h_out · w_out]` is written where it lies,
/// and with `w_out` a multiple of 16 every window starts on a cache line, as the AMX tile
/// loads want (rows straddling two lines cost 30 % at 320 channels × 64²).
fn phases(p: &Conv, weight: &[u32], words: &mut AlignedVec<u32>, out: &mut [MaybeUninit<f32>]) {
    let Conv {
        batch,
        c,
        h,
        w,
        kh,
        kw,
        ph,
        pw,
        stride: s,
        ..
    } = *p;
    let (ho, wo) = p.out_size();
    let depth = bf16::depth(c);
    // Rows of a phase and values per image (a whole number of cache lines).
    let rows = ho + (kh - 1) / s;
    let plane = (rows * wo).next_multiple_of(16);
    let width = batch * plane + bf16::NR;
    let phase_rows = s.min(kh);
    let words = bf16::sized(words, phase_rows * kw * depth * width);
    words.par_chunks_mut(width).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(even, odd), (i, words)| {
            let (phase, q) = (i / depth, i % depth);
            let (py, kx) = (phase / kw, phase % kw);
            // The output columns x0..x1 read inside the input.
            let x0 = pw.saturating_sub(kx).div_ceil(s).min(wo);
            let x1 = (w + pw).saturating_sub(kx).div_ceil(s).clamp(x0, wo);
            let (images, tail) = words.split_at_mut(batch * plane);
            tail.fill(0);
            for (b, image) in images.chunks_exact_mut(plane).enumerate() {
                let (image, pad) = image.split_at_mut(rows * wo);
                pad.fill(0);
                for (r, row) in image.chunks_exact_mut(wo).enumerate() {
                    let iy = (s * r + py).checked_sub(ph).filter(|&iy| iy < h);
                    let Some(iy) = iy.filter(|_| 2 * q < c && x0 < x1) else {
                        row.fill(0);
                        continue;
                    };
                    row[..x0].fill(0);
                    row[x1..].fill(0);
                    // Channel ic's values at the columns s·x + kx - pw, x in x0..x1.
                    let row_of = |ic: usize| &p.x[((b * c + ic) * h + iy) * w..][..w];
                    let start = s * x0 + kx - pw;
                    let columns = |ic, gathered| strided(row_of(ic), start, s, x1 - x0, gathered);
                    let dst = &mut row[x0..x1];
                    if 2 * q + 1 < c {
                        bf16::pair_rows(columns(2 * q, even), columns(2 * q + 1, odd), dst);
                    } else {
                        bf16::pair_up_even(columns(2 * q, even), dst);
                    }
                }
            }
        },
    );
    let offsets: Vec<usize> = (0..kh * kw)
        .map(|t| {
            let (ky, kx) = (t / kw, t % kw);
            ((ky % s) * kw + kx) * depth * width + (ky / s) * wo
        })
        .collect();
    let reduction = bf16::Reduction {
        m: p.o,
        n: ho * wo,
        depth,
        a: Packed::new(weight, kh * kw * depth),
        a_step: depth,
        b: Packed::new(words, width),
        b_offsets: &offsets,
        images: batch,
        b_image: plane,
        bias: p.bias,
        dst: out.as_mut_ptr().cast(),
        dst_rs: ho * wo,
        dst_image: p.o * ho * wo,
    };
    // SAFETY: `out` is [batch, o, ho·wo]; the weight holds o rounded up to AMX_ROWS rows of
    // every tap's `depth` words, packed for the best kernel; each phase's pair-rows are
    // `width` words, image b's from word b·plane, and a window's last column
    // (ky / s)·wo + ho·wo - 1 lies below rows·wo ≤ plane, with NR words after the last image.
    unsafe { bf16::reduce(&reduction, bf16::Kernel::best()) };
}

/// `len` values of `src` from `start`, `s` apart: in place for `s` = 1, else gathered.
fn strided<'a>(
    src: &'a [f32],
    start: usize,
    s: usize,
    len: usize,
    gathered: &'a mut Vec<f32>,
) -> &'a [f32] {
    if s == 1 {
        return &src[start..start + len];
    }
    gathered.clear();
    gathered.extend(src[start..].iter().step_by(s).take(len));
    gathered
}

/// The weight of [`Strategy::Phases`], packed from its stored layout (`[o, c, taps]`) into
/// `words`: `o` rounded up to [`bf16::AMX_ROWS`] rows (zeros past `o`) of `taps · depth` words,
/// output channel `r`'s weights for tap `t` from word `t · depth` of row `r`.
fn pack_weight(p: &Conv, stored: &[f32], words: &mut AlignedVec<u32>) {
    let (c, o, taps) = (p.c, p.o, p.kh * p.kw);
    let depth = bf16::depth(c);
    let row = (taps * depth).max(1);
    let o_pad = o.div_ceil(bf16::AMX_ROWS) * bf16::AMX_ROWS;
    bf16::sized(words, o_pad * row)
        .par_chunks_mut(row)
        .enumerate()
        .for_each_init(AlignedVec::new, |tap_major, (r, words)| {
            if r >= o {
                return words.fill(0);
            }
            // The channel's [c, taps] weights tap-major in cache, then each tap's c values
            // paired.
            let tap_major = tap_major.sized(c * taps);
            transpose(&stored[r * c * taps..][..c * taps], taps, tap_major);
            let rows = tap_major.chunks_exact(c.max(1));
            for (src, words) in rows.zip(words.chunks_mut(depth.max(1))) {
                bf16::pack_row(src, words);
            }
        });
}

/// The weight `[o, c, taps]` rearranged as `[o, taps, c]`, so that each tap's `[o, c]` slice
/// has unit column stride: `gemm` packs it faster (measured for one tap's product, 2 threads:
/// 1,280 channels at 16 × 16 took 3.0 instead of 4.9 ms, 640 at 32 × 32 3.0 instead of 3.5,
/// 320 at 64 × 64 2.7 instead of 3.0; the rearrangement costs one pass over the weight).
fn tap_major(src: &[f32], c: usize, taps: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(c * taps)
        .zip(src.par_chunks(c * taps))
        .for_each(|(dst, src)| transpose(src, taps, dst));
}

/// `dst[t · c + i] = src[i · taps + t]`: one output channel's `[c, taps]` weights tap-major.
fn transpose(src: &[f32], taps: usize, dst: &mut [f32]) {
    let c = src.len() / taps;
    for (i, src) in src.chunks_exact(taps).enumerate() {
        for (t, &s) in src.iter().enumerate() {
            dst[t * c + i] = s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::packed::WeightCache;
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
                                    let (iy, ix) = (y * p.stride + ky, x * p.stride + kx);
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
        for &(batch, c, h, w, o, kh, kw, ph, pw, stride, bias) in &[
            (2, 3, 7, 5, 4, 3, 3, 1, 1, 1, true),
            (1, 5, 6, 9, 3, 1, 1, 0, 0, 1, false),
            (2, 5, 6, 9, 3, 1, 1, 0, 0, 1, true),
            (1, 3, 4, 4, 2, 1, 1, 1, 1, 1, true), // 1 × 1 with padding
            (2, 2, 8, 8, 3, 5, 5, 2, 2, 1, true),
            (1, 4, 5, 6, 2, 3, 3, 0, 0, 1, true), // valid: the output shrinks
            (1, 3, 4, 4, 2, 3, 1, 1, 0, 1, false), // rectangular kernel
            (2, 37, 16, 16, 70, 3, 3, 1, 1, 1, true), // whole and partial tiles
            (1, 2, 1, 2, 3, 3, 3, 2, 2, 1, false), // padding wider than the input
            // Strides of 2 (bf16 products only): odd and even sizes, a 1 × 1 kernel.
            (2, 6, 9, 8, 5, 3, 3, 1, 1, 2, true),
            (1, 34, 16, 16, 33, 3, 3, 1, 1, 2, false),
            (1, 4, 7, 6, 3, 1, 1, 0, 0, 2, true),
            (1, 3, 8, 7, 2, 4, 4, 1, 1, 3, true),
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
                stride,
                compute: ComputeDtype::F32,
                cacheable: None,
            };
            let f32_cases = if stride == 1 { 2 } else { 0 };
            for (want, label) in [(direct(&p, &weight), "f32"), (direct(&p, &rounded), "bf16")]
                .into_iter()
                .take(f32_cases)
            {
                if label == "bf16" {
                    p.weight = Weight::Half(half);
                }
                let pointwise = Strategy::choose(&p) == Strategy::Pointwise;
                let strategies = if pointwise {
                    &[Strategy::Taps, Strategy::Stacked, Strategy::Pointwise][..]
                } else {
                    &[Strategy::Taps, Strategy::Stacked][..]
                };
                for &strategy in strategies {
                    let err = conv2d_with(&p, strategy)
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        err < 1e-4,
                        "{strategy:?} {label} {c}x{h}x{w} k{kh}x{kw} p{ph},{pw}: {err}"
                    );
                }
            }
            // bf16 products: the convolution of the rounded input by the rounded weight.
            let x_rounded: Vec<f32> = x.iter().map(|&v| bf16::from_f32(v).to_f32()).collect();
            let want = direct(
                &Conv {
                    x: &x_rounded,
                    cacheable: None,
                    ..p
                },
                &rounded,
            );
            p.weight = Weight::F32(&weight);
            p.compute = ComputeDtype::Bf16;
            let strategies = [Strategy::Phases, Strategy::choose(&p)].into_iter().chain(
                (stride == 1)
                    .then_some([Strategy::Taps, Strategy::Stacked])
                    .into_iter()
                    .flatten(),
            );
            for strategy in strategies {
                let err = conv2d_with(&p, strategy)
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    err < 1e-4,
                    "{strategy:?} bf16 compute {c}x{h}x{w} k{kh} s{stride}: {err}"
                );
            }
            let cache = std::sync::Arc::new(WeightCache::default());
            let owner = || Box::new(()) as Box<dyn std::any::Any + Send>;
            let cached = Conv {
                cacheable: Some(Cacheable {
                    cache: cache.clone(),
                    owner: &owner,
                }),
                ..p
            };
            // Met once (packed into the scratch), twice (into the cache), then from it.
            let uncached = conv2d_with(&p, Strategy::Phases);
            for _ in 0..3 {
                assert_eq!(&conv2d_with(&cached, Strategy::Phases)[..], &uncached[..]);
            }
        }
    }
}
