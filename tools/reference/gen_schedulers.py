#!/usr/bin/env python3
"""Write deterministic diffusers scheduler traces for the `mm-schedulers` tests.

Run with the reference venv (diffusers 0.42.1, torch):

    /root/venvs/mmref/bin/python tools/reference/gen_schedulers.py

Output: `tests/fixtures/schedulers/traces.json`, one entry per case with the
scheduler class, its full config (as `scheduler.config` holds it), the
`set_timesteps` arguments, the resulting timesteps / sigmas, the initial
sample and, for every step of the loop, the timestep, the noise drawn by the
scheduler (if any) and the sample after the step.

The loop is the one of diffusers' own scheduler tests:

    sample = sample0 * scheduler.init_noise_sigma
    for t in scheduler.timesteps[begin:]:
        x = scheduler.scale_model_input(sample, t)
        out = model(x, t)          # model(x, t) = x * t / (t + 1), in float32
        sample = scheduler.step(out, t, sample).prev_sample

Noise: every `randn_tensor` call of a scheduler module is replaced by a seeded
draw that is recorded, so the Rust test can feed the very same noise.
"""

import importlib
import json
import os
import sys

import numpy as np
import torch


def _scipy_stub():
    """diffusers needs scipy for two things: `scipy.integrate.quad` to integrate
    the LMS Lagrange polynomials (degree <= 3) and `scipy.stats.beta.ppf` for
    beta sigmas. When scipy is not installed, a minimal stand-in is put on
    `sys.path` (with dist-info so diffusers sees it): `quad` is 8-point
    Gauss-Legendre (exact for these polynomials), `beta.ppf` is a 40-digit
    mpmath bisection of the regularised incomplete beta function."""
    try:
        import scipy  # noqa: F401
        return
    except ImportError:
        pass
    import tempfile

    root = tempfile.mkdtemp(prefix="scipy_stub_")
    pkg = os.path.join(root, "scipy")
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").write("from . import integrate, stats\n__version__ = '1.14.0'\n")
    open(os.path.join(pkg, "integrate.py"), "w").write(
        "import numpy as np\n"
        "_x, _w = np.polynomial.legendre.leggauss(8)\n"
        "def quad(f, a, b, epsrel=None, **kw):\n"
        "    a, b = float(a), float(b)\n"
        "    m, h = (a + b) / 2, (b - a) / 2\n"
        "    return float(sum(w * float(f(m + h * x)) for x, w in zip(_x, _w)) * h), 0.0\n"
    )
    open(os.path.join(pkg, "stats.py"), "w").write(
        "import mpmath\n"
        "mpmath.mp.dps = 40\n"
        "class _Beta:\n"
        "    def ppf(self, q, a, b):\n"
        "        q, a, b = mpmath.mpf(float(q)), mpmath.mpf(a), mpmath.mpf(b)\n"
        "        if q <= 0: return 0.0\n"
        "        if q >= 1: return 1.0\n"
        "        lo, hi = mpmath.mpf(0), mpmath.mpf(1)\n"
        "        for _ in range(140):\n"
        "            mid = (lo + hi) / 2\n"
        "            if mpmath.betainc(a, b, 0, mid, regularized=True) < q: lo = mid\n"
        "            else: hi = mid\n"
        "        return float((lo + hi) / 2)\n"
        "beta = _Beta()\n"
    )
    meta = os.path.join(root, "scipy-1.14.0.dist-info")
    os.makedirs(meta)
    open(os.path.join(meta, "METADATA"), "w").write("Metadata-Version: 2.1\nName: scipy\nVersion: 1.14.0\n")
    sys.path.insert(0, root)


_scipy_stub()
import diffusers  # noqa: E402

SHAPE = [1, 2, 4, 4]
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "schedulers", "traces.json")

_drawn = []
_gen = torch.Generator().manual_seed(0)


