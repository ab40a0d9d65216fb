//! Latent Consistency Model multistep sampling (Luo et al. 2023), diffusers `LCMScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, NoiseSchedule, PredictionType, StepIndex, TimestepSpacing, X0Clip,
    alpha_add_noise, alpha_predict, impl_beta_config, np_linspace,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// Config of [`LcmScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct LcmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub original_inference_steps: usize,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub set_alpha_to_one: bool,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_scaling: f64,
    pub rescale_betas_zero_snr: bool,
}

impl Default for LcmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            trained_betas: None,
            original_inference_steps: 50,
            clip_sample: false,
            clip_sample_range: 1.0,
            set_alpha_to_one: true,
            steps_offset: 0,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            timestep_spacing: TimestepSpacing::Leading,
            timestep_scaling: 10.0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl_beta_config!(LcmConfig);

impl SchedulerConfig for LcmConfig {
    const CLASS_NAME: &'static str = "LCMScheduler";
}

const NAME: &str = "LCMScheduler";

/// LCM: for consistency-distilled models (LCM, LCM-LoRA); 2–8 steps,
/// stochastic (fresh noise between steps), guidance baked in.
#[derive(Clone, Debug)]
pub struct LcmScheduler {
    config: LcmConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl LcmScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: LcmConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported(NAME));
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
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &LcmConfig {
        &self.config
    }

    /// `(c_skip, c_out)` of the consistency-model boundary condition at `t`.
    pub fn boundary_scalings(&self, t: f64) -> (f64, f64) {
        let sigma_data = 0.5f64;
        let st = t * self.config.timestep_scaling;
        let c_skip = sigma_data * sigma_data / (st * st + sigma_data * sigma_data);
        let c_out = st / (st * st + sigma_data * sigma_data).sqrt();
        (c_skip, c_out)
    }

    fn alpha(&self, t: i64) -> f32 {
        self.schedule
            .alpha_prod(t)
            .map_or(self.final_alpha_cumprod, |a| a as f32)
    }
}

impl<const D: usize> Scheduler<D> for LcmScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, false, false)?;
        let train = self.config.num_train_timesteps;
        let strength = request.strength.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&strength) {
            return Err(SchedulerError::InvalidStrength(strength));
        }
        let original = request
            .original_inference_steps
            .unwrap_or(self.config.original_inference_steps);
        if original > train || original == 0 {
            return Err(invalid(format!(
                "original_inference_steps ({original}) must be in 1..={train}"
            )));
        }
        let k = train / original;
        let origin: Vec<i64> = (1..=(original as f64 * strength) as i64)
            .map(|i| i * k as i64 - 1)
            .collect();
        let timesteps: Vec<f64> = match (&request.timesteps, request.num_inference_steps) {
            (Some(_), Some(_)) => {
                return Err(SchedulerError::InvalidSchedule(
                    "pass either steps or custom timesteps".into(),
                ));
            }
            (Some(ts), None) => {
                if ts.is_empty() {
                    return Err(SchedulerError::ZeroSteps);
                }
                if ts.windows(2).any(|w| w[1] >= w[0]) {
                    return Err(SchedulerError::InvalidSchedule(
                        "custom timesteps must be in descending order".into(),
                    ));
                }
                if ts[0] >= train as f64 {
                    return Err(SchedulerError::InvalidSchedule(format!(
                        "timesteps must start below {train}"
                    )));
                }
                let n = ts.len();
                let init = ((n as f64 * strength) as usize).min(n);
                ts[n - init..].iter().map(|t| t.trunc()).collect()
            }
            (None, n) => {
                let n = n.ok_or(SchedulerError::ZeroSteps)?;
                crate::common::check_steps(n, train)?;
                if n > original {
                    return Err(SchedulerError::InvalidSchedule(format!(
                        "num_inference_steps ({n}) cannot exceed original_inference_steps ({original})"
                    )));
                }
                let skipping = origin.len() / n;
                if skipping < 1 {
                    return Err(SchedulerError::InvalidSchedule(format!(
                        "{n} steps need a strength of at least {}",
                        n as f64 / original as f64
                    )));
                }
                let rev: Vec<i64> = origin.iter().rev().copied().collect();
                let len = rev.len();
                let mut idx = np_linspace(0.0, len as f64, n + 1);
                idx.truncate(n);
                idx.iter()
                    .map(|&i| rev[(i.floor() as usize).min(len - 1)] as f64)
                    .collect()
            }
        };
        self.num_inference_steps = Some(
            request
                .num_inference_steps
                .unwrap_or(request.timesteps.as_ref().map_or(timesteps.len(), Vec::len)),
        );
        self.timesteps = timesteps;
        self.index.reset();
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
        let i = self.index.get(&self.timesteps, t)?;
        let prev_t = self.timesteps.get(i + 1).copied().unwrap_or(t);
        let a_t = self.alpha(t as i64);
        let a_prev = self.alpha(prev_t as i64);
        let (c_skip, c_out) = self.boundary_scalings(t);
        let c = &self.config;
        let (x0, _) = alpha_predict(c.prediction_type, model_output, sample.clone(), a_t, NAME)?;
        let x0 = X0Clip {
            thresholding: c.thresholding,
            dynamic_thresholding_ratio: c.dynamic_thresholding_ratio,
            sample_max_value: c.sample_max_value,
            clip_sample: c.clip_sample,
            clip_sample_range: c.clip_sample_range,
        }
        .apply(x0)?;
        let denoised = x0 * (c_out as f32) + sample.clone() * (c_skip as f32);
        let prev = if i + 1 != n {
            let z = noise.noise(sample.dims(), &sample.device())?;
            denoised.clone() * a_prev.sqrt() + z * (1.0 - a_prev).sqrt()
        } else {
            denoised.clone()
        };
        self.index.advance();
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: Some(denoised),
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        alpha_add_noise(&self.schedule, original, noise, t)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
