//! `x · w` for f32 activations and half-precision (bf16/f16) weights on the flex CPU backend.
//!
//! burn-flex multiplies bf16 by bf16 3–6× slower than f32 by f32 (`benches/linear.rs`), and
//! mixing dtypes is not allowed at all. This kernel keeps the weight in its stored dtype and converts it to f32 a
//! block of columns at a time, right before the f32 `gemm` that uses the block: memory holds
//! half-precision weights, the arithmetic is f32 (the result equals upcasting the whole layer
//! first), and a decoding step with one token reads each weight once, at two bytes.
//!
//! The blocked product takes any weight that converts a block of its columns to f32
//! ([`Columns`]): half-precision matrices here, rows of ggml blocks in `cpu_quant.rs`.

use std::mem::MaybeUninit;
use std::ops::Range;

use burn::tensor::{bf16, f16};
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::buffer::{self, Buffer, SharedOut};
use crate::cpu::bf16::{pack_panels, panels};
use crate::cpu::gemm::{Operand, Product};
use crate::cpu::packed::{Cacheable, Key, Packing};
use crate::cpu::simd::dispatch;
use crate::precision::ComputeDtype;

/// The stored format of half-precision values.
#[derive(Clone, Copy)]
pub(crate) enum Half {
    /// bfloat16.
    Bf16,
    /// IEEE binary16.
    F16,
}

/// A `[k, n]` matrix of half-precision values as raw bits: row-major, or `transposed` (stored
/// as its `[n, k]` transpose, row-major — PyTorch's linear-weight and embedding layout).
#[derive(Clone, Copy)]
pub(crate) struct HalfMatrix<'a> {
    pub bits: &'a [u16],
    pub format: Half,
    pub transposed: bool,
}

impl<'a> HalfMatrix<'a> {
    /// A `bf16` matrix.
    pub fn bf16(values: &'a [bf16], transposed: bool) -> Self {
        let bits = values.reinterpret_cast();
        Self {
            bits,
            format: Half::Bf16,
            transposed,
        }
    }

    /// An `f16` matrix.
    pub fn f16(values: &'a [f16], transposed: bool) -> Self {
        let bits = values.reinterpret_cast();
        Self {
            bits,
            format: Half::F16,
            transposed,
        }
    }

    /// All the values into `dst` (as long as the matrix), in their stored order, converted
    /// in parallel blocks.
    pub fn all_to_f32(self, dst: &mut [f32]) {
        const BLOCK: usize = 1 << 16;
        dst.par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(i, dst)| self.to_f32(BLOCK, i, 0, dst.len(), dst));
    }

    /// Converts stored rows `r0..r0 + dst.len() / cols`, columns `c0..c0 + cols`, into `dst`
    /// (row-major); `stride` is the stored row length.
    fn to_f32(self, stride: usize, r0: usize, c0: usize, cols: usize, dst: &mut [f32]) {
        let src = &self.bits[r0 * stride + c0..];
        match self.format {
            Half::Bf16 => bf16_rows(src, stride, cols, dst),
            Half::F16 => f16_rows(src, stride, cols, dst),
        }
    }
}

/// A `[k, n]` weight that [`matmul`] multiplies by f32 activations: stored in another format
/// (half precision, ggml blocks) and converted to f32 a block of columns at a time.
pub(crate) trait Columns: Copy + Send + Sync {
    /// Columns `cols` of the `[k, n]` matrix in f32 (`buf` is resized), with the strides
    /// `(row, column)` to read them as `[k, cols.len()]`.
    fn columns(self, k: usize, n: usize, cols: Range<usize>, buf: &mut Vec<f32>) -> (usize, usize);

    /// `x[m, k] · w[k, n]` for a few rows (`m ≤ GEMV_ROWS`), streaming the weight once.
    fn gemv(self, x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32>;
}

impl Columns for HalfMatrix<'_> {
    fn columns(self, k: usize, n: usize, cols: Range<usize>, buf: &mut Vec<f32>) -> (usize, usize) {
        let (n0, nb) = (cols.start, cols.len());
        buf.resize(k * nb, 0.0);
        if self.transposed {
            self.to_f32(k, n0, 0, k, buf);
            (1, k)
        } else {
            self.to_f32(n, 0, n0, nb, buf);
            (nb, 1)
        }
    }

    fn gemv(self, x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        gemv(x, m, k, self, n)
    }
}

