//! Matrix products in bfloat16 with f32 accumulation: both operands rounded to bf16 (to
//! nearest, ties to even) as they are packed, every product of two bf16 values exact in f32,
//! and the sums kept in f32.
//!
//! Three micro-kernels, picked at run time ([`Kernel::best`]):
//!
//! - **AMX** (Intel Sapphire Rapids and later): `tdpbf16ps` adds 16 × 16 sums of 32 products
//!   per instruction out of tile registers — 16 times the multiply-adds of an AVX-512 FMA.
//! - **AVX512-BF16** (AMD Zen 4 and later, Intel Cooper Lake): `vdpbf16ps` multiplies 16
//!   pairs of bf16 values and adds both products to 16 f32 sums.
//! - **portable**: the same packed operands through ordinary vector code compiled for
//!   AVX-512, AVX2+FMA and plain x86 ([`dispatch`]), adding the two exact products of a pair
//!   in `vdpbf16ps`'s order (the odd one, then the even one).
//!
//! All three multiply the same bf16 values and add exact products in f32; they differ only in
//! the order of the additions (and the native instructions flush subnormals to zero), so their
//! results agree within a rounding of the sums (tested).
//!
//! Layouts: both operands hold pairs of consecutive `k` values in one 32-bit word (the low half
//! the even `k`). The left operand is row-major (a row's pairs in a row, `lda` words apart), the
//! right one pair-rows (pair `p` of every column in a row, `ldb` words apart): an AMX tile is
//! 16 rows of 16 words of either, a vector kernel broadcasts one left word against two
//! 16-word vectors of the right. The right operand is packed in panels of [`NR`] columns
//! (`ldb = NR`), unless the caller packed it once for several products ([`Matrix::Packed`]).

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::gemm::{Matrix, Operand, Packed, Product};
use super::simd::dispatch;
use crate::aligned::AlignedVec;

/// Rows of a micro-tile of the vector kernels.
const MR: usize = 8;
/// Rows of a micro-tile of the AMX kernel: two tiles of 16 rows. Packed left operands have
/// their rows rounded up to it.
pub(crate) const AMX_ROWS: usize = 32;
/// Columns of a micro-tile: two 16-lane vectors, or two AMX tiles of 16 columns. Packed right
/// operands hold this many readable columns past the last one.
pub(crate) const NR: usize = 32;
/// `k` pairs per block (a multiple of 16, an AMX tile's depth): a right panel of 512 × 32
/// words is 64 KiB (L2), and a tile's sums stay in registers over up to 1,024 values of `k`.
/// Measured against 192 pairs (a 24 KiB panel, in L1), 2 threads: SD 1.5's self-attention
/// over 4,096 keys 146 / 152 ms, a 1 × 1 convolution 960 → 640 channels at 32² 3.4 / 4.9 ms,
/// 8192 × 320 × 2560 the same (21 ms).
const KC: usize = 512;
/// Rows per task (a multiple of [`AMX_ROWS`]).
const MC: usize = 128;
/// Columns per task (a multiple of [`NR`]).
const NC: usize = 512;

/// Which micro-kernel multiplies the packed operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// AMX tiles (`tdpbf16ps`).
    #[cfg(target_arch = "x86_64")]
    Amx,
    /// `vdpbf16ps` (AVX512-BF16).
    #[cfg(target_arch = "x86_64")]
    Avx512Bf16,
    /// Exact bf16 products added in f32 by ordinary vector code.
    Portable,
}

impl Kernel {
    /// The fastest kernel this CPU runs (AMX where the CPU has it and Linux grants the
    /// process its tile state; `MM_CPU_NO_AMX` in the environment skips it).
    pub fn best() -> Self {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::env::var_os("MM_CPU_NO_AMX").is_none() && amx::available() {
                    return Kernel::Amx;
                }
                if avx512bf16() {
                    return Kernel::Avx512Bf16;
                }
            }
            Kernel::Portable
        })
    }

    /// Every kernel this CPU runs.
    #[cfg(test)]
    pub fn available() -> Vec<Self> {
        let mut kernels = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            if avx512bf16() {
                kernels.push(Kernel::Avx512Bf16);
            }
            if amx::available() {
                kernels.push(Kernel::Amx);
            }
        }
        kernels
    }

    /// Rows of the kernel's micro-tile.
    fn rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => AMX_ROWS,
            _ => MR,
        }
    }

    /// The packed operands' pairs per row (left) or rows (right) for `k`: its pairs, rounded
    /// up to a whole AMX tile for the AMX kernel (the extra pairs are zeros).
    pub fn depth(self, k: usize) -> usize {
        let pairs = k.div_ceil(2);
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => pairs.div_ceil(16) * 16,
            _ => pairs,
        }
    }

    /// Computes `t` (`rows` = [`Kernel::rows`]).
    ///
    /// # Safety
    /// The kernel must be one [`Kernel::best`] or [`Kernel::available`] gave; the pointers
    /// of `t` must address what is read and written; for AMX, [`Tiles::begin`] ran on this
    /// thread and `t.kc` is a multiple of 16.
    #[inline(always)]
    unsafe fn tile(self, t: Tile) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match self {
                #[cfg(target_arch = "x86_64")]
                Kernel::Amx => amx::tile(t),
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512Bf16 => tile_avx512bf16(t),
                Kernel::Portable => tile_portable(t),
            }
        }
    }
}

/// One micro-tile's work: `out[rows × NR] = start + Σ_s a_s · b_s` over `kc` pairs per
/// segment `s < segments`, `a_s` (at `a + s · a_step`) holding the kernel's `rows` rows `lda`
/// words apart, `b_s` (at `b + b_offsets[s]`) `kc` rows of (at least) [`NR`] words `ldb`
/// apart, `out` `rows` rows of `NR` f32 values `ldo` apart. The sums stay in registers across
/// the segments (a convolution's taps, [`reduce`]).
#[derive(Clone, Copy)]
struct Tile {
    a: *const u32,
    lda: usize,
    a_step: usize,
    b: *const u32,
    ldb: usize,
    b_offsets: *const usize,
    segments: usize,
    kc: usize,
    out: *mut f32,
    ldo: usize,
    start: Start,
}

/// What the sums of a [`Tile`] start from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Start {
    Zero,
    /// The values in `out` (the products are added to them).
    Out,
    /// A value per row (a bias): row `r`'s at word `16 · r`, repeated over the 16 words (an
    /// AMX tile of 16 rows × 16 values).
    Rows(*const f32),
}

impl Start {
    /// [`Start::Out`] when `accumulate`, else [`Start::Zero`].
    fn accumulate(accumulate: bool) -> Self {
        if accumulate { Start::Out } else { Start::Zero }
    }
}

/// The `b_offsets` of a one-segment [`Tile`].
static ONE_SEGMENT: [usize; 1] = [0];

impl Tile {
    /// Segment `s`'s operands.
    ///
    /// # Safety
    /// `s < self.segments`.
    #[inline(always)]
    unsafe fn segment(&self, s: usize) -> (*const u32, *const u32) {
        // SAFETY: `b_offsets` holds `segments` offsets; the pointers stay inside the operands.
        unsafe {
            (
                self.a.wrapping_add(s * self.a_step),
                self.b.wrapping_add(*self.b_offsets.add(s)),
            )
        }
    }
}

/// Whether the CPU has AVX512F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
fn avx512bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

