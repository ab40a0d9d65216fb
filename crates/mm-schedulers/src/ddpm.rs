//! DDPM (Ho et al. 2020), diffusers `DDPMScheduler`.

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

/// `variance_type` of DDPM.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DdpmVarianceType {
    /// `fixed_small`: the posterior variance β̃_t.
    #[default]
    #[serde(rename = "fixed_small")]
    FixedSmall,
    /// `fixed_small_log`: β̃_t through log / exp (same values, other rounding).
    #[serde(rename = "fixed_small_log")]
    FixedSmallLog,
    /// `fixed_large`: β_t.
    #[serde(rename = "fixed_large")]
    FixedLarge,
    /// `fixed_large_log`: β_t. diffusers takes the square root of `log β_t`
    /// here and returns NaN; this crate uses the intended `sqrt(β_t)`.
    #[serde(rename = "fixed_large_log")]
    FixedLargeLog,
    /// `learned`: the model's second half of channels is the variance.
    #[serde(rename = "learned")]
    Learned,
    /// `learned_range`: the model's second half of channels interpolates
    /// between `log β̃_t` and `log β_t` (improved DDPM, UnCLIP, DeepFloyd IF).
    #[serde(rename = "learned_range")]
    LearnedRange,
}

/// Config of [`DdpmScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct DdpmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub variance_type: DdpmVarianceType,
    pub clip_sample: bool,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub clip_sample_range: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
}

impl Default for DdpmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            variance_type: DdpmVarianceType::FixedSmall,
            clip_sample: true,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            clip_sample_range: 1.0,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl_beta_config!(DdpmConfig);

impl SchedulerConfig for DdpmConfig {
    const CLASS_NAME: &'static str = "DDPMScheduler";
}

const NAME: &str = "DDPMScheduler";

/// DDPM: ancestral sampling of the original paper; stochastic, needs many
/// steps (≥ 100, 1000 for the original quality). Also the training scheduler.
#[derive(Clone, Debug)]
pub struct DdpmScheduler {
    config: DdpmConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    custom_timesteps: bool,
    begin_index: usize,
}

impl DdpmScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: DdpmConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported(NAME));
        }
        let schedule = NoiseSchedule::new(&config.beta_config())?;
        let timesteps = (0..config.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            config,
            schedule,
            timesteps,
            num_inference_steps: None,
            custom_timesteps: false,
            begin_index: 0,
        })
    }

    /// The config.
    pub fn config(&self) -> &DdpmConfig {
        &self.config
    }

    /// diffusers' `previous_timestep`.
    fn previous_timestep(&self, t: f64) -> i64 {
        if self.custom_timesteps || self.num_inference_steps.is_some() {
            match self.timesteps.iter().position(|&v| v == t) {
                Some(i) if i + 1 < self.timesteps.len() => self.timesteps[i + 1] as i64,
                _ => -1,
            }
        } else {
            t as i64 - 1
        }
    }
}

impl<const D: usize> Scheduler<D> for DdpmScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, false, false)?;
        let train = self.config.num_train_timesteps;
        if let Some(ts) = &request.timesteps {
            if ts.is_empty() {
                return Err(SchedulerError::ZeroSteps);
            }
            if ts.windows(2).any(|w| w[1] >= w[0]) {
                return Err(SchedulerError::InvalidSchedule(
                    "custom timesteps must be in descending order".into(),
                ));
            }
            if ts[0] >= train as f64 || ts[ts.len() - 1] < 0.0 {
                return Err(SchedulerError::InvalidSchedule(format!(
                    "custom timesteps must lie in [0, {train})"
                )));
            }
            self.timesteps = ts.iter().map(|t| t.trunc()).collect();
            self.custom_timesteps = true;
            self.num_inference_steps = None;
        } else {
            let n = request.count()?;
            check_steps(n, train)?;
            self.timesteps = spaced_timesteps(
                self.config.timestep_spacing,
                train,
                n,
                self.config.steps_offset,
                true,
            );
            self.custom_timesteps = false;
            self.num_inference_steps = Some(n);
        }
        self.begin_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
            .or(self.custom_timesteps.then_some(self.timesteps.len()))
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        t: f64,
        sample: Tensor<D>,
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let c = &self.config;
        let prev_t = self.previous_timestep(t);
        let channels = sample.dims().get(1).copied().unwrap_or(0);
        let learned = matches!(
            c.variance_type,
            DdpmVarianceType::Learned | DdpmVarianceType::LearnedRange
        );
        let (model_output, predicted_variance) =
            if learned && D >= 2 && model_output.dims()[1] == 2 * channels && channels > 0 {
                (
                    model_output.clone().narrow(1, 0, channels),
                    Some(model_output.narrow(1, channels, channels)),
                )
            } else {
                (model_output, None)
            };
        let a_t = self
            .schedule
            .alpha_prod(t as i64)
            .ok_or(SchedulerError::UnknownTimestep(t))? as f32;
        let a_prev = self.schedule.alpha_prod(prev_t).map_or(1.0, |a| a as f32);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let cur_alpha = a_t / a_prev;
        let cur_beta = 1.0 - cur_alpha;
        let (x0, _) = alpha_predict(c.prediction_type, model_output, sample.clone(), a_t, NAME)?;
        let x0 = X0Clip {
            thresholding: c.thresholding,
            dynamic_thresholding_ratio: c.dynamic_thresholding_ratio,
            sample_max_value: c.sample_max_value,
            clip_sample: c.clip_sample,
            clip_sample_range: c.clip_sample_range,
        }
        .apply(x0)?;
        let x0_coeff = a_prev.sqrt() * cur_beta / b_t;
        let cur_coeff = cur_alpha.sqrt() * b_prev / b_t;
        let mut prev = x0.clone() * x0_coeff + sample.clone() * cur_coeff;
        if t > 0.0 {
            let z = noise.noise(sample.dims(), &sample.device())?;
            let variance = (b_prev / b_t * cur_beta).max(1e-20);
            let term = match (c.variance_type, predicted_variance) {
                (DdpmVarianceType::FixedSmall, _) => z * variance.sqrt(),
                (DdpmVarianceType::FixedSmallLog, _) => z * (0.5 * variance.ln()).exp(),
                (DdpmVarianceType::FixedLarge | DdpmVarianceType::FixedLargeLog, _) => {
                    z * cur_beta.sqrt()
                }
                (DdpmVarianceType::Learned, Some(v)) => z * v.sqrt(),
                (DdpmVarianceType::LearnedRange, Some(v)) => {
                    let (min_log, max_log) = (variance.ln(), cur_beta.ln());
                    let frac = (v + 1.0) / 2.0;
                    let var = frac.clone() * max_log + (frac.neg() + 1.0) * min_log;
                    z * (var * 0.5).exp()
                }
                (_, None) => {
                    return Err(SchedulerError::Shape(format!(
                        "learned variance needs a model output with 2 × {channels} channels"
                    )));
                }
            };
            prev = prev + term;
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