/// Up to this many rows of `x` (decoding a few sequences) the product streams the weight once
/// through vector multiply-adds, with no gemm and no scratch buffer: memory-bound, as it should.
pub(crate) const GEMV_ROWS: usize = 4;

/// Rows of `x` per task when many rows are multiplied.
const ROW_BLOCK: usize = 512;

/// The f32 bytes of one converted block of columns (measured fastest with 128 rows × 4,096
/// inputs on a 2 MiB-L2 Xeon: 1 MiB took 1.2×, 4 MiB 1.1× as long).
const BLOCK_BYTES: usize = 2 << 20;

/// `x[m, k] · w[k, n]` as a row-major `[m, n]` f32 buffer, the products in `compute`.
pub(crate) fn matmul(
    x: &[f32],
    m: usize,
    k: usize,
    w: impl Columns,
    n: usize,
    compute: ComputeDtype,
) -> Buffer {
    if m == 0 || n == 0 || k == 0 {
        return vec![0.0; m * n].into();
    }
    if m <= GEMV_ROWS {
        return w.gemv(x, m, k, n).into();
    }
    // Tasks of (row block, column block): each converts its columns of the weight into a
    // scratch buffer (2 MiB, L2-sized) and multiplies them by its rows of `x` with one
    // single-threaded gemm. Converting again per row block costs 1/ROW_BLOCK of the product.
    let cols = (BLOCK_BYTES / 4 / k).clamp(16, 1024).min(n);
    let (col_blocks, row_blocks) = (n.div_ceil(cols), m.div_ceil(ROW_BLOCK));
    let write = |out: &mut [MaybeUninit<f32>]| {
        let out_ptr = SharedOut(out.as_mut_ptr().cast::<f32>());
        (0..col_blocks * row_blocks).into_par_iter().for_each_init(
            Vec::new,
            |scratch: &mut Vec<f32>, task| {
                let (n0, m0) = ((task % col_blocks) * cols, (task / col_blocks) * ROW_BLOCK);
                let (nb, mb) = (cols.min(n - n0), ROW_BLOCK.min(m - m0));
                let (rs, cs) = w.columns(k, n, n0..n0 + nb, scratch);
                let product = Product {
                    m: mb,
                    n: nb,
                    k,
                    // SAFETY: each task writes only its own block (rows m0.., columns n0..)
                    // of `out`, all of it (the product does not read it).
                    dst: unsafe { out_ptr.at(m0 * n + n0) },
                    dst_rs: n,
                    accumulate: false,
                    lhs: Operand::new(&x[m0 * k..(m0 + mb) * k], k, 1).into(),
                    rhs: Operand::new(scratch, rs, cs).into(),
                    scale: 1.0,
                    parallel: false,
                };
                // SAFETY: as above; `x` holds rows m0..m0 + mb and `scratch` the block's
                // columns at the strides `columns` returned.
                unsafe { product.run(compute) };
            },
        );
    };
    // SAFETY: the tasks cover every (row block, column block).
    unsafe { buffer::init_with(m * n, write) }
}

/// Rows from which a layer with f32 weights computes in bf16 when asked to (below, in f32).
const BF16_MIN_ROWS: usize = 16;

/// The f32 weight `[k, n]` of [`matmul_f32`]: its values, read with `strides` (row,
/// column), and the autocast scope's cache when it may keep the weight packed.
pub(crate) struct F32Weight<'a> {
    pub values: &'a [f32],
    pub strides: (usize, usize),
    pub cacheable: Option<Cacheable<'a>>,
}