// SAFETY: an operand is a read-only view that the caller of `Product::run` keeps valid and
// unchanged for the product; the destination is written by one task per block.
unsafe impl Send for Operand {}
// SAFETY: as above.
unsafe impl Sync for Operand {}
// SAFETY: as above.
unsafe impl Send for Packed {}
// SAFETY: as above.
unsafe impl Sync for Packed {}
// SAFETY: as above.
unsafe impl Sync for Product {}

thread_local! {
    /// Packed right and left operands kept between calls on a thread (fresh allocations of
    /// this size fault every page in). Taken out while in use, so a nested product on the same
    /// thread (a stolen rayon task) gets its own.
    static RIGHT: Cell<AlignedVec<u32>> = const { Cell::new(AlignedVec::new()) };
    static LEFT: Cell<AlignedVec<u32>> = const { Cell::new(AlignedVec::new()) };
}

/// `p` in bf16 with f32 sums through `kernel`.
///
/// # Safety
/// As [`Product::run`]; packed operands must have been packed for this kernel's
/// [`Kernel::depth`].
pub(crate) unsafe fn gemm(p: &Product, kernel: Kernel) {
    let Product { m, n, k, .. } = *p;
    if let Matrix::F32(lhs) = p.lhs {
        assert_eq!(lhs.cs, 1, "the left operand's rows are contiguous");
    }
    // A right operand packed once is streamed too when the threads share the product (a
    // cached weight); attention's single-threaded products keep their depth blocks.
    if m <= STREAM_ROWS && (matches!(p.rhs, Matrix::F32(_)) || p.parallel) {
        // SAFETY: forwarded from the caller.
        return unsafe { stream(p, kernel) };
    }
    let mut scratch = RIGHT.take();
    let right = match p.rhs {
        Matrix::Packed(packed) => packed,
        Matrix::F32(rhs) => {
            // SAFETY: forwarded from the caller.
            unsafe { pack_panels_for(kernel, rhs, k, n, p.parallel, &mut scratch) };
            panels_for(kernel, &scratch, k)
        }
    };
    // Tasks of MC rows by NC columns; with rows enough for every thread, a task takes all the
    // columns of its rows, which it then packs once.
    let row_blocks = m.div_ceil(MC);
    let width = if !p.parallel || row_blocks >= 4 * rayon::current_num_threads() {
        n.div_ceil(NR) * NR
    } else {
        NC
    };
    let col_blocks = n.div_ceil(width);
    let task = |t: usize| {
        let (i0, j0) = ((t / col_blocks) * MC, (t % col_blocks) * width);
        let mut left = LEFT.take();
        // SAFETY: forwarded from the caller; the tasks write disjoint blocks of `dst`.
        unsafe { block(p, kernel, right, &mut left, i0, j0..n.min(j0 + width)) };
        LEFT.set(left);
    };
    if p.parallel {
        (0..row_blocks * col_blocks).into_par_iter().for_each(task);
    } else {
        (0..row_blocks * col_blocks).for_each(task);
    }
    RIGHT.set(scratch);
}

/// A right operand `rhs` (`k × n`) packed into `words` as the bf16 products of
/// [`Kernel::best`] read it: panels of [`NR`] columns (zeros past `n`), each its depth of
/// pair-rows ([`panels`] views them).
///
/// # Safety
/// `rhs` must address `k × n` elements.
pub(crate) unsafe fn pack_panels(
    rhs: Operand,
    k: usize,
    n: usize,
    parallel: bool,
    words: &mut AlignedVec<u32>,
) {
    // SAFETY: forwarded from the caller.
    unsafe { pack_panels_for(Kernel::best(), rhs, k, n, parallel, words) }
}

/// The packed operand in `words`, as [`pack_panels`] packed it for depth `k`.
pub(crate) fn panels(words: &[u32], k: usize) -> Packed {
    panels_for(Kernel::best(), words, k)
}

/// [`pack_panels`] for `kernel`.
///
/// # Safety
/// As [`pack_panels`].
unsafe fn pack_panels_for(
    kernel: Kernel,
    rhs: Operand,
    k: usize,
    n: usize,
    parallel: bool,
    words: &mut AlignedVec<u32>,
) {
    let depth = kernel.depth(k);
    // `pack_right` writes every word of its panel.
    let words = sized(words, n.div_ceil(NR) * depth * NR);
    let pack = |column: &mut Vec<u32>, (j, panel): (usize, &mut [u32])| {
        // SAFETY: the caller guarantees `rhs` addresses k × n elements.
        unsafe { pack_right(rhs, k, n, j * NR, panel, column) }
    };
    let chunk = (depth * NR).max(1);
    if parallel {
        let chunks = words.par_chunks_mut(chunk).enumerate();
        chunks.for_each_init(Vec::new, pack);
    } else {
        let mut column = Vec::new();
        let chunks = words.chunks_mut(chunk).enumerate();
        chunks.for_each(|c| pack(&mut column, c));
    }
}

/// [`panels`] for `kernel`.
fn panels_for(kernel: Kernel, words: &[u32], k: usize) -> Packed {
    let depth = kernel.depth(k);
    Packed {
        ptr: words.as_ptr(),
        ld: NR,
        panel: depth * NR,
    }
}

/// Rows up to which [`gemm`] packs an f32 right operand panel by panel as it goes
/// ([`stream`]) rather than all of it first.
const STREAM_ROWS: usize = 256;
/// Columns per task of [`stream`] (a multiple of [`NR`]).
const STREAM_COLS: usize = 256;

