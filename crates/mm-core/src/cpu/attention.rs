//! Scaled dot-product attention on the CPU, for f32 tensors on the flex backend.
//!
//! burn-flex's fused attention runs one (batch, head) pair per thread, tiles the keys by 64
//! and computes the softmax with the scalar `exp` of the C library; at Stable Diffusion's 4,096
//! tokens that `exp` is most of the time. This kernel splits the work into blocks of query
//! rows (so two cores share even a single head), computes a block's scores against every key
//! with one `gemm` call, runs the softmax with a vectorised `exp` (compiled for AVX-512 or
//! AVX2 and picked at run time), and multiplies by the values with a second `gemm`. The heads
//! are read through their strides (the views `split_heads` makes need no copy), and the result
//! is written with the heads merged. A block
//! holds at most [`SCORE_BUDGET`] scores, so memory stays bounded whatever the sequence
//! length: the full `[heads, seq_q, seq_k]` score matrix is never materialised.

use std::mem::MaybeUninit;

use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use crate::aligned::AlignedVec;
use crate::buffer::{self, Buffer, SharedOut};
use crate::cpu::bf16;
use crate::cpu::gemm::{self, Matrix, Packed, Product};
use crate::host::View;
use crate::precision::{ComputeDtype, autocast_dtype};

/// The most scores (f32) one block of query rows holds: 2 MiB (128 query rows at 4,096 keys;
/// measured fastest on a 2 MiB-L2 Xeon: 64 rows took 1.9×, 256 rows 1.1× as long).
const SCORE_BUDGET: usize = 512 * 1024;

/// One of the query, key and value tensors, `[batch, heads, seq, dim]` with unit stride along
/// `dim`: `data` from element `(0, 0, 0, 0)` on, and the strides of the other three axes. The
/// views of `split_heads` (`[batch, seq, heads, dim]` storage) are read in place.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub strides: [usize; 3],
}

impl<'a> Operand<'a> {
    /// The storage from `(batch, head, 0, 0)` on.
    fn head(&self, batch: usize, head: usize) -> &'a [f32] {
        &self.data[batch * self.strides[0] + head * self.strides[1]..]
    }

    /// The stride between positions.
    fn row(&self) -> usize {
        self.strides[2]
    }
}

/// The problem: `q` is `[batch, heads, sq, d]`, `k` `[batch, heads, sk, d]`, `v` `[batch,
/// heads, sk, dv]`.
pub(crate) struct Problem<'a> {
    pub q: Operand<'a>,
    pub k: Operand<'a>,
    pub v: Operand<'a>,
    pub batch: usize,
    pub heads: usize,
    pub sq: usize,
    pub sk: usize,
    pub d: usize,
    pub dv: usize,
    /// `[batch, sk]`, true = this key is padding.
    pub key_padding: Option<&'a [bool]>,
    /// Query `i` sees keys `0..=i + sk - sq`.
    pub causal: bool,
    /// The arithmetic of the two products (the softmax is f32).
    pub compute: ComputeDtype,
}

/// The operand of a `[batch, heads, seq, dim]` view with unit stride along `dim`.
fn operand<'a>(view: &'a View<4>) -> Option<Operand<'a>> {
    let [sb, sh, ss, 1] = view.strides() else {
        return None;
    };
    Some(Operand {
        data: view.data(),
        strides: [sb, sh, ss],
    })
}

/// The kernel on `[batch, heads, seq, dim]` f32 tensors of the flex device, read in place
/// when their last axis has unit stride (copied first otherwise); `key_padding` is `[batch,
/// sk]` (true = padding). The result is a `[batch, heads, sq, dv]` view of `[batch, sq, heads,
/// dv]` storage, so merging the heads back needs no copy.
pub(crate) fn attention_tensors(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    key_padding: Option<&[bool]>,
    causal: bool,
) -> Tensor<4> {
    let device = q.device();
    let [batch, heads, sq, d] = q.dims();
    let [_, _, sk, dv] = v.dims();
    let view = |t: Tensor<4>| {
        View::new(t.clone())
            .filter(|v| v.strides()[3] == 1)
            .or_else(|| View::new(Tensor::from_data(t.into_data(), &device)))
            .expect("an f32 tensor of the flex device")
    };
    let (q, k, v) = (view(q), view(k), view(v));
    let operands = (operand(&q), operand(&k), operand(&v));
    let (Some(q), Some(k), Some(v)) = operands else {
        unreachable!("views with unit stride along the last axis");
    };
    let out = attention(&Problem {
        q,
        k,
        v,
        batch,
        heads,
        sq,
        sk,
        d,
        dv,
        key_padding,
        causal,
        compute: autocast_dtype(),
    });
    Tensor::<4>::from_data(out.into_data([batch, sq, heads, dv]), &device).swap_dims(1, 2)
}

