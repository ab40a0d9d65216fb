//! Measuring the zoo on the held-out split: CLIP's zero-shot accuracy on colour, shape and
//! position, the autoencoder's PSNR, and how often generated pictures show what their prompt
//! says — judged by the exact [analyser](crate::analysis) and by the CLIP.

use burn::tensor::{Device, Tensor};
use image::RgbImage;
use mm_core::image::images_to_tensor;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, StableDiffusion};
use mm_diffusion::vae::AutoencoderKL;
use mm_vision::clip::ClipModel;
use mm_vision::contrastive::l2_normalize;

use crate::Result;
use crate::analysis::analyse;
use crate::data::{Batcher, clip_normalize};
use crate::shapes::{Color, Object, Position, Sample, ShapeKind, Split, article};

/// Accuracy (0 to 1) per attribute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AttributeScores {
    /// Colour.
    pub color: f64,
    /// Shape.
    pub shape: f64,
    /// Position.
    pub position: f64,
}

impl AttributeScores {
    fn add(&mut self, hits: [bool; 3]) {
        self.color += f64::from(u8::from(hits[0]));
        self.shape += f64::from(u8::from(hits[1]));
        self.position += f64::from(u8::from(hits[2]));
    }

    fn scaled(self, n: usize) -> Self {
        let n = n.max(1) as f64;
        Self {
            color: self.color / n,
            shape: self.shape / n,
            position: self.position / n,
        }
    }
}

/// The canonical caption of one object: "a red circle on the left".
pub fn describe(color: Color, shape: ShapeKind, position: Position) -> String {
    format!(
        "{} {} {}",
        article(color.name()),
        shape.name(),
        position.phrase()
    )
}

/// The first `n` one-object samples of `split` (from sample 0 on).
pub fn single_object_samples(batcher: &Batcher, split: Split, n: usize) -> Vec<Sample> {
    (0..)
        .map(|i| batcher.world().sample(split, i))
        .filter(|s| s.objects.len() == 1)
        .take(n)
        .collect()
}

/// Whether the [analyser](crate::analysis::analyse) finds `object`'s colour, shape and
/// position in `image`.
pub fn analyser_hits(image: &RgbImage, object: &Object) -> [bool; 3] {
    let a = analyse(image);
    [
        a.color == Some(object.color),
        a.shape == Some(object.shape),
        a.position == Some(object.position),
    ]
}

/// The analyser's accuracy on `images`, each judged against its object.
pub fn analyser_scores(images: &[RgbImage], objects: &[Object]) -> AttributeScores {
    let mut scores = AttributeScores::default();
    for (image, object) in images.iter().zip(objects) {
        scores.add(analyser_hits(image, object));
    }
    scores.scaled(images.len())
}

/// CLIP's zero-shot accuracy on `images` (each showing `objects[i]`): per attribute, the image
/// is scored against the canonical captions that vary that attribute alone, and is right when
/// the true caption scores highest.
pub fn clip_scores(
    clip: &ClipModel,
    batcher: &Batcher,
    images: &[RgbImage],
    objects: &[Object],
    device: &Device,
) -> Result<AttributeScores> {
    let image_embeds = image_embeddings(clip, images, device)?;
    clip_attribute_scores(clip, batcher, image_embeds, objects, device)
}

/// The CLIP's normalised embeddings of `images`, `[n, projection_dim]`.
fn image_embeddings(clip: &ClipModel, images: &[RgbImage], device: &Device) -> Result<Tensor<2>> {
    let pixels = clip_normalize(images_to_tensor(images, device)?);
    Ok(l2_normalize(clip.image_features(pixels)?))
}

/// [`clip_scores`] from the images' normalised embeddings.
fn clip_attribute_scores(
    clip: &ClipModel,
    batcher: &Batcher,
    image_embeds: Tensor<2>,
    objects: &[Object],
    device: &Device,
) -> Result<AttributeScores> {
    let mut scores = AttributeScores::default();
    for (i, o) in objects.iter().enumerate() {
        let colors: Vec<String> = Color::ALL
            .iter()
            .map(|&c| describe(c, o.shape, o.position))
            .collect();
        let shapes: Vec<String> = ShapeKind::ALL
            .iter()
            .map(|&s| describe(o.color, s, o.position))
            .collect();
        let positions: Vec<String> = Position::ALL
            .iter()
            .map(|&p| describe(o.color, o.shape, p))
            .collect();
        let image = image_embeds.clone().narrow(0, i, 1);
        let truth = [
            Color::ALL.iter().position(|&c| c == o.color),
            ShapeKind::ALL.iter().position(|&s| s == o.shape),
            Position::ALL.iter().position(|&p| p == o.position),
        ];
        let mut hits = [false; 3];
        for (k, texts) in [colors, shapes, positions].iter().enumerate() {
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let text = l2_normalize(clip.text_features(batcher.ids(&refs, device)?, None)?);
            let scores = image.clone().matmul(text.transpose());
            let best = argmax(scores)?;
            hits[k] = Some(best) == truth[k];
        }
        scores.add(hits);
    }
    Ok(scores.scaled(objects.len()))
}

fn argmax(scores: Tensor<2>) -> Result<usize> {
    let values = scores
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| crate::Error::InvalidConfig(format!("{e:?}")))?;
    Ok(values
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i))
}