/// `x[m, k] · w[k, n] + bias` for f32 values, as a row-major `[m, n]` buffer, the products
/// in `compute`; `w` is read with its strides, so a transposed view needs no copy. One
/// multi-threaded gemm writes straight into the output, which is first filled with the bias
/// (burn-flex allocates its product through a byte vector that is then copied to realign it,
/// and adds the bias in another pass). In bf16, a cacheable weight is packed once per scope.
pub(crate) fn matmul_f32(
    x: &[f32],
    m: usize,
    k: usize,
    w: F32Weight,
    n: usize,
    bias: Option<&[f32]>,
    compute: ComputeDtype,
) -> Buffer {
    // A few rows (a token being decoded): packing the weight to bf16 costs more than the
    // product, which reads it once in f32 at memory speed. Measured, 2 threads, x · w with w
    // [4096, 11008] (ms, f32 / bf16): 1 row 6.5 / 22.4, 128 rows 44.5 / 35.2.
    let compute = if m < BF16_MIN_ROWS {
        ComputeDtype::F32
    } else {
        compute
    };
    let (values, w_strides) = (w.values, w.strides);
    let packed = match (&w.cacheable, compute) {
        (Some(cacheable), ComputeDtype::Bf16) => {
            let (rs, cs) = w_strides;
            let key = Key::new(values, Packing::Panels { k, n, rs, cs });
            cacheable.words(key, |words| {
                let weight = Operand::new(values, w_strides.0, w_strides.1);
                // SAFETY: the weight's view addresses k × n elements of `values`.
                unsafe { pack_panels(weight, k, n, true, words) };
            })
        }
        _ => None,
    };
    let write = |out: &mut [MaybeUninit<f32>]| {
        if let Some(bias) = bias {
            out.par_chunks_mut(n * ROW_BLOCK).for_each(|rows| {
                for row in rows.chunks_exact_mut(n) {
                    for (o, &b) in row.iter_mut().zip(bias) {
                        o.write(b);
                    }
                }
            });
        }
        if out.is_empty() {
            return;
        }
        // With no more rows than columns, each thread takes its own columns (16-aligned)
        // with a single-threaded gemm: `gemm`'s own split has every thread pack the whole
        // weight. Measured, 2 threads (own split / columns, ms): 154 × 768 × 768 (a CLIP
        // text layer) 1.08 / 0.74, 154 × 3072 × 768 3.76 / 2.72, 50 × 768 × 3072 2.98 / 1.33,
        // 512 × 5120 × 1280 24.3 / 22.8; with more rows than columns it made no difference
        // or lost (8192 × 320 × 320: 5.58 / 5.88). The bf16 product splits its own work
        // without repacking, by blocks of rows and columns.
        let threads = rayon::current_num_threads();
        let parts = if m <= n && compute == ComputeDtype::F32 {
            threads.min(n / 16).max(1)
        } else {
            1
        };
        let out = SharedOut(out.as_mut_ptr().cast::<f32>());
        (0..parts).into_par_iter().for_each(|part| {
            let (c0, c1) = (n * part / parts / 16 * 16, n * (part + 1) / parts / 16 * 16);
            let c1 = if part + 1 == parts { n } else { c1 };
            let product = Product {
                m,
                n: c1 - c0,
                k,
                // SAFETY: `out` holds `m` rows of `n`, of which this part alone writes
                // columns c0..c1.
                dst: unsafe { out.at(c0) },
                dst_rs: n,
                accumulate: bias.is_some(),
                lhs: Operand::new(x, k, 1).into(),
                rhs: match &packed {
                    // bf16 runs as one part (c0 = 0).
                    Some(words) => panels(words, k).into(),
                    None => {
                        Operand::new(&values[c0 * w_strides.1..], w_strides.0, w_strides.1).into()
                    }
                },
                scale: 1.0,
                parallel: parts == 1,
            };
            // SAFETY: `x` holds `m · k` values and `w` `k` rows of `n` at the given strides.
            // Without a bias the product does not read `out` (it writes every element); with
            // one, `out` was filled with it just above.
            unsafe { product.run(compute) };
        });
    };
    // SAFETY: `write` writes every element, by the bias fill or by the product.
    unsafe { buffer::init_with(m * n, write) }
}

