#!/usr/bin/env python3
"""Reference fixture generator for FLUX.1 (`FluxTransformer2DModel`, `FluxPipeline`,
`FluxImg2ImgPipeline`) of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/flux-transformer-tiny/
      schnell/           `FluxTransformer2DModel.save_pretrained` folder (`config.json`,
                         `diffusion_pytorch_model.safetensors`) of the tiny schnell-style model:
                         2 double-stream and 2 single-stream blocks, 2 heads of 8 (axes_dims_rope
                         [2, 2, 4]), in_channels 16 (4 latent channels packed 2x2),
                         joint_attention_dim 24, pooled_projection_dim 20, no guidance embedding.
                         Every parameter is random (adaLN gates and RMS norms included, none zero).
      dev/               only `io.safetensors`: the tiny dev-style model (the same with
                         `guidance_embeds`) is stored once, as `flux-tiny/transformer/`
      schnell/io.safetensors, dev/io.safetensors (float32):
                           latents [2,4,6,10]          unpacked latents (3x5 packed tokens)
                           hidden_states [2,15,16]     `FluxPipeline._pack_latents(latents)`
                           img_ids [15,3]              `_prepare_latent_image_ids(.., 3, 5)`
                           encoder_hidden_states [2,7,24]
                           txt_ids [7,3]               zeros, as the pipeline passes them
                           pooled_projections [2,20]
                           timestep [2]                [0.9815, 0.31225] (t / 1000, as the
                                                       pipeline passes it)
                           guidance [2]                (dev) [3.5, 3.5]
                           out [2,15,16]               forward(...).sample
  tests/fixtures/full/flux1-schnell/transformer/, full/flux1-dev/transformer/
                         the published `transformer/config.json` of black-forest-labs/FLUX.1-schnell
                         and FLUX.1-dev and `tensors.json`: `[name, shape]` of every tensor of the
                         model's state dict, sorted, built on the meta device

  tests/fixtures/flux-tiny/  a complete `FluxPipeline` folder (`model_index.json`,
                         `transformer/`, `vae/`, `text_encoder/`, `text_encoder_2/`, `tokenizer/`,
                         `tokenizer_2/`, `scheduler/`) with tiny random models:
      transformer/       the tiny dev-style transformer above (guidance_embeds), bit for bit the
                         model `flux-transformer-tiny/dev/io.safetensors` was computed with
      vae/               `AutoencoderKL` with FLUX.1's settings but 4 latent channels (4 x 2 x 2 =
                         16 packed = in_channels): no quant convs, scaling_factor 0.3611,
                         shift_factor 0.1159, force_upcast; widths (4, 4), 1 layer per block,
                         2 groups: downscale factor 2
      text_encoder/      `CLIPTextModel` (FLUX uses only its pooled output): hidden 20 =
                         pooled_projection_dim, 2 layers, 2 heads, quick_gelu, legacy
                         eos_token_id 2 (pooled at the argmax id) as the published
                         clip-vit-large-patch14 config; saved under the published `text_model.*`
                         names
      text_encoder_2/    `T5EncoderModel`, d_model 24 = joint_attention_dim, 2 heads of 8, d_ff 16,
                         gated-gelu, 2 layers, 8 buckets up to distance 20, vocabulary 78 (that of
                         tokenizer_2)
      tokenizer/         the tiny CLIP BPE of `gen_pipelines.make_tokenizer` in the published layout
                         (`vocab.json` + `merges.txt`), padding with `<|endoftext|>`
      tokenizer_2/       `tests/fixtures/t5-tokenizer/{tokenizer.json, tokenizer_config.json}`
                         verbatim (`model_index.json` names it `T5TokenizerFast` as the published
                         FLUX.1 folders do)
      scheduler/         FLUX.1-dev's `scheduler_config.json` verbatim
                         (FlowMatchEulerDiscreteScheduler, shift 3.0, use_dynamic_shifting,
                         base_image_seq_len 256, max_image_seq_len 4096, base_shift 0.5,
                         max_shift 1.15)

  Images are 12x20 pixels: latents [., 4, 6, 10], packed [., 15, 16] (token grid 3x5). The folder
  is checked to load back with `FluxPipeline.from_pretrained` to the same weights, scheduler
  config and token ids.

  flux-tiny/expected.safetensors (float32):
    encode.<name>.{prompt_embeds [B, max_sequence_length, 24], pooled_prompt_embeds [B, 20],
                   text_ids [max_sequence_length, 3]}
                         `pipe.encode_prompt(...)`: T5's last hidden states, CLIP's pooled output
                         (`pooler_output`: final layer norm, then the argmax-id row), zeros
    latents1 [1,4,6,10], latents2 [2,4,6,10]    initial latents of the text-to-image runs,
                         UNPACKED; the pipeline was given `FluxPipeline._pack_latents(...)` of them
                         ([1,15,16] / [2,15,16]) since diffusers takes `latents=` already packed
    image [1,3,12,20]    8-bit values in [0, 1]: the img2img input
    <case>.latents_out   `output_type="latent"`: the final latents as diffusers returns them,
                         PACKED [B, 15, 16] (no unpacking, no 1/scaling + shift)
    <case>.latents_unpacked   `FluxPipeline._unpack_latents(latents_out, 12, 20, 2)` [B, 4, 6, 10]
    <case>.images        `output_type="pt"` (in [0, 1]) [B, 3, 12, 20]
    <case>.draw.<i>      every `randn_tensor` draw of the run, in order (img2img: draw.0 the VAE
                         posterior sample [1,4,6,10], draw.1 the noise of `scheduler.scale_noise`
                         [1,4,6,10], both unpacked; text-to-image with given latents: none)
    dev_t2i.{hidden_states [1,15,16], timestep [1], guidance [1], encoder_hidden_states [1,32,24],
             pooled_projections [1,20], img_ids [15,3], txt_ids [32,3], out [1,15,16]}
                         what the first transformer call of `dev_t2i` received (timestep = t /
                         1000 in float32, guidance = guidance_scale, float32) and returned

  flux-tiny/expected.json: the prompts (`prompt`, `negative_prompt`, `prompt_2`, `long_prompt`),
  `tokens.t5` (T5 ids of the T5 inputs at the lengths used), `scheduler` (flux-tiny's scheduler
  config) and `schnell_scheduler` (FLUX.1-schnell's scheduler_config.json), `encode` (per case:
  the `encode_prompt` arguments `prompt`, `prompt_2`, `num_images_per_prompt`,
  `max_sequence_length`) and `cases` (per run: `call` ("text_to_image" / "img2img"),
  `transformer` ("dev": flux-tiny/transformer, "schnell": flux-transformer-tiny/schnell),
  `scheduler` (class name), `scheduler_overrides` (keys changed from flux-tiny's scheduler config:
  schnell's shift 1.0 and use_dynamic_shifting false), `kwargs` (every keyword of the pipeline
  call except generator/output_type/image/latents; a key left out takes diffusers' default, e.g.
  max_sequence_length 512), `latents` / `image` (expected keys of the inputs; `latents` is the
  unpacked tensor), `seed`, `draws`, `mu` (`calculate_shift(image_seq_len = 15, ...)`, a double),
  `sigmas` (the scheduler's sigmas after `set_timesteps`, float32 values, with the final 0
  appended), `timesteps` (its timesteps, sigmas x 1000, float32; for img2img the full schedule —
  the run uses `timesteps[begin_index:]`), `begin_index` (0, img2img `t_start`) and
  `transformer_calls`: per transformer call of one run, in order, its `timestep` (what the
  transformer got: t / 1000), `guidance` (null without the guidance embedding), `batch`, `txt_len`
  (encoder_hidden_states rows) and `negative` (whether it was the true-CFG negative-prompt pass)).

  Encode cases (prompt = gen_pipelines.PROMPT, 28 T5 tokens): plain (max_sequence_length 32),
  prompt_2 (a different T5 prompt: only prompt_embeds change), max_seq8 (the long prompt —
  83 CLIP tokens, cut to 77; 163 T5 tokens, cut to 7 + `</s>`), two_images
  (num_images_per_prompt 2: plain's rows repeated).
  Runs (dev, latents1, guidance_scale 3.5, seed 0 unless said; 12x20 px): dev_t2i (4 steps,
  max_sequence_length 32), dev_true_cfg (negative_prompt, true_cfg_scale 2.0, 3 steps: per step
  the positive pass, then the negative pass, both batch 1), schnell_t2i (the schnell transformer
  with FLUX.1-schnell's scheduler, guidance_scale 0.0, 4 steps, max_sequence_length 32),
  two_images (num_images_per_prompt 2, latents2, 4 steps), max_seq8 (the long prompt,
  max_sequence_length 8, 4 steps), img2img (`FluxImg2ImgPipeline` from the dev components, strength
  0.6, 5 steps of which 3 run, seed 5); all but dev_t2i, schnell_t2i and max_seq8 at the default
  max_sequence_length 512.

Usage:  python tools/reference/gen_flux.py     # after gen_t5.py (reads t5-tokenizer/);
                                               # diffusers 0.42.1, transformers 5.24; ~10 s on
                                               # CPU; byte-identical reruns
"""