def _fake_randn(shape, generator=None, device=None, dtype=None, layout=None):
    x = torch.randn(tuple(shape), generator=_gen, dtype=torch.float32)
    _drawn.append(x.clone())
    return x.to(dtype or torch.float32)


for mod in [
    "scheduling_ddim", "scheduling_ddpm", "scheduling_euler_ancestral_discrete", "scheduling_euler_discrete",
    "scheduling_dpmsolver_multistep", "scheduling_dpmsolver_singlestep", "scheduling_lcm", "scheduling_flow_match_euler_discrete",
]:
    m = importlib.import_module("diffusers.schedulers." + mod)
    if hasattr(m, "randn_tensor"):
        m.randn_tensor = _fake_randn


def sample0():
    n = int(np.prod(SHAPE))
    x = torch.arange(n, dtype=torch.float32).flip(-1) / n
    return ((x - 0.3) * 2.0).reshape(SHAPE)


def model(x, t, kind="plain"):
    """diffusers' test model `x * t / (t + 1)`; `learned_variance` appends a
    predicted-variance half `x * x * 0.01 + 0.001` on the channel axis."""
    t = torch.as_tensor(t).to(torch.float32)
    out = x * t / (t + 1)
    if kind == "learned_variance":
        out = torch.cat([out, x * x * 0.01 + 0.001], dim=1)
    return out


def flat(x):
    return [float(v) for v in x.detach().to(torch.float32).flatten().tolist()]


def jsonable(v):
    if isinstance(v, float) and not np.isfinite(v):
        return None  # JSON has no infinities; `null` means "diffusers default" in the Rust configs
    if isinstance(v, (np.ndarray,)):
        return v.tolist()
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    return v


CASES = []


def case(name, cls, steps, config=None, set_kwargs=None, strength=None, step_kwargs=None, source=None, model="plain"):
    CASES.append(dict(name=name, cls=cls, steps=steps, config=config or {}, set_kwargs=set_kwargs or {},
                      strength=strength, step_kwargs=step_kwargs or {}, source=source, model=model))


# Real `scheduler_config.json` files (as published on the Hub) for cross-construction:
# `cls.from_config(source)` builds another scheduler from a model's default one.
SD15_PNDM = {"_class_name": "PNDMScheduler", "_diffusers_version": "0.6.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "beta_start": 0.00085, "num_train_timesteps": 1000, "set_alpha_to_one": False, "skip_prk_steps": True,
             "steps_offset": 1, "trained_betas": None, "clip_sample": False}
SDXL_EULER = {"_class_name": "EulerDiscreteScheduler", "_diffusers_version": "0.19.0.dev0", "beta_end": 0.012,
              "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False, "interpolation_type": "linear",
              "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0, "set_alpha_to_one": False,
              "skip_prk_steps": True, "steps_offset": 1, "timestep_spacing": "leading", "trained_betas": None,
              "use_karras_sigmas": False}
SD21_DDIM_V = {"_class_name": "DDIMScheduler", "_diffusers_version": "0.8.0", "beta_end": 0.012, "beta_schedule": "scaled_linear",
               "beta_start": 0.00085, "clip_sample": False, "num_train_timesteps": 1000, "prediction_type": "v_prediction",
               "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "trained_betas": None}
FLUX = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0", "base_image_seq_len": 256,
        "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 3.0,
        "use_dynamic_shifting": True}


SD = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")

