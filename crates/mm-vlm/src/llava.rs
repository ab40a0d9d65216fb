//! LLaVA 1.5 (`LlavaForConditionalGeneration`): a CLIP vision tower, a two-layer projector and
//! a Llama/Mistral decoder whose prompt carries one placeholder token per image feature.
//!
//! The prompt is expected already expanded (as transformers 5's processor does): each image
//! stands for `image_seq_length` copies of `image_token_index`. The features of the images, in
//! order, replace those tokens, in order.
//!
//! ```no_run
//! use mm_vlm::generate::GenerationConfig;
//! use mm_vlm::llava::{LlavaForConditionalGeneration, VisionLanguageModel};
//! use mm_vlm::processor::LlavaProcessor;
//! # fn main() -> mm_vlm::Result<()> {
//! let device = mm_core::device::cpu();
//! let model = LlavaForConditionalGeneration::load("llava-hf/llava-1.5-7b-hf", &device)?;
//! let processor = LlavaProcessor::from_dir("path/to/llava-1.5-7b-hf")?;
//! // The LLaVA processors composite transparency onto white (see `mm_vlm::processor`).
//! let image = mm_core::image::load_image_on_white("cat.png")?;
//! let inputs = processor.process("USER: <image>\nWhat is this? ASSISTANT:", &[image])?;
//! let (ids, mask) = inputs.token_tensors(&device)?;
//! let pixels = inputs.images.pixel_values(&device)?;
//! let config = GenerationConfig::greedy().with_max_new_tokens(64);
//! let out = model.generate(ids, Some(pixels), Some(mask), &config, None)?;
//! let ids: Vec<u32> = out.new_tokens[0].iter().map(|&t| t as u32).collect();
//! println!("{}", processor.tokenizer().decode(&ids)?);
//! # Ok(()) }
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use mm_core::hub::ModelDir;
use mm_core::nn::Activation;
use mm_core::precision::linear;
use mm_core::weights::Weights;
use mm_vision::TowerOutput;
use mm_vision::clip::ClipVisionModel;

use crate::config::{LlavaConfig, SelectStrategy, eos_token_ids};
use crate::generate::{Generation, GenerationConfig, Streamer, generate_from_embeds};
use crate::kv_cache::KvCache;
use crate::llama::{LlamaForCausalLM, mask_rows, read_ids};
use crate::{Error, Result};

/// `multi_modal_projector`: `linear_2(act(linear_1(x)))`.
#[derive(Module, Debug)]
pub struct MultiModalProjector {
    /// Vision width (times the number of feature layers) → text width.
    pub linear_1: Linear,
    /// Text width → text width.
    pub linear_2: Linear,
    #[module(skip)]
    act: Activation,
}

impl MultiModalProjector {
    /// A randomly initialised projector for `config`.
    pub fn new(config: &LlavaConfig, device: &Device) -> Self {
        let d = config.text_config.hidden_size;
        let bias = config.multimodal_projector_bias;
        Self {
            linear_1: LinearConfig::new(config.projector_in(), d)
                .with_bias(bias)
                .init(device),
            linear_2: LinearConfig::new(d, d).with_bias(bias).init(device),
            act: config.projector_hidden_act,
        }
    }

    /// Projects `[.., vision]` features to `[.., text]`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        linear(&self.linear_2, self.act.forward(linear(&self.linear_1, x)))
    }
}

/// `LlavaForConditionalGeneration`.
#[derive(Module, Debug)]
pub struct LlavaForConditionalGeneration {
    /// The CLIP vision tower (`vision_tower.vision_model.*`).
    pub vision_tower: ClipVisionModel,
    /// The projector (`multi_modal_projector.*`).
    pub multi_modal_projector: MultiModalProjector,
    /// The decoder (`language_model.model.*`, `language_model.lm_head`).
    pub language_model: LlamaForCausalLM,
    #[module(skip)]
    config: LlavaConfig,
    #[module(skip)]
    eos: Vec<i64>,
}

