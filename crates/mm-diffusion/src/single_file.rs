//! Single-file Stable Diffusion checkpoints in the original CompVis / LDM key layout
//! (`v1-5-pruned-emaonly.safetensors`, `v2-1_768-ema-pruned.safetensors` and the fine-tunes
//! shared on model sites), converted to the diffusers names the models here load.
//!
//! Such a file holds the UNet under `model.diffusion_model.`, the VAE under
//! `first_stage_model.` and the text encoder under `cond_stage_model.transformer.` (SD 1.x,
//! OpenAI CLIP) or `cond_stage_model.model.` (SD 2.x, OpenCLIP ViT-H with a fused `in_proj`),
//! plus training buffers (the noise schedule, EMA counters) that inference does not use.
//! [`SingleFile::components`] renames every tensor lazily — nothing is read until a model
//! loads it — and reshapes or splits the few tensors whose layout differs (the VAE's 1×1
//! attention convolutions, OpenCLIP's fused query-key-value projection). The architecture is
//! not stored in the file: the configs come from a diffusers folder of the same model family
//! (for SD 1.5, the `unet/`, `vae/` and `text_encoder/` configs of
//! `stable-diffusion-v1-5/stable-diffusion-v1-5`).
//!
//! ```no_run
//! use mm_core::config::read_json;
//! use mm_diffusion::single_file::{LdmLayout, SingleFile};
//! use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
//!
//! fn main() -> mm_diffusion::Result<()> {
//!     let device = mm_core::device::cpu();
//!     let file = SingleFile::open("v1-5-pruned-emaonly.safetensors")?;
//!     let parts = file.components(&LdmLayout::SD1)?;
//!     let config: AutoencoderKLConfig = read_json("sd15/vae/config.json")?;
//!     let vae = AutoencoderKL::from_weights(&config, parts.vae, &device)?;
//!     # let _ = vae;
//!     Ok(())
//! }
//! ```

use std::collections::HashMap;
use std::path::Path;

use mm_core::weights::Weights;

use crate::{Error, Result};

const UNET: &str = "model.diffusion_model.";
const VAE: [&str; 2] = ["first_stage_model.", "vae."];
const CLIP: &str = "cond_stage_model.transformer.";
const OPENCLIP: &str = "cond_stage_model.model.";

/// The few architecture numbers the LDM → diffusers key mapping depends on. They are in the
/// diffusers configs: the UNet's `layers_per_block`, the number of the VAE's
/// `up_block_types`, and the text encoder's `num_hidden_layers` (OpenCLIP's extra last block,
/// unused by Stable Diffusion 2.x, is dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LdmLayout {
    /// `layers_per_block` of the UNet config.
    pub layers_per_block: usize,
    /// The number of VAE decoder up blocks (`up_block_types.len()`).
    pub vae_up_blocks: usize,
    /// `num_hidden_layers` of the text encoder config.
    pub text_layers: usize,
}

impl LdmLayout {
    /// Stable Diffusion 1.x.
    pub const SD1: Self = Self {
        layers_per_block: 2,
        vae_up_blocks: 4,
        text_layers: 12,
    };
    /// Stable Diffusion 2.x (the penultimate of OpenCLIP-H's 24 layers is the output).
    pub const SD2: Self = Self {
        layers_per_block: 2,
        vae_up_blocks: 4,
        text_layers: 23,
    };
}

/// Which model a tensor of a single file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `model.diffusion_model.*`.
    Unet,
    /// `first_stage_model.*`.
    Vae,
    /// `cond_stage_model.*`.
    TextEncoder,
}

/// How one tensor of a single file becomes one or more diffusers tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMapping {
    /// The model it belongs to.
    pub component: Component,
    /// The diffusers name, or the names of the equal parts it is split into along its first
    /// dimension (query, key, value).
    pub names: Vec<String>,
    /// A 1×1 convolution kernel (`[out, in, 1, 1]`) that diffusers stores as a linear weight.
    pub squeeze: bool,
}

impl KeyMapping {
    fn new(component: Component, name: String) -> Self {
        Self {
            component,
            names: vec![name],
            squeeze: false,
        }
    }

