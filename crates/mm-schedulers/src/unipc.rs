//! UniPC (Zhao et al. 2023): unified predictor–corrector, diffusers
//! `UniPCMultistepScheduler` (B(h) variants `bh1` / `bh2`, data or noise
//! prediction, Karras / exponential / flow sigmas, dynamic shifting).

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, FinalSigmasType, History, NoiseSchedule, PredictionType, StepIndex,
    TimestepSpacing, alpha_sigma, beta_sigmas, check_sigma_flags, check_steps, exponential_sigmas,
    impl_beta_config, interp_index, karras_sigmas, lambda, log_sigmas, np_linspace, sigma_to_t,
    solve_linear, solver_timesteps, stretch_to_terminal, threshold_sample,
};
use crate::config::{SchedulerConfig, invalid};
use crate::error::{Result, SchedulerError};
use crate::flow_match_euler::TimeShiftType;
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// `solver_type` of UniPC: the B(h) function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum UniPcSolverType {
    /// `bh1`: `B(h) = h` (better for unconditional / few steps).
    #[serde(rename = "bh1")]
    Bh1,
    /// `bh2`: `B(h) = e^h − 1` (guided sampling).
    #[default]
    #[serde(rename = "bh2", alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

/// Config of [`UniPcScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct UniPcConfig {
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
    pub predict_x0: bool,
    pub solver_type: UniPcSolverType,
    pub lower_order_final: bool,
    /// Step indices whose corrector is skipped.
    pub disable_corrector: Vec<usize>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
    pub final_sigmas_type: FinalSigmasType,
    pub rescale_betas_zero_snr: bool,
    pub use_dynamic_shifting: bool,
    pub time_shift_type: TimeShiftType,
    pub sigma_min: Option<f64>,
    pub sigma_max: Option<f64>,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
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
            predict_x0: true,
            solver_type: UniPcSolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            rescale_betas_zero_snr: false,
            use_dynamic_shifting: false,
            time_shift_type: TimeShiftType::Exponential,
            sigma_min: None,
            sigma_max: None,
            shift_terminal: None,
        }
    }
}

impl_beta_config!(UniPcConfig);

impl SchedulerConfig for UniPcConfig {
    const CLASS_NAME: &'static str = "UniPCMultistepScheduler";
}

const NAME: &str = "UniPCMultistepScheduler";

/// UniPC: deterministic predictor–corrector multistep solver; very good in
/// 5–20 steps.
#[derive(Clone, Debug)]
pub struct UniPcScheduler<const D: usize> {
    config: UniPcConfig,
    schedule: NoiseSchedule,
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    num_inference_steps: Option<usize>,
    model_outputs: History<D>,
    lower_order_nums: usize,
    this_order: usize,
    last_sample: Option<Tensor<D>>,
    index: StepIndex,
}

/// The UniPC B(h) system: rows `R`, right-hand side `b`, `φ₁(hh)`, `B(h)`.
struct BhSystem {
    r: Vec<Vec<f64>>,
    b: Vec<f64>,
    h_phi_1: f32,
    b_h: f32,
}

