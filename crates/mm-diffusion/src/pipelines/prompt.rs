//! Prompt encoding: the CLIP tokenizer and text encoder of a Stable Diffusion folder, as
//! diffusers' `StableDiffusionPipeline.encode_prompt` uses them.

use std::path::Path;

use burn::tensor::{DType, Device, Tensor};
use mm_core::tokenizer::Tokenizer;
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel};

use super::loading::{ComponentDir, TEXT_ENCODER_WEIGHTS};
use super::options::GenerateOptions;
use crate::{Error, Result};

/// A prompt cut to the tokenizer's length: diffusers logs the removed part as a warning; here
/// it is returned (in [`PromptEmbeds::truncated`] and the pipeline output) so that callers can
/// show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The prompt as given.
    pub prompt: String,
    /// The text of the tokens that were dropped (decoded like diffusers' warning).
    pub removed: String,
    /// Tokens of the full prompt, special tokens included.
    pub tokens: usize,
    /// The tokenizer's maximum length (77 for CLIP).
    pub max_length: usize,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the prompt has {} tokens and CLIP can only handle sequences up to {}; this part \
             was truncated: \"{}\"",
            self.tokens, self.max_length, self.removed
        )
    }
}

/// The text conditioning of one generation call.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// Prompt embeddings `[num_images_per_prompt, 77, hidden]`.
    pub cond: Tensor<3>,
    /// Negative-prompt embeddings of the same shape; `None` without classifier-free guidance.
    pub uncond: Option<Tensor<3>>,
    /// SDXL: the pooled (projected) prompt embeddings `[num_images_per_prompt, dim]`.
    pub pooled: Option<Tensor<2>>,
    /// SDXL: the pooled negative-prompt embeddings (with guidance).
    pub uncond_pooled: Option<Tensor<2>>,
    /// Prompts (positive or negative) that were cut to the tokenizer's length.
    pub truncated: Vec<Truncation>,
}

/// The model families the pipelines run; each has diffusers' defaults of its pipeline classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// Stable Diffusion 1.x / 2.x (`StableDiffusionPipeline`).
    StableDiffusion,
    /// SDXL (`StableDiffusionXLPipeline`): pooled embeddings and micro-conditioning.
    StableDiffusionXl,
    /// Stable Diffusion 3 / 3.5 (`StableDiffusion3Pipeline`): flow matching, pooled
    /// embeddings, three text encoders.
    StableDiffusion3,
    /// FLUX.1 schnell / dev (`FluxPipeline`): flow matching with a resolution-dependent shift,
    /// CLIP's pooled embedding and T5's states, embedded guidance.
    Flux,
}

/// Turns a call's prompts into the denoiser's text conditioning: [`PromptEncoder`] (SD 1.x /
/// 2.x) or [`XlPromptEncoder`](super::XlPromptEncoder) (SDXL's two encoders).
pub trait TextConditioner {
    /// The pipeline family whose prompts it encodes (its defaults and conditioning follow).
    const FAMILY: ModelFamily;

    /// Embeds `opts.prompt` (and the negative prompt when `guided`), repeated
    /// `opts.num_images_per_prompt` times, as the matching diffusers pipeline's
    /// `encode_prompt` does.
    fn encode_prompts(&self, opts: &GenerateOptions, guided: bool) -> Result<PromptEmbeds>;
}

impl TextConditioner for PromptEncoder {
    const FAMILY: ModelFamily = ModelFamily::StableDiffusion;

    fn encode_prompts(&self, opts: &GenerateOptions, guided: bool) -> Result<PromptEmbeds> {
        self.encode(
            &opts.prompt,
            opts.negative_prompt.as_deref().unwrap_or(""),
            opts.num_images_per_prompt,
            guided,
            opts.clip_skip,
        )
    }
}

impl PromptEmbeds {
    /// Every embedding repeated `n` times along the batch (`num_images_per_prompt`).
    pub(crate) fn repeated(self, n: usize) -> Self {
        Self {
            cond: self.cond.repeat_dim(0, n),
            uncond: self.uncond.map(|u| u.repeat_dim(0, n)),
            pooled: self.pooled.map(|p| p.repeat_dim(0, n)),
            uncond_pooled: self.uncond_pooled.map(|p| p.repeat_dim(0, n)),
            truncated: self.truncated,
        }
    }

