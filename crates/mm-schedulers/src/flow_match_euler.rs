//! Flow-matching Euler (rectified flow; SD3, Flux, …), diffusers
//! `FlowMatchEulerDiscreteScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    StepIndex, beta_sigmas, check_sigma_flags, check_steps, exponential_sigmas, karras_sigmas,
    np_linspace, sigma_pair, stretch_to_terminal,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// `time_shift_type` of dynamic shifting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimeShiftType {
    /// `exponential`: `e^μ / (e^μ + (1/t − 1))` (SD3, Flux).
    #[default]
    #[serde(rename = "exponential")]
    Exponential,
    /// `linear`: `μ / (μ + (1/t − 1))`.
    #[serde(rename = "linear")]
    Linear,
}

/// Config of [`FlowMatchEulerScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct FlowMatchEulerConfig {
    pub num_train_timesteps: usize,
    /// Static shift (SD3: 3.0).
    pub shift: f64,
    /// Resolution-dependent shift: `set_timesteps` then needs `mu`.
    pub use_dynamic_shifting: bool,
    pub base_shift: Option<f64>,
    pub max_shift: Option<f64>,
    pub base_image_seq_len: usize,
    pub max_image_seq_len: usize,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub time_shift_type: TimeShiftType,
    pub stochastic_sampling: bool,
}

impl Default for FlowMatchEulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            base_shift: Some(0.5),
            max_shift: Some(1.15),
            base_image_seq_len: 256,
            max_image_seq_len: 4096,
            invert_sigmas: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            time_shift_type: TimeShiftType::Exponential,
            stochastic_sampling: false,
        }
    }
}

impl SchedulerConfig for FlowMatchEulerConfig {
    const CLASS_NAME: &'static str = "FlowMatchEulerDiscreteScheduler";
}

impl FlowMatchEulerConfig {
    /// `mu` for an image of `image_seq_len` latent tokens, linear between
    /// (`base_image_seq_len`, `base_shift`) and (`max_image_seq_len`,
    /// `max_shift`): diffusers' `calculate_shift` of the Flux / SD3 pipelines.
    pub fn mu_for_seq_len(&self, image_seq_len: usize) -> f64 {
        let (base, max) = (
            self.base_shift.unwrap_or(0.5),
            self.max_shift.unwrap_or(1.15),
        );
        let m = (max - base) / (self.max_image_seq_len as f64 - self.base_image_seq_len as f64);
        let b = base - m * self.base_image_seq_len as f64;
        image_seq_len as f64 * m + b
    }
}

const NAME: &str = "FlowMatchEulerDiscreteScheduler";

/// Flow-matching Euler: deterministic (or stochastic with
/// `stochastic_sampling`) Euler on the rectified-flow ODE; 20–50 steps for
/// SD3 / Flux-dev, 1–4 for distilled (Flux-schnell).
#[derive(Clone, Debug)]
pub struct FlowMatchEulerScheduler {
    config: FlowMatchEulerConfig,
    sigma_min: f64,
    sigma_max: f64,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    index: StepIndex,
}

