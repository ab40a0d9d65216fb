//! The CPU kernels of the flex backend, in one place: what `precision`, `nn`, `quant` and
//! `gguf` call when a tensor lives on `Device::flex()` (and not on the autodiff device, whose
//! gradients must flow through burn's own ops: [`crate::device::runs_cpu_kernels`]).
//!
//! - [`gemm`]: every matrix product of the kernels below, in f32 or — under
//!   [`crate::precision::autocast`] with bf16 — in bf16 with f32 accumulation ([`bf16`]).
//! - [`linear`]: `x · w` for f32 and half-precision weights; [`quant`]: for ggml blocks.
//! - [`conv`]: stride-1 convolutions as matrix products over shifted views.
//! - [`attention`]: blocked softmax attention and the one-query decoding step.
//! - [`activation`], [`norm`]: element-wise activations, group and layer norm.
//! - [`simd`]: run-time dispatch between AVX-512, AVX2 and plain code.
//! - [`packed`]: the bf16-packed weights of an autocast scope.

pub(crate) mod activation;
pub(crate) mod attention;
pub(crate) mod bf16;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod linear;
pub(crate) mod norm;
pub(crate) mod packed;
pub(crate) mod quant;
pub(crate) mod simd;