/// `softmax(q kᵀ / √d) v` as `[batch, sq, heads, dv]`.
pub(crate) fn attention(p: &Problem) -> Buffer {
    let Problem {
        batch,
        heads,
        sq,
        sk,
        d,
        dv,
        ..
    } = *p;
    let bh = batch * heads;
    // Over few keys (cross-attention to a prompt) the products are small next to the softmax,
    // and packing them for bf16 costs more than it saves: they stay f32 below BF16_MIN_KEYS.
    let bf16 = p.compute == ComputeDtype::Bf16 && sk >= BF16_MIN_KEYS;
    let compute = if bf16 {
        ComputeDtype::Bf16
    } else {
        ComputeDtype::F32
    };
    // bf16: smaller blocks of rows, whose scores stay in L2 between the products and the
    // softmax (the products are 4–8× faster than in f32, the memory traffic the same).
    let budget = if bf16 { SCORE_BUDGET / 4 } else { SCORE_BUDGET };
    let rows = (budget / sk.max(1)).clamp(4, 256).min(sq.max(1));
    let scale = 1.0 / (d as f32).sqrt();
    // In bf16, each head's keys and values packed once as bf16 pairs, the right operands of
    // its two products for every query block.
    let packed = bf16.then(|| PackedHeads::new(p));
    // From TRANSPOSE_MIN_KEYS keys, each head's keys as [d, sk]: unit column stride for the
    // score product, which every query block of the head reuses.
    let transposed = packed.is_none() && sk >= TRANSPOSE_MIN_KEYS;
    let transpose_all = |kt: &mut [MaybeUninit<f32>]| {
        kt.par_chunks_mut(d * sk)
            .enumerate()
            .for_each(|(h, kt)| transpose(p.k.head(h / heads, h % heads), p.k.row(), sk, d, kt))
    };
    // SAFETY: `transpose` writes every element of each head's [d, sk] block.
    let kt = unsafe { buffer::init_with(if transposed { bh * d * sk } else { 0 }, transpose_all) };
    let blocks = sq.div_ceil(rows);
    let write = |out: &mut [MaybeUninit<f32>]| {
        let out = SharedOut(out.as_mut_ptr().cast::<f32>());
        let out_rs = heads * dv;
        (0..bh * blocks).into_par_iter().for_each_init(
            <(AlignedVec<f32>, Vec<f32>, AlignedVec<u32>)>::default,
            |(scores, norms, probs), task| {
                let (h, blk) = (task / blocks, task % blocks);
                let (b, hh) = (h / heads, h % heads);
                let r0 = blk * rows;
                let n = rows.min(sq - r0);
                let scores = scores.sized(n * sk);
                let q = &p.q.head(b, hh)[r0 * p.q.row()..];
                let (keys, values): (Matrix, Matrix) = match &packed {
                    Some(packed) => packed.operands(h),
                    None => {
                        let (keys, key_cs, key_rs) = if transposed {
                            (&kt[h * d * sk..(h + 1) * d * sk], 1, sk)
                        } else {
                            (p.k.head(b, hh), p.k.row(), 1)
                        };
                        let v = p.v.head(b, hh);
                        (
                            gemm::Operand::new(keys, key_rs, key_cs).into(),
                            gemm::Operand::new(v, p.v.row(), 1).into(),
                        )
                    }
                };
                // scores[n, sk] = scale · q[n, d] · keys[sk, d]ᵀ
                let product = Product {
                    m: n,
                    n: sk,
                    k: d,
                    dst: scores.as_mut_ptr(),
                    dst_rs: sk,
                    accumulate: false,
                    lhs: gemm::Operand::new(q, p.q.row(), 1).into(),
                    rhs: keys,
                    // bf16 scales in the softmax: its tiles go straight to `scores`.
                    scale: if bf16 { 1.0 } else { scale },
                    parallel: false,
                };
                // SAFETY: the operands hold the rows their strides address (the tensors'
                // layouts), and `scores` is [n, sk].
                unsafe { product.run(compute) };
                let padding = p.key_padding.map(|m| &m[b * sk..(b + 1) * sk]);
                // Unnormalised: each output row is divided by its sum after the product, a pass
                // over `n · dv` values instead of `n · sk`.
                norms.clear();
                let visible = |i: usize| {
                    let visible = if p.causal {
                        (r0 + i + sk + 1).saturating_sub(sq)
                    } else {
                        sk
                    };
                    visible.min(sk)
                };
                // In bf16 the probabilities go straight into the packed left operand of the
                // output product (bf16 pairs, rows `depth` words apart), not back into `scores`.
                let probs = packed.as_ref().map(|_| {
                    let depth = bf16::depth(sk);
                    let len = n.div_ceil(bf16::AMX_ROWS) * bf16::AMX_ROWS * depth;
                    let (rows, spare) = bf16::sized(probs, len).split_at_mut(n * depth);
                    spare.fill(0);
                    let rows = scores
                        .chunks_exact_mut(sk)
                        .zip(rows.chunks_exact_mut(depth));
                    norms.extend(rows.enumerate().map(|(i, (row, words))| {
                        exp_row_bf16(row, visible(i), padding, scale, words)
                    }));
                    Packed::new(probs, depth)
                });
                if probs.is_none() {
                    norms.extend(
                        (scores.chunks_exact_mut(sk).enumerate())
                            .map(|(i, row)| exp_row(row, visible(i), padding)),
                    );
                }
                // SAFETY: this task alone writes rows r0..r0 + n of head (b, hh): elements
                // ((b · sq + r0 + i) · heads + hh) · dv + c of the [batch, sq, heads, dv]
                // output, for i < n and c < dv.
                let o = unsafe { out.at(((b * sq + r0) * heads + hh) * dv) };
                // o[n, dv] = scores[n, sk] · v[sk, dv]
                let product = Product {
                    m: n,
                    n: dv,
                    k: sk,
                    dst: o,
                    dst_rs: out_rs,
                    accumulate: false,
                    lhs: match probs {
                        Some(probs) => probs.into(),
                        None => gemm::Operand::new(scores, sk, 1).into(),
                    },
                    rhs: values,
                    scale: 1.0,
                    parallel: false,
                };
                // SAFETY: as above; the product writes every element of its rows (not
                // reading them).
                unsafe { product.run(compute) };
                for (i, &norm) in norms.iter().enumerate() {
                    // SAFETY: row i of this task's rows, written by the gemm just above.
                    let row = unsafe { std::slice::from_raw_parts_mut(o.add(i * out_rs), dv) };
                    simd::scale(row, norm);
                }
            },
        );
    };
    // SAFETY: the tasks cover every (head, row block), and each writes all its rows.
    unsafe { buffer::init_with(batch * sq * heads * dv, write) }
}