import functools
import hashlib
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.models.autoencoders.vae as dvae  # noqa: E402
import diffusers.pipelines.flux.pipeline_flux as pf_txt  # noqa: E402
import diffusers.pipelines.flux.pipeline_flux_img2img as pf_img  # noqa: E402
import diffusers.schedulers.scheduling_flow_match_euler_discrete as s_fm  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxImg2ImgPipeline,
    FluxPipeline,
    FluxTransformer2DModel,
)
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextModel,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from gen_diffusion import FIX, fresh_dir  # noqa: E402
from gen_pipelines import (  # noqa: E402
    LONG_PROMPT,
    NEGATIVE,
    PROMPT,
    DrawRecorder,
    finish,
    make_tokenizer,
    publish_text_encoder,
    publish_tokenizer,
    run,
)
from gen_sd3 import HEIGHT, PROMPT_3, T5_TOKENIZER, WIDTH, randomize, text_config  # noqa: E402
from gen_sdxl import reload_tokenizers  # noqa: E402
from gen_single_file import write_list  # noqa: E402

torch.set_default_dtype(torch.float32)
diffusers.utils.logging.set_verbosity_error()

TINY = dict(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=8,
    num_attention_heads=2, joint_attention_dim=24, pooled_projection_dim=20,
    axes_dims_rope=(2, 2, 4),
)
TINY_CONFIGS = {
    "schnell": dict(TINY, guidance_embeds=False),
    "dev": dict(TINY, guidance_embeds=True),
}
# black-forest-labs/FLUX.1-{schnell,dev} transformer/config.json (informational
# `_diffusers_version` left out).
FULL = {
    "flux1-schnell": dict(
        attention_head_dim=128, guidance_embeds=False, in_channels=64, joint_attention_dim=4096,
        num_attention_heads=24, num_layers=19, num_single_layers=38, patch_size=1,
        pooled_projection_dim=768, axes_dims_rope=[16, 56, 56],
    ),
}
FULL["flux1-dev"] = dict(FULL["flux1-schnell"], guidance_embeds=True)