/// What LLaVA 1.5 and LLaVA-NeXT share: loading, prompt embedding with image features,
/// logits and generation. Each model says how its images become features.
pub trait VisionLanguageModel: Sized {
    /// The image input: `[images, 3, size, size]` pixels for LLaVA 1.5, pixels and sizes for
    /// LLaVA-NeXT.
    type Images;

    /// A randomly initialised model (the config is validated).
    fn new(config: &LlavaConfig, device: &Device) -> Result<Self>;

    /// The config.
    fn config(&self) -> &LlavaConfig;

    /// The language model.
    fn language_model(&self) -> &LlamaForCausalLM;

    /// The EOS ids generation stops at by default.
    fn eos_token_ids(&self) -> &[i64];

    /// Replaces the default EOS ids.
    fn with_eos_token_ids(self, eos: Vec<i64>) -> Self;

    /// The projected features of the images, all images' rows one after the other
    /// (`[tokens, text_hidden]`), and the number of images.
    fn image_features(&self, images: Self::Images) -> Result<(Tensor<2>, usize)>;

    /// Builds the model and loads `weights` strictly (published llava-hf names, or those
    /// `save_pretrained` of transformers 5 writes with or without `save_original_format`). Use [`Weights::with_dtype`] to keep half-precision weights.
    fn from_weights(config: &LlavaConfig, weights: Weights, device: &Device) -> Result<Self>
    where
        Self: Module,
    {
        let model = Self::new(config, device)?;
        Ok(published_names(weights, config.tied()).load_into(model)?)
    }

    /// Loads a snapshot folder or a repo id in the local Hugging Face cache (`config.json`,
    /// `model.safetensors` or its sharded index, `generation_config.json` for the EOS ids),
    /// with weights in float32.
    fn load(model: impl AsRef<str>, device: &Device) -> Result<Self>
    where
        Self: Module,
    {
        Self::load_with_dtype(model, DType::F32, device)
    }

    /// Like [`Self::load`], with the weights cast to `dtype` (`BF16`/`F16` keep a
    /// half-precision checkpoint in half precision; logits are still float32).
    fn load_with_dtype(model: impl AsRef<str>, dtype: DType, device: &Device) -> Result<Self>
    where
        Self: Module,
    {
        let dir = ModelDir::resolve(model)?;
        let config = LlavaConfig::from_file(dir.file("config.json")?)?;
        let weights = dir.weights()?.with_dtype(dtype);
        let eos = eos_token_ids(dir.path(), &config.text_config);
        Ok(Self::from_weights(&config, weights, device)?.with_eos_token_ids(eos))
    }

    /// The decoder input for a prompt: token embeddings with the image features in place of
    /// the image tokens (their count must equal the number of feature rows).
    fn inputs_embeds(
        &self,
        input_ids: Tensor<2, Int>,
        images: Option<Self::Images>,
    ) -> Result<Tensor<3>> {
        let (features, n_images) = match images {
            Some(images) => {
                let (f, n) = self.image_features(images)?;
                (Some(f), n)
            }
            None => (None, 0),
        };
        merge_image_features(
            self.language_model(),
            input_ids,
            self.config().image_token_index,
            features,
            n_images,
        )
    }

