//! SDXL's prompt encoding: two CLIP tokenizers and text encoders (OpenAI CLIP ViT-L and
//! OpenCLIP bigG with its projection), as diffusers' `StableDiffusionXLPipeline.encode_prompt`
//! uses them.

use burn::tensor::{DType, Device, Tensor};
use mm_core::tokenizer::Tokenizer;
use mm_core::weights::Weights;
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use mm_vision::output::TowerOutput;

use super::loading::{PipelineDir, TEXT_ENCODER_WEIGHTS};
use super::options::GenerateOptions;
use super::prompt::{
    ModelFamily, PromptEmbeds, TextConditioner, Truncation, load_tokenizer, token_ids,
};
use crate::{Error, Result};

/// The tokenizers and text encoders of an SDXL pipeline: `tokenizer/` + `text_encoder/`
/// (CLIP ViT-L; absent in the refiner) and `tokenizer_2/` + `text_encoder_2/` (OpenCLIP
/// bigG, `CLIPTextModelWithProjection`).
#[derive(Debug)]
pub struct XlPromptEncoder {
    /// The first tokenizer and text encoder (`None` for the refiner).
    pub first: Option<(Tokenizer, ClipTextModel)>,
    /// The second tokenizer (SDXL's pads with `!`) and text encoder with projection.
    pub second: (Tokenizer, ClipTextModelWithProjection),
    /// `force_zeros_for_empty_prompt` of `model_index.json` (base: true, refiner: false): with
    /// guidance and no negative prompt, the negative embeddings are zeros.
    pub force_zeros_for_empty_prompt: bool,
    device: Device,
}

/// One text encoder's output: its hidden states and, for the projected one, `text_embeds`.
struct Encoded {
    tower: TowerOutput,
    pooled: Option<Tensor<2>>,
}

impl XlPromptEncoder {
    /// Loads the tokenizers and text encoders of an SDXL folder (the refiner has only the
    /// second pair) with their matrices in `dtype`; `force_zeros_for_empty_prompt` comes
    /// from `model_index.json` (diffusers' default: true).
    pub fn load(dir: &PipelineDir, dtype: DType, device: &Device) -> Result<Self> {
        let first = match dir.component_class("text_encoder") {
            Some(_) => Some(
                dir.component("text_encoder")?
                    .weights(TEXT_ENCODER_WEIGHTS)?,
            ),
            None => None,
        };
        let second = dir
            .component("text_encoder_2")?
            .weights(TEXT_ENCODER_WEIGHTS)?;
        Self::from_weights(dir, first, second, dtype, device)
    }

    /// The encoders of `dir` (its configs, tokenizers and `model_index.json`) with the given
    /// weights (a folder's, or a single file's converted ones), matrices kept in `dtype`.
    pub fn from_weights(
        dir: &PipelineDir,
        first: Option<Weights>,
        second: Weights,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        let config = |component| -> Result<ClipTextConfig> {
            let file = dir.component(component)?.required("config.json")?;
            Ok(ClipTextConfig::from_file(&file)?)
        };
        let first = match first {
            Some(weights) => {
                let model = ClipTextModel::from_weights(
                    &config("text_encoder")?,
                    weights.with_dtype(dtype),
                    device,
                )?;
                dir.component("tokenizer")?;
                Some((load_tokenizer(&dir.path, "tokenizer")?, model))
            }
            None => None,
        };
        let model = ClipTextModelWithProjection::from_weights(
            &config("text_encoder_2")?,
            second.with_dtype(dtype),
            device,
        )?;
        dir.component("tokenizer_2")?;
        let second = (load_tokenizer(&dir.path, "tokenizer_2")?, model);
        let force_zeros = dir
            .index
            .get("force_zeros_for_empty_prompt")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true);
        Ok(Self::new(first, second, force_zeros, device))
    }

    /// An encoder from its parts living on `device`.
    pub fn new(
        first: Option<(Tokenizer, ClipTextModel)>,
        second: (Tokenizer, ClipTextModelWithProjection),
        force_zeros_for_empty_prompt: bool,
        device: &Device,
    ) -> Self {
        Self {
            first,
            second,
            force_zeros_for_empty_prompt,
            device: device.clone(),
        }
    }

    /// Runs each text encoder on its text: the first on `texts[0]`, the second on
    /// `texts[1]` — or, as diffusers' `zip` does for the refiner (one encoder), the second on
    /// `texts[0]`.
    fn run(&self, texts: [&str; 2], truncated: &mut Vec<Truncation>) -> Result<Vec<Encoded>> {
        let mut out = Vec::with_capacity(2);
        let mut texts = texts.into_iter();
        if let Some((tokenizer, model)) = &self.first {
            let text = texts.next().unwrap_or_default();
            let ids = token_ids(tokenizer, text, truncated, &self.device)?;
            out.push(Encoded {
                tower: model.forward(ids, None)?,
                pooled: None,
            });
        }
        let (tokenizer, model) = &self.second;
        let text = texts.next().unwrap_or_default();
        let ids = token_ids(tokenizer, text, truncated, &self.device)?;
        let (tower, pooled) = model.forward(ids, None)?;
        out.push(Encoded {
            tower,
            pooled: Some(pooled),
        });
        Ok(out)
    }

    /// Hidden state `-(skip + 2)` of every encoder, concatenated on features, and the
    /// second encoder's pooled embeddings, both in f32.
    fn embed(
        &self,
        texts: [&str; 2],
        clip_skip: Option<usize>,
        truncated: &mut Vec<Truncation>,
    ) -> Result<(Tensor<3>, Tensor<2>)> {
        let skip = clip_skip.unwrap_or(0);
        let mut hidden = Vec::with_capacity(2);
        let mut pooled = None;
        for encoded in self.run(texts, truncated)? {
            let state = clip_state(&encoded.tower, skip)?;
            hidden.push(state.cast(DType::F32));
            pooled = encoded.pooled.or(pooled);
        }
        let pooled = pooled.ok_or_else(|| Error::Config("no projected text encoder".into()))?;
        Ok((Tensor::cat(hidden, 2), pooled.cast(DType::F32)))
    }
}