    /// The pooled embeddings as the denoiser sees them: `[uncond_pooled; pooled]` with
    /// guidance, `pooled` without (`None` when the encoder has no pooled output).
    pub fn pooled_context(&self) -> Option<Tensor<2>> {
        let pooled = self.pooled.clone()?;
        Some(match &self.uncond_pooled {
            Some(uncond) => Tensor::cat(vec![uncond.clone(), pooled], 0),
            None => pooled,
        })
    }

    /// What the denoiser sees as `encoder_hidden_states`: `[uncond; cond]` (diffusers' order)
    /// with guidance, `cond` without.
    pub fn context(&self) -> Tensor<3> {
        match &self.uncond {
            Some(uncond) => Tensor::cat(vec![uncond.clone(), self.cond.clone()], 0),
            None => self.cond.clone(),
        }
    }
}

/// The CLIP tokenizer and `CLIPTextModel` of a Stable Diffusion 1.x / 2.x pipeline.
#[derive(Debug)]
pub struct PromptEncoder {
    /// The tokenizer (pads and truncates to `model_max_length`, 77).
    pub tokenizer: Tokenizer,
    /// The text encoder.
    pub text_encoder: ClipTextModel,
    device: Device,
}

impl PromptEncoder {
    /// Loads `tokenizer/` (`tokenizer.json`, or the `vocab.json` + `merges.txt` that diffusers
    /// folders ship) and `text_encoder/` (`model.safetensors` or its fp16 variant, published
    /// `text_model.*` names or transformers 5's flat ones) of a pipeline folder.
    pub fn load(pipeline: &Path, device: &Device) -> Result<Self> {
        Self::load_with_dtype(pipeline, DType::F32, device)
    }

    /// [`load`](Self::load) keeping the text encoder's matrices in `dtype` (see
    /// [`mm_core::precision`]).
    pub fn load_with_dtype(pipeline: &Path, dtype: DType, device: &Device) -> Result<Self> {
        let tokenizer = Self::load_tokenizer(pipeline)?;
        let text_dir = ComponentDir::new(pipeline, "text_encoder")?;
        let config = ClipTextConfig::from_file(&text_dir.required("config.json")?)?;
        let weights = text_dir.weights(TEXT_ENCODER_WEIGHTS)?.with_dtype(dtype);
        let text_encoder = ClipTextModel::from_weights(&config, weights, device)?;
        Ok(Self::new(tokenizer, text_encoder, device))
    }

    /// The `tokenizer/` of a pipeline folder: `tokenizer.json`, or the `vocab.json` +
    /// `merges.txt` that diffusers folders ship.
    pub fn load_tokenizer(pipeline: &Path) -> Result<Tokenizer> {
        load_tokenizer(pipeline, "tokenizer")
    }

    /// A prompt encoder from a tokenizer and a text encoder living on `device`.
    pub fn new(tokenizer: Tokenizer, text_encoder: ClipTextModel, device: &Device) -> Self {
        Self {
            tokenizer,
            text_encoder,
            device: device.clone(),
        }
    }

    /// Embeds `prompt` as diffusers' `encode_prompt` does: tokens padded / truncated to the
    /// tokenizer's maximum length, no attention mask, the last hidden state (final layer norm
    /// included) or, with `clip_skip = Some(k)`, hidden state `-(k + 1)` passed through the
    /// final layer norm; repeated `num_images_per_prompt` times. With `guidance` the negative
    /// prompt (`""` when empty) is embedded too, and — exactly as diffusers does — always
    /// from the last hidden state, whatever `clip_skip` is.
    pub fn encode(
        &self,
        prompt: &str,
        negative_prompt: &str,
        num_images_per_prompt: usize,
        guidance: bool,
        clip_skip: Option<usize>,
    ) -> Result<PromptEmbeds> {
        if num_images_per_prompt == 0 {
            return Err(Error::InvalidArgument {
                name: "num_images_per_prompt",
                reason: "must be at least 1".into(),
            });
        }
        let mut truncated = Vec::new();
        let cond = self.embed(prompt, clip_skip, &mut truncated)?;
        let uncond = guidance
            .then(|| self.embed(negative_prompt, None, &mut truncated))
            .transpose()?;
        let embeds = PromptEmbeds {
            cond,
            uncond,
            pooled: None,
            uncond_pooled: None,
            truncated,
        };
        Ok(embeds.repeated(num_images_per_prompt))
    }

