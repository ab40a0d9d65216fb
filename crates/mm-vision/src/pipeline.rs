//! Ready-to-use image–text pipelines: a model with its tokenizer and image processor, for
//! embeddings (search, retrieval) and zero-shot classification.
//!
//! **Transparent images**: the CLIP and SigLIP image processors of transformers 5.24 have
//! `do_convert_rgb` set and composite an image with alpha onto white. Load images with
//! [`mm_core::image::load_image_on_white`] to get the pixels (and embeddings) of
//! `processor(images=Image.open(p))`; [`mm_core::image::load_image`] drops the alpha channel
//! instead.
//!
//! ```no_run
//! # fn main() -> mm_vision::Result<()> {
//! use mm_vision::pipeline::ClipPipeline;
//! let device = mm_core::device::cpu();
//! let clip = ClipPipeline::load("openai/clip-vit-base-patch32", &device)?;
//! let image = mm_core::image::load_image_on_white("cat.png")?;
//! for (label, p) in clip.zero_shot(&image, &["cat", "dog", "car"])? {
//!     println!("{label}: {p:.3}");
//! }
//! # Ok(()) }
//! ```

use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::{Device, Int, Tensor};
use image::RgbImage;
use mm_core::hub::ModelDir;
use mm_core::processor::{ImageProcessor, ImageProcessorConfig, find_image_processor_config};
use mm_core::tokenizer::{Padding, Tokenizer};

use crate::clip::ClipModel;
pub use crate::contrastive::Scoring;
use crate::contrastive::l2_normalize;
use crate::output::read_scores;
use crate::siglip::SiglipModel;
use crate::{Error, Pretrained, Result};

/// What a pipeline needs from an image–text model.
pub trait ImageTextModel: Pretrained {
    /// How logits become probabilities.
    const SCORING: Scoring;
    /// How texts are padded (SigLIP was trained on texts padded to the maximum length).
    const PADDING: Padding;
    /// Whether the attention mask is given to the text tower.
    const USE_ATTENTION_MASK: bool;
    /// The image processor to use when the snapshot has no image processor config.
    fn default_processor() -> ImageProcessorConfig;
    /// Unnormalised text embeddings `[batch, dim]`.
    fn text_features(
        &self,
        input_ids: Tensor<2, Int>,
        attention_mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>>;
    /// Unnormalised image embeddings `[batch, dim]`.
    fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>>;
    /// Similarity logits `[texts, images]` of normalised embeddings.
    fn similarity(&self, text_embeds: Tensor<2>, image_embeds: Tensor<2>) -> Tensor<2>;
    /// The longest token sequence the text tower takes.
    fn max_text_length(&self) -> usize;
}

impl ImageTextModel for ClipModel {
    const SCORING: Scoring = Scoring::Softmax;
    const PADDING: Padding = Padding::Longest;
    const USE_ATTENTION_MASK: bool = true;
    fn default_processor() -> ImageProcessorConfig {
        ImageProcessorConfig::clip()
    }
    fn text_features(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>> {
        ClipModel::text_features(self, ids, mask)
    }
    fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        ClipModel::image_features(self, pixel_values)
    }
    fn similarity(&self, text: Tensor<2>, image: Tensor<2>) -> Tensor<2> {
        ClipModel::similarity(self, text, image)
    }
    fn max_text_length(&self) -> usize {
        self.text_model.max_positions()
    }
}

impl ImageTextModel for SiglipModel {
    const SCORING: Scoring = Scoring::Sigmoid;
    const PADDING: Padding = Padding::MaxLength;
    const USE_ATTENTION_MASK: bool = false;
    fn default_processor() -> ImageProcessorConfig {
        ImageProcessorConfig::siglip()
    }
    fn text_features(
        &self,
        ids: Tensor<2, Int>,
        mask: Option<Tensor<2, Int>>,
    ) -> Result<Tensor<2>> {
        SiglipModel::text_features(self, ids, mask)
    }
    fn image_features(&self, pixel_values: Tensor<4>) -> Result<Tensor<2>> {
        SiglipModel::image_features(self, pixel_values)
    }
    fn similarity(&self, text: Tensor<2>, image: Tensor<2>) -> Tensor<2> {
        SiglipModel::similarity(self, text, image)
    }
    fn max_text_length(&self) -> usize {
        self.text_model.max_positions()
    }
}

/// A model with its tokenizer and image processor.
#[derive(Debug)]
pub struct ImageTextPipeline<M> {
    model: M,
    tokenizer: Tokenizer,
    processor: ImageProcessor,
    template: String,
    device: Device,
}

/// CLIP with its tokenizer and processor.
pub type ClipPipeline = ImageTextPipeline<ClipModel>;
/// SigLIP with its tokenizer and processor.
pub type SiglipPipeline = ImageTextPipeline<SiglipModel>;

impl<M: ImageTextModel> ImageTextPipeline<M> {
    /// Loads a snapshot folder or cached repo id: `config.json`, the weights, `tokenizer.json`
    /// (or CLIP's `vocab.json` + `merges.txt`) and the image processor config:
    /// `processor_config.json`'s `"image_processor"` (what `processor.save_pretrained` of
    /// transformers 5 writes), else `preprocessor_config.json`, else the model's default
    /// processor (see [`mm_core::processor::find_image_processor_config`]).
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let dir = ModelDir::resolve(model)?;
        let model = M::load_dir(&dir, device)?;
        let tokenizer = match dir.file("tokenizer.json") {
            Ok(path) => Tokenizer::from_file(path)?,
            Err(missing) => match (dir.file("vocab.json"), dir.file("merges.txt")) {
                (Ok(vocab), Ok(merges)) => Tokenizer::from_vocab_merges(vocab, merges)?,
                _ => return Err(missing.into()),
            },
        };
        let processor = ImageProcessor::new(match find_image_processor_config(dir.path())? {
            Some(json) => json.parse()?,
            None => M::default_processor(),
        })?;
        Self::new(model, tokenizer, processor, device)
    }

