//! Shared building blocks: config enums, beta schedules, timestep spacing,
//! sigma conversions and sample-space helpers.
//!
//! Precision follows diffusers: betas and `alphas_cumprod` are float32
//! tensors there (cumprod accumulates in float64), sigma tables are float32,
//! interpolation and Karras/exponential conversions run in float64 numpy and
//! are cast to float32 at the end.

use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SchedulerError};

/// How betas are laid out over the training timesteps (`beta_schedule`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BetaSchedule {
    /// `linear`: betas linear from `beta_start` to `beta_end`.
    #[default]
    #[serde(rename = "linear")]
    Linear,
    /// `scaled_linear`: square roots linear, squared (Stable Diffusion).
    #[serde(rename = "scaled_linear")]
    ScaledLinear,
    /// `squaredcos_cap_v2`: the cosine schedule of Nichol & Dhariwal.
    #[serde(rename = "squaredcos_cap_v2")]
    SquaredcosCapV2,
    /// `exp`: `betas_for_alpha_bar` with `ᾱ(t) = exp(-12 t)` (Heun).
    #[serde(rename = "exp")]
    Exp,
}

/// What the model predicts (`prediction_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PredictionType {
    /// The noise.
    #[default]
    #[serde(rename = "epsilon")]
    Epsilon,
    /// The clean sample (diffusers also calls it `original_sample`).
    #[serde(rename = "sample", alias = "original_sample")]
    Sample,
    /// The velocity `alpha * eps - sigma * x0`.
    #[serde(rename = "v_prediction")]
    VPrediction,
    /// The flow-matching velocity `noise - x0`.
    #[serde(rename = "flow_prediction")]
    FlowPrediction,
}

impl PredictionType {
    /// The diffusers name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Epsilon => "epsilon",
            Self::Sample => "sample",
            Self::VPrediction => "v_prediction",
            Self::FlowPrediction => "flow_prediction",
        }
    }

    pub(crate) fn unsupported(self, scheduler: &'static str) -> SchedulerError {
        SchedulerError::UnsupportedPredictionType(self.as_str().to_string(), scheduler)
    }
}

/// How inference timesteps are spread over the training range (`timestep_spacing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestepSpacing {
    /// `leading`: `0, r, 2r, …` plus `steps_offset` (SD 1.x style).
    #[default]
    #[serde(rename = "leading")]
    Leading,
    /// `trailing`: ends at `num_train_timesteps - 1` (zero-SNR papers).
    #[serde(rename = "trailing")]
    Trailing,
    /// `linspace`: evenly from `0` to `num_train_timesteps - 1`.
    #[serde(rename = "linspace")]
    Linspace,
}

/// The last sigma of a sigma schedule (`final_sigmas_type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum FinalSigmasType {
    /// Append `0`.
    #[default]
    #[serde(rename = "zero")]
    Zero,
    /// Append the smallest training sigma.
    #[serde(rename = "sigma_min")]
    SigmaMin,
}

/// Inputs of a training noise schedule, shared by all DDPM-family configs.
#[derive(Clone, Debug)]
pub struct BetaConfig<'a> {
    /// `num_train_timesteps`.
    pub num_train_timesteps: usize,
    /// `beta_start`.
    pub beta_start: f64,
    /// `beta_end`.
    pub beta_end: f64,
    /// `beta_schedule`.
    pub beta_schedule: BetaSchedule,
    /// `trained_betas`, used instead of the schedule when given.
    pub trained_betas: Option<&'a [f64]>,
    /// `rescale_betas_zero_snr`.
    pub rescale_betas_zero_snr: bool,
}

