//! Output buffers of the CPU kernels, and the pool that recycles them.
//!
//! A large allocation comes fresh from the kernel (glibc maps every block over 32 MiB, and
//! returns it on free; smaller freed blocks at the top of the heap are trimmed back to the
//! system), so each of its pages faults, and is zeroed by the kernel, on first touch: a `gemm`
//! of 8192 × 320 × 2560 took 69 ms into a fresh buffer against 45 ms into a reused one on
//! this project's 2-core VM. On Linux, fresh buffers of at least [`HUGE_PAGE_MIN`] bytes are
//! advised as transparent huge pages (`MADV_HUGEPAGE`, which the kernel's default `madvise`
//! mode honours): one fault per 2 MiB (49 ms for the same product).
//!
//! A model runs the same shapes layer after layer and step after step, so the kernels' large
//! outputs go back to a pool when their tensor is dropped, and a later output reuses the
//! smallest idle buffer that holds it: its pages are already mapped. Idle buffers are kept
//! only as far as they do not add to the peak of the live ones, and up to
//! [`pool_limit`](crate::memory::pool_limit) bytes (see [`crate::memory`]).

use std::mem::MaybeUninit;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use burn::tensor::{DType, Shape, TensorData};
use burn_std::{AccessError, AccessPolicy, AllocationController, AllocationProperty, Bytes};

use crate::aligned::AlignedVec;

/// The size from which a fresh buffer is advised as huge pages: 4 MiB.
const HUGE_PAGE_MIN: usize = 4 << 20;

/// The size from which a buffer is recycled through the pool: 1 MiB. Smaller blocks come from
/// the allocator's free lists, their pages usually mapped already.
const POOL_MIN: usize = 1 << 20;

/// The default limit on the idle bytes the pool keeps: 1 GiB.
const DEFAULT_POOL_LIMIT: usize = 1 << 30;

/// Idle buffers, oldest first, and the accounting that keeps them from raising the peak.
struct Pool {
    idle: Vec<AlignedVec<f32>>,
    /// The idle buffers' capacity, in bytes.
    bytes: usize,
    /// The capacity of the pooled-size buffers handed out and not back yet, in bytes.
    live: usize,
    /// The most `live` bytes so far.
    peak: usize,
    limit: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool::new(DEFAULT_POOL_LIMIT));

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while the lock was held leaves the pool consistent: every update is one push or
    // one removal with its byte count.
    POOL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    const fn new(limit: usize) -> Self {
        Self {
            idle: Vec::new(),
            bytes: 0,
            live: 0,
            peak: 0,
            limit,
        }
    }

    /// For a buffer of `len` values: the idle buffer with the least capacity of at least
    /// `len`, taken out of the pool; `None` when none fits, and the caller allocates a fresh
    /// one. Either way the buffer counts as live from now on, and the oldest idle buffers are
    /// freed as far as needed to keep idle and live bytes together within the most live bytes
    /// so far: the pool does not raise the peak that the live buffers reach (their spare
    /// capacity included).
    ///
    /// Measured under that bound (SD 1.5 UNet step / VAE decode, repeated): reusing only
    /// buffers at most a quarter larger than asked still missed 1.04 / 1.22 GB of fresh
    /// buffers per pass, at most twice as large 0.86 / 0.64 GB; any larger buffer, 10 / 8 MB on
    /// the second pass and none from the third on.
    fn take(&mut self, len: usize) -> Option<AlignedVec<f32>> {
        let fit = (self.idle.iter().enumerate())
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i);
        let taken = fit.map(|i| self.idle.remove(i));
        if let Some(v) = &taken {
            self.bytes -= bytes(v);
        }
        self.add_live(taken.as_ref().map_or(len * size_of::<f32>(), bytes));
        taken
    }

    /// Counts `size` more live bytes, freeing the oldest idle buffers as far as needed to
    /// keep idle and live bytes within the live peak.
    fn add_live(&mut self, size: usize) {
        self.live += size;
        self.peak = self.peak.max(self.live);
        self.evict_to(self.peak - self.live);
    }

    /// Takes back a live buffer for reuse, dropping the oldest idle buffers to stay within the
    /// limit (or `v` itself when it alone exceeds it).
    fn put(&mut self, mut v: AlignedVec<f32>) {
        let size = bytes(&v);
        self.live = self.live.saturating_sub(size);
        if size > self.limit {
            return;
        }
        self.evict_to(self.limit - size);
        v.clear();
        self.idle.push(v);
        self.bytes += size;
    }

    /// Frees the oldest idle buffers until at most `bytes` stay.
    fn evict_to(&mut self, bytes_left: usize) {
        let mut excess = self.bytes.saturating_sub(bytes_left);
        let mut evicted = 0;
        for v in &self.idle {
            if excess == 0 {
                break;
            }
            excess = excess.saturating_sub(bytes(v));
            evicted += 1;
        }
        for v in self.idle.drain(..evicted) {
            self.bytes -= bytes(&v);
        }
    }
}

