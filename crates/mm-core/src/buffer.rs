//! Output buffers of the CPU kernels.
//!
//! A large allocation comes fresh from the kernel (glibc maps every block over 32 MiB, and
//! returns it on free), so each of its 4 KiB pages faults on first touch: a `gemm` of
//! 8192 × 320 × 2560 took 69 ms into a fresh buffer against 45 ms into a reused one on this
//! project's 2-core VM. On Linux, buffers of at least [`HUGE_PAGE_MIN`] bytes are advised as
//! transparent huge pages first (`MADV_HUGEPAGE`, which the kernel's default `madvise` mode
//! honours): one fault per 2 MiB (49 ms for the same product).

use std::mem::MaybeUninit;

/// The size from which a buffer is advised as huge pages: 4 MiB.
const HUGE_PAGE_MIN: usize = 4 << 20;

/// An empty vector with room for `len` f32 values, its pages advised as huge pages when it is
/// large. The caller writes the values and sets the length.
fn with_capacity(len: usize) -> Vec<f32> {
    let v: Vec<f32> = Vec::with_capacity(len);
    advise_huge_pages(v.as_ptr().cast(), len * size_of::<f32>());
    v
}

/// A vector of `len` f32 values written by `init`, which gets the vector's uninitialised
/// storage ([`with_capacity`]): no zeroing pass before the kernel's own writes.
///
/// # Safety
/// `init` must write every element.
pub(crate) unsafe fn init_with(len: usize, init: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v = with_capacity(len);
    init(&mut v.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `init` wrote every element.
    unsafe { v.set_len(len) };
    v
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
fn advise_huge_pages(ptr: *const u8, bytes: usize) {
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
fn advise_huge_pages(_ptr: *const u8, _bytes: usize) {}