/// Implements `beta_config()` for a config struct with diffusers' standard
/// noise-schedule fields (`rescale_betas_zero_snr` optional).
macro_rules! impl_beta_config {
    ($t:ty) => {
        impl_beta_config!($t, |c: &$t| c.rescale_betas_zero_snr);
    };
    ($t:ty, $rescale:expr) => {
        impl $t {
            /// The training noise schedule inputs of this config.
            pub fn beta_config(&self) -> $crate::common::BetaConfig<'_> {
                $crate::common::BetaConfig {
                    num_train_timesteps: self.num_train_timesteps,
                    beta_start: self.beta_start,
                    beta_end: self.beta_end,
                    beta_schedule: self.beta_schedule,
                    trained_betas: self.trained_betas.as_deref(),
                    rescale_betas_zero_snr: ($rescale)(self),
                }
            }
        }
    };
}
pub(crate) use impl_beta_config;

/// The training noise schedule: betas and cumulative alphas, float32 as in diffusers.
#[derive(Clone, Debug)]
pub struct NoiseSchedule {
    /// `betas`.
    pub betas: Vec<f32>,
    /// `alphas_cumprod`.
    pub alphas_cumprod: Vec<f32>,
}

/// `torch.linspace(start, end, n, dtype=float32)`, bit-exact.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (s, e) = (start as f32, end as f32);
    if n == 1 {
        return vec![s];
    }
    let step = (e - s) / (n - 1) as f32;
    let half = n / 2;
    (0..n)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, s)
            } else {
                (-step).mul_add((n - i - 1) as f32, e)
            }
        })
        .collect()
}

/// `betas_for_alpha_bar`: cosine (`squaredcos_cap_v2`) or `exp` transform.
fn betas_for_alpha_bar(n: usize, max_beta: f64, exp: bool) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        if exp {
            (t * -12.0).exp()
        } else {
            ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
                .cos()
                .powi(2)
        }
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(max_beta) as f32
        })
        .collect()
}

/// `torch.cumprod` of a float32 vector (float64 accumulation, float32 results).
fn cumprod(x: &[f32]) -> Vec<f32> {
    let mut acc = 1.0f64;
    x.iter()
        .map(|&v| {
            acc *= v as f64;
            acc as f32
        })
        .collect()
}

/// `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), in float32.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
    let mut sqrt: Vec<f32> = cumprod(&alphas).iter().map(|a| a.sqrt()).collect();
    let (first, last) = (sqrt[0], sqrt[sqrt.len() - 1]);
    let scale = first / (first - last);
    for v in sqrt.iter_mut() {
        *v = (*v - last) * scale;
    }
    let bar: Vec<f32> = sqrt.iter().map(|v| v * v).collect();
    let mut out = Vec::with_capacity(bar.len());
    out.push(1.0 - bar[0]);
    for i in 1..bar.len() {
        out.push(1.0 - bar[i] / bar[i - 1]);
    }
    out
}

impl NoiseSchedule {
    /// Builds betas and `alphas_cumprod` from a config.
    pub fn new(c: &BetaConfig<'_>) -> Result<Self> {
        if c.num_train_timesteps == 0 {
            return Err(SchedulerError::InvalidConfig(
                "num_train_timesteps must be > 0".into(),
            ));
        }
        let mut betas = match (c.trained_betas, c.beta_schedule) {
            (Some(b), _) => {
                if b.is_empty() {
                    return Err(SchedulerError::InvalidConfig(
                        "trained_betas is empty".into(),
                    ));
                }
                b.iter().map(|&v| v as f32).collect()
            }
            (None, BetaSchedule::Linear) => {
                torch_linspace_f32(c.beta_start, c.beta_end, c.num_train_timesteps)
            }
            (None, BetaSchedule::ScaledLinear) => torch_linspace_f32(
                c.beta_start.sqrt(),
                c.beta_end.sqrt(),
                c.num_train_timesteps,
            )
            .into_iter()
            .map(|v| v * v)
            .collect(),
            (None, BetaSchedule::SquaredcosCapV2) => {
                betas_for_alpha_bar(c.num_train_timesteps, 0.999, false)
            }
            (None, BetaSchedule::Exp) => betas_for_alpha_bar(c.num_train_timesteps, 0.999, true),
        };
        if c.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas: Vec<f32> = betas.iter().map(|b| 1.0 - b).collect();
        let alphas_cumprod = cumprod(&alphas);
        Ok(Self {
            betas,
            alphas_cumprod,
        })
    }

