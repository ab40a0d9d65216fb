//! Single-file Stable Diffusion checkpoints in the original CompVis / LDM (and Stability's
//! `sgm`) key layout (`v1-5-pruned-emaonly.safetensors`, `v2-1_768-ema-pruned.safetensors`,
//! `sd_xl_base_1.0.safetensors`, `sd_xl_refiner_1.0.safetensors` and the fine-tunes shared on
//! model sites) and Stability AI's Stable Diffusion 3 / 3.5 files (`sd3_medium.safetensors`,
//! `sd3_medium_incl_clips.safetensors`, `sd3.5_large.safetensors`,
//! `sd3.5_medium.safetensors`), converted to the diffusers names the models here load.
//!
//! Such a file holds the denoiser under `model.diffusion_model.` (the UNet; SD3's MMDiT
//! transformer, which a bare transformer file may also hold without the prefix) and the VAE
//! under `first_stage_model.`; the text encoders depend on the [`Family`]:
//!
//! | family | LDM prefix | diffusers component |
//! |---|---|---|
//! | SD 1.x | `cond_stage_model.transformer.` (OpenAI CLIP) | `text_encoder` |
//! | SD 2.x | `cond_stage_model.model.` (OpenCLIP ViT-H, fused `in_proj`) | `text_encoder` |
//! | SDXL base | `conditioner.embedders.0.transformer.` (CLIP ViT-L) | `text_encoder` |
//! | SDXL base | `conditioner.embedders.1.model.` (OpenCLIP bigG) | `text_encoder_2` |
//! | SDXL refiner | `conditioner.embedders.0.model.` (OpenCLIP bigG) | `text_encoder_2` |
//! | SD3 / 3.5 | `text_encoders.clip_l.transformer.` (CLIP ViT-L, transformers' names) | `text_encoder` |
//! | SD3 / 3.5 | `text_encoders.clip_g.transformer.` (OpenCLIP bigG, transformers' names) | `text_encoder_2` |
//! | SD3 / 3.5 | `text_encoders.t5xxl.transformer.` (T5 v1.1 XXL encoder) | `text_encoder_3` |
//!
//! SD3 files carry the text encoders or not (`sd3_medium.safetensors` has none,
//! `sd3_medium_incl_clips.safetensors` the two CLIPs, `…_t5xxlfp16` / `…_t5xxlfp8` T5 too: the
//! float8 one cannot be read, see [`mm_core::Error::UnsupportedDtype`]).
//! [`SingleFile::sd3_components`] renames the MMDiT lazily as diffusers'
//! `convert_sd3_transformer_checkpoint_to_diffusers` does (see [`map_sd3_key`]): the fused
//! `attn.qkv` / `attn2.qkv` projections are split into `to_q` / `to_k` / `to_v` (the context
//! stream's into `add_{q,k,v}_proj`), and the `(shift, scale)` halves of
//! `final_layer.adaLN_modulation.1` and of the last block's context
//! `adaLN_modulation.1` are swapped into diffusers' `(scale, shift)`. The CLIPs keep their
//! names; CLIP-L gets an identity `text_projection.weight`, as diffusers gives it (SD3 uses
//! its pooled output unprojected).
//!
//! FLUX.1 transformers in Black Forest Labs' original names (`flux1-dev.safetensors`, and
//! city96's GGUF files made from them) are told by [`is_bfl_flux`] and renamed by
//! [`flux_diffusers_weights`] as diffusers' `convert_flux_transformer_checkpoint_to_diffusers`
//! does (see [`bfl_flux_name`]): `double_blocks.<i>.img_attn.qkv` and `txt_attn.qkv` split
//! into `transformer_blocks.<i>.attn.to_{q,k,v}` / `add_{q,k,v}_proj`, `single_blocks.<i>.linear1`
//! into `single_transformer_blocks.<i>.attn.to_{q,k,v}` and `proj_mlp` (rows 3 × width and
//! 4 × width), `final_layer.adaLN_modulation.1`'s halves swapped into `norm_out.linear`;
//! `FluxTransformer2DModel::from_weights` applies it to any weights it is given. Quantized
//! matrices stay quantized through the split.
//!
//! SD 1.x / 2.x files also carry training buffers (the noise schedule, EMA counters) that
//! inference does not use. [`SingleFile::components`] (SD 1.x / 2.x) and
//! [`SingleFile::sdxl_components`] (SDXL) rename every tensor lazily — nothing is read until a
//! model loads it — and reshape, split or transpose the few tensors whose layout differs (the
//! VAE's 1×1 attention convolutions, OpenCLIP's fused query-key-value projection and its
//! `[hidden, projection]` `text_projection`, which becomes `CLIPTextModelWithProjection`'s
//! `text_projection.weight`). SDXL's added-condition embedding `label_emb.0.{0,2}` becomes
//! `add_embedding.linear_{1,2}`. The architecture is not stored in the file: the configs come
//! from a diffusers folder of the same model family (for SD 1.5, the `unet/`, `vae/` and
//! `text_encoder/` configs of `stable-diffusion-v1-5/stable-diffusion-v1-5`; for SDXL, those
//! and `text_encoder_2/` of `stabilityai/stable-diffusion-xl-base-1.0`).
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
//!
//! An SD3 file, with the configs of a diffusers folder of the same model:
//!
//! ```no_run
//! use burn::tensor::DType;
//! use mm_core::config::read_json;
//! use mm_diffusion::single_file::SingleFile;
//! use mm_diffusion::transformer::{SD3Transformer2DConfig, SD3Transformer2DModel};
//!
//! fn main() -> mm_diffusion::Result<()> {
//!     let device = mm_core::device::cpu();
//!     let file = SingleFile::open("sd3.5_medium.safetensors")?;
//!     let parts = file.sd3_components(&file.default_layout())?;
//!     let config: SD3Transformer2DConfig = read_json("sd35-medium/transformer/config.json")?;
//!     let transformer =
//!         SD3Transformer2DModel::from_weights(&config, parts.transformer.with_dtype(DType::BF16), &device)?;
//!     # let _ = transformer;
//!     Ok(())
//! }
//! ```
//!
//! An SDXL file, its family told by its keys:
//!
//! ```no_run
//! use std::path::Path;
//!
//! use mm_diffusion::single_file::{Family, SingleFile};
//! use mm_vision::Pretrained;
//! use mm_vision::clip::{ClipTextConfig, ClipTextModelWithProjection};
//!
//! fn main() -> mm_diffusion::Result<()> {
//!     let device = mm_core::device::cpu();
//!     let file = SingleFile::open("sd_xl_base_1.0.safetensors")?;
//!     assert_eq!(file.family(), Family::Sdxl);
//!     let parts = file.sdxl_components(&file.default_layout())?;
//!     let config = ClipTextConfig::from_file(Path::new("sdxl/text_encoder_2/config.json"))?;
//!     let text_2 = ClipTextModelWithProjection::from_weights(&config, parts.text_encoder_2, &device)?;
//!     # let _ = (text_2, parts.text_encoder, parts.unet, parts.vae);
//!     Ok(())
//! }
//! ```

