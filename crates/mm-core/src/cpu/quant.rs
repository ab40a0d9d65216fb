//! ggml's block formats (the tensor types of GGUF files): dequantization to f32 and
//! quantization from it, on the CPU, in parallel chunks of whole blocks.
//!
//! A quantized type stores a row in blocks: 32 values (`Q4_0` … `Q8_0`) or a 256-value
//! super-block (the K-quants) as small integers plus f16 scales. Each dequantizer computes
//! exactly what ggml's `dequantize_row_*` and the `gguf` Python package's
//! `gguf.quants.dequantize` compute, with the same f32 operations in the same order (no fused
//! multiply-adds), so the values are bit-exact with both. Q8_0 quantization rounds as ggml's
//! reference quantizer (and `gguf.quants.quantize`); Q4_K quantization fits each sub-block's
//! scale and minimum by weighted least squares.
//!
//! [`QuantRows`] multiplies f32 activations by a quantized weight through the blocked product
//! of `cpu_linear.rs`, dequantizing a few rows of the weight at a time (never the whole of it).

use std::ops::Range;

use half::{bf16, f16};
use rayon::prelude::*;

use crate::cpu::linear::{self, Columns};
use crate::cpu::simd::dispatch;
use crate::gguf::GgmlType;

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// Values dequantized per parallel task.
const CHUNK: usize = 1 << 15;

/// The f32 of the little-endian f16 at `b[i..i + 2]`.
#[inline(always)]
fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Dequantizes `src` (whole blocks of `ty`) into `dst` (as many values as the blocks hold),
/// in parallel chunks. `false` when `ty` has no dequantizer here (the IQ and ternary types,
/// integers).
pub(crate) fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> bool {
    let Some(kernel) = kernel(ty) else {
        return false;
    };
    par_blocks(ty, (src, ty.type_size()), (dst, ty.block_size()), kernel);
    true
}

/// Whether [`dequantize`] reads `ty`.
pub(crate) fn can_dequantize(ty: GgmlType) -> bool {
    kernel(ty).is_some()
}

/// Dequantizes whole blocks of `src` into `dst`.
type Kernel = fn(&[u8], &mut [f32]);

/// Defines each type's dequantizer as a [`dispatch`]ed (vectorised) loop over its blocks, and
/// [`kernel`]: the dequantizer of a type.
macro_rules! kernels {
    ($($ty:ident => $name:ident: $body:expr;)*) => {
        $(dispatch! {
            #[doc = concat!("Dequantizes whole ", stringify!($ty), " blocks.")]
            fn $name(s: &[u8], d: &mut [f32]) -> () {
                ($body)(s, d)
            }
        })*

        /// The dequantizer of `ty`.
        fn kernel(ty: GgmlType) -> Option<Kernel> {
            Some(match ty {
                $(GgmlType::$ty => $name,)*
                _ => return None,
            })
        }
    };
}

kernels! {
    F32 => f32_blocks: |s, d| elements(s, d, f32::from_le_bytes);
    F16 => f16_blocks: |s, d| elements(s, d, |b: [u8; 2]| f16::from_le_bytes(b).to_f32());
    BF16 => bf16_blocks: |s, d| elements(s, d, |b: [u8; 2]| bf16::from_le_bytes(b).to_f32());
    Q4_0 => q4_0_blocks: |s, d| blocks(s, d, q4_0);
    Q4_1 => q4_1_blocks: |s, d| blocks(s, d, q4_1);
    Q5_0 => q5_0_blocks: |s, d| blocks(s, d, q5_0);
    Q5_1 => q5_1_blocks: |s, d| blocks(s, d, q5_1);
    Q8_0 => q8_0_blocks: |s, d| blocks(s, d, q8_0);
    Q2_K => q2_k_blocks: |s, d| blocks(s, d, q2_k);
    Q3_K => q3_k_blocks: |s, d| blocks(s, d, q3_k);
    Q4_K => q4_k_blocks: |s, d| blocks(s, d, q4_k);
    Q5_K => q5_k_blocks: |s, d| blocks(s, d, q5_k);
    Q6_K => q6_k_blocks: |s, d| blocks(s, d, q6_k);
}