/// `p` for a few rows (at most [`STREAM_ROWS`]), such as a layer's weight applied to a
/// prompt's tokens: the left rows are packed once, then each task multiplies every row by its
/// columns of the right operand over the whole depth, the sums of a tile kept in registers.
/// An f32 right operand is packed by the task into a scratch buffer in cache (packing it
/// whole first, as [`gemm`] does for many rows that reuse it, would write it to memory and
/// read it back); a packed one (a weight cached in an autocast scope) is read where it lies.
/// The tasks split the columns evenly between the threads (in blocks of 128 rows by 512
/// columns, a 154-row prompt's product left the two threads 11 % apart).
///
/// # Safety
/// As [`gemm`].
unsafe fn stream(p: &Product, kernel: Kernel) {
    let Product { m, n, k, .. } = *p;
    let (depth, mr) = (kernel.depth(k), kernel.rows());
    let mut left = LEFT.take();
    let lhs = match p.lhs {
        Matrix::Packed(packed) => packed,
        Matrix::F32(lhs) => {
            let rows = sized(&mut left, m.div_ceil(mr) * mr * depth.max(1));
            let pack = |(r, words): (usize, &mut [u32])| {
                if r < m {
                    // SAFETY: the caller guarantees `lhs` addresses m × k elements, with
                    // unit column stride (asserted in `gemm`).
                    pack_row(unsafe { lhs.row(r, 0, k) }, words);
                } else {
                    words.fill(0);
                }
            };
            if p.parallel {
                rows.par_chunks_mut(depth.max(1)).enumerate().for_each(pack);
            } else {
                rows.chunks_mut(depth.max(1)).enumerate().for_each(pack);
            }
            Packed::new(&left, depth)
        }
    };
    // Columns per task, in a number of tasks that the threads share evenly: for an f32
    // operand with rows contiguous, as many as keep the task's packed panel over the whole
    // depth in about 1 MiB (L2), up to 512 read from each row; otherwise whole panels, up to
    // STREAM_COLS columns.
    let threads = if p.parallel {
        rayon::current_num_threads()
    } else {
        1
    };
    let stream_cols = match p.rhs {
        Matrix::F32(rhs) if rhs.cs == 1 => {
            let budget = ((1 << 18) / depth.max(1) / NR * NR).clamp(NR, 512);
            let tasks = n.div_ceil(budget).div_ceil(threads) * threads;
            n.div_ceil(tasks).div_ceil(NR) * NR
        }
        _ => {
            let panels = n.div_ceil(NR);
            let tasks = panels.div_ceil(STREAM_COLS / NR).div_ceil(threads) * threads;
            panels.div_ceil(tasks) * NR
        }
    };
    let task = |column: &mut Vec<u32>, j0: usize| {
        let mut panels = RIGHT.take();
        let cols = stream_cols.min(n - j0);
        let right = match p.rhs {
            // Columns j0.. (a whole number of panels) where they lie.
            Matrix::Packed(packed) => Packed {
                ptr: packed.right_at(0, j0),
                ..packed
            },
            Matrix::F32(rhs) if rhs.cs == 1 => {
                // Rows contiguous: the task's columns as one panel of pair-rows, read row by row.
                let width = cols.div_ceil(NR) * NR;
                let words = sized(&mut panels, depth * width);
                let rs = rhs.rs as usize;
                let len = if k == 0 { 0 } else { (k - 1) * rs + cols };
                // SAFETY: the caller guarantees `rhs` addresses k × n elements (rows `rs` apart).
                let src = unsafe { std::slice::from_raw_parts(rhs.ptr.add(j0), len) };
                for (q, words) in words.chunks_exact_mut(width).enumerate() {
                    padded_pair_row(src, k, rs, cols, q, words);
                }
                Packed::new(&panels, width)
            }
            Matrix::F32(rhs) => {
                let panel = depth * NR;
                let words = sized(&mut panels, cols.div_ceil(NR) * panel.max(1));
                for (t, words) in words.chunks_mut(panel.max(1)).enumerate() {
                    // SAFETY: the caller guarantees `rhs` addresses k × n elements.
                    unsafe { pack_right(rhs, k, n, j0 + t * NR, words, column) };
                }
                Packed {
                    ptr: panels.as_ptr(),
                    ld: NR,
                    panel,
                }
            }
        };
        let _tiles = Tiles::begin(kernel);
        let mut acc = [0.0f32; AMX_ROWS * NR];
        for j in (0..cols).step_by(NR) {
            for i in (0..m).step_by(mr) {
                let tile = Tile {
                    a: lhs.left_at(i, 0),
                    lda: lhs.ld,
                    a_step: 0,
                    b: right.right_at(0, j),
                    ldb: right.ld,
                    b_offsets: ONE_SEGMENT.as_ptr(),
                    segments: 1,
                    kc: depth,
                    // SAFETY: element (i, j0 + j) of `dst`.
                    out: unsafe { p.dst.add(i * p.dst_rs + j0 + j) },
                    ldo: p.dst_rs,
                    start: Start::accumulate(p.accumulate),
                };
                let size = ((m - i).min(mr), (cols - j).min(NR));
                // SAFETY: the operands hold `mr` rows and NR columns (zeros past the ends) of
                // `depth` pairs; this task alone writes columns j0..j0 + cols of `dst`.
                unsafe { put(kernel, tile, size, p.scale, &mut acc) };
            }
        }
        RIGHT.set(panels);
    };
    let tasks = n.div_ceil(stream_cols);
    if p.parallel {
        let run = |column: &mut Vec<u32>, t: usize| task(column, t * stream_cols);
        (0..tasks).into_par_iter().for_each_init(Vec::new, run);
    } else {
        let mut column = Vec::new();
        (0..tasks).for_each(|t| task(&mut column, t * stream_cols));
    }
    LEFT.set(left);
}

/// Rows `i0..` (up to [`MC`]) and columns `cols` of the product; the left rows are packed
/// into `left` unless they come packed.
///
/// # Safety
/// As [`gemm`], and no other thread writes this block of `dst`.
unsafe fn block(
    p: &Product,
    kernel: Kernel,
    right: Packed,
    left: &mut AlignedVec<u32>,
    i0: usize,
    cols: Range<usize>,
) {
    let depth = kernel.depth(p.k);
    let (mb, mr) = (MC.min(p.m - i0), kernel.rows());
    let lhs = match p.lhs {
        Matrix::Packed(packed) => Packed {
            // SAFETY: row i0 of the packed rows.
            ptr: unsafe { packed.ptr.add(i0 * packed.ld) },
            ..packed
        },
        Matrix::F32(lhs) => {
            let rows = sized(left, mb.div_ceil(mr) * mr * depth);
            for (r, words) in rows.chunks_exact_mut(depth.max(1)).enumerate() {
                if r < mb {
                    // SAFETY: the caller guarantees `lhs` addresses m × k elements, with
                    // unit column stride (`Product::run`).
                    pack_row(unsafe { lhs.row(i0 + r, 0, p.k) }, words);
                } else {
                    words.fill(0);
                }
            }
            Packed {
                ptr: left.as_ptr(),
                ld: depth,
                panel: 0,
            }
        }
    };
    let _tiles = Tiles::begin(kernel);
    let mut acc = [0.0f32; AMX_ROWS * NR];
    for k0 in (0..depth.max(1)).step_by(KC) {
        let kc = KC.min(depth - k0);
        let accumulate = k0 > 0 || p.accumulate;
        for j in cols.clone().step_by(NR) {
            let b = right.right_at(k0, j);
            for i in (0..mb).step_by(mr) {
                let tile = Tile {
                    a: lhs.left_at(i, k0),
                    lda: lhs.ld,
                    a_step: 0,
                    b,
                    ldb: right.ld,
                    b_offsets: ONE_SEGMENT.as_ptr(),
                    segments: 1,
                    kc,
                    // SAFETY: element (i0 + i, j) of `dst`, in this task's block.
                    out: unsafe { p.dst.add((i0 + i) * p.dst_rs + j) },
                    ldo: p.dst_rs,
                    start: Start::accumulate(accumulate),
                };
                let size = ((mb - i).min(mr), (cols.end - j).min(NR));
                // SAFETY: the tile's rows and columns lie in this task's block; the operands
                // hold `mr` rows and NR columns (zeros or spare ones past the ends) of `kc`
                // pairs from `k0`.
                unsafe { put(kernel, tile, size, p.scale, &mut acc) };
            }
        }
    }
}

