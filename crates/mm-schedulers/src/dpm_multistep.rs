//! DPM-Solver / DPM-Solver++ multistep (Lu et al. 2022), diffusers
//! `DPMSolverMultistepScheduler`: orders 1–3, midpoint / heun second-order
//! updates, the SDE variants, Karras / exponential / Lu-lambda / flow sigmas.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, History, NoiseSchedule, PredictionType, StepIndex,
    TimestepSpacing, alpha_sigma, beta_sigmas, check_sigma_flags, check_steps, exponential_sigmas,
    flow_sigmas, impl_beta_config, interp_index, karras_sigmas, lambda, lambda_clipped_count,
    log_sigmas, np_linspace, sigma_to_t, solver_timesteps, threshold_sample,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// `algorithm_type` of DPM-Solver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DpmAlgorithm {
    /// `dpmsolver`: noise-prediction formulation.
    #[serde(rename = "dpmsolver")]
    DpmSolver,
    /// `dpmsolver++`: data-prediction formulation (the usual choice).
    #[default]
    #[serde(rename = "dpmsolver++", alias = "deis")]
    DpmSolverPlusPlus,
    /// `sde-dpmsolver`: stochastic noise-prediction variant.
    #[serde(rename = "sde-dpmsolver")]
    SdeDpmSolver,
    /// `sde-dpmsolver++`: stochastic data-prediction variant ("DPM++ 2M SDE").
    #[serde(rename = "sde-dpmsolver++")]
    SdeDpmSolverPlusPlus,
}

impl DpmAlgorithm {
    pub(crate) fn data_prediction(self) -> bool {
        matches!(self, Self::DpmSolverPlusPlus | Self::SdeDpmSolverPlusPlus)
    }

    pub(crate) fn sde(self) -> bool {
        matches!(self, Self::SdeDpmSolver | Self::SdeDpmSolverPlusPlus)
    }
}

/// `solver_type`: the second-order update rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DpmSolverType {
    /// `midpoint`.
    #[default]
    #[serde(rename = "midpoint", alias = "logrho", alias = "bh1", alias = "bh2")]
    Midpoint,
    /// `heun`.
    #[serde(rename = "heun")]
    Heun,
}

/// `variance_type` of DPM-Solver (models that also predict a variance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DpmVarianceType {
    /// `learned`.
    #[serde(rename = "learned")]
    Learned,
    /// `learned_range`.
    #[serde(rename = "learned_range")]
    LearnedRange,
}

/// Config of [`DpmSolverMultistepScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct DpmSolverMultistepConfig {
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
    pub euler_at_final: bool,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_lu_lambdas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub final_sigmas_type: FinalSigmasType,
    /// `null` in JSON (Python's `-inf`) means no clipping.
    pub lambda_min_clipped: f64,
    pub variance_type: Option<DpmVarianceType>,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
}

impl Default for DpmSolverMultistepConfig {
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
            lower_order_final: true,
            euler_at_final: false,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            final_sigmas_type: FinalSigmasType::Zero,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
        }
    }
}

impl_beta_config!(DpmSolverMultistepConfig);

impl SchedulerConfig for DpmSolverMultistepConfig {
    const CLASS_NAME: &'static str = "DPMSolverMultistepScheduler";
}

const NAME: &str = "DPMSolverMultistepScheduler";

/// DPM-Solver(++) multistep: deterministic (or SDE) high-order solver,
/// good in 15–25 steps ("DPM++ 2M", "DPM++ 2M Karras", "DPM++ 2M SDE", "DPM++ 3M").
#[derive(Clone, Debug)]
pub struct DpmSolverMultistepScheduler<const D: usize> {
    config: DpmSolverMultistepConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    model_outputs: History<D>,
    lower_order_nums: usize,
    index: StepIndex,
}

impl<const D: usize> DpmSolverMultistepScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: DpmSolverMultistepConfig) -> Result<Self> {
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
        if !c.algorithm_type.data_prediction() && c.final_sigmas_type == FinalSigmasType::Zero {
            return Err(invalid(
                "final_sigmas_type `zero` needs algorithm_type dpmsolver++ or sde-dpmsolver++",
            ));
        }
        if c.prediction_type == PredictionType::FlowPrediction
            && !c.algorithm_type.data_prediction()
        {
            return Err(c.prediction_type.unsupported(NAME));
        }
        let mut schedule = NoiseSchedule::new(&c.beta_config())?;
        if c.rescale_betas_zero_snr {
            schedule.fix_zero_snr_terminal();
        }
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
    pub fn config(&self) -> &DpmSolverMultistepConfig {
        &self.config
    }

