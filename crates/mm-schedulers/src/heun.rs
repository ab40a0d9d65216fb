//! Heun (Karras et al. 2022, Algorithm 1), diffusers `HeunDiscreteScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, NoiseSchedule, PredictionType, StepIndex, TimestepSpacing,
    impl_beta_config, sigma_pair, sigma_x0,
};
use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};
use crate::sigmas::{
    InterpolationType, SigmaScheduleSpec, SigmaSpacing, discrete_sigma_schedule, k_add_noise,
    k_init_noise_sigma, k_scale_model_input,
};

/// Config of [`HeunScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct HeunConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub prediction_type: PredictionType,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl Default for HeunConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            prediction_type: PredictionType::Epsilon,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            clip_sample: false,
            clip_sample_range: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
        }
    }
}

impl_beta_config!(HeunConfig, |_: &HeunConfig| false);

impl SchedulerConfig for HeunConfig {
    const CLASS_NAME: &'static str = "HeunDiscreteScheduler";
}

const NAME: &str = "HeunDiscreteScheduler";

/// First-order half of a Heun step, kept for the correction.
#[derive(Clone, Debug)]
struct FirstOrder<const D: usize> {
    derivative: Tensor<D>,
    dt: f32,
    sample: Tensor<D>,
}

/// Heun: deterministic second-order (two model calls per step: `order() == 2`),
/// good quality in 10–30 steps.
#[derive(Clone, Debug)]
pub struct HeunScheduler<const D: usize> {
    config: HeunConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
    first: Option<FirstOrder<D>>,
}

impl<const D: usize> HeunScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: HeunConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported(NAME));
        }
        let schedule = NoiseSchedule::new(&config.beta_config())?;
        let spec = Self::spec(&config);
        spec.conversion.check()?;
        let mut s = Self {
            config,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            index: StepIndex::default(),
            first: None,
        };
        let n = s.config.num_train_timesteps;
        Scheduler::<D>::set_timesteps(&mut s, n)?;
        s.num_inference_steps = None;
        Ok(s)
    }

    fn spec(c: &HeunConfig) -> SigmaScheduleSpec {
        SigmaScheduleSpec {
            spacing: c.timestep_spacing,
            steps_offset: c.steps_offset,
            interpolation: InterpolationType::Linear,
            conversion: SigmaSpacing {
                use_karras_sigmas: c.use_karras_sigmas,
                use_exponential_sigmas: c.use_exponential_sigmas,
                use_beta_sigmas: c.use_beta_sigmas,
                sigma_min: None,
                sigma_max: None,
            },
            final_sigmas_type: FinalSigmasType::Zero,
            allow_custom_sigmas: false,
        }
    }

    /// The config.
    pub fn config(&self) -> &HeunConfig {
        &self.config
    }
}

impl<const D: usize> Scheduler<D> for HeunScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, false, false)?;
        let (t, s) =
            discrete_sigma_schedule(&self.schedule, &Self::spec(&self.config), request, NAME)?;
        let (first_t, first_s) = match (t.first(), s.first()) {
            (Some(&a), Some(&b)) => (a, b),
            _ => return Err(SchedulerError::ZeroSteps),
        };
        self.sigmas = std::iter::once(first_s)
            .chain(s[1..s.len() - 1].iter().flat_map(|&v| [v, v]))
            .chain(std::iter::once(s[s.len() - 1]))
            .collect();
        self.timesteps = std::iter::once(first_t)
            .chain(t[1..].iter().flat_map(|&v| [v, v]))
            .collect();
        self.num_inference_steps = Some(t.len());
        self.first = None;
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
        _noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let i = self.index.get(&self.timesteps, t)?;
        let first_order = self.first.is_none();
        let (sigma, sigma_next) = if first_order {
            sigma_pair(&self.sigmas, i)?
        } else {
            sigma_pair(
                &self.sigmas,
                i.checked_sub(1).ok_or(SchedulerError::ZeroSteps)?,
            )?
        };
        let sigma_hat = sigma;
        let sigma_input = if first_order { sigma_hat } else { sigma_next };
        let c = &self.config;
        let mut x0 = sigma_x0(
            c.prediction_type,
            model_output,
            sample.clone(),
            sigma_input,
            sigma_input,
            NAME,
        )?;
        if c.clip_sample {
            let r = c.clip_sample_range as f32;
            x0 = x0.clamp(-r, r);
        }
        let prev = match self.first.take() {
            None => {
                let derivative = (sample.clone() - x0.clone()) / sigma_hat;
                let dt = sigma_next - sigma_hat;
                self.first = Some(FirstOrder {
                    derivative: derivative.clone(),
                    dt,
                    sample: sample.clone(),
                });
                sample + derivative * dt
            }
            Some(f) => {
                let derivative = (sample - x0.clone()) / sigma_next;
                let derivative = (f.derivative + derivative) / 2.0;
                f.sample + derivative * f.dt
            }
        };
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

    fn order(&self) -> usize {
        2
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