# black-forest-labs/FLUX.1-dev and FLUX.1-schnell scheduler/scheduler_config.json
# (`_diffusers_version` informational).
SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.30.0.dev0",
    "base_image_seq_len": 256,
    "base_shift": 0.5,
    "max_image_seq_len": 4096,
    "max_shift": 1.15,
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
}
SCHNELL_OVERRIDES = {"shift": 1.0, "use_dynamic_shifting": False}
SCHNELL_SCHEDULER = dict(SCHEDULER, _diffusers_version="0.29.0.dev0", **SCHNELL_OVERRIDES)

PROMPT_2 = PROMPT_3  # a different T5 prompt ("the cat and the dog on a mat")
SEQ = 32  # max_sequence_length of most encode cases (PROMPT is 28 T5 tokens: untruncated)
GUIDANCE = 3.5
TRUE_CFG = 2.0
VAE_FACTOR = 2


# --------------------------------------------------------------------------------------------
# 1. Tiny transformers.

def make_transformer(name):
    idx = list(TINY_CONFIGS).index(name)
    torch.manual_seed(0)
    model = randomize(FluxTransformer2DModel(**TINY_CONFIGS[name]), 90 + idx).eval()
    assert all(p.abs().min() > 0 for p in model.parameters())  # nothing left at zero
    return model