/// One-value "blocks": `f` of each `B`-byte group.
#[inline(always)]
fn elements<const B: usize>(src: &[u8], dst: &mut [f32], f: impl Fn([u8; B]) -> f32) {
    blocks(src, dst, |b: &[u8; B], y: &mut [f32; 1]| y[0] = f(*b));
}

/// `f` on each block of `N` items of `src` and the matching block of `M` items of `dst`.
#[inline(always)]
fn blocks<A, B, const N: usize, const M: usize>(
    src: &[A],
    dst: &mut [B],
    f: impl Fn(&[A; N], &mut [B; M]),
) {
    for (a, b) in src
        .as_chunks::<N>()
        .0
        .iter()
        .zip(dst.as_chunks_mut::<M>().0)
    {
        f(a, b);
    }
}

/// `kernel` over `src` and `dst` (whole blocks of `ty`: `per_src` / `per_dst` items a block)
/// in parallel tasks of about [`CHUNK`] values.
fn par_blocks<A: Sync, B: Send>(
    ty: GgmlType,
    (src, per_src): (&[A], usize),
    (dst, per_dst): (&mut [B], usize),
    kernel: fn(&[A], &mut [B]),
) {
    let blocks = CHUNK.div_ceil(ty.block_size());
    dst.par_chunks_mut(blocks * per_dst)
        .zip(src.par_chunks(blocks * per_src))
        .for_each(|(dst, src)| kernel(src, dst));
}

/// Q8_0: f16 scale, 32 × i8.
fn q8_0(b: &[u8; 34], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, &q) in y.iter_mut().zip(&b[2..]) {
        *y = q as i8 as f32 * d;
    }
}

/// Q4_0: f16 scale, 32 × 4 bits (low nibbles: values 0–15, high: 16–31), offset 8.
fn q4_0(b: &[u8; 18], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (j, &q) in b[2..].iter().enumerate() {
        y[j] = ((q & 0x0F) as i8 - 8) as f32 * d;
        y[j + 16] = ((q >> 4) as i8 - 8) as f32 * d;
    }
}

/// Q4_1: f16 scale and minimum, 32 × 4 bits.
fn q4_1(b: &[u8; 20], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (j, &q) in b[4..].iter().enumerate() {
        y[j] = (q & 0x0F) as f32 * d + m;
        y[j + 16] = (q >> 4) as f32 * d + m;
    }
}

/// The 5-bit values of a Q5_0 / Q5_1 block: low nibbles `qs`, fifth bits `qh` (bit j for
/// value j).
#[inline(always)]
fn five_bits(qh: &[u8], qs: &[u8]) -> [u8; 32] {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    let mut q = [0u8; 32];
    for (j, &byte) in qs.iter().enumerate().take(16) {
        q[j] = (byte & 0x0F) | (((qh >> j) & 1) as u8) << 4;
        q[j + 16] = (byte >> 4) | (((qh >> (j + 16)) & 1) as u8) << 4;
    }
    q
}

/// Q5_0: f16 scale, 32 × 5 bits, offset 16.
fn q5_0(b: &[u8; 22], y: &mut [f32; 32]) {
    let d = f16_at(b, 0);
    for (y, q) in y.iter_mut().zip(five_bits(&b[2..6], &b[6..])) {
        *y = (q as i8 - 16) as f32 * d;
    }
}

/// Q5_1: f16 scale and minimum, 32 × 5 bits.
fn q5_1(b: &[u8; 24], y: &mut [f32; 32]) {
    let (d, m) = (f16_at(b, 0), f16_at(b, 2));
    for (y, q) in y.iter_mut().zip(five_bits(&b[4..8], &b[8..])) {
        *y = q as f32 * d + m;
    }
}