use std::collections::HashMap;
use std::path::Path;

use mm_core::weights::Weights;

use crate::unet::UNet2DConditionConfig;
use crate::{Error, Result};

mod flux;
mod sd3;

pub use flux::{FLUX_KEY, bfl_flux_name, flux_diffusers_weights, is_bfl_flux};
pub use sd3::{Sd3Components, Sd3Variant, map_sd3_key, sd3_num_layers, sd3_variant};

const UNET: &str = "model.diffusion_model.";
const VAE: [&str; 2] = ["first_stage_model.", "vae."];
/// OpenAI CLIP text encoders (stored under transformers' names): SD 1.x's, SDXL base's first.
const CLIPS: [(&str, Component); 2] = [
    ("cond_stage_model.transformer.", Component::TextEncoder),
    (
        "conditioner.embedders.0.transformer.",
        Component::TextEncoder,
    ),
];
const SD2_OPENCLIP: &str = "cond_stage_model.model.";
const REFINER_OPENCLIP: &str = "conditioner.embedders.0.model.";
/// OpenCLIP text encoders: SD 2.x's ViT-H, SDXL base's and the refiner's bigG.
const OPENCLIPS: [(&str, Component); 3] = [
    (SD2_OPENCLIP, Component::TextEncoder),
    ("conditioner.embedders.1.model.", Component::TextEncoder2),
    (REFINER_OPENCLIP, Component::TextEncoder2),
];

