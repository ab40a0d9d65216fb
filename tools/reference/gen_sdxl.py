#!/usr/bin/env python3
"""Reference fixture generator for the Stable Diffusion XL pipelines of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/sdxl-tiny/           a complete diffusers `StableDiffusionXLPipeline` folder
                                      (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
                                      `text_encoder_2/`, `tokenizer/`, `tokenizer_2/`,
                                      `scheduler/`) with tiny random models whose tensor names
                                      are those of stabilityai/stable-diffusion-xl-base-1.0
  tests/fixtures/sdxl-tiny-refiner/   a `StableDiffusionXLImg2ImgPipeline` folder laid out like
                                      stable-diffusion-xl-refiner-1.0: no `text_encoder` /
                                      `tokenizer` (`[null, null]`), the same `text_encoder_2`,
                                      `tokenizer_2` and `vae`, its own UNet conditioned on
                                      `text_encoder_2` only and on an aesthetic score

Both tokenizers use the tiny CLIP BPE vocabulary of `gen_pipelines.make_tokenizer`
(`vocab.json` + `merges.txt`, the published layout); as in SDXL, `tokenizer_2` pads with `!`
(id 0) where `tokenizer` pads with `<|endoftext|>`. Both text encoders have the legacy
`eos_token_id = 2` of the published configs (pooled output taken at the argmax token id).
The scheduler is SDXL base's `scheduler_config.json` verbatim (Euler, "leading").

Each folder also holds `expected.safetensors` (float32) and `expected.json`:

  encode.<name>.{prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds,
                 negative_pooled_prompt_embeds}     `pipe.encode_prompt(...)` (no negatives
                                                    without guidance)
  latents1 [1,4,8,8], latents2 [2,4,8,8]             initial latents passed to some runs
  image [1,3,32,32] (8-bit values in [0,1]), mask [1,1,32,32]
  <case>.latents_out    `output_type="latent"`
  <case>.images         `output_type="pt"` (in [0, 1])
  <case>.draw.<i>       every `randn_tensor` draw of the run, in order (initial noise, VAE
                        posterior samples, ancestral noise of the scheduler)
  <case>.encoder_hidden_states, <case>.time_ids, <case>.text_embeds
                        what the first UNet call received (CFG: negative half first)
  base_latents          (refiner) the base's `base_denoising_end.latents_out`

`expected.json`: the prompts, `encode` (the arguments of each encode case) and `cases`
(`call`, `scheduler`, `scheduler_overrides`, `kwargs` — every keyword of the pipeline call
except generator/output_type/image/mask_image/latents, `latents`, `image`, `mask`, `seed`,
`draws`).

Usage:  python tools/reference/gen_sdxl.py     # diffusers 0.42.1, transformers 5.24; ~1 min
"""

import hashlib
import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.models.autoencoders.vae as dvae  # noqa: E402
import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl as px_txt  # noqa: E402
import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_img2img as px_img  # noqa: E402
import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl_inpaint as px_inp  # noqa: E402
import diffusers.schedulers.scheduling_euler_ancestral_discrete as s_eua  # noqa: E402
import diffusers.schedulers.scheduling_euler_discrete as s_eu  # noqa: E402
import diffusers.schedulers.scheduling_dpmsolver_multistep as s_dpm  # noqa: E402
import diffusers.schedulers.scheduling_lcm as s_lcm  # noqa: E402
from diffusers import (  # noqa: E402
    LCMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLImg2ImgPipeline,
    StableDiffusionXLInpaintPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from gen_diffusion import FIX, fresh_dir, randomize  # noqa: E402
from gen_pipelines import (  # noqa: E402
    LONG_PROMPT,
    NEGATIVE,
    PROMPT,
    DrawRecorder,
    finish,
    image_and_mask,
    make_tokenizer,
    make_vae,
    publish_text_encoder,
    publish_tokenizer,
    run,
)

torch.set_default_dtype(torch.float32)
# img2img / inpaint call `vae.to(torch.float32)` (force_upcast), which warns at every call.
diffusers.utils.logging.set_verbosity_error()

PROMPT_2 = "an astronaut riding a horse on mars"
NEGATIVE_2 = "the cat and the dog"
STEPS = 4
GUIDANCE = 5.0
SIZE = 32
TIME_EMBED = 8  # addition_time_embed_dim
# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json (also the refiner's).
SCHEDULER = {
    "_class_name": "EulerDiscreteScheduler",
    "_diffusers_version": "0.19.0.dev0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "interpolation_type": "linear",
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "sample_max_value": 1.0,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
    "use_karras_sigmas": False,
}
SPECIAL_2 = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "!",
    "unk_token": "<|endoftext|>",
}


