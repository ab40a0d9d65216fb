//! The math shared by the contrastive image–text models: normalisation, similarity logits and
//! the training losses.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Int, Tensor};

use crate::output::TowerOutput;

/// L2-normalises the rows of `[n, d]` (as `x / x.norm(dim=-1, keepdim=True)`).
pub fn l2_normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt();
    x / norm
}

/// CLIP's symmetric InfoNCE loss on `logits_per_text` `[n, n]` (matching pairs on the
/// diagonal): the mean of the text→image and image→text cross-entropies.
pub fn clip_loss(logits_per_text: Tensor<2>) -> Tensor<1> {
    let caption = diagonal_cross_entropy(logits_per_text.clone());
    let image = diagonal_cross_entropy(logits_per_text.transpose());
    (caption + image) / 2.0
}

/// Cross-entropy of each row against the target `row index`, averaged.
fn diagonal_cross_entropy(logits: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits.dims();
    let targets = Tensor::<1, Int>::arange(0..n as i64, &logits.device()).reshape([n, 1]);
    let log_probs = log_softmax(logits, 1);
    log_probs.gather(1, targets).mean().neg()
}

/// SigLIP's pairwise sigmoid loss on `logits_per_text` `[n, n]`: label +1 on the diagonal,
/// −1 elsewhere; `−Σ log σ(label · logit)` summed over images, averaged over texts.
pub fn siglip_loss(logits_per_text: Tensor<2>) -> Tensor<1> {
    let [n, _] = logits_per_text.dims();
    let device = logits_per_text.device();
    let labels = Tensor::<2>::eye(n, &device) * 2.0 - 1.0;
    let per_text = log_sigmoid(labels * logits_per_text).sum_dim(1);
    per_text.mean().neg()
}

/// How a contrastive model turns similarity logits into probabilities, and which loss trains it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scoring {
    /// Softmax over the candidates and the InfoNCE loss (CLIP).
    Softmax,
    /// An independent sigmoid per pair and the sigmoid loss (SigLIP).
    Sigmoid,
}

/// Everything the forward pass of a contrastive image–text model computes.
#[derive(Debug, Clone)]
pub struct ContrastiveOutput {
    /// Similarity logits `[images, texts]`.
    pub logits_per_image: Tensor<2>,
    /// Similarity logits `[texts, images]`.
    pub logits_per_text: Tensor<2>,
    /// L2-normalised text embeddings `[texts, dim]`.
    pub text_embeds: Tensor<2>,
    /// L2-normalised image embeddings `[images, dim]`.
    pub image_embeds: Tensor<2>,
    /// The text tower's outputs.
    pub text_output: TowerOutput,
    /// The vision tower's outputs.
    pub vision_output: TowerOutput,
    /// Which loss the model was trained with.
    pub scoring: Scoring,
}

impl ContrastiveOutput {
    /// Normalises the projected embeddings and scores them with `similarity`
    /// (`[texts, images]`).
    pub(crate) fn new(
        text_output: TowerOutput,
        vision_output: TowerOutput,
        (text_features, image_features): (Tensor<2>, Tensor<2>),
        similarity: impl Fn(Tensor<2>, Tensor<2>) -> Tensor<2>,
        scoring: Scoring,
    ) -> Self {
        let text_embeds = l2_normalize(text_features);
        let image_embeds = l2_normalize(image_features);
        let logits_per_text = similarity(text_embeds.clone(), image_embeds.clone());
        Self {
            logits_per_image: logits_per_text.clone().transpose(),
            logits_per_text,
            text_embeds,
            image_embeds,
            text_output,
            vision_output,
            scoring,
        }
    }

    /// The training loss on a batch of matching pairs (`return_loss=True` in transformers):
    /// [`clip_loss`] or [`siglip_loss`]. Needs as many texts as images, pair `i` matching.
    pub fn loss(&self) -> Tensor<1> {
        match self.scoring {
            Scoring::Softmax => clip_loss(self.logits_per_text.clone()),
            Scoring::Sigmoid => siglip_loss(self.logits_per_text.clone()),
        }
    }
}
