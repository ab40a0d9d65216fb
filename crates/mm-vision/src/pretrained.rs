//! Loading every model of this crate the same way: from a snapshot folder, a repo id in the
//! local Hugging Face cache, or a config and [`Weights`] in hand.

use std::path::Path;

use burn::tensor::Device;
use mm_core::hub::ModelDir;
use mm_core::weights::Weights;
use serde::de::DeserializeOwned;

use crate::Result;

/// A model that loads from a Hugging Face checkpoint.
///
/// ```no_run
/// use mm_vision::Pretrained;
/// use mm_vision::clip::ClipModel;
/// # fn main() -> mm_vision::Result<()> {
/// let model = ClipModel::load("openai/clip-vit-base-patch32", &mm_core::device::cpu())?;
/// # Ok(()) }
/// ```
pub trait Pretrained: Sized {
    /// The config type, mirroring the checkpoint's `config.json`.
    type Config: DeserializeOwned;

    /// Reads the config from a `config.json` file.
    fn read_config(path: &Path) -> Result<Self::Config> {
        Ok(mm_core::config::read_json(path)?)
    }

    /// Builds the model from a config and loads `weights` into it strictly: every tensor the
    /// model has must be found with the right shape, and every tensor read must be used.
    fn from_weights(config: &Self::Config, weights: Weights, device: &Device) -> Result<Self>;

    /// Loads a snapshot folder or cached repo id (`config.json` + `model.safetensors` or its
    /// sharded index).
    fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        Self::load_dir(&ModelDir::resolve(model)?, device)
    }

    /// Loads from a resolved snapshot folder.
    fn load_dir(dir: &ModelDir, device: &Device) -> Result<Self> {
        let config = Self::read_config(&dir.file("config.json")?)?;
        Self::from_weights(&config, dir.weights()?, device)
    }
}
