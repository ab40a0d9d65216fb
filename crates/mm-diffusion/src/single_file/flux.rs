//! FLUX.1 transformers in Black Forest Labs' original names (`flux1-schnell.safetensors`,
//! `flux1-dev.safetensors`) and the GGUF files made from them (city96's
//! `flux1-schnell-Q8_0.gguf`, …, read by ComfyUI-GGUF and stable-diffusion.cpp), mapped to
//! diffusers' names as `convert_flux_transformer_checkpoint_to_diffusers` maps them. Names
//! may carry ComfyUI's `model.diffusion_model.` prefix.
//!
//! | original | diffusers |
//! |---|---|
//! | `img_in`, `txt_in` | `x_embedder`, `context_embedder` |
//! | `time_in.{in,out}_layer` | `time_text_embed.timestep_embedder.linear_{1,2}` |
//! | `vector_in.{in,out}_layer` | `time_text_embed.text_embedder.linear_{1,2}` |
//! | `guidance_in.{in,out}_layer` (dev) | `time_text_embed.guidance_embedder.linear_{1,2}` |
//! | `double_blocks.<i>.img_mod.lin`, `.txt_mod.lin` | `transformer_blocks.<i>.norm1.linear`, `.norm1_context.linear` |
//! | `double_blocks.<i>.img_attn.qkv` (split in three) | `transformer_blocks.<i>.attn.to_{q,k,v}` |
//! | `double_blocks.<i>.txt_attn.qkv` (split in three) | `transformer_blocks.<i>.attn.add_{q,k,v}_proj` |
//! | `double_blocks.<i>.img_attn.norm.{query,key}_norm.scale` | `transformer_blocks.<i>.attn.norm_{q,k}.weight` |
//! | `double_blocks.<i>.txt_attn.norm.{query,key}_norm.scale` | `transformer_blocks.<i>.attn.norm_added_{q,k}.weight` |
//! | `double_blocks.<i>.img_attn.proj`, `.txt_attn.proj` | `transformer_blocks.<i>.attn.to_out.0`, `.attn.to_add_out` |
//! | `double_blocks.<i>.img_mlp.{0,2}`, `.txt_mlp.{0,2}` | `transformer_blocks.<i>.ff.net.{0.proj,2}`, `.ff_context.net.{0.proj,2}` |
//! | `single_blocks.<i>.modulation.lin` | `single_transformer_blocks.<i>.norm.linear` |
//! | `single_blocks.<i>.linear1` (rows: q, k, v, MLP) | `single_transformer_blocks.<i>.attn.to_{q,k,v}`, `.proj_mlp` |
//! | `single_blocks.<i>.norm.{query,key}_norm.scale` | `single_transformer_blocks.<i>.attn.norm_{q,k}.weight` |
//! | `single_blocks.<i>.linear2` | `single_transformer_blocks.<i>.proj_out` |
//! | `final_layer.linear` | `proj_out` |
//! | `final_layer.adaLN_modulation.1` (halves swapped) | `norm_out.linear` |
//!
//! The fused projections are split by rows, lazily; a GGUF file's quantized matrices stay
//! quantized through the split (ggml blocks run along a row).

use mm_core::weights::Weights;

use super::{UNET, replace_prefix};
use crate::Result;
use crate::transformer::FluxTransformer2DConfig;

/// The tensor a BFL FLUX checkpoint is told by (after an optional `model.diffusion_model.`).
pub const FLUX_KEY: &str = "double_blocks.0.img_attn.qkv.weight";

/// Tensors outside the blocks.
const FIXED: [(&str, &str); 10] = [
    ("img_in.", "x_embedder."),
    ("txt_in.", "context_embedder."),
    (
        "time_in.in_layer.",
        "time_text_embed.timestep_embedder.linear_1.",
    ),
    (
        "time_in.out_layer.",
        "time_text_embed.timestep_embedder.linear_2.",
    ),
    (
        "vector_in.in_layer.",
        "time_text_embed.text_embedder.linear_1.",
    ),
    (
        "vector_in.out_layer.",
        "time_text_embed.text_embedder.linear_2.",
    ),
    (
        "guidance_in.in_layer.",
        "time_text_embed.guidance_embedder.linear_1.",
    ),
    (
        "guidance_in.out_layer.",
        "time_text_embed.guidance_embedder.linear_2.",
    ),
    ("final_layer.linear.", "proj_out."),
    ("final_layer.adaLN_modulation.1.", "norm_out.linear."),
];

