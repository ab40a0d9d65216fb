//! Helpers for the parity tests: fixture paths, reading expected tensors, comparing.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use safetensors::{Dtype, SafeTensors};

/// `tests/fixtures/<name>` at the workspace root.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures")
        .join(name)
}

/// The device the tests run on: `$MM_TEST_DEVICE` (`cpu`, `wgpu`, `cuda:N` when compiled in),
/// else the CPU.
pub fn device() -> Device {
    match std::env::var("MM_TEST_DEVICE") {
        Ok(name) => mm_core::device::parse(&name).expect("MM_TEST_DEVICE"),
        Err(_) => Device::flex(),
    }
}

/// The expected inputs and outputs written by `tools/reference`.
pub struct Expected(Vec<u8>);

impl Expected {
    pub fn open(model: &str) -> Self {
        Self::file(&fixture(model).join("expected.safetensors"))
    }

    /// A safetensors file of inputs and outputs under another name.
    pub fn file(path: &std::path::Path) -> Self {
        Self(std::fs::read(path).unwrap())
    }

    fn raw(&self, name: &str) -> (Dtype, Vec<usize>, Vec<u8>) {
        let st = SafeTensors::deserialize(&self.0).unwrap();
        let t = st
            .tensor(name)
            .unwrap_or_else(|_| panic!("no '{name}' in fixture"));
        (t.dtype(), t.shape().to_vec(), t.data().to_vec())
    }

    pub fn names(&self) -> Vec<String> {
        SafeTensors::deserialize(&self.0)
            .unwrap()
            .names()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    pub fn float<const D: usize>(&self, name: &str) -> Tensor<D> {
        let (dtype, shape, bytes) = self.raw(name);
        assert_eq!(dtype, Dtype::F32, "{name}");
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &device())
    }

    pub fn int<const D: usize>(&self, name: &str) -> Tensor<D, Int> {
        let (dtype, shape, bytes) = self.raw(name);
        assert_eq!(dtype, Dtype::I64, "{name}");
        let v: Vec<i64> = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Tensor::from_data(TensorData::new(v, shape), &device())
    }

    /// Asserts `actual` matches the fixture tensor `name` (same shape, max abs error ≤ tol).
    pub fn check<const D: usize>(&self, name: &str, actual: Tensor<D>, tol: f32) {
        let expected = self.float::<D>(name);
        assert_eq!(actual.dims(), expected.dims(), "shape of {name}");
        let err: f32 = (actual - expected).abs().max().into_scalar::<f32>();
        assert!(err <= tol, "{name}: max abs error {err:e} > {tol:e}");
        eprintln!("{name}: max abs error {err:.2e}");
    }
}

/// Checks a tower's outputs against `{prefix}last_hidden_state`, `{prefix}pooler_output` (when
/// the fixture has it) and every `{prefix}hidden_states.{i}`.
pub fn check_tower(exp: &Expected, prefix: &str, out: &mm_vision::TowerOutput, tol: f32) {
    exp.check(
        &format!("{prefix}last_hidden_state"),
        out.last_hidden_state.clone(),
        tol,
    );
    let pooled = format!("{prefix}pooler_output");
    if exp.names().contains(&pooled) {
        exp.check(&pooled, out.pooler_output.clone(), tol);
    }
    for (i, h) in out.hidden_states.iter().enumerate() {
        exp.check(&format!("{prefix}hidden_states.{i}"), h.clone(), tol);
    }
}

/// Checks both towers, the embeddings, the logits and the loss of a contrastive model.
pub fn check_contrastive(
    exp: &Expected,
    out: &mm_vision::contrastive::ContrastiveOutput,
    tol: f32,
) {
    check_tower(exp, "text.", &out.text_output, tol);
    check_tower(exp, "vision.", &out.vision_output, tol);
    exp.check("text_embeds", out.text_embeds.clone(), tol);
    exp.check("image_embeds", out.image_embeds.clone(), tol);
    exp.check("logits_per_image", out.logits_per_image.clone(), tol);
    exp.check("logits_per_text", out.logits_per_text.clone(), tol);
    exp.check("loss", out.loss(), tol);
}

/// The shared real assets: `$MM_ASSETS`, else `../shared/assets` beside the repo.
pub fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    }
}