/// Every head's keys and values as bf16 pairs, packed once per call: the keys as the right
/// operand `[d, sk]` of the score product, the values as the right operand `[sk, dv]` of the
/// output product.
struct PackedHeads {
    keys: AlignedVec<u32>,
    values: AlignedVec<u32>,
    /// Words per head, and per pair-row.
    key_head: usize,
    key_width: usize,
    value_head: usize,
    value_width: usize,
}

impl PackedHeads {
    fn new(p: &Problem) -> Self {
        let (sk, d, dv) = (p.sk, p.d, p.dv);
        let (key_width, value_width) = (sk + bf16::NR, dv + bf16::NR);
        let key_head = bf16::depth(d) * key_width;
        let value_head = bf16::depth(sk) * value_width;
        let heads = p.batch * p.heads;
        let (mut keys, mut values) = (AlignedVec::new(), AlignedVec::new());
        bf16::zeroed(&mut keys, heads * key_head);
        bf16::zeroed(&mut values, heads * value_head);
        keys.par_chunks_mut(key_head.max(1))
            .zip(values.par_chunks_mut(value_head.max(1)))
            .enumerate()
            .for_each_init(Vec::new, |column, (h, (keys, values))| {
                let (b, hh) = (h / p.heads, h % p.heads);
                let k = p.k.head(b, hh);
                bf16::pack_pair_columns_into(k, sk, p.k.row(), d, key_width, keys, column);
                let v = p.v.head(b, hh);
                bf16::pack_pair_rows_into(v, sk, p.v.row(), dv, value_width, values);
            });
        Self {
            keys,
            values,
            key_head,
            key_width,
            value_head,
            value_width,
        }
    }