    /// Logits `[batch, seq, vocab]` of every prompt position (float32). `attention_mask`
    /// (`[batch, seq]`, 1 = token) marks left padding.
    fn forward(
        &self,
        input_ids: Tensor<2, Int>,
        images: Option<Self::Images>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<3>> {
        let mask = attention_mask.as_ref().map(mask_rows).transpose()?;
        let embeds = self.inputs_embeds(input_ids, images)?;
        let lm = self.language_model();
        let hidden = lm
            .model
            .forward_embeds(embeds, mask.as_deref(), &mut KvCache::new())?;
        Ok(lm.logits(hidden))
    }

    /// Generates a continuation of each prompt row (prefill once, then one token at a time).
    /// The EOS ids default to the model's (see [`Self::eos_token_ids`]).
    fn generate(
        &self,
        input_ids: Tensor<2, Int>,
        images: Option<Self::Images>,
        attention_mask: Option<Tensor<2, Int>>,
        config: &GenerationConfig,
        streamer: Option<&mut Streamer<'_>>,
    ) -> Result<Generation> {
        let _compute = mm_core::precision::Autocast::enter(config.compute_dtype);
        let mask = attention_mask.as_ref().map(mask_rows).transpose()?;
        let prompt = id_rows(&input_ids)?;
        let embeds = self.inputs_embeds(input_ids, images)?;
        generate_from_embeds(
            self.language_model(),
            embeds,
            prompt,
            mask,
            &config.with_default_eos(self.eos_token_ids()),
            streamer,
        )
    }
}

impl VisionLanguageModel for LlavaForConditionalGeneration {
    /// Normalised `[images, 3, size, size]` pixels.
    type Images = Tensor<4>;

    fn new(config: &LlavaConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            vision_tower: ClipVisionModel::new(&config.vision_config, device)?,
            multi_modal_projector: MultiModalProjector::new(config, device),
            language_model: LlamaForCausalLM::new(&config.text_config, config.tied(), device),
            config: config.clone(),
            eos: default_eos(config),
        })
    }

    fn config(&self) -> &LlavaConfig {
        &self.config
    }

    fn language_model(&self) -> &LlamaForCausalLM {
        &self.language_model
    }

    fn eos_token_ids(&self) -> &[i64] {
        &self.eos
    }

    fn with_eos_token_ids(mut self, eos: Vec<i64>) -> Self {
        self.eos = eos;
        self
    }

    fn image_features(&self, pixel_values: Tensor<4>) -> Result<(Tensor<2>, usize)> {
        let features = self.image_features_per_image(pixel_values)?;
        let [n, t, d] = features.dims();
        Ok((features.reshape([n * t, d]), n))
    }
}

impl LlavaForConditionalGeneration {
    /// Projected image features `[images, tokens, text_hidden]` of normalised
    /// `[images, 3, size, size]` pixels.
    pub fn image_features_per_image(&self, pixel_values: Tensor<4>) -> Result<Tensor<3>> {
        let dtype = self.language_model.model.dtype();
        let out = self.vision_tower.forward(pixel_values.cast(dtype))?;
        let selected = select_features(&out, &self.config)?;
        Ok(self.multi_modal_projector.forward(selected))
    }
}

/// The text config's EOS ids (a snapshot's `generation_config.json` overrides them on load).
pub(crate) fn default_eos(config: &LlavaConfig) -> Vec<i64> {
    config
        .text_config
        .eos_token_id
        .as_ref()
        .map(|e| e.to_vec())
        .unwrap_or_default()
}

/// The tensor names of the three LLaVA / LLaVA-NeXT checkpoint layouts, mapped to the
/// published llava-hf ones (the first matching prefix wins, see [`Weights::rename_prefixes`]):
///
/// - published llava-hf checkpoints: `language_model.model.*`, `language_model.lm_head.*`,
///   `vision_tower.vision_model.*`, `multi_modal_projector.*`, `image_newline` (kept);
/// - `save_pretrained` of transformers 5.24 with its default `save_original_format=True`: the
///   same, except that the CLIP tower has no `vision_model` level (`vision_tower.embeddings.*`);
/// - `save_pretrained(save_original_format=False)` (the 5.x module names):
///   `model.language_model.*`, `model.vision_tower.*` (no `vision_model` level either),
///   `model.multi_modal_projector.*`, `model.image_newline`, `lm_head.*`.
const PUBLISHED_NAMES: [(&str, &str); 7] = [
    ("vision_tower.vision_model.", "vision_tower.vision_model."),
    ("vision_tower.", "vision_tower.vision_model."),
    ("model.language_model.", "language_model.model."),
    (
        "model.vision_tower.vision_model.",
        "vision_tower.vision_model.",
    ),
    ("model.vision_tower.", "vision_tower.vision_model."),
    ("model.", ""),
    ("lm_head.", "language_model.lm_head."),
];