/// `x[m, k] · w[k, n]` for a few rows `m`, reading `w` once in its stored order.
fn gemv(x: &[f32], m: usize, k: usize, w: HalfMatrix, n: usize) -> Vec<f32> {
    if w.transposed {
        // Stored [n, k]: each output is the dot product of `x`'s row with one stored row.
        // Column blocks in parallel, computed as [n, m] and transposed at the end.
        let mut out_t = vec![0.0f32; n * m];
        let block = 64;
        out_t
            .par_chunks_mut(block * m)
            .enumerate()
            .for_each(|(b, o)| {
                let rows = &w.bits[b * block * k..][..o.len() / m * k];
                match w.format {
                    Half::Bf16 => bf16_dots(rows, x, k, m, o),
                    Half::F16 => f16_dots(rows, x, k, m, o),
                }
            });
        return untranspose(&out_t, m, n);
    }
    // Stored [k, n]: `out[i, :] += x[i, r] · w[r, :]` row after row, the rows split between
    // threads into blocks whose partial sums are added at the end.
    let rows = (k / (4 * rayon::current_num_threads()).max(1)).max(16);
    // bfloat16 rows of even length read as u32 pairs: see `bf16_pair_axpys`.
    let pairs = match (w.format, n % 2) {
        // SAFETY: any two u16 values form a valid u32.
        (Half::Bf16, 0) => match unsafe { w.bits[..k * n].align_to::<u32>() } {
            (&[], pairs, &[]) => Some(pairs),
            _ => None,
        },
        _ => None,
    };
    let sum = w.bits[..k * n]
        .par_chunks(rows * n)
        .enumerate()
        .fold(
            || vec![0.0f32; m * n],
            |mut acc, (b, block)| {
                match (w.format, pairs) {
                    (_, Some(pairs)) => {
                        let block = &pairs[b * rows * n / 2..][..block.len() / 2];
                        bf16_pair_axpys(block, x, k, b * rows, n, &mut acc)
                    }
                    (Half::Bf16, None) => bf16_axpys(block, x, k, b * rows, n, &mut acc),
                    (Half::F16, None) => f16_axpys(block, x, k, b * rows, n, &mut acc),
                }
                acc
            },
        )
        .reduce(
            || vec![0.0f32; m * n],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        );
    if pairs.is_none() {
        return sum;
    }
    // Each row holds the even columns, then the odd ones.
    let half = n / 2;
    let mut out = vec![0.0f32; m * n];
    for (o, s) in out.chunks_exact_mut(n).zip(sum.chunks_exact(n)) {
        let (even, odd) = s.split_at(half);
        for ((o, &e), &d) in o.chunks_exact_mut(2).zip(even).zip(odd) {
            o[0] = e;
            o[1] = d;
        }
    }
    out
}

/// The `[m, n]` matrix of its `[n, m]` transpose `out_t`.
pub(crate) fn untranspose(out_t: &[f32], m: usize, n: usize) -> Vec<f32> {
    (0..m * n).map(|i| out_t[(i % n) * m + i / n]).collect()
}