    /// The right operands of head `h`'s two products.
    fn operands(&self, h: usize) -> (Matrix, Matrix) {
        let keys = &self.keys[h * self.key_head..];
        let values = &self.values[h * self.value_head..];
        (
            Packed::new(keys, self.key_width).into(),
            Packed::new(values, self.value_width).into(),
        )
    }
}

/// The key count from which [`attention`] computes its products in bf16 when asked to
/// (measured, SD 1.5's cross-attention, 4,096 queries × 77 keys × 40 dims, batch 2 × 8
/// heads: 11.7 ms in f32, 15.9 ms in bf16; self-attention over 1,024 keys: 30.3 / 19.0 ms).
const BF16_MIN_KEYS: usize = 128;

/// The key count from which [`attention`] transposes each head's keys first (measured: 4,096
/// keys × 40 dims 1.07× faster transposed; 1,024 × 80 1.1× slower).
const TRANSPOSE_MIN_KEYS: usize = 2048;

/// `dst[c, r] = src[r · stride + c]` for `rows` rows of `cols` values (every element of `dst`
/// written), 16 source rows at a time (they stay in L1 while every column of them is written
/// out contiguously).
fn transpose(src: &[f32], stride: usize, rows: usize, cols: usize, dst: &mut [MaybeUninit<f32>]) {
    const TILE: usize = 16;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c in 0..cols {
            let out = &mut dst[c * rows + r0..c * rows + r1];
            for (o, r) in out.iter_mut().zip(r0..r1) {
                o.write(src[r * stride + c]);
            }
        }
    }
}

/// Attention of one query per head (a decoding step) over cached keys and values, read in
/// place: `q` is `[batch, heads, 1, d]`, `k` and `v` are `[batch, kv_heads, seq, d]` (each key
/// head serves `heads / kv_heads` consecutive query heads) and may be strided views; `hidden`
/// is `[batch, seq]` (true = masked). `None` when the tensors are not f32 on flex.
pub(crate) fn decode_tensors(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    hidden: Option<&[bool]>,
) -> Option<Tensor<4>> {
    let device = q.device();
    let [b, heads, _, d] = q.dims();
    let [_, kv_heads, sk, dv] = v.dims();
    let rep = heads / kv_heads;
    let (k, v) = (View::new(k)?, View::new(v)?);
    let (k, v) = (operand(&k)?, operand(&v)?);
    let q = q.into_data();
    let q: &[f32] = q.as_slice().ok()?;
    let scale = 1.0 / (d as f32).sqrt();
    let mut out = vec![0.0f32; b * heads * dv];
    // One task per (batch, key head): its `rep` query heads share the keys it reads.
    out.par_chunks_mut(rep * dv).enumerate().for_each_init(
        Vec::new,
        |scores: &mut Vec<f32>, (task, o)| {
            let (batch, g) = (task / kv_heads, task % kv_heads);
            let (keys, ks) = (k.head(batch, g), k.row());
            let (values, vs) = (v.head(batch, g), v.row());
            let hidden = hidden.map(|m| &m[batch * sk..(batch + 1) * sk]);
            scores.resize(sk, 0.0);
            for (r, o) in o.chunks_exact_mut(dv).enumerate() {
                let qh = &q[(task * rep + r) * d..][..d];
                simd::scores(qh, keys, ks, scale, scores);
                softmax_row(scores, sk, hidden);
                simd::weighted_sum(scores, values, vs, o);
            }
        },
    );
    Some(Tensor::from_data(
        TensorData::new(out, [b, heads, 1, dv]),
        &device,
    ))
}

/// In-place softmax of one row of scores over its first `visible` entries that are not
/// padding; the others become 0. A row with no visible key becomes all zeros.
fn softmax_row(row: &mut [f32], visible: usize, padding: Option<&[bool]>) {
    let norm = exp_row(row, visible, padding);
    simd::scale(row, norm);
}