class SdxlDrawRecorder(DrawRecorder):
    """`gen_pipelines.DrawRecorder` on the SDXL pipeline modules, the VAE posterior and the
    schedulers that draw noise in `step` (Euler ancestral; Euler with `s_churn`; SDE DPM++)."""

    modules = (dvae, px_txt, px_img, px_inp, s_eua, s_eu, s_dpm, s_lcm)


class UnetCapture:
    """Wraps `unet.forward` to keep what the first call after `reset()` received."""

    def __init__(self, unet):
        self.first = None
        forward = unet.forward

        def capturing(*args, **kwargs):
            if self.first is None:
                added = kwargs["added_cond_kwargs"]
                self.first = {
                    "encoder_hidden_states": kwargs["encoder_hidden_states"].clone(),
                    "time_ids": added["time_ids"].clone(),
                    "text_embeds": added["text_embeds"].clone(),
                }
                if kwargs.get("timestep_cond") is not None:
                    self.first["timestep_cond"] = kwargs["timestep_cond"].clone()
            return forward(*args, **kwargs)

        unet.forward = capturing

    def reset(self):
        self.first = None


def text_config(vocab_size, hidden, act, projection):
    # The published SDXL text encoder configs keep CLIP's legacy ids (bos 0, eos 2, pad 1):
    # with eos_token_id == 2 transformers pools at input_ids.argmax(-1).
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        projection_dim=projection,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=0,
        eos_token_id=2,
        pad_token_id=1,
    )


def make_text_encoders(vocab_size):
    torch.manual_seed(0)
    te1 = randomize(CLIPTextModel(text_config(vocab_size, 16, "quick_gelu", 16)), 31).eval()
    torch.manual_seed(0)
    te2 = CLIPTextModelWithProjection(text_config(vocab_size, 32, "gelu", 32))
    return te1, randomize(te2, 32).eval()


def make_sdxl_vae():
    """`gen_pipelines.make_vae` (factor 4) with SDXL's VAE settings."""
    vae = make_vae()
    vae.register_to_config(force_upcast=True, scaling_factor=0.13025)
    return vae


def make_unet(cross_attention_dim, time_ids, seed, time_cond_proj_dim=None):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        time_cond_proj_dim=time_cond_proj_dim,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=2,
        transformer_layers_per_block=(1, 2),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        norm_num_groups=4,
        cross_attention_dim=cross_attention_dim,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=time_ids * TIME_EMBED + 32,
    )
    unet = randomize(unet, seed).eval()
    with torch.no_grad():
        # Keep the noise prediction O(0.1) so that 4 steps of CFG 5 stay in range.
        unet.conv_out.weight.mul_(0.2)
    return unet


