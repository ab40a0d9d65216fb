//! Stable Diffusion 3 / 3.5 single files: Stability AI's MMDiT names under
//! `model.diffusion_model.` (or unprefixed), the VAE under `first_stage_model.` and the text
//! encoders under `text_encoders.{clip_l,clip_g,t5xxl}.transformer.`, mapped to diffusers'
//! names as `convert_sd3_transformer_checkpoint_to_diffusers` and diffusers' CLIP / T5
//! loaders map them:
//!
//! | original (per block `joint_blocks.<i>.`) | diffusers (`transformer_blocks.<i>.`) |
//! |---|---|
//! | `pos_embed` | `pos_embed.pos_embed` |
//! | `x_embedder.proj` | `pos_embed.proj` |
//! | `t_embedder.mlp.{0,2}` | `time_text_embed.timestep_embedder.linear_{1,2}` |
//! | `y_embedder.mlp.{0,2}` | `time_text_embed.text_embedder.linear_{1,2}` |
//! | `context_embedder` | `context_embedder` |
//! | `x_block.attn.qkv` (split in three) | `attn.to_{q,k,v}` |
//! | `x_block.attn.ln_{q,k}`, `x_block.attn.proj` | `attn.norm_{q,k}`, `attn.to_out.0` |
//! | `x_block.attn2.{qkv,ln_q,ln_k,proj}` (SD3.5 medium) | `attn2.{to_q/k/v, norm_q, norm_k, to_out.0}` |
//! | `x_block.adaLN_modulation.1` | `norm1.linear` |
//! | `x_block.mlp.fc{1,2}` | `ff.net.0.proj`, `ff.net.2` |
//! | `context_block.attn.qkv` (split in three) | `attn.add_{q,k,v}_proj` |
//! | `context_block.attn.ln_{q,k}`, `context_block.attn.proj` | `attn.norm_added_{q,k}`, `attn.to_add_out` |
//! | `context_block.adaLN_modulation.1` (halves swapped in the last block) | `norm1_context.linear` |
//! | `context_block.mlp.fc{1,2}` | `ff_context.net.0.proj`, `ff_context.net.2` |
//! | `final_layer.linear` | `proj_out` |
//! | `final_layer.adaLN_modulation.1` (halves swapped) | `norm_out.linear` |
//!
//! The last block's context stream is "pre only": it has no `attn.proj` nor `mlp`.

use burn::tensor::{DType, TensorData};
use mm_core::weights::Weights;

use super::{
    Component, Conversion, KeyMapping, LdmLayout, SingleFile, UNET, indexed, replace_prefix, strip,
    vae_mapping,
};
use crate::Result;

/// The tensor diffusers tells an SD3 / SD3.5 checkpoint by (after `model.diffusion_model.`,
/// or alone in a bare transformer file).
pub(super) const SD3_KEY: &str = "joint_blocks.0.context_block.adaLN_modulation.1.bias";

/// SD3's text encoders, stored in transformers' layout under these prefixes.
const TEXT_ENCODERS: [(&str, Component); 3] = [
    ("text_encoders.clip_l.transformer.", Component::TextEncoder),
    ("text_encoders.clip_g.transformer.", Component::TextEncoder2),
    ("text_encoders.t5xxl.transformer.", Component::TextEncoder3),
];

/// CLIP's position table, whose width is that of CLIP-L's identity projection.
const POSITION_EMBEDDING: &str = "text_model.embeddings.position_embedding.weight";

/// The MMDiT's top-level modules, by which the tensors of a bare (unprefixed) transformer
/// file are told.
const MMDIT_MODULES: [&str; 6] = [
    "x_embedder.",
    "t_embedder.",
    "y_embedder.",
    "context_embedder.",
    "joint_blocks.",
    "final_layer.",
];

