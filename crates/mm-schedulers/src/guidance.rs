//! Guidance: combining the model's predictions for several conditionings.
//!
//! Classifier-free guidance is the two-branch case
//! `uncond + s · (cond − uncond)`. The general form here is
//! `pred[base] + Σ_k s_k(step) · (pred[pos_k] − pred[neg_k])`, which also
//! covers image + text prompts (InstructPix2Pix-style
//! `uncond + s_img (img − uncond) + s_txt (full − img)`, IP-Adapter with a
//! separate image scale, …). Scales may vary per step, guidance rescale
//! (`rescale_noise_cfg`, Lin et al. 2023) is applied against the most
//! conditioned branch, and [`Guidance::none`] is the single-branch setup of
//! guidance-distilled models.

use burn::tensor::Tensor;

use crate::error::{Result, SchedulerError};

/// A guidance scale over the sampling loop.
#[derive(Clone, Debug, PartialEq)]
pub enum ScaleSchedule {
    /// The same scale at every step.
    Constant(f64),
    /// One scale per step (the last one repeats past the end).
    PerStep(Vec<f64>),
    /// Linear from `start` at the first step to `end` at the last.
    Linear {
        /// Scale at step 0.
        start: f64,
        /// Scale at the last step.
        end: f64,
    },
}

impl ScaleSchedule {
    /// The scale at `step` of `num_steps`.
    pub fn at(&self, step: usize, num_steps: usize) -> f64 {
        match self {
            Self::Constant(s) => *s,
            Self::PerStep(v) => v.get(step).or(v.last()).copied().unwrap_or(1.0),
            Self::Linear { start, end } => {
                if num_steps <= 1 {
                    *start
                } else {
                    start + (end - start) * step as f64 / (num_steps - 1) as f64
                }
            }
        }
    }
}

/// One guidance direction `s · (pred[positive] − pred[negative])`.
#[derive(Clone, Debug, PartialEq)]
pub struct GuidanceTerm {
    /// Index of the more conditioned prediction.
    pub positive: usize,
    /// Index of the less conditioned prediction.
    pub negative: usize,
    /// Its scale.
    pub scale: ScaleSchedule,
}

/// How predictions of several conditionings are combined into one.
#[derive(Clone, Debug, PartialEq)]
pub struct Guidance {
    /// Index of the prediction the terms are added to (the unconditional one).
    pub base: usize,
    /// Guidance directions.
    pub terms: Vec<GuidanceTerm>,
    /// Guidance rescale φ in `[0, 1]` (0 = off); SDXL / zero-SNR models use 0.7.
    pub rescale: f64,
}

impl Guidance {
    /// No guidance: one branch, passed through (distilled models, LCM, Flux-schnell).
    pub fn none() -> Self {
        Self {
            base: 0,
            terms: Vec::new(),
            rescale: 0.0,
        }
    }

    /// Classifier-free guidance with branches `[uncond, cond]`.
    pub fn cfg(scale: f64) -> Self {
        Self::cfg_schedule(ScaleSchedule::Constant(scale))
    }

    /// Classifier-free guidance with a per-step scale.
    pub fn cfg_schedule(scale: ScaleSchedule) -> Self {
        Self {
            base: 0,
            terms: vec![GuidanceTerm {
                positive: 1,
                negative: 0,
                scale,
            }],
            rescale: 0.0,
        }
    }

    /// Image + text guidance with branches `[uncond, image, image+text]`:
    /// `uncond + s_img (image − uncond) + s_txt (image+text − image)`.
    pub fn image_text(image_scale: ScaleSchedule, text_scale: ScaleSchedule) -> Self {
        Self {
            base: 0,
            terms: vec![
                GuidanceTerm {
                    positive: 1,
                    negative: 0,
                    scale: image_scale,
                },
                GuidanceTerm {
                    positive: 2,
                    negative: 1,
                    scale: text_scale,
                },
            ],
            rescale: 0.0,
        }
    }

    /// Sets guidance rescale φ.
    pub fn with_rescale(mut self, rescale: f64) -> Self {
        self.rescale = rescale;
        self
    }

    /// Number of predictions (model branches) this guidance needs.
    pub fn num_branches(&self) -> usize {
        self.terms
            .iter()
            .flat_map(|t| [t.positive, t.negative])
            .chain([self.base])
            .max()
            .map_or(1, |m| m + 1)
    }

