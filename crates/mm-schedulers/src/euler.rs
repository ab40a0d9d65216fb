//! Euler (Karras et al. 2022, Algorithm 2), diffusers `EulerDiscreteScheduler`.

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

/// `timestep_type` of Euler: what the model receives as its time input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepType {
    /// Discrete training timesteps.
    #[default]
    #[serde(rename = "discrete")]
    Discrete,
    /// `0.25 · ln σ` (with `v_prediction`, e.g. Playground / EDM-style models).
    #[serde(rename = "continuous")]
    Continuous,
}

/// Config of [`EulerScheduler`] (diffusers defaults), with the `step`
/// arguments of diffusers (`s_churn`, …) as fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct EulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub interpolation_type: InterpolationType,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub timestep_spacing: TimestepSpacing,
    pub timestep_type: TimestepType,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    pub final_sigmas_type: FinalSigmasType,
    /// Stochasticity ("churn") of Karras et al.; 0 = deterministic.
    pub s_churn: f64,
    /// Churn only for sigmas in `[s_tmin, s_tmax]`.
    pub s_tmin: f64,
    /// Churn only for sigmas in `[s_tmin, s_tmax]` (`null` = infinity).
    pub s_tmax: f64,
    /// Scale of the churn noise.
    pub s_noise: f64,
}

impl Default for EulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            interpolation_type: InterpolationType::Linear,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_spacing: TimestepSpacing::Linspace,
            timestep_type: TimestepType::Discrete,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            final_sigmas_type: FinalSigmasType::Zero,
            s_churn: 0.0,
            s_tmin: 0.0,
            s_tmax: f64::INFINITY,
            s_noise: 1.0,
        }
    }
}

impl_beta_config!(EulerConfig);

impl SchedulerConfig for EulerConfig {
    const CLASS_NAME: &'static str = "EulerDiscreteScheduler";
}

/// Euler: deterministic first-order ODE sampler in σ space, 20–50 steps.
#[derive(Clone, Debug)]
pub struct EulerScheduler {
    config: EulerConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl EulerScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: EulerConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported("EulerDiscreteScheduler"));
        }
        let mut schedule = NoiseSchedule::new(&config.beta_config())?;
        if config.rescale_betas_zero_snr {
            schedule.fix_zero_snr_terminal();
        }
        let spec = Self::spec(&config);
        spec.conversion.check()?;
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

    fn spec(c: &EulerConfig) -> SigmaScheduleSpec {
        SigmaScheduleSpec {
            spacing: c.timestep_spacing,
            steps_offset: c.steps_offset,
            interpolation: c.interpolation_type,
            conversion: SigmaSpacing {
                use_karras_sigmas: c.use_karras_sigmas,
                use_exponential_sigmas: c.use_exponential_sigmas,
                use_beta_sigmas: c.use_beta_sigmas,
                sigma_min: c.sigma_min,
                sigma_max: c.sigma_max,
            },
            final_sigmas_type: c.final_sigmas_type,
            allow_custom_sigmas: true,
        }
    }

    /// The config.
    pub fn config(&self) -> &EulerConfig {
        &self.config
    }

    fn continuous_v(&self) -> bool {
        self.config.timestep_type == TimestepType::Continuous
            && self.config.prediction_type == PredictionType::VPrediction
    }
}

impl<const D: usize> Scheduler<D> for EulerScheduler {
    fn class_name(&self) -> &'static str {
        "EulerDiscreteScheduler"
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject("EulerDiscreteScheduler", true, true, false)?;
        let (mut timesteps, sigmas) = discrete_sigma_schedule(
            &self.schedule,
            &Self::spec(&self.config),
            request,
            "EulerDiscreteScheduler",
        )?;
        if self.continuous_v() {
            timesteps = sigmas[..sigmas.len() - 1]
                .iter()
                .map(|s| (0.25 * s.ln()) as f64)
                .collect();
        }
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
        let (sigma, sigma_next) = sigma_pair(&self.sigmas, i)?;
        let c = &self.config;
        let s = sigma as f64;
        let gamma = if c.s_tmin <= s && s <= c.s_tmax {
            (c.s_churn / (self.sigmas.len() - 1) as f64).min(2f64.sqrt() - 1.0)
        } else {
            0.0
        };
        let sigma_hat = sigma * (gamma as f32 + 1.0);
        let mut sample = sample;
        if gamma > 0.0 {
            let eps = noise.noise(sample.dims(), &sample.device())? * (c.s_noise as f32);
            sample = sample + eps * (sigma_hat * sigma_hat - sigma * sigma).sqrt();
        }
        let x0 = sigma_x0(
            c.prediction_type,
            model_output,
            sample.clone(),
            sigma_hat,
            sigma,
            "EulerDiscreteScheduler",
        )?;
        let derivative = (sample.clone() - x0.clone()) / sigma_hat;
        let prev = sample + derivative * (sigma_next - sigma_hat);
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