/// Tensors outside the blocks. `final_layer.adaLN_modulation.1` has its halves swapped.
const FIXED: [(&str, &str); 8] = [
    ("x_embedder.proj.", "pos_embed.proj."),
    (
        "t_embedder.mlp.0.",
        "time_text_embed.timestep_embedder.linear_1.",
    ),
    (
        "t_embedder.mlp.2.",
        "time_text_embed.timestep_embedder.linear_2.",
    ),
    (
        "y_embedder.mlp.0.",
        "time_text_embed.text_embedder.linear_1.",
    ),
    (
        "y_embedder.mlp.2.",
        "time_text_embed.text_embedder.linear_2.",
    ),
    ("context_embedder.", "context_embedder."),
    ("final_layer.linear.", "proj_out."),
    ("final_layer.adaLN_modulation.1.", "norm_out.linear."),
];

/// The image stream's modules (`x_block.*`), under `transformer_blocks.<i>.`.
const X_BLOCK: [(&str, &str); 9] = [
    ("attn.ln_q.", "attn.norm_q."),
    ("attn.ln_k.", "attn.norm_k."),
    ("attn.proj.", "attn.to_out.0."),
    ("attn2.ln_q.", "attn2.norm_q."),
    ("attn2.ln_k.", "attn2.norm_k."),
    ("attn2.proj.", "attn2.to_out.0."),
    ("adaLN_modulation.1.", "norm1.linear."),
    ("mlp.fc1.", "ff.net.0.proj."),
    ("mlp.fc2.", "ff.net.2."),
];

/// The text stream's modules (`context_block.*`), under `transformer_blocks.<i>.`.
const CONTEXT_BLOCK: [(&str, &str); 6] = [
    ("attn.ln_q.", "attn.norm_added_q."),
    ("attn.ln_k.", "attn.norm_added_k."),
    ("attn.proj.", "attn.to_add_out."),
    ("adaLN_modulation.1.", "norm1_context.linear."),
    ("mlp.fc1.", "ff_context.net.0.proj."),
    ("mlp.fc2.", "ff_context.net.2."),
];

/// The fused query-key-value projections: stream, module, and the three diffusers modules
/// they are split into.
const QKV: [(&str, &str, [&str; 3]); 3] = [
    (
        "x_block",
        "attn.qkv.",
        ["attn.to_q", "attn.to_k", "attn.to_v"],
    ),
    (
        "x_block",
        "attn2.qkv.",
        ["attn2.to_q", "attn2.to_k", "attn2.to_v"],
    ),
    (
        "context_block",
        "attn.qkv.",
        ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"],
    ),
];

/// Whether the weights are an SD3 / SD3.5 checkpoint (with or without the prefix).
pub(super) fn is_sd3(weights: &Weights) -> bool {
    weights.contains(SD3_KEY) || weights.contains(&format!("{UNET}{SD3_KEY}"))
}

/// The MMDiT name of a transformer tensor (prefix removed), `None` for another tensor.
fn mmdit_name(name: &str) -> Option<&str> {
    name.strip_prefix(UNET).or_else(|| {
        (name == "pos_embed" || MMDIT_MODULES.iter().any(|m| name.starts_with(m))).then_some(name)
    })
}

/// The number of joint blocks of an SD3 checkpoint's tensor names (one more than the
/// highest `joint_blocks.<i>.`), as diffusers' converter counts them: the last block's
/// context stream is the one converted differently.
pub fn sd3_num_layers<'a>(names: impl IntoIterator<Item = &'a str>) -> usize {
    names
        .into_iter()
        .filter_map(|n| {
            let rest = mmdit_name(n)?.strip_prefix("joint_blocks.")?;
            rest.split_once('.')?.0.parse::<usize>().ok()
        })
        .max()
        .map_or(0, |i| i + 1)
}

