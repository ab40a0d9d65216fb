//! Choosing where models run.
//!
//! `mm` models take a [`burn::tensor::Device`], so any burn backend compiled in works. The CPU
//! backend is `flex` (always on); `wgpu` and `cuda` are opt-in cargo features of `mm-core`.
//! Pick the device explicitly: `Device::default()` may choose a software GPU emulation that is
//! far slower than `flex`.

use burn::tensor::Device;

use crate::{Error, Result};

/// The CPU device (burn's `flex` backend, SIMD and multi-threaded).
pub fn cpu() -> Device {
    Device::flex()
}

/// Parses a device name as given on a command line: `cpu`/`flex`, `wgpu` (with the `wgpu`
/// feature), `cuda` or `cuda:N` (with the `cuda` feature).
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "cpu" | "flex" => Ok(cpu()),
        #[cfg(feature = "wgpu")]
        "wgpu" | "gpu" => Ok(Device::wgpu(Default::default())),
        #[cfg(feature = "cuda")]
        s if s == "cuda" || s.starts_with("cuda:") => {
            let index = s
                .strip_prefix("cuda:")
                .map(str::parse)
                .transpose()
                .map_err(|_| Error::InvalidInput(format!("bad CUDA device '{s}'")))?
                .unwrap_or(0);
            Ok(Device::cuda(index))
        }
        other => Err(Error::InvalidInput(format!(
            "unknown or not compiled-in device '{other}' (available: cpu{}{})",
            if cfg!(feature = "wgpu") { ", wgpu" } else { "" },
            if cfg!(feature = "cuda") {
                ", cuda[:N]"
            } else {
                ""
            },
        ))),
    }
}

/// Whether this crate's CPU kernels run on `device`: the flex CPU device without autodiff.
/// On burn's autodiff device (training) every layer runs burn's differentiable operations
/// instead, which compute the same values (see `mm-train`'s autodiff tests).
pub fn runs_cpu_kernels(device: &Device) -> bool {
    *device == Device::flex() && !device.is_autodiff()
}