/// The few architecture numbers the LDM → diffusers key mapping depends on. They are in the
/// diffusers configs: the UNet's `layers_per_block`, the number of the VAE's
/// `up_block_types`, and the OpenCLIP text encoder's `num_hidden_layers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LdmLayout {
    /// `layers_per_block` of the UNet config.
    pub layers_per_block: usize,
    /// The number of VAE decoder up blocks (`up_block_types.len()`).
    pub vae_up_blocks: usize,
    /// `num_hidden_layers` of the OpenCLIP text encoder's config (`text_encoder/` for SD 2.x,
    /// `text_encoder_2/` for SDXL): its blocks past that are dropped (the last of SD 2.x's
    /// OpenCLIP-H, which Stable Diffusion 2.x does not use; none of SDXL's bigG). OpenAI CLIP
    /// encoders (SD 1.x's, SDXL's first) keep every block whatever this says.
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
    /// SDXL base 1.0 and refiner 1.0: all 32 blocks of OpenCLIP bigG are kept (SDXL takes the
    /// penultimate hidden state itself).
    pub const SDXL: Self = Self {
        layers_per_block: 2,
        vae_up_blocks: 4,
        text_layers: 32,
    };
    /// Stable Diffusion 3 / 3.5: of a layout, only `vae_up_blocks` (4, as SDXL's) applies to
    /// them (no UNet; the CLIPs are stored whole, in transformers' layout).
    pub const SD3: Self = Self::SDXL;
}

/// The model family of a single file, told by its keys ([`SingleFile::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Stable Diffusion 1.x: OpenAI CLIP under `cond_stage_model.transformer.`.
    Sd1,
    /// Stable Diffusion 2.x: OpenCLIP-H under `cond_stage_model.model.`.
    Sd2,
    /// SDXL base: CLIP ViT-L and OpenCLIP bigG under `conditioner.embedders.{0,1}.`.
    Sdxl,
    /// SDXL refiner: OpenCLIP bigG alone, under `conditioner.embedders.0.model.`.
    SdxlRefiner,
    /// Stable Diffusion 3 / 3.5: the MMDiT's `joint_blocks.*` (see [`Sd3Variant`]).
    Sd3,
}

/// Which [`SingleFile`] method converts a family's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conversion {
    Sd,
    Sdxl,
    Sd3,
}

impl Conversion {
    /// What to call for files of this kind.
    fn hint(self) -> &'static str {
        match self {
            Self::Sd => "load it with SingleFile::components",
            Self::Sdxl => "load it with SingleFile::sdxl_components",
            Self::Sd3 => "load it with SingleFile::sd3_components",
        }
    }
}

impl Family {
    /// Whether it is SDXL (base or refiner): load it with [`SingleFile::sdxl_components`].
    pub fn is_sdxl(self) -> bool {
        matches!(self, Self::Sdxl | Self::SdxlRefiner)
    }

    /// The layout of the published checkpoints of this family.
    pub fn layout(self) -> LdmLayout {
        match self {
            Self::Sd1 => LdmLayout::SD1,
            Self::Sd2 => LdmLayout::SD2,
            Self::Sdxl | Self::SdxlRefiner => LdmLayout::SDXL,
            Self::Sd3 => LdmLayout::SD3,
        }
    }