    /// Number of training timesteps.
    pub fn len(&self) -> usize {
        self.alphas_cumprod.len()
    }

    /// Whether the schedule is empty (never true for a built schedule).
    pub fn is_empty(&self) -> bool {
        self.alphas_cumprod.is_empty()
    }

    /// `alphas_cumprod[t]` as f64, `None` when `t` is out of range.
    pub fn alpha_prod(&self, t: i64) -> Option<f64> {
        usize::try_from(t)
            .ok()
            .and_then(|i| self.alphas_cumprod.get(i))
            .map(|&a| a as f64)
    }

    /// Training sigmas `((1 - ᾱ) / ᾱ)^½`, float32 as diffusers computes them.
    pub fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| ((1.0 - a) / a).sqrt())
            .collect()
    }

    /// Sets the last `alphas_cumprod` to `2^-24` (Euler-family zero-SNR fix).
    pub(crate) fn fix_zero_snr_terminal(&mut self) {
        if let Some(last) = self.alphas_cumprod.last_mut() {
            *last = 2f32.powi(-24);
        }
    }
}

/// `numpy.linspace(a, b, n)` in float64.
pub(crate) fn np_linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => {
            let step = (b - a) / (n - 1) as f64;
            let mut v: Vec<f64> = (0..n).map(|i| a + i as f64 * step).collect();
            v[n - 1] = b;
            v
        }
    }
}

/// `numpy.arange(start, stop, step)` in float64.
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    if !(len.is_finite() && len > 0.0) {
        return vec![];
    }
    (0..len as usize).map(|i| start + i as f64 * step).collect()
}

/// `numpy.interp(x, arange(len(fp)), fp)`.
pub(crate) fn interp_index(x: f64, fp: &[f32]) -> f64 {
    let n = fp.len();
    if n == 0 {
        return 0.0;
    }
    if x <= 0.0 {
        return fp[0] as f64;
    }
    if x >= (n - 1) as f64 {
        return fp[n - 1] as f64;
    }
    let j = x.floor() as usize;
    let slope = (fp[j + 1] as f64 - fp[j] as f64) / 1.0;
    slope * (x - j as f64) + fp[j] as f64
}

/// The timestep spacing shared by DDIM, DDPM, Euler, Euler ancestral, Heun and PNDM:
/// descending timesteps as float64 (integers except unrounded `linspace` when
/// `round_linspace` is false).
pub(crate) fn spaced_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    n: usize,
    steps_offset: usize,
    round_linspace: bool,
) -> Vec<f64> {
    let t = num_train as f64;
    match spacing {
        TimestepSpacing::Linspace => {
            let mut v = np_linspace(0.0, t - 1.0, n);
            v.reverse();
            if round_linspace {
                v.iter().map(|x| x.round_ties_even()).collect()
            } else {
                v.iter().map(|&x| x as f32 as f64).collect()
            }
        }
        TimestepSpacing::Leading => {
            let ratio = num_train / n;
            (0..n)
                .rev()
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(t, 0.0, -(t / n as f64))
            .into_iter()
            .map(|x| x.round_ties_even() - 1.0)
            .collect(),
    }
}

/// Checks `1 <= n <= num_train`.
pub(crate) fn check_steps(n: usize, num_train: usize) -> Result<()> {
    if n == 0 {
        return Err(SchedulerError::ZeroSteps);
    }
    if n > num_train {
        return Err(SchedulerError::TooManySteps {
            steps: n,
            train: num_train,
        });
    }
    Ok(())
}

/// Karras et al. (2022) sigmas, rho = 7, float64.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (min_inv, max_inv) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
        .collect()
}