def publish_tokenizer_2(folder, tok_dir):
    """`publish_tokenizer` for `tokenizer_2`: the same files, but SDXL's pad token `!`."""
    out = os.path.join(folder, "tokenizer_2")
    os.remove(os.path.join(out, "tokenizer.json"))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tok_dir, name), os.path.join(out, name))
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(SPECIAL_2, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        assert json.load(f)["pad_token"] == "!"


def check_text_encoder_2(folder, text_encoder_2):
    """`CLIPTextModelWithProjection` is saved under the published names already
    (`text_model.*`, `text_projection.weight`): check them and that they load back."""
    sub = os.path.join(folder, "text_encoder_2")
    names = load_file(os.path.join(sub, "model.safetensors")).keys()
    assert "text_projection.weight" in names
    assert all(n.startswith("text_model.") or n == "text_projection.weight" for n in names)
    reloaded = CLIPTextModelWithProjection.from_pretrained(sub).eval()
    ids = torch.arange(77).unsqueeze(0) % text_encoder_2.config.vocab_size
    with torch.no_grad():
        a, b = reloaded(ids), text_encoder_2(ids)
    assert torch.equal(a.last_hidden_state, b.last_hidden_state)
    assert torch.equal(a.text_embeds, b.text_embeds)


def write_scheduler(folder):
    sched_dir = os.path.join(folder, "scheduler")
    with open(os.path.join(sched_dir, "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
        f.write("\n")
    return EulerDiscreteScheduler.from_pretrained(sched_dir)


def reload_tokenizers(folder, tok, tok2):
    """The in-memory tokenizers are the ones read back from the saved folders."""
    out = []
    for sub, ref in (("tokenizer", tok), ("tokenizer_2", tok2)):
        if ref is None:
            out.append(None)
            continue
        saved = CLIPTokenizer.from_pretrained(os.path.join(folder, sub))
        for t in (PROMPT, "", LONG_PROMPT):
            a = saved(t, padding="max_length", max_length=77, truncation=True).input_ids
            assert a == ref(t, padding="max_length", max_length=77, truncation=True).input_ids
        out.append(saved)
    return out


def encode_cases(pipe, expected, specs):
    cases = {}
    for name, spec in specs.items():
        with torch.no_grad():
            pe, npe, pooled, npooled = pipe.encode_prompt(
                spec["prompt"],
                spec.get("prompt_2"),
                device=torch.device("cpu"),
                num_images_per_prompt=spec.get("num_images_per_prompt", 1),
                do_classifier_free_guidance=spec["guidance"],
                negative_prompt=spec.get("negative_prompt"),
                negative_prompt_2=spec.get("negative_prompt_2"),
                clip_skip=spec.get("clip_skip"),
            )
        expected[f"encode.{name}.prompt_embeds"] = pe
        expected[f"encode.{name}.pooled_prompt_embeds"] = pooled
        if spec["guidance"]:
            expected[f"encode.{name}.negative_prompt_embeds"] = npe
            expected[f"encode.{name}.negative_pooled_prompt_embeds"] = npooled
        cases[name] = {
            "prompt": spec["prompt"],
            "prompt_2": spec.get("prompt_2"),
            "negative_prompt": spec.get("negative_prompt"),
            "negative_prompt_2": spec.get("negative_prompt_2"),
            "num_images_per_prompt": spec.get("num_images_per_prompt", 1),
            "guidance": spec["guidance"],
            "clip_skip": spec.get("clip_skip"),
        }
    return cases


class Runner:
    def __init__(self, recorder, capture, expected, config):
        self.recorder, self.capture, self.expected = recorder, capture, expected
        self.config = config  # the folder's scheduler config
        self.cases, self.fractions = {}, {}

    def __call__(self, pipe, name, call, scheduler, overrides, seed, kwargs, latents=None,
                 image=None, mask=None):
        """Runs `pipe` with `scheduler` (a class) built from the folder's config + `overrides`;
        `latents` / `image` / `mask` are (expected key, tensor) pairs."""
        pipe.scheduler = scheduler.from_config(self.config, **overrides)
        call_kwargs = dict(kwargs)
        for key, arg in (("latents", latents), ("image", image), ("mask_image", mask)):
            if arg is not None:
                call_kwargs[key] = arg[1]
        settings = {
            "call": call,
            "scheduler": scheduler.__name__,
            "scheduler_overrides": overrides,
            "kwargs": kwargs,
            "latents": latents[0] if latents else None,
            "image": image[0] if image else None,
            "mask": mask[0] if mask else None,
            "seed": seed,
        }
        self.capture.reset()
        run(pipe, self.recorder, self.expected, name, settings, **call_kwargs)
        for k, v in self.capture.first.items():
            self.expected[f"{name}.{k}"] = v
        lat, img = self.expected[f"{name}.latents_out"], self.expected[f"{name}.images"]
        assert torch.isfinite(lat).all() and torch.isfinite(img).all(), name
        frac = ((img > 0.001) & (img < 0.999)).float().mean().item()
        assert frac > 0.5, f"{name}: only {frac:.2f} of the pixels unclamped"
        self.fractions[name] = frac
        print(f"      latents |max| {lat.abs().max().item():.2f}, image std {img.std().item():.3f}")
        self.cases[name] = settings
        return settings


def gen_base(recorder, tok_dir, tok, tok2, te1, te2, vae):
    folder = os.path.join(FIX, "sdxl-tiny")
    unet = make_unet(16 + 32, 6, 33)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok2,
        unet=unet, scheduler=EulerDiscreteScheduler.from_config(SCHEDULER),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    fresh_dir(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    publish_text_encoder(folder, te1)
    check_text_encoder_2(folder, te2)
    publish_tokenizer(folder, tok_dir)
    publish_tokenizer_2(folder, tok_dir)
    pipe.scheduler = write_scheduler(folder)
    pipe.tokenizer, pipe.tokenizer_2 = reload_tokenizers(folder, tok, tok2)
    assert pipe.tokenizer.pad_token_id != pipe.tokenizer_2.pad_token_id
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    assert index["force_zeros_for_empty_prompt"] is True
    assert index["image_encoder"] == [None, None] and index["feature_extractor"] == [None, None]

    expected = {}
    out = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "prompt_2": PROMPT_2,
           "negative_prompt_2": NEGATIVE_2}
    out["encode"] = encode_cases(pipe, expected, {
        "cfg": dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=True),
        "two_prompts": dict(prompt=PROMPT, prompt_2=PROMPT_2, negative_prompt=NEGATIVE,
                            negative_prompt_2=NEGATIVE_2, num_images_per_prompt=2,
                            guidance=True),
        "empty_negative": dict(prompt=PROMPT, guidance=True),
        "clip_skip1": dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=True,
                           clip_skip=1),
        "long": dict(prompt=LONG_PROMPT, guidance=False),
        "no_cfg": dict(prompt=PROMPT, guidance=False),
    })
    assert not expected["encode.empty_negative.negative_prompt_embeds"].any()
    assert not expected["encode.empty_negative.negative_pooled_prompt_embeds"].any()

    g = torch.Generator().manual_seed(5)
    latents1 = torch.randn(1, 4, 8, 8, generator=g)
    latents2 = torch.randn(2, 4, 8, 8, generator=g)
    image, mask = image_and_mask(g)
    expected.update(latents1=latents1, latents2=latents2, image=image, mask=mask)
    l1, l2 = ("latents1", latents1), ("latents2", latents2)
    img, msk = ("image", image), ("mask", mask)

    capture = UnetCapture(unet)
    r = Runner(recorder, capture, expected, pipe.scheduler.config)
    t2i = dict(prompt=PROMPT, num_inference_steps=STEPS, height=SIZE, width=SIZE)
    cfg = dict(t2i, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE)
    r(pipe, "dpmpp_2m_karras", "text_to_image", DPMSolverMultistepScheduler,
      {"use_karras_sigmas": True}, 0, cfg, latents=l1)
    # No negative prompt: force_zeros_for_empty_prompt gives zero negative embeddings.
    r(pipe, "euler_a", "text_to_image", EulerAncestralDiscreteScheduler, {}, 3,
      dict(t2i, guidance_scale=GUIDANCE))
    r(pipe, "euler_no_cfg", "text_to_image", EulerDiscreteScheduler, {}, 0,
      dict(t2i, guidance_scale=1.0), latents=l1)
    r(pipe, "micro_cond", "text_to_image", EulerDiscreteScheduler, {}, 0,
      dict(cfg, prompt_2=PROMPT_2, negative_prompt_2=NEGATIVE_2, guidance_rescale=0.7,
           original_size=(64, 64), crops_coords_top_left=(4, 8), target_size=(32, 32),
           negative_original_size=(16, 16), negative_crops_coords_top_left=(0, 4),
           negative_target_size=(32, 32), num_images_per_prompt=2),
      latents=l2)
    r(pipe, "base_denoising_end", "text_to_image", EulerDiscreteScheduler, {}, 0,
      dict(cfg, num_inference_steps=8, denoising_end=0.5), latents=l1)
    r(pipe, "turbo", "text_to_image", EulerAncestralDiscreteScheduler,
      {"timestep_spacing": "trailing"}, 4,
      dict(t2i, num_inference_steps=1, guidance_scale=0.0))

    i2i_pipe = StableDiffusionXLImg2ImgPipeline(
        **pipe.components, requires_aesthetics_score=False, add_watermarker=False)
    i2i_pipe.set_progress_bar_config(disable=True)
    i2i = dict(prompt=PROMPT, num_inference_steps=STEPS, negative_prompt=NEGATIVE,
               guidance_scale=GUIDANCE)
    r(i2i_pipe, "img2img", "img2img", EulerDiscreteScheduler, {}, 5,
      dict(i2i, strength=0.6), image=img)

    inp_pipe = StableDiffusionXLInpaintPipeline(**pipe.components, add_watermarker=False)
    inp_pipe.set_progress_bar_config(disable=True)
    inp = dict(i2i, height=SIZE, width=SIZE)
    r(inp_pipe, "inpaint", "inpaint", EulerDiscreteScheduler, {}, 6,
      dict(inp, strength=0.75), image=img, mask=msk)
    r(inp_pipe, "inpaint_full_strength", "inpaint", EulerDiscreteScheduler, {}, 7,
      dict(inp, strength=1.0), image=img, mask=msk)

    # LCM-distilled SDXL (latent-consistency/lcm-sdxl's layout): a UNet with
    # `time_cond_proj_dim` takes the guidance scale as an embedding (no unconditional branch),
    # stepped by the LCM scheduler. The UNet is saved as `unet_lcm/` beside the pipeline's.
    lcm_unet = make_unet(16 + 32, 6, 34, time_cond_proj_dim=8)
    lcm_unet.save_pretrained(os.path.join(folder, "unet_lcm"), safe_serialization=True)
    lcm_pipe = StableDiffusionXLPipeline(**dict(pipe.components, unet=lcm_unet),
                                         add_watermarker=False)
    lcm_pipe.set_progress_bar_config(disable=True)
    r.capture = UnetCapture(lcm_unet)
    r(lcm_pipe, "lcm", "text_to_image", LCMScheduler, {}, 10,
      dict(t2i, guidance_scale=8.0), latents=l1)

    out["cases"] = r.cases
    finish(folder, expected, out)
    return expected["base_denoising_end.latents_out"], r.fractions


def gen_refiner(recorder, tok_dir, tok2, te2, vae, base_latents):
    folder = os.path.join(FIX, "sdxl-tiny-refiner")
    # Refiner: text_encoder_2 only (cross-attention 32), time ids with an aesthetic score
    # (original size, crop, score: 5 values).
    unet = make_unet(32, 5, 34)
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=vae, text_encoder=None, text_encoder_2=te2, tokenizer=None, tokenizer_2=tok2,
        unet=unet, scheduler=EulerDiscreteScheduler.from_config(SCHEDULER),
        requires_aesthetics_score=True, force_zeros_for_empty_prompt=False,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    fresh_dir(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    check_text_encoder_2(folder, te2)
    publish_tokenizer_2(folder, tok_dir)
    pipe.scheduler = write_scheduler(folder)
    _, pipe.tokenizer_2 = reload_tokenizers(folder, None, tok2)
    assert pipe.tokenizer_2.pad_token_id == 0
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None]
    assert index["requires_aesthetics_score"] is True
    assert index["force_zeros_for_empty_prompt"] is False

    expected = {"base_latents": base_latents}
    out = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "prompt_2": PROMPT_2,
           "negative_prompt_2": NEGATIVE_2}
    out["encode"] = encode_cases(pipe, expected, {
        "cfg": dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=True),
        # force_zeros_for_empty_prompt is false: the negative is the embedding of "".
        "empty_negative": dict(prompt=PROMPT, guidance=True),
    })
    assert expected["encode.empty_negative.negative_prompt_embeds"].abs().sum() > 0

    g = torch.Generator().manual_seed(15)
    image, _ = image_and_mask(g)
    expected["image"] = image

    r = Runner(recorder, UnetCapture(unet), expected, pipe.scheduler.config)
    base = dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE)
    r(pipe, "refine_from_base", "img2img", EulerDiscreteScheduler, {}, 8,
      dict(base, num_inference_steps=8, denoising_start=0.5),
      image=("base_latents", base_latents))
    r(pipe, "refine_image", "img2img", EulerDiscreteScheduler, {}, 9,
      dict(base, num_inference_steps=STEPS, strength=0.3, aesthetic_score=7.0,
           negative_aesthetic_score=2.0),
      image=("image", image))
    out["cases"] = r.cases
    finish(folder, expected, out)
    return r.fractions


def main():
    recorder = SdxlDrawRecorder()
    tok_dir = os.path.join(FIX, "sdxl-tiny-tokenizer-tmp")
    tok, vocab_size = make_tokenizer(tok_dir)
    tok2 = CLIPTokenizer(
        os.path.join(tok_dir, "vocab.json"),
        os.path.join(tok_dir, "merges.txt"),
        model_max_length=77,
        pad_token="!",
    )
    te1, te2 = make_text_encoders(vocab_size)
    vae = make_sdxl_vae()
    try:
        base_latents, fractions = gen_base(recorder, tok_dir, tok, tok2, te1, te2, vae)
        fractions.update(gen_refiner(recorder, tok_dir, tok2, te2, vae, base_latents))
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    print("unclamped pixels: " + ", ".join(f"{k} {v:.3f}" for k, v in fractions.items()))
    for name in ("sdxl-tiny", "sdxl-tiny-refiner"):
        with open(os.path.join(FIX, name, "expected.safetensors"), "rb") as f:
            print(f"  {name}/expected.safetensors sha256 {hashlib.sha256(f.read()).hexdigest()}")


if __name__ == "__main__":
    main()