def transformer_io(model, idx):
    cfg = model.config
    g = torch.Generator().manual_seed(95 + idx)
    latents = torch.randn(2, 4, 6, 10, generator=g)
    io = {
        "latents": latents,
        "hidden_states": FluxPipeline._pack_latents(latents, 2, 4, 6, 10),
        "img_ids": FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32),
        "encoder_hidden_states": torch.randn(2, 7, cfg.joint_attention_dim, generator=g),
        "txt_ids": torch.zeros(7, 3),
        "pooled_projections": torch.randn(2, cfg.pooled_projection_dim, generator=g),
        "timestep": torch.tensor([0.9815, 0.31225]),
    }
    if cfg.guidance_embeds:
        io["guidance"] = torch.tensor([3.5, 3.5])
    return io


def forward_io(model, io):
    with torch.no_grad():
        return model(**{k: v for k, v in io.items() if k not in ("latents", "out")}).sample


def gen_tiny():
    """Writes schnell/ (weights and io) and dev/io.safetensors; returns both models (the dev
    weights are written with the pipeline folder)."""
    root = os.path.join(FIX, "flux-transformer-tiny")
    fresh_dir(root)
    models = {}
    for idx, name in enumerate(TINY_CONFIGS):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        model = make_transformer(name)
        io = transformer_io(model, idx)
        out = forward_io(model, io)
        if name == "schnell":
            model.save_pretrained(folder, safe_serialization=True)
            reloaded = FluxTransformer2DModel.from_pretrained(folder).eval()
            assert torch.equal(forward_io(reloaded, io), out)
        io["out"] = out
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"),
                  metadata={"format": "pt"})
        models[name] = (model, io)
        print(f"  flux-transformer-tiny/{name}: |out| max {out.abs().max().item():.2f}, "
              f"std {out.std().item():.2f}")
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)
    return models


def gen_full():
    for name, cfg in FULL.items():
        folder = os.path.join(FIX, "full", name, "transformer")
        fresh_dir(folder)
        with torch.device("meta"):
            model = FluxTransformer2DModel(**cfg)
        config = {"_class_name": "FluxTransformer2DModel", **cfg}
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config, f, indent=2, sort_keys=True)
            f.write("\n")
        write_list(os.path.join(folder, "tensors.json"), model.state_dict().items())
        print(f"  full/{name}/transformer: {len(model.state_dict())} tensors")


# --------------------------------------------------------------------------------------------
# 2. The pipeline.

class FluxDrawRecorder(DrawRecorder):
    """`gen_pipelines.DrawRecorder` on the FLUX pipeline modules, the VAE posterior and the
    flow-matching scheduler (which draws only with `stochastic_sampling`)."""

    modules = (dvae, pf_txt, pf_img, s_fm)


class FluxCapture:
    """Wraps `transformer.forward` of each transformer given to `wrap`: keeps what the first call
    after `reset()` received and returned, and the timestep / guidance / batch / text length of
    every call (and its pooled projections, to tell the true-CFG passes apart)."""

    KEYS = ("hidden_states", "timestep", "guidance", "encoder_hidden_states", "pooled_projections",
            "img_ids", "txt_ids")

    def __init__(self):
        self.first, self.calls, self.pooled = None, [], []

    def wrap(self, transformer):
        forward = transformer.forward

        def capturing(*args, **kwargs):
            assert not args
            out = forward(*args, **kwargs)
            t, g = kwargs["timestep"], kwargs["guidance"]
            assert t.dtype == torch.float32 and torch.equal(t, t[:1].expand_as(t))
            if g is not None:
                assert g.dtype == torch.float32 and torch.equal(g, g[:1].expand_as(g))
                assert g.shape == t.shape
            self.calls.append({
                "timestep": float(t[0]),
                "guidance": None if g is None else float(g[0]),
                "batch": int(kwargs["hidden_states"].shape[0]),
                "txt_len": int(kwargs["encoder_hidden_states"].shape[1]),
            })
            self.pooled.append(kwargs["pooled_projections"].clone())
            if self.first is None:
                self.first = {k: kwargs[k].clone() for k in self.KEYS if kwargs[k] is not None}
                self.first["out"] = out[0].clone()
            return out

        transformer.forward = capturing

    def reset(self):
        self.first, self.calls, self.pooled = None, [], []


