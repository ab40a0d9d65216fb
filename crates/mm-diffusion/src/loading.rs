//! Reading a diffusers component folder: `config.json` and `diffusion_pytorch_model.safetensors`
//! (or its sharded index, or the `.fp16` variant of either).

use mm_core::hub::ModelDir;
use mm_core::weights::Weights;
use serde::de::DeserializeOwned;

use crate::Result;

/// Weight files of a diffusers model component, in order of preference.
pub(crate) const DIFFUSERS_WEIGHTS: &[&str] = &[
    "diffusion_pytorch_model.safetensors.index.json",
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.fp16.safetensors.index.json",
    "diffusion_pytorch_model.fp16.safetensors",
    "model.safetensors",
];

/// The config and weights of a diffusers component: a folder (a pipeline's `vae/`, say) or a
/// repo id in the local Hugging Face cache.
pub(crate) fn component<C: DeserializeOwned>(model: &str) -> Result<(C, Weights)> {
    let dir = ModelDir::resolve(model)?;
    let config = mm_core::config::read_json(dir.file("config.json")?)?;
    let file = dir.first_file(DIFFUSERS_WEIGHTS)?;
    Ok((config, Weights::open(file)?))
}
