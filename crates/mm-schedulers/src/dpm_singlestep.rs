//! DPM-Solver(++) singlestep (Lu et al. 2022), diffusers `DPMSolverSinglestepScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, History, NoiseSchedule, PredictionType, StepIndex,
    TimestepSpacing, alpha_sigma, beta_sigmas, check_sigma_flags, check_steps, exponential_sigmas,
    flow_sigmas, impl_beta_config, interp_index, karras_sigmas, lambda, lambda_clipped_count,
    log_sigmas, sigma_to_t, solver_timesteps,
};
use crate::config::{SchedulerConfig, invalid};
use crate::dpm_multistep::{
    DpmAlgorithm, DpmConvert, DpmSolverType, DpmVarianceType, dpm_first_order, dpm_second_order,
    dpm_third_order,
};
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// Config of [`DpmSolverSinglestepScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct DpmSolverSinglestepConfig {
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
    pub algorithm_type: DpmAlgorithm,
    pub solver_type: DpmSolverType,
    pub lower_order_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    /// `null` in JSON (Python's `-inf`) means no clipping.
    pub lambda_min_clipped: f64,
    pub variance_type: Option<DpmVarianceType>,
    pub use_dynamic_shifting: bool,
}

impl Default for DpmSolverSinglestepConfig {
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
            algorithm_type: DpmAlgorithm::DpmSolverPlusPlus,
            solver_type: DpmSolverType::Midpoint,
            lower_order_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_dynamic_shifting: false,
        }
    }
}

impl_beta_config!(
    DpmSolverSinglestepConfig,
    |_: &DpmSolverSinglestepConfig| false
);

impl SchedulerConfig for DpmSolverSinglestepConfig {
    const CLASS_NAME: &'static str = "DPMSolverSinglestepScheduler";
}

const NAME: &str = "DPMSolverSinglestepScheduler";

/// DPM-Solver singlestep: deterministic (or SDE), groups of 1–3 model calls
/// per solver step; 15–30 steps ("DPM++ 2S", "DPM++ SDE" style).
#[derive(Clone, Debug)]
pub struct DpmSolverSinglestepScheduler<const D: usize> {
    config: DpmSolverSinglestepConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    model_outputs: History<D>,
    order_list: Vec<usize>,
    sample: Option<Tensor<D>>,
    index: StepIndex,
}

impl<const D: usize> DpmSolverSinglestepScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: DpmSolverSinglestepConfig) -> Result<Self> {
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
        if c.algorithm_type == DpmAlgorithm::SdeDpmSolver {
            return Err(invalid(
                "sde-dpmsolver is not implemented by DPMSolverSinglestepScheduler",
            ));
        }
        if !c.algorithm_type.data_prediction() && c.final_sigmas_type == FinalSigmasType::Zero {
            return Err(invalid(
                "final_sigmas_type `zero` needs algorithm_type dpmsolver++ or sde-dpmsolver++",
            ));
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
            order_list: Vec::new(),
            sample: None,
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &DpmSolverSinglestepConfig {
        &self.config
    }

    /// diffusers' `get_order_list`: the solver order of each step.
    pub fn order_list(&self, steps: usize) -> Vec<usize> {
        let order = self.config.solver_order;
        let rep = |pattern: &[usize], times: usize| -> Vec<usize> {
            pattern
                .iter()
                .copied()
                .cycle()
                .take(pattern.len() * times)
                .collect()
        };
        let mut orders = if self.config.lower_order_final {
            match order {
                3 => match steps % 3 {
                    0 => [
                        rep(&[1, 2, 3], (steps / 3).saturating_sub(1)),
                        vec![1, 2, 1],
                    ]
                    .concat(),
                    1 => [rep(&[1, 2, 3], steps / 3), vec![1]].concat(),
                    _ => [rep(&[1, 2, 3], steps / 3), vec![1, 2]].concat(),
                },
                2 => match steps % 2 {
                    0 => [rep(&[1, 2], (steps / 2).saturating_sub(1)), vec![1, 1]].concat(),
                    _ => [rep(&[1, 2], steps / 2), vec![1]].concat(),
                },
                _ => vec![1; steps],
            }
        } else {
            match order {
                3 => rep(&[1, 2, 3], steps / 3),
                2 => rep(&[1, 2], steps / 2),
                _ => vec![1; steps],
            }
        };
        if self.config.final_sigmas_type == FinalSigmasType::Zero
            && let Some(last) = orders.last_mut()
        {
            *last = 1;
        }
        orders
    }

    fn flow(&self) -> bool {
        self.config.use_flow_sigmas
    }

    fn sigma_at(&self, i: isize) -> Result<(f32, f32)> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.sigmas.get(i).copied())
            .map(|s| alpha_sigma(s, self.flow()))
            .ok_or_else(|| SchedulerError::InvalidSchedule(format!("sigma index {i} out of range")))
    }

    fn update(
        &self,
        order: usize,
        i: usize,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> Result<Tensor<D>> {
        let c = &self.config;
        let i = i as isize;
        let t = self.sigma_at(i + 1)?;
        let s0 = self.sigma_at(i)?;
        let lambda_t = lambda(t.0, t.1);
        let lambda_s0 = lambda(s0.0, s0.1);
        let m0 = self.model_outputs.get(0)?;
        let alg = c.algorithm_type;
        if order == 1 {
            return dpm_first_order(alg, sample, t, s0, lambda_t - lambda_s0, m0, noise);
        }
        let s1 = self.sigma_at(i - 1)?;
        let lambda_s1 = lambda(s1.0, s1.1);
        let m1 = self.model_outputs.get(1)?;
        if order == 2 {
            let h = lambda_t - lambda_s1;
            let r0 = (lambda_s0 - lambda_s1) / h;
            let d1 = (m0 - m1.clone()) * (1.0 / r0);
            return dpm_second_order(alg, c.solver_type, sample, t, s1, h, m1, d1, noise);
        }
        let s2 = self.sigma_at(i - 2)?;
        let lambda_s2 = lambda(s2.0, s2.1);
        let m2 = self.model_outputs.get(2)?;
        let h = lambda_t - lambda_s2;
        let (r0, r1) = ((lambda_s0 - lambda_s2) / h, (lambda_s1 - lambda_s2) / h);
        let d1_0 = (m1 - m2.clone()) * (1.0 / r1);
        let d1_1 = (m0 - m2.clone()) * (1.0 / r0);
        match c.solver_type {
            DpmSolverType::Midpoint => {
                dpm_third_order(alg, sample, t, s2, h, m2, d1_1, None, noise)
            }
            DpmSolverType::Heun => {
                let d1 = (d1_0.clone() * r0 - d1_1.clone() * r1) / (r0 - r1);
                let d2 = (d1_1 - d1_0) * 2.0 / (r0 - r1);
                dpm_third_order(alg, sample, t, s2, h, m2, d1, Some(d2), noise)
            }
        }
    }
}