    /// The diffusers shapes of the tensors this mapping produces from a stored `shape`.
    pub fn shapes(&self, shape: &[usize]) -> Vec<Vec<usize>> {
        let mut shape = shape.to_vec();
        if self.squeeze {
            shape.truncate(2);
        }
        if let Some(first) = shape.first_mut() {
            *first /= self.names.len();
        }
        vec![shape; self.names.len()]
    }
}

/// The diffusers name(s) of a single-file tensor, or `None` for a tensor no model uses (the
/// noise-schedule buffers, EMA counters, `position_ids`, OpenCLIP's `text_projection`,
/// `logit_scale` and its blocks past [`LdmLayout::text_layers`]). A tensor under a known
/// prefix that the mapping does not know keeps its name, so that a strict load reports it.
pub fn map_key(name: &str, layout: &LdmLayout) -> Option<KeyMapping> {
    if let Some(rest) = name.strip_prefix(UNET) {
        return Some(KeyMapping::new(
            Component::Unet,
            unet_key(rest, layout.layers_per_block),
        ));
    }
    if let Some(rest) = VAE.iter().find_map(|p| name.strip_prefix(p)) {
        let (name, squeeze) = vae_key(rest, layout.vae_up_blocks);
        return Some(KeyMapping {
            squeeze,
            ..KeyMapping::new(Component::Vae, name)
        });
    }
    if let Some(rest) = name.strip_prefix(CLIP) {
        return (!rest.ends_with("position_ids"))
            .then(|| KeyMapping::new(Component::TextEncoder, rest.to_string()));
    }
    name.strip_prefix(OPENCLIP)
        .and_then(|rest| openclip_key(rest, layout.text_layers))
}

/// A resnet's LDM sub-module names and diffusers' names for them.
const RESNET: [(&str, &str); 6] = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
];

const UNET_FIXED: [(&str, &str); 5] = [
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    ("input_blocks.0.0", "conv_in"),
    ("out.0", "conv_norm_out"),
    ("out.2", "conv_out"),
];

fn resnet(prefix: String, rest: &str) -> String {
    let rest = RESNET
        .iter()
        .find_map(|(ldm, new)| {
            let tail = rest.strip_prefix(ldm)?;
            tail.starts_with('.').then(|| format!("{new}{tail}"))
        })
        .unwrap_or_else(|| rest.to_string());
    format!("{prefix}.{rest}")
}

/// Splits `"<index>.<slot>.<rest>"` into its parts.
fn indexed(rest: &str) -> Option<(usize, &str, &str)> {
    let (index, rest) = rest.split_once('.')?;
    let (slot, rest) = rest.split_once('.')?;
    Some((index.parse().ok()?, slot, rest))
}

fn unet_key(rest: &str, lpb: usize) -> String {
    if let Some(name) = UNET_FIXED.iter().find_map(|(ldm, new)| {
        let leaf = rest.strip_prefix(ldm)?.strip_prefix('.')?;
        Some(format!("{new}.{leaf}"))
    }) {
        return name;
    }
    let per_block = lpb + 1;
    let mapped = if let Some((i, slot, tail)) = rest
        .strip_prefix("input_blocks.")
        .and_then(indexed)
        .filter(|(i, ..)| *i > 0)
    {
        let (block, layer) = ((i - 1) / per_block, (i - 1) % per_block);
        match (slot, tail.strip_prefix("op.")) {
            ("0", Some(leaf)) => Some(format!("down_blocks.{block}.downsamplers.0.conv.{leaf}")),
            ("0", None) => Some(resnet(format!("down_blocks.{block}.resnets.{layer}"), tail)),
            ("1", _) => Some(format!("down_blocks.{block}.attentions.{layer}.{tail}")),
            _ => None,
        }
    } else if let Some((slot, tail)) = rest
        .strip_prefix("middle_block.")
        .and_then(|r| r.split_once('.'))
    {
        match slot {
            "0" | "2" => Some(resnet(
                format!("mid_block.resnets.{}", usize::from(slot == "2")),
                tail,
            )),
            "1" => Some(format!("mid_block.attentions.0.{tail}")),
            _ => None,
        }
    } else if let Some((i, slot, tail)) = rest.strip_prefix("output_blocks.").and_then(indexed) {
        let (block, layer) = (i / per_block, i % per_block);
        match (slot, tail.strip_prefix("conv.")) {
            ("1" | "2", Some(leaf)) => Some(format!("up_blocks.{block}.upsamplers.0.conv.{leaf}")),
            ("0", None) => Some(resnet(format!("up_blocks.{block}.resnets.{layer}"), tail)),
            ("1", None) => Some(format!("up_blocks.{block}.attentions.{layer}.{tail}")),
            _ => None,
        }
    } else {
        None
    };
    mapped.unwrap_or_else(|| rest.to_string())
}

