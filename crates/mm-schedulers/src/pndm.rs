//! PNDM / PLMS (Liu et al. 2022), diffusers `PNDMScheduler`.

use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use crate::common::{
    BetaSchedule, NoiseSchedule, PredictionType, TimestepSpacing, alpha_add_noise, check_steps,
    impl_beta_config, spaced_timesteps,
};
use crate::config::SchedulerConfig;
use crate::error::{Result, SchedulerError};
use crate::noise::NoiseSource;
use crate::scheduler::{Scheduler, StepOutput, TimestepRequest};

/// Config of [`PndmScheduler`] (diffusers defaults).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
#[allow(missing_docs)]
pub struct PndmConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub trained_betas: Option<Vec<f64>>,
    /// Skip the Runge-Kutta warm-up (PLMS only; SD 1.x configs set this).
    pub skip_prk_steps: bool,
    pub set_alpha_to_one: bool,
    pub prediction_type: PredictionType,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: usize,
}

impl Default for PndmConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            beta_start: 0.0001,
            beta_end: 0.02,
            beta_schedule: BetaSchedule::Linear,
            trained_betas: None,
            skip_prk_steps: false,
            set_alpha_to_one: false,
            prediction_type: PredictionType::Epsilon,
            timestep_spacing: TimestepSpacing::Leading,
            steps_offset: 0,
        }
    }
}

impl_beta_config!(PndmConfig, |_: &PndmConfig| false);

impl SchedulerConfig for PndmConfig {
    const CLASS_NAME: &'static str = "PNDMScheduler";
}

const NAME: &str = "PNDMScheduler";

/// PNDM / PLMS: deterministic linear multistep (Adams–Bashforth in ε),
/// optional Runge–Kutta warm-up; ~50 steps; the SD 1.x default ("PLMS").
#[derive(Clone, Debug)]
pub struct PndmScheduler<const D: usize> {
    config: PndmConfig,
    schedule: NoiseSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    prk_timesteps: Vec<i64>,
    num_inference_steps: Option<usize>,
    counter: usize,
    ets: Vec<Tensor<D>>,
    cur_model_output: Option<Tensor<D>>,
    cur_sample: Option<Tensor<D>>,
    begin_index: usize,
}

impl<const D: usize> PndmScheduler<D> {
    /// Builds the scheduler from its config.
    pub fn new(config: PndmConfig) -> Result<Self> {
        if !matches!(
            config.prediction_type,
            PredictionType::Epsilon | PredictionType::VPrediction
        ) {
            return Err(config.prediction_type.unsupported(NAME));
        }
        let schedule = NoiseSchedule::new(&config.beta_config())?;
        let final_alpha_cumprod = if config.set_alpha_to_one {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        Ok(Self {
            config,
            schedule,
            final_alpha_cumprod,
            timesteps: Vec::new(),
            prk_timesteps: Vec::new(),
            num_inference_steps: None,
            counter: 0,
            ets: Vec::new(),
            cur_model_output: None,
            cur_sample: None,
            begin_index: 0,
        })
    }

    /// The config.
    pub fn config(&self) -> &PndmConfig {
        &self.config
    }

    fn prev_sample(
        &self,
        sample: Tensor<D>,
        t: i64,
        prev_t: i64,
        model_output: Tensor<D>,
    ) -> Result<Tensor<D>> {
        let a_t = self
            .schedule
            .alpha_prod(t)
            .ok_or(SchedulerError::UnknownTimestep(t as f64))? as f32;
        let a_prev = self
            .schedule
            .alpha_prod(prev_t)
            .map_or(self.final_alpha_cumprod, |a| a as f32);
        let (b_t, b_prev) = (1.0 - a_t, 1.0 - a_prev);
        let model_output = match self.config.prediction_type {
            PredictionType::VPrediction => model_output * a_t.sqrt() + sample.clone() * b_t.sqrt(),
            _ => model_output,
        };
        let sample_coeff = (a_prev / a_t).sqrt();
        let denom = a_t * b_prev.sqrt() + (a_t * b_t * a_prev).sqrt();
        Ok(sample * sample_coeff - model_output * (a_prev - a_t) / denom)
    }

    fn ratio(&self) -> Result<i64> {
        let n = self
            .num_inference_steps
            .ok_or(SchedulerError::NotInitialized("step"))?;
        Ok((self.config.num_train_timesteps / n) as i64)
    }

    fn step_prk(
        &mut self,
        model_output: Tensor<D>,
        t: i64,
        sample: Tensor<D>,
    ) -> Result<Tensor<D>> {
        let diff = if self.counter % 2 == 1 {
            0
        } else {
            self.ratio()? / 2
        };
        let prev_t = t - diff;
        let t = self.prk_timesteps[self.counter / 4 * 4];
        let add = |acc: Option<Tensor<D>>, x: Tensor<D>| match acc {
            Some(a) => a + x,
            None => x,
        };
        let model_output = match self.counter % 4 {
            0 => {
                self.cur_model_output = Some(add(
                    self.cur_model_output.take(),
                    model_output.clone() * (1.0 / 6.0),
                ));
                self.ets.push(model_output.clone());
                self.cur_sample = Some(sample.clone());
                model_output
            }
            1 | 2 => {
                self.cur_model_output = Some(add(
                    self.cur_model_output.take(),
                    model_output.clone() * (1.0 / 3.0),
                ));
                model_output
            }
            _ => add(self.cur_model_output.take(), model_output * (1.0 / 6.0)),
        };
        let cur = self.cur_sample.clone().unwrap_or(sample);
        let prev = self.prev_sample(cur, t, prev_t, model_output)?;
        self.counter += 1;
        Ok(prev)
    }

    fn step_plms(
        &mut self,
        model_output: Tensor<D>,
        t: i64,
        sample: Tensor<D>,
    ) -> Result<Tensor<D>> {
        let ratio = self.ratio()?;
        let (mut t, mut prev_t) = (t, t - ratio);
        if self.counter != 1 {
            let keep = self.ets.len().saturating_sub(3);
            self.ets.drain(..keep);
            self.ets.push(model_output.clone());
        } else {
            prev_t = t;
            t += ratio;
        }
        let e = |k: usize| self.ets[self.ets.len() - k].clone();
        let mut sample = sample;
        let model_output = match (self.ets.len(), self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                model_output
            }
            (1, 1) => {
                sample = self.cur_sample.take().unwrap_or(sample);
                (model_output + e(1)) / 2.0
            }
            (2, _) => (e(1) * 3.0 - e(2)) / 2.0,
            (3, _) => (e(1) * 23.0 - e(2) * 16.0 + e(3) * 5.0) / 12.0,
            _ => (e(1) * 55.0 - e(2) * 59.0 + e(3) * 37.0 - e(4) * 9.0) * (1.0 / 24.0),
        };
        let prev = self.prev_sample(sample, t, prev_t, model_output)?;
        self.counter += 1;
        Ok(prev)
    }
}