/// Computes `t` into the first `rows` rows and `width` columns of its output, the sums scaled
/// by `scale`: straight into the output for a whole unscaled tile, else through `acc`.
///
/// # Safety
/// As [`Kernel::tile`] for the operands; `rows × width` values of `t.out` (`t.ldo` apart)
/// are written by this thread alone.
unsafe fn put(
    kernel: Kernel,
    t: Tile,
    (rows, width): (usize, usize),
    scale: f32,
    acc: &mut [f32; AMX_ROWS * NR],
) {
    let empty = t.kc == 0 || t.segments == 0;
    if rows == kernel.rows() && width == NR && scale == 1.0 && !empty {
        // A whole tile, unscaled: the sums go straight into the output.
        // SAFETY: forwarded from the caller.
        return unsafe { kernel.tile(t) };
    }
    let into_acc = Tile {
        out: acc.as_mut_ptr(),
        ldo: NR,
        start: match t.start {
            Start::Out => Start::Zero,
            start => start,
        },
        ..t
    };
    if empty {
        for (r, row) in acc.chunks_exact_mut(NR).enumerate() {
            // SAFETY: a `Rows` start holds a value for each of the kernel's rows.
            row.fill(match into_acc.start {
                Start::Rows(values) => unsafe { *values.add(16 * r) },
                _ => 0.0,
            });
        }
    } else {
        // SAFETY: as above, into `acc` (AMX_ROWS × NR).
        unsafe { kernel.tile(into_acc) };
    }
    for (r, sums) in acc.chunks_exact(NR).take(rows).enumerate() {
        // SAFETY: row r, columns 0..width of the output, written by this thread alone.
        let dst = unsafe { std::slice::from_raw_parts_mut(t.out.add(r * t.ldo), width) };
        store(dst, &sums[..width], scale, t.start != Start::Out);
    }
}

/// A sum of products over shifted windows of one packed right operand, such as a
/// convolution's taps: for each of `images` images, `dst[m, n] = bias + Σ_s a_s · b_s` over
/// `depth` pairs each, `a_s` the packed left operand `a` moved by `s · a_step` words, `b_s`
/// the packed right operand `b` moved by `b_offsets[s]` words (and by `b_image` words per
/// image). Every product's sums stay in the kernel's registers across the segments, and `dst`
/// (row-major, rows `dst_rs` apart, images `dst_image` values apart) is written once.
pub(crate) struct Reduction<'a> {
    pub m: usize,
    pub n: usize,
    pub depth: usize,
    pub a: Packed,
    pub a_step: usize,
    pub b: Packed,
    pub b_offsets: &'a [usize],
    pub images: usize,
    pub b_image: usize,
    /// A value per row added to its sums.
    pub bias: Option<&'a [f32]>,
    pub dst: *mut f32,
    pub dst_rs: usize,
    pub dst_image: usize,
}

// SAFETY: as for `Product`.
unsafe impl Sync for Reduction<'_> {}

/// A task's row values for [`Start::Rows`], on a cache line as the AMX tile loads want.
#[repr(C, align(64))]
struct RowValues([f32; REDUCE_ROWS * 16]);

/// Output rows per task of [`reduce`] (a multiple of [`AMX_ROWS`]).
const REDUCE_ROWS: usize = 64;
/// Output columns per task of [`reduce`] (a multiple of [`NR`]).
const REDUCE_COLS: usize = 256;

/// Computes `r` through `kernel`, split between rayon's threads.
///
/// # Safety
/// `dst` must be valid for `images` blocks of `m` rows of `dst_rs` elements, written by
/// nobody else meanwhile; `a` must hold, for every segment, rows up to `m` rounded up to
/// [`AMX_ROWS`] of `depth` words (packed for `kernel`'s [`Kernel::depth`]), and `b`, for every
/// image, `depth` pair-rows with [`NR`] readable words past column `n - 1` of every segment's
/// window; `bias` holds `m` values.
pub(crate) unsafe fn reduce(r: &Reduction, kernel: Kernel) {
    if r.m == 0 || r.n == 0 {
        return;
    }
    let col_blocks = r.n.div_ceil(REDUCE_COLS);
    let blocks = r.m.div_ceil(REDUCE_ROWS) * col_blocks;
    (0..r.images * blocks).into_par_iter().for_each(|task| {
        let (image, block) = (task / blocks, task % blocks);
        let (i0, j0) = (
            (block / col_blocks) * REDUCE_ROWS,
            (block % col_blocks) * REDUCE_COLS,
        );
        let (i1, j1) = (r.m.min(i0 + REDUCE_ROWS), r.n.min(j0 + REDUCE_COLS));
        let (b, dst) = (
            r.b.right_at(0, image * r.b_image),
            r.dst.wrapping_add(image * r.dst_image),
        );
        let mr = kernel.rows();
        // The task's biases as the tiles start from them (`Start::Rows`).
        let mut rows = RowValues([0.0; REDUCE_ROWS * 16]);
        if let Some(bias) = r.bias {
            for (row, &b) in rows.0.chunks_exact_mut(16).zip(&bias[i0..i1]) {
                row.fill(b);
            }
        }
        let _tiles = Tiles::begin(kernel);
        let mut acc = [0.0f32; AMX_ROWS * NR];
        for j in (j0..j1).step_by(NR) {
            for i in (i0..i1).step_by(mr) {
                let tile = Tile {
                    a: r.a.left_at(i, 0),
                    lda: r.a.ld,
                    a_step: r.a_step,
                    b: b.wrapping_add(j),
                    ldb: r.b.ld,
                    b_offsets: r.b_offsets.as_ptr(),
                    segments: r.b_offsets.len(),
                    kc: r.depth,
                    // SAFETY: element (i, j) of the image's `dst`, in this task's block.
                    out: unsafe { dst.add(i * r.dst_rs + j) },
                    ldo: r.dst_rs,
                    start: match r.bias {
                        Some(_) => Start::Rows(rows.0[(i - i0) * 16..].as_ptr()),
                        None => Start::Zero,
                    },
                };
                let size = ((i1 - i).min(mr), (j1 - j).min(NR));
                // SAFETY: the caller's guarantees; this task alone writes its block.
                unsafe { put(kernel, tile, size, 1.0, &mut acc) };
            }
        }
    });
}

impl Packed {
    /// The word of pair `q` of row `r` of a left operand (row-major).
    #[inline(always)]
    fn left_at(self, r: usize, q: usize) -> *const u32 {
        self.ptr.wrapping_add(r * self.ld + q)
    }

    /// The word of pair `q` of column `j` of a right operand: pair-rows, in panels of [`NR`]
    /// columns `panel` words apart when packed by [`gemm`] (`panel` 0: one panel).
    #[inline(always)]
    fn right_at(self, q: usize, j: usize) -> *const u32 {
        let offset = if self.panel == 0 {
            q * self.ld + j
        } else {
            (j / NR) * self.panel + q * self.ld + j % NR
        };
        self.ptr.wrapping_add(offset)
    }
}

/// The AMX tile configuration of this thread while a block is computed: loaded by
/// [`Tiles::begin`] for the AMX kernel, released when dropped.
struct Tiles(bool);

impl Tiles {
    fn begin(kernel: Kernel) -> Self {
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Amx {
            // SAFETY: the AMX kernel is only chosen where the CPU and the OS support it.
            unsafe { amx::configure() };
            return Tiles(true);
        }
        let _ = kernel;
        Tiles(false)
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        if self.0 {
            // SAFETY: as in `begin`.
            unsafe { amx::release() };
        }
    }
}

dispatch! {
    /// `dst = scale · sums`, or `+=` unless `overwrite`.
    fn store(dst: &mut [f32], sums: &[f32], scale: f32, overwrite: bool) -> () {
        if overwrite {
            for (d, &s) in dst.iter_mut().zip(sums) {
                *d = scale * s;
            }
        } else {
            for (d, &s) in dst.iter_mut().zip(sums) {
                *d += scale * s;
            }
        }
    }
}

/// `v` as `len` zeros (see [`sized`]).
pub(crate) fn zeroed(v: &mut AlignedVec<u32>, len: usize) {
    v.clear();
    sized(v, len);
}