impl<const D: usize> Scheduler<D> for DpmSolverSinglestepScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, false, true)?;
        let c = self.config.clone();
        let train = c.num_train_timesteps;
        let flow_shift = match request.mu {
            Some(_) if !c.use_dynamic_shifting => {
                return Err(invalid("mu needs use_dynamic_shifting"));
            }
            Some(mu) => mu.exp(),
            None => c.flow_shift,
        };
        if request.timesteps.is_some()
            && (c.use_karras_sigmas || c.use_exponential_sigmas || c.use_beta_sigmas)
        {
            return Err(SchedulerError::InvalidSchedule(
                "custom timesteps cannot be combined with Karras / exponential sigmas".into(),
            ));
        }
        let mut timesteps: Vec<f64> = match &request.timesteps {
            Some(t) if t.is_empty() => return Err(SchedulerError::ZeroSteps),
            Some(t) => t.iter().map(|v| v.trunc()).collect(),
            None => {
                let n = request.count()?;
                check_steps(n, train)?;
                let clipped = lambda_clipped_count(&self.schedule, c.lambda_min_clipped);
                solver_timesteps(TimestepSpacing::Linspace, train, train - clipped, n, 0)
            }
        };
        let n = request.num_inference_steps.unwrap_or(timesteps.len());
        let train_sigmas = self.schedule.sigmas();
        let log_sig = log_sigmas(&train_sigmas);
        let desc: Vec<f64> = train_sigmas.iter().rev().map(|&s| s as f64).collect();
        let (min, max) = (desc[desc.len() - 1], desc[0]);
        let sigmas: Vec<f64> = if c.use_karras_sigmas {
            let s = karras_sigmas(min, max, n);
            timesteps = s
                .iter()
                .map(|&v| sigma_to_t(v, &log_sig).round_ties_even())
                .collect();
            s
        } else if c.use_exponential_sigmas || c.use_beta_sigmas {
            let s = if c.use_beta_sigmas {
                beta_sigmas(min, max, n)
            } else {
                exponential_sigmas(min, max, n)
            };
            timesteps = s.iter().map(|&v| sigma_to_t(v, &log_sig)).collect();
            s
        } else if c.use_flow_sigmas {
            let s = flow_sigmas(n, train, flow_shift);
            timesteps = s.iter().map(|v| v * train as f64).collect();
            s
        } else {
            timesteps
                .iter()
                .map(|&t| interp_index(t, &train_sigmas))
                .collect()
        };
        let last = match c.final_sigmas_type {
            FinalSigmasType::SigmaMin => train_sigmas[0],
            FinalSigmasType::Zero => 0.0,
        };
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        out.push(last);
        self.timesteps = timesteps.iter().map(|t| t.trunc()).collect();
        self.sigmas = out;
        self.num_inference_steps = Some(n);
        self.model_outputs = History::new(c.solver_order);
        self.sample = None;
        // diffusers switches lower_order_final on (in its config) for these cases
        if !c.lower_order_final
            && (!n.is_multiple_of(c.solver_order) || c.final_sigmas_type == FinalSigmasType::Zero)
        {
            self.config.lower_order_final = true;
        }
        self.order_list = self.order_list(n);
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
        self.num_inference_steps
            .ok_or(SchedulerError::NotInitialized("step"))?;
        let i = self.index.get_or_last(&self.timesteps, t);
        let c = &self.config;
        let convert = DpmConvert {
            algorithm: c.algorithm_type,
            prediction: c.prediction_type,
            learned_variance: c.variance_type.is_some(),
            thresholding: c
                .thresholding
                .then_some((c.dynamic_thresholding_ratio, c.sample_max_value)),
            flow: c.use_flow_sigmas,
        };
        let sigma = self.sigmas.get(i).copied().ok_or_else(|| {
            SchedulerError::InvalidSchedule(format!("step {i} past the schedule"))
        })?;
        let x = convert.convert(model_output, sample.clone(), sigma, NAME)?;
        self.model_outputs.push(x.clone());
        let z = if c.algorithm_type.sde() {
            Some(noise.noise(sample.dims(), &sample.device())?)
        } else {
            None
        };
        let mut order = self.order_list.get(i).copied().unwrap_or(1);
        while order > 1 && self.model_outputs.peek(order - 1).is_none() {
            order -= 1;
        }
        if order == 1 {
            self.sample = Some(sample.clone());
        }
        let base = self.sample.clone().unwrap_or(sample);
        let prev = self.update(order, i, base, z)?;
        self.index.advance();
        let x0 = self.config.algorithm_type.data_prediction().then_some(x);
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        let i = self.index.for_add_noise(&self.timesteps, t)?;
        let (alpha, sigma) = self.sigma_at(i as isize)?;
        Ok(original * alpha + noise * sigma)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