/// [`axpys`] of bfloat16 rows read as u32 words, each holding two neighbouring values: the low
/// half shifted up and the high half masked are the two f32 values, one integer operation
/// each, on a full-width load (no widening conversion). The sums of the even columns go to the
/// first half of each `out` row, those of the odd columns to the second; `w` is `[rows, n / 2]`.
///
/// The same loop as [`axpys`] with two outputs per element. Written out rather than shared: a
/// version generic over the values per element (`Fn(W) -> [f32; C]`, the output planes in an
/// inner loop) lost its vectorisation — 2.7 instead of 1.8 ms for one 4096 × 11008 row, 96
/// instead of 80 ms per 4-layer decode step.
#[inline(always)]
fn pair_axpys(w: &[u32], x: &[f32], k: usize, r0: usize, n: usize, out: &mut [f32]) {
    let half = n / 2;
    let rows = w.len() / half.max(1);
    let m = out.len() / n;
    let row = |r: usize| &w[r * half..(r + 1) * half];
    let lo = |b: u32| f32::from_bits(b << 16);
    let hi = |b: u32| f32::from_bits(b & 0xffff_0000);
    let mut r = 0;
    while r + 8 <= rows {
        let (w0, w1, w2, w3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
        let (w4, w5, w6, w7) = (row(r + 4), row(r + 5), row(r + 6), row(r + 7));
        for i in 0..m {
            let a = &x[i * k + r0 + r..][..8];
            let (even, odd) = out[i * n..(i + 1) * n].split_at_mut(half);
            let ws = even
                .iter_mut()
                .zip(odd.iter_mut())
                .zip(w0)
                .zip(w1)
                .zip(w2)
                .zip(w3);
            let ws = ws.zip(w4).zip(w5).zip(w6).zip(w7);
            for (((((((((e, o), &b0), &b1), &b2), &b3), &b4), &b5), &b6), &b7) in ws {
                *e += (a[0] * lo(b0) + a[1] * lo(b1) + a[2] * lo(b2) + a[3] * lo(b3))
                    + (a[4] * lo(b4) + a[5] * lo(b5) + a[6] * lo(b6) + a[7] * lo(b7));
                *o += (a[0] * hi(b0) + a[1] * hi(b1) + a[2] * hi(b2) + a[3] * hi(b3))
                    + (a[4] * hi(b4) + a[5] * hi(b5) + a[6] * hi(b6) + a[7] * hi(b7));
            }
        }
        r += 8;
    }
    for r in r..rows {
        let w0 = row(r);
        for i in 0..m {
            let a = x[i * k + r0 + r];
            let (even, odd) = out[i * n..(i + 1) * n].split_at_mut(half);
            for ((e, o), &b) in even.iter_mut().zip(odd.iter_mut()).zip(w0) {
                *e += a * lo(b);
                *o += a * hi(b);
            }
        }
    }
}

/// `out[i, :] += Σ_r x[i, r0 + r] · w[r, :]` over the rows of `w` (`[rows, n]`); `x` is
/// `[m, k]` and `out` `[m, n]`. Eight rows at a time, so each output is loaded and stored once
/// per eight weights (1.1× faster than four at a 4096 × 11008 weight).
#[inline(always)]
fn axpys(
    w: &[u16],
    x: &[f32],
    k: usize,
    r0: usize,
    n: usize,
    out: &mut [f32],
    f: impl Fn(u16) -> f32 + Copy,
) {
    let rows = w.len() / n;
    let m = out.len() / n;
    let row = |r: usize| &w[r * n..(r + 1) * n];
    let mut r = 0;
    while r + 8 <= rows {
        let (w0, w1, w2, w3) = (row(r), row(r + 1), row(r + 2), row(r + 3));
        let (w4, w5, w6, w7) = (row(r + 4), row(r + 5), row(r + 6), row(r + 7));
        for i in 0..m {
            let a = &x[i * k + r0 + r..][..8];
            let o = &mut out[i * n..(i + 1) * n];
            let ws = o.iter_mut().zip(w0).zip(w1).zip(w2).zip(w3);
            let ws = ws.zip(w4).zip(w5).zip(w6).zip(w7);
            for ((((((((o, &b0), &b1), &b2), &b3), &b4), &b5), &b6), &b7) in ws {
                *o += (a[0] * f(b0) + a[1] * f(b1) + a[2] * f(b2) + a[3] * f(b3))
                    + (a[4] * f(b4) + a[5] * f(b5) + a[6] * f(b6) + a[7] * f(b7));
            }
        }
        r += 8;
    }
    for r in r..rows {
        let w0 = row(r);
        for i in 0..m {
            let a = x[i * k + r0 + r];
            for (o, &b) in out[i * n..(i + 1) * n].iter_mut().zip(w0) {
                *o += a * f(b);
            }
        }
    }
}

/// `out[j, i] = x[i, :] · w[j, :]` for the rows of `w` (`[out.len() / m, k]`); `x` is `[m, k]`.
#[inline(always)]
pub(crate) fn dots<T: Copy>(
    w: &[T],
    x: &[f32],
    k: usize,
    m: usize,
    out: &mut [f32],
    f: impl Fn(T) -> f32 + Copy,
) {
    const LANES: usize = 16;
    for (j, wr) in w.chunks_exact(k).enumerate() {
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            let mut acc = [0.0f32; LANES];
            let (wc, xc) = (wr.chunks_exact(LANES), xr.chunks_exact(LANES));
            let tail: f32 = wc
                .remainder()
                .iter()
                .zip(xc.remainder())
                .map(|(&b, a)| a * f(b))
                .sum();
            for (wc, xc) in wc.zip(xc) {
                let (wc, xc): (&[T; LANES], &[f32; LANES]) =
                    (wc.try_into().unwrap(), xc.try_into().unwrap());
                for l in 0..LANES {
                    acc[l] += xc[l] * f(wc[l]);
                }
            }
            out[j * m + i] = tail + acc.iter().sum::<f32>();
        }
    }
}

dispatch! {
    /// [`axpys`] of bfloat16 rows.
    fn bf16_axpys(w: &[u16], x: &[f32], k: usize, r0: usize, n: usize, out: &mut [f32]) -> () {
        axpys(w, x, k, r0, n, out, bf16_to_f32)
    }
}

dispatch! {
    /// [`pair_axpys`].
    fn bf16_pair_axpys(w: &[u32], x: &[f32], k: usize, r0: usize, n: usize, out: &mut [f32]) -> () {
        pair_axpys(w, x, k, r0, n, out)
    }
}

