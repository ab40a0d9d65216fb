//! The embedding side of a catalogue: texts and images to vectors of one shared space.

use burn::tensor::{Device, Tensor};
use image::RgbImage;
use mm_core::hub::ModelDir;
use mm_vision::clip::ClipModel;
use mm_vision::pipeline::{ImageTextModel, ImageTextPipeline};
use mm_vision::siglip::SiglipModel;

use crate::error::{Error, Result};

/// What a catalogue needs from a model: texts and images embedded into one space (CLIP,
/// SigLIP), one vector of width [`dim`](Embedder::dim) per input. The vectors need not be
/// normalised: the stores compare them by cosine.
///
/// Implemented by [`PipelineEmbedder`] ([`ClipEmbedder`], [`SiglipEmbedder`]) over
/// `mm-vision`'s pipelines; implement it for any other model (or a test double):
///
/// ```
/// use mm_retrieval::{Embedder, Result};
/// struct Constant;
/// impl Embedder for Constant {
///     fn model_id(&self) -> &str { "constant" }
///     fn dim(&self) -> usize { 2 }
///     fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
///         Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
///     }
///     fn embed_images(&self, images: &[image::RgbImage]) -> Result<Vec<Vec<f32>>> {
///         Ok(images.iter().map(|_| vec![0.0, 1.0]).collect())
///     }
/// }
/// assert_eq!(Constant.embed_texts(&["a"])?.len(), 1);
/// # Ok::<(), mm_retrieval::Error>(())
/// ```
pub trait Embedder {
    /// A name of the model, recorded in the catalogue (`openai/clip-vit-base-patch32`).
    fn model_id(&self) -> &str;
    /// The width of the vectors.
    fn dim(&self) -> usize;
    /// One vector per text.
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
    /// One vector per image.
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>>;
}

impl<E: Embedder + ?Sized> Embedder for Box<E> {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_texts(texts)
    }
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_images(images)
    }
}

impl<E: Embedder + ?Sized> Embedder for &E {
    fn model_id(&self) -> &str {
        (**self).model_id()
    }
    fn dim(&self) -> usize {
        (**self).dim()
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_texts(texts)
    }
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        (**self).embed_images(images)
    }
}

/// An `mm-vision` image–text pipeline (CLIP or SigLIP) as an [`Embedder`]: L2-normalised
/// embeddings, batched as given.
///
/// ```no_run
/// use mm_retrieval::{ClipEmbedder, Embedder};
/// let device = mm_core::device::cpu();
/// let clip = ClipEmbedder::load("openai/clip-vit-base-patch32", &device)?;
/// assert_eq!(clip.dim(), 512);
/// # Ok::<(), mm_retrieval::Error>(())
/// ```
#[derive(Debug)]
pub struct PipelineEmbedder<M> {
    pipeline: ImageTextPipeline<M>,
    model_id: String,
    dim: usize,
}

/// CLIP as an [`Embedder`].
pub type ClipEmbedder = PipelineEmbedder<ClipModel>;
/// SigLIP as an [`Embedder`].
pub type SiglipEmbedder = PipelineEmbedder<SiglipModel>;

impl<M: ImageTextModel> PipelineEmbedder<M> {
    /// Loads a snapshot folder or a cached repo id (see [`ImageTextPipeline::load`]).
    pub fn load(model: impl AsRef<str>, device: &Device) -> Result<Self> {
        let model = model.as_ref();
        Self::new(ImageTextPipeline::load(model, device)?, model)
    }

    /// Wraps a pipeline; `model_id` names it in the catalogue. The width is read from one
    /// probe embedding.
    pub fn new(pipeline: ImageTextPipeline<M>, model_id: impl Into<String>) -> Result<Self> {
        let model_id = model_id.into();
        let probe = pipeline.embed_texts(&["a"])?;
        let [_, dim] = probe.dims();
        Ok(Self {
            pipeline,
            model_id,
            dim,
        })
    }

    /// The pipeline.
    pub fn pipeline(&self) -> &ImageTextPipeline<M> {
        &self.pipeline
    }
}

impl<M: ImageTextModel> Embedder for PipelineEmbedder<M> {
    fn model_id(&self) -> &str {
        &self.model_id
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            &self.model_id,
            self.pipeline.embed_texts(texts)?,
            texts.len(),
        )
    }
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        rows(
            &self.model_id,
            self.pipeline.embed_images(images)?,
            images.len(),
        )
    }
}

/// Loads CLIP or SigLIP, whichever `config.json`'s `model_type` names, as a boxed
/// [`Embedder`].
///
/// ```no_run
/// let device = mm_core::device::cpu();
/// let embedder = mm_retrieval::embedder::load_image_text("google/siglip-base-patch16-224", &device)?;
/// # Ok::<(), mm_retrieval::Error>(())
/// ```
pub fn load_image_text(model: impl AsRef<str>, device: &Device) -> Result<Box<dyn Embedder>> {
    let model = model.as_ref();
    let dir = ModelDir::resolve(model)?;
    let config = dir.file("config.json")?;
    let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::Core(mm_core::Error::Config {
            path: config.clone(),
            source: e,
        })
    })?;
    match json.get("model_type").and_then(|v| v.as_str()) {
        Some("siglip") => Ok(Box::new(SiglipEmbedder::load(model, device)?)),
        Some("clip") => Ok(Box::new(ClipEmbedder::load(model, device)?)),
        other => Err(Error::InvalidInput(format!(
            "{model} is not a CLIP or SigLIP model (config.json model_type {other:?})"
        ))),
    }
}

fn rows(model: &str, tensor: Tensor<2>, expected: usize) -> Result<Vec<Vec<f32>>> {
    let [n, dim] = tensor.dims();
    let values: Vec<f32> = tensor
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Embedding {
            model: model.into(),
            reason: format!("{e:?}"),
        })?;
    let out: Vec<Vec<f32>> = values.chunks(dim.max(1)).map(<[f32]>::to_vec).collect();
    check_vectors(model, &out, expected, dim)?;
    debug_assert_eq!(n, out.len());
    Ok(out)
}

/// Checks an embedder's output: `expected` vectors of width `dim`, all finite.
pub(crate) fn check_vectors(
    model: &str,
    vectors: &[Vec<f32>],
    expected: usize,
    dim: usize,
) -> Result<()> {
    let fail = |reason: String| {
        Err(Error::Embedding {
            model: model.into(),
            reason,
        })
    };
    if vectors.len() != expected {
        return fail(format!("{} vectors for {expected} inputs", vectors.len()));
    }
    for v in vectors {
        if v.len() != dim {
            return fail(format!("a vector of width {} instead of {dim}", v.len()));
        }
        if v.iter().any(|x| !x.is_finite()) {
            return fail("a vector holds NaN or infinite values".into());
        }
    }
    Ok(())
}
