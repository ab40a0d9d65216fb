//! The training loop: AdamW with decoupled weight decay and gradient-norm clipping, a
//! warm-up + cosine schedule, an optional EMA of the weights, checkpoints, progress and
//! cancellation.

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::store::ModuleSnapshot;
use burn::tensor::Tensor;

use crate::checkpoint::{self, stable_param_ids};
use crate::ema::Ema;
use crate::schedule::WarmupCosine;
use crate::{Error, Result};

/// The settings of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// The learning-rate schedule.
    pub schedule: WarmupCosine,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Gradients are scaled down to this global L2 norm when larger (`None`: no clipping).
    pub grad_clip: Option<f32>,
    /// The largest EMA decay (`None`: no EMA).
    pub ema_decay: Option<f64>,
    /// Where to write a checkpoint, and every how many steps (also at the end).
    pub checkpoint: Option<(PathBuf, usize)>,
}

impl TrainConfig {
    /// `steps` steps at `lr` (5 % warm-up, cosine to 0), weight decay 0.01, clipping at 1,
    /// no EMA, no checkpoints.
    pub fn new(steps: usize, lr: f64) -> Self {
        Self {
            steps,
            schedule: WarmupCosine::new(lr, (steps / 20).max(1), steps),
            weight_decay: 0.01,
            grad_clip: Some(1.0),
            ema_decay: None,
            checkpoint: None,
        }
    }

    /// With an EMA of the weights of largest decay `decay`.
    pub fn with_ema(mut self, decay: f64) -> Self {
        self.ema_decay = Some(decay);
        self
    }

    /// With checkpoints in `dir` every `every` steps and at the end.
    pub fn with_checkpoints(mut self, dir: impl Into<PathBuf>, every: usize) -> Self {
        self.checkpoint = Some((dir.into(), every.max(1)));
        self
    }

    /// The optimizer of this config.
    pub fn optimizer(&self) -> ModuleOptimizer {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay)
            .with_epsilon(1e-8)
            .with_grad_clipping(self.grad_clip.map(GradientClippingConfig::Norm))
            .init()
    }
}

/// What a step reports to the progress callback.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// The step just taken (from 0).
    pub step: usize,
    /// Of how many.
    pub steps: usize,
    /// Its loss.
    pub loss: f64,
    /// Its learning rate.
    pub lr: f64,
}

/// A trained model and the average of its weights.
#[derive(Debug, Clone)]
pub struct Trained<M> {
    /// The weights after the last step (on the training device).
    pub model: M,
    /// The EMA weights, when the config asks for them.
    pub ema: Option<Ema<M>>,
    /// Steps taken (fewer than asked when cancelled).
    pub steps: usize,
}

impl<M: Module> Trained<M> {
    /// The model to ship: the EMA weights when there are any, else the last ones; without
    /// autodiff.
    pub fn best(&self) -> M {
        match &self.ema {
            Some(ema) => ema.model().clone(),
            None => self.model.valid(),
        }
    }
}

/// Trains `model` (on an autodiff device) by minimising `loss(model, step)`; `progress` sees
/// every step and stops the run by returning `false`. With a checkpoint folder that already
/// holds a checkpoint, the run resumes from it. A non-finite loss stops the run with
/// [`Error::NonFinite`].
pub fn fit<M, L, P>(
    model: M,
    config: &TrainConfig,
    mut loss: L,
    mut progress: P,
) -> Result<Trained<M>>
where
    M: Module + ModuleSnapshot + Clone,
    L: FnMut(&M, usize) -> Result<Tensor<1>>,
    P: FnMut(StepReport) -> bool,
{
    let mut model = stable_param_ids(model);
    let mut optimizer = config.optimizer();
    let mut ema = config.ema_decay.map(|d| Ema::new(&model, d));
    let mut start = 0;
    if let Some((dir, _)) = &config.checkpoint
        && checkpoint::exists(dir)
    {
        let resumed = checkpoint::resume(dir, model, optimizer)?;
        model = resumed.model;
        optimizer = resumed.optimizer;
        start = resumed.state.step;
        if let (Some(decay), Some(weights)) = (config.ema_decay, resumed.ema) {
            ema = Some(Ema::resume(weights, decay, resumed.state.ema_updates));
        }
    }
    let mut steps = start;
    for step in start..config.steps {
        let value = loss(&model, step)?;
        let scalar = f64::from(value.clone().into_scalar::<f32>());
        if !scalar.is_finite() {
            return Err(Error::NonFinite { step, loss: scalar });
        }
        let grads = GradientsParams::from_grads(value.backward(), &model);
        let lr = config.schedule.lr(step);
        model = optimizer.step(lr, model, grads);
        if let Some(ema) = &mut ema {
            ema.update(&model);
        }
        steps = step + 1;
        if let Some((dir, every)) = &config.checkpoint
            && (steps % every == 0 || steps == config.steps)
        {
            checkpoint::save(dir, &model, &optimizer, ema.as_ref(), steps)?;
        }
        let report = StepReport {
            step,
            steps: config.steps,
            loss: scalar,
            lr,
        };
        if !progress(report) {
            break;
        }
    }
    Ok(Trained { model, ema, steps })
}