    /// Timesteps of `n` steps by `timestep_spacing`, below the `lambda_min_clipped` cut.
    fn spaced(&self, n: usize) -> Vec<f64> {
        let c = &self.config;
        // searchsorted(flip(lambda_t), lambda_min_clipped): count of lambdas below the cut
        let clipped = lambda_clipped_count(&self.schedule, c.lambda_min_clipped);
        let last = c.num_train_timesteps - clipped;
        solver_timesteps(
            c.timestep_spacing,
            c.num_train_timesteps,
            last,
            n,
            c.steps_offset,
        )
    }

    fn flow(&self) -> bool {
        self.config.use_flow_sigmas
    }

    fn convert_model_output(
        &self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        sigma: f32,
    ) -> Result<Tensor<D>> {
        let c = &self.config;
        let opts = DpmConvert {
            algorithm: c.algorithm_type,
            prediction: c.prediction_type,
            learned_variance: c.variance_type.is_some(),
            thresholding: c
                .thresholding
                .then_some((c.dynamic_thresholding_ratio, c.sample_max_value)),
            flow: self.flow(),
        };
        opts.convert(model_output, sample, sigma, NAME)
    }

    fn sigma_at(&self, i: isize) -> Result<f32> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.sigmas.get(i).copied())
            .ok_or_else(|| SchedulerError::InvalidSchedule(format!("sigma index {i} out of range")))
    }

    /// The multistep update of `order` from step `i`.
    fn update(
        &self,
        order: usize,
        i: usize,
        sample: Tensor<D>,
        noise: Option<Tensor<D>>,
    ) -> Result<Tensor<D>> {
        let c = &self.config;
        let flow = self.flow();
        let i = i as isize;
        let t = alpha_sigma(self.sigma_at(i + 1)?, flow);
        let s0 = alpha_sigma(self.sigma_at(i)?, flow);
        let lambda_t = lambda(t.0, t.1);
        let lambda_s0 = lambda(s0.0, s0.1);
        let h = lambda_t - lambda_s0;
        let m0 = self.model_outputs.get(0)?;
        let alg = c.algorithm_type;
        if order == 1 {
            return dpm_first_order(alg, sample, t, s0, h, m0, noise);
        }
        let s1 = alpha_sigma(self.sigma_at(i - 1)?, flow);
        let lambda_s1 = lambda(s1.0, s1.1);
        let m1 = self.model_outputs.get(1)?;
        let r0 = (lambda_s0 - lambda_s1) / h;
        if order == 2 {
            let d1 = (m0.clone() - m1) * (1.0 / r0);
            return dpm_second_order(alg, c.solver_type, sample, t, s0, h, m0, d1, noise);
        }
        let s2 = alpha_sigma(self.sigma_at(i - 2)?, flow);
        let lambda_s2 = lambda(s2.0, s2.1);
        let m2 = self.model_outputs.get(2)?;
        let r1 = (lambda_s1 - lambda_s2) / h;
        let d1_0 = (m0.clone() - m1.clone()) * (1.0 / r0);
        let d1_1 = (m1 - m2) * (1.0 / r1);
        let d1 = d1_0.clone() + (d1_0.clone() - d1_1.clone()) * (r0 / (r0 + r1));
        let d2 = (d1_0 - d1_1) * (1.0 / (r0 + r1));
        dpm_third_order(alg, sample, t, s0, h, m0, d1, Some(d2), noise)
    }
}

/// How a DPM-Solver scheduler turns the model output into what it integrates.
pub(crate) struct DpmConvert {
    pub algorithm: DpmAlgorithm,
    pub prediction: PredictionType,
    pub learned_variance: bool,
    pub thresholding: Option<(f64, f64)>,
    pub flow: bool,
}

