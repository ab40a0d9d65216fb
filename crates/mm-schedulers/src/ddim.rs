//! DDIM (Song et al. 2020), diffusers `DDIMScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing, X0Clip, alpha_add_noise,
    alpha_predict, check_steps, impl_beta_config, spaced_timesteps,
};
use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// Config of [`DdimScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct DdimConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub clip_sample: bool,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub rescale_betas_zero_snr: bool,
    /// `eta` of the DDIM paper (0 = deterministic DDIM, 1 = DDPM-like); a
    /// `step` argument in diffusers, a field here so the trait stays uniform.
    pub eta: f64,
    /// `use_clipped_model_output` step argument of diffusers.
    pub use_clipped_model_output: bool,
}

impl Default for DdimConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            clip_sample: true,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            rescale_betas_zero_snr: false,
            eta: 0.0,
            use_clipped_model_output: false,
        }
    }
}

impl SchedulerConfig for DdimConfig {
    const CLASS_NAME: &'static str = "DDIMScheduler";
}

impl_beta_config!(DdimConfig);

impl DdimConfig {
    fn clip(&self) -> X0Clip {
        X0Clip {
            thresholding: self.thresholding,
            dynamic_thresholding_ratio: self.dynamic_thresholding_ratio,
            sample_max_value: self.sample_max_value,
            clip_sample: self.clip_sample,
            clip_sample_range: self.clip_sample_range,
        }
    }
}

/// DDIM: deterministic with `eta = 0`, 20–50 steps.
#[derive(Clone, Debug)]
pub struct DdimScheduler {
    config: DdimConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    begin_index: usize,
}

impl DdimScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: DdimConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported("DDIMScheduler"));
        }
        let schedule = NoiseSchedule::new(&config.beta_config())?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let timesteps = (0..config.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            config,
            schedule,
            final_alpha_cumprod,
            timesteps,
            num_inference_steps: None,
            begin_index: 0,
        })
    }

    /// The config.
    pub fn config(&self) -> &DdimConfig {
        &self.config
    }

    fn alpha_prev(&self, prev_t: i64) -> f32 {
        self.schedule
            .alpha_prod(prev_t)
            .map(|a| a as f32)
            .unwrap_or(self.final_alpha_cumprod)
    }

    /// `σ_t²` of the DDIM paper (eq. 16) between `t` and `prev_t`.
    pub fn variance(&self, t: i64, prev_t: i64) -> Result<f32> {
        let a_t = self
            .schedule
            .alpha_prod(t)
            .ok_or(SchedulerError::UnknownTimestep(t as f64))? as f32;
        let a_prev = self.alpha_prev(prev_t);
        Ok((1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev))
    }
}

impl<const D: usize> Scheduler<D> for DdimScheduler {
    fn class_name(&self) -> &'static str {
        "DDIMScheduler"
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject("DDIMScheduler", false, false, false)?;
        let n = request.count()?;
        check_steps(n, self.config.num_train_timesteps)?;
        self.timesteps = spaced_timesteps(
            self.config.timestep_spacing,
            self.config.num_train_timesteps,
            n,
            self.config.steps_offset,
            true,
        );
        self.num_inference_steps = Some(n);
        self.begin_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        t: f64,
        sample: Tensor<D>,
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let n = self
            .num_inference_steps
            .ok_or(SchedulerError::NotInitialized("step"))?;
        let t = t as i64;
        let prev_t = t - (self.config.num_train_timesteps / n) as i64;
        let a_t = self
            .schedule
            .alpha_prod(t)
            .ok_or(SchedulerError::UnknownTimestep(t as f64))? as f32;
        let a_prev = self.alpha_prev(prev_t);
        let b_t = 1.0 - a_t;
        let (x0, mut eps) = alpha_predict(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            a_t,
            "DDIMScheduler",
        )?;
        let x0 = self.config.clip().apply(x0)?;
        let variance = (1.0 - a_prev) / (1.0 - a_t) * (1.0 - a_t / a_prev);
        let eta = self.config.eta as f32;
        let std_dev_t = eta * variance.sqrt();
        if self.config.use_clipped_model_output {
            eps = (sample.clone() - x0.clone() * a_t.sqrt()) / b_t.sqrt();
        }
        let direction = eps * (1.0 - a_prev - std_dev_t * std_dev_t).sqrt();
        let mut prev = x0.clone() * a_prev.sqrt() + direction;
        if eta > 0.0 {
            let z = noise.noise(sample.dims(), &sample.device())?;
            prev = prev + z * std_dev_t;
        }
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: Some(x0),
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        alpha_add_noise(&self.schedule, original, noise, t)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.begin_index = index;
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }
}