/// [`softmax_row`] without the final division: the row becomes `exp(x - max)`, and the
/// returned factor (`1 / Σ`, or 0 for a row with no visible key) normalises it.
fn exp_row(row: &mut [f32], visible: usize, padding: Option<&[bool]>) -> f32 {
    row[visible..].fill(0.0);
    let Some(max) = masked_max(&mut row[..visible], padding) else {
        row.fill(0.0);
        return 0.0;
    };
    1.0 / simd::exp_sub_sum(&mut row[..visible], max)
}

/// [`exp_row`] for bf16 products, on unscaled scores (`scale` is applied here): the
/// unnormalised probabilities rounded to bf16 pairs into `words` (zeros past them), `row`
/// left masked but not exponentiated.
fn exp_row_bf16(
    row: &mut [f32],
    visible: usize,
    padding: Option<&[bool]>,
    scale: f32,
    words: &mut [u32],
) -> f32 {
    let Some(max) = masked_max(&mut row[..visible], padding) else {
        words.fill(0);
        return 0.0;
    };
    // Zeros where `exp_sub_sum_pairs` writes no whole words: its tail (which it ORs into)
    // and the keys not visible.
    words[visible / (2 * simd::LANES) * simd::LANES..].fill(0);
    1.0 / exp_pairs(&row[..visible], max, scale, words)
}

/// [`simd::exp_sub_sum_pairs`], rounding 32 exponentials to bf16 pairs per instruction where
/// the CPU can ([`bf16::native_rounding`]).
fn exp_pairs(x: &[f32], shift: f32, scale: f32, words: &mut [u32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if bf16::native_rounding() {
        // SAFETY: the CPU has the features `exp_pairs_native` is compiled for.
        return unsafe { exp_pairs_native(x, shift, scale, words) };
    }
    simd::exp_sub_sum_pairs(x, shift, scale, words)
}

/// [`exp_pairs`] with AVX-512 and AVX512-BF16: whole chunks of 32 here, the rest through
/// [`simd::exp_sub_sum_pairs`]; the exponentials are [`exp_bf16`](crate::cpu::simd::exp_bf16)'s, bit for bit.
///
/// # Safety
/// The CPU has AVX512F, AVX512BW and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn exp_pairs_native(x: &[f32], shift: f32, scale: f32, words: &mut [u32]) -> f32 {
    use crate::cpu::simd::reduction::*;
    use std::arch::x86_64::*;
    let set = _mm512_set1_ps;
    let exp = |v: __m512| {
        let x = _mm512_max_ps(
            _mm512_mul_ps(_mm512_sub_ps(v, set(shift)), set(scale)),
            set(-87.0),
        );
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, set(LOG2E), set(ROUND)), set(ROUND));
        let r = _mm512_fnmadd_ps(n, set(LN2_LO), _mm512_fnmadd_ps(n, set(LN2_HI), x));
        let mut p = set(EXP_BF16[0]);
        for c in &EXP_BF16[1..] {
            p = _mm512_fmadd_ps(p, r, set(*c));
        }
        let p = _mm512_fmadd_ps(_mm512_fmadd_ps(p, r, set(1.0)), r, set(1.0));
        // p · 2ⁿ: exact, as the portable code's product by the power's bits (n ≥ -126).
        _mm512_scalef_ps(p, n)
    };
    let mut acc = _mm512_setzero_ps();
    let chunks = x.chunks_exact(32);
    let tail = chunks.remainder();
    let done = x.len() - tail.len();
    for (c, w) in chunks.zip(words.chunks_exact_mut(16)) {
        // SAFETY: 32 values read, 16 words written.
        unsafe {
            let lo = exp(_mm512_loadu_ps(c.as_ptr()));
            let hi = exp(_mm512_loadu_ps(c.as_ptr().add(16)));
            acc = _mm512_add_ps(acc, _mm512_add_ps(lo, hi));
            let pairs = crate::cpu::bf16::native::pairs(lo, hi);
            _mm512_storeu_si512(w.as_mut_ptr().cast(), pairs);
        }
    }
    _mm512_reduce_add_ps(acc) + simd::exp_sub_sum_pairs(tail, shift, scale, &mut words[done / 2..])
}