impl<const D: usize> UniPcScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: UniPcConfig) -> Result<Self> {
        let c = &config;
        check_sigma_flags(
            c.use_karras_sigmas,
            c.use_exponential_sigmas,
            c.use_beta_sigmas,
        )?;
        if c.solver_order == 0 {
            return Err(invalid("solver_order must be at least 1"));
        }
        if c.shift_terminal.is_some() && !c.use_flow_sigmas {
            return Err(invalid("shift_terminal needs use_flow_sigmas"));
        }
        if c.prediction_type == PredictionType::FlowPrediction && !c.predict_x0 {
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
            this_order: 1,
            last_sample: None,
            index: StepIndex::default(),
        })
    }

    /// The config.
    pub fn config(&self) -> &UniPcConfig {
        &self.config
    }

    fn flow(&self) -> bool {
        self.config.use_flow_sigmas
    }

    fn sigma_at(&self, i: isize) -> Result<f32> {
        usize::try_from(i)
            .ok()
            .and_then(|i| self.sigmas.get(i).copied())
            .ok_or_else(|| SchedulerError::InvalidSchedule(format!("sigma index {i} out of range")))
    }

    fn lambda_at(&self, i: isize) -> Result<(f32, f32, f32)> {
        let (a, s) = alpha_sigma(self.sigma_at(i)?, self.flow());
        Ok((a, s, lambda(a, s)))
    }

    fn convert_model_output(
        &self,
        model_output: Tensor<D>,
        sample: Tensor<D>,
        sigma: f32,
    ) -> Result<Tensor<D>> {
        let c = &self.config;
        let (alpha_t, sigma_t) = alpha_sigma(sigma, self.flow());
        if c.predict_x0 {
            let x0 = match c.prediction_type {
                PredictionType::Epsilon => (sample - model_output * sigma_t) / alpha_t,
                PredictionType::Sample => model_output,
                PredictionType::VPrediction => sample * alpha_t - model_output * sigma_t,
                PredictionType::FlowPrediction => sample - model_output * sigma,
            };
            if c.thresholding {
                return threshold_sample(x0, c.dynamic_thresholding_ratio, c.sample_max_value);
            }
            Ok(x0)
        } else {
            Ok(match c.prediction_type {
                PredictionType::Epsilon => model_output,
                PredictionType::Sample => (sample - model_output * alpha_t) / sigma_t,
                PredictionType::VPrediction => model_output * alpha_t + sample * sigma_t,
                PredictionType::FlowPrediction => return Err(c.prediction_type.unsupported(NAME)),
            })
        }
    }

    /// `R`, `b`, `φ₁`, `B(h)` for `rks` (the last one is 1), float32 like diffusers.
    fn bh_system(&self, h: f32, rks: &[f32]) -> BhSystem {
        let hh = if self.config.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1u64;
        let b_h = match self.config.solver_type {
            UniPcSolverType::Bh1 => hh,
            UniPcSolverType::Bh2 => hh.exp_m1(),
        };
        let mut r = Vec::new();
        let mut b = Vec::new();
        for i in 1..=rks.len() {
            r.push(rks.iter().map(|&rk| rk.powi(i as i32 - 1) as f64).collect());
            b.push((h_phi_k * factorial as f32 / b_h) as f64);
            factorial *= i as u64 + 1;
            h_phi_k = h_phi_k / hh - 1.0 / factorial as f32;
        }
        BhSystem { r, b, h_phi_1, b_h }
    }

    fn solve(r: &[Vec<f64>], b: &[f64], n: usize) -> Result<Vec<f32>> {
        let a = r[..n].iter().map(|row| row[..n].to_vec()).collect();
        solve_linear(a, b[..n].to_vec())
            .map(|x| x.into_iter().map(|v| v as f32).collect())
            .ok_or_else(|| {
                SchedulerError::InvalidSchedule("singular UniPC system (repeated sigmas?)".into())
            })
    }

    /// `x_t_` and the factor of the residual: `x_t = x_t_ − coef · residual`.
    fn base(
        &self,
        x: Tensor<D>,
        m0: Tensor<D>,
        t: (f32, f32),
        s0: (f32, f32),
        sys: &BhSystem,
    ) -> (Tensor<D>, f32) {
        let ((alpha_t, sigma_t), (alpha_s0, sigma_s0)) = (t, s0);
        if self.config.predict_x0 {
            (
                x * (sigma_t / sigma_s0) - m0 * (alpha_t * sys.h_phi_1),
                alpha_t * sys.b_h,
            )
        } else {
            (
                x * (alpha_t / alpha_s0) - m0 * (sigma_t * sys.h_phi_1),
                sigma_t * sys.b_h,
            )
        }
    }

    /// `rks` and `D1s` of previous outputs `k = 1..order`, at sigma indices `idx(k)`.
    fn differences(
        &self,
        order: usize,
        lambda_s0: f32,
        h: f32,
        m0: &Tensor<D>,
        idx: impl Fn(usize) -> isize,
    ) -> Result<(Vec<f32>, Vec<Tensor<D>>)> {
        let mut rks = Vec::new();
        let mut d1s = Vec::new();
        for k in 1..order {
            let (_, _, lambda_si) = self.lambda_at(idx(k))?;
            let rk = (lambda_si - lambda_s0) / h;
            rks.push(rk);
            d1s.push((self.model_outputs.get(k)? - m0.clone()) / rk);
        }
        rks.push(1.0);
        Ok((rks, d1s))
    }

    fn predictor(&self, i: usize, x: Tensor<D>, order: usize) -> Result<Tensor<D>> {
        let i = i as isize;
        let (alpha_t, sigma_t, lambda_t) = self.lambda_at(i + 1)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.lambda_at(i)?;
        let h = lambda_t - lambda_s0;
        let m0 = self.model_outputs.get(0)?;
        let (rks, d1s) = self.differences(order, lambda_s0, h, &m0, |k| i - k as isize)?;
        let sys = self.bh_system(h, &rks);
        let (x_t_, coef) = self.base(x, m0, (alpha_t, sigma_t), (alpha_s0, sigma_s0), &sys);
        if d1s.is_empty() {
            return Ok(x_t_);
        }
        let rhos = if order == 2 {
            vec![0.5]
        } else {
            Self::solve(&sys.r, &sys.b, order - 1)?
        };
        let res = weighted_sum(&rhos, &d1s)?;
        Ok(x_t_ - res * coef)
    }

    fn corrector(
        &self,
        i: usize,
        model_t: Tensor<D>,
        last: Tensor<D>,
        order: usize,
    ) -> Result<Tensor<D>> {
        let i = i as isize;
        let (alpha_t, sigma_t, lambda_t) = self.lambda_at(i)?;
        let (alpha_s0, sigma_s0, lambda_s0) = self.lambda_at(i - 1)?;
        let h = lambda_t - lambda_s0;
        let m0 = self.model_outputs.get(0)?;
        let (rks, d1s) = self.differences(order, lambda_s0, h, &m0, |k| i - (k as isize + 1))?;
        let sys = self.bh_system(h, &rks);
        let rhos = if order == 1 {
            vec![0.5]
        } else {
            Self::solve(&sys.r, &sys.b, order)?
        };
        let (x_t_, coef) = self.base(
            last,
            m0.clone(),
            (alpha_t, sigma_t),
            (alpha_s0, sigma_s0),
            &sys,
        );
        let d1_t = (model_t - m0) * rhos[rhos.len() - 1];
        let res = if d1s.is_empty() {
            d1_t
        } else {
            weighted_sum(&rhos[..rhos.len() - 1], &d1s)? + d1_t
        };
        Ok(x_t_ - res * coef)
    }
}

