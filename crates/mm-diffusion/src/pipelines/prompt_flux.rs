//! FLUX.1's prompt encoding: CLIP ViT-L's pooled output and the T5 v1.1 XXL encoder's states,
//! as diffusers' `FluxPipeline.encode_prompt` uses them.

use burn::tensor::{DType, Device, Tensor};
use mm_core::tokenizer::Tokenizer;
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel};
use mm_vision::t5::{T5Config, T5EncoderModel, tokenizer_file};

use super::loading::{PipelineDir, TEXT_ENCODER_WEIGHTS};
use super::options::GenerateOptions;
use super::pipeline::LoadOptions;
use super::prompt::{
    ModelFamily, PromptEmbeds, TextConditioner, Truncation, load_tokenizer, t5_sequence_length,
    t5_states, token_ids,
};
use super::prompt_xl::or;
use crate::Result;

/// diffusers' default `max_sequence_length` of FLUX's T5 prompt.
pub const FLUX_MAX_SEQUENCE_LENGTH: usize = 512;

/// The tokenizers and text encoders of a FLUX.1 pipeline: `tokenizer/` + `text_encoder/`
/// (CLIP ViT-L, its pooled output) and `tokenizer_2/` + `text_encoder_2/` (T5 v1.1 XXL).
#[derive(Debug)]
pub struct FluxPromptEncoder {
    /// CLIP's tokenizer and text encoder.
    pub clip: (Tokenizer, ClipTextModel),
    /// T5's tokenizer and encoder.
    pub t5: (Tokenizer, T5EncoderModel),
    device: Device,
}

impl FluxPromptEncoder {
    /// Loads the encoders of a FLUX folder with their matrices in `options.dtype`; T5's
    /// weights from `options`' `text_encoder_2` file when given (a T5 encoder GGUF file,
    /// say), its linear weights quantized as `options.quantize` says.
    pub fn load(dir: &PipelineDir, options: &LoadOptions, device: &Device) -> Result<Self> {
        let folder = dir.component("text_encoder")?;
        let config = ClipTextConfig::from_file(&folder.required("config.json")?)?;
        let weights = folder
            .weights(TEXT_ENCODER_WEIGHTS)?
            .with_dtype(options.dtype);
        let clip = ClipTextModel::from_weights(&config, weights, device)?;
        dir.component("tokenizer")?;
        let clip_tokenizer = load_tokenizer(&dir.path, "tokenizer")?;
        let folder = dir.component("text_encoder_2")?;
        let config: T5Config = folder.config()?;
        let weights = options.weights("text_encoder_2", || folder.weights(TEXT_ENCODER_WEIGHTS))?;
        let t5 = T5EncoderModel::from_weights(&config, weights, device)?;
        let t5_tokenizer =
            Tokenizer::from_file(tokenizer_file(dir.component("tokenizer_2")?.path())?)?;
        Ok(Self {
            clip: (clip_tokenizer, clip),
            t5: (t5_tokenizer, t5),
            device: device.clone(),
        })
    }

    /// `[1, max_len, d_model]` T5 states and `[1, hidden]` CLIP pooled embedding of one
    /// prompt pair (CLIP's text, T5's text).
    fn embed(
        &self,
        [text_clip, text_t5]: [&str; 2],
        max_len: usize,
        truncated: &mut Vec<Truncation>,
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let (tokenizer, clip) = &self.clip;
        let ids = token_ids(tokenizer, text_clip, truncated, &self.device)?;
        let pooled = clip.forward(ids, None)?.pooler_output.cast(DType::F32);
        let states = t5_states(&self.t5, text_t5, max_len, truncated, &self.device)?;
        Ok((states, pooled))
    }
}

impl TextConditioner for FluxPromptEncoder {
    const FAMILY: ModelFamily = ModelFamily::Flux;

    /// diffusers' FLUX `encode_prompt`: `prompt` through CLIP (pooled) and `prompt_2`
    /// (default `prompt`) through T5, padded / cut to `max_sequence_length` (default 512);
    /// with true classifier-free guidance the negative pair likewise (`negative_prompt_2`
    /// defaulting to `negative_prompt`).
    fn encode_prompts(&self, opts: &GenerateOptions, guided: bool) -> Result<PromptEmbeds> {
        let max_len = t5_sequence_length(opts, FLUX_MAX_SEQUENCE_LENGTH)?;
        let mut truncated = Vec::new();
        let prompt = opts.prompt.as_str();
        let texts = [prompt, or(opts.prompt_2.as_deref(), prompt)];
        let (cond, pooled) = self.embed(texts, max_len, &mut truncated)?;
        let (uncond, uncond_pooled) = match (guided, opts.negative_prompt.as_deref()) {
            (true, Some(negative)) => {
                let texts = [negative, or(opts.negative_prompt_2.as_deref(), negative)];
                let (u, p) = self.embed(texts, max_len, &mut truncated)?;
                (Some(u), Some(p))
            }
            _ => (None, None),
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