fn bytes(v: &AlignedVec<f32>) -> usize {
    v.capacity() * size_of::<f32>()
}

/// The idle bytes the pool keeps at most; lowering it frees the oldest idle buffers.
pub(crate) fn set_pool_limit(limit: usize) {
    let mut pool = pool();
    pool.limit = limit;
    pool.evict_to(limit);
}

/// Frees every idle buffer.
pub(crate) fn release_pool() {
    pool().evict_to(0);
}

/// The limit on the pool's idle bytes.
pub(crate) fn pool_limit() -> usize {
    pool().limit
}

/// The bytes of the idle buffers in the pool.
pub(crate) fn pooled_bytes() -> usize {
    pool().bytes
}

/// An empty vector with room for `len` f32 values, on a cache line ([`crate::aligned`]): an
/// idle buffer of the pool when one fits, else a fresh one, its pages advised as huge pages
/// when it is large. The caller writes the values and sets the length.
fn with_capacity(len: usize) -> AlignedVec<f32> {
    if len * size_of::<f32>() >= POOL_MIN
        && let Some(v) = pool().take(len)
    {
        return v;
    }
    let v = AlignedVec::<f32>::with_capacity(len);
    advise_huge_pages(v.as_ptr().cast(), len * size_of::<f32>());
    v
}

/// f32 values that go back to the pool when dropped (large ones): a kernel's output, or its
/// scratch. [`Buffer::into_data`] hands the storage to a tensor, which recycles it in turn.
#[derive(Debug)]
pub(crate) struct Buffer(AlignedVec<f32>);

impl Buffer {
    /// The values as the storage of an f32 tensor of `shape`, without a copy.
    pub fn into_data(self, shape: impl Into<Shape>) -> TensorData {
        let len = self.0.len() * size_of::<f32>();
        // SAFETY: the controller exposes the buffer's `len` initialised bytes, and no others.
        let bytes = unsafe { Bytes::from_controller(Box::new(self), len) };
        TensorData::from_bytes(bytes, shape, DType::F32)
    }
}

impl From<Vec<f32>> for Buffer {
    /// The values copied into aligned storage (outputs small enough that a copy costs little,
    /// such as a product's few rows).
    fn from(values: Vec<f32>) -> Self {
        // SAFETY: `init_with` gets the values' copy, every element.
        unsafe {
            init_with(values.len(), |out| {
                for (d, &v) in out.iter_mut().zip(&values) {
                    d.write(v);
                }
            })
        }
    }
}

impl Deref for Buffer {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if bytes(&self.0) >= POOL_MIN {
            pool().put(std::mem::take(&mut self.0));
        }
    }
}

impl AllocationController for Buffer {
    fn alloc_align(&self) -> usize {
        crate::aligned::ALIGN
    }

    fn property(&self) -> AllocationProperty {
        AllocationProperty::Other
    }

    fn memory(&self, _policy: AccessPolicy) -> Result<&[MaybeUninit<u8>], AccessError> {
        let len = self.0.len() * size_of::<f32>();
        // SAFETY: the vector's first `len` bytes are its initialised values.
        Ok(unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), len) })
    }

    unsafe fn memory_mut(
        &mut self,
        _policy: AccessPolicy,
    ) -> Result<&mut [MaybeUninit<u8>], AccessError> {
        let len = self.0.len() * size_of::<f32>();
        // SAFETY: as in `memory`; the caller writes only initialised bytes, and any bit
        // pattern is a valid f32.
        Ok(unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) })
    }
}

/// A buffer of `len` f32 values written by `init`, which gets uninitialised storage
/// ([`with_capacity`]): no zeroing pass before the kernel's own writes.
///
/// # Safety
/// `init` must write every element.
pub(crate) unsafe fn init_with(len: usize, init: impl FnOnce(&mut [MaybeUninit<f32>])) -> Buffer {
    let mut v = with_capacity(len);
    init(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `init` wrote every element.
    unsafe { v.set_len(len) };
    Buffer(v)
}

/// An output buffer written by several threads at disjoint elements.
pub(crate) struct SharedOut(pub *mut f32);
// SAFETY: the threads write disjoint elements.
unsafe impl Sync for SharedOut {}
unsafe impl Send for SharedOut {}

impl SharedOut {
    /// The pointer to element `i`.
    ///
    /// # Safety
    /// `i` must be within the buffer.
    pub unsafe fn at(&self, i: usize) -> *mut f32 {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.add(i) }
    }
}

