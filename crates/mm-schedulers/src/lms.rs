//! Linear multistep (k-diffusion `sample_lms`), diffusers `LMSDiscreteScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, NoiseSchedule, PredictionType, StepIndex, TimestepSpacing,
    impl_beta_config, sigma_pair, sigma_x0,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::Result;
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};
use crate::sigmas::{
    InterpolationType, SigmaScheduleSpec, SigmaSpacing, discrete_sigma_schedule, k_add_noise,
    k_init_noise_sigma, k_scale_model_input,
};

/// Config of [`LmsScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct LmsConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    /// Number of past derivatives used (diffusers' `step(order=4)` argument).
    pub lms_order: usize,
}

impl Default for LmsConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            lms_order: 4,
        }
    }
}

impl_beta_config!(LmsConfig, |_: &LmsConfig| false);

impl SchedulerConfig for LmsConfig {
    const CLASS_NAME: &'static str = "LMSDiscreteScheduler";
}

const NAME: &str = "LMSDiscreteScheduler";

/// LMS: deterministic linear multistep in σ space (order 4 by default), 20–50 steps.
#[derive(Clone, Debug)]
pub struct LmsScheduler<const D: usize> {
    config: LmsConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
    derivatives: Vec<Tensor<D>>,
}

/// ∫ of the Lagrange basis polynomial `current` over the nodes
/// `sigmas[t], sigmas[t-1], …` from `sigmas[t]` to `sigmas[t+1]`
/// (diffusers' `get_lms_coefficient`; Gauss–Legendre, exact for these degrees).
fn lms_coefficient(sigmas: &[f32], order: usize, t: usize, current: usize) -> f64 {
    const X: [f64; 4] = [
        -0.861_136_311_594_052_6,
        -0.339_981_043_584_856_3,
        0.339_981_043_584_856_3,
        0.861_136_311_594_052_6,
    ];
    const W: [f64; 4] = [
        0.347_854_845_137_453_9,
        0.652_145_154_862_546_1,
        0.652_145_154_862_546_1,
        0.347_854_845_137_453_9,
    ];
    let s = |i: usize| sigmas[i] as f64;
    let basis = |tau: f64| {
        (0..order)
            .filter(|&k| k != current)
            .map(|k| (tau - s(t - k)) / (s(t - current) - s(t - k)))
            .product::<f64>()
    };
    let (a, b) = (s(t), s(t + 1));
    let (m, h) = ((a + b) / 2.0, (b - a) / 2.0);
    X.iter()
        .zip(W)
        .map(|(x, w)| w * basis(m + h * x))
        .sum::<f64>()
        * h
}

impl<const D: usize> LmsScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: LmsConfig) -> Result<Self> {
        if config.prediction_type == PredictionType::FlowPrediction {
            return Err(config.prediction_type.unsupported(NAME));
        }
        if config.lms_order == 0 {
            return Err(invalid("lms_order must be at least 1"));
        }
        let schedule = NoiseSchedule::new(&config.beta_config())?;
        Self::spec(&config).conversion.check()?;
        let mut s = Self {
            config,
            schedule,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            num_inference_steps: None,
            index: StepIndex::default(),
            derivatives: Vec::new(),
        };
        let n = s.config.num_train_timesteps;
        Scheduler::<D>::set_timesteps(&mut s, n)?;
        s.num_inference_steps = None;
        Ok(s)
    }

    fn spec(c: &LmsConfig) -> SigmaScheduleSpec {
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
    pub fn config(&self) -> &LmsConfig {
        &self.config
    }
}

impl<const D: usize> Scheduler<D> for LmsScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, false, false, false)?;
        let (t, s) =
            discrete_sigma_schedule(&self.schedule, &Self::spec(&self.config), request, NAME)?;
        self.num_inference_steps = Some(t.len());
        self.timesteps = t;
        self.sigmas = s;
        self.derivatives.clear();
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
        let (sigma, _) = sigma_pair(&self.sigmas, i)?;
        let x0 = sigma_x0(
            self.config.prediction_type,
            model_output,
            sample.clone(),
            sigma,
            sigma,
            NAME,
        )?;
        let derivative = (sample.clone() - x0.clone()) / sigma;
        self.derivatives.push(derivative);
        if self.derivatives.len() > self.config.lms_order {
            self.derivatives.remove(0);
        }
        let order = (i + 1).min(self.config.lms_order);
        let mut prev = sample;
        for (k, d) in self.derivatives.iter().rev().take(order).enumerate() {
            let c = lms_coefficient(&self.sigmas, order, i, k);
            prev = prev + d.clone() * (c as f32);
        }
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