/// CLIP's zero-shot accuracy on the first `n` one-object samples of `split`.
pub fn clip_zero_shot(
    clip: &ClipModel,
    batcher: &Batcher,
    split: Split,
    n: usize,
    device: &Device,
) -> Result<AttributeScores> {
    let samples = single_object_samples(batcher, split, n);
    let images: Vec<RgbImage> = samples.iter().map(|s| s.image.clone()).collect();
    let objects: Vec<Object> = samples.iter().map(|s| s.objects[0]).collect();
    clip_scores(clip, batcher, &images, &objects, device)
}

/// The autoencoder's reconstruction PSNR (dB, images in `[0, 1]`) over samples
/// `0 .. n` of `split`, through the posterior mean.
pub fn vae_psnr(
    vae: &AutoencoderKL,
    batcher: &Batcher,
    split: Split,
    n: usize,
    device: &Device,
) -> Result<f64> {
    let batch = batcher.batch(split, 0, n, device)?;
    let reconstruction = vae.decode(vae.encode(batch.signed_images())?.mean)?;
    let reconstruction = ((reconstruction + 1.0) * 0.5).clamp(0.0, 1.0);
    Ok(psnr(reconstruction, batch.images))
}

/// The PSNR (dB) of `a` against `b`, both in `[0, 1]`.
pub fn psnr(a: Tensor<4>, b: Tensor<4>) -> f64 {
    let mse = f64::from((a - b).powi_scalar(2).mean().into_scalar::<f32>());
    10.0 * (1.0 / mse.max(1e-12)).log10()
}

/// How well text-to-image pictures follow their prompts at one guidance scale, and how much
/// they vary between seeds.
#[derive(Debug, Clone)]
pub struct GuidanceReport {
    /// The guidance scale.
    pub guidance: f64,
    /// The analyser's per-attribute accuracy over every picture.
    pub analyser: AttributeScores,
    /// The fraction of pictures with colour, shape and position all right (analyser).
    pub all_right: f64,
    /// The zoo CLIP's zero-shot per-attribute accuracy over every picture.
    pub clip: AttributeScores,
    /// The mean cosine similarity of each picture's CLIP embedding with its prompt's.
    pub clip_score: f64,
    /// Diversity: the mean RMS pixel distance (`[0, 1]` values) between the pictures of one
    /// prompt from different seeds, averaged over prompts.
    pub diversity: f64,
    /// The pictures, `[prompt][seed]`.
    pub images: Vec<Vec<RgbImage>>,
}

/// Generates one picture per prompt and seed at guidance `guidance` with `steps` steps (the
/// pipeline's scheduler), from the canonical caption of each sample's object, and measures
/// them ([`GuidanceReport`]).
pub fn guidance_report(
    pipeline: &StableDiffusion,
    clip: &ClipModel,
    batcher: &Batcher,
    samples: &[Sample],
    seeds: &[u64],
    guidance: f64,
    steps: usize,
) -> Result<GuidanceReport> {
    let device = pipeline.device().clone();
    let (mut images, mut flat, mut objects, mut prompts) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for sample in samples {
        let o = sample.objects[0];
        let prompt = describe(o.color, o.shape, o.position);
        let mut row = Vec::new();
        for &seed in seeds {
            let opts = GenerateOptions::new(&prompt)
                .guidance_scale(guidance)
                .steps(steps)
                .seed(seed);
            let image = pipeline
                .text_to_image(&opts, Hooks::new())?
                .images
                .remove(0);
            flat.push(image.clone());
            objects.push(o);
            prompts.push(prompt.clone());
            row.push(image);
        }
        images.push(row);
    }
    let hits: Vec<[bool; 3]> = flat
        .iter()
        .zip(&objects)
        .map(|(image, object)| analyser_hits(image, object))
        .collect();
    let mut analyser = AttributeScores::default();
    hits.iter().for_each(|&h| analyser.add(h));
    let all = hits.iter().filter(|h| h.iter().all(|&x| x)).count();
    let image_embeds = image_embeddings(clip, &flat, &device)?;
    let clip_attributes =
        clip_attribute_scores(clip, batcher, image_embeds.clone(), &objects, &device)?;
    let refs: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let text_embeds = l2_normalize(clip.text_features(batcher.ids(&refs, &device)?, None)?);
    let clip_score = f64::from(
        (image_embeds * text_embeds)
            .sum_dim(1)
            .mean()
            .into_scalar::<f32>(),
    );
    Ok(GuidanceReport {
        guidance,
        analyser: analyser.scaled(flat.len()),
        all_right: all as f64 / flat.len().max(1) as f64,
        clip: clip_attributes,
        clip_score,
        diversity: diversity(&images),
        images,
    })
}

/// The mean RMS distance between pictures of the same row, averaged over rows.
fn diversity(rows: &[Vec<RgbImage>]) -> f64 {
    let rms = |a: &RgbImage, b: &RgbImage| {
        let sum: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| ((f64::from(*x) - f64::from(*y)) / 255.0).powi(2))
            .sum();
        (sum / a.as_raw().len().max(1) as f64).sqrt()
    };
    let mut per_row = Vec::new();
    for row in rows {
        let mut d = Vec::new();
        for i in 0..row.len() {
            for j in i + 1..row.len() {
                d.push(rms(&row[i], &row[j]));
            }
        }
        if !d.is_empty() {
            per_row.push(d.iter().sum::<f64>() / d.len() as f64);
        }
    }
    per_row.iter().sum::<f64>() / per_row.len().max(1) as f64
}
