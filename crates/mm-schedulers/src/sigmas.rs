//! Sigma schedules of the k-diffusion family (Euler, Euler ancestral, Heun):
//! interpolation of the training sigmas at the spaced timesteps, Karras /
//! exponential conversions, custom timesteps or sigmas, the final sigma.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    FinalSigmasType, NoiseSchedule, StepIndex, TimestepSpacing, beta_sigmas, check_sigma_flags,
    check_steps, exponential_sigmas, interp_index, karras_sigmas, log_sigmas, sigma_pair,
    sigma_to_t, spaced_timesteps, torch_linspace_f32,
};
use crate::error::{Result, SchedulerError};
use crate::scheduler::TimestepRequest;

/// How sigmas are read off the training sigmas (`interpolation_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum InterpolationType {
    /// `linear`: linear interpolation at the (fractional) timesteps.
    #[default]
    #[serde(rename = "linear")]
    Linear,
    /// `log_linear`: log-spaced between the largest and smallest training sigma.
    #[serde(rename = "log_linear")]
    LogLinear,
}

/// The sigma-spacing options shared by the k-diffusion schedulers.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SigmaSpacing {
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
}

impl SigmaSpacing {
    /// Rejects combinations diffusers rejects.
    pub fn check(&self) -> Result<()> {
        check_sigma_flags(
            self.use_karras_sigmas,
            self.use_exponential_sigmas,
            self.use_beta_sigmas,
        )
    }

    /// Whether a conversion replaces the interpolated sigmas.
    pub fn converts(&self) -> bool {
        self.use_karras_sigmas || self.use_exponential_sigmas || self.use_beta_sigmas
    }

    /// Karras / exponential / beta sigmas between the config bounds or those of
    /// `in_sigmas` (descending); `None` when neither is set.
    pub fn convert(&self, in_sigmas: &[f64], n: usize) -> Option<Vec<f64>> {
        let min = self.sigma_min.or(in_sigmas.last().copied())?;
        let max = self.sigma_max.or(in_sigmas.first().copied())?;
        if self.use_karras_sigmas {
            Some(karras_sigmas(min, max, n))
        } else if self.use_exponential_sigmas {
            Some(exponential_sigmas(min, max, n))
        } else if self.use_beta_sigmas {
            Some(beta_sigmas(min, max, n))
        } else {
            None
        }
    }
}

/// Everything that shapes a k-diffusion sigma schedule.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SigmaScheduleSpec {
    pub spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub interpolation: InterpolationType,
    pub conversion: SigmaSpacing,
    pub final_sigmas_type: FinalSigmasType,
    pub allow_custom_sigmas: bool,
}

/// `(timesteps, sigmas)` as diffusers' `EulerDiscreteScheduler.set_timesteps`
/// computes them (sigmas float32 with the final sigma appended).
pub(crate) fn discrete_sigma_schedule(
    ns: &NoiseSchedule,
    spec: &SigmaScheduleSpec,
    req: &TimestepRequest,
    name: &'static str,
) -> Result<(Vec<f64>, Vec<f32>)> {
    let train = ns.len();
    let train_sigmas = ns.sigmas();
    let log_sig = log_sigmas(&train_sigmas);
    if req.timesteps.is_some() && req.sigmas.is_some() {
        return Err(SchedulerError::InvalidSchedule(
            "only one of timesteps or sigmas can be set".into(),
        ));
    }
    if let Some(custom) = &req.sigmas {
        if !spec.allow_custom_sigmas {
            return Err(SchedulerError::Unsupported(format!(
                "{name}: custom sigmas"
            )));
        }
        if custom.len() < 2 {
            return Err(SchedulerError::InvalidSchedule(
                "custom sigmas need at least 2 values".into(),
            ));
        }
        let sigmas: Vec<f32> = custom.iter().map(|&s| s as f32).collect();
        let ts = sigmas[..sigmas.len() - 1]
            .iter()
            .map(|&s| sigma_to_t(s as f64, &log_sig) as f32 as f64)
            .collect();
        return Ok((ts, sigmas));
    }
    let timesteps: Vec<f64> = match &req.timesteps {
        Some(t) => {
            if spec.conversion.converts() {
                return Err(SchedulerError::InvalidSchedule(
                    "custom timesteps cannot be combined with Karras / exponential sigmas".into(),
                ));
            }
            if t.is_empty() {
                return Err(SchedulerError::ZeroSteps);
            }
            t.iter().map(|&v| v as f32 as f64).collect()
        }
        None => {
            let n = req.count()?;
            check_steps(n, train)?;
            spaced_timesteps(spec.spacing, train, n, spec.steps_offset, false)
                .into_iter()
                .map(|v| v as f32 as f64)
                .collect()
        }
    };
    let n = timesteps.len();
    let mut sigmas: Vec<f64> = match spec.interpolation {
        InterpolationType::Linear => timesteps
            .iter()
            .map(|&t| interp_index(t, &train_sigmas))
            .collect(),
        InterpolationType::LogLinear => {
            let (lo, hi) = (train_sigmas[train - 1].ln(), train_sigmas[0].ln());
            torch_linspace_f32(lo as f64, hi as f64, n + 1)
                .iter()
                .map(|v| v.exp() as f64)
                .collect()
        }
    };
    let mut timesteps = timesteps;
    if let Some(conv) = spec.conversion.convert(&sigmas, n) {
        timesteps = conv
            .iter()
            .map(|&s| sigma_to_t(s, &log_sig) as f32 as f64)
            .collect();
        sigmas = conv;
    }
    let last = match spec.final_sigmas_type {
        FinalSigmasType::Zero => 0.0,
        FinalSigmasType::SigmaMin => train_sigmas[0],
    };
    let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
    out.push(last);
    Ok((timesteps, out))
}

/// `init_noise_sigma` of the k-diffusion schedulers: the largest sigma, or
/// `sqrt(max² + 1)` for `leading` spacing (float32 as in diffusers).
pub(crate) fn k_init_noise_sigma(sigmas: &[f32], spacing: TimestepSpacing) -> f64 {
    let max = sigmas.iter().copied().fold(0f32, f32::max);
    match spacing {
        TimestepSpacing::Linspace | TimestepSpacing::Trailing => max as f64,
        TimestepSpacing::Leading => (max * max + 1.0).sqrt() as f64,
    }
}

/// `sample / sqrt(σ² + 1)` at `t`: the input scaling of the k-diffusion schedulers.
pub(crate) fn k_scale_model_input<const D: usize>(
    index: &mut StepIndex,
    timesteps: &[f64],
    sigmas: &[f32],
    sample: Tensor<D>,
    t: f64,
) -> Result<Tensor<D>> {
    let i = index.get(timesteps, t)?;
    let (sigma, _) = sigma_pair(sigmas, i)?;
    Ok(sample / (sigma * sigma + 1.0).sqrt())
}

/// `x0 + σ · noise` at `t`: the forward process of the k-diffusion schedulers.
pub(crate) fn k_add_noise<const D: usize>(
    index: &StepIndex,
    timesteps: &[f64],
    sigmas: &[f32],
    original: Tensor<D>,
    noise: Tensor<D>,
    t: f64,
) -> Result<Tensor<D>> {
    let i = index.for_add_noise(timesteps, t)?;
    let (sigma, _) = sigma_pair(sigmas, i)?;
    Ok(original + noise * sigma)
}