    /// `[1, max_length, hidden]` embeddings of one text.
    fn embed(
        &self,
        text: &str,
        clip_skip: Option<usize>,
        truncated: &mut Vec<Truncation>,
    ) -> Result<Tensor<3>> {
        let ids = token_ids(&self.tokenizer, text, truncated, &self.device)?;
        let out = self.text_encoder.forward(ids, None)?;
        // The pipeline works in f32 whatever the text encoder computes in.
        let hidden = match clip_skip {
            None => out.last_hidden_state,
            Some(skip) => {
                let layers = out.hidden_states.len() - 1;
                let hidden = out
                    .hidden_state(-(skip as isize + 1))
                    .filter(|_| skip < layers)
                    .ok_or_else(|| Error::InvalidArgument {
                        name: "clip_skip",
                        reason: format!(
                            "{skip} skips all of the text encoder's {layers} layers \
                             (at most {} allowed)",
                            layers.saturating_sub(1)
                        ),
                    })?;
                self.text_encoder
                    .text_model
                    .final_layer_norm
                    .forward(hidden)
            }
        };
        Ok(hidden.cast(DType::F32))
    }
}

/// The longest T5 prompt the SD3 and FLUX pipelines take (diffusers' `check_inputs`).
pub(crate) const MAX_T5_SEQUENCE_LENGTH: usize = 512;

/// `opts.max_sequence_length` (or `default`), checked to be in `1..=512`.
pub(crate) fn t5_sequence_length(opts: &GenerateOptions, default: usize) -> Result<usize> {
    let max_len = opts.max_sequence_length.unwrap_or(default);
    if max_len == 0 || max_len > MAX_T5_SEQUENCE_LENGTH {
        return Err(Error::InvalidArgument {
            name: "max_sequence_length",
            reason: format!("must be in 1..={MAX_T5_SEQUENCE_LENGTH}, got {max_len}"),
        });
    }
    Ok(max_len)
}

/// The f32 states `[1, max_len, d_model]` of `text` through a T5 encoder, its tokens padded
/// or cut to `max_len` (no attention mask, as the diffusers pipelines run it).
pub(crate) fn t5_states(
    (tokenizer, model): &(Tokenizer, mm_vision::t5::T5EncoderModel),
    text: &str,
    max_len: usize,
    truncated: &mut Vec<Truncation>,
    device: &Device,
) -> Result<Tensor<3>> {
    let tokenizer = tokenizer.clone().with_max_length(max_len)?;
    let ids = token_ids(&tokenizer, text, truncated, device)?;
    Ok(model.forward(ids, None)?.cast(DType::F32))
}

/// A tokenizer folder (`tokenizer/`, `tokenizer_2/`) of a pipeline: `tokenizer.json`, or the
/// `vocab.json` + `merges.txt` that diffusers folders ship.
pub(crate) fn load_tokenizer(pipeline: &Path, component: &'static str) -> Result<Tokenizer> {
    let dir = ComponentDir::new(pipeline, component)?;
    Ok(match dir.optional("tokenizer.json") {
        Some(file) => Tokenizer::from_file(file)?,
        None => {
            Tokenizer::from_vocab_merges(dir.required("vocab.json")?, dir.required("merges.txt")?)?
        }
    })
}

/// The `[1, max_length]` token ids of `text` (padded and truncated), recording a truncation.
pub(crate) fn token_ids(
    tokenizer: &Tokenizer,
    text: &str,
    truncated: &mut Vec<Truncation>,
    device: &Device,
) -> Result<Tensor<2, burn::tensor::Int>> {
    if let Some(t) = truncation(tokenizer, text)?
        && !truncated.contains(&t)
    {
        truncated.push(t);
    }
    let (ids, _mask) = tokenizer.encode(text)?.to_tensors(device)?;
    Ok(ids)
}

/// diffusers' truncation warning: the part of `text` beyond the tokenizer's length.
fn truncation(tokenizer: &Tokenizer, text: &str) -> Result<Option<Truncation>> {
    let max_length = tokenizer.max_length();
    let ids = tokenizer
        .inner()
        .encode(text, true)
        .map_err(|e| mm_core::Error::Tokenizer(format!("cannot encode text: {e}")))?
        .get_ids()
        .to_vec();
    if ids.len() <= max_length {
        return Ok(None);
    }
    // diffusers decodes untruncated_ids[max_length - 1 : -1]: the tokens that did not fit,
    // without the final end-of-text.
    let removed = tokenizer.decode(&ids[max_length - 1..ids.len() - 1])?;
    Ok(Some(Truncation {
        prompt: text.to_string(),
        removed,
        tokens: ids.len(),
        max_length,
    }))
}