/// The first `len` words of `v`, which grows to `len` when shorter (zeros) but never shrinks,
/// so that whoever overwrites every word writes them once; a new allocation is advised as
/// transparent huge pages (the packed operands are read in tiles of 16 rows far apart: with
/// 4 KiB pages, every row of a tile is another TLB entry).
pub(crate) fn sized(v: &mut AlignedVec<u32>, len: usize) -> &mut [u32] {
    if v.capacity() < len {
        *v = AlignedVec::with_capacity(len);
        crate::buffer::advise_huge_pages(v.as_ptr().cast(), len * 4);
    }
    v.sized(len)
}

/// f32 → bf16 bits, rounded to nearest (ties to even); NaN stays NaN.
#[inline(always)]
pub(crate) fn round(x: f32) -> u32 {
    let bits = x.to_bits();
    let rounded = (bits + 0x7fff + ((bits >> 16) & 1)) >> 16;
    if x.is_nan() {
        (bits >> 16) | 0x40
    } else {
        rounded
    }
}

/// Two values as one word of a pair: `lo` in the low half.
#[inline(always)]
pub(crate) fn pair(lo: f32, hi: f32) -> u32 {
    round(lo) | (round(hi) << 16)
}

/// `words[p] = pair(src[2p], src[2p + 1])` (a zero for the odd `k`'s missing partner):
/// with `vcvtne2ps2bf16` where the CPU has AVX512-BF16 (32 values per instruction), else
/// [`pair_up_vector`].
pub(crate) fn pair_up(src: &[f32], words: &mut [u32]) {
    #[cfg(target_arch = "x86_64")]
    if native_rounding() {
        let bulk = (src.len() / 32).min(words.len() / 16);
        // SAFETY: the CPU has AVX512F, AVX512BW and AVX512-BF16; the slices hold `bulk`
        // chunks.
        unsafe { native::pair_up(&src[..32 * bulk], &mut words[..16 * bulk]) };
        return pair_up_vector(&src[32 * bulk..], &mut words[16 * bulk..]);
    }
    pair_up_vector(src, words)
}

/// Whether the CPU rounds to bf16 in hardware (AVX512-BF16, with AVX512BW for the
/// interleaving of [`pair_rows`]). Its conversions round to nearest even as [`round`] does,
/// and flush subnormal values (below 1.2e-38) to zero, as the AMX and `vdpbf16ps` products
/// do.
#[cfg(target_arch = "x86_64")]
pub(crate) fn native_rounding() -> bool {
    avx512bf16() && std::arch::is_x86_feature_detected!("avx512bw")
}

/// The conversions of [`pair_up`], [`pair_rows`] and attention's probabilities in
/// AVX512-BF16.
#[cfg(target_arch = "x86_64")]
pub(crate) mod native {
    use std::arch::x86_64::*;

    /// 32 values as 16 pairs: the first 16 values' bf16 in the low half of the 64 bytes.
    #[inline(always)]
    pub(crate) unsafe fn pairs(lo: __m512, hi: __m512) -> __m512i {
        // SAFETY: the caller's CPU has AVX512-BF16; `__m512bh` and `__m512i` are 64 bytes.
        unsafe { std::mem::transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo)) }
    }

    /// [`super::pair_up`] on whole chunks: `src` 32 values per 16 words.
    ///
    /// # Safety
    /// The CPU has AVX512F, AVX512BW and AVX512-BF16; `src.len() == 2 · words.len()`, a
    /// multiple of 32.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn pair_up(src: &[f32], words: &mut [u32]) {
        for (s, w) in src.chunks_exact(32).zip(words.chunks_exact_mut(16)) {
            // SAFETY: 32 values read, 16 words written.
            unsafe {
                let (lo, hi) = (
                    _mm512_loadu_ps(s.as_ptr()),
                    _mm512_loadu_ps(s.as_ptr().add(16)),
                );
                _mm512_storeu_si512(w.as_mut_ptr().cast(), pairs(lo, hi));
            }
        }
    }

    /// [`super::pair_rows`]: 16 words per step, the last step masked.
    ///
    /// # Safety
    /// The CPU has AVX512F, AVX512BW and AVX512-BF16; the three slices are as long.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub unsafe fn pair_rows(even: &[f32], odd: &[f32], words: &mut [u32]) {
        // Even value c to 16-bit lane 2c, odd value c to lane 2c + 1.
        let interleave = _mm512_set_epi16(
            31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6, 21, 5, 20,
            4, 19, 3, 18, 2, 17, 1, 16, 0,
        );
        for c in (0..words.len()).step_by(16) {
            let mask = (u32::MAX >> (32 - (words.len() - c).min(16))) as __mmask16;
            // SAFETY: the lanes of `mask` address values c.. of the three slices.
            unsafe {
                let e = _mm512_maskz_loadu_ps(mask, even.as_ptr().add(c));
                let o = _mm512_maskz_loadu_ps(mask, odd.as_ptr().add(c));
                let words_c = _mm512_permutexvar_epi16(interleave, pairs(e, o));
                _mm512_mask_storeu_epi32(words.as_mut_ptr().add(c).cast(), mask, words_c);
            }
        }
    }
}

dispatch! {
    /// [`pair_up`] in ordinary vector code.
    fn pair_up_vector(src: &[f32], words: &mut [u32]) -> () {
        let pairs = src.chunks_exact(2);
        let odd = pairs.remainder();
        for (w, v) in words.iter_mut().zip(pairs) {
            *w = pair(v[0], v[1]);
        }
        if let ([last], Some(w)) = (odd, words.get_mut(src.len() / 2)) {
            *w = round(*last);
        }
    }
}

/// `words[c] = pair(even[c], odd[c])`: natively where the CPU rounds to bf16
/// ([`native_rounding`]), else [`pair_rows_vector`].
pub(crate) fn pair_rows(even: &[f32], odd: &[f32], words: &mut [u32]) {
    let len = words.len().min(even.len()).min(odd.len());
    #[cfg(target_arch = "x86_64")]
    if native_rounding() {
        // SAFETY: the CPU has the features; the three slices are `len` long.
        return unsafe { native::pair_rows(&even[..len], &odd[..len], &mut words[..len]) };
    }
    pair_rows_vector(&even[..len], &odd[..len], &mut words[..len])
}

dispatch! {
    /// [`pair_rows`] in ordinary vector code.
    fn pair_rows_vector(even: &[f32], odd: &[f32], words: &mut [u32]) -> () {
        for ((w, &e), &o) in words.iter_mut().zip(even).zip(odd) {
            *w = pair(e, o);
        }
    }
}

/// The packed depth (pairs per row or rows of pairs) of a `k`-deep operand for this CPU's
/// kernel.
pub(crate) fn depth(k: usize) -> usize {
    Kernel::best().depth(k)
}

/// One row of a left operand for [`Matrix::Packed`]: the pairs of `src` into `words`, zeros
/// after them. A packed left operand holds its rows `ld` words apart and readable rows up to
/// the next multiple of [`AMX_ROWS`] (zeros).
pub(crate) fn pack_row(src: &[f32], words: &mut [u32]) {
    pair_up(src, words);
    words[src.len().div_ceil(2)..].fill(0);
}