    /// Whether the extra branches are needed at `step` (diffusers skips CFG
    /// for a scale ≤ 1): when false, run only the most conditioned branch
    /// and pass it to [`Guidance::combine`] alone.
    pub fn is_active(&self, step: usize, num_steps: usize) -> bool {
        match self.terms.as_slice() {
            [] => false,
            [t] => t.scale.at(step, num_steps) > 1.0,
            _ => true,
        }
    }

    /// The most conditioned branch: the reference of guidance rescale and
    /// the branch to run when guidance is inactive.
    pub fn main_branch(&self) -> usize {
        self.terms.last().map_or(self.base, |t| t.positive)
    }

    /// Combines `preds` (one tensor per branch, in branch order) at `step`
    /// of `num_steps`. A single prediction is returned as is.
    pub fn combine<const D: usize>(
        &self,
        preds: &[Tensor<D>],
        step: usize,
        num_steps: usize,
    ) -> Result<Tensor<D>> {
        if let [single] = preds {
            return Ok(single.clone());
        }
        let need = self.num_branches();
        if preds.len() != need {
            return Err(SchedulerError::Guidance(format!(
                "{need} predictions expected, got {}",
                preds.len()
            )));
        }
        if !(0.0..=1.0).contains(&self.rescale) {
            return Err(SchedulerError::Guidance(format!(
                "guidance rescale must be in [0, 1], got {}",
                self.rescale
            )));
        }
        let dims = preds[0].dims();
        if preds.iter().any(|p| p.dims() != dims) {
            return Err(SchedulerError::Shape(
                "guidance predictions differ in shape".into(),
            ));
        }
        let mut out = preds[self.base].clone();
        for t in &self.terms {
            let s = t.scale.at(step, num_steps) as f32;
            out = out + (preds[t.positive].clone() - preds[t.negative].clone()) * s;
        }
        if self.rescale > 0.0 {
            out = rescale_noise_cfg(out, preds[self.main_branch()].clone(), self.rescale)?;
        }
        Ok(out)
    }

    /// Like [`Guidance::combine`] for a batched prediction: the batch
    /// (dim 0) holds the branches one after another, as pipelines batch
    /// `[uncond; cond]` (diffusers' `noise_pred.chunk(2)`).
    pub fn combine_batched<const D: usize>(
        &self,
        batched: Tensor<D>,
        step: usize,
        num_steps: usize,
    ) -> Result<Tensor<D>> {
        let n = self.num_branches();
        let b = batched.dims().first().copied().unwrap_or(0);
        if n == 1 {
            return Ok(batched);
        }
        if b == 0 || b % n != 0 {
            return Err(SchedulerError::Guidance(format!(
                "batch {b} is not a multiple of {n} branches"
            )));
        }
        let preds: Vec<Tensor<D>> = (0..n)
            .map(|i| batched.clone().narrow(0, i * b / n, b / n))
            .collect();
        self.combine(&preds, step, num_steps)
    }
}

/// diffusers' `rescale_noise_cfg` (Lin et al. 2023, §3.4): rescales the
/// guided prediction to the per-sample standard deviation of the
/// conditional one and mixes with weight `guidance_rescale`.
pub fn rescale_noise_cfg<const D: usize>(
    noise_cfg: Tensor<D>,
    noise_pred_text: Tensor<D>,
    guidance_rescale: f64,
) -> Result<Tensor<D>> {
    let dims = noise_cfg.dims();
    if noise_pred_text.dims() != dims {
        return Err(SchedulerError::Shape(
            "rescale_noise_cfg: shapes differ".into(),
        ));
    }
    let b = dims.first().copied().unwrap_or(1);
    let per: usize = dims.iter().skip(1).product();
    if per < 2 {
        return Err(SchedulerError::Shape(
            "rescale_noise_cfg needs at least 2 values per sample".into(),
        ));
    }
    let std = |x: Tensor<D>| -> Tensor<2> {
        let flat: Tensor<2> = x.reshape([b, per]);
        let centered = flat.clone() - flat.mean_dim(1);
        (centered.square().sum_dim(1) / (per - 1) as f32).sqrt()
    };
    let ratio = std(noise_pred_text) / std(noise_cfg.clone());
    let mut shape = [1usize; D];
    shape[0] = b;
    let ratio: Tensor<D> = ratio.reshape(shape);
    let rescaled = noise_cfg.clone() * ratio;
    let phi = guidance_rescale as f32;
    Ok(rescaled * phi + noise_cfg * (1.0 - phi))
}