impl<const D: usize> Scheduler<D> for PndmScheduler<D> {
    fn class_name(&self) -> &'static str {
        NAME
    }

    fn set_timesteps_with(&mut self, request: &TimestepRequest) -> Result<()> {
        request.reject(NAME, false, false, false)?;
        let n = request.count()?;
        let c = &self.config;
        check_steps(n, c.num_train_timesteps)?;
        let mut asc: Vec<i64> = spaced_timesteps(
            c.timestep_spacing,
            c.num_train_timesteps,
            n,
            c.steps_offset,
            true,
        )
        .into_iter()
        .map(|t| t as i64)
        .collect();
        asc.reverse();
        let len = asc.len();
        let (prk, plms): (Vec<i64>, Vec<i64>) = if c.skip_prk_steps {
            let mut plms: Vec<i64> = asc[..len - 1].to_vec();
            if len >= 2 {
                plms.push(asc[len - 2]);
            }
            plms.push(asc[len - 1]);
            plms.reverse();
            (Vec::new(), plms)
        } else {
            if len < 4 {
                return Err(SchedulerError::InvalidSchedule(
                    "PNDM with PRK steps needs at least 4 steps".into(),
                ));
            }
            let half = (c.num_train_timesteps / n / 2) as i64;
            let base: Vec<i64> = asc[len - 4..].iter().flat_map(|&t| [t, t + half]).collect();
            let mut prk: Vec<i64> = base[..base.len() - 1]
                .iter()
                .flat_map(|&t| [t, t])
                .collect();
            prk = prk[1..prk.len() - 1].to_vec();
            prk.reverse();
            let plms: Vec<i64> = asc[..len - 3].iter().rev().copied().collect();
            (prk, plms)
        };
        self.timesteps = prk.iter().chain(&plms).map(|&t| t as f64).collect();
        self.prk_timesteps = prk;
        self.num_inference_steps = Some(n);
        self.counter = 0;
        self.ets.clear();
        self.cur_model_output = None;
        self.cur_sample = None;
        self.begin_index = 0;
        Ok(())
    }

    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        self.ratio()?;
        let t = t as i64;
        let prev = if self.counter < self.prk_timesteps.len() && !self.config.skip_prk_steps {
            self.step_prk(model_output, t, sample)?
        } else {
            if !self.config.skip_prk_steps && self.ets.len() < 3 {
                return Err(SchedulerError::InvalidSchedule(
                    "PLMS step before the PRK warm-up ran".into(),
                ));
            }
            self.step_plms(model_output, t, sample)?
        };
        Ok(StepOutput {
            prev_sample: prev,
            pred_original_sample: None,
        })
    }

    fn add_noise(&self, original: Tensor<D>, noise: Tensor<D>, t: f64) -> Result<Tensor<D>> {
        alpha_add_noise(&self.schedule, original, noise, t)
    }

    fn set_begin_index(&mut self, index: usize) {
        self.begin_index = index;
    }

    fn begin_index(&self) -> usize {
        self.begin_index
    }
}
