//! The tiny model zoo: a CLIP, an `AutoencoderKL` and a `UNet2DConditionModel` trained on the
//! [shapes world](crate::shapes), saved as a transformers CLIP folder and a diffusers Stable
//! Diffusion pipeline folder.
//!
//! The configs here are the zoo's architecture: [`clip_config`] (text and vision towers of
//! hidden size 64, 4 layers, 64² images in 8² patches, CLIP's own tokenizer), [`vae_config`]
//! (64² images to 4 × 16² latents) and [`unet_config`] (32 / 64 channels, cross-attention on
//! the CLIP text encoder's 64-wide states). Training is deterministic for a seed: batch `k`
//! holds samples `k·n … k·n + n − 1` of the training split, and every random draw comes from
//! the device's seeded generator.

use std::path::Path;

use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use mm_core::weights::save_safetensors;
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use mm_vision::clip::{ClipConfig, ClipModel, ClipTextModel};
use mm_vision::contrastive::clip_loss;
use serde_json::{Value, json};

use crate::data::Batcher;
use crate::objectives::{
    Prediction, add_noise, autoencoder_loss, condition_dropout, diffusion_loss, min_snr_weights,
};
use crate::shapes::Split;
use crate::train::{StepReport, TrainConfig, Trained, fit};
use crate::{Error, Result, io};

/// The side of the zoo's images.
pub const IMAGE_SIZE: usize = 64;
/// Latent channels (at a quarter of the picture's side: 4 × 16² latents for 64² pictures,
/// 12× fewer values; an 8× down-sampling autoencoder, 4 or 8 × 8², lost the objects' colours
/// in its time budget).
pub const LATENT_CHANNELS: usize = 4;
/// Diffusion timesteps of the training schedule.
pub const TRAIN_TIMESTEPS: usize = 1000;
/// Probability that a caption is replaced by the empty prompt (for classifier-free guidance).
pub const CONDITION_DROPOUT: f64 = 0.1;
/// The min-SNR-γ of the UNet's loss.
pub const SNR_GAMMA: f64 = 5.0;
/// The initial log-variance of the autoencoder's posterior (std ≈ 0.05).
pub const INITIAL_LOGVAR: f64 = -6.0;
/// The autoencoder's KL weight.
pub const KL_WEIGHT: f64 = 1e-6;

/// The zoo CLIP's `config.json` (transformers `CLIPConfig`).
pub fn clip_config() -> Value {
    let tower = |extra: Value| {
        let mut v = json!({
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 4,
            "num_attention_heads": 4,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "attention_dropout": 0.0,
            "initializer_range": 0.02,
            "initializer_factor": 1.0,
            "projection_dim": 64,
        });
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v
    };
    json!({
        "architectures": ["CLIPModel"],
        "model_type": "clip",
        "projection_dim": 64,
        "logit_scale_init_value": 2.6592,
        "initializer_factor": 1.0,
        "text_config": tower(json!({
            "model_type": "clip_text_model",
            "vocab_size": 49408,
            "max_position_embeddings": 77,
            "bos_token_id": 49406,
            "eos_token_id": 49407,
            "pad_token_id": 49407,
        })),
        "vision_config": tower(json!({
            "model_type": "clip_vision_model",
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "num_channels": 3,
        })),
    })
}

/// The pipeline's `text_encoder/config.json`: the CLIP's text tower as a `CLIPTextModel`.
pub fn text_encoder_config() -> Value {
    let mut text = clip_config()["text_config"].clone();
    text["architectures"] = json!(["CLIPTextModel"]);
    text
}

/// The zoo CLIP's `preprocessor_config.json` (`CLIPImageProcessor` at 64²).
pub fn preprocessor_config() -> Value {
    json!({
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": true,
        "size": {"shortest_edge": IMAGE_SIZE},
        "resample": 3,
        "do_center_crop": true,
        "crop_size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        "do_rescale": true,
        "rescale_factor": 1.0 / 255.0,
        "do_normalize": true,
        "image_mean": crate::data::CLIP_MEAN,
        "image_std": crate::data::CLIP_STD,
        "do_convert_rgb": true,
    })
}

