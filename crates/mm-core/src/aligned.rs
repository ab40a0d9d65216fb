//! Growable buffers whose storage starts on a cache-line (64-byte) boundary.
//!
//! The AMX kernels load and store tiles of 16 rows of 64 bytes. A row that starts on a cache
//! line is one line; a row 16 bytes past one — where the system allocator puts large blocks —
//! is parts of two, so every tile touches twice the lines, and every store of a partial line
//! makes the core read it first. Measured (2 threads, 8192 × 320 × 2560 in bf16 into a
//! 84 MB output): 15.5–16.6 ms into an aligned output, 18.8–19.7 ms 16 bytes off; SD 1.5's
//! bf16 UNet step 3.92–3.96 → 2.93–3.18 s with every packed operand, scratch and output
//! aligned.

use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};

/// The alignment, in bytes.
pub(crate) const ALIGN: usize = 64;

/// One cache line: the unit of an [`AlignedVec`]'s allocation.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([MaybeUninit<u8>; ALIGN]);

/// Plain values for which every bit pattern is valid, a line holding a whole number of them.
pub(crate) trait Word: Copy + 'static {}
impl Word for u32 {}
impl Word for f32 {}

/// A vector of `T` ([`u32`] or [`f32`]) whose first value lies on a 64-byte boundary.
pub(crate) struct AlignedVec<T: Word> {
    /// The storage: every line counts as allocated (their bytes may be uninitialised).
    lines: Vec<Line>,
    len: usize,
    values: PhantomData<T>,
}

impl<T: Word> AlignedVec<T> {
    /// Values per line.
    const PER_LINE: usize = ALIGN / size_of::<T>();

    /// An empty vector (no allocation).
    pub const fn new() -> Self {
        Self {
            lines: Vec::new(),
            len: 0,
            values: PhantomData,
        }
    }

    /// An empty vector with room for `capacity` values.
    pub fn with_capacity(capacity: usize) -> Self {
        let lines = capacity.div_ceil(Self::PER_LINE);
        let mut storage = Vec::with_capacity(lines);
        // SAFETY: a `Line` is `MaybeUninit` bytes, valid uninitialised.
        unsafe { storage.set_len(lines) };
        Self {
            lines: storage,
            len: 0,
            values: PhantomData,
        }
    }

    /// How many values fit without reallocating.
    pub fn capacity(&self) -> usize {
        self.lines.len() * Self::PER_LINE
    }

    /// The storage past the values, up to the capacity.
    pub fn spare_capacity_mut(&mut self) -> &mut [MaybeUninit<T>] {
        let capacity = self.capacity();
        // SAFETY: the lines hold `capacity` values' bytes, aligned for `T`; `MaybeUninit<T>`
        // needs no initialisation.
        unsafe {
            let start = self
                .lines
                .as_mut_ptr()
                .cast::<MaybeUninit<T>>()
                .add(self.len);
            std::slice::from_raw_parts_mut(start, capacity - self.len)
        }
    }

    /// Sets the length.
    ///
    /// # Safety
    /// `len` must not exceed the capacity, and the first `len` values must be initialised.
    pub unsafe fn set_len(&mut self, len: usize) {
        debug_assert!(len <= self.capacity());
        self.len = len;
    }

    /// Drops the values (keeping the storage).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// `len` values: the first ones kept, new ones `value`; the storage grows (moving the
    /// values) when too small, and never shrinks.
    pub fn resize(&mut self, len: usize, value: T) {
        if len > self.capacity() {
            let mut grown = Self::with_capacity(len);
            grown.spare_capacity_mut()[..self.len]
                .iter_mut()
                .zip(self.iter())
                .for_each(|(d, &v)| {
                    d.write(v);
                });
            grown.len = self.len;
            *self = grown;
        }
        if len > self.len {
            let new = len - self.len;
            for d in &mut self.spare_capacity_mut()[..new] {
                d.write(value);
            }
        }
        self.len = len;
    }
}

impl<T: Word + Default> AlignedVec<T> {
    /// The first `len` values, the vector grown to `len` (zeros) when shorter but never
    /// shrunk: scratch that its user overwrites, written once however the sizes alternate.
    pub fn sized(&mut self, len: usize) -> &mut [T] {
        if self.len < len {
            self.resize(len, T::default());
        }
        &mut self[..len]
    }
}

impl<T: Word> Default for AlignedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Word> Deref for AlignedVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: the first `len` values are initialised (`set_len`, `resize`).
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl<T: Word> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

impl<T: Word> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedVec")
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_is_aligned_and_values_survive_growth() {
        let mut v = AlignedVec::<u32>::new();
        assert!(v.is_empty() && v.capacity() == 0);
        v.resize(5, 7);
        assert_eq!(&v[..], &[7; 5]);
        v[1] = 3;
        v.resize(1000, 1);
        assert_eq!(v.as_ptr() as usize % ALIGN, 0);
        assert_eq!((v[0], v[1], v[4], v[5], v[999]), (7, 3, 7, 1, 1));
        let capacity = v.capacity();
        v.resize(2, 0);
        assert_eq!((v.len(), v.capacity()), (2, capacity));
        v.clear();
        assert!(v.is_empty());
        let mut u = AlignedVec::<f32>::with_capacity(17);
        assert_eq!(u.capacity(), 32);
        assert_eq!(u.as_ptr() as usize % ALIGN, 0);
        u.spare_capacity_mut()[..3].iter_mut().for_each(|v| {
            v.write(0.5);
        });
        // SAFETY: three values written just above.
        unsafe { u.set_len(3) };
        assert_eq!(&u[..], &[0.5; 3]);
    }
}
