//! The math shared by the contrastive image–text models: normalisation, similarity logits and
//! the training losses.

use burn::tensor::activation::{log_sigmoid, log_softmax};
use burn::tensor::{Int, Tensor};

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