/// The diffusers name(s) of a tensor of an SD3 / SD3.5 single file (see the
/// [module](super) docs), `num_layers` being the file's [`sd3_num_layers`]; only
/// `layout.vae_up_blocks` is read. `None` for a tensor no model uses: CLIP's
/// `position_ids`, CLIP-L's stored `text_projection.weight` (diffusers replaces it with an
/// identity, as [`SingleFile::sd3_components`] does), and anything outside the known
/// prefixes. A tensor of the transformer that the mapping does not know keeps its name, so
/// that a strict load reports it.
pub fn map_sd3_key(name: &str, num_layers: usize, layout: &LdmLayout) -> Option<KeyMapping> {
    if let Some((rest, component)) = strip(name, &TEXT_ENCODERS) {
        let unused = rest.ends_with("position_ids")
            || (component == Component::TextEncoder && rest == "text_projection.weight");
        return (!unused).then(|| KeyMapping::new(component, rest.to_string()));
    }
    if let Some(vae) = vae_mapping(name, layout) {
        return Some(vae);
    }
    Some(transformer_key(mmdit_name(name)?, num_layers))
}

/// The mapping of an MMDiT tensor (without the prefix).
fn transformer_key(rest: &str, num_layers: usize) -> KeyMapping {
    let mapping = |name: String| KeyMapping::new(Component::Transformer, name);
    if rest == "pos_embed" {
        return mapping("pos_embed.pos_embed".into());
    }
    if let Some(name) = replace_prefix(rest, &FIXED) {
        return KeyMapping {
            swap_halves: rest.starts_with("final_layer.adaLN_modulation."),
            ..mapping(name)
        };
    }
    let Some((i, stream, tail)) = rest.strip_prefix("joint_blocks.").and_then(indexed) else {
        return mapping(rest.to_string());
    };
    let block = format!("transformer_blocks.{i}");
    if let Some((_, module, parts)) = QKV
        .iter()
        .find(|(s, m, _)| *s == stream && tail.starts_with(m))
    {
        let leaf = &tail[module.len()..];
        return KeyMapping {
            names: parts.map(|p| format!("{block}.{p}.{leaf}")).to_vec(),
            ..mapping(String::new())
        };
    }
    let table: &[(&str, &str)] = match stream {
        "x_block" => &X_BLOCK,
        "context_block" => &CONTEXT_BLOCK,
        _ => &[],
    };
    match replace_prefix(tail, table) {
        Some(name) => KeyMapping {
            // The last context stream ends in diffusers' AdaLayerNormContinuous, which
            // splits (scale, shift) where the original splits (shift, scale).
            swap_halves: stream == "context_block"
                && i + 1 == num_layers
                && tail.starts_with("adaLN_modulation."),
            ..mapping(format!("{block}.{name}"))
        },
        None => mapping(rest.to_string()),
    }
}

/// The published SD3 / SD3.5 models, told from a checkpoint's shapes as diffusers'
/// `infer_diffusers_model_type` tells them ([`sd3_variant`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sd3Variant {
    /// Stable Diffusion 3 medium (24 blocks of width 1536, a 192 × 192 position table).
    Sd3Medium,
    /// Stable Diffusion 3.5 medium (width 1536, a 384 × 384 position table, dual attention).
    Sd35Medium,
    /// Stable Diffusion 3.5 large (38 blocks of width 2432; large turbo too).
    Sd35Large,
}

impl Sd3Variant {
    /// The diffusers repository whose configs fit the variant (what diffusers' single-file
    /// loading fetches by default).
    pub fn configs(self) -> &'static str {
        match self {
            Self::Sd3Medium => "stabilityai/stable-diffusion-3-medium-diffusers",
            Self::Sd35Medium => "stabilityai/stable-diffusion-3.5-medium",
            Self::Sd35Large => "stabilityai/stable-diffusion-3.5-large",
        }
    }
}

/// The published model a checkpoint is, from the shapes of its tensors (`shape(name)`, the
/// name with or without `model.diffusion_model.`): width 1536 (an adaLN bias of 6 × 1536 =
/// 9216) with a 36864-entry position table is SD3 medium, with 147456 entries SD3.5 medium;
/// a 38th block (`joint_blocks.37.`) SD3.5 large. `None` for another size (a fine-tune of
/// another shape, the tiny test models).
pub fn sd3_variant(shape: impl Fn(&str) -> Option<Vec<usize>>) -> Option<Sd3Variant> {
    let find = |name: &str| shape(&format!("{UNET}{name}")).or_else(|| shape(name));
    let width = find(SD3_KEY).and_then(|s| s.last().copied());
    let positions = find("pos_embed").and_then(|s| s.get(1).copied());
    match (width, positions) {
        (Some(9216), Some(36864)) => Some(Sd3Variant::Sd3Medium),
        (Some(9216), Some(147456)) => Some(Sd3Variant::Sd35Medium),
        _ => find("joint_blocks.37.x_block.mlp.fc1.weight").map(|_| Sd3Variant::Sd35Large),
    }
}