class Runner:
    """`gen_sd3.Runner` for FLUX: the scheduler per run, the packed latents, the schedule."""

    def __init__(self, recorder, capture, expected):
        self.recorder, self.capture, self.expected = recorder, capture, expected
        self.cases, self.fractions = {}, {}

    def __call__(self, pipe, name, call, seed, kwargs, latents=None, image=None,
                 keep_first=False, transformer="dev", overrides=None, negative_pooled=None):
        """Runs `pipe` with flux-tiny's scheduler config (+ `overrides`); `latents` / `image` are
        (expected key, tensor) pairs, `latents` unpacked (the pipeline gets them packed).
        `keep_first`: store what the first transformer call got and gave. `negative_pooled`:
        the pooled embeddings of the negative prompt (to label the true-CFG passes)."""
        overrides = overrides or {}
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(dict(SCHEDULER, **overrides))
        schedules = []
        set_timesteps = pipe.scheduler.set_timesteps

        @functools.wraps(set_timesteps)  # diffusers inspects the signature for `sigmas`
        def recording(*args, **kw):
            set_timesteps(*args, **kw)
            schedules.append({
                "mu": kw.get("mu"),
                "sigmas_in": None if kw.get("sigmas") is None else list(kw["sigmas"]),
                "sigmas": pipe.scheduler.sigmas.tolist(),
                "timesteps": pipe.scheduler.timesteps.tolist(),
            })

        pipe.scheduler.set_timesteps = recording
        call_kwargs = dict(kwargs)
        if latents is not None:
            lat = latents[1]
            b, c, h, w = lat.shape
            call_kwargs["latents"] = FluxPipeline._pack_latents(lat, b, c, h, w)
        if image is not None:
            call_kwargs["image"] = image[1]
        settings = {
            "call": call,
            "transformer": transformer,
            "scheduler": "FlowMatchEulerDiscreteScheduler",
            "scheduler_overrides": overrides,
            "kwargs": kwargs,
            "latents": latents[0] if latents else None,
            "image": image[0] if image else None,
            "seed": seed,
        }
        self.capture.reset()
        run(pipe, self.recorder, self.expected, name, settings, **call_kwargs)
        calls, pooled = self.capture.calls, self.capture.pooled
        half = len(calls) // 2  # run() calls the pipeline twice (latents, then images)
        assert calls[:half] == calls[half:], name
        for c, p in zip(calls[:half], pooled[:half]):
            c["negative"] = negative_pooled is not None and torch.equal(p, negative_pooled)
        settings["transformer_calls"] = calls[:half]
        # The schedule: set once per pipeline call, the same both times.
        assert len(schedules) == 2 and schedules[0] == schedules[1], name
        steps = kwargs["num_inference_steps"]
        sched = schedules[0]
        expect_in = np.linspace(1.0, 1 / steps, steps)
        assert np.array_equal(np.array(sched["sigmas_in"]), expect_in), name
        mu = pf_txt.calculate_shift(15, 256, 4096, 0.5, 1.15)
        assert sched["mu"] == mu, (name, sched["mu"], mu)
        begin = pipe.scheduler.begin_index
        settings.update(mu=sched["mu"], sigmas=sched["sigmas"], timesteps=sched["timesteps"],
                        begin_index=begin)
        used = sched["timesteps"][begin:]
        per_step = [c for c in calls[:half] if not c["negative"]]
        assert len(per_step) == len(used), name
        for c, t in zip(per_step, used):
            # The transformer gets float32(t) / 1000.
            assert c["timestep"] == float(torch.tensor(t, dtype=torch.float32) / 1000), (name, c, t)
        if keep_first:
            for k, v in self.capture.first.items():
                self.expected[f"{name}.{k}"] = v
        lat = self.expected[f"{name}.latents_out"]
        b = lat.shape[0]
        assert lat.shape == (b, 15, 16), (name, lat.shape)
        unpacked = FluxPipeline._unpack_latents(lat, HEIGHT, WIDTH, VAE_FACTOR)
        assert unpacked.shape == (b, 4, 6, 10)
        self.expected[f"{name}.latents_unpacked"] = unpacked
        img = self.expected[f"{name}.images"]
        assert torch.isfinite(lat).all() and torch.isfinite(img).all(), name
        frac = ((img > 0.001) & (img < 0.999)).float().mean().item()
        assert frac > 0.5, f"{name}: only {frac:.2f} of the pixels unclamped"
        self.fractions[name] = frac
        print(f"      latents |max| {lat.abs().max().item():.2f} std {lat.std().item():.2f}, "
              f"image std {img.std().item():.3f}, {half} transformer calls, mu {sched['mu']:.4f}, "
              f"timesteps {[round(t, 2) for t in used]}")
        self.cases[name] = settings
        return settings