/// A right operand for [`Matrix::Packed`]: the `k` rows of `cols` values of `src` (`ld`
/// apart, unit stride) as `depth` ([`depth`]) pair-rows of `cols + NR` words (zeros past `k`
/// and `cols`), the row length its `ld` (the tests' reference packing).
#[cfg(test)]
fn pack_pair_rows(
    src: &[f32],
    k: usize,
    ld: usize,
    cols: usize,
    depth: usize,
    out: &mut AlignedVec<u32>,
) {
    let width = cols + NR;
    sized(out, depth * width)
        .par_chunks_mut(width)
        .enumerate()
        .for_each(|(q, words)| padded_pair_row(src, k, ld, cols, q, words));
}

/// Pair-row `q` of [`pack_pair_rows`] into all of `words`: zeros past `cols`, and all zeros
/// for a pair past `k`.
fn padded_pair_row(src: &[f32], k: usize, ld: usize, cols: usize, q: usize, words: &mut [u32]) {
    if q < k.div_ceil(2) {
        pair_row(src, k, ld, cols, q, words);
        words[cols..].fill(0);
    } else {
        words.fill(0);
    }
}

/// [`pack_pair_rows`] into `words` (zeros, `width` words per pair-row), on this thread.
pub(crate) fn pack_pair_rows_into(
    src: &[f32],
    k: usize,
    ld: usize,
    cols: usize,
    width: usize,
    words: &mut [u32],
) {
    for (q, words) in words.chunks_mut(width).take(k.div_ceil(2)).enumerate() {
        pair_row(src, k, ld, cols, q, words);
    }
}

/// Pair-row `q` of [`pack_pair_rows`]: rows `2q` and `2q + 1` of `src`.
fn pair_row(src: &[f32], k: usize, ld: usize, cols: usize, q: usize, words: &mut [u32]) {
    let even = &src[2 * q * ld..2 * q * ld + cols];
    if 2 * q + 1 < k {
        let odd = &src[(2 * q + 1) * ld..(2 * q + 1) * ld + cols];
        pair_rows(even, odd, &mut words[..cols]);
    } else {
        pair_up_even(even, &mut words[..cols]);
    }
}

/// The right operand `[k, cols]` whose column `j` is row `j` of `src` (`k` values, rows `ld`
/// apart: a transposed matrix) as pair-rows into `words` (zeros, `width` words per pair-row),
/// on this thread; `column` is scratch.
pub(crate) fn pack_pair_columns_into(
    src: &[f32],
    cols: usize,
    ld: usize,
    k: usize,
    width: usize,
    words: &mut [u32],
    column: &mut Vec<u32>,
) {
    column.resize(k.div_ceil(2), 0);
    for j in 0..cols {
        pair_up(&src[j * ld..j * ld + k], column);
        for (w, &v) in words[j..].iter_mut().step_by(width).zip(column.iter()) {
            *w = v;
        }
    }
}

/// `words[c] = pair(even[c], 0)`.
pub(crate) fn pair_up_even(even: &[f32], words: &mut [u32]) {
    for (w, &e) in words.iter_mut().zip(even) {
        *w = round(e);
    }
}

/// The right operand's columns `j0..j0 + NR` as `[depth][NR]` words (zeros past `k` and `n`);
/// `column` is scratch for `k.div_ceil(2)` words.
///
/// # Safety
/// `rhs` must address `k × n` elements.
unsafe fn pack_right(
    rhs: Operand,
    k: usize,
    n: usize,
    j0: usize,
    panel: &mut [u32],
    column: &mut Vec<u32>,
) {
    let cols = NR.min(n - j0);
    if cols < NR {
        panel.fill(0);
    }
    let pairs = k.div_ceil(2);
    panel[pairs * NR..].fill(0);
    if rhs.cs == 1 {
        // Rows contiguous: two rows at a time.
        for (q, words) in panel.chunks_exact_mut(NR).take(pairs).enumerate() {
            // SAFETY: rows 2q (and 2q + 1) < k, columns j0..j0 + cols < n.
            let even = unsafe { rhs.row(2 * q, j0, cols) };
            if 2 * q + 1 < k {
                // SAFETY: as above.
                let odd = unsafe { rhs.row(2 * q + 1, j0, cols) };
                pair_rows(even, odd, &mut words[..cols]);
            } else {
                pair_up_even(even, &mut words[..cols]);
            }
        }
    } else if rhs.rs == 1 {
        // Columns contiguous (a transposed weight): each column down, then spread out.
        let transposed = Operand {
            rs: rhs.cs,
            cs: 1,
            ..rhs
        };
        column.resize(pairs, 0);
        for c in 0..cols {
            // SAFETY: column j0 + c < n, rows 0..k.
            pair_up(unsafe { transposed.row(j0 + c, 0, k) }, column);
            for (w, &v) in panel.iter_mut().skip(c).step_by(NR).zip(column.iter()) {
                *w = v;
            }
        }
    } else {
        for (q, words) in panel.chunks_exact_mut(NR).take(pairs).enumerate() {
            for (c, w) in words.iter_mut().take(cols).enumerate() {
                // SAFETY: rows < k and columns j0 + c < n, inside the operand.
                let get = |r: usize| {
                    if r < k {
                        unsafe { rhs.at(r, j0 + c) }
                    } else {
                        0.0
                    }
                };
                *w = pair(get(2 * q), get(2 * q + 1));
            }
        }
    }
}

/// The low (even-`k`) value of a pair, in f32.
#[inline(always)]
fn lo(w: u32) -> f32 {
    f32::from_bits(w << 16)
}

/// The high (odd-`k`) value of a pair, in f32.
#[inline(always)]
fn hi(w: u32) -> f32 {
    f32::from_bits(w & 0xffff_0000)
}

/// The portable micro-kernel ([`Kernel::tile`] with [`MR`] rows): per pair, the odd product
/// and then the even one added to each sum (both exact in f32), as `vdpbf16ps` does.
///
/// # Safety
/// As [`Kernel::tile`].
unsafe fn tile_portable(t: Tile) {
    let mut sums = [[0.0f32; NR]; MR];
    for (r, row) in sums.iter_mut().enumerate() {
        // SAFETY: row r of `out` holds NR values; a `Rows` start a value for every row.
        match t.start {
            Start::Zero => {}
            Start::Out => {
                row.copy_from_slice(unsafe { std::slice::from_raw_parts(t.out.add(r * t.ldo), NR) })
            }
            Start::Rows(values) => row.fill(unsafe { *values.add(16 * r) }),
        }
    }
    for s in 0..t.segments {
        // SAFETY: s < segments; `a` holds MR rows of `kc` words, `b` `kc` rows of NR words.
        let (a, b) = unsafe {
            let (a, b) = t.segment(s);
            (
                std::array::from_fn::<_, MR, _>(|r| {
                    std::slice::from_raw_parts(a.add(r * t.lda), t.kc)
                }),
                (0..t.kc).map(move |q| std::slice::from_raw_parts(b.add(q * t.ldb), NR)),
            )
        };
        for (q, bw) in b.enumerate() {
            let words: [u32; MR] = std::array::from_fn(|r| a[r][q]);
            portable_step(&words, bw, &mut sums);
        }
    }
    for (r, row) in sums.iter().enumerate() {
        // SAFETY: row r of `out` holds NR values.
        unsafe { std::ptr::copy_nonoverlapping(row.as_ptr(), t.out.add(r * t.ldo), NR) };
    }
}

