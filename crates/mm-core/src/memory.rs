//! The pool of recycled CPU buffers.
//!
//! On the flex backend this crate's kernels (linear layers, convolutions, attention,
//! activations) write their outputs into buffers of their own. When such a tensor is
//! dropped, a buffer of 1 MiB or more goes to a pool, and a later output reuses the smallest
//! idle buffer that holds it instead of asking the system for fresh memory, whose pages the
//! kernel must map and zero on first touch. A Stable Diffusion UNet step or VAE decode
//! repeats the same shapes, so from the third call on every such output comes from the
//! pool (see `docs/performance.md` for the time this saves).
//!
//! Idle buffers do not add to the peak: when an output needs a fresh buffer, the oldest idle
//! buffers are freed as far as needed to keep idle and live buffers together within the
//! most the live ones have held so far. (A reused buffer can be larger than the output it
//! holds, so the live buffers' own peak can grow somewhat; `docs/performance.md` has the
//! measured peaks.) The pool also keeps at most [`pool_limit`] idle bytes
//! (1 GiB unless changed). The idle bytes stay part of the process's resident memory until
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