    fn conversion(self) -> Conversion {
        match self {
            Self::Sd1 | Self::Sd2 => Conversion::Sd,
            Self::Sdxl | Self::SdxlRefiner => Conversion::Sdxl,
            Self::Sd3 => Conversion::Sd3,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sd1 => "Stable Diffusion 1.x",
            Self::Sd2 => "Stable Diffusion 2.x",
            Self::Sdxl => "SDXL base",
            Self::SdxlRefiner => "SDXL refiner",
            Self::Sd3 => "Stable Diffusion 3 / 3.5",
        })
    }
}

/// Which model a tensor of a single file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    /// `model.diffusion_model.*` of SD 1.x / 2.x / SDXL.
    Unet,
    /// `first_stage_model.*`.
    Vae,
    /// `cond_stage_model.*` (SD 1.x / 2.x), SDXL base's CLIP ViT-L
    /// (`conditioner.embedders.0.transformer.*`) or SD3's
    /// (`text_encoders.clip_l.transformer.*`).
    TextEncoder,
    /// SDXL's OpenCLIP bigG (`conditioner.embedders.1.model.*`, the refiner's
    /// `conditioner.embedders.0.model.*`) or SD3's (`text_encoders.clip_g.transformer.*`), as
    /// a `CLIPTextModelWithProjection`.
    TextEncoder2,
    /// SD3's MMDiT (`model.diffusion_model.*`, or unprefixed in a bare transformer file).
    Transformer,
    /// SD3's T5 v1.1 XXL encoder (`text_encoders.t5xxl.transformer.*`).
    TextEncoder3,
}

impl Component {
    /// The component's folder in a diffusers pipeline (`unet`, `vae`, `text_encoder`,
    /// `text_encoder_2`, `transformer`, `text_encoder_3`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::Vae => "vae",
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
            Self::Transformer => "transformer",
            Self::TextEncoder3 => "text_encoder_3",
        }
    }
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
    /// A matrix stored `[in, out]` (OpenCLIP's `text_projection`) that diffusers stores
    /// transposed, as a linear weight `[out, in]`.
    pub transpose: bool,
    /// An adaptive norm projection stored `(shift, scale)` along its first dimension that
    /// diffusers stores `(scale, shift)` (SD3's `final_layer.adaLN_modulation.1` and the last
    /// context block's): the two halves are swapped.
    pub swap_halves: bool,
}

impl KeyMapping {
    fn new(component: Component, name: String) -> Self {
        Self {
            component,
            names: vec![name],
            squeeze: false,
            transpose: false,
            swap_halves: false,
        }
    }

    /// The diffusers shapes of the tensors this mapping produces from a stored `shape`.
    pub fn shapes(&self, shape: &[usize]) -> Vec<Vec<usize>> {
        let mut shape = shape.to_vec();
        if self.squeeze {
            shape.truncate(2);
        }
        if self.transpose {
            shape.reverse();
        }
        if let Some(first) = shape.first_mut() {
            *first /= self.names.len();
        }
        vec![shape; self.names.len()]
    }
}

/// `name` without the first of `prefixes` it starts with, and that prefix's component.
fn strip<'a>(name: &'a str, prefixes: &[(&str, Component)]) -> Option<(&'a str, Component)> {
    prefixes
        .iter()
        .find_map(|(p, c)| Some((name.strip_prefix(p)?, *c)))
}