dispatch! {
    /// One pair of [`tile_portable`]: `sums[r][c] += hi·hi, then += lo·lo`.
    fn portable_step(a: &[u32; MR], b: &[u32], sums: &mut [[f32; NR]; MR]) -> () {
        for (row, &aw) in sums.iter_mut().zip(a) {
            let (al, ah) = (lo(aw), hi(aw));
            for (s, &w) in row.iter_mut().zip(b) {
                *s = (*s + ah * hi(w)) + al * lo(w);
            }
        }
    }
}

/// The `vdpbf16ps` micro-kernel ([`Kernel::tile`] with [`MR`] rows): [`MR`] × 2
/// accumulators of 16 lanes; per pair, two loads of the right operand and one broadcast of
/// each left row's word.
///
/// # Safety
/// As [`Kernel::tile`]; the CPU has AVX512F and AVX512-BF16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_avx512bf16(t: Tile) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's guarantees; a broadcast word is a pair of bf16 values, and
    // `__m512bh` is 32 of them (the same bits).
    unsafe {
        let mut sums = [[_mm512_setzero_ps(); 2]; MR];
        for (r, s) in sums.iter_mut().enumerate() {
            match t.start {
                Start::Zero => {}
                Start::Out => {
                    s[0] = _mm512_loadu_ps(t.out.add(r * t.ldo));
                    s[1] = _mm512_loadu_ps(t.out.add(r * t.ldo + 16));
                }
                Start::Rows(values) => *s = [_mm512_set1_ps(*values.add(16 * r)); 2],
            }
        }
        for segment in 0..t.segments {
            let (ta, tb) = t.segment(segment);
            for q in 0..t.kc {
                let bw = tb.add(q * t.ldb);
                let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bw.cast()));
                let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bw.add(16).cast()));
                for (r, s) in sums.iter_mut().enumerate() {
                    let w = *ta.add(r * t.lda + q);
                    let a: __m512bh = std::mem::transmute(_mm512_set1_epi32(w as i32));
                    s[0] = _mm512_dpbf16_ps(s[0], a, b0);
                    s[1] = _mm512_dpbf16_ps(s[1], a, b1);
                }
            }
        }
        for (r, s) in sums.iter().enumerate() {
            _mm512_storeu_ps(t.out.add(r * t.ldo), s[0]);
            _mm512_storeu_ps(t.out.add(r * t.ldo + 16), s[1]);
        }
    }
}