def make_components(vocab_size):
    torch.manual_seed(0)
    te1 = randomize(CLIPTextModel(text_config(vocab_size, 20, "quick_gelu")), 101).eval()
    t5_config = T5Config(
        vocab_size=78, d_model=24, d_kv=8, d_ff=16, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )
    torch.manual_seed(0)
    te2 = randomize(T5EncoderModel(t5_config), 102).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=0.3611,
        shift_factor=0.1159,
        force_upcast=True,
    )
    vae = randomize(vae, 103).eval()
    return te1, te2, vae


def publish_tokenizer_2(folder):
    """tokenizer_2/ holds exactly the t5-tokenizer fixture's files."""
    out = os.path.join(folder, "tokenizer_2")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(T5_TOKENIZER, name), os.path.join(out, name))
    tok = T5TokenizerFast.from_pretrained(out)
    ref = T5TokenizerFast.from_pretrained(T5_TOKENIZER)
    for t in (PROMPT, NEGATIVE, "", LONG_PROMPT, PROMPT_2):
        for n in (8, SEQ, 512):
            a = tok(t, padding="max_length", max_length=n, truncation=True).input_ids
            assert a == ref(t, padding="max_length", max_length=n, truncation=True).input_ids
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    return tok


def write_scheduler(folder):
    sched_dir = os.path.join(folder, "scheduler")
    with open(os.path.join(sched_dir, "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
        f.write("\n")
    return FlowMatchEulerDiscreteScheduler.from_pretrained(sched_dir)


def encode_cases(pipe, expected, specs):
    """Stores the outputs of each encode case; returns the cases' arguments and the outputs."""
    cases, raw = {}, {}
    for name, spec in specs.items():
        msl = spec.get("max_sequence_length", SEQ)
        n = spec.get("num_images_per_prompt", 1)
        with torch.no_grad():
            pe, pooled, ids = pipe.encode_prompt(
                spec["prompt"], spec.get("prompt_2"), device=torch.device("cpu"),
                num_images_per_prompt=n, max_sequence_length=msl,
            )
        assert pe.shape == (n, msl, 24) and pooled.shape == (n, 20), (pe.shape, pooled.shape)
        assert ids.shape == (msl, 3) and not ids.any() and ids.dtype == torch.float32
        expected[f"encode.{name}.prompt_embeds"] = pe
        expected[f"encode.{name}.pooled_prompt_embeds"] = pooled
        expected[f"encode.{name}.text_ids"] = ids
        raw[name] = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}
        cases[name] = {
            "prompt": spec["prompt"],
            "prompt_2": spec.get("prompt_2"),
            "num_images_per_prompt": n,
            "max_sequence_length": msl,
        }
    return cases, raw


def build_pipeline(folder, transformer):
    tok_dir = os.path.join(FIX, "flux-tiny-tokenizer-tmp")
    try:
        tok, vocab_size = make_tokenizer(tok_dir)
        te1, te2, vae = make_components(vocab_size)
        pipe = FluxPipeline(
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER), vae=vae,
            text_encoder=te1, tokenizer=tok, text_encoder_2=te2,
            tokenizer_2=T5TokenizerFast.from_pretrained(T5_TOKENIZER), transformer=transformer,
        )
        pipe.set_progress_bar_config(disable=True)
        fresh_dir(folder)
        pipe.save_pretrained(folder, safe_serialization=True)
        publish_text_encoder(folder, te1)
        publish_tokenizer(folder, tok_dir)
        pipe.tokenizer_2 = publish_tokenizer_2(folder)
        pipe.scheduler = write_scheduler(folder)
        pipe.tokenizer, _ = reload_tokenizers(folder, tok, None)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    assert pipe.tokenizer.pad_token == "<|endoftext|>" and pipe.tokenizer.model_max_length == 77
    # transformers 5 names the tokenizer class `T5Tokenizer` (T5TokenizerFast is an alias of it);
    # the published FLUX.1 model_index.json says T5TokenizerFast, which still loads.
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    assert index["tokenizer_2"] == ["transformers", "T5Tokenizer"], index
    index["tokenizer_2"] = ["transformers", "T5TokenizerFast"]
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    assert index["_class_name"] == "FluxPipeline"
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"], index
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"], index
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"], index
    assert index["image_encoder"] == [None, None] and index["feature_extractor"] == [None, None]
    assert pipe.vae_scale_factor == VAE_FACTOR
    return pipe