/// The pipeline's `vae/config.json` (diffusers `AutoencoderKL`, 4× down-sampling to
/// [`LATENT_CHANNELS`] channels) with the
/// latent `scaling_factor` measured after training.
pub fn vae_config(scaling_factor: f64) -> Value {
    json!({
        "_class_name": "AutoencoderKL",
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
        "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "act_fn": "silu",
        "latent_channels": LATENT_CHANNELS,
        "norm_num_groups": 8,
        "sample_size": IMAGE_SIZE,
        "scaling_factor": scaling_factor,
        "force_upcast": false,
        "use_quant_conv": true,
        "use_post_quant_conv": true,
        "mid_block_add_attention": true,
    })
}

/// The pipeline's `unet/config.json` (diffusers `UNet2DConditionModel` on 4 × 16² latents).
pub fn unet_config() -> Value {
    json!({
        "_class_name": "UNet2DConditionModel",
        "sample_size": IMAGE_SIZE / 4,
        "in_channels": LATENT_CHANNELS,
        "out_channels": LATENT_CHANNELS,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "attention_head_dim": 4,
        "cross_attention_dim": 64,
        "norm_num_groups": 8,
        "norm_eps": 1e-5,
        "act_fn": "silu",
        "flip_sin_to_cos": true,
        "freq_shift": 0,
        "downsample_padding": 1,
        "mid_block_scale_factor": 1,
        "center_input_sample": false,
        "use_linear_projection": false,
        "upcast_attention": false,
    })
}

/// The pipeline's `scheduler/scheduler_config.json`: the training schedule (Stable Diffusion's
/// scaled-linear betas), sampled with DPM-Solver++ 2M.
pub fn scheduler_config() -> Value {
    json!({
        "_class_name": "DPMSolverMultistepScheduler",
        "num_train_timesteps": TRAIN_TIMESTEPS,
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "algorithm_type": "dpmsolver++",
        "solver_order": 2,
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "set_alpha_to_one": false,
        "clip_sample": false,
    })
}

/// The pipeline's `model_index.json` (a `StableDiffusionPipeline` without safety checker).
pub fn model_index() -> Value {
    json!({
        "_class_name": "StableDiffusionPipeline",
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [null, null],
        "feature_extractor": [null, null],
        "image_encoder": [null, null],
        "requires_safety_checker": false,
    })
}

fn parse<T: serde::de::DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::InvalidConfig(format!("{what}: {e}")))
}

/// Stable Diffusion's `ᾱ_t` for `t = 0 … 999` (scaled-linear betas 0.00085 … 0.012).
pub fn alphas_cumprod() -> Vec<f32> {
    let (a, b) = (0.00085f64.sqrt(), 0.012f64.sqrt());
    let n = TRAIN_TIMESTEPS;
    let mut prod = 1.0f64;
    (0..n)
        .map(|i| {
            let beta = (a + (b - a) * i as f64 / (n - 1) as f64).powi(2);
            prod *= 1.0 - beta;
            prod as f32
        })
        .collect()
}

/// Trains the zoo CLIP on `batch`-sample batches with CLIP's symmetric InfoNCE loss; each
/// batch pairs its samples with their shape variants
/// ([`Batcher::shape_contrast_batch`]), without which shape is never learned (random
/// batches are told apart by colour and position alone: zero-shot shape accuracy stayed at
/// chance, 19 %, after 600 steps).
pub fn train_clip(
    batcher: &Batcher,
    config: &TrainConfig,
    batch: usize,
    device: &Device,
    progress: impl FnMut(StepReport) -> bool,
) -> Result<Trained<ClipModel>> {
    let clip_config: ClipConfig = parse(clip_config(), "zoo CLIP config")?;
    let model = init_clip(ClipModel::new(&clip_config, device)?, batcher)?;
    fit(
        model,
        config,
        |model, step| {
            let start = (step * batch / 2) as u64;
            let b = batcher.shape_contrast_batch(Split::Train, start, batch, device)?;
            let out = model.forward(b.input_ids.clone(), None, b.clip_pixels())?;
            Ok(clip_loss(out.logits_per_text))
        },
        progress,
    )
}

