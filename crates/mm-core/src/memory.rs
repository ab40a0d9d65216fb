//! The pool of recycled CPU buffers.
//!
//! On the flex backend this crate's kernels (linear layers, convolutions, attention,
//! activations) write their outputs into buffers of their own. When such a tensor is
//! dropped, a buffer of 1 MiB or more goes to a pool, and a later output of about the same
//! size (at most a quarter smaller) reuses it instead of asking the system for fresh memory,
//! whose pages the kernel must map and zero on first touch: that saved about 4 % of a Stable
//! Diffusion UNet step here (see `docs/performance.md`).
//!
//! The pool holds at most [`pool_limit`] bytes of idle buffers (1 GiB unless changed),
//! dropping the oldest first. Those bytes stay part of the process's resident memory until
//! they are reused or released: call [`release_pool`] after a job to give them back, or
//! [`set_pool_limit`]`(0)` to turn the pool off.
//!
//! ```
//! use mm_core::memory;
//!
//! memory::set_pool_limit(256 << 20); // keep at most 256 MiB of idle buffers
//! // … run a model …
//! memory::release_pool();
//! assert_eq!(memory::pooled_bytes(), 0);
//! ```

use crate::buffer;

/// Sets the most bytes of idle buffers the pool keeps, freeing the oldest ones above it;
/// `0` turns the pool off.
pub fn set_pool_limit(bytes: usize) {
    buffer::set_pool_limit(bytes);
}

/// The most bytes of idle buffers the pool keeps (1 GiB by default).
pub fn pool_limit() -> usize {
    buffer::pool_limit()
}

/// The bytes of the idle buffers the pool holds now.
pub fn pooled_bytes() -> usize {
    buffer::pooled_bytes()
}

/// Frees every idle buffer of the pool (its limit stays as it is).
pub fn release_pool() {
    buffer::release_pool();
}