/// The double-stream blocks' modules (`double_blocks.<i>.` → `transformer_blocks.<i>.`),
/// the fused projections excepted.
const DOUBLE: [(&str, &str); 14] = [
    ("img_mod.lin.", "norm1.linear."),
    ("txt_mod.lin.", "norm1_context.linear."),
    ("img_attn.norm.query_norm.scale", "attn.norm_q.weight"),
    ("img_attn.norm.key_norm.scale", "attn.norm_k.weight"),
    ("txt_attn.norm.query_norm.scale", "attn.norm_added_q.weight"),
    ("txt_attn.norm.key_norm.scale", "attn.norm_added_k.weight"),
    ("img_attn.proj.", "attn.to_out.0."),
    ("txt_attn.proj.", "attn.to_add_out."),
    ("img_mlp.0.", "ff.net.0.proj."),
    ("img_mlp.2.", "ff.net.2."),
    ("txt_mlp.0.", "ff_context.net.0.proj."),
    ("txt_mlp.2.", "ff_context.net.2."),
    ("img_attn.qkv.", "attn.qkv."),
    ("txt_attn.qkv.", "attn.add_qkv."),
];

/// The single-stream blocks' modules (`single_blocks.<i>.` →
/// `single_transformer_blocks.<i>.`), the fused projection excepted.
const SINGLE: [(&str, &str); 5] = [
    ("modulation.lin.", "norm.linear."),
    ("norm.query_norm.scale", "attn.norm_q.weight"),
    ("norm.key_norm.scale", "attn.norm_k.weight"),
    ("linear2.", "proj_out."),
    ("linear1.", "linear1."),
];

/// Whether `weights` hold a FLUX transformer in BFL's names.
pub fn is_bfl_flux(weights: &Weights) -> bool {
    weights.contains(FLUX_KEY) || weights.contains(&format!("{UNET}{FLUX_KEY}"))
}

/// The diffusers name of a BFL tensor (prefix removed), before the fused projections are
/// split (they keep an intermediate module name: `attn.qkv`, `attn.add_qkv`, `linear1`); a name the
/// mapping does not know is kept, so that a strict load reports it.
pub fn bfl_flux_name(name: &str) -> String {
    let rest = name.strip_prefix(UNET).unwrap_or(name);
    if let Some(mapped) = replace_prefix(rest, &FIXED) {
        return mapped;
    }
    let block = |prefix: &str, to: &str, table: &[(&str, &str)]| {
        let (i, tail) = rest.strip_prefix(prefix)?.split_once('.')?;
        let i: usize = i.parse().ok()?;
        Some(format!("{to}.{i}.{}", replace_prefix(tail, table)?))
    };
    block("double_blocks.", "transformer_blocks", &DOUBLE)
        .or_else(|| block("single_blocks.", "single_transformer_blocks", &SINGLE))
        .unwrap_or_else(|| rest.to_string())
}

/// `weights` under diffusers' names: a BFL FLUX checkpoint (names mapped as the `single_file` module docs and [`bfl_flux_name`] say)
/// renamed, its fused projections split by rows and `final_layer.adaLN_modulation.1`'s
/// halves swapped, lazily; other weights unchanged. `config` gives the width of the single
/// blocks' MLP rows.
pub fn flux_diffusers_weights(
    weights: Weights,
    config: &FluxTransformer2DConfig,
) -> Result<Weights> {
    if !is_bfl_flux(&weights) {
        return Ok(weights);
    }
    let dim = config.inner_dim();
    // The single blocks' MLP is 4 × the width (diffusers' `mlp_ratio`).
    let mlp = 4 * dim;
    let weights = weights
        .rename(|name| Some(bfl_flux_name(name)))
        .swap_halves(|name| name.starts_with("norm_out.linear."))?;
    let split = weights.split_rows(|name| {
        let (module, leaf) = name.rsplit_once('.')?;
        let qkv = |names: [&'static str; 3]| names.map(|n| (n, dim)).to_vec();
        let (stem, parts) = if let Some(stem) = module.strip_suffix(".attn.qkv") {
            (stem, qkv(["attn.to_q", "attn.to_k", "attn.to_v"]))
        } else if let Some(stem) = module.strip_suffix(".attn.add_qkv") {
            let names = ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"];
            (stem, qkv(names))
        } else if let Some(stem) = module.strip_suffix(".linear1") {
            let mut parts = qkv(["attn.to_q", "attn.to_k", "attn.to_v"]);
            parts.push(("proj_mlp", mlp));
            (stem, parts)
        } else {
            return None;
        };
        Some(
            (parts.into_iter())
                .map(|(part, rows)| (format!("{stem}.{part}.{leaf}"), rows))
                .collect(),
        )
    })?;
    Ok(split)
}