/// The models' weights of an SD3 / SD3.5 single file, under diffusers names. The parts a
/// file does not hold are `None` (a pipeline takes them from its diffusers folder).
#[derive(Debug, Clone)]
pub struct Sd3Components {
    /// For [`SD3Transformer2DModel`](crate::transformer::SD3Transformer2DModel) (the names
    /// of a diffusers `transformer/` folder).
    pub transformer: Weights,
    /// For the 16-channel [`AutoencoderKL`](crate::vae::AutoencoderKL).
    pub vae: Option<Weights>,
    /// CLIP-L as a `CLIPTextModelWithProjection` (`text_model.*`, as in `text_encoder/`),
    /// with an identity `text_projection.weight` as diffusers gives it.
    pub text_encoder: Option<Weights>,
    /// CLIP-G (OpenCLIP bigG) as a `CLIPTextModelWithProjection` (`text_model.*` and
    /// `text_projection.weight`, as in `text_encoder_2/`).
    pub text_encoder_2: Option<Weights>,
    /// The T5 v1.1 XXL encoder (`shared.*`, `encoder.*`, as in `text_encoder_3/`). A
    /// `…_t5xxlfp8` file stores it in float8, which cannot be read
    /// ([`Weights::check_readable`] says so).
    pub text_encoder_3: Option<Weights>,
    /// Tensors no model uses (`position_ids`, CLIP-L's stored projection, `logit_scale`, …),
    /// for information.
    pub ignored: Vec<String>,
}

impl SingleFile {
    /// The published model an SD3 file is ([`sd3_variant`]); `None` for other sizes and
    /// other families.
    pub fn sd3_variant(&self) -> Option<Sd3Variant> {
        sd3_variant(|name| self.weights.shape(name))
    }

    /// All tensors of a Stable Diffusion 3 / 3.5 file, split by model and renamed to
    /// diffusers names ([`map_sd3_key`]; of `layout`, only `vae_up_blocks` is read: use
    /// [`LdmLayout::SD3`] or the VAE config's). A file of another family is an error
    /// ([`Error::SingleFileFamily`](crate::Error::SingleFileFamily)).
    pub fn sd3_components(&self, layout: &LdmLayout) -> Result<Sd3Components> {
        let num_layers = sd3_num_layers(self.weights.names());
        let c = self.convert(Conversion::Sd3, |name| {
            map_sd3_key(name, num_layers, layout)
        })?;
        let part = |component| c.has(component).then(|| c.part(component));
        Ok(Sd3Components {
            transformer: c.part(Component::Transformer),
            vae: part(Component::Vae),
            text_encoder: part(Component::TextEncoder).map(identity_projection),
            text_encoder_2: part(Component::TextEncoder2),
            text_encoder_3: part(Component::TextEncoder3),
            ignored: c.ignored,
        })
    }
}

/// CLIP-L's weights with the identity `text_projection.weight` (`[hidden, hidden]`, f32)
/// diffusers' `create_diffusers_clip_model_from_ldm` gives SD3's CLIP-L; left as they are
/// without a position table to size it by (the strict load then reports what is missing).
fn identity_projection(weights: Weights) -> Weights {
    let Some(n) = weights
        .shape(POSITION_EMBEDDING)
        .and_then(|s| s.get(1).copied())
    else {
        return weights;
    };
    weights.insert_with(
        "text_projection.weight",
        vec![n, n],
        DType::F32,
        move || {
            let mut eye = vec![0f32; n * n];
            eye.iter_mut().step_by(n + 1).for_each(|v| *v = 1.0);
            TensorData::new(eye, [n, n])
        },
    )
}
