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
    /// Where the folder lies inside its repo (`unet` for a pipeline component), when known.
    subfolder: Option<String>,
}

impl ModelDir {
    /// Resolves a folder path, or a repo id (`org/name`) in the local Hugging Face cache.
    pub fn resolve(model: impl AsRef<str>) -> Result<Self> {
        let model = model.as_ref();
        let as_path = Path::new(model);
        if as_path.is_dir() {
            return Ok(Self::folder(as_path));
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
                subfolder: None,
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

    /// A folder given by path. One inside the Hugging Face cache
    /// (`models--org--name/snapshots/<rev>/[sub]`) knows its repo id and sub-folder; one whose
    /// parent holds a `model_index.json` is a pipeline component (its sub-folder is its name).
    fn folder(path: &Path) -> Self {
        let (repo_id, subfolder) = match cache_location(path) {
            Some((repo, sub)) => (Some(repo), sub),
            None => {
                let component = path
                    .parent()
                    .filter(|parent| parent.join("model_index.json").is_file())
                    .and(path.file_name())
                    .map(|name| name.to_string_lossy().into_owned());
                (None, component)
            }
        };
        Self {
            path: path.to_path_buf(),
            repo_id,
            subfolder,
        }
    }

    /// How to download `name` of this folder: into the cache when the folder is a cached
    /// snapshot (its repo id known), else into the folder the user downloaded to.
    fn download_hint(&self, name: &str) -> String {
        let file = match &self.subfolder {
            Some(sub) => format!("{sub}/{name}"),
            None => name.to_string(),
        };
        match &self.repo_id {
            Some(repo) => format!("; get it with `huggingface-cli download {repo} {file}`"),
            None => {
                // The folder the repo was downloaded to: above the sub-folder, if any.
                let root = match &self.subfolder {
                    Some(_) => self.path.parent().unwrap_or(&self.path),
                    None => &self.path,
                };
                format!(
                    "; get it from the model's Hugging Face repo, e.g. `huggingface-cli download \
                     <org/name> {file} --local-dir {}`",
                    root.display()
                )
            }
        }
    }

    /// The path of a file of the snapshot, or a [`Error::MissingFile`] that says how to get it.
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.path.join(name);
        if path.exists() {
            return Ok(path);
        }
        Err(Error::MissingFile {
            what: name.to_string(),
            path,
            hint: self.download_hint(name),
        })
    }

    /// The first of `names` that exists, or an error naming them all; its hint downloads the
    /// first single file among them (not a shard index, which needs its shards too).
    pub fn first_file(&self, names: &[&str]) -> Result<PathBuf> {
        names
            .iter()
            .map(|n| self.path.join(n))
            .find(|p| p.exists())
            .ok_or_else(|| {
                let single = names
                    .iter()
                    .find(|n| !n.ends_with(".index.json"))
                    .or(names.first())
                    .copied()
                    .unwrap_or_default();
                Error::MissingFile {
                    what: names.join(" or "),
                    path: self.path.clone(),
                    hint: self.download_hint(single),
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
            subfolder: None,
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

/// The repo id and sub-folder of a folder inside a Hugging Face cache snapshot
/// (`…/models--org--name/snapshots/<rev>/[sub/…]`).
fn cache_location(path: &Path) -> Option<(String, Option<String>)> {
    let path = path.canonicalize().ok()?;
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let at = parts.iter().rposition(|p| p == "snapshots")?;
    let repo = parts.get(at.checked_sub(1)?)?.strip_prefix("models--")?;
    let (org, name) = repo.split_once("--")?;
    parts.get(at + 1)?; // the revision
    let sub = parts[at + 2..].join("/");
    Some((format!("{org}/{name}"), (!sub.is_empty()).then_some(sub)))
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
            subfolder: None,
        };
        assert!(dir.file("config.json").is_ok());
        let err = dir.file("model.safetensors").unwrap_err().to_string();
        assert!(
            err.contains("`huggingface-cli download org/name model.safetensors`"),
            "{err}"
        );
        std::fs::remove_dir_all(tmp).unwrap();
    }

    /// A pipeline component inside the cache, opened by its path: the hint names the repo,
    /// the file inside the component's folder (not a shard index) and no `--local-dir` (which
    /// would download into the cache's snapshot folder by hand).
    #[test]
    fn missing_file_hints_name_the_repo_and_the_component_file() {
        let tmp = std::env::temp_dir().join(format!("mm-hub-hint-{}", std::process::id()));
        let unet = tmp.join("models--org--pipe/snapshots/rev1/unet");
        std::fs::create_dir_all(&unet).unwrap();
        let dir = ModelDir::resolve(unet.to_str().unwrap()).unwrap();
        assert_eq!(dir.repo_id(), Some("org/pipe"));
        let names = ["w.safetensors.index.json", "w.safetensors"];
        let err = dir.first_file(&names).unwrap_err().to_string();
        assert!(
            err.ends_with("; get it with `huggingface-cli download org/pipe unet/w.safetensors`"),
            "{err}"
        );
        // A component of a pipeline downloaded to a plain folder: --local-dir is that folder.
        let plain = tmp.join("my-pipe");
        std::fs::create_dir_all(plain.join("vae")).unwrap();
        std::fs::write(plain.join("model_index.json"), "{}").unwrap();
        let dir = ModelDir::resolve(plain.join("vae").to_str().unwrap()).unwrap();
        let err = dir.file("config.json").unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "<org/name> vae/config.json --local-dir {}`",
                plain.display()
            )),
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