/// Exponential (log-linear) sigmas, float64.
pub(crate) fn exponential_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(sigma_max.ln(), sigma_min.ln(), n)
        .into_iter()
        .map(f64::exp)
        .collect()
}

/// Natural log of the float32 training sigmas, float32 as `np.log` on them.
pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|s| s.ln()).collect()
}

/// `_sigma_to_t`: fractional training timestep whose sigma is `sigma`, by
/// linear interpolation of log-sigmas (ascending training sigmas).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // argmax of cumsum(dists >= 0): the last index whose log-sigma <= log_sigma, else 0
    let low = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - l as f64 >= 0.0)
        .unwrap_or(0);
    let low = low.min(n - 2);
    let high = low + 1;
    let (l, h) = (log_sigmas[low], log_sigmas[high]);
    let w = ((l as f64 - log_sigma) / (l - h) as f64).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * high as f64
}

/// Index of `t` in `timesteps` as diffusers' `index_for_timestep`: the second
/// match when there are several (img2img starts mid-schedule), else the first.
pub(crate) fn index_for_timestep(timesteps: &[f64], t: f64) -> Result<usize> {
    let mut it = timesteps
        .iter()
        .enumerate()
        .filter(|(_, v)| **v == t)
        .map(|(i, _)| i);
    let first = it.next().ok_or(SchedulerError::UnknownTimestep(t))?;
    Ok(it.next().unwrap_or(first))
}

/// `int(n * strength)` steps from the end of a schedule: the begin index of
/// img2img (`StableDiffusionImg2ImgPipeline.get_timesteps`) for `n` steps and `order`.
pub fn img2img_begin_index(
    num_inference_steps: usize,
    order: usize,
    strength: f64,
) -> Result<usize> {
    if !(0.0..=1.0).contains(&strength) {
        return Err(SchedulerError::InvalidStrength(strength));
    }
    let init = ((num_inference_steps as f64 * strength) as usize).min(num_inference_steps);
    Ok(num_inference_steps.saturating_sub(init) * order)
}

/// Reads a tensor's values as float32.
pub(crate) fn to_vec<const D: usize>(x: Tensor<D>) -> Result<Vec<f32>> {
    x.try_into_data()
        .map_err(|e| SchedulerError::Shape(format!("cannot read tensor: {e:?}")))?
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| SchedulerError::Shape(format!("cannot read tensor: {e:?}")))
}