/// transformers' initialisation of CLIP's embeddings (burn's `Embedding` starts at N(0, 1),
/// which drowns the patch content under the position embeddings): tokens and positions
/// N(0, 0.02²), the class token N(0, 1/hidden). The rows of every token the world's captions
/// never use start at zero: they get no gradient, so they stay zero (and the shipped file
/// compresses to the rows that matter).
fn init_clip(mut model: ClipModel, batcher: &Batcher) -> Result<ClipModel> {
    let vocab = caption_vocabulary(batcher)?;
    let device = model.logit_scale.val().device();
    let normal = |dims: [usize; 2], std: f64| {
        // Detached leaves: the new values are parameters, not graph nodes.
        Tensor::<2>::random(dims, Distribution::Normal(0.0, std), &device)
            .detach()
            .require_grad()
    };
    let tokens = &mut model.text_model.embeddings.token_embedding.weight;
    let [rows, hidden] = tokens.dims();
    let keep: Vec<f32> = (0..rows)
        .map(|i| {
            if vocab.contains(&(i as u32)) {
                1.0
            } else {
                0.0
            }
        })
        .collect();
    let mask = Tensor::<1>::from_data(TensorData::new(keep, [rows]), &device.clone().inner())
        .reshape([rows as i32, 1]);
    let masked = (normal([rows, hidden], 0.02).inner() * mask)
        .autodiff()
        .require_grad();
    *tokens = tokens.clone().map(|_| masked);
    for table in [
        &mut model.text_model.embeddings.position_embedding.weight,
        &mut model.vision_model.embeddings.position_embedding.weight,
    ] {
        let dims = table.dims();
        *table = table.clone().map(|_| normal(dims, 0.02));
    }
    let class = &mut model.vision_model.embeddings.class_embedding;
    let [hidden] = class.dims();
    let std = (hidden as f64).powf(-0.5);
    *class = class.clone().map(|_| {
        normal([1, hidden], std)
            .reshape([hidden])
            .detach()
            .require_grad()
    });
    Ok(model)
}

/// Every token id of the world's captions (and the special tokens), from the caption of
/// 4 096 training and held-out samples (which cover every word).
pub fn caption_vocabulary(batcher: &Batcher) -> Result<std::collections::BTreeSet<u32>> {
    let mut vocab = std::collections::BTreeSet::new();
    for split in [Split::Train, Split::HeldOut] {
        for i in 0..2048 {
            let caption = batcher.world().sample(split, i).caption;
            let encoded = batcher.tokenizer().encode(&caption)?;
            vocab.extend(encoded.ids.into_iter().flatten());
        }
    }
    vocab.extend(batcher.tokenizer().encode("")?.ids.into_iter().flatten());
    Ok(vocab)
}

/// Trains the zoo autoencoder on `batch`-sample batches: reconstruction MSE of a posterior
/// sample plus [`KL_WEIGHT`] × KL.
pub fn train_vae(
    batcher: &Batcher,
    config: &TrainConfig,
    batch: usize,
    device: &Device,
    progress: impl FnMut(StepReport) -> bool,
) -> Result<Trained<AutoencoderKL>> {
    let vae_config: AutoencoderKLConfig = parse(vae_config(1.0), "zoo VAE config")?;
    let model = narrow_posterior(AutoencoderKL::new(&vae_config, device)?);
    fit(
        model,
        config,
        |model, step| {
            let x = batcher
                .batch(Split::Train, (step * batch) as u64, batch, device)?
                .signed_images();
            let posterior = model.encode(x.clone())?;
            let noise = Tensor::random(
                posterior.mean.dims(),
                Distribution::Normal(0.0, 1.0),
                device,
            );
            let reconstruction = model.decode(posterior.sample(noise)?)?;
            Ok(autoencoder_loss(
                reconstruction,
                x,
                posterior.mean,
                posterior.logvar,
                KL_WEIGHT,
            ))
        },
        progress,
    )
}

