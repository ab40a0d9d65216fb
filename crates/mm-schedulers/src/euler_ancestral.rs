//! Euler ancestral (k-diffusion `sample_euler_ancestral`), diffusers
//! `EulerAncestralDiscreteScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, NoiseSchedule, PredictionType, StepIndex, TimestepSpacing,
    impl_beta_config, sigma_pair, sigma_x0,
};
use crate::config::SchedulerConfig;
use crate::error::Result;
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};
use crate::sigmas::{
    InterpolationType, SigmaScheduleSpec, SigmaSpacing, discrete_sigma_schedule, k_add_noise,
    k_init_noise_sigma, k_scale_model_input,
};

/// Config of [`EulerAncestralScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct EulerAncestralConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
}

impl Default for EulerAncestralConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
        }
    }
}

impl_beta_config!(EulerAncestralConfig);

impl SchedulerConfig for EulerAncestralConfig {
    const CLASS_NAME: &'static str = "EulerAncestralDiscreteScheduler";
}

const NAME: &str = "EulerAncestralDiscreteScheduler";

/// Euler ancestral: stochastic (fresh noise every step), 20–50 steps; the
/// SDXL default ("Euler a").
#[derive(Clone, Debug)]
pub struct EulerAncestralScheduler {
    config: EulerAncestralConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerAncestralScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: EulerAncestralConfig) -> Result<Self> {
        if !matches!(
            config.prediction_type,
            PredictionType::Epsilon | PredictionType::VPrediction
        ) {
            return Err(config.prediction_type.unsupported(NAME));
        }
        let mut schedule = NoiseSchedule::new(&config.beta_config())?;
        if config.rescale_betas_zero_snr {
            schedule.fix_zero_snr_terminal();
        }
        let mut sigmas: Vec<f32> = schedule.sigmas().into_iter().rev().collect();
        sigmas.push(0.0);
        let timesteps = (0..config.num_train_timesteps)
            .rev()
            .map(|t| t as f64)
            .collect();
        Ok(Self {
            config,
            schedule,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &EulerAncestralConfig {
        &self.config
    }
}

impl<const D: usize> Scheduler<D> for EulerAncestralScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, false, false, false)?;
        let spec = SigmaScheduleSpec {
            spacing: self.config.timestep_spacing,
            steps_offset: self.config.steps_offset,
            interpolation: InterpolationType::Linear,
            conversion: SigmaSpacing::default(),
            final_sigmas_type: FinalSigmasType::Zero,
            allow_custom_sigmas: false,
        };
        let (timesteps, sigmas) = discrete_sigma_schedule(&self.schedule, &spec, request, NAME)?;
        self.num_inference_steps = Some(timesteps.len());
        self.timesteps = timesteps;
        self.sigmas = sigmas;
        self.index.reset();
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn sigmas(&self) -> Option<&[f32]> {
        Some(&self.sigmas)
    }

    fn num_inference_steps(&self) -> Option<usize> {
        self.num_inference_steps
    }

    fn init_noise_sigma(&self) -> f64 {
        k_init_noise_sigma(&self.sigmas, self.config.timestep_spacing)
    }

    fn scale_model_input(&mut self, sample: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        k_scale_model_input(&mut self.index, &self.timesteps, &self.sigmas, sample, t)
    }

    fn step(
        &mut self,
        model_output: Tensor<D>,
        t: f64,
        sample: Tensor<D>,
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let i = self.index.get(&self.timesteps, t)?;
        let (sigma_from, sigma_to) = sigma_pair(&self.sigmas, i)?;
        let x0 = sigma_x0(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            sigma_from,
            sigma_from,
            NAME,
        )?;
        let (f2, t2) = (sigma_from * sigma_from, sigma_to * sigma_to);
        let sigma_up = (t2 * (f2 - t2) / f2).sqrt();
        let sigma_down = (t2 - sigma_up * sigma_up).sqrt();
        let derivative = (sample.clone() - x0.clone()) / sigma_from;
        let prev = sample.clone() + derivative * (sigma_down - sigma_from);
        let z = noise.noise(sample.dims(), &sample.device())?;
        let prev = prev + z * sigma_up;
        self.index.advance();
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: Some(x0),
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        k_add_noise(
            &self.index,
            &self.timesteps,
            &self.sigmas,
            original,
            noise,
            t,
        )
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