/// The AMX kernel, in inline assembly (Rust has no stable AMX intrinsics): tiles 0–3 hold a
/// 32 × 32 block of sums, 4–5 two 16-row slices of the left operand, 6–7 two 16-column
/// slices of the right one; each `tdpbf16ps` adds 16 × 16 sums of 32 products.
#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{Start, Tile};
    use std::arch::asm;
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

    /// Whether the CPU has AMX-BF16 and Linux lets this process use the tile registers
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`, asked once).
    pub fn available() -> bool {
        static GRANTED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *GRANTED.get_or_init(|| {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let edx = std::arch::x86_64::__cpuid_count(7, 0).edx;
            if edx & (1 << 22) == 0 || edx & (1 << 24) == 0 || !cfg!(target_os = "linux") {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
            const XFEATURE_XTILEDATA: u64 = 18;
            const SYS_ARCH_PRCTL: i64 = 158;
            let ret: i64;
            // SAFETY: the arch_prctl system call with two integer arguments; it only changes
            // which extended states this process may use.
            unsafe {
                asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL => ret,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            ret == 0
        })
    }

    /// The tile configuration: palette 1, eight tiles of 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    const CONFIG: Config = {
        let mut c = [0u8; 64];
        c[0] = 1;
        let mut t = 0;
        while t < 8 {
            c[16 + 2 * t] = 64;
            c[48 + t] = 16;
            t += 1;
        }
        Config(c)
    };

    /// Loads [`CONFIG`] on this thread.
    ///
    /// # Safety
    /// [`available`] must be true.
    pub unsafe fn configure() {
        // SAFETY: a valid 64-byte configuration.
        unsafe { asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly)) };
    }

    /// Releases the tiles of this thread.
    ///
    /// # Safety
    /// [`available`] must be true.
    pub unsafe fn release() {
        // SAFETY: always valid once AMX is granted.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// [`super::Kernel::tile`] with 32 rows.
    ///
    /// # Safety
    /// As there; [`configure`] ran on this thread and `t.kc` is a multiple of 16.
    #[inline(always)]
    pub unsafe fn tile(t: Tile) {
        let (sa, sb, so) = (t.lda * 4, t.ldb * 4, t.ldo * 4);
        let c = t.out;
        // SAFETY: the caller's guarantees; every load and store stays inside the operands
        // and `out` (32 rows of 32 values).
        unsafe {
            let (c1, c2, c3) = (c.add(16), c.add(16 * t.ldo), c.add(16 * t.ldo + 16));
            match t.start {
                Start::Out => asm!(
                    "tileloadd tmm0, [{c0} + {so}]",
                    "tileloadd tmm1, [{c1} + {so}]",
                    "tileloadd tmm2, [{c2} + {so}]",
                    "tileloadd tmm3, [{c3} + {so}]",
                    c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                    so = in(reg) so,
                    options(nostack, readonly)
                ),
                // Rows 0-15 of both column halves from the first 16 values, rows 16-31 from
                // the next 16.
                Start::Rows(values) => asm!(
                    "tileloadd tmm0, [{v0} + {sv}]",
                    "tileloadd tmm1, [{v0} + {sv}]",
                    "tileloadd tmm2, [{v1} + {sv}]",
                    "tileloadd tmm3, [{v1} + {sv}]",
                    v0 = in(reg) values, v1 = in(reg) values.add(16 * 16),
                    sv = in(reg) 64usize,
                    options(nostack, readonly)
                ),
                Start::Zero => asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                ),
            }
            for segment in 0..t.segments {
                let (a, b) = t.segment(segment);
                for s in (0..t.kc).step_by(16) {
                    let a0 = a.add(s);
                    let b0 = b.add(s * t.ldb);
                    // The right operand's next 16 pair-rows into L1 (its rows lie far apart,
                    // past what the hardware prefetchers follow); the left one's next words
                    // are the next cache line of each row.
                    let next = b0.wrapping_add(16 * t.ldb);
                    for r in 0..16 {
                        let row = next.wrapping_add(r * t.ldb).cast::<i8>();
                        _mm_prefetch::<_MM_HINT_T0>(row);
                        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
                    }
                    // Each load as late as the products allow: tiles are not renamed, so a
                    // load waits for the products that still read the tile it replaces.
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}]",
                        "tileloadd tmm6, [{b0} + {sb}]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0,
                        a1 = in(reg) a0.add(16 * t.lda),
                        b0 = in(reg) b0,
                        b1 = in(reg) b0.add(16),
                        sa = in(reg) sa,
                        sb = in(reg) sb,
                        options(nostack, readonly)
                    );
                }
            }
            asm!(
                "tilestored [{c0} + {so}], tmm0",
                "tilestored [{c1} + {so}], tmm1",
                "tilestored [{c2} + {so}], tmm2",
                "tilestored [{c3} + {so}], tmm3",
                c0 = in(reg) c, c1 = in(reg) c1, c2 = in(reg) c2, c3 = in(reg) c3,
                so = in(reg) so,
                options(nostack)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(x: f32) -> f64 {
        f64::from(f32::from_bits(round(x) << 16))
    }

    /// Where the CPU rounds in hardware, its pairs are the portable code's, bit for bit: ties
    /// to even, infinities, a NaN, an odd count (the last value alone).
    #[test]
    fn native_rounding_matches_the_portable_rounding() {
        #[cfg(target_arch = "x86_64")]
        if native_rounding() {
            let tie = |m: f32| 1.0 + m * 2f32.powi(-8);
            let mut src = values(1000, 4);
            src.extend([tie(1.0), tie(3.0), -tie(1.0), f32::MAX, -0.0, 1e-30]);
            src.extend([f32::INFINITY, f32::NEG_INFINITY, f32::NAN]);
            let pairs = src.len().div_ceil(2);
            let (mut native, mut portable) = (vec![0; pairs], vec![0; pairs]);
            pair_up(&src, &mut native);
            pair_up_vector(&src, &mut portable);
            assert_eq!(native, portable);
            let (even, odd) = src.split_at(pairs);
            let len = odd.len();
            let (mut native, mut portable) = (vec![0; len], vec![0; len]);
            pair_rows(&even[..len], odd, &mut native);
            pair_rows_vector(&even[..len], odd, &mut portable);
            assert_eq!(native, portable);
        }
    }

    /// Values of both signs and a spread of magnitudes, not representable in bf16.
    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = ((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.0 - 1.0;
                v * (1.0 + (i % 5) as f32 * 0.37)
            })
            .collect()
    }

    /// Runs `dst = scale · a · b (+ dst)` with both storage orders of `b` and compares it with
    /// the exact product of the bf16-rounded operands.
    fn check(m: usize, k: usize, n: usize, accumulate: bool, parallel: bool) {
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let scale = 0.5;
        let mut outputs = Vec::new();
        let mut largest_bound = 0.0f64;
        for kernel in Kernel::available() {
            for (rhs, rs, cs) in [(&b, n, 1), (&bt, 1, k)] {
                let mut dst: Vec<f32> = values(m * (n + 3), 3);
                let before = dst.clone();
                let p = Product {
                    m,
                    n,
                    k,
                    dst: dst.as_mut_ptr(),
                    dst_rs: n + 3,
                    accumulate,
                    lhs: Operand::new(&a, k, 1).into(),
                    rhs: Operand::new(rhs, rs, cs).into(),
                    scale,
                    parallel,
                };
                // SAFETY: the operands and `dst` hold the sizes the product addresses.
                unsafe { gemm(&p, kernel) };
                for i in 0..m {
                    for j in 0..n + 3 {
                        let got = f64::from(dst[i * (n + 3) + j]);
                        if j >= n {
                            assert_eq!(got, f64::from(before[i * (n + 3) + j]), "padding");
                            continue;
                        }
                        let exact: f64 = (0..k).map(|c| bf(a[i * k + c]) * bf(b[c * n + j])).sum();
                        let base = if accumulate {
                            f64::from(before[i * (n + 3) + j])
                        } else {
                            0.0
                        };
                        let want = base + f64::from(scale) * exact;
                        let bound: f64 = (0..k)
                            .map(|c| (bf(a[i * k + c]) * bf(b[c * n + j])).abs())
                            .sum::<f64>()
                            * 1e-6
                            + 1e-6 * base.abs();
                        largest_bound = largest_bound.max(bound);
                        assert!(
                            (got - want).abs() <= bound + 1e-12,
                            "{kernel:?} {m}x{k}x{n} [{i},{j}]: {got} vs {want}"
                        );
                    }
                }
                outputs.push(dst);
            }
        }
        // Every kernel and layout gives the same sums up to the order of the additions.
        for o in &outputs[1..] {
            let diff = o
                .iter()
                .zip(&outputs[0])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let bound = (2.0 * largest_bound).max(1e-5);
            assert!(
                f64::from(diff) <= bound,
                "{m}x{k}x{n}: kernels differ by {diff}"
            );
        }
    }

    #[test]
    fn matches_the_exact_product_of_the_rounded_operands() {
        check(1, 1, 1, false, false);
        check(3, 5, 7, false, false); // every remainder
        check(MR, 2 * KC, NR, true, false); // whole tiles, two k blocks
        check(MC + 9, 2 * KC + 3, NC + 33, false, true); // several tasks
        check(17, 40, 75, true, true);
        check(4, 0, 5, true, false);
        check(4, 0, 5, false, false);
    }

    #[test]
    fn reduce_sums_the_segments_products() {
        let (m, n, k) = (AMX_ROWS + 37, REDUCE_COLS + 45, 45);
        let offsets = [0, 5, 33];
        // Two images, each `cols` columns of the right operand.
        let (images, cols) = (2, n + 33);
        let a = values(offsets.len() * m * k, 4); // [segment, m, k]
        let b = values(k * images * cols, 5); // [k, images · cols]
        let bias = values(m, 6);
        let rows = m.div_ceil(AMX_ROWS) * AMX_ROWS;
        for kernel in Kernel::available() {
            let depth = kernel.depth(k);
            let row = offsets.len() * depth;
            let mut left = vec![0u32; rows * row];
            for (r, words) in left.chunks_exact_mut(row).take(m).enumerate() {
                for (s, words) in words.chunks_exact_mut(depth).enumerate() {
                    pack_row(&a[(s * m + r) * k..][..k], words);
                }
            }
            let mut right = AlignedVec::new();
            let width = images * cols;
            pack_pair_rows(&b, k, width, width, depth, &mut right);
            let ld = n + 2;
            let mut dst = vec![f32::NAN; images * m * ld];
            for with_bias in [false, true] {
                let r = Reduction {
                    m,
                    n,
                    depth,
                    a: Packed::new(&left, row),
                    a_step: depth,
                    b: Packed::new(&right, width + NR),
                    b_offsets: &offsets,
                    images,
                    b_image: cols,
                    bias: with_bias.then_some(&bias[..]),
                    dst: dst.as_mut_ptr(),
                    dst_rs: ld,
                    dst_image: m * ld,
                };
                // SAFETY: the operands are packed as `reduce` reads them, `dst` is
                // [images, m, ld].
                unsafe { reduce(&r, kernel) };
                for (image, i, j) in
                    (0..images * m * ld).map(|e| (e / (m * ld), e / ld % m, e % ld))
                {
                    let got = f64::from(dst[(image * m + i) * ld + j]);
                    if j >= n {
                        assert!(got.is_nan(), "padding");
                        continue;
                    }
                    let terms = offsets.iter().enumerate().flat_map(|(s, &off)| {
                        let (a, b) = (&a, &b);
                        let column = image * cols + j + off;
                        (0..k).map(move |c| bf(a[(s * m + i) * k + c]) * bf(b[c * width + column]))
                    });
                    let base = if with_bias { f64::from(bias[i]) } else { 0.0 };
                    let (want, bound) = terms.fold((base, 0.0), |(w, b), t| (w + t, b + t.abs()));
                    assert!(
                        (got - want).abs() <= bound * 1e-6 + 1e-6 * base.abs() + 1e-12,
                        "{kernel:?} image {image} [{i},{j}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn rounds_to_nearest_even() {
        assert_eq!(round(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: ties to the even 1.
        assert_eq!(round(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(round(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(round(-2.5), 0xc020);
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert_eq!(round(f32::MAX), 0x7f80); // overflows to infinity
        assert!(f32::from_bits(round(f32::NAN) << 16).is_nan());
    }
}