# ---- DDIM
case("ddim_default", "DDIMScheduler", 10)
case("ddim_sd_leading_offset", "DDIMScheduler", 12, dict(SD, steps_offset=1, clip_sample=False, set_alpha_to_one=False))
case("ddim_trailing_vpred_zsnr", "DDIMScheduler", 10, dict(SD, timestep_spacing="trailing", prediction_type="v_prediction", rescale_betas_zero_snr=True, clip_sample=False))
case("ddim_linspace_sample", "DDIMScheduler", 8, dict(timestep_spacing="linspace", prediction_type="sample"))
case("ddim_cosine", "DDIMScheduler", 10, dict(beta_schedule="squaredcos_cap_v2", clip_sample=False))
case("ddim_eta", "DDIMScheduler", 10, dict(SD, clip_sample=False), step_kwargs=dict(eta=0.5))
case("ddim_eta1_clipped_eps", "DDIMScheduler", 6, dict(), step_kwargs=dict(eta=1.0, use_clipped_model_output=True))
case("ddim_threshold", "DDIMScheduler", 10, dict(thresholding=True, sample_max_value=2.0, dynamic_thresholding_ratio=0.9, clip_sample=False))
case("ddim_strength", "DDIMScheduler", 20, dict(SD, steps_offset=1, clip_sample=False), strength=0.6)
case("ddim_clip_range", "DDIMScheduler", 10, dict(clip_sample=True, clip_sample_range=0.5))
# ---- Euler
case("euler_default", "EulerDiscreteScheduler", 10)
case("euler_sd_leading", "EulerDiscreteScheduler", 15, dict(SD, timestep_spacing="leading", steps_offset=1))
case("euler_trailing_vpred", "EulerDiscreteScheduler", 10, dict(SD, timestep_spacing="trailing", prediction_type="v_prediction"))
case("euler_karras", "EulerDiscreteScheduler", 12, dict(SD, use_karras_sigmas=True))
case("euler_exponential", "EulerDiscreteScheduler", 12, dict(SD, use_exponential_sigmas=True))
case("euler_log_linear", "EulerDiscreteScheduler", 10, dict(SD, interpolation_type="log_linear"))
case("euler_sigma_min_final", "EulerDiscreteScheduler", 10, dict(SD, final_sigmas_type="sigma_min"))
case("euler_zsnr_trailing", "EulerDiscreteScheduler", 10, dict(SD, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"))
case("euler_sample_pred", "EulerDiscreteScheduler", 8, dict(prediction_type="sample"))
case("euler_cosine", "EulerDiscreteScheduler", 10, dict(beta_schedule="squaredcos_cap_v2"))
case("euler_vpred_continuous", "EulerDiscreteScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_type="continuous"))
case("euler_strength", "EulerDiscreteScheduler", 20, dict(SD, timestep_spacing="leading", steps_offset=1), strength=0.45)
case("euler_custom_sigmas", "EulerDiscreteScheduler", None, dict(SD), set_kwargs=dict(sigmas=[14.6, 8.0, 4.0, 2.0, 1.0, 0.5, 0.1, 0.0]))
case("euler_custom_timesteps", "EulerDiscreteScheduler", None, dict(SD), set_kwargs=dict(timesteps=[999, 850, 700, 500, 300, 120, 20]))
case("euler_churn", "EulerDiscreteScheduler", 10, dict(SD), step_kwargs=dict(s_churn=0.8, s_tmin=0.5, s_tmax=8.0, s_noise=1.003))
case("euler_karras_sigma_bounds", "EulerDiscreteScheduler", 10, dict(SD, use_karras_sigmas=True, sigma_min=0.03, sigma_max=10.0))
# ---- Euler ancestral
case("euler_a_default", "EulerAncestralDiscreteScheduler", 10)
case("euler_a_sdxl_leading", "EulerAncestralDiscreteScheduler", 15, dict(SD, timestep_spacing="leading", steps_offset=1))
case("euler_a_trailing_vpred", "EulerAncestralDiscreteScheduler", 10, dict(SD, timestep_spacing="trailing", prediction_type="v_prediction"))
case("euler_a_zsnr", "EulerAncestralDiscreteScheduler", 10, dict(SD, rescale_betas_zero_snr=True, timestep_spacing="trailing"))
case("euler_a_strength", "EulerAncestralDiscreteScheduler", 20, dict(SD), strength=0.5)
# ---- DPM-Solver++ multistep
case("dpmpp_2m_default", "DPMSolverMultistepScheduler", 10)
case("dpmpp_2m_karras", "DPMSolverMultistepScheduler", 20, dict(SD, use_karras_sigmas=True))
case("dpmpp_2m_karras_short", "DPMSolverMultistepScheduler", 8, dict(SD, use_karras_sigmas=True, timestep_spacing="leading", steps_offset=1))
case("dpmpp_3m", "DPMSolverMultistepScheduler", 20, dict(SD, solver_order=3))
case("dpmpp_3m_short", "DPMSolverMultistepScheduler", 10, dict(SD, solver_order=3, final_sigmas_type="sigma_min"))
case("dpmpp_1", "DPMSolverMultistepScheduler", 10, dict(SD, solver_order=1))
case("dpmpp_2m_heun", "DPMSolverMultistepScheduler", 12, dict(SD, solver_type="heun"))
case("dpm_2m_dpmsolver", "DPMSolverMultistepScheduler", 12, dict(SD, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"))
case("dpm_3m_dpmsolver_heun", "DPMSolverMultistepScheduler", 16, dict(SD, algorithm_type="dpmsolver", solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"))
case("dpmpp_2m_sde", "DPMSolverMultistepScheduler", 12, dict(SD, algorithm_type="sde-dpmsolver++", use_karras_sigmas=True))
case("dpmpp_2m_sde_heun", "DPMSolverMultistepScheduler", 12, dict(SD, algorithm_type="sde-dpmsolver++", solver_type="heun"))
case("dpmpp_3m_sde", "DPMSolverMultistepScheduler", 16, dict(SD, algorithm_type="sde-dpmsolver++", solver_order=3))
case("dpm_2m_sde_dpmsolver", "DPMSolverMultistepScheduler", 12, dict(SD, algorithm_type="sde-dpmsolver", final_sigmas_type="sigma_min"))
case("dpmpp_2m_vpred_trailing", "DPMSolverMultistepScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"))
case("dpmpp_2m_sample_pred", "DPMSolverMultistepScheduler", 10, dict(prediction_type="sample"))
case("dpmpp_2m_exponential", "DPMSolverMultistepScheduler", 12, dict(SD, use_exponential_sigmas=True))
case("dpmpp_2m_lambda_clip_cosine", "DPMSolverMultistepScheduler", 12, dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1))
case("dpmpp_2m_no_lower_final", "DPMSolverMultistepScheduler", 10, dict(SD, lower_order_final=False, final_sigmas_type="sigma_min"))
case("dpmpp_2m_euler_at_final", "DPMSolverMultistepScheduler", 20, dict(SD, euler_at_final=True, final_sigmas_type="sigma_min"))
case("dpmpp_2m_lu_lambdas", "DPMSolverMultistepScheduler", 12, dict(SD, use_lu_lambdas=True))
case("dpmpp_2m_threshold", "DPMSolverMultistepScheduler", 10, dict(thresholding=True, sample_max_value=1.5))
case("dpmpp_2m_flow", "DPMSolverMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))
case("dpmpp_2m_flow_dynamic", "DPMSolverMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True), set_kwargs=dict(mu=1.1))
case("dpmpp_2m_strength", "DPMSolverMultistepScheduler", 20, dict(SD, use_karras_sigmas=True), strength=0.6)
case("dpmpp_2m_custom_timesteps", "DPMSolverMultistepScheduler", None, dict(SD), set_kwargs=dict(timesteps=[999, 800, 600, 400, 200, 50]))
# ---- DDPM
case("ddpm_default", "DDPMScheduler", 10)
case("ddpm_fixed_small_log", "DDPMScheduler", 10, dict(SD, variance_type="fixed_small_log", clip_sample=False))
case("ddpm_fixed_large", "DDPMScheduler", 10, dict(variance_type="fixed_large"))
case("ddpm_vpred_trailing", "DDPMScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing", clip_sample=False))
case("ddpm_sample_cosine", "DDPMScheduler", 10, dict(beta_schedule="squaredcos_cap_v2", prediction_type="sample"))
case("ddpm_threshold", "DDPMScheduler", 10, dict(thresholding=True, sample_max_value=2.0, clip_sample=False))
case("ddpm_learned", "DDPMScheduler", 10, dict(variance_type="learned", clip_sample=False), model="learned_variance")
case("ddpm_learned_range", "DDPMScheduler", 10, dict(SD, variance_type="learned_range", clip_sample=False), model="learned_variance")
case("ddpm_custom_timesteps", "DDPMScheduler", None, dict(), set_kwargs=dict(timesteps=[900, 700, 500, 300, 100, 0]))
# ---- LCM
case("lcm_default", "LCMScheduler", 4)
case("lcm_8", "LCMScheduler", 8, dict(timestep_spacing="leading", steps_offset=1))
case("lcm_vpred", "LCMScheduler", 4, dict(prediction_type="v_prediction", original_inference_steps=100))
case("lcm_strength", "LCMScheduler", 4, dict(), set_kwargs=dict(strength=0.5))
case("lcm_custom_timesteps", "LCMScheduler", None, dict(), set_kwargs=dict(timesteps=[999, 759, 499, 259]))
# ---- Flow matching Euler
case("flow_default", "FlowMatchEulerDiscreteScheduler", 10)
case("flow_sd3_shift3", "FlowMatchEulerDiscreteScheduler", 12, dict(shift=3.0))
case("flow_flux_dynamic", "FlowMatchEulerDiscreteScheduler", None, dict(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096),
     set_kwargs=dict(sigmas=list(np.linspace(1.0, 1 / 10, 10)), mu=0.8))
case("flow_dynamic_linear", "FlowMatchEulerDiscreteScheduler", 10, dict(use_dynamic_shifting=True, time_shift_type="linear"), set_kwargs=dict(mu=1.3))
case("flow_shift_terminal", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=3.0, shift_terminal=0.02))
case("flow_karras", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=3.0, use_karras_sigmas=True))
case("flow_exponential", "FlowMatchEulerDiscreteScheduler", 10, dict(use_exponential_sigmas=True))
case("flow_invert", "FlowMatchEulerDiscreteScheduler", 10, dict(invert_sigmas=True))
case("flow_stochastic", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=3.0, stochastic_sampling=True))
case("flow_strength", "FlowMatchEulerDiscreteScheduler", 20, dict(shift=3.0), strength=0.5)
# ---- PNDM
case("pndm_default", "PNDMScheduler", 10)
case("pndm_skip_prk_sd", "PNDMScheduler", 15, dict(SD, skip_prk_steps=True, steps_offset=1, set_alpha_to_one=False))
case("pndm_vpred", "PNDMScheduler", 12, dict(prediction_type="v_prediction", skip_prk_steps=True))
case("pndm_trailing", "PNDMScheduler", 10, dict(SD, timestep_spacing="trailing", skip_prk_steps=True))
# ---- Heun
case("heun_default", "HeunDiscreteScheduler", 10)
case("heun_sd_karras", "HeunDiscreteScheduler", 8, dict(SD, use_karras_sigmas=True))
case("heun_vpred_leading", "HeunDiscreteScheduler", 8, dict(SD, prediction_type="v_prediction", timestep_spacing="leading", steps_offset=1))
case("heun_custom_timesteps", "HeunDiscreteScheduler", None, dict(SD), set_kwargs=dict(timesteps=[999, 700, 400, 150, 10]))
case("heun_sample", "HeunDiscreteScheduler", 6, dict(prediction_type="sample", clip_sample=True))
# ---- LMS
case("lms_default", "LMSDiscreteScheduler", 10)
case("lms_sd_karras", "LMSDiscreteScheduler", 12, dict(SD, use_karras_sigmas=True))
case("lms_vpred_trailing", "LMSDiscreteScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"))
case("lms_leading_exponential", "LMSDiscreteScheduler", 10, dict(SD, timestep_spacing="leading", steps_offset=1, use_exponential_sigmas=True))

# ---- UniPC
case("unipc_default", "UniPCMultistepScheduler", 10)
case("unipc_sd_karras", "UniPCMultistepScheduler", 20, dict(SD, use_karras_sigmas=True))
case("unipc_order3_bh1", "UniPCMultistepScheduler", 16, dict(SD, solver_order=3, solver_type="bh1", final_sigmas_type="sigma_min"))  # bh1 with a zero final sigma is NaN in diffusers
case("unipc_order3_bh2_short", "UniPCMultistepScheduler", 8, dict(SD, solver_order=3))
case("unipc_noise_pred", "UniPCMultistepScheduler", 12, dict(SD, predict_x0=False, final_sigmas_type="sigma_min"))
case("unipc_vpred_trailing", "UniPCMultistepScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"))
case("unipc_leading_no_lof", "UniPCMultistepScheduler", 10, dict(SD, timestep_spacing="leading", steps_offset=1, lower_order_final=False, final_sigmas_type="sigma_min"))  # order 2 onto sigma 0 is inf in diffusers
case("unipc_disable_corrector", "UniPCMultistepScheduler", 10, dict(SD, disable_corrector=[0, 1, 5]))
case("unipc_exponential", "UniPCMultistepScheduler", 12, dict(SD, use_exponential_sigmas=True, final_sigmas_type="sigma_min"))
case("unipc_flow", "UniPCMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))
case("unipc_flow_dynamic", "UniPCMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True), set_kwargs=dict(mu=0.9))
case("unipc_flow_custom_sigmas", "UniPCMultistepScheduler", None, dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=2.0), set_kwargs=dict(sigmas=np.array([1.0, 0.85, 0.7, 0.5, 0.3, 0.15, 0.05])))  # diffusers needs an array here
case("unipc_threshold_sample", "UniPCMultistepScheduler", 10, dict(prediction_type="sample", thresholding=True, sample_max_value=1.5))
case("unipc_zsnr", "UniPCMultistepScheduler", 10, dict(SD, rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"))
case("unipc_strength", "UniPCMultistepScheduler", 20, dict(SD), strength=0.5)

# ---- DEIS
case("deis_default", "DEISMultistepScheduler", 10)
case("deis_order3_sd", "DEISMultistepScheduler", 20, dict(SD, solver_order=3))
case("deis_order3_short", "DEISMultistepScheduler", 8, dict(SD, solver_order=3))
case("deis_order1", "DEISMultistepScheduler", 8, dict(SD, solver_order=1))
case("deis_karras", "DEISMultistepScheduler", 15, dict(SD, use_karras_sigmas=True))
case("deis_vpred_trailing", "DEISMultistepScheduler", 10, dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"))
case("deis_sample_threshold", "DEISMultistepScheduler", 10, dict(prediction_type="sample", thresholding=True, sample_max_value=1.5))
case("deis_leading_exponential", "DEISMultistepScheduler", 12, dict(SD, timestep_spacing="leading", steps_offset=1, use_exponential_sigmas=True))
case("deis_flow_dynamic", "DEISMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True), set_kwargs=dict(mu=0.7))
case("deis_flow", "DEISMultistepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))

# ---- DPM-Solver singlestep
case("dpms_default", "DPMSolverSinglestepScheduler", 10)
case("dpms_order3_sd", "DPMSolverSinglestepScheduler", 12, dict(SD, solver_order=3))
case("dpms_order3_heun_sigma_min", "DPMSolverSinglestepScheduler", 12, dict(SD, solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"))
case("dpms_order2_heun_odd", "DPMSolverSinglestepScheduler", 11, dict(SD, solver_type="heun"))
case("dpms_order3_lof_13", "DPMSolverSinglestepScheduler", 13, dict(SD, solver_order=3, lower_order_final=True))
case("dpms_dpmsolver", "DPMSolverSinglestepScheduler", 12, dict(SD, algorithm_type="dpmsolver", final_sigmas_type="sigma_min"))
case("dpms_dpmsolver_order3", "DPMSolverSinglestepScheduler", 12, dict(SD, algorithm_type="dpmsolver", solver_order=3, final_sigmas_type="sigma_min"))
case("dpms_sde", "DPMSolverSinglestepScheduler", 12, dict(SD, algorithm_type="sde-dpmsolver++"))
case("dpms_sde_order3_heun", "DPMSolverSinglestepScheduler", 12, dict(SD, algorithm_type="sde-dpmsolver++", solver_order=3, solver_type="heun", final_sigmas_type="sigma_min"))
case("dpms_karras", "DPMSolverSinglestepScheduler", 14, dict(SD, use_karras_sigmas=True))
case("dpms_vpred", "DPMSolverSinglestepScheduler", 10, dict(SD, prediction_type="v_prediction"))
case("dpms_exponential", "DPMSolverSinglestepScheduler", 12, dict(SD, use_exponential_sigmas=True))
case("dpms_flow", "DPMSolverSinglestepScheduler", 10, dict(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0))
case("dpms_lambda_clip", "DPMSolverSinglestepScheduler", 12, dict(beta_schedule="squaredcos_cap_v2", lambda_min_clipped=-5.1))

# ---- beta sigmas (Lee et al. 2024)
case("euler_beta", "EulerDiscreteScheduler", 10, dict(SD, use_beta_sigmas=True))
case("dpmpp_2m_beta", "DPMSolverMultistepScheduler", 12, dict(SD, use_beta_sigmas=True))
case("unipc_beta", "UniPCMultistepScheduler", 10, dict(SD, use_beta_sigmas=True, final_sigmas_type="sigma_min"))
case("deis_beta", "DEISMultistepScheduler", 10, dict(SD, use_beta_sigmas=True))
case("dpms_beta", "DPMSolverSinglestepScheduler", 10, dict(SD, use_beta_sigmas=True))
case("heun_beta", "HeunDiscreteScheduler", 6, dict(SD, use_beta_sigmas=True))
case("lms_beta", "LMSDiscreteScheduler", 10, dict(SD, use_beta_sigmas=True))
case("flow_beta", "FlowMatchEulerDiscreteScheduler", 10, dict(shift=3.0, use_beta_sigmas=True))

# ---- cross-construction from real model configs
case("x_sd15_to_ddim", "DDIMScheduler", 20, source=SD15_PNDM)
case("x_sd15_to_dpmpp_2m_karras", "DPMSolverMultistepScheduler", 20, source=dict(SD15_PNDM, use_karras_sigmas=True))
case("x_sd15_pndm", "PNDMScheduler", 20, source=SD15_PNDM)
case("x_sdxl_to_euler_a", "EulerAncestralDiscreteScheduler", 20, source=SDXL_EULER)
case("x_sdxl_euler", "EulerDiscreteScheduler", 20, source=SDXL_EULER)
case("x_sdxl_to_lcm", "LCMScheduler", 4, source=SDXL_EULER)
case("x_sd21v_to_euler", "EulerDiscreteScheduler", 15, source=SD21_DDIM_V)
case("x_sd21v_to_dpmpp", "DPMSolverMultistepScheduler", 15, source=SD21_DDIM_V)
case("x_sd21v_to_heun", "HeunDiscreteScheduler", 8, source=SD21_DDIM_V)
case("x_sd15_to_unipc", "UniPCMultistepScheduler", 20, source=SD15_PNDM)
case("x_flux", "FlowMatchEulerDiscreteScheduler", 8, source=FLUX, set_kwargs=dict(mu=1.15))


def run(c):
    global _gen
    _gen = torch.Generator().manual_seed(1234)
    cls = getattr(diffusers, c["cls"])
    sched = cls.from_config(c["source"]) if c["source"] is not None else cls(**c["config"])
    kw = dict(c["set_kwargs"])
    if c["steps"] is not None:
        kw["num_inference_steps"] = c["steps"]
    sched.set_timesteps(**kw)
    timesteps = sched.timesteps.clone()
    order = sched.order
    begin = 0
    if c["strength"] is not None:
        # StableDiffusionImg2ImgPipeline.get_timesteps
        n = sched.num_inference_steps
        init_timestep = min(int(n * c["strength"]), n)
        t_start = max(n - init_timestep, 0)
        begin = t_start * order
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(begin)
    entry = dict(
        name=c["name"], cls=c["cls"], config={k: jsonable(v) for k, v in dict(sched.config).items() if not k.startswith("_")},
        user_config=c["config"], source_config=jsonable(c["source"]), num_inference_steps=c["steps"], set_kwargs=jsonable(c["set_kwargs"]),
        strength=c["strength"], step_kwargs=c["step_kwargs"], model=c["model"], begin_index=begin, order=order,
        timesteps=[float(t) for t in timesteps.tolist()], timestep_dtype=str(timesteps.dtype),
        sigmas=[float(s) for s in sched.sigmas.tolist()] if hasattr(sched, "sigmas") and torch.is_tensor(sched.sigmas) and c["cls"] not in ("DDIMScheduler", "DDPMScheduler", "LCMScheduler", "PNDMScheduler") else None,
        init_noise_sigma=float(getattr(sched, "init_noise_sigma", 1.0)), shape=SHAPE,
    )
    x0 = sample0()
    sample = x0 * entry["init_noise_sigma"]
    entry["sample0"] = flat(x0)
    steps = []
    for t in timesteps[begin:]:
        _drawn.clear()
        x = sched.scale_model_input(sample, t) if hasattr(sched, "scale_model_input") else sample
        out = model(x, t, c["model"])
        res = sched.step(out, t, sample, **c["step_kwargs"])
        sample = res.prev_sample
        if not torch.isfinite(sample).all():
            raise RuntimeError(f"{c['name']}: diffusers produced non-finite values at t={float(t)}")
        steps.append(dict(t=float(t), noise=[flat(n) for n in _drawn], prev_sample=flat(sample)))
    entry["steps"] = steps
    return entry


def guidance_cases():
    """CFG + `rescale_noise_cfg` as diffusers' Stable Diffusion pipeline computes them."""
    # diffusers' own `rescale_noise_cfg`, taken from the pipeline source without importing the
    # pipeline (which would import transformers)
    import ast

    path = os.path.join(os.path.dirname(diffusers.__file__), "pipelines", "stable_diffusion", "pipeline_stable_diffusion.py")
    tree = ast.parse(open(path).read())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "rescale_noise_cfg")
    ns = {"torch": torch}
    exec(compile(ast.Module(body=[fn], type_ignores=[]), path, "exec"), ns)
    rescale_noise_cfg = ns["rescale_noise_cfg"]

    g = torch.Generator().manual_seed(7)
    out = []
    for scale, rescale in [(7.5, 0.0), (5.0, 0.7), (3.0, 1.0)]:
        uncond = torch.randn(2, 2, 4, 4, generator=g)
        cond = torch.randn(2, 2, 4, 4, generator=g) * 1.5 + 0.2
        res = uncond + scale * (cond - uncond)
        if rescale > 0:
            res = rescale_noise_cfg(res, cond, guidance_rescale=rescale)
        out.append(dict(scale=scale, rescale=rescale, shape=[2, 2, 4, 4], uncond=flat(uncond), cond=flat(cond), result=flat(res)))
    return out


def main():
    out = []
    for c in CASES:
        out.append(run(c))
        print(f"{c['name']}: {len(out[-1]['steps'])} steps", file=sys.stderr)
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT + ".tmp", "w") as f:
        json.dump(dict(diffusers_version=diffusers.__version__, torch_version=torch.__version__, cases=out, guidance=guidance_cases()), f, separators=(",", ":"))
    os.replace(OUT + ".tmp", OUT)
    print(f"{len(out)} cases -> {os.path.abspath(OUT)} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