impl DpmConvert {
    /// diffusers' `convert_model_output`: x0 (dpmsolver++) or ε (dpmsolver).
    pub fn convert<const D: usize>(
        &self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        sigma: f32,
        name: &'static str,
    ) -> Result<Tensor<D>> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma, self.flow);
        let model_output = if self.learned_variance && self.prediction == PredictionType::Epsilon {
            let channels = model_output.dims().get(1).copied().unwrap_or(3);
            model_output.narrow(1, 0, 3.min(channels))
        } else {
            model_output
        };
        if self.algorithm.data_prediction() {
            let x0 = match self.prediction {
                PredictionType::Epsilon => (sample - model_output * sigma_t) / alpha_t,
                PredictionType::Sample => model_output,
                PredictionType::VPrediction => sample * alpha_t - model_output * sigma_t,
                PredictionType::FlowPrediction => sample - model_output * sigma,
            };
            match self.thresholding {
                Some((ratio, max)) => threshold_sample(x0, ratio, max),
                None => Ok(x0),
            }
        } else {
            let eps = match self.prediction {
                PredictionType::Epsilon => model_output,
                PredictionType::Sample => (sample.clone() - model_output * alpha_t) / sigma_t,
                PredictionType::VPrediction => model_output * alpha_t + sample.clone() * sigma_t,
                PredictionType::FlowPrediction => return Err(self.prediction.unsupported(name)),
            };
            match self.thresholding {
                Some((ratio, max)) => {
                    let x0 = (sample.clone() - eps * sigma_t) / alpha_t;
                    let x0 = threshold_sample(x0, ratio, max)?;
                    Ok((sample - x0 * alpha_t) / sigma_t)
                }
                None => Ok(eps),
            }
        }
    }
}

fn noise_term<const D: usize>(z: Option<Tensor<D>>, coef: f32) -> Result<Tensor<D>> {
    z.map(|z| z * coef)
        .ok_or_else(|| SchedulerError::Noise("SDE variant needs noise".into()))
}

/// First-order DPM-Solver (DDIM-like) update from `s` to `t`; `(α, σ)` pairs, `h = λ_t − λ_s`.
pub(crate) fn dpm_first_order<const D: usize>(
    alg: DpmAlgorithm,
    sample: Tensor<D>,
    (alpha_t, sigma_t): (f32, f32),
    (alpha_s, sigma_s): (f32, f32),
    h: f32,
    m0: Tensor<D>,
    noise: Option<Tensor<D>>,
) -> Result<Tensor<D>> {
    Ok(match alg {
        DpmAlgorithm::DpmSolverPlusPlus => {
            sample * (sigma_t / sigma_s) - m0 * (alpha_t * ((-h).exp() - 1.0))
        }
        DpmAlgorithm::DpmSolver => sample * (alpha_t / alpha_s) - m0 * (sigma_t * (h.exp() - 1.0)),
        DpmAlgorithm::SdeDpmSolverPlusPlus => {
            sample * (sigma_t / sigma_s * (-h).exp())
                + m0 * (alpha_t * (1.0 - (-2.0 * h).exp()))
                + noise_term(noise, sigma_t * (1.0 - (-2.0 * h).exp()).sqrt())?
        }
        DpmAlgorithm::SdeDpmSolver => {
            sample * (alpha_t / alpha_s) - m0 * (2.0 * (sigma_t * (h.exp() - 1.0)))
                + noise_term(noise, sigma_t * ((2.0 * h).exp() - 1.0).sqrt())?
        }
    })
}

