//! DEIS (Zhang & Chen 2022) multistep, diffusers `DEISMultistepScheduler`
//! (`algorithm_type = deis`, `solver_type = logrho`, orders 1–3).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, History, NoiseSchedule, PredictionType, StepIndex, TimestepSpacing, alpha_sigma,
    beta_sigmas, check_sigma_flags, check_steps, exponential_sigmas, flow_sigmas, impl_beta_config,
    interp_index, karras_sigmas, lambda, log_sigmas, np_logf, sigma_to_t, solver_timesteps,
    threshold_sample,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// Config of [`DeisScheduler`] (diffusers defaults). `algorithm_type` and
/// `solver_type` are accepted and ignored (diffusers maps every value to
/// `deis` / `logrho`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct DeisConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub use_dynamic_shifting: bool,
}

impl Default for DeisConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            lower_order_final: true,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            use_dynamic_shifting: false,
        }
    }
}

impl_beta_config!(DeisConfig, |_: &DeisConfig| false);

impl SchedulerConfig for DeisConfig {
    const CLASS_NAME: &'static str = "DEISMultistepScheduler";
}

const NAME: &str = "DEISMultistepScheduler";

/// DEIS: deterministic exponential-integrator multistep solver, 10–25 steps.
#[derive(Clone, Debug)]
pub struct DeisScheduler<const D: usize> {
    config: DeisConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    model_outputs: History<D>,
    lower_order_nums: usize,
    index: StepIndex,
}

/// The log-ρ integrals of DEIS (second and third order), float32.
fn ind2(t: f32, b: f32, c: f32) -> f32 {
    t * (-np_logf(c) + np_logf(t) - 1.0) / (np_logf(b) - np_logf(c))
}

fn ind3(t: f32, b: f32, c: f32, d: f32) -> f32 {
    let (lt, lc, ld, lb) = (np_logf(t), np_logf(c), np_logf(d), np_logf(b));
    let num = t * (lc * (ld - lt + 1.0) - ld * lt + ld + lt * lt - 2.0 * lt + 2.0);
    num / ((lb - lc) * (lb - ld))
}

impl<const D: usize> DeisScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: DeisConfig) -> Result<Self> {
        let c = &config;
        check_sigma_flags(
            c.use_karras_sigmas,
            c.use_exponential_sigmas,
            c.use_beta_sigmas,
        )?;
        if !(1..=3).contains(&c.solver_order) {
            return Err(invalid(format!(
                "solver_order must be 1, 2 or 3, got {}",
                c.solver_order
            )));
        }
        let schedule = NoiseSchedule::new(&c.beta_config())?;
        let sigmas = schedule.sigmas();
        let timesteps = (0..c.num_train_timesteps).rev().map(|t| t as f64).collect();
        let order = c.solver_order;
        Ok(Self {
            config,
            schedule,
            timesteps,
            sigmas,
            num_inference_steps: None,
            model_outputs: History::new(order),
            lower_order_nums: 0,
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &DeisConfig {
        &self.config
    }

    fn alpha_sigma_at(&self, i: isize) -> Result<(f32, f32)> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.sigmas.get(i).copied())
            .map(|s| alpha_sigma(s, self.config.use_flow_sigmas))
            .ok_or_else(|| SchedulerError::InvalidSchedule(format!("sigma index {i} out of range")))
    }

    /// ε through x0 (thresholded if configured), as diffusers' `convert_model_output`.
    fn convert(&self, model_output: Tensor<D>, sample: Tensor<D>, i: usize) -> Result<Tensor<D>> {
        let c = &self.config;
        let (alpha_t, sigma_t) = self.alpha_sigma_at(i as isize)?;
        let x0 = match c.prediction_type {
            PredictionType::Epsilon => (sample.clone() - model_output * sigma_t) / alpha_t,
            PredictionType::Sample => model_output,
            PredictionType::VPrediction => sample.clone() * alpha_t - model_output * sigma_t,
            PredictionType::FlowPrediction => sample.clone() - model_output * self.sigmas[i],
        };
        let x0 = if c.thresholding {
            threshold_sample(x0, c.dynamic_thresholding_ratio, c.sample_max_value)?
        } else {
            x0
        };
        Ok((sample - x0 * alpha_t) / sigma_t)
    }

