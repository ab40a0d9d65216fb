//! Stable Diffusion 3's prompt encoding: two CLIP text encoders with projection (CLIP-L and
//! OpenCLIP bigG) and, optionally, the T5 v1.1 XXL encoder, as diffusers'
//! `StableDiffusion3Pipeline.encode_prompt` uses them.

use burn::tensor::{DType, Device, Tensor};
use mm_core::tokenizer::Tokenizer;
use mm_core::weights::Weights;
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModelWithProjection};
use mm_vision::t5::{T5Config, T5EncoderModel, tokenizer_file};

use super::loading::{ComponentDir, PipelineDir, TEXT_ENCODER_WEIGHTS};
use super::options::GenerateOptions;
use super::prompt::{
    ModelFamily, PromptEmbeds, TextConditioner, Truncation, load_tokenizer, t5_sequence_length,
    t5_states, token_ids,
};
use super::prompt_xl::{clip_state, or};
use crate::Result;

/// diffusers' default `max_sequence_length` of the T5 prompt.
pub const SD3_MAX_SEQUENCE_LENGTH: usize = 256;

/// The tokenizers and text encoders of an SD3 pipeline: `tokenizer/` + `text_encoder/`
/// (CLIP ViT-L with projection), `tokenizer_2/` + `text_encoder_2/` (OpenCLIP bigG with
/// projection) and, unless the pipeline was saved without it, `tokenizer_3/` +
/// `text_encoder_3/` (T5 v1.1 XXL encoder).
#[derive(Debug)]
pub struct Sd3PromptEncoder {
    /// CLIP-L's tokenizer and text encoder.
    pub clip_l: (Tokenizer, ClipTextModelWithProjection),
    /// CLIP-G's tokenizer (pads with `!`) and text encoder.
    pub clip_g: (Tokenizer, ClipTextModelWithProjection),
    /// T5's tokenizer and encoder; `None` (diffusers' `text_encoder_3=None`): zero states.
    pub t5: Option<(Tokenizer, T5EncoderModel)>,
    /// The width of the text states (the transformer's `joint_attention_dim`): the CLIP
    /// states are zero-padded to it, and it is the width of the zeros that replace T5.
    pub joint_attention_dim: usize,
    device: Device,
}

/// Text-encoder weights that replace those of an SD3 folder (a single file's, converted:
/// see [`Sd3Components`](crate::single_file::Sd3Components)); `None` takes the folder's.
#[derive(Debug, Clone, Default)]
pub struct Sd3TextWeights {
    /// CLIP-L's (`text_encoder/`).
    pub clip_l: Option<Weights>,
    /// CLIP-G's (`text_encoder_2/`).
    pub clip_g: Option<Weights>,
    /// T5's (`text_encoder_3/`).
    pub t5: Option<Weights>,
}

impl Sd3PromptEncoder {
    /// Loads the encoders of an SD3 folder with their matrices in `dtype`; `with_t5 = false`
    /// leaves T5 out even when the folder has it (its states become zeros: about 9.5 GB less
    /// in bf16, at some cost in prompt adherence). `joint_attention_dim` is the
    /// transformer's.
    pub fn load(
        dir: &PipelineDir,
        dtype: DType,
        with_t5: bool,
        joint_attention_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        let weights = Sd3TextWeights::default();
        Self::from_weights(dir, weights, dtype, with_t5, joint_attention_dim, device)
    }

    /// [`load`](Self::load) with the weights of `weights` where it has them (a single file's
    /// encoders) and the folder's for the others; the configs, tokenizers and
    /// `model_index.json` are the folder's (T5 is loaded only when `model_index.json` names
    /// a `text_encoder_3`).
    pub fn from_weights(
        dir: &PipelineDir,
        weights: Sd3TextWeights,
        dtype: DType,
        with_t5: bool,
        joint_attention_dim: usize,
        device: &Device,
    ) -> Result<Self> {
        let folder_or = |given: Option<Weights>, folder: &ComponentDir| match given {
            Some(weights) => Ok(weights.with_dtype(dtype)),
            None => folder
                .weights(TEXT_ENCODER_WEIGHTS)
                .map(|w| w.with_dtype(dtype)),
        };
        let clip = |encoder: &'static str, tokenizer: &'static str, given| -> Result<_> {
            let folder = dir.component(encoder)?;
            let config = ClipTextConfig::from_file(&folder.required("config.json")?)?;
            let weights = folder_or(given, &folder)?;
            let model = ClipTextModelWithProjection::from_weights(&config, weights, device)?;
            dir.component(tokenizer)?;
            Ok((load_tokenizer(&dir.path, tokenizer)?, model))
        };
        let clip_l = clip("text_encoder", "tokenizer", weights.clip_l)?;
        let clip_g = clip("text_encoder_2", "tokenizer_2", weights.clip_g)?;
        let t5 = match (with_t5, dir.component_class("text_encoder_3")) {
            (true, Some(_)) => {
                let folder = dir.component("text_encoder_3")?;
                let config: T5Config = folder.config()?;
                let weights = folder_or(weights.t5, &folder)?;
                let model = T5EncoderModel::from_weights(&config, weights, device)?;
                let tokenizer = dir.component("tokenizer_3")?;
                let tokenizer = Tokenizer::from_file(tokenizer_file(tokenizer.path())?)?;
                Some((tokenizer, model))
            }
            _ => None,
        };
        Ok(Self {
            clip_l,
            clip_g,
            t5,
            joint_attention_dim,
            device: device.clone(),
        })
    }