/// The diffusers name(s) of a single-file tensor, or `None` for a tensor no model uses (the
/// noise-schedule buffers, EMA counters, `position_ids`, `logit_scale`, SD 2.x's OpenCLIP
/// `text_projection` and OpenCLIP blocks past [`LdmLayout::text_layers`]). A tensor under a
/// known prefix that the mapping does not know keeps its name, so that a strict load reports
/// it. Every [`Family`] maps with the same function: their prefixes differ.
pub fn map_key(name: &str, layout: &LdmLayout) -> Option<KeyMapping> {
    if let Some(rest) = name.strip_prefix(UNET) {
        return Some(KeyMapping::new(
            Component::Unet,
            unet_key(rest, layout.layers_per_block),
        ));
    }
    if let Some(vae) = vae_mapping(name, layout) {
        return Some(vae);
    }
    if let Some((rest, component)) = strip(name, &CLIPS) {
        return (!rest.ends_with("position_ids"))
            .then(|| KeyMapping::new(component, rest.to_string()));
    }
    let (rest, component) = strip(name, &OPENCLIPS)?;
    openclip_key(rest, component, layout.text_layers)
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

const UNET_FIXED: [(&str, &str); 7] = [
    ("time_embed.0", "time_embedding.linear_1"),
    ("time_embed.2", "time_embedding.linear_2"),
    // SDXL's added condition (pooled text and size/crop time ids).
    ("label_emb.0.0", "add_embedding.linear_1"),
    ("label_emb.0.2", "add_embedding.linear_2"),
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

/// The mapping of a VAE tensor (`first_stage_model.*`), `None` for another prefix.
fn vae_mapping(name: &str, layout: &LdmLayout) -> Option<KeyMapping> {
    let rest = VAE.iter().find_map(|p| name.strip_prefix(p))?;
    let (name, squeeze) = vae_key(rest, layout.vae_up_blocks);
    Some(KeyMapping {
        squeeze,
        ..KeyMapping::new(Component::Vae, name)
    })
}

/// `name` with the first `(from, to)` prefix of `table` it starts with replaced.
fn replace_prefix(name: &str, table: &[(&str, &str)]) -> Option<String> {
    table
        .iter()
        .find_map(|(from, to)| Some(format!("{to}{}", name.strip_prefix(from)?)))
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

fn openclip_key(rest: &str, component: Component, text_layers: usize) -> Option<KeyMapping> {
    let text = |name: String| Some(KeyMapping::new(component, name));
    match rest {
        "positional_embedding" => {
            return text("text_model.embeddings.position_embedding.weight".into());
        }
        "token_embedding.weight" => {
            return text("text_model.embeddings.token_embedding.weight".into());
        }
        // SDXL's CLIPTextModelWithProjection has it (SD 2.x's CLIPTextModel does not).
        "text_projection" if component == Component::TextEncoder2 => {
            return Some(KeyMapping {
                transpose: true,
                ..KeyMapping::new(component, "text_projection.weight".into())
            });
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
            names: names.to_vec(),
            ..KeyMapping::new(component, String::new())
        });
    }
    let renamed = replace_prefix(tail, &OPENCLIP_LAYER).unwrap_or_else(|| tail.to_string());
    text(format!("{layer}.{renamed}"))
}

/// Checks the shape of a tensor that is split or transposed: OpenCLIP's fused `in_proj`
/// (`[3 × hidden, hidden]`, `[3 × hidden]`) and `text_projection` (`[hidden, projection]`),
/// `hidden` being the width of the encoder's `token_embedding` where the file has it, and
/// SD3's fused `qkv` (the same shapes, `hidden` the model width).
fn check_fused(weights: &Weights, name: &str, m: &KeyMapping) -> Result<()> {
    let shape = weights.shape(name).unwrap_or_default();
    let embedder = name
        .find("transformer.resblocks.")
        .map(|i| &name[..i])
        .or_else(|| name.strip_suffix("text_projection"))
        .unwrap_or_default();
    let hidden = weights
        .shape(&format!("{embedder}token_embedding.weight"))
        .and_then(|s| s.get(1).copied());
    let weight = m.names.iter().all(|n| n.ends_with("weight"));
    let ok = match (m.transpose, weight, &shape[..]) {
        (true, _, [rows, _]) => hidden.is_none_or(|h| *rows == h),
        (false, true, [rows, cols]) => hidden.is_none_or(|h| *cols == h) && *rows == 3 * cols,
        (false, false, [len]) => hidden.map_or(len % 3 == 0, |h| *len == 3 * h),
        _ => false,
    };
    let h = hidden.map_or("hidden".to_string(), |h| h.to_string());
    let expected = match (m.transpose, weight) {
        (true, _) => format!("[{h}, projection]"),
        (false, true) => format!("[3 × {h}, {h}]"),
        (false, false) => format!("[3 × {h}]"),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::SingleFileTensor {
            name: name.to_string(),
            shape,
            expected,
        })
    }
}

/// The models' weights of an SD 1.x / 2.x single file, under diffusers names.
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

/// The models' weights of an SDXL base or refiner single file, under diffusers names.
#[derive(Debug, Clone)]
pub struct SdxlComponents {
    /// For the UNet (the names of a diffusers `unet/` folder).
    pub unet: Weights,
    /// For [`AutoencoderKL`](crate::vae::AutoencoderKL).
    pub vae: Weights,
    /// For CLIP ViT-L, a `CLIPTextModel` (`text_model.*`, as in `text_encoder/`); `None` for
    /// the refiner, which has no such encoder.
    pub text_encoder: Option<Weights>,
    /// For OpenCLIP bigG, a `CLIPTextModelWithProjection` (`text_model.*` and
    /// `text_projection.weight`, as in `text_encoder_2/`).
    pub text_encoder_2: Weights,
    /// Tensors no model uses (`position_ids`, `logit_scale`, ...), for information.
    pub ignored: Vec<String>,
}

/// An opened single-file checkpoint.
#[derive(Debug, Clone)]
pub struct SingleFile {
    weights: Weights,
}

/// A single file's tensors renamed, split and reshaped, not yet divided by model.
struct Converted {
    weights: Weights,
    /// The model and diffusers name of each tensor of `weights`.
    targets: HashMap<String, (Component, String)>,
    ignored: Vec<String>,
}

impl Converted {
    /// The tensors of one model, under their diffusers names.
    fn part(&self, component: Component) -> Weights {
        self.weights.clone().rename(|name| {
            let (c, new) = self.targets.get(name)?;
            (*c == component).then(|| new.clone())
        })
    }

    /// Whether the file has any tensor of `component`.
    fn has(&self, component: Component) -> bool {
        self.targets.values().any(|(c, _)| *c == component)
    }
}

impl SingleFile {
    /// Opens a single-file checkpoint (its header only; nothing else is read yet). A file
    /// without the LDM denoiser prefix `model.diffusion_model.` (nor, for a bare SD3
    /// transformer, its unprefixed `joint_blocks.*`) is an error ([`Error::NotSingleFile`]).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let weights = Weights::open(path.as_ref())?;
        if !weights.names().any(|n| n.starts_with(UNET)) && !weights.contains(sd3::SD3_KEY) {
            return Err(Error::NotSingleFile(path.as_ref().display().to_string()));
        }
        Ok(Self { weights })
    }

    /// The model family: SD3 / 3.5 by the MMDiT's
    /// `joint_blocks.0.context_block.adaLN_modulation.1.bias` (as diffusers'
    /// `infer_diffusers_model_type` tells it), the others by the text encoders' prefixes (see
    /// the [module](self) docs); a file with SDXL's `label_emb` but no text encoder counts as
    /// SDXL base, one with neither as SD 1.x.
    pub fn family(&self) -> Family {
        let any = |prefix: &str| self.weights.names().any(|n| n.starts_with(prefix));
        if sd3::is_sd3(&self.weights) {
            Family::Sd3
        } else if any(REFINER_OPENCLIP) {
            Family::SdxlRefiner
        } else if any("conditioner.") || any(&format!("{UNET}label_emb.")) {
            Family::Sdxl
        } else if any(SD2_OPENCLIP) {
            Family::Sd2
        } else {
            Family::Sd1
        }
    }

    /// Whether the text encoder is SD 2.x's OpenCLIP (else SD 1.x's OpenAI CLIP).
    pub fn has_openclip_text_encoder(&self) -> bool {
        self.family() == Family::Sd2
    }

    /// The layout of the published checkpoints of the file's [`family`](Self::family).
    pub fn default_layout(&self) -> LdmLayout {
        self.family().layout()
    }

    /// All tensors of an SD 1.x / 2.x file, split by model and renamed to diffusers names. A
    /// file of another family is an error ([`Error::SingleFileFamily`]): see
    /// [`sdxl_components`](Self::sdxl_components) and [`sd3_components`](Self::sd3_components).
    pub fn components(&self, layout: &LdmLayout) -> Result<Components> {
        let c = self.convert(Conversion::Sd, |name| map_key(name, layout))?;
        Ok(Components {
            unet: c.part(Component::Unet),
            vae: c.part(Component::Vae),
            text_encoder: c.part(Component::TextEncoder),
            ignored: c.ignored,
        })
    }

    /// All tensors of an SDXL base or refiner file, split by model and renamed to diffusers
    /// names. A file of another family is an error ([`Error::SingleFileFamily`]): see
    /// [`components`](Self::components) and [`sd3_components`](Self::sd3_components).
    pub fn sdxl_components(&self, layout: &LdmLayout) -> Result<SdxlComponents> {
        let c = self.convert(Conversion::Sdxl, |name| map_key(name, layout))?;
        Ok(SdxlComponents {
            unet: c.part(Component::Unet),
            vae: c.part(Component::Vae),
            text_encoder: c
                .has(Component::TextEncoder)
                .then(|| c.part(Component::TextEncoder)),
            text_encoder_2: c.part(Component::TextEncoder2),
            ignored: c.ignored,
        })
    }

    /// Converts the file, which must be of a family of `conversion`, mapping each tensor with
    /// `map`.
    fn convert(
        &self,
        conversion: Conversion,
        map: impl Fn(&str) -> Option<KeyMapping>,
    ) -> Result<Converted> {
        let found = self.family();
        if found.conversion() != conversion {
            return Err(Error::SingleFileFamily {
                found,
                hint: found.conversion().hint(),
            });
        }
        let mappings: HashMap<&str, KeyMapping> = self
            .weights
            .names()
            .filter_map(|name| Some((name, map(name)?)))
            .collect();
        // The name each tensor has once split and reshaped, and where it goes: a split
        // tensor's parts already carry their diffusers names.
        let mut targets: HashMap<String, (Component, String)> = HashMap::new();
        for (name, m) in &mappings {
            if m.names.len() > 1 || m.transpose {
                check_fused(&self.weights, name, m)?;
            }
            if let [single] = &m.names[..] {
                targets.insert(name.to_string(), (m.component, single.clone()));
            } else {
                for part in &m.names {
                    targets.insert(part.clone(), (m.component, part.clone()));
                }
            }
        }
        let weights = self
            .weights
            .clone()
            .split(|name| {
                let m = mappings.get(name)?;
                (m.names.len() > 1).then(|| m.names.clone())
            })?
            .reshape(|name, shape| {
                let m = mappings.get(name).filter(|m| m.squeeze)?;
                m.shapes(shape).pop()
            })?
            .transpose(|name| mappings.get(name).is_some_and(|m| m.transpose))?
            .swap_halves(|name| mappings.get(name).is_some_and(|m| m.swap_halves))?;
        Ok(Converted {
            weights,
            targets,
            ignored: self
                .weights
                .names()
                .filter(|n| !mappings.contains_key(n))
                .map(str::to_string)
                .collect(),
        })
    }
}