/// Builds a float tensor of `shape` from values.
pub(crate) fn from_vec<const D: usize>(
    v: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// diffusers' `_threshold_sample` (dynamic thresholding, Imagen): per batch
/// item, clamp to the `ratio` quantile `s` of |x| (clamped to `[1, max]`) and divide by `s`.
pub(crate) fn threshold_sample<const D: usize>(
    x: Tensor<D>,
    ratio: f64,
    max_value: f64,
) -> Result<Tensor<D>> {
    let dims = x.dims();
    let device = x.device();
    let mut v = to_vec(x)?;
    let batch = dims.first().copied().unwrap_or(1).max(1);
    let per = v.len() / batch;
    if per == 0 {
        return Ok(from_vec(v, dims, &device));
    }
    let ratio = ratio as f32;
    for row in v.chunks_mut(per) {
        let mut abs: Vec<f32> = row.iter().map(|a| a.abs()).collect();
        abs.sort_by(f32::total_cmp);
        let pos = ratio * (per - 1) as f32;
        let lo = pos.floor() as usize;
        let hi = (pos.ceil() as usize).min(per - 1);
        let w = pos - lo as f32;
        let (a, b) = (abs[lo], abs[hi]);
        let q = if w < 0.5 {
            a + w * (b - a)
        } else {
            b - (b - a) * (1.0 - w)
        };
        let s = q.max(1.0).min(max_value as f32);
        for e in row.iter_mut() {
            *e = e.clamp(-s, s) / s;
        }
    }
    Ok(from_vec(v, dims, &device))
}

/// Clipping / dynamic thresholding of a predicted x0 (DDPM-family options).
#[derive(Clone, Copy, Debug)]
pub(crate) struct X0Clip {
    pub thresholding: bool,
    pub dynamic_thresholding_ratio: f64,
    pub sample_max_value: f64,
    pub clip_sample: bool,
    pub clip_sample_range: f64,
}

impl X0Clip {
    /// Thresholding wins over clipping, as in diffusers.
    pub fn apply<const D: usize>(&self, x0: Tensor<D>) -> Result<Tensor<D>> {
        if self.thresholding {
            threshold_sample(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        } else if self.clip_sample {
            let r = self.clip_sample_range as f32;
            Ok(x0.clamp(-r, r))
        } else {
            Ok(x0)
        }
    }
}

/// `(x0, eps)` from a model output in the ᾱ parametrisation (DDIM, DDPM, LCM).
/// Scalars are float32 like diffusers' 0-dim tensors.
pub(crate) fn alpha_predict<const D: usize>(
    prediction: PredictionType,
    model_output: Tensor<D>,
    sample: Tensor<D>,
    alpha_prod_t: f32,
    name: &'static str,
) -> Result<(Tensor<D>, Tensor<D>)> {
    let a = alpha_prod_t.sqrt();
    let b = (1.0 - alpha_prod_t).sqrt();
    Ok(match prediction {
        PredictionType::Epsilon => ((sample - model_output.clone() * b) / a, model_output),
        PredictionType::Sample => {
            let eps = (sample - model_output.clone() * a) / b;
            (model_output, eps)
        }
        PredictionType::VPrediction => (
            sample.clone() * a - model_output.clone() * b,
            model_output * a + sample * b,
        ),
        PredictionType::FlowPrediction => return Err(prediction.unsupported(name)),
    })
}

/// `sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) noise`, the DDPM forward process.
pub(crate) fn alpha_add_noise<const D: usize>(
    schedule: &NoiseSchedule,
    original: Tensor<D>,
    noise: Tensor<D>,
    t: f64,
) -> Result<Tensor<D>> {
    let a = schedule
        .alpha_prod(t as i64)
        .ok_or(SchedulerError::UnknownTimestep(t))? as f32;
    Ok(original * a.sqrt() + noise * (1.0 - a).sqrt())
}

/// diffusers' `_step_index` / `_begin_index` bookkeeping of the schedulers
/// that walk their sigma table.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StepIndex {
    pub step: Option<usize>,
    pub begin: Option<usize>,
}

impl StepIndex {
    /// The current index, initialised from `t` (or the begin index) on first use.
    pub fn get(&mut self, timesteps: &[f64], t: f64) -> Result<usize> {
        if let Some(i) = self.step {
            return Ok(i);
        }
        let i = match self.begin {
            Some(b) => b,
            None => index_for_timestep(timesteps, t)?,
        };
        self.step = Some(i);
        Ok(i)
    }

    /// Like [`StepIndex::get`], but an unknown timestep maps to the last step
    /// (the DPM-Solver family's `index_for_timestep`).
    pub fn get_or_last(&mut self, timesteps: &[f64], t: f64) -> usize {
        if let Some(i) = self.step {
            return i;
        }
        let i = self.begin.unwrap_or_else(|| {
            index_for_timestep(timesteps, t).unwrap_or(timesteps.len().saturating_sub(1))
        });
        self.step = Some(i);
        i
    }

    /// Moves to the next step.
    pub fn advance(&mut self) {
        self.step = self.step.map(|i| i + 1);
    }

    /// Index to use for `add_noise` at `t`, as diffusers' `add_noise`.
    pub fn for_add_noise(&self, timesteps: &[f64], t: f64) -> Result<usize> {
        match (self.begin, self.step) {
            (None, _) => index_for_timestep(timesteps, t),
            (Some(_), Some(s)) => Ok(s),
            (Some(b), None) => Ok(b),
        }
    }

    /// Forgets the position (new schedule).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

/// `sigma_{i}` and `sigma_{i+1}` of a sigma table, erroring past its end.
pub(crate) fn sigma_pair(sigmas: &[f32], i: usize) -> Result<(f32, f32)> {
    match (sigmas.get(i), sigmas.get(i + 1)) {
        (Some(&a), Some(&b)) => Ok((a, b)),
        _ => Err(SchedulerError::InvalidSchedule(format!(
            "step {i} is past the end of the schedule"
        ))),
    }
}

/// x0 from a model output in the k-diffusion (σ) parametrisation, float32 scalars.
pub(crate) fn sigma_x0<const D: usize>(
    prediction: PredictionType,
    model_output: Tensor<D>,
    sample: Tensor<D>,
    sigma_eps: f32,
    sigma_v: f32,
    name: &'static str,
) -> Result<Tensor<D>> {
    Ok(match prediction {
        PredictionType::Epsilon => sample - model_output * sigma_eps,
        PredictionType::VPrediction => {
            let s2 = sigma_v * sigma_v + 1.0;
            model_output * (-sigma_v / s2.sqrt()) + sample / s2
        }
        PredictionType::Sample => model_output,
        PredictionType::FlowPrediction => return Err(prediction.unsupported(name)),
    })
}

/// `(alpha_t, sigma_t)` of a sigma in float32: VP (`1/sqrt(σ²+1)`, `σ·alpha`)
/// or flow matching (`1 − σ`, `σ`). The DPM-Solver family's `_sigma_to_alpha_sigma_t`.
pub(crate) fn alpha_sigma(sigma: f32, flow: bool) -> (f32, f32) {
    if flow {
        (1.0 - sigma, sigma)
    } else {
        let a = 1.0 / (sigma * sigma + 1.0).sqrt();
        (a, sigma * a)
    }
}

/// Half log-SNR `ln α − ln σ`, float32.
pub(crate) fn lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// Timestep spacing of the DPM-Solver family (DPM-Solver, UniPC, DEIS):
/// `n + 1` points with the last dropped for `linspace` / `leading`, up to `last`.
pub(crate) fn solver_timesteps(
    spacing: TimestepSpacing,
    num_train: usize,
    last: usize,
    n: usize,
    steps_offset: usize,
) -> Vec<f64> {
    match spacing {
        TimestepSpacing::Linspace => {
            let v = np_linspace(0.0, last as f64 - 1.0, n + 1);
            v.iter()
                .rev()
                .take(n)
                .map(|x| x.round_ties_even())
                .collect()
        }
        TimestepSpacing::Leading => {
            let ratio = last / (n + 1);
            (0..=n)
                .rev()
                .take(n)
                .map(|i| (i * ratio + steps_offset) as f64)
                .collect()
        }
        TimestepSpacing::Trailing => np_arange(last as f64, 0.0, -(num_train as f64 / n as f64))
            .into_iter()
            .map(|x| x.round_ties_even() - 1.0)
            .collect(),
    }
}

/// Solves `a x = b` (small dense system) by Gaussian elimination with
/// partial pivoting in float64; `None` when singular.
pub(crate) fn solve_linear(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col] == 0.0 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (top, bottom) = a.split_at_mut(col + 1);
        let pivot = &top[col];
        for (r, row) in bottom.iter_mut().enumerate() {
            let f = row[col] / pivot[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot[col..]) {
                *x -= f * p;
            }
            b[col + 1 + r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// `np.log` on a float32, bit-identical to numpy's SIMD kernel (x86 AVX2 /
/// AVX-512 builds): mantissa in `[√½, √2)`, a degree-5 rational
/// approximation of `log(1 + y)` evaluated with FMAs, plus `e · ln 2`.
/// numpy's float32 log is not correctly rounded, and DEIS' third-order
/// coefficients cancel enough for one ulp to show at 1e-5.
pub(crate) fn np_logf(x: f32) -> f32 {
    const P: [u32; 6] = [
        0x0000_0000,
        0x3F80_0000,
        0x4007_361C,
        0x3FBD_70A9,
        0x3EC3_0333,
        0x3CD4_2BCD,
    ];
    const Q: [u32; 6] = [
        0x3F80_0000,
        0x4027_361C,
        0x401C_FE0D,
        0x3F7C_8AE4,
        0x3E1E_5BF3,
        0x3BC0_83DF,
    ];
    let sqrt1_2 = f32::from_bits(0x3F35_04F3);
    let ln2 = f32::from_bits(0x3F31_7218);
    if x.is_nan() || x < 0.0 {
        return f32::NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    // denormals: pre-scale by 2^100
    let (x, bias) = if x < f32::MIN_POSITIVE {
        (x * f32::from_bits(0x7180_0000), 100.0)
    } else {
        (x, 0.0)
    };
    let bits = x.to_bits();
    let mut e = ((bits >> 23) as i32 - 126) as f32 - bias;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | (126 << 23));
    if m <= sqrt1_2 {
        m += m;
        e -= 1.0;
    }
    let y = m - 1.0;
    let horner = |c: &[u32; 6]| {
        c.iter()
            .rev()
            .skip(1)
            .fold(f32::from_bits(c[5]), |acc, &k| {
                acc.mul_add(y, f32::from_bits(k))
            })
    };
    let poly = horner(&P) / horner(&Q);
    e.mul_add(ln2, poly)
}

/// Rejects more than one of Karras / exponential / beta sigmas, as diffusers does.
pub(crate) fn check_sigma_flags(karras: bool, exponential: bool, beta: bool) -> Result<()> {
    if [karras, exponential, beta].iter().filter(|b| **b).count() > 1 {
        return Err(SchedulerError::InvalidConfig(
            "only one of use_karras_sigmas, use_exponential_sigmas, use_beta_sigmas can be set"
                .into(),
        ));
    }
    Ok(())
}

/// Lanczos approximation of `ln Γ(x)` for `x > 0` (|error| < 1e-14).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let s = C
        .iter()
        .enumerate()
        .skip(1)
        .fold(C[0], |acc, (i, c)| acc + c / (x + i as f64));
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + s.ln()
}

/// Continued fraction of the incomplete beta function (modified Lentz).
fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    let tiny = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    d = 1.0 / if d.abs() < tiny { tiny } else { d };
    let mut h = d;
    for m in 1..300 {
        let m = m as f64;
        let m2 = 2.0 * m;
        for aa in [
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ] {
            d = 1.0 + aa * d;
            d = 1.0 / if d.abs() < tiny { tiny } else { d };
            c = 1.0 + aa / c;
            if c.abs() < tiny {
                c = tiny;
            }
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// Regularised incomplete beta function `I_x(a, b)`.
fn beta_inc(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_cf(a, b, x) / a
    } else {
        1.0 - ln_front.exp() * beta_cf(b, a, 1.0 - x) / b
    }
}

/// Quantile of the Beta(a, b) distribution (`scipy.stats.beta.ppf`), by bisection.
pub(crate) fn beta_ppf(q: f64, a: f64, b: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if beta_inc(a, b, mid) < q {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Beta sigmas ("Beta Sampling is All You Need", Lee et al. 2024): Beta(0.6, 0.6)
/// quantiles mapped onto `[sigma_min, sigma_max]`, descending, float64.
pub(crate) fn beta_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    np_linspace(0.0, 1.0, n)
        .into_iter()
        .map(|t| sigma_min + beta_ppf(1.0 - t, 0.6, 0.6) * (sigma_max - sigma_min))
        .collect()
}

/// Flow-matching sigmas of the DPM-Solver family (`use_flow_sigmas`):
/// `1 − linspace(1, 1/T, n + 1)` shifted by `shift`, descending, without the last.
pub(crate) fn flow_sigmas(n: usize, num_train: usize, shift: f64) -> Vec<f64> {
    let mut s: Vec<f64> = np_linspace(1.0, 1.0 / num_train as f64, n + 1)
        .iter()
        .map(|a| 1.0 - a)
        .map(|s| shift * s / (1.0 + (shift - 1.0) * s))
        .collect();
    s.reverse();
    s.truncate(n);
    s
}

/// Number of training timesteps whose half log-SNR is below `lambda_min_clipped`
/// (`searchsorted(flip(lambda_t), lambda_min_clipped)`).
pub(crate) fn lambda_clipped_count(schedule: &NoiseSchedule, lambda_min_clipped: f64) -> usize {
    schedule
        .alphas_cumprod
        .iter()
        .filter(|&&a| (lambda(a.sqrt(), (1.0 - a).sqrt()) as f64) < lambda_min_clipped)
        .count()
}

/// `stretch_shift_to_terminal`: rescales shifted sigmas so the last one is `terminal`.
pub(crate) fn stretch_to_terminal(sigmas: &[f64], terminal: f64) -> Vec<f64> {
    let Some(&last) = sigmas.last() else {
        return Vec::new();
    };
    let scale = (1.0 - last) / (1.0 - terminal);
    sigmas.iter().map(|s| 1.0 - (1.0 - s) / scale).collect()
}

/// The last `order` converted model outputs of a multistep solver, oldest first.
#[derive(Clone, Debug)]
pub(crate) struct History<const D: usize> {
    slots: Vec<Option<Tensor<D>>>,
}

impl<const D: usize> History<D> {
    /// An empty history of `order` slots.
    pub fn new(order: usize) -> Self {
        Self {
            slots: vec![None; order],
        }
    }

    /// Appends the newest output, dropping the oldest.
    pub fn push(&mut self, x: Tensor<D>) {
        self.slots.rotate_left(1);
        if let Some(last) = self.slots.last_mut() {
            *last = Some(x);
        }
    }

    /// The output `back` steps ago (0 = newest), if there is one.
    pub fn peek(&self, back: usize) -> Option<Tensor<D>> {
        self.slots
            .len()
            .checked_sub(1 + back)
            .and_then(|i| self.slots[i].clone())
    }

    /// Like [`History::peek`], erroring when missing.
    pub fn get(&self, back: usize) -> Result<Tensor<D>> {
        self.peek(back)
            .ok_or_else(|| SchedulerError::InvalidSchedule("missing previous model output".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_logf_matches_numpy() {
        // np.log(np.float32(x)) of numpy 2.4.6 (not correctly rounded: ln gives 1.0063034);
        // the kernel was also checked bit for bit on 200 001 values in [0.01, 20]
        assert_eq!(np_logf(2.735_470_3), 1.006_303_3);
        assert_eq!(np_logf(1.0), 0.0);
        assert!((np_logf(10.0) - 10f32.ln()).abs() <= f32::EPSILON * 4.0);
    }

    #[test]
    fn beta_ppf_matches_mpmath() {
        // mpmath.findroot(betainc(0.6, 0.6, 0, x, regularized=True) - q) at 40 digits
        for (q, want) in [
            (0.1, 0.039_584_405_588_780_854),
            (0.25, 0.175_680_378_652_695),
            (0.5, 0.5),
            (0.9, 0.960_415_594_411_219_2),
            (0.999, 0.999_981_441_261_482_6),
        ] {
            let got = beta_ppf(q, 0.6, 0.6);
            assert!((got - want).abs() < 1e-13, "ppf({q}) = {got}, want {want}");
        }
    }

    #[test]
    fn linspace_matches_torch() {
        let v = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(v[0], 0.0001);
        assert_eq!(v[999], 0.02);
    }
}