#[cfg(target_os = "linux")]
pub(crate) fn advise_huge_pages(ptr: *const u8, bytes: usize) {
    const HUGE: usize = 2 << 20;
    if bytes < HUGE_PAGE_MIN {
        return;
    }
    let start = (ptr as usize).next_multiple_of(HUGE);
    let end = (ptr as usize + bytes) / HUGE * HUGE;
    if end > start {
        // SAFETY: the range lies inside an allocation this process owns; the advice changes
        // how its pages are backed, never their contents. A refusal is harmless.
        unsafe {
            libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn advise_huge_pages(_ptr: *const u8, _bytes: usize) {}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, Tensor};

    /// `len` values' capacity from `p`, as `with_capacity` gets it.
    fn take(p: &mut Pool, len: usize) -> AlignedVec<f32> {
        p.take(len)
            .unwrap_or_else(|| AlignedVec::with_capacity(len))
    }

    /// The idle buffers' capacities, in units of [`U`] values.
    fn idle(p: &Pool) -> Vec<usize> {
        p.idle.iter().map(|v| v.capacity() / U).collect()
    }

    /// Values per unit of the sizes below: a line's, so that capacities are what was asked.
    const U: usize = 16;
    /// Bytes per unit.
    const B: usize = U * 4;

    /// The pool hands back the smallest idle buffer that fits; it frees the oldest idle buffers
    /// when they would raise the peak of idle and live bytes above the live peak, or exceed its
    /// limit.
    #[test]
    fn pool_reuses_the_best_fit_without_raising_the_peak() {
        let mut p = Pool::new(1000 * B);
        let first: Vec<AlignedVec<f32>> = [300, 100, 200].map(|n| take(&mut p, n * U)).into();
        assert!(p.idle.is_empty());
        assert_eq!((p.live, p.peak), (600 * B, 600 * B));
        first.into_iter().for_each(|v| p.put(v));
        assert_eq!(
            (idle(&p), p.bytes, p.live),
            (vec![300, 100, 200], 600 * B, 0)
        );
        // 200 is the least that fits 180 (100 is too small), 100 the least that fits 50.
        let v = take(&mut p, 180 * U);
        assert_eq!((v.capacity(), v.len()), (200 * U, 0));
        assert_eq!((p.bytes, p.live), (400 * B, 200 * B));
        let small = take(&mut p, 50 * U);
        assert_eq!((idle(&p), p.live), (vec![300], 300 * B));
        // None fits 400: a fresh buffer, a new live peak (700), and no idle byte may stay.
        let large = take(&mut p, 400 * U);
        assert_eq!((idle(&p), p.live, p.peak), (vec![], 700 * B, 700 * B));
        for v in [v, small, large] {
            p.put(v);
        }
        assert_eq!(
            (idle(&p), p.bytes, p.live),
            (vec![200, 100, 400], 700 * B, 0)
        );
        // The limit of 1000: more than it alone is not kept; 1000 idle + 100 drops the oldest.
        p.put(AlignedVec::with_capacity(300 * U));
        p.put(AlignedVec::with_capacity(2000 * U));
        assert_eq!(p.bytes, 1000 * B);
        p.put(AlignedVec::with_capacity(100 * U));
        assert_eq!((idle(&p), p.bytes), (vec![100, 400, 300, 100], 900 * B));
        p.evict_to(0);
        assert!(p.idle.is_empty());
        assert_eq!(p.bytes, 0);
    }

    /// A tensor on a pooled buffer reads its values, is modified in place when it owns them
    /// alone and copied on write when shared.
    #[test]
    fn tensors_own_pooled_buffers() {
        let device = Device::flex();
        let len = POOL_MIN; // 4 MiB of f32
        let write = |out: &mut [MaybeUninit<f32>]| {
            for (i, o) in out.iter_mut().enumerate() {
                o.write((i % 7) as f32);
            }
        };
        // SAFETY: `write` writes every element.
        let make = || unsafe { init_with(len, write) };
        let t = Tensor::<2>::from_data(make().into_data([len / 4, 4]), &device);
        let shared = t.clone();
        let doubled = t.clone() + shared.clone();
        let values = doubled.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            values
                .iter()
                .enumerate()
                .all(|(i, &v)| v == 2.0 * (i % 7) as f32)
        );
        let original = shared.into_data().try_to_vec::<f32>().unwrap();
        assert!(
            original
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i % 7) as f32)
        );
        let added = (t + 1.0).into_data().try_to_vec::<f32>().unwrap();
        assert!(
            added
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i % 7) as f32 + 1.0)
        );
        // A second buffer of the same size may reuse the first's storage: every value is
        // written again.
        let again = make();
        assert!(again.iter().enumerate().all(|(i, &v)| v == (i % 7) as f32));
    }
}