/// Hidden state `-(skip + 2)` of a CLIP tower, as SDXL and SD3 read
/// `hidden_states[-(clip_skip + 2)]` (no final layer norm): the penultimate layer by default;
/// `skip = layers - 1` reaches the embeddings' output, as diffusers allows.
pub(crate) fn clip_state(tower: &TowerOutput, skip: usize) -> Result<Tensor<3>> {
    let layers = tower.hidden_states.len() - 1;
    tower
        .hidden_state(-(skip as isize + 2))
        .ok_or_else(|| Error::InvalidArgument {
            name: "clip_skip",
            reason: format!(
                "{skip} goes past a text encoder's {layers} layers (counted from the \
                 penultimate: at most {} allowed)",
                layers.saturating_sub(1)
            ),
        })
}

/// Python's `a or b` for prompts: `b` when `a` is unset or empty.
pub(crate) fn or<'a>(a: Option<&'a str>, b: &'a str) -> &'a str {
    a.filter(|s| !s.is_empty()).unwrap_or(b)
}

impl TextConditioner for XlPromptEncoder {
    const FAMILY: ModelFamily = ModelFamily::StableDiffusionXl;

    /// diffusers' SDXL `encode_prompt`: `prompt` through the first encoder and `prompt_2`
    /// (default `prompt`) through the second, their penultimate hidden states (or
    /// `-(clip_skip + 2)`) concatenated, the second's projected pooled output. With guidance
    /// and no negative prompt under `force_zeros_for_empty_prompt`, zero negative
    /// embeddings; otherwise the negative pair (default `""`, `negative_prompt_2` defaulting
    /// to `negative_prompt`) embedded from the penultimate layer whatever `clip_skip` is.
    fn encode_prompts(&self, opts: &GenerateOptions, guided: bool) -> Result<PromptEmbeds> {
        let mut truncated = Vec::new();
        let prompt_2 = or(opts.prompt_2.as_deref(), &opts.prompt);
        let (cond, pooled) =
            self.embed([&opts.prompt, prompt_2], opts.clip_skip, &mut truncated)?;
        let (uncond, uncond_pooled) = if !guided {
            (None, None)
        } else if opts.negative_prompt.is_none() && self.force_zeros_for_empty_prompt {
            (Some(cond.zeros_like()), Some(pooled.zeros_like()))
        } else {
            let negative = opts.negative_prompt.as_deref().unwrap_or("");
            let negative_2 = or(opts.negative_prompt_2.as_deref(), negative);
            let (u, p) = self.embed([negative, negative_2], None, &mut truncated)?;
            (Some(u), Some(p))
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