/// Second-order update from the base point `b` to `t` with `D0`, `D1`
/// (multistep: base `s0`; singlestep: base `s1`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn dpm_second_order<const D: usize>(
    alg: DpmAlgorithm,
    solver: DpmSolverType,
    sample: Tensor<D>,
    (alpha_t, sigma_t): (f32, f32),
    (alpha_b, sigma_b): (f32, f32),
    h: f32,
    d0: Tensor<D>,
    d1: Tensor<D>,
    noise: Option<Tensor<D>>,
) -> Result<Tensor<D>> {
    let midpoint = solver == DpmSolverType::Midpoint;
    Ok(match alg {
        DpmAlgorithm::DpmSolverPlusPlus => {
            let base = sample * (sigma_t / sigma_b) - d0 * (alpha_t * ((-h).exp() - 1.0));
            if midpoint {
                base - d1 * (0.5 * (alpha_t * ((-h).exp() - 1.0)))
            } else {
                base + d1 * (alpha_t * (((-h).exp() - 1.0) / h + 1.0))
            }
        }
        DpmAlgorithm::DpmSolver => {
            let base = sample * (alpha_t / alpha_b) - d0 * (sigma_t * (h.exp() - 1.0));
            if midpoint {
                base - d1 * (0.5 * (sigma_t * (h.exp() - 1.0)))
            } else {
                base - d1 * (sigma_t * ((h.exp() - 1.0) / h - 1.0))
            }
        }
        DpmAlgorithm::SdeDpmSolverPlusPlus => {
            let e2 = (-2.0 * h).exp();
            let base = sample * (sigma_t / sigma_b * (-h).exp()) + d0 * (alpha_t * (1.0 - e2));
            let mid = if midpoint {
                base + d1 * (0.5 * (alpha_t * (1.0 - e2)))
            } else {
                base + d1 * (alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0))
            };
            mid + noise_term(noise, sigma_t * (1.0 - e2).sqrt())?
        }
        DpmAlgorithm::SdeDpmSolver => {
            let base = sample * (alpha_t / alpha_b) - d0 * (2.0 * (sigma_t * (h.exp() - 1.0)));
            let mid = if midpoint {
                base - d1 * (sigma_t * (h.exp() - 1.0))
            } else {
                base - d1 * (2.0 * (sigma_t * ((h.exp() - 1.0) / h - 1.0)))
            };
            mid + noise_term(noise, sigma_t * ((2.0 * h).exp() - 1.0).sqrt())?
        }
    })
}

/// Third-order update from the base point `b` to `t` with `D0`, `D1` and
/// (without it: singlestep midpoint) `D2`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn dpm_third_order<const D: usize>(
    alg: DpmAlgorithm,
    sample: Tensor<D>,
    (alpha_t, sigma_t): (f32, f32),
    (alpha_b, sigma_b): (f32, f32),
    h: f32,
    d0: Tensor<D>,
    d1: Tensor<D>,
    d2: Option<Tensor<D>>,
    noise: Option<Tensor<D>>,
) -> Result<Tensor<D>> {
    let x = match alg {
        DpmAlgorithm::DpmSolverPlusPlus => {
            let x = sample * (sigma_t / sigma_b) - d0 * (alpha_t * ((-h).exp() - 1.0))
                + d1 * (alpha_t * (((-h).exp() - 1.0) / h + 1.0));
            match d2 {
                Some(d2) => x - d2 * (alpha_t * (((-h).exp() - 1.0 + h) / (h * h) - 0.5)),
                None => x,
            }
        }
        DpmAlgorithm::DpmSolver => {
            let x = sample * (alpha_t / alpha_b)
                - d0 * (sigma_t * (h.exp() - 1.0))
                - d1 * (sigma_t * ((h.exp() - 1.0) / h - 1.0));
            match d2 {
                Some(d2) => x - d2 * (sigma_t * ((h.exp() - 1.0 - h) / (h * h) - 0.5)),
                None => x,
            }
        }
        DpmAlgorithm::SdeDpmSolverPlusPlus => {
            let e2 = (-2.0 * h).exp();
            let x = sample * (sigma_t / sigma_b * (-h).exp())
                + d0 * (alpha_t * (1.0 - e2))
                + d1 * (alpha_t * ((1.0 - e2) / (-2.0 * h) + 1.0));
            let x = match d2 {
                Some(d2) => {
                    x + d2 * (alpha_t * ((1.0 - e2 - 2.0 * h) / ((2.0 * h) * (2.0 * h)) - 0.5))
                }
                None => x,
            };
            x + noise_term(noise, sigma_t * (1.0 - e2).sqrt())?
        }
        DpmAlgorithm::SdeDpmSolver => {
            return Err(SchedulerError::Unsupported(
                "third-order sde-dpmsolver (diffusers has none)".into(),
            ));
        }
    };
    Ok(x)
}