/// `Σ_k w_k · t_k` (diffusers' `einsum('k,bkc...->bc...')`).
fn weighted_sum<const D: usize>(w: &[f32], t: &[Tensor<D>]) -> Result<Tensor<D>> {
    w.iter()
        .zip(t)
        .map(|(w, t)| t.clone() * *w)
        .reduce(|a, b| a + b)
        .ok_or_else(|| SchedulerError::InvalidSchedule("empty UniPC sum".into()))
}

impl<const D: usize> Scheduler<D> for UniPcScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, false, true, true)?;
        let c = self.config.clone();
        let train = c.num_train_timesteps;
        if c.use_dynamic_shifting && request.mu.is_none() {
            return Err(invalid("use_dynamic_shifting needs `mu` in set_timesteps"));
        }
        // custom sigmas: flow sigmas only (before shifting), as in diffusers
        let custom: Option<Vec<f64>> = match &request.sigmas {
            Some(_)
                if !c.use_flow_sigmas
                    || c.use_karras_sigmas
                    || c.use_exponential_sigmas
                    || c.use_beta_sigmas =>
            {
                return Err(SchedulerError::Unsupported(format!(
                    "{NAME}: custom sigmas need use_flow_sigmas without Karras / exponential / beta sigmas"
                )));
            }
            Some(v) if v.is_empty() => return Err(SchedulerError::ZeroSteps),
            Some(v) => Some(v.iter().map(|&x| x as f32 as f64).collect()),
            None => None,
        };
        let n = match &custom {
            Some(v) => v.len(),
            None => request.count()?,
        };
        check_steps(n, train)?;
        let mut timesteps = solver_timesteps(c.timestep_spacing, train, train, n, c.steps_offset);
        let train_sigmas = self.schedule.sigmas();
        let log_sig = log_sigmas(&train_sigmas);
        let desc: Vec<f64> = train_sigmas.iter().rev().map(|&s| s as f64).collect();
        let (min, max) = (
            c.sigma_min.unwrap_or(desc[desc.len() - 1]),
            c.sigma_max.unwrap_or(desc[0]),
        );
        let converted_last = |s: &[f64]| match c.final_sigmas_type {
            FinalSigmasType::SigmaMin => s[s.len() - 1] as f32,
            FinalSigmasType::Zero => 0.0,
        };
        let (sigmas, last): (Vec<f64>, f32) = if c.use_karras_sigmas {
            let mut s = karras_sigmas(min, max, n);
            if c.use_flow_sigmas {
                s = s.iter().map(|v| v / (v + 1.0)).collect();
                timesteps = s.iter().map(|v| v * train as f64).collect();
            } else {
                timesteps = s
                    .iter()
                    .map(|&v| sigma_to_t(v, &log_sig).round_ties_even())
                    .collect();
            }
            let l = converted_last(&s);
            (s, l)
        } else if c.use_exponential_sigmas || c.use_beta_sigmas {
            let s = if c.use_beta_sigmas {
                beta_sigmas(min, max, n)
            } else {
                exponential_sigmas(min, max, n)
            };
            timesteps = s.iter().map(|&v| sigma_to_t(v, &log_sig)).collect();
            let l = converted_last(&s);
            (s, l)
        } else if c.use_flow_sigmas {
            let mut s = custom.clone().unwrap_or_else(|| {
                let mut s = np_linspace(1.0, 1.0 / train as f64, n + 1);
                s.truncate(n);
                s
            });
            s = match request.mu {
                Some(mu) if c.use_dynamic_shifting => {
                    s.iter().map(|&t| c.time_shift_type.shift(mu, t)).collect()
                }
                _ => s
                    .iter()
                    .map(|&v| c.flow_shift * v / (1.0 + (c.flow_shift - 1.0) * v))
                    .collect(),
            };
            if let Some(term) = c.shift_terminal.filter(|v| *v != 0.0) {
                s = stretch_to_terminal(&s, term);
            }
            if (s[0] - 1.0).abs() < 1e-6 {
                s[0] -= 1e-6;
            }
            timesteps = s.iter().map(|v| v * train as f64).collect();
            let l = converted_last(&s);
            (s, l)
        } else {
            let s = timesteps
                .iter()
                .map(|&t| interp_index(t, &train_sigmas))
                .collect();
            let l = match c.final_sigmas_type {
                FinalSigmasType::SigmaMin => train_sigmas[0],
                FinalSigmasType::Zero => 0.0,
            };
            (s, l)
        };
        let mut out: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        out.push(last);
        self.timesteps = timesteps.iter().map(|t| t.trunc()).collect();
        self.sigmas = out;
        self.num_inference_steps = Some(self.timesteps.len());
        self.model_outputs = History::new(c.solver_order);
        self.lower_order_nums = 0;
        self.this_order = 1;
        self.last_sample = None;
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
        let m =
            self.convert_model_output(model_output, sample.clone(), self.sigma_at(i as isize)?)?;
        let mut sample = sample;
        if i > 0
            && !self.config.disable_corrector.contains(&(i - 1))
            && let Some(last) = self.last_sample.take()
        {
            sample = self.corrector(i, m.clone(), last, self.this_order)?;
        }
        self.model_outputs.push(m.clone());
        let order = self.config.solver_order;
        let this = if self.config.lower_order_final {
            order.min(len - i)
        } else {
            order
        };
        self.this_order = this.min(self.lower_order_nums + 1);
        self.last_sample = Some(sample.clone());
        let prev = self.predictor(i, sample, self.this_order)?;
        if self.lower_order_nums < order {
            self.lower_order_nums += 1;
        }
        self.index.advance();
        let x0 = self.config.predict_x0.then_some(m);
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
