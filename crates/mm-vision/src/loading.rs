//! Shared plumbing for reading configs and checkpoints of the vision models.

use std::path::Path;

use mm_core::weights::Weights;
use serde::de::DeserializeOwned;

use crate::Result;

/// Reads a tower config that is either a whole file (`CLIPTextConfig` saved alone, as Stable
/// Diffusion's `text_encoder/config.json`) or nested under `key` (`text_config` of a
/// `CLIPConfig`).
pub(crate) fn read_tower_config<T: DeserializeOwned>(path: &Path, key: &str) -> Result<T> {
    let value: serde_json::Value = mm_core::config::read_json(path)?;
    let tower = value.get(key).cloned().unwrap_or(value);
    serde_json::from_value(tower).map_err(|source| {
        mm_core::Error::Config {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

/// Reads the tensors of one tower out of a checkpoint that may hold more (a full CLIP model)
/// or name them without their tower prefix (transformers 5 saves a standalone
/// `CLIPTextModel` as `embeddings.*`, the published checkpoints as `text_model.embeddings.*`).
///
/// Tensors named `prefix.*` or in `extra` are kept; those under another of `siblings` are
/// dropped; any other name is taken to be a bare name of this tower and gets the prefix.
/// `position_ids` buffers, stored by older checkpoints, are dropped.
pub(crate) fn select_tower(
    weights: Weights,
    prefix: &str,
    extra: &[&str],
    siblings: &[&str],
) -> Weights {
    let dotted = format!("{prefix}.");
    weights.rename(|name| {
        if name.ends_with("position_ids") {
            None
        } else if name.starts_with(&dotted) || extra.contains(&name) {
            Some(name.to_string())
        } else if siblings
            .iter()
            .any(|s| name == *s || name.starts_with(&format!("{s}.")))
        {
            None
        } else {
            Some(format!("{dotted}{name}"))
        }
    })
}

/// Drops the `position_ids` buffers older checkpoints carry.
pub(crate) fn without_buffers(weights: Weights) -> Weights {
    weights.rename(|name| (!name.ends_with("position_ids")).then(|| name.to_string()))
}