/// Starts the posterior's log-variance at [`INITIAL_LOGVAR`] (the bias of `quant_conv`'s
/// log-variance half) instead of 0, so that the decoder sees nearly the encoder's means from
/// the first step rather than latents buried in unit noise; the KL term pulls the variance up
/// where the decoder tolerates it.
fn narrow_posterior(mut model: AutoencoderKL) -> AutoencoderKL {
    let Some(conv) = model.quant_conv.as_mut() else {
        return model;
    };
    let Some(bias) = conv.bias.as_mut() else {
        return model;
    };
    let [moments] = bias.dims();
    let half = moments / 2;
    let device = bias.val().device();
    let values: Vec<f32> = (0..moments)
        .map(|i| if i < half { 0.0 } else { INITIAL_LOGVAR as f32 })
        .collect();
    let value = Tensor::<1>::from_data(TensorData::new(values, [moments]), &device.clone().inner())
        .autodiff()
        .require_grad();
    *bias = bias.clone().map(|_| value);
    model
}

/// `1 / std` of the (unscaled) latent means of `samples` training images: the
/// `scaling_factor` that gives the UNet unit-variance latents (how Stable Diffusion's
/// 0.18215 was set).
pub fn latent_scaling_factor(
    vae: &AutoencoderKL,
    batcher: &Batcher,
    samples: usize,
    device: &Device,
) -> Result<f64> {
    let x = batcher
        .batch(Split::Train, 0, samples, device)?
        .signed_images();
    let mean = vae.encode(x)?.mean;
    let n = mean.shape().num_elements() as f64;
    let m = f64::from(mean.clone().mean().into_scalar::<f32>());
    let var = f64::from(mean.powi_scalar(2).sum().into_scalar::<f32>()) / n - m * m;
    Ok(1.0 / var.sqrt())
}

/// Trains the zoo UNet (ε-prediction, min-SNR-5 weights, [`CONDITION_DROPOUT`] of empty
/// prompts) on latents of the frozen `vae` (scaled by its config's `scaling_factor`) and
/// states of the frozen `text_encoder`, both run without autodiff.
pub fn train_unet(
    batcher: &Batcher,
    vae: &AutoencoderKL,
    text_encoder: &ClipTextModel,
    config: &TrainConfig,
    batch: usize,
    device: &Device,
    progress: impl FnMut(StepReport) -> bool,
) -> Result<Trained<UNet2DConditionModel>> {
    let unet_config: UNet2DConditionConfig = parse(unet_config(), "zoo UNet config")?;
    let model = UNet2DConditionModel::new(&unet_config, device)?;
    let plain = device.clone().inner();
    let scale = vae.config().scaling_factor;
    let alphas =
        Tensor::<1>::from_data(TensorData::new(alphas_cumprod(), [TRAIN_TIMESTEPS]), &plain);
    let empty = text_encoder
        .forward(batcher.ids(&[""], &plain)?, None)?
        .last_hidden_state;
    fit(
        model,
        config,
        |model, step| {
            let b = batcher.batch(Split::Train, (step * batch) as u64, batch, &plain)?;
            let posterior = vae.encode(b.signed_images())?;
            let noise = Tensor::random(
                posterior.mean.dims(),
                Distribution::Normal(0.0, 1.0),
                &plain,
            );
            let latents = posterior.sample(noise)? * scale;
            let states = text_encoder
                .forward(b.input_ids.clone(), None)?
                .last_hidden_state;
            let drop: Vec<bool> =
                Tensor::<1>::random([batch], Distribution::Uniform(0.0, 1.0), &plain)
                    .into_data()
                    .try_to_vec::<f32>()
                    .map_err(|e| Error::InvalidConfig(format!("{e:?}")))?
                    .into_iter()
                    .map(|u| f64::from(u) < CONDITION_DROPOUT)
                    .collect();
            let states = condition_dropout(states, empty.clone(), &drop)?;
            let t = Tensor::<1>::random(
                [batch],
                Distribution::Uniform(0.0, TRAIN_TIMESTEPS as f64),
                &plain,
            )
            .floor()
            .clamp(0.0, (TRAIN_TIMESTEPS - 1) as f64);
            let a = alphas.clone().select(0, t.clone().int());
            let noise = Tensor::random(latents.dims(), Distribution::Normal(0.0, 1.0), &plain);
            let noisy = add_noise(latents, noise.clone(), a.clone());
            let weights = min_snr_weights(Prediction::Epsilon, a, SNR_GAMMA)?;
            let prediction = model.forward(noisy.autodiff(), t.autodiff(), states.autodiff())?;
            Ok(diffusion_loss(
                prediction,
                noise.autodiff(),
                Some(weights.autodiff()),
            ))
        },
        progress,
    )
}

