//! Helpers for the tests: fixture and asset paths, reading expected tensors, comparing.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use mm_core::weights::Weights;
use safetensors::{Dtype, SafeTensors};

/// `tests/fixtures/<name>` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The shared real assets: `$MM_ASSETS`, else `../shared/assets` beside the repo.
pub fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    }
}

/// The device the tests run on: `$MM_TEST_DEVICE` (`cpu`, `wgpu`, `cuda:N` when compiled in),
/// else the CPU.
pub fn device() -> Device {
    match std::env::var("MM_TEST_DEVICE") {
        Ok(name) => mm_core::device::parse(&name).expect("MM_TEST_DEVICE"),
        Err(_) => Device::flex(),
    }
}

/// Named float32 tensors of a safetensors file (inputs and reference outputs).
pub struct Expected(Vec<u8>);

impl Expected {
    /// `expected.safetensors` of a fixture folder.
    pub fn fixture(name: &str) -> Self {
        Self::open(&fixture(name).join("expected.safetensors"))
    }

    pub fn open(path: &Path) -> Self {
        Self(std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    pub fn float<const D: usize>(&self, name: &str) -> Tensor<D> {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("no '{name}' in fixture"));
        assert_eq!(t.dtype(), Dtype::F32, "{name}");
        let v: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(v, t.shape().to_vec()), &device())
    }

    /// Asserts `actual` matches the tensor `name` (same shape, max abs error ≤ tol); returns
    /// the error.
    pub fn check<const D: usize>(&self, name: &str, actual: Tensor<D>, tol: f32) -> f32 {
        let expected = self.float::<D>(name);
        assert_eq!(actual.dims(), expected.dims(), "shape of {name}");
        let err = max_abs_diff(actual, expected);
        eprintln!("{name}: max abs error {err:.2e}");
        assert!(err <= tol, "{name}: max abs error {err:e} > {tol:e}");
        err
    }
}

/// Pipeline images are compared in `[0, 1]` with this tolerance.
pub const IMAGE_TOL: f32 = 1e-3;
/// Final latents are compared relative to their largest magnitude (at least 1).
pub const LATENT_REL_TOL: f32 = 1e-4;

/// Checks a pipeline run's final latents (relative to their maximum) and images against
/// `<name>.latents_out` / `<name>.images`.
pub fn check_run(exp: &Expected, name: &str, out: mm_diffusion::pipelines::Generated) {
    let expected = exp.float::<4>(&format!("{name}.latents_out"));
    assert_eq!(out.latents.dims(), expected.dims(), "{name}");
    let scale = expected.clone().abs().max().into_scalar::<f32>().max(1.0);
    let rel = max_abs_diff(out.latents, expected) / scale;
    eprintln!("{name}: latents error / max |latent| {rel:.2e}");
    assert!(rel <= LATENT_REL_TOL, "{name}: latents {rel:e}");
    eprint!("{name}: ");
    exp.check(&format!("{name}.images"), out.pixels, IMAGE_TOL);
}

/// Asserts that `model` (built from a full-size config, weights not materialised) has
/// exactly the `[name, shape]` list of `tensors.json` in `dir`, `count` tensors in all.
pub fn assert_tensor_list<M: burn::module::Module>(dir: &Path, model: &M, count: usize) {
    let text = std::fs::read_to_string(dir.join("tensors.json")).unwrap();
    let mut theirs: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    theirs.sort();
    let ours = mm_core::weights::expected_tensors(model);
    let missing: Vec<_> = theirs.iter().filter(|t| !ours.contains(t)).collect();
    let extra: Vec<_> = ours.iter().filter(|t| !theirs.contains(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{}: checkpoint tensors we lack: {missing:?}\nours not in checkpoint: {extra:?}",
        dir.display()
    );
    assert_eq!(ours.len(), count, "{}", dir.display());
}

pub fn max_abs_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    (a - b).abs().max().into_scalar::<f32>()
}

/// PSNR in dB of `decoded` against `reference`, both meant to be in `[0, 1]` (`decoded` is
/// clamped first).
pub fn psnr(decoded: Tensor<4>, reference: Tensor<4>) -> f32 {
    let mse = (decoded.clamp(0.0, 1.0) - reference)
        .powi_scalar(2)
        .mean()
        .into_scalar::<f32>();
    10.0 * (1.0 / mse).log10()
}

/// An asset photo as `[1, 3, H, W]` in `[0, 1]`, centre-cropped to at most `size × size` and
/// to multiples of 8.
pub fn photo(name: &str, size: u32) -> Tensor<4> {
    let img = mm_core::image::load_image(assets().join("images").join(name)).unwrap();
    let (w, h) = (
        img.width().min(size) / 8 * 8,
        img.height().min(size) / 8 * 8,
    );
    let (x, y) = ((img.width() - w) / 2, (img.height() - h) / 2);
    let crop = image::imageops::crop_imm(&img, x, y, w, h).to_image();
    mm_core::image::image_to_tensor(&crop, &device()).unsqueeze()
}

/// A tensor's values as f32, whatever its rank.
pub fn values(w: &Weights, name: &str) -> Vec<f32> {
    let dev = device();
    let data = match w.shape(name).unwrap().len() {
        1 => w.tensor::<1>(name, &dev).map(Tensor::into_data),
        2 => w.tensor::<2>(name, &dev).map(Tensor::into_data),
        3 => w.tensor::<3>(name, &dev).map(Tensor::into_data),
        4 => w.tensor::<4>(name, &dev).map(Tensor::into_data),
        r => panic!("{name}: rank {r}"),
    };
    data.unwrap_or_else(|e| panic!("{name}: {e}"))
        .try_to_vec::<f32>()
        .unwrap()
}

/// A temporary file, removed when dropped.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        std::fs::remove_file(&self.0).ok();
    }
}