    /// Assembles a pipeline from parts; the tokenizer is set to pad and truncate as the model
    /// needs.
    pub fn new(
        model: M,
        tokenizer: Tokenizer,
        processor: ImageProcessor,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = tokenizer
            .with_padding(M::PADDING)
            .with_max_length(model.max_text_length())?;
        Ok(Self {
            model,
            tokenizer,
            processor,
            template: "This is a photo of {}.".into(),
            device: device.clone(),
        })
    }

    /// The prompt template for zero-shot labels, `{}` standing for the label (default
    /// `"This is a photo of {}."`, as transformers' zero-shot pipeline).
    pub fn with_template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The image processor.
    pub fn processor(&self) -> &ImageProcessor {
        &self.processor
    }

    /// L2-normalised embeddings of `texts`, `[texts, dim]`.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Tensor<2>> {
        if texts.is_empty() {
            return Err(Error::InvalidInput("no texts to embed".into()));
        }
        let (ids, mask) = self
            .tokenizer
            .encode_batch(texts)?
            .to_tensors(&self.device)?;
        let mask = M::USE_ATTENTION_MASK.then_some(mask);
        Ok(l2_normalize(self.model.text_features(ids, mask)?))
    }

    /// L2-normalised embeddings of `images`, `[images, dim]`.
    pub fn embed_images(&self, images: &[RgbImage]) -> Result<Tensor<2>> {
        let pixels = self.processor.preprocess(images, &self.device)?;
        Ok(l2_normalize(self.model.image_features(pixels)?))
    }

    /// Probabilities `[images, texts]` that each image matches each text (softmax across the
    /// texts for CLIP, independent sigmoids for SigLIP).
    pub fn scores(&self, images: &[RgbImage], texts: &[&str]) -> Result<Tensor<2>> {
        let text = self.embed_texts(texts)?;
        let image = self.embed_images(images)?;
        let logits_per_image = self.model.similarity(text, image).transpose();
        Ok(match M::SCORING {
            Scoring::Softmax => softmax(logits_per_image, 1),
            Scoring::Sigmoid => sigmoid(logits_per_image),
        })
    }

    /// Zero-shot classification of one image: each label (put into the template) with its
    /// probability, best first.
    pub fn zero_shot(&self, image: &RgbImage, labels: &[&str]) -> Result<Vec<(String, f32)>> {
        if labels.is_empty() {
            return Err(Error::NoLabels);
        }
        let prompts: Vec<String> = labels
            .iter()
            .map(|l| self.template.replace("{}", l))
            .collect();
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let scores = self.scores(std::slice::from_ref(image), &prompts)?;
        let probs = read_scores(scores)?;
        let mut ranked: Vec<(String, f32)> =
            labels.iter().map(|l| l.to_string()).zip(probs).collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked)
    }
}