/// Writes the zoo CLIP folder: `config.json`, `model.safetensors`,
/// `preprocessor_config.json` and the tokenizer files copied from `tokenizer_dir`.
pub fn write_clip(dir: &Path, model: &ClipModel, tokenizer_dir: &Path) -> Result<()> {
    write_json(&dir.join("config.json"), &clip_config())?;
    write_json(
        &dir.join("preprocessor_config.json"),
        &preprocessor_config(),
    )?;
    save_safetensors(model, dir.join("model.safetensors"), DType::F32)?;
    copy_tokenizer(tokenizer_dir, dir)
}

/// Writes the text side of the zoo pipeline folder (diffusers layout): `text_encoder/` (the
/// CLIP's text tower as a `CLIPTextModel`) and `tokenizer/`.
pub fn write_text_encoder(dir: &Path, clip: &ClipModel, tokenizer_dir: &Path) -> Result<()> {
    write_json(
        &dir.join("text_encoder/config.json"),
        &text_encoder_config(),
    )?;
    let text = ClipTextModel {
        text_model: clip.text_model.clone(),
    };
    save_safetensors(
        &text,
        dir.join("text_encoder/model.safetensors"),
        DType::F32,
    )?;
    copy_tokenizer(tokenizer_dir, &dir.join("tokenizer"))
}

/// Writes the pipeline's `vae/` with the latent `scaling_factor`.
pub fn write_vae(dir: &Path, vae: &AutoencoderKL, scaling_factor: f64) -> Result<()> {
    write_json(&dir.join("vae/config.json"), &vae_config(scaling_factor))?;
    save_safetensors(
        vae,
        dir.join("vae/diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    Ok(())
}

/// Writes the pipeline's `unet/`, `scheduler/` and `model_index.json`.
pub fn write_unet(dir: &Path, unet: &UNet2DConditionModel) -> Result<()> {
    write_json(&dir.join("model_index.json"), &model_index())?;
    write_json(
        &dir.join("scheduler/scheduler_config.json"),
        &scheduler_config(),
    )?;
    write_json(&dir.join("unet/config.json"), &unet_config())?;
    save_safetensors(
        unet,
        dir.join("unet/diffusion_pytorch_model.safetensors"),
        DType::F32,
    )?;
    Ok(())
}

/// The tokenizer files of a CLIP tokenizer folder (`vocab.json`, `merges.txt`, and
/// `tokenizer.json` when present) and a `tokenizer_config.json` / `special_tokens_map.json`
/// for transformers' `CLIPTokenizer`.
fn copy_tokenizer(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for name in ["vocab.json", "merges.txt", "tokenizer.json"] {
        let source = from.join(name);
        if source.is_file() {
            // Read and written rather than copied: a copy keeps the source's permissions, and
            // the next run could not overwrite a file copied from a read-only folder.
            let bytes = std::fs::read(&source).map_err(|e| io(&source, e))?;
            let dest = to.join(name);
            let _ = std::fs::remove_file(&dest);
            std::fs::write(&dest, bytes).map_err(|e| io(&dest, e))?;
        }
    }
    let special = json!({
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    });
    let mut config = special.clone();
    config["tokenizer_class"] = json!("CLIPTokenizer");
    config["model_max_length"] = json!(77);
    config["do_lower_case"] = json!(true);
    write_json(&to.join("special_tokens_map.json"), &special)?;
    write_json(&to.join("tokenizer_config.json"), &config)
}

fn write_json(path: &Path, value: &Value) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    }
    let text =
        serde_json::to_string_pretty(value).map_err(|e| Error::InvalidConfig(e.to_string()))?;
    std::fs::write(path, text + "\n").map_err(|e| io(path, e))
}