    fn update(&self, order: usize, i: usize, sample: Tensor<D>) -> Result<Tensor<D>> {
        let i = i as isize;
        let (alpha_t, sigma_t) = self.alpha_sigma_at(i + 1)?;
        let (alpha_s0, sigma_s0) = self.alpha_sigma_at(i)?;
        let m0 = self.model_outputs.get(0)?;
        if order == 1 {
            let h = lambda(alpha_t, sigma_t) - lambda(alpha_s0, sigma_s0);
            return Ok(sample * (alpha_t / alpha_s0) - m0 * (sigma_t * (h.exp() - 1.0)));
        }
        let (alpha_s1, sigma_s1) = self.alpha_sigma_at(i - 1)?;
        let (rho_t, rho_s0, rho_s1) = (sigma_t / alpha_t, sigma_s0 / alpha_s0, sigma_s1 / alpha_s1);
        let m1 = self.model_outputs.get(1)?;
        let inner = if order == 2 {
            let coef1 = ind2(rho_t, rho_s0, rho_s1) - ind2(rho_s0, rho_s0, rho_s1);
            let coef2 = ind2(rho_t, rho_s1, rho_s0) - ind2(rho_s0, rho_s1, rho_s0);
            sample / alpha_s0 + m0 * coef1 + m1 * coef2
        } else {
            let (alpha_s2, sigma_s2) = self.alpha_sigma_at(i - 2)?;
            let rho_s2 = sigma_s2 / alpha_s2;
            let m2 = self.model_outputs.get(2)?;
            let coef1 = ind3(rho_t, rho_s0, rho_s1, rho_s2) - ind3(rho_s0, rho_s0, rho_s1, rho_s2);
            let coef2 = ind3(rho_t, rho_s1, rho_s2, rho_s0) - ind3(rho_s0, rho_s1, rho_s2, rho_s0);
            let coef3 = ind3(rho_t, rho_s2, rho_s0, rho_s1) - ind3(rho_s0, rho_s2, rho_s0, rho_s1);
            sample / alpha_s0 + m0 * coef1 + m1 * coef2 + m2 * coef3
        };
        Ok(inner * alpha_t)
    }
}

impl<const D: usize> Scheduler<D> for DeisScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, false, false, true)?;
        let c = self.config.clone();
        let train = c.num_train_timesteps;
        let flow_shift = match request.mu {
            Some(_) if !c.use_dynamic_shifting => {
                return Err(invalid("mu needs use_dynamic_shifting"));
            }
            Some(mu) => mu.exp(),
            None => c.flow_shift,
        };
        let n = request.count()?;
        check_steps(n, train)?;
        let mut timesteps = solver_timesteps(c.timestep_spacing, train, train, n, c.steps_offset);
        let train_sigmas = self.schedule.sigmas();
        let log_sig = log_sigmas(&train_sigmas);
        let desc: Vec<f64> = train_sigmas.iter().rev().map(|&s| s as f64).collect();
        let (min, max) = (desc[desc.len() - 1], desc[0]);
        let (sigmas, last): (Vec<f64>, Option<f32>) = if c.use_karras_sigmas {
            let s = karras_sigmas(min, max, n);
            timesteps = s
                .iter()
                .map(|&v| sigma_to_t(v, &log_sig).round_ties_even())
                .collect();
            (s, None)
        } else if c.use_exponential_sigmas || c.use_beta_sigmas {
            let s = if c.use_beta_sigmas {
                beta_sigmas(min, max, n)
            } else {
                exponential_sigmas(min, max, n)
            };
            timesteps = s.iter().map(|&v| sigma_to_t(v, &log_sig)).collect();
            (s, None)
        } else if c.use_flow_sigmas {
            let s = flow_sigmas(n, train, flow_shift);
            timesteps = s.iter().map(|v| v * train as f64).collect();
            (s, None)
        } else {
            let s = timesteps
                .iter()
                .map(|&t| interp_index(t, &train_sigmas))
                .collect();
            (s, Some(train_sigmas[0]))
        };
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        let repeat = out.last().copied().unwrap_or(0.0);
        out.push(last.unwrap_or(repeat));
        self.timesteps = timesteps.iter().map(|t| t.trunc()).collect();
        self.sigmas = out;
        self.num_inference_steps = Some(self.timesteps.len());
        self.model_outputs = History::new(c.solver_order);
        self.lower_order_nums = 0;
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
        _noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let len = self
            .num_inference_steps
            .ok_or(SchedulerError::NotInitialized("step"))?;
        let i = self.index.get_or_last(&self.timesteps, t);
        let c = &self.config;
        let lof = i + 1 == len && c.lower_order_final && len < 15;
        let los = i + 2 == len && c.lower_order_final && len < 15;
        let m = self.convert(model_output, sample.clone(), i)?;
        self.model_outputs.push(m);
        let order = if c.solver_order == 1 || self.lower_order_nums < 1 || lof {
            1
        } else if c.solver_order == 2 || self.lower_order_nums < 2 || los {
            2
        } else {
            3
        };
        let prev = self.update(order, i, sample)?;
        if self.lower_order_nums < self.config.solver_order {
            self.lower_order_nums += 1;
        }
        self.index.advance();
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: None,
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        let i = self.index.for_add_noise(&self.timesteps, t)?;
        let (alpha, sigma) = self.alpha_sigma_at(i as isize)?;
        Ok(original * alpha + noise * sigma)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