impl<const D: usize> Scheduler<D> for DpmSolverMultistepScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, true, false, true)?;
        let c = self.config.clone();
        let train = c.num_train_timesteps;
        let mut flow_shift = c.flow_shift;
        if let Some(mu) = request.mu {
            if !c.use_dynamic_shifting {
                return Err(invalid("mu needs use_dynamic_shifting"));
            }
            flow_shift = mu.exp();
        }
        let custom = request.timesteps.is_some();
        if custom
            && (c.use_karras_sigmas
                || c.use_lu_lambdas
                || c.use_exponential_sigmas
                || c.use_beta_sigmas)
        {
            return Err(SchedulerError::InvalidSchedule(
                "custom timesteps cannot be combined with Karras / Lu / exponential sigmas".into(),
            ));
        }
        let mut timesteps: Vec<f64> = match &request.timesteps {
            Some(t) if t.is_empty() => return Err(SchedulerError::ZeroSteps),
            Some(t) => t.iter().map(|v| v.trunc()).collect(),
            None => {
                let n = request.count()?;
                check_steps(n, train)?;
                self.spaced(n)
            }
        };
        let n = request.num_inference_steps.unwrap_or(timesteps.len());
        let train_sigmas = self.schedule.sigmas();
        let log_sig = log_sigmas(&train_sigmas);
        let desc: Vec<f64> = train_sigmas.iter().rev().map(|&s| s as f64).collect();
        let round = c.beta_schedule != BetaSchedule::SquaredcosCapV2;
        let to_t = |sig: &[f64], round: bool| -> Vec<f64> {
            sig.iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &log_sig);
                    if round { t.round_ties_even() } else { t }
                })
                .collect()
        };
        let (first, last) = (desc[0], desc[desc.len() - 1]);
        let sigmas: Vec<f64> = if c.use_karras_sigmas {
            let s = karras_sigmas(last, first, n);
            timesteps = to_t(&s, round);
            s
        } else if c.use_lu_lambdas {
            let (lmax, lmin) = (log_sig[log_sig.len() - 1] as f64, log_sig[0] as f64);
            let s: Vec<f64> = np_linspace(lmax, lmin, n)
                .into_iter()
                .map(f64::exp)
                .collect();
            timesteps = to_t(&s, round);
            s
        } else if c.use_exponential_sigmas || c.use_beta_sigmas {
            let s = if c.use_beta_sigmas {
                beta_sigmas(last, first, n)
            } else {
                exponential_sigmas(last, first, n)
            };
            timesteps = to_t(&s, false);
            s
        } else if c.use_flow_sigmas {
            let s = flow_sigmas(n, train, flow_shift);
            timesteps = s.iter().map(|s| s * train as f64).collect();
            s
        } else {
            timesteps
                .iter()
                .map(|&t| interp_index(t, &train_sigmas))
                .collect()
        };
        let final_sigma = match c.final_sigmas_type {
            FinalSigmasType::SigmaMin => train_sigmas[0],
            FinalSigmasType::Zero => 0.0,
        };
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        out.push(final_sigma);
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
        noise: &mut dyn NoiseSource<D>,
    ) -> Result<StepOutput<D>> {
        let len = self
            .num_inference_steps
            .ok_or(SchedulerError::NotInitialized("step"))?;
        let i = self.index.get_or_last(&self.timesteps, t);
        let c = self.config.clone();
        let lower_order_final = i == len - 1
            && (c.euler_at_final
                || (c.lower_order_final && len < 15)
                || c.final_sigmas_type == FinalSigmasType::Zero);
        let lower_order_second = i + 2 == len && c.lower_order_final && len < 15;
        let x =
            self.convert_model_output(model_output, sample.clone(), self.sigma_at(i as isize)?)?;
        self.model_outputs.push(x.clone());
        let z = if c.algorithm_type.sde() {
            Some(noise.noise(sample.dims(), &sample.device())?)
        } else {
            None
        };
        let order = if c.solver_order == 1 || self.lower_order_nums < 1 || lower_order_final {
            1
        } else if c.solver_order == 2 || self.lower_order_nums < 2 || lower_order_second {
            2
        } else {
            3
        };
        let prev = self.update(order, i, sample, z)?;
        if self.lower_order_nums < c.solver_order {
            self.lower_order_nums += 1;
        }
        self.index.advance();
        let x0 = c.algorithm_type.data_prediction().then_some(x);
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: x0,
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        let i = self.index.for_add_noise(&self.timesteps, t)?;
        let (alpha, sigma) = alpha_sigma(self.sigma_at(i as isize)?, self.flow());
        Ok(original * alpha + noise * sigma)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.index.begin = Some(index);
    }

    fn begin_index(&self) -> usize {
        self.index.begin.unwrap_or(0)
    }
}
