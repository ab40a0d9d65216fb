//! The [`Scheduler`] trait.

use burn::tensor::Tensor;

use crate::common::img2img_begin_index;
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;

/// The arguments of diffusers' `set_timesteps`: a step count, or custom
/// timesteps, or custom sigmas, plus the options some schedulers take.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TimestepRequest {
    /// `num_inference_steps`.
    pub num_inference_steps: Option<usize>,
    /// Custom descending timesteps (DDPM, Euler, DPM-Solver, LCM, flow matching).
    pub timesteps: Option<Vec<f64>>,
    /// Custom sigmas (Euler: including the final sigma; flow matching: without it).
    pub sigmas: Option<Vec<f64>>,
    /// `mu` of dynamic shifting (SD3 / Flux resolution-dependent shift).
    pub mu: Option<f64>,
    /// LCM's `strength` argument of `set_timesteps` (img2img on the LCM schedule).
    pub strength: Option<f64>,
    /// LCM's `original_inference_steps` override.
    pub original_inference_steps: Option<usize>,
}

impl TimestepRequest {
    /// `n` inference steps.
    pub fn steps(n: usize) -> Self {
        Self {
            num_inference_steps: Some(n),
            ..Self::default()
        }
    }

    /// Custom timesteps.
    pub fn timesteps(t: Vec<f64>) -> Self {
        Self {
            timesteps: Some(t),
            ..Self::default()
        }
    }

    /// Custom sigmas.
    pub fn sigmas(s: Vec<f64>) -> Self {
        Self {
            sigmas: Some(s),
            ..Self::default()
        }
    }

    /// Sets `mu`.
    pub fn with_mu(mut self, mu: f64) -> Self {
        self.mu = Some(mu);
        self
    }

    /// Errors for the fields a scheduler does not take.
    pub(crate) fn reject(
        &self,
        name: &'static str,
        timesteps: bool,
        sigmas: bool,
        mu: bool,
    ) -> Result<()> {
        let bad = [
            (self.timesteps.is_some() && !timesteps, "custom timesteps"),
            (self.sigmas.is_some() && !sigmas, "custom sigmas"),
            (self.mu.is_some() && !mu, "mu"),
            (
                self.strength.is_some() && name != "LCMScheduler",
                "strength (use set_strength)",
            ),
            (
                self.original_inference_steps.is_some() && name != "LCMScheduler",
                "original_inference_steps",
            ),
        ];
        match bad.iter().find(|(b, _)| *b) {
            Some((_, what)) => Err(SchedulerError::Unsupported(format!("{name}: {what}"))),
            None => Ok(()),
        }
    }

    /// The step count when neither timesteps nor sigmas are given.
    pub(crate) fn count(&self) -> Result<usize> {
        self.num_inference_steps.ok_or(SchedulerError::ZeroSteps)
    }
}

/// Result of one scheduler step.
#[derive(Clone, Debug)]
pub struct StepOutput<const D: usize> {
    /// The sample at the next (less noisy) timestep.
    pub prev_sample: Tensor<D>,
    /// The scheduler's estimate of the clean sample, where it computes one
    /// (LCM: the `denoised` output).
    pub pred_original_sample: Option<Tensor<D>>,
}

/// A diffusion sampler, usable for any tensor rank `D` (images `[B,C,H,W]`,
/// token latents `[B,L,C]`, …). Object safe: pipelines hold a
/// `Box<dyn Scheduler<D>>` and users swap it in one line.
///
/// Loop:
/// ```ignore
/// sched.set_timesteps(steps)?;
/// let mut x = noise * sched.init_noise_sigma();
/// for &t in sched.timesteps().to_vec()[sched.begin_index()..].iter() {
///     let inp = sched.scale_model_input(x.clone(), t)?;
///     let out = model(inp, t);
///     x = sched.step(out, t, x, &mut rng)?.prev_sample;
/// }
/// ```
pub trait Scheduler<const D: usize> {
    /// The diffusers class this scheduler matches (e.g. `"DDIMScheduler"`).
    fn class_name(&self) -> &'static str;

    /// Sets the schedule from a request mirroring diffusers' `set_timesteps`
    /// keyword arguments. Resets the multistep state and the begin index.
    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()>;

    /// Sets `n` inference steps.
    fn set_timesteps(&mut self, n: usize) -> Result<()> {
        self.set_timesteps_with(&TimestepRequest::steps(n))
    }

    /// The timesteps to loop over (model time), after `set_timesteps`.
    fn timesteps(&self) -> &[f64];

    /// Sigmas of the current schedule, for sigma-space schedulers.
    fn sigmas(&self) -> Option<&[f32]> {
        None
    }

    /// Number of inference steps set (model evaluations may be more: see `order`).
    fn num_inference_steps(&self) -> Option<usize>;

    /// Standard deviation of the initial noise.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Scales the sample before it enters the model (identity for most).
    fn scale_model_input(&mut self, sample: Tensor<D>, _t: f64) -> Result<Tensor<D>> {
        Ok(sample)
    }

    /// One step from `sample` at timestep `t` given the model's output.
    /// Stochastic schedulers draw noise from `noise`.
    fn step(
        &mut self,
        model_output: Tensor<D>,
        t: f64,
        sample: Tensor<D>,
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>>;

    /// Noises a clean sample to timestep `t` (forward process).
    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>>;

    /// Model evaluations per timestep of the schedule (`order` in diffusers,
    /// 2 for Heun). img2img slices `timesteps()` with `begin * order`.
    fn order(&self) -> usize {
        1
    }

    /// Starts the loop at `timesteps()[index]` (img2img / inpainting).
    fn set_begin_index(&mut self, _index: usize) {}

    /// The index the loop starts at (0 unless set).
    fn begin_index(&self) -> usize {
        0
    }

    /// img2img: keeps the last `strength` fraction of the schedule, sets the
    /// begin index and returns it (`timesteps()[index..]` is the loop).
    fn set_strength(&mut self, strength: f64) -> Result<usize> {
        let n = self
            .num_inference_steps()
            .ok_or(SchedulerError::NotInitialized("set_strength"))?;
        let begin = img2img_begin_index(n, self.order(), strength)?;
        self.set_begin_index(begin);
        Ok(begin)
    }
}