/// The largest score of `row` after the padding keys are set to `-inf`, or `None` when every
/// key is masked.
fn masked_max(row: &mut [f32], padding: Option<&[bool]>) -> Option<f32> {
    if let Some(padding) = padding {
        for (x, &pad) in row.iter_mut().zip(padding) {
            if pad {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    let max = simd::max(row);
    (max != f32::NEG_INFINITY).then_some(max)
}

/// Vectorised kernels, compiled for AVX-512 and AVX2+FMA and picked at run time.
mod simd {
    use crate::cpu::bf16;
    use crate::cpu::simd::{dispatch, exp, exp_bf16};

    /// Lanes of the partial accumulators: wide enough for AVX-512.
    pub(super) const LANES: usize = 16;

    dispatch! {
        /// The largest value (`-inf` for an empty or all `-inf` slice).
        fn max(x: &[f32]) -> f32 {
            let mut acc = [f32::NEG_INFINITY; LANES];
            let chunks = x.chunks_exact(LANES);
            let tail = chunks.remainder();
            for c in chunks {
                for (a, &v) in acc.iter_mut().zip(c) {
                    *a = if v > *a { v } else { *a };
                }
            }
            tail.iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
        }
    }

    dispatch! {
        /// `words[p] ← the bf16 pair of exp(s·(x[2p] - shift)), exp(s·(x[2p + 1] - shift))`
        /// for `s = scale > 0`, returning the sum of the (unrounded) exponentials.
        fn exp_sub_sum_pairs(x: &[f32], shift: f32, scale: f32, words: &mut [u32]) -> f32 {
            let mut acc = [0.0f32; LANES];
            let chunks = x.chunks_exact(2 * LANES);
            let tail = chunks.remainder();
            for (c, w) in chunks.zip(words.chunks_exact_mut(LANES)) {
                for ((a, w), v) in acc.iter_mut().zip(w).zip(c.chunks_exact(2)) {
                    let e = |v: f32| exp_bf16((v - shift) * scale);
                    let (e0, e1) = (e(v[0]), e(v[1]));
                    *a += e0 + e1;
                    *w = bf16::pair(e0, e1);
                }
            }
            let words = &mut words[(x.len() - tail.len()) / 2..];
            let mut sum = 0.0;
            for (i, &v) in tail.iter().enumerate() {
                let e = exp_bf16((v - shift) * scale);
                sum += e;
                words[i / 2] |= bf16::round(e) << (16 * (i % 2));
            }
            sum + acc.iter().sum::<f32>()
        }
    }

    dispatch! {
        /// `x ← exp(x - shift)`, returning the sum of the results.
        fn exp_sub_sum(x: &mut [f32], shift: f32) -> f32 {
            let mut acc = [0.0f32; LANES];
            let mut chunks = x.chunks_exact_mut(LANES);
            for c in &mut chunks {
                for (a, v) in acc.iter_mut().zip(c) {
                    *v = exp(*v - shift);
                    *a += *v;
                }
            }
            let tail: f32 = chunks.into_remainder().iter_mut().map(|v| {
                *v = exp(*v - shift);
                *v
            }).sum();
            tail + acc.iter().sum::<f32>()
        }
    }

    dispatch! {
        /// `x ← x · s`.
        fn scale(x: &mut [f32], s: f32) -> () {
            for v in x.iter_mut() {
                *v *= s;
            }
        }
    }

    dispatch! {
        /// `out[j] = scale · q · k[j]`, where key `j` starts at `keys[j · stride]` and has
        /// `q.len()` values.
        fn scores(q: &[f32], keys: &[f32], stride: usize, scale: f32, out: &mut [f32]) -> () {
            let d = q.len();
            for (j, o) in out.iter_mut().enumerate() {
                let key = &keys[j * stride..][..d];
                let mut acc = [0.0f32; LANES];
                let (qc, kc) = (q.chunks_exact(LANES), key.chunks_exact(LANES));
                let tail: f32 = qc.remainder().iter().zip(kc.remainder()).map(|(a, b)| a * b).sum();
                for (qc, kc) in qc.zip(kc) {
                    for ((a, x), y) in acc.iter_mut().zip(qc).zip(kc) {
                        *a += x * y;
                    }
                }
                *o = scale * (tail + acc.iter().sum::<f32>());
            }
        }
    }

    dispatch! {
        /// `out = Σ_j p[j] · v[j]`, where value `j` starts at `values[j · stride]` and has
        /// `out.len()` values.
        fn weighted_sum(p: &[f32], values: &[f32], stride: usize, out: &mut [f32]) -> () {
            let dv = out.len();
            out.fill(0.0);
            for (j, &w) in p.iter().enumerate() {
                if w != 0.0 {
                    for (o, x) in out.iter_mut().zip(&values[j * stride..][..dv]) {
                        *o += w * x;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attention by definition, in f64, as `[batch, sq, heads, dv]`; `q`, `k`, `v` are
    /// contiguous `[batch, heads, seq, dim]`.
    fn reference(p: &Problem, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0; p.batch * p.sq * p.heads * p.dv];
        for h in 0..p.batch * p.heads {
            let (b, hh) = (h / p.heads, h % p.heads);
            for i in 0..p.sq {
                let mut s: Vec<f64> = (0..p.sk)
                    .map(|j| {
                        let dot: f64 = (0..p.d)
                            .map(|c| {
                                (q[(h * p.sq + i) * p.d + c] * k[(h * p.sk + j) * p.d + c]) as f64
                            })
                            .sum();
                        let hidden = p.causal && j + p.sq > i + p.sk
                            || p.key_padding.is_some_and(|m| m[b * p.sk + j]);
                        if hidden {
                            f64::NEG_INFINITY
                        } else {
                            dot / (p.d as f64).sqrt()
                        }
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                s.iter_mut().for_each(|x| *x = (*x - max).exp());
                let sum: f64 = s.iter().sum();
                for c in 0..p.dv {
                    let acc: f64 = (0..p.sk)
                        .map(|j| s[j] * v[(h * p.sk + j) * p.dv + c] as f64)
                        .sum();
                    out[((b * p.sq + i) * p.heads + hh) * p.dv + c] = (acc / sum) as f32;
                }
            }
        }
        out
    }

    /// The probabilities rounded in hardware are the portable code's, and their sums agree
    /// to f32 rounding (added in another order).
    #[test]
    fn probabilities_match_across_roundings() {
        let x = values(4096 + 45, 7);
        let (shift, scale) = (x.iter().copied().fold(f32::MIN, f32::max), 0.3);
        let words = x.len().div_ceil(2);
        let (mut fast, mut plain) = (vec![0; words], vec![0; words]);
        let sum = exp_pairs(&x, shift, scale, &mut fast);
        let want = simd::exp_sub_sum_pairs(&x, shift, scale, &mut plain);
        assert_eq!(fast, plain);
        assert!((sum - want).abs() <= 1e-6 * want, "{sum} vs {want}");
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1 << 24) as f32)
                    * 4.0
                    - 2.0
            })
            .collect()
    }

    #[test]
    fn matches_a_direct_computation() {
        for &(bh, heads, sq, sk, d, dv, causal, pad) in &[
            (2, 2, 7, 7, 4, 4, false, false),
            (4, 2, 5, 9, 8, 3, false, true),
            (2, 1, 6, 6, 4, 5, true, false),
            (2, 2, 3, 8, 4, 4, true, true),
            (1, 1, 300, 2000, 16, 16, false, false), // several row blocks
            (2, 1, 40, TRANSPOSE_MIN_KEYS + 3, 5, 6, true, true), // keys transposed first
        ] {
            let (q, k, v) = (
                values(bh * sq * d, 1),
                values(bh * sk * d, 2),
                values(bh * sk * dv, 3),
            );
            let padding: Vec<bool> = (0..(bh / heads) * sk).map(|j| pad && j % 3 == 1).collect();
            fn contiguous(data: &[f32], heads: usize, s: usize, dim: usize) -> Operand<'_> {
                Operand {
                    data,
                    strides: [heads * s * dim, s * dim, dim],
                }
            }
            let p = Problem {
                q: contiguous(&q, heads, sq, d),
                k: contiguous(&k, heads, sk, d),
                v: contiguous(&v, heads, sk, dv),
                batch: bh / heads,
                heads,
                sq,
                sk,
                d,
                dv,
                key_padding: pad.then_some(&padding[..]),
                causal,
                compute: ComputeDtype::F32,
            };
            let (got, want) = (attention(&p), reference(&p, &q, &k, &v));
            // bf16 products: q, k, the probabilities and v rounded to 8 significant bits.
            let bf16 = attention(&Problem {
                compute: ComputeDtype::Bf16,
                ..p
            });
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let err = bf16
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(err < 2e-2 * scale, "bf16 {bh} {sq} {sk}: {err} of {scale}");
            let err = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                err < 1e-5,
                "{bh} {sq} {sk} causal={causal} pad={pad}: {err}"
            );
        }
    }
}