/// The prefix of a ControlNet's tensors in a checkpoint that holds more than the ControlNet
/// (the original ControlNet repository's training checkpoints).
const CONTROLNET: &str = "control_model.";

/// The diffusers name of a tensor of an original ControlNet checkpoint (without the
/// `control_model.` prefix): the UNet's down path keeps [`map_key`]'s UNet names; the zero
/// convolutions `zero_convs.<i>.0` become `controlnet_down_blocks.<i>`, `middle_block_out.0`
/// becomes `controlnet_mid_block`, and the hint stack `input_hint_block.<k>` (convolutions at
/// even `k`, SiLUs between) becomes `controlnet_cond_embedding.{conv_in, blocks.<k/2 - 1>,
/// conv_out}`, `conv_out` being the last of `hint_convs` convolutions.
pub fn controlnet_key(rest: &str, layers_per_block: usize, hint_convs: usize) -> String {
    if let Some((i, "0", leaf)) = rest.strip_prefix("zero_convs.").and_then(indexed) {
        return format!("controlnet_down_blocks.{i}.{leaf}");
    }
    if let Some(leaf) = rest.strip_prefix("middle_block_out.0.") {
        return format!("controlnet_mid_block.{leaf}");
    }
    if let Some((k, leaf)) = rest
        .strip_prefix("input_hint_block.")
        .and_then(|r| r.split_once('.'))
        .and_then(|(k, leaf)| Some((k.parse::<usize>().ok()?, leaf)))
        .filter(|(k, _)| k % 2 == 0)
    {
        let conv = k / 2;
        let name = match conv {
            0 => "conv_in".to_string(),
            c if c + 1 == hint_convs => "conv_out".to_string(),
            c => format!("blocks.{}", c - 1),
        };
        return format!("controlnet_cond_embedding.{name}.{leaf}");
    }
    unet_key(rest, layers_per_block)
}