/// Maps every layout's names to the published ones ([`PUBLISHED_NAMES`]), drops
/// `position_ids` buffers and, when tied, a stored `lm_head`.
pub(crate) fn published_names(weights: Weights, tied: bool) -> Weights {
    weights.rename_prefixes(&PUBLISHED_NAMES).rename(|name| {
        let dropped =
            name.ends_with("position_ids") || (tied && name.starts_with("language_model.lm_head."));
        (!dropped).then(|| name.to_string())
    })
}

/// The hidden state(s) `vision_feature_layer` names, concatenated along the features, without
/// the class token under the `default` strategy.
pub(crate) fn select_features(out: &TowerOutput, config: &LlavaConfig) -> Result<Tensor<3>> {
    let layers = config.vision_feature_layer.to_vec();
    let mut states = Vec::with_capacity(layers.len());
    for index in layers {
        let h = out.hidden_state(index).ok_or_else(|| {
            Error::Config(format!(
                "vision_feature_layer {index} is outside the tower's {} hidden states",
                out.hidden_states.len()
            ))
        })?;
        states.push(match config.vision_feature_select_strategy {
            SelectStrategy::Default => {
                let n = h.dims()[1];
                h.narrow(1, 1, n - 1)
            }
            SelectStrategy::Full => h,
        });
    }
    Ok(Tensor::cat(states, 2))
}

/// Rows of `[batch, seq]` ids.
pub(crate) fn id_rows(input_ids: &Tensor<2, Int>) -> Result<Vec<Vec<i64>>> {
    let [b, s] = input_ids.dims();
    let flat = read_ids(input_ids)?;
    Ok((0..b).map(|i| flat[i * s..(i + 1) * s].to_vec()).collect())
}

/// Embeds the prompt and puts `features` (`[tokens, hidden]`, the images' features in order)
/// where the prompt has `image_token` (row-major order), as transformers' `masked_scatter`.
/// The number of image tokens must equal the number of feature rows.
pub(crate) fn merge_image_features(
    lm: &LlamaForCausalLM,
    input_ids: Tensor<2, Int>,
    image_token: i64,
    features: Option<Tensor<2>>,
    images: usize,
) -> Result<Tensor<3>> {
    let [b, s] = input_ids.dims();
    if s == 0 {
        return Err(Error::EmptyPrompt);
    }
    let device = input_ids.device();
    let ids = read_ids(&input_ids)?;
    let is_image: Vec<bool> = ids.iter().map(|&t| t == image_token).collect();
    let tokens = is_image.iter().filter(|&&m| m).count();
    let n_features = features.as_ref().map_or(0, |f| f.dims()[0]);
    if tokens != n_features {
        return Err(Error::ImageTokens {
            tokens,
            images,
            features: n_features,
        });
    }
    let Some(features) = features.filter(|_| tokens > 0) else {
        return lm.model.embed(input_ids);
    };
    // Placeholder ids may lie outside the text vocabulary: embed id 0 there instead.
    let text_ids: Vec<i64> = ids
        .iter()
        .zip(&is_image)
        .map(|(&t, &m)| if m { 0 } else { t })
        .collect();
    let embeds = lm.model.embed(Tensor::from_data(
        TensorData::new(text_ids, [b, s]),
        &device,
    ))?;
    let d = embeds.dims()[2];
    let mut next_feature = b * s;
    let index: Vec<i64> = is_image
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            if m {
                next_feature += 1;
                (next_feature - 1) as i64
            } else {
                i as i64
            }
        })
        .collect();
    let table = Tensor::cat(
        vec![embeds.reshape([b * s, d]), features.cast(lm.model.dtype())],
        0,
    );
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * s]), &device);
    Ok(table.select(0, index).reshape([b, s, d]))
}