/// LDM's VAE attention sub-modules and diffusers' names for them.
const VAE_ATTENTION: [(&str, &str); 5] = [
    ("norm", "group_norm"),
    ("q", "to_q"),
    ("k", "to_k"),
    ("v", "to_v"),
    ("proj_out", "to_out.0"),
];

/// The diffusers name of a VAE tensor, and whether it is a 1×1 convolution to squeeze.
fn vae_key(rest: &str, up_blocks: usize) -> (String, bool) {
    let (coder, rest) = rest.split_once('.').unwrap_or((rest, ""));
    let shortcut = |s: &str| s.replace("nin_shortcut", "conv_shortcut");
    if let Some(leaf) = rest.strip_prefix("norm_out.") {
        return (format!("{coder}.conv_norm_out.{leaf}"), false);
    }
    if let Some((i, slot, tail)) = rest.strip_prefix("down.").and_then(indexed) {
        let name = match slot {
            "downsample" => format!("down_blocks.{i}.downsamplers.0.{tail}"),
            _ => shortcut(&format!("down_blocks.{i}.resnets.{tail}")),
        };
        return (format!("{coder}.{name}"), false);
    }
    if let Some((k, slot, tail)) = rest.strip_prefix("up.").and_then(indexed) {
        let i = up_blocks.saturating_sub(k + 1);
        let name = match slot {
            "upsample" => format!("up_blocks.{i}.upsamplers.0.{tail}"),
            _ => shortcut(&format!("up_blocks.{i}.resnets.{tail}")),
        };
        return (format!("{coder}.{name}"), false);
    }
    if let Some(tail) = rest.strip_prefix("mid.") {
        if let Some((n, tail)) = tail.strip_prefix("block_").and_then(|t| t.split_once('.'))
            && let Ok(n @ 1..) = n.parse::<usize>()
        {
            let name = format!("{coder}.mid_block.resnets.{}.{tail}", n - 1);
            return (shortcut(&name), false);
        }
        if let Some((module, leaf)) = tail
            .strip_prefix("attn_1.")
            .and_then(|t| t.rsplit_once('.'))
            && let Some((_, new)) = VAE_ATTENTION.iter().find(|(ldm, _)| *ldm == module)
        {
            let squeeze = leaf == "weight" && module != "norm";
            return (
                format!("{coder}.mid_block.attentions.0.{new}.{leaf}"),
                squeeze,
            );
        }
    }
    (
        format!("{coder}.{rest}").trim_end_matches('.').to_string(),
        false,
    )
}

const OPENCLIP_LAYER: [(&str, &str); 5] = [
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    ("mlp.c_fc", "mlp.fc1"),
    ("mlp.c_proj", "mlp.fc2"),
    ("attn.out_proj", "self_attn.out_proj"),
];