/// The tensors of an original single-file ControlNet checkpoint (`control_v11p_sd15_canny`,
/// `control_sd15_canny` with its `control_model.` prefix, `thibaud/controlnet-sd21`, …) under
/// diffusers names, for [`ControlNetModel`](crate::controlnet::ControlNetModel) built from
/// `config`. A file already in diffusers names loads as it is. Tensors outside the ControlNet
/// (a full training checkpoint's UNet, VAE and text encoder) are dropped.
pub fn controlnet_weights(
    path: &Path,
    config: &crate::controlnet::ControlNetConfig,
) -> Result<Weights> {
    let weights = Weights::open(path)?;
    if weights
        .names()
        .any(|n| n == "time_embedding.linear_1.weight")
    {
        return Ok(weights);
    }
    let prefixed = weights.names().any(|n| n.starts_with(CONTROLNET));
    if !prefixed && !weights.names().any(|n| n == "time_embed.0.weight") {
        return Err(Error::NotSingleFile(format!(
            "{} (no ControlNet tensor: neither `control_model.*` nor `time_embed.0.weight`)",
            path.display()
        )));
    }
    let layers_per_block = single_layers_per_block(&config.unet)?;
    // conv_in, two per embedding step, conv_out.
    let hint_convs = 2 * config.conditioning_embedding_out_channels.len();
    Ok(weights.rename(|name| {
        let rest = if prefixed {
            name.strip_prefix(CONTROLNET)?
        } else {
            name
        };
        Some(controlnet_key(rest, layers_per_block, hint_convs))
    }))
}

/// The one `layers_per_block` of every block that a single-file key layout needs.
pub(crate) fn single_layers_per_block(config: &UNet2DConditionConfig) -> Result<usize> {
    let blocks = config.down_block_types.len();
    let per_block = config
        .layers_per_block
        .resolve("layers_per_block", blocks)?;
    let layers_per_block = per_block.first().copied().unwrap_or_default();
    if per_block.iter().any(|&n| n != layers_per_block) {
        return Err(Error::Config(
            "a single-file checkpoint needs one `layers_per_block` for every block".into(),
        ));
    }
    Ok(layers_per_block)
}