/// Q2_K: 16 × (4-bit scale, 4-bit minimum), 256 × 2 bits, f16 super-scales `d`, `dmin`.
/// Value `e` sits in byte `32·(e / 128) + e % 32` at bit `2·(e % 128 / 32)`.
fn q2_k(b: &[u8; 84], y: &mut [f32; 256]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (f16_at(b, 80), f16_at(b, 82));
    for (g, y) in y.as_chunks_mut::<16>().0.iter_mut().enumerate() {
        let dl = d * (scales[g] & 0x0F) as f32;
        let ml = dmin * (scales[g] >> 4) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let e = 16 * g + l;
            let q = (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
            *y = dl * q as f32 - ml;
        }
    }
}

/// Q3_K: 256 × (2 low bits + a high bit in `hmask`), 16 six-bit scales (offset 32), f16 `d`.
/// A set high bit means no offset; a clear one subtracts 4.
fn q3_k(b: &[u8; 110], y: &mut [f32; 256]) {
    let (hmask, qs, sc) = (&b[..32], &b[32..96], &b[96..108]);
    let d = f16_at(b, 108);
    for (g, y) in y.as_chunks_mut::<16>().0.iter_mut().enumerate() {
        let low = if g < 8 { sc[g] & 0x0F } else { sc[g - 8] >> 4 };
        let high = (sc[8 + g % 4] >> (2 * (g / 4))) & 3;
        let dl = d * ((low | high << 4) as i8 - 32) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let e = 16 * g + l;
            let ql = (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3;
            let qh = (hmask[e % 32] >> (e / 32)) & 1;
            *y = dl * (ql as i8 - (((qh ^ 1) << 2) as i8)) as f32;
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a Q4_K / Q5_K super-block (12 bytes: the
/// low 6 bits of bytes 0–3 / 4–7 for sub-blocks 0–3, nibbles of bytes 8–11 plus the top two
/// bits of bytes 0–7 for sub-blocks 4–7).
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K: f16 `d`, `dmin`, 8 six-bit scales and minimums, 256 × 4 bits (sub-block `2i` in the
/// low nibbles of bytes `32i..32i + 32`, `2i + 1` in their high nibbles).
fn q4_k(b: &[u8; 144], y: &mut [f32; 256]) {
    let (d, dmin, scales, qs) = (f16_at(b, 0), f16_at(b, 2), &b[4..16], &b[16..]);
    for (j, y) in y.as_chunks_mut::<32>().0.iter_mut().enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (dj, mj) = (d * sc as f32, dmin * m as f32);
        let (bytes, shift) = (&qs[32 * (j / 2)..], 4 * (j % 2));
        for (y, &q) in y.iter_mut().zip(bytes) {
            *y = dj * ((q >> shift) & 0x0F) as f32 - mj;
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit per value (bit `j` of `qh[l]` for value `l` of sub-block `j`).
fn q5_k(b: &[u8; 176], y: &mut [f32; 256]) {
    let (d, dmin, scales) = (f16_at(b, 0), f16_at(b, 2), &b[4..16]);
    let (qh, qs) = (&b[16..48], &b[48..]);
    for (j, y) in y.as_chunks_mut::<32>().0.iter_mut().enumerate() {
        let (sc, m) = scale_min_k4(j, scales);
        let (dj, mj) = (d * sc as f32, dmin * m as f32);
        let (bytes, shift) = (&qs[32 * (j / 2)..], 4 * (j % 2));
        for (l, y) in y.iter_mut().enumerate() {
            let q = ((bytes[l] >> shift) & 0x0F) | ((qh[l] >> j) & 1) << 4;
            *y = dj * q as f32 - mj;
        }
    }
}

/// Q6_K: 256 × (4 low bits in `ql`, 2 high bits in `qh`), offset 32, 16 i8 scales, f16 `d`.
fn q6_k(b: &[u8; 210], y: &mut [f32; 256]) {
    let (ql, qh, scales) = (&b[..128], &b[128..192], &b[192..208]);
    let d = f16_at(b, 208);
    for (g, y) in y.as_chunks_mut::<16>().0.iter_mut().enumerate() {
        let dl = d * (scales[g] as i8) as f32;
        for (l, y) in y.iter_mut().enumerate() {
            let e = 16 * g + l;
            let (half, r) = (e / 128, e % 128);
            let low = (ql[64 * half + r % 64] >> (4 * (r / 64))) & 0x0F;
            let high = (qh[32 * half + r % 32] >> (2 * (r / 32))) & 3;
            *y = dl * ((low | high << 4) as i8 - 32) as f32;
        }
    }
}

/// A `[k, n]` weight stored as its `[n, k]` transpose (a linear layer's `[out, in]`) in rows
/// of ggml blocks, for [`linear::matmul`]: a block of `nb` columns is `nb` stored rows,
/// dequantized into the scratch buffer of the task that multiplies them.
#[derive(Clone, Copy)]
pub(crate) struct QuantRows<'a> {
    data: &'a [u8],
    kernel: Kernel,
    row_bytes: usize,
}

impl<'a> QuantRows<'a> {
    /// The rows of `k` values of `ty` in `data` (whole rows, `k` whole blocks); `None` when
    /// `ty` has no dequantizer here.
    pub fn new(ty: GgmlType, data: &'a [u8], k: usize) -> Option<Self> {
        Some(Self {
            data,
            kernel: kernel(ty)?,
            row_bytes: k / ty.block_size() * ty.type_size(),
        })
    }

    /// Stored rows `r0..r0 + dst.len() / k` dequantized into `dst`.
    fn rows(self, r0: usize, dst: &mut [f32], k: usize) {
        let n = dst.len() / k.max(1);
        (self.kernel)(&self.data[r0 * self.row_bytes..][..n * self.row_bytes], dst);
    }
}

impl Columns for QuantRows<'_> {
    fn columns(self, k: usize, _: usize, cols: Range<usize>, buf: &mut Vec<f32>) -> (usize, usize) {
        buf.resize(k * cols.len(), 0.0);
        self.rows(cols.start, buf, k);
        (1, k)
    }

    /// Tasks of 16 stored rows, each dequantized into a scratch buffer of the task (16 · k
    /// values, L1/L2-sized) and multiplied by the rows of `x` with vectorised dot products.
    fn gemv(self, x: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        const ROWS: usize = 16;
        let mut out_t = vec![0.0f32; n * m];
        out_t.par_chunks_mut(ROWS * m).enumerate().for_each_init(
            Vec::new,
            |scratch: &mut Vec<f32>, (b, out)| {
                scratch.resize(out.len() / m * k, 0.0);
                self.rows(b * ROWS, scratch, k);
                f32_dots(scratch, x, k, m, out);
            },
        );
        linear::untranspose(&out_t, m, n)
    }
}

dispatch! {
    /// `out[j, i] = x[i, :] · w[j, :]` for f32 rows `w` (`[out.len() / m, k]`).
    fn f32_dots(w: &[f32], x: &[f32], k: usize, m: usize, out: &mut [f32]) -> () {
        linear::dots(w, x, k, m, out, |v| v)
    }
}

/// Quantizes `x` (whole blocks of `ty`) into `out` (as many bytes as the blocks take) with
/// the quantizer of `ty`: `false` when there is none here (F32, F16, BF16, Q8_0 and Q4_K
/// have one). `x` must be finite.
pub(crate) fn quantize(ty: GgmlType, x: &[f32], out: &mut [u8]) -> bool {
    let kernel: fn(&[f32], &mut [u8]) = match ty {
        GgmlType::F32 => |x, o| blocks(x, o, |x: &[f32; 1], o| *o = x[0].to_le_bytes()),
        GgmlType::F16 => |x, o| {
            blocks(x, o, |x: &[f32; 1], o| {
                *o = f16::from_f32(x[0]).to_le_bytes()
            })
        },
        GgmlType::BF16 => |x, o| {
            blocks(x, o, |x: &[f32; 1], o| {
                *o = bf16::from_f32(x[0]).to_le_bytes()
            })
        },
        GgmlType::Q8_0 => |x, o| blocks(x, o, quantize_q8_0),
        GgmlType::Q4_K => |x, o| blocks(x, o, quantize_q4_k),
        _ => return false,
    };
    par_blocks(ty, (x, ty.block_size()), (out, ty.type_size()), kernel);
    true
}

/// Whether [`quantize`] writes `ty`.
pub(crate) fn can_quantize(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 | GgmlType::Q8_0 | GgmlType::Q4_K
    )
}

/// Q8_0 as ggml's `quantize_row_q8_0_ref`: scale `max |x| / 127` (stored as f16), values
/// `round(x / scale)` (halves away from zero) with the unrounded f32 scale.
fn quantize_q8_0(x: &[f32; 32], out: &mut [u8; 34]) {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    out[..2].copy_from_slice(&f16::from_f32(d).to_le_bytes());
    for (o, &v) in out[2..].iter_mut().zip(x) {
        *o = (v * id).round() as i8 as u8;
    }
}

/// The largest value of Q4_K's 6-bit sub-block scales and minimums.
const K_SCALE_MAX: f32 = 63.0;

/// Q4_K: each 32-value sub-block's `x ≈ scale · q − min` (`q` in 0..=15, `min ≥ 0`) fitted by
/// [`fit_scale_min`], the eight scales and minimums stored as 6-bit multiples of the
/// super-block's f16 `d` and `dmin`, then every value rounded to the nearest level of the
/// stored (rounded) scale and minimum.
fn quantize_q4_k(x: &[f32; QK_K], out: &mut [u8; 144]) {
    let subs = x.as_chunks::<32>().0;
    let fits: Vec<(f32, f32)> = subs.iter().map(fit_scale_min).collect();
    let max_scale = fits.iter().fold(0.0f32, |m, f| m.max(f.0));
    let max_min = fits.iter().fold(0.0f32, |m, f| m.max(f.1));
    let d = f16::from_f32(max_scale / K_SCALE_MAX);
    let dmin = f16::from_f32(max_min / K_SCALE_MAX);
    let level = |v: f32, step: f16| {
        let step = step.to_f32();
        if step > 0.0 {
            (v / step).round().clamp(0.0, K_SCALE_MAX) as u8
        } else {
            0
        }
    };
    let mut scales = [0u8; 12];
    let mut levels = [[0u8; 32]; 8];
    for (j, (&(scale, min), sub)) in fits.iter().zip(subs).enumerate() {
        let (ls, lm) = (level(scale, d), level(min, dmin));
        if j < 4 {
            scales[j] = ls;
            scales[j + 4] = lm;
        } else {
            scales[j + 4] = (ls & 0x0F) | (lm & 0x0F) << 4;
            scales[j - 4] |= (ls >> 4) << 6;
            scales[j] |= (lm >> 4) << 6;
        }
        let step = d.to_f32() * ls as f32;
        let offset = dmin.to_f32() * lm as f32;
        if step > 0.0 {
            for (q, &v) in levels[j].iter_mut().zip(sub) {
                *q = ((v + offset) / step).round().clamp(0.0, 15.0) as u8;
            }
        }
    }
    out[..2].copy_from_slice(&d.to_le_bytes());
    out[2..4].copy_from_slice(&dmin.to_le_bytes());
    out[4..16].copy_from_slice(&scales);
    for (i, bytes) in out[16..].as_chunks_mut::<32>().0.iter_mut().enumerate() {
        for (l, byte) in bytes.iter_mut().enumerate() {
            *byte = levels[2 * i][l] | levels[2 * i + 1][l] << 4;
        }
    }
}

/// The `(scale, min)` of `x ≈ scale · q − min` for one Q4_K sub-block, `q` in 0..=15, `min ≥
/// 0`, minimising the squared error weighted by `rms(x) + |x|` (large values count more).
/// Candidate level assignments come from spreading `[min(x, 0), max(x)]` over 14 to 16 steps;
/// each is refitted by weighted least squares and the best kept.
fn fit_scale_min(x: &[f32; 32]) -> (f32, f32) {
    let lo = x.iter().fold(0.0f32, |m, &v| m.min(v));
    let hi = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    if hi <= lo {
        return (0.0, -lo);
    }
    let rms = (x.iter().map(|v| v * v).sum::<f32>() / 32.0).sqrt();
    let w: [f32; 32] = std::array::from_fn(|i| rms + x[i].abs());
    let (sum_w, sum_x) = x
        .iter()
        .zip(&w)
        .fold((0.0f32, 0.0f32), |(sw, sx), (&v, &w)| (sw + w, sx + w * v));
    let error = |scale: f32, offset: f32, q: &[f32; 32]| -> f32 {
        (0..32)
            .map(|i| w[i] * (scale * q[i] + offset - x[i]).powi(2))
            .sum()
    };
    let levels = |steps: f32| -> [f32; 32] {
        let inv = steps / (hi - lo);
        std::array::from_fn(|i| ((x[i] - lo) * inv).round().clamp(0.0, 15.0))
    };
    let mut best = (hi - lo) / 15.0;
    let mut best_offset = lo;
    let mut best_error = error(best, lo, &levels(15.0));
    for t in 0..=20 {
        let q = levels(14.0 + 0.1 * t as f32);
        let (mut sum_q, mut sum_q2, mut sum_xq) = (0.0f32, 0.0f32, 0.0f32);
        for i in 0..32 {
            sum_q += w[i] * q[i];
            sum_q2 += w[i] * q[i] * q[i];
            sum_xq += w[i] * q[i] * x[i];
        }
        let det = sum_w * sum_q2 - sum_q * sum_q;
        if det <= 0.0 {
            continue;
        }
        let mut scale = (sum_w * sum_xq - sum_x * sum_q) / det;
        let mut offset = (sum_q2 * sum_x - sum_q * sum_xq) / det;
        if offset > 0.0 {
            // The minimum is stored as a non-negative amount subtracted.
            offset = 0.0;
            scale = sum_xq / sum_q2;
        }
        let e = error(scale, offset, &q);
        if scale > 0.0 && e < best_error {
            (best, best_offset, best_error) = (scale, offset, e);
        }
    }
    (best, -best_offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Q8_0 quantization rounds halves away from zero and keeps the scale's f16 rounding out
    /// of the values (ggml's reference): a block holding ±127 multiples of a power of two
    /// comes back exactly.
    #[test]
    fn q8_0_round_trip_of_representable_values() {
        let x: [f32; 32] = std::array::from_fn(|i| (i as f32 - 16.0) * 0.25);
        let mut x = x;
        x[31] = 127.0 * 0.25;
        let mut q = [0u8; 34];
        quantize_q8_0(&x, &mut q);
        let mut y = [0f32; 32];
        q8_0(&q, &mut y);
        assert_eq!(x, y);
    }

    /// A constant sub-block, an all-zero one and one of negative values only are fitted
    /// without error.
    #[test]
    fn q4_k_fits_degenerate_sub_blocks() {
        assert_eq!(fit_scale_min(&[0.0; 32]), (0.0, 0.0));
        assert_eq!(fit_scale_min(&[-2.0; 32]), (0.0, 2.0));
        let (scale, min) = fit_scale_min(&[3.0; 32]);
        assert_eq!(min, 0.0);
        assert!((scale * 15.0 - 3.0).abs() < 1e-6);
    }
}