impl FlowMatchEulerScheduler {
    /// Builds the scheduler from its config.
    pub fn new(config: FlowMatchEulerConfig) -> Result<Self> {
        let c = &config;
        check_sigma_flags(
            c.use_karras_sigmas,
            c.use_exponential_sigmas,
            c.use_beta_sigmas,
        )?;
        if c.num_train_timesteps == 0 {
            return Err(invalid("num_train_timesteps must be > 0"));
        }
        let train = c.num_train_timesteps as f32;
        let shift = c.shift as f32;
        let sigmas: Vec<f32> = (1..=c.num_train_timesteps)
            .rev()
            .map(|t| t as f32 / train)
            .map(|s| {
                if c.use_dynamic_shifting {
                    s
                } else {
                    shift * s / (1.0 + (shift - 1.0) * s)
                }
            })
            .collect();
        let timesteps = sigmas.iter().map(|s| (s * train) as f64).collect();
        let (sigma_max, sigma_min) = (sigmas[0] as f64, sigmas[sigmas.len() - 1] as f64);
        Ok(Self {
            config,
            sigma_min,
            sigma_max,
            timesteps,
            sigmas,
            num_inference_steps: None,
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &FlowMatchEulerConfig {
        &self.config
    }
}

impl TimeShiftType {
    /// Shifts sigma `t` by `mu` (`time_shift(mu, 1.0, t)` of diffusers).
    pub fn shift(self, mu: f64, t: f64) -> f64 {
        match self {
            Self::Exponential => mu.exp() / (mu.exp() + (1.0 / t - 1.0)),
            Self::Linear => mu / (mu + (1.0 / t - 1.0)),
        }
    }
}

impl<const D: usize> Scheduler<D> for FlowMatchEulerScheduler {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, true, true)?;
        let c = self.config.clone();
        let train = c.num_train_timesteps as f64;
        let mu = match (c.use_dynamic_shifting, request.mu) {
            (true, None) => {
                return Err(invalid("use_dynamic_shifting needs `mu` in set_timesteps"));
            }
            (_, mu) => mu,
        };
        let custom_t: Option<Vec<f64>> = request
            .timesteps
            .as_ref()
            .map(|t| t.iter().map(|&v| v as f32 as f64).collect());
        for (name, len) in [
            ("sigmas", request.sigmas.as_ref().map(Vec::len)),
            ("timesteps", custom_t.as_ref().map(Vec::len)),
        ] {
            match (len, request.num_inference_steps) {
                (Some(0), _) => return Err(SchedulerError::ZeroSteps),
                (Some(l), Some(n)) if l != n => {
                    return Err(SchedulerError::InvalidSchedule(format!(
                        "{name} has {l} values for {n} steps"
                    )));
                }
                _ => {}
            }
        }
        let mut sigmas: Vec<f64> = match (&request.sigmas, &custom_t) {
            (Some(s), _) => s.iter().map(|&v| v as f32 as f64).collect(),
            (None, Some(t)) => t.iter().map(|v| v / train).collect(),
            (None, None) => {
                let n = request.count()?;
                check_steps(n, c.num_train_timesteps)?;
                np_linspace(self.sigma_max * train, self.sigma_min * train, n)
                    .iter()
                    .map(|t| t / train)
                    .collect()
            }
        };
        let n = sigmas.len();
        sigmas = match mu {
            Some(mu) if c.use_dynamic_shifting => sigmas
                .iter()
                .map(|&s| c.time_shift_type.shift(mu, s))
                .collect(),
            _ => sigmas
                .iter()
                .map(|&s| c.shift * s / (1.0 + (c.shift - 1.0) * s))
                .collect(),
        };
        if let Some(term) = c.shift_terminal.filter(|v| *v != 0.0) {
            sigmas = stretch_to_terminal(&sigmas, term);
        }
        let (first, last) = (sigmas[0], sigmas[n - 1]);
        if c.use_karras_sigmas {
            sigmas = karras_sigmas(last, first, n);
        } else if c.use_exponential_sigmas {
            sigmas = exponential_sigmas(last, first, n);
        } else if c.use_beta_sigmas {
            sigmas = beta_sigmas(last, first, n);
        }
        let mut s32: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        let mut timesteps: Vec<f64> = match &custom_t {
            Some(t) => t.clone(),
            None => s32.iter().map(|s| (s * train as f32) as f64).collect(),
        };
        if c.invert_sigmas {
            s32 = s32.iter().map(|s| 1.0 - s).collect();
            timesteps = s32.iter().map(|s| (s * train as f32) as f64).collect();
            s32.push(1.0);
        } else {
            s32.push(0.0);
        }
        self.timesteps = timesteps;
        self.sigmas = s32;
        self.num_inference_steps = Some(n);
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

    fn step(
        &mut self,
        model_output: Tensor<D>,
        t: f64,
        sample: Tensor<D>,
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let i = self.index.get(&self.timesteps, t)?;
        let (sigma, sigma_next) = sigma_pair(&self.sigmas, i)?;
        let (prev, x0) = if self.config.stochastic_sampling {
            let x0 = sample.clone() - model_output * sigma;
            let z = noise.noise(sample.dims(), &sample.device())?;
            (x0.clone() * (1.0 - sigma_next) + z * sigma_next, Some(x0))
        } else {
            (sample + model_output * (sigma_next - sigma), None)
        };
        self.index.advance();
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    /// diffusers' `scale_noise`: `σ · noise + (1 − σ) · x0`.
    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        let i = self.index.for_add_noise(&self.timesteps, t)?;
        let (sigma, _) = sigma_pair(&self.sigmas, i)?;
        Ok(noise * sigma + original * (1.0 - sigma))
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