dispatch! {
    /// [`axpys`] of binary16 rows.
    fn f16_axpys(w: &[u16], x: &[f32], k: usize, r0: usize, n: usize, out: &mut [f32]) -> () {
        axpys(w, x, k, r0, n, out, f16_to_f32)
    }
}

dispatch! {
    /// [`dots`] of bfloat16 rows.
    fn bf16_dots(w: &[u16], x: &[f32], k: usize, m: usize, out: &mut [f32]) -> () {
        dots(w, x, k, m, out, bf16_to_f32)
    }
}

dispatch! {
    /// [`dots`] of binary16 rows.
    fn f16_dots(w: &[u16], x: &[f32], k: usize, m: usize, out: &mut [f32]) -> () {
        dots(w, x, k, m, out, f16_to_f32)
    }
}

/// Converts `dst.len() / cols` rows of `cols` values from `src` (row stride `stride`).
#[inline(always)]
fn convert_rows(src: &[u16], stride: usize, cols: usize, dst: &mut [f32], f: impl Fn(u16) -> f32) {
    for (r, row) in dst.chunks_exact_mut(cols).enumerate() {
        for (d, &s) in row.iter_mut().zip(&src[r * stride..r * stride + cols]) {
            *d = f(s);
        }
    }
}

dispatch! {
    /// bfloat16 → f32: the bits go to the upper half.
    fn bf16_rows(src: &[u16], stride: usize, cols: usize, dst: &mut [f32]) -> () {
        convert_rows(src, stride, cols, dst, bf16_to_f32)
    }
}

dispatch! {
    /// binary16 → f32, branch-free so it vectorises.
    fn f16_rows(src: &[u16], stride: usize, cols: usize, dst: &mut [f32]) -> () {
        convert_rows(src, stride, cols, dst, f16_to_f32)
    }
}

/// bfloat16 → f32: the bits go to the upper half.
#[inline(always)]
fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

/// Exact binary16 → f32 (subnormals, infinities and NaNs included): the exponent and
/// mantissa bits moved into place and rescaled by 2¹¹² in one multiply, which also normalises
/// subnormals; infinities and NaNs get the all-ones exponent.
#[inline(always)]
fn f16_to_f32(h: u16) -> f32 {
    const SCALE: f32 = f32::from_bits(0x7780_0000); // 2^112
    let h = u32::from(h);
    let magnitude = h & 0x7fff;
    let mut bits = (f32::from_bits(magnitude << 13) * SCALE).to_bits();
    if magnitude >= 0x7c00 {
        bits |= 0x7f80_0000;
    }
    f32::from_bits(bits | ((h & 0x8000) << 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let want = f16::from_bits(bits).to_f32();
            let got = f16_to_f32(bits);
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }

    fn check(m: usize, k: usize, n: usize) {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect();
        let wf: Vec<f32> = (0..k * n)
            .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
            .collect();
        // The same values stored [k, n] and as the transpose [n, k].
        let wt: Vec<f32> = (0..n * k).map(|i| wf[(i % k) * n + i / k]).collect();
        let b = |v: &[f32]| v.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>();
        let h = |v: &[f32]| v.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>();
        let (wb, wbt, wh, wht) = (b(&wf), b(&wt), h(&wf), h(&wt));
        let exact_b: Vec<f32> = wb.iter().map(|v| v.to_f32()).collect();
        let exact_h: Vec<f32> = wh.iter().map(|v| v.to_f32()).collect();
        for (w, exact) in [
            (HalfMatrix::bf16(&wb, false), &exact_b),
            (HalfMatrix::bf16(&wbt, true), &exact_b),
            (HalfMatrix::f16(&wh, false), &exact_h),
            (HalfMatrix::f16(&wht, true), &exact_h),
        ] {
            let got = matmul(&x, m, k, w, n, ComputeDtype::F32);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 = (0..k)
                        .map(|c| f64::from(x[i * k + c]) * f64::from(exact[c * n + j]))
                        .sum();
                    let err = (f64::from(got[i * n + j]) - want).abs();
                    assert!(
                        err < 1e-3 * (1.0 + want.abs()),
                        "{m}x{k}x{n} [{i},{j}]: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_a_direct_product() {
        check(1, 7, 5);
        check(2, 37, 150); // the gemv paths, with row and column remainders
        check(GEMV_ROWS + 1, 300, 1100); // two column blocks, a partial last one
        check(ROW_BLOCK + 5, 40, 33); // two row blocks
        check(0, 4, 4);
    }
}
