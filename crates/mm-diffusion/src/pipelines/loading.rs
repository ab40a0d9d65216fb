//! Reading a diffusers pipeline folder: `model_index.json` and one sub-folder per component.

use std::path::{Path, PathBuf};

use mm_core::hub::ModelDir;
use mm_core::weights::Weights;
use serde_json::Value;

use crate::{Error, Result};

pub(crate) use crate::loading::DIFFUSERS_WEIGHTS;

/// Weight files of a transformers component (the text encoder), in order of preference.
pub(crate) const TEXT_ENCODER_WEIGHTS: &[&str] = &[
    "model.safetensors.index.json",
    "model.safetensors",
    "model.fp16.safetensors.index.json",
    "model.fp16.safetensors",
];

/// A resolved pipeline folder and its `model_index.json`.
#[derive(Debug, Clone)]
pub struct PipelineDir {
    /// The folder.
    pub path: PathBuf,
    /// `model_index.json` (`_class_name` and one `[library, class]` pair per component).
    pub index: Value,
}

impl PipelineDir {
    /// Resolves a folder or a repo id in the local Hugging Face cache and reads its
    /// `model_index.json`.
    pub fn resolve(model: &str) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let index = mm_core::config::read_json(dir.file("model_index.json")?)?;
        Ok(Self {
            path: dir.path().to_path_buf(),
            index,
        })
    }

    /// The pipeline class (`StableDiffusionPipeline`, `StableDiffusionInpaintPipeline`, …).
    pub fn class_name(&self) -> Option<&str> {
        self.index.get("_class_name").and_then(Value::as_str)
    }

    /// The class `model_index.json` gives a component (`None` when absent or `[null, null]`).
    pub fn component_class(&self, component: &str) -> Option<&str> {
        self.index.get(component)?.get(1)?.as_str()
    }

    /// The sub-folder of `component`, which `model_index.json` must list.
    pub(crate) fn component(&self, component: &'static str) -> Result<ComponentDir> {
        if self.component_class(component).is_none() {
            return Err(Error::MissingComponent {
                component,
                path: self.path.clone(),
                reason: "model_index.json does not list it".into(),
            });
        }
        ComponentDir::new(&self.path, component)
    }
}

/// The folder of one component of a pipeline.
#[derive(Debug, Clone)]
pub(crate) struct ComponentDir {
    component: &'static str,
    path: PathBuf,
}

impl ComponentDir {
    /// `pipeline/<component>`, which must exist.
    pub(crate) fn new(pipeline: &Path, component: &'static str) -> Result<Self> {
        let path = pipeline.join(component);
        if !path.is_dir() {
            return Err(Error::MissingComponent {
                component,
                path: pipeline.to_path_buf(),
                reason: format!("no folder {}", path.display()),
            });
        }
        Ok(Self { component, path })
    }

    /// The folder.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A file of the component, if present.
    pub(crate) fn optional(&self, name: &str) -> Option<PathBuf> {
        let file = self.path.join(name);
        file.is_file().then_some(file)
    }

    /// A file of the component, or [`Error::MissingComponent`] naming it.
    pub(crate) fn required(&self, name: &str) -> Result<PathBuf> {
        self.first(&[name])
    }

    /// The first of `names` present, or [`Error::MissingComponent`] naming them.
    pub(crate) fn first(&self, names: &[&str]) -> Result<PathBuf> {
        names
            .iter()
            .find_map(|n| self.optional(n))
            .ok_or_else(|| Error::MissingComponent {
                component: self.component,
                path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
                reason: format!("no {} in {}", names.join(" or "), self.path.display()),
            })
    }

    /// The component's weights: the first of `names` present.
    pub(crate) fn weights(&self, names: &[&str]) -> Result<Weights> {
        Ok(Weights::open(self.first(names)?)?)
    }

    /// The component's `config.json`.
    pub(crate) fn config<C: serde::de::DeserializeOwned>(&self) -> Result<C> {
        Ok(mm_core::config::read_json(self.required("config.json")?)?)
    }
}
