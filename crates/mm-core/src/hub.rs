//! Finding a model's files on disk.
//!
//! A model is named either by a folder (a Hugging Face snapshot downloaded anywhere) or by a
//! repo id such as `openai/clip-vit-base-patch32`, which is looked up in the local Hugging Face
//! cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`) without any
//! network access. With the `hub` cargo feature, `ModelDir::download` fetches missing files.
//!
//! ```no_run
//! # fn main() -> mm_core::Result<()> {
//! let dir = mm_core::hub::ModelDir::resolve("openai/clip-vit-base-patch32")?;
//! let config = dir.file("config.json")?;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A model snapshot folder, and the repo id it was resolved from, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelDir {
    path: PathBuf,
    repo_id: Option<String>,
}

impl ModelDir {
    /// Resolves a folder path, or a repo id (`org/name`) in the local Hugging Face cache.
    pub fn resolve(model: impl AsRef<str>) -> Result<Self> {
        let model = model.as_ref();
        let as_path = Path::new(model);
        if as_path.is_dir() {
            return Ok(Self {
                path: as_path.to_path_buf(),
                repo_id: None,
            });
        }
        let looks_like_repo = model.split('/').count() == 2 && !model.starts_with(['.', '/']);
        if !looks_like_repo {
            return Err(Error::MissingFile {
                what: "model folder".into(),
                path: as_path.to_path_buf(),
                hint: String::new(),
            });
        }
        let cache = hub_cache_dir();
        let repo_dir = cache.join(format!("models--{}", model.replace('/', "--")));
        match snapshot_in(&repo_dir) {
            Some(path) => Ok(Self {
                path,
                repo_id: Some(model.to_string()),
            }),
            None => Err(Error::MissingFile {
                what: format!("model '{model}' (neither a folder nor in the Hugging Face cache)"),
                path: repo_dir,
                hint: format!("; download it with `huggingface-cli download {model}`"),
            }),
        }
    }

    /// The snapshot folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The repo id this folder was resolved from, when it came from the cache.
    pub fn repo_id(&self) -> Option<&str> {
        self.repo_id.as_deref()
    }

    /// The path of a file of the snapshot, or a [`Error::MissingFile`] that says how to get it.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        if path.exists() {
            return Ok(path);
        }
        let repo = self.repo_id.as_deref().unwrap_or("<repo-id>");
        Err(Error::MissingFile {
            what: name.to_string(),
            path,
            hint: format!(
                "; get it with `huggingface-cli download {repo} {name} --local-dir {}`",
                self.path.display()
            ),
        })
    }

    /// The first of `names` that exists, or an error naming them all.
    pub fn first_file(&self, names: &[&str]) -> Result<PathBuf> {
        names
            .iter()
            .map(|n| self.path.join(n))
            .find(|p| p.exists())
            .ok_or_else(|| {
                let repo = self.repo_id.as_deref().unwrap_or("<repo-id>");
                Error::MissingFile {
                    what: names.join(" or "),
                    path: self.path.clone(),
                    hint: format!(
                        "; get it with `huggingface-cli download {repo} {} --local-dir {}`",
                        names[0],
                        self.path.display()
                    ),
                }
            })
    }

    /// The model weights: `model.safetensors` or its sharded index.
    pub fn weights(&self) -> Result<crate::weights::Weights> {
        let file = self.first_file(&["model.safetensors.index.json", "model.safetensors"])?;
        crate::weights::Weights::open(file)
    }

    /// Downloads `files` of `repo_id` into the Hugging Face cache (those already there are not
    /// fetched again) and returns the snapshot folder.
    #[cfg(feature = "hub")]
    pub fn download(repo_id: &str, files: &[&str]) -> Result<Self> {
        let api = hf_hub::api::sync::Api::new().map_err(|e| Error::MissingFile {
            what: format!("Hugging Face hub client ({e})"),
            path: hub_cache_dir(),
            hint: String::new(),
        })?;
        let repo = api.model(repo_id.to_string());
        let mut dir = None;
        for file in files {
            let path = repo.get(file).map_err(|e| Error::MissingFile {
                what: format!("{file} of {repo_id} ({e})"),
                path: hub_cache_dir(),
                hint: String::new(),
            })?;
            dir = path.parent().map(Path::to_path_buf);
        }
        Ok(Self {
            path: dir.unwrap_or_else(|| hub_cache_dir()),
            repo_id: Some(repo_id.to_string()),
        })
    }
}

/// The Hugging Face hub cache folder, from the same variables `huggingface_hub` reads.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(home) = std::env::var_os("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".cache").join("huggingface").join("hub")
}

/// The snapshot `refs/main` points at, else the only (or latest modified) snapshot.
fn snapshot_in(repo_dir: &Path) -> Option<PathBuf> {
    let snapshots = repo_dir.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(repo_dir.join("refs").join("main")) {
        let path = snapshots.join(rev.trim());
        if path.is_dir() {
            return Some(path);
        }
    }
    std::fs::read_dir(&snapshots)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_repo_id_in_cache() {
        let tmp = std::env::temp_dir().join(format!("mm-hub-test-{}", std::process::id()));
        let repo = tmp.join("models--org--name");
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        std::fs::write(repo.join("snapshots/abc123/config.json"), "{}").unwrap();
        assert_eq!(snapshot_in(&repo), Some(repo.join("snapshots/abc123")));
        let dir = ModelDir {
            path: repo.join("snapshots/abc123"),
            repo_id: Some("org/name".into()),
        };
        assert!(dir.file("config.json").is_ok());
        let err = dir.file("model.safetensors").unwrap_err().to_string();
        assert!(
            err.contains("huggingface-cli download org/name model.safetensors"),
            "{err}"
        );
        std::fs::remove_dir_all(tmp).unwrap();
    }

    #[test]
    fn unknown_model_is_a_clear_error() {
        let err = ModelDir::resolve("./no/such/folder").unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }));
    }
}