def check_reload(folder, pipe):
    """The folder loads back in diffusers to the same models, scheduler and tokens."""
    loaded = FluxPipeline.from_pretrained(folder)
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2"):
        a, b = getattr(loaded, sub).state_dict(), getattr(pipe, sub).state_dict()
        assert sorted(a) == sorted(b), sub
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    assert type(loaded.tokenizer_2).__name__ in ("T5Tokenizer", "T5TokenizerFast")
    for t in (PROMPT, LONG_PROMPT, ""):
        for a, b in ((loaded.tokenizer, pipe.tokenizer), (loaded.tokenizer_2, pipe.tokenizer_2)):
            kw = dict(padding="max_length", max_length=77, truncation=True)
            assert a(t, **kw).input_ids == b(t, **kw).input_ids
    assert isinstance(loaded.tokenizer, CLIPTokenizer)
    return loaded


def gen_pipeline(recorder, models):
    folder = os.path.join(FIX, "flux-tiny")
    transformer, dev_io = models["dev"]
    pipe = build_pipeline(folder, transformer)
    loaded = check_reload(folder, pipe)
    # flux-transformer-tiny/dev/io.safetensors holds for the folder's transformer.
    assert torch.equal(forward_io(loaded.transformer.eval(), dev_io), dev_io["out"])
    del loaded

    expected = {}
    out = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "prompt_2": PROMPT_2,
           "long_prompt": LONG_PROMPT, "scheduler": SCHEDULER,
           "schnell_scheduler": SCHNELL_SCHEDULER}
    out["tokens"] = {
        "t5": [
            {"text": t, "max_length": n,
             "ids": pipe.tokenizer_2(t, padding="max_length", max_length=n, truncation=True).input_ids}
            for t, n in ((PROMPT, SEQ), (NEGATIVE, SEQ), (PROMPT_2, SEQ), (LONG_PROMPT, 8))
        ],
    }
    out["encode"], e = encode_cases(pipe, expected, {
        "plain": dict(prompt=PROMPT),
        "prompt_2": dict(prompt=PROMPT, prompt_2=PROMPT_2),
        "max_seq8": dict(prompt=LONG_PROMPT, max_sequence_length=8),
        "two_images": dict(prompt=PROMPT, num_images_per_prompt=2),
    })
    plain, p2, two = e["plain"], e["prompt_2"], e["two_images"]
    assert torch.equal(p2["pooled_prompt_embeds"], plain["pooled_prompt_embeds"])
    assert not torch.equal(p2["prompt_embeds"], plain["prompt_embeds"])
    for k in ("prompt_embeds", "pooled_prompt_embeds"):
        assert torch.equal(two[k], torch.cat([plain[k]] * 2)), k
    # The long prompt: 163 T5 tokens cut to 7 + </s>; CLIP cut to 77.
    ids8 = pipe.tokenizer_2(LONG_PROMPT, padding="max_length", max_length=8, truncation=True).input_ids
    assert ids8[-1] == 1 and 0 not in ids8, ids8
    # The negative prompt's pooled embeddings label the true-CFG passes.
    with torch.no_grad():
        _, neg_pooled, _ = pipe.encode_prompt(NEGATIVE, device=torch.device("cpu"))
    assert not torch.equal(neg_pooled, plain["pooled_prompt_embeds"])

    g = torch.Generator().manual_seed(90)
    latents1 = torch.randn(1, 4, HEIGHT // VAE_FACTOR, WIDTH // VAE_FACTOR, generator=g)
    latents2 = torch.randn(2, 4, HEIGHT // VAE_FACTOR, WIDTH // VAE_FACTOR, generator=g)
    image = torch.randint(0, 256, (1, 3, HEIGHT, WIDTH), generator=g).float() / 255.0
    expected.update(latents1=latents1, latents2=latents2, image=image)
    l1, l2, img = ("latents1", latents1), ("latents2", latents2), ("image", image)

    capture = FluxCapture()
    capture.wrap(pipe.transformer)
    r = Runner(recorder, capture, expected)
    t2i = dict(prompt=PROMPT, num_inference_steps=4, height=HEIGHT, width=WIDTH,
               guidance_scale=GUIDANCE)
    r(pipe, "dev_t2i", "text_to_image", 0, dict(t2i, max_sequence_length=SEQ), latents=l1,
      keep_first=True)
    first = {k: expected[f"dev_t2i.{k}"] for k in FluxCapture.KEYS}
    assert torch.equal(first["encoder_hidden_states"], plain["prompt_embeds"])
    assert torch.equal(first["pooled_projections"], plain["pooled_prompt_embeds"])
    assert torch.equal(first["hidden_states"], FluxPipeline._pack_latents(latents1, 1, 4, 6, 10))
    assert torch.equal(first["img_ids"], dev_io["img_ids"])
    assert torch.equal(first["txt_ids"], expected["encode.plain.text_ids"])
    assert first["guidance"].tolist() == [GUIDANCE] and first["timestep"].tolist() == [1.0]
    assert r.cases["dev_t2i"]["transformer_calls"][0]["timestep"] == 1.0

    r(pipe, "dev_true_cfg", "text_to_image", 0,
      dict(t2i, num_inference_steps=3, negative_prompt=NEGATIVE, true_cfg_scale=TRUE_CFG),
      latents=l1, negative_pooled=neg_pooled)
    calls = r.cases["dev_true_cfg"]["transformer_calls"]
    # Per step: the positive pass, then the negative one, each batch 1, same timestep.
    assert [c["negative"] for c in calls] == [False, True] * 3, calls
    assert all(c["batch"] == 1 and c["txt_len"] == 512 for c in calls)
    assert all(calls[i]["timestep"] == calls[i + 1]["timestep"] for i in (0, 2, 4))

    schnell, _ = models["schnell"]
    capture.wrap(schnell)
    schnell_pipe = FluxPipeline(**dict(pipe.components, transformer=schnell))
    schnell_pipe.set_progress_bar_config(disable=True)
    r(schnell_pipe, "schnell_t2i", "text_to_image", 0,
      dict(t2i, guidance_scale=0.0, max_sequence_length=SEQ), latents=l1, transformer="schnell",
      overrides=SCHNELL_OVERRIDES)
    assert all(c["guidance"] is None for c in r.cases["schnell_t2i"]["transformer_calls"])
    # No shift: the sigmas are linspace(1, 1/4, 4) in float32, then 0.
    assert r.cases["schnell_t2i"]["sigmas"] == [1.0, 0.75, 0.5, 0.25, 0.0]

    r(pipe, "two_images", "text_to_image", 0, dict(t2i, num_images_per_prompt=2), latents=l2)
    assert all(c["batch"] == 2 for c in r.cases["two_images"]["transformer_calls"])
    r(pipe, "max_seq8", "text_to_image", 0, dict(t2i, prompt=LONG_PROMPT, max_sequence_length=8),
      latents=l1)

    i2i_pipe = FluxImg2ImgPipeline(**pipe.components)
    i2i_pipe.set_progress_bar_config(disable=True)
    r(i2i_pipe, "img2img", "img2img", 5,
      dict(prompt=PROMPT, num_inference_steps=5, strength=0.6, height=HEIGHT, width=WIDTH,
           guidance_scale=GUIDANCE),
      image=img)
    case = r.cases["img2img"]
    assert case["draws"] == 2 and len(case["transformer_calls"]) == 3 and case["begin_index"] == 2
    assert expected["img2img.draw.0"].shape == (1, 4, 6, 10)
    assert expected["img2img.draw.1"].shape == (1, 4, 6, 10)
    # The schedule is dev_t2i's with 5 steps (the same mu): strength only picks where to start.
    out["cases"] = r.cases
    finish(folder, expected, out)
    print("  unclamped pixels: " + ", ".join(f"{k} {v:.3f}" for k, v in r.fractions.items()))


def main():
    models = gen_tiny()
    gen_full()
    gen_pipeline(FluxDrawRecorder(), models)
    for path in ("flux-tiny/expected.safetensors", "flux-transformer-tiny/schnell/io.safetensors",
                 "flux-transformer-tiny/dev/io.safetensors"):
        with open(os.path.join(FIX, path), "rb") as f:
            print(f"  {path} sha256 {hashlib.sha256(f.read()).hexdigest()}")


if __name__ == "__main__":
    main()