fn openclip_key(rest: &str, text_layers: usize) -> Option<KeyMapping> {
    let text = |name: String| Some(KeyMapping::new(Component::TextEncoder, name));
    match rest {
        "positional_embedding" => {
            return text("text_model.embeddings.position_embedding.weight".into());
        }
        "token_embedding.weight" => {
            return text("text_model.embeddings.token_embedding.weight".into());
        }
        "text_projection" | "logit_scale" => return None,
        _ => {}
    }
    if let Some(leaf) = rest.strip_prefix("ln_final.") {
        return text(format!("text_model.final_layer_norm.{leaf}"));
    }
    let Some((n, tail)) = rest
        .strip_prefix("transformer.resblocks.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(n, tail)| Some((n.parse::<usize>().ok()?, tail)))
    else {
        return text(rest.to_string());
    };
    if n >= text_layers {
        return None;
    }
    let layer = format!("text_model.encoder.layers.{n}");
    if let Some(leaf) = tail.strip_prefix("attn.in_proj_") {
        let names = ["q", "k", "v"].map(|x| format!("{layer}.self_attn.{x}_proj.{leaf}"));
        return Some(KeyMapping {
            component: Component::TextEncoder,
            names: names.to_vec(),
            squeeze: false,
        });
    }
    let renamed = OPENCLIP_LAYER
        .iter()
        .find_map(|(ldm, new)| Some(format!("{new}{}", tail.strip_prefix(ldm)?)))
        .unwrap_or_else(|| tail.to_string());
    text(format!("{layer}.{renamed}"))
}

/// The models' weights of a single file, under diffusers names.
#[derive(Debug, Clone)]
pub struct Components {
    /// For the UNet (the names of a diffusers `unet/` folder).
    pub unet: Weights,
    /// For [`AutoencoderKL`](crate::vae::AutoencoderKL).
    pub vae: Weights,
    /// For the CLIP text model (`text_model.*` names, as in a `text_encoder/` folder).
    pub text_encoder: Weights,
    /// Tensors no model uses (schedule buffers, EMA counters, ...), for information.
    pub ignored: Vec<String>,
}

/// An opened single-file checkpoint.
#[derive(Debug, Clone)]
pub struct SingleFile {
    weights: Weights,
}

impl SingleFile {
    /// Opens a single-file checkpoint (memory-mapped; nothing is read yet). A file without
    /// the LDM UNet prefix `model.diffusion_model.` is an error ([`Error::NotSingleFile`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let weights = Weights::open(path.as_ref())?;
        if !weights.names().any(|n| n.starts_with(UNET)) {
            return Err(Error::NotSingleFile(path.as_ref().display().to_string()));
        }
        Ok(Self { weights })
    }

    /// Whether the text encoder is SD 2.x's OpenCLIP (else SD 1.x's OpenAI CLIP).
    pub fn has_openclip_text_encoder(&self) -> bool {
        self.weights.names().any(|n| n.starts_with(OPENCLIP))
    }

    /// The layout SD 1.x or 2.x files have, chosen by the text encoder found in the file.
    pub fn default_layout(&self) -> LdmLayout {
        if self.has_openclip_text_encoder() {
            LdmLayout::SD2
        } else {
            LdmLayout::SD1
        }
    }

    /// All tensors, split by model and renamed to diffusers names.
    pub fn components(&self, layout: &LdmLayout) -> Result<Components> {
        let mappings: HashMap<&str, KeyMapping> = self
            .weights
            .names()
            .filter_map(|name| Some((name, map_key(name, layout)?)))
            .collect();
        // The name each tensor has once split and reshaped, and where it goes: a split
        // tensor's parts already carry their diffusers names.
        let mut targets: HashMap<String, (Component, String)> = HashMap::new();
        for (name, m) in &mappings {
            if let [single] = &m.names[..] {
                targets.insert(name.to_string(), (m.component, single.clone()));
            } else {
                for part in &m.names {
                    targets.insert(part.clone(), (m.component, part.clone()));
                }
            }
        }
        let converted = self
            .weights
            .clone()
            .split(|name| {
                let m = mappings.get(name)?;
                (m.names.len() > 1).then(|| m.names.clone())
            })?
            .reshape(|name, shape| {
                let m = mappings.get(name).filter(|m| m.squeeze)?;
                m.shapes(shape).pop()
            })?;
        let part = |component: Component| {
            converted.clone().rename(|name| {
                let (c, new) = targets.get(name)?;
                (*c == component).then(|| new.clone())
            })
        };
        Ok(Components {
            unet: part(Component::Unet),
            vae: part(Component::Vae),
            text_encoder: part(Component::TextEncoder),
            ignored: self
                .weights
                .names()
                .filter(|n| !mappings.contains_key(n))
                .map(str::to_string)
                .collect(),
        })
    }
}