    /// One CLIP encoder's hidden state `-(skip + 2)` (f32) and pooled projection.
    fn clip(
        &self,
        (tokenizer, model): &(Tokenizer, ClipTextModelWithProjection),
        text: &str,
        skip: usize,
        truncated: &mut Vec<Truncation>,
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let ids = token_ids(tokenizer, text, truncated, &self.device)?;
        let (tower, pooled) = model.forward(ids, None)?;
        let state = clip_state(&tower, skip)?;
        Ok((state.cast(DType::F32), pooled.cast(DType::F32)))
    }

    /// T5's states of `text` padded / cut to `max_len` tokens (no attention mask, as
    /// diffusers), or zeros without T5.
    fn t5(&self, text: &str, max_len: usize, truncated: &mut Vec<Truncation>) -> Result<Tensor<3>> {
        match &self.t5 {
            Some(t5) => t5_states(t5, text, max_len, truncated, &self.device),
            None => Ok(Tensor::zeros(
                [1, max_len, self.joint_attention_dim],
                &self.device,
            )),
        }
    }

    /// `[1, 77 + max_len, joint_attention_dim]` states and `[1, pooled]` embeddings of one
    /// prompt triple: CLIP-L and CLIP-G states concatenated on features and zero-padded to
    /// T5's width, then T5's tokens; the two pooled projections concatenated.
    fn embed(
        &self,
        [text_l, text_g, text_t5]: [&str; 3],
        clip_skip: Option<usize>,
        max_len: usize,
        truncated: &mut Vec<Truncation>,
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let skip = clip_skip.unwrap_or(0);
        let (l, pooled_l) = self.clip(&self.clip_l, text_l, skip, truncated)?;
        let (g, pooled_g) = self.clip(&self.clip_g, text_g, skip, truncated)?;
        let clip = Tensor::cat(vec![l, g], 2);
        let [b, tokens, width] = clip.dims();
        let joint = self.joint_attention_dim;
        // diffusers' `F.pad(clip, (0, joint - width))` (a negative pad cuts).
        let clip = match width.cmp(&joint) {
            std::cmp::Ordering::Less => {
                let zeros = Tensor::zeros([b, tokens, joint - width], &self.device);
                Tensor::cat(vec![clip, zeros], 2)
            }
            std::cmp::Ordering::Equal => clip,
            std::cmp::Ordering::Greater => clip.narrow(2, 0, joint),
        };
        let t5 = self.t5(text_t5, max_len, truncated)?;
        Ok((
            Tensor::cat(vec![clip, t5], 1),
            Tensor::cat(vec![pooled_l, pooled_g], 1),
        ))
    }
}

impl TextConditioner for Sd3PromptEncoder {
    const FAMILY: ModelFamily = ModelFamily::StableDiffusion3;

    /// diffusers' SD3 `encode_prompt`: `prompt`, `prompt_2` and `prompt_3` (both default
    /// `prompt`) through CLIP-L, CLIP-G and T5; with guidance the negative triple
    /// (`negative_prompt` default `""`, the other two defaulting to it), embedded from the
    /// penultimate CLIP layers whatever `clip_skip` is.
    fn encode_prompts(&self, opts: &GenerateOptions, guided: bool) -> Result<PromptEmbeds> {
        let max_len = t5_sequence_length(opts, SD3_MAX_SEQUENCE_LENGTH)?;
        let mut truncated = Vec::new();
        let prompt = opts.prompt.as_str();
        let texts = [
            prompt,
            or(opts.prompt_2.as_deref(), prompt),
            or(opts.prompt_3.as_deref(), prompt),
        ];
        let (cond, pooled) = self.embed(texts, opts.clip_skip, max_len, &mut truncated)?;
        let (uncond, uncond_pooled) = if guided {
            let negative = opts.negative_prompt.as_deref().unwrap_or("");
            let texts = [
                negative,
                or(opts.negative_prompt_2.as_deref(), negative),
                or(opts.negative_prompt_3.as_deref(), negative),
            ];
            let (u, p) = self.embed(texts, None, max_len, &mut truncated)?;
            (Some(u), Some(p))
        } else {
            (None, None)
        };
        let embeds = PromptEmbeds {
            cond,
            uncond,
            pooled: Some(pooled),
            uncond_pooled,
            truncated,
        };
        Ok(embeds.repeated(opts.num_images_per_prompt))
    }
}
