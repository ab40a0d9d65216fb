//! The one matrix product every CPU kernel calls: `dst = [dst +] scale · lhs · rhs`, in f32
//! through the `gemm` crate, or in bf16 with f32 accumulation through [`super::bf16`] when the
//! caller computes in [`ComputeDtype::Bf16`].

use crate::precision::ComputeDtype;

/// A matrix operand of a [`Product`]: element `(r, c)` at `ptr + r · rs + c · cs`.
#[derive(Clone, Copy)]
pub(crate) struct Operand {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

impl Operand {
    /// The matrix in `values` from its first element, with row stride `rs` and column
    /// stride `cs` (in elements).
    pub fn new(values: &[f32], rs: usize, cs: usize) -> Self {
        Self {
            ptr: values.as_ptr(),
            rs: rs as isize,
            cs: cs as isize,
        }
    }

    /// `len` elements of row `r` from column `c` on, for an operand with unit column stride.
    ///
    /// # Safety
    /// They must lie in the memory the operand was made from.
    #[inline(always)]
    pub unsafe fn row<'a>(self, r: usize, c: usize, len: usize) -> &'a [f32] {
        debug_assert_eq!(self.cs, 1);
        // SAFETY: forwarded from the caller.
        unsafe {
            std::slice::from_raw_parts(self.ptr.offset(r as isize * self.rs + c as isize), len)
        }
    }

    /// Element `(r, c)`.
    ///
    /// # Safety
    /// The element must lie in the memory the operand was made from.
    #[inline(always)]
    pub unsafe fn at(self, r: usize, c: usize) -> f32 {
        // SAFETY: forwarded from the caller.
        unsafe { *self.ptr.offset(r as isize * self.rs + c as isize * self.cs) }
    }
}

/// An operand already rounded to bf16 pairs for [`super::bf16`] (a left operand of
/// `bf16::pack_row` rows `ld` words apart; a right one of `bf16::pack_pair_rows` pair-rows
/// `ld` words long); `panel` is 0 (set by the bf16 product for its own panels).
#[derive(Clone, Copy)]
pub(crate) struct Packed {
    pub ptr: *const u32,
    pub ld: usize,
    pub panel: usize,
}

impl Packed {
    /// The operand whose first row or pair-row starts at `words[0]`.
    pub fn new(words: &[u32], ld: usize) -> Self {
        Self {
            ptr: words.as_ptr(),
            ld,
            panel: 0,
        }
    }
}

/// An operand of a [`Product`]: f32 values, or bf16 pairs packed once for several bf16
/// products (only for [`ComputeDtype::Bf16`]).
#[derive(Clone, Copy)]
pub(crate) enum Matrix {
    F32(Operand),
    Packed(Packed),
}

impl From<Operand> for Matrix {
    fn from(op: Operand) -> Self {
        Matrix::F32(op)
    }
}

impl From<Packed> for Matrix {
    fn from(packed: Packed) -> Self {
        Matrix::Packed(packed)
    }
}

/// `dst[m, n] = scale · lhs[m, k] · rhs[k, n]`, or `dst += …` with `accumulate` (onto the
/// values already there); `dst` is row-major with row stride `dst_rs`, and `lhs` has unit
/// column stride.
pub(crate) struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub dst: *mut f32,
    pub dst_rs: usize,
    pub accumulate: bool,
    pub lhs: Matrix,
    pub rhs: Matrix,
    pub scale: f32,
    /// Whether the product may split itself between rayon's threads (else it runs on the
    /// calling thread: the caller splits the work).
    pub parallel: bool,
}

impl Product {
    /// Computes the product in `compute`'s arithmetic.
    ///
    /// # Safety
    /// `dst` must be valid for `m` rows of `dst_rs` elements (initialised when
    /// `accumulate`), written by nobody else meanwhile, and the operands must address `m × k`
    /// and `k × n` elements inside their memory.
    pub unsafe fn run(&self, compute: ComputeDtype) {
        if self.m == 0 || self.n == 0 {
            return;
        }
        match compute {
            // SAFETY: forwarded from the caller.
            ComputeDtype::Bf16 => unsafe { super::bf16::gemm(self, super::bf16::Kernel::best()) },
            // SAFETY: forwarded from the caller.
            ComputeDtype::F32 => unsafe { self.f32() },
        }
    }

    /// The product in f32 through the `gemm` crate.
    unsafe fn f32(&self) {
        let (Matrix::F32(lhs), Matrix::F32(rhs)) = (self.lhs, self.rhs) else {
            panic!("bf16-packed operands in an f32 product");
        };
        let parallelism = if self.parallel {
            gemm::Parallelism::Rayon(0)
        } else {
            gemm::Parallelism::None
        };
        // SAFETY: forwarded from the caller of `run`.
        unsafe {
            gemm::gemm(
                self.m,
                self.n,
                self.k,
                self.dst,
                1,
                self.dst_rs as isize,
                self.accumulate,
                lhs.ptr,
                lhs.cs,
                lhs.rs,
                rhs.ptr,
                rhs.cs,
                rhs.rs,
                if self.accumulate { 1.0 } else { 0.0 },
                self.scale,
                false,
                false,
                false,
                parallelism,
            );
        }
    }
}
