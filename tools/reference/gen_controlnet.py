#!/usr/bin/env python3
"""Reference fixture generator for the ControlNet model and pipelines of `mm-diffusion`.

Writes tests/fixtures/controlnet-tiny/ (relative to the repository root, whatever the cwd):

  sd/            a diffusers `ControlNetModel` folder made with `ControlNetModel.from_unet` from
                 the UNet of tests/fixtures/sd-tiny (written by gen_pipelines.py), then
                 randomised (zero convolutions included, scaled so residuals stay O(0.1));
                 `conditioning_embedding_out_channels` (4, 8, 8): the tiny VAE's factor 4
  sd_bgr/        a second one (another seed) with `controlnet_conditioning_channel_order: bgr`
  xl/            the same from the UNet of tests/fixtures/sdxl-tiny (gen_sdxl.py): SDXL's
                 added text/time embedding
  sd_single/     `config.json` of a third one with the published 4-step hint stack
                 (`conditioning_embedding_out_channels` (4, 4, 8, 8): control images 8× the
                 latents), which diffusers' single-file converter hard-codes
  sd_single_file.safetensors
                 its weights in the original ControlNet layout (`input_blocks.*`,
                 `zero_convs.*`, `input_hint_block.*`, `middle_block_out.*`, `time_embed.*`),
                 checked to convert back exactly with diffusers' `convert_controlnet_checkpoint`
  expected.safetensors / expected.json

expected.safetensors (float32):
  res.<case>.{sample, timestep, text, cond, text_embeds, time_ids}   a ControlNet's inputs
  res.<case>.down.<i>, res.<case>.mid                                 its residuals
  latents1 [1,4,8,8], image [1,3,32,32], mask [1,1,32,32], control1 / control2 [1,3,32,32]
  <case>.latents_out, <case>.images, <case>.draw.<i>                  pipeline runs, as in
                                                                      gen_pipelines.py

expected.json: `residuals` (per case: controlnet folder, scale, guess_mode, global_pool) and
`cases` (per pipeline run: base folder, `call`, `controlnets`, `controls` (expected keys of
the control images), `scheduler`, `kwargs`, `latents`, `image`, `mask`, `seed`, `draws`).

Also writes tests/fixtures/full/controlnet-sd15-canny/ and full/controlnet-sdxl-canny/: the
published `config.json` of lllyasviel/sd-controlnet-canny and diffusers/controlnet-canny-sdxl-1.0
and `tensors.json`, the (name, shape) list of diffusers' `ControlNetModel` built from it on the
meta device; and for SD 1.5 `ldm_tensors.json`, the original single file's list
(`control_v11p_sd15_canny`), checked with `convert_controlnet_checkpoint` to map onto exactly
that model.

The pipeline runs also cover IP-Adapter (the adapters and image encoder of
tests/fixtures/ip-adapter-tiny, written by gen_ip_adapter.py), alone and with a ControlNet:
`ip_adapter` in a case names the adapter file, its scale (a number or an InstantStyle dict) and
the reference image.

Usage:  python tools/reference/gen_controlnet.py [--full-only]
        # diffusers 0.42.1; run after gen_pipelines.py, gen_sdxl.py and gen_ip_adapter.py;
        # ~2 min
"""

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.models.autoencoders.vae as dvae  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet as pc_txt  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion as p_txt  # noqa: E402
import diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl as px_txt  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet_img2img as pc_img  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet_inpaint as pc_inp  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl as pcx_txt  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet_sd_xl_img2img as pcx_img  # noqa: E402
import diffusers.pipelines.controlnet.pipeline_controlnet_inpaint_sd_xl as pcx_inp  # noqa: E402
import diffusers.schedulers.scheduling_euler_ancestral_discrete as s_eua  # noqa: E402
from diffusers import (  # noqa: E402
    ControlNetModel,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionControlNetInpaintPipeline,
    StableDiffusionControlNetPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetInpaintPipeline,
    StableDiffusionPipeline,
    StableDiffusionXLControlNetPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from PIL import Image  # noqa: E402
from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gen_diffusion import FIX, fresh_dir, randomize  # noqa: E402
from gen_pipelines import NEGATIVE, PROMPT, DrawRecorder, finish, image_and_mask, run  # noqa: E402
import gen_unet  # noqa: E402
from gen_single_file import unet_to_ldm, write_list  # noqa: E402

torch.set_default_dtype(torch.float32)
diffusers.utils.logging.set_verbosity_error()

OUT = os.path.join(FIX, "controlnet-tiny")
IP_DIR = os.path.join(FIX, "ip-adapter-tiny")  # written by gen_ip_adapter.py
STEPS = 4
SIZE = 32
EMBEDDING = (4, 8, 8)  # the tiny VAEs downscale by 4


class ControlDrawRecorder(DrawRecorder):
    modules = (dvae, p_txt, px_txt, pc_txt, pc_img, pc_inp, pcx_txt, pcx_img, pcx_inp, s_eua)


def make_controlnet(unet, seed, embedding=EMBEDDING, **kwargs):
    torch.manual_seed(0)
    net = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding, **kwargs)
    net = randomize(net, seed).eval()
    with torch.no_grad():
        # The zero convolutions start at zero in training; random here, but small enough that
        # the UNet's output stays in range with them added.
        for conv in [*net.controlnet_down_blocks, net.controlnet_mid_block]:
            conv.weight.mul_(0.3)
    return net


def ldm_controlnet(state, lpb, hint_convs):
    """diffusers ControlNet names -> the original ControlNet repository's."""
    out = {}
    for name, t in state.items():
        p = name.split(".")
        if p[0] == "controlnet_down_blocks":
            out[f"zero_convs.{p[1]}.0.{p[2]}"] = t
        elif p[0] == "controlnet_mid_block":
            out[f"middle_block_out.0.{p[1]}"] = t
        elif p[0] == "controlnet_cond_embedding":
            leaf = p[-1]
            k = 0 if p[1] == "conv_in" else 2 * (hint_convs - 1) if p[1] == "conv_out" else 2 * (int(p[2]) + 1)
            out[f"input_hint_block.{k}.{leaf}"] = t
        else:
            out[unet_to_ldm(name, lpb, ())] = t
    return out


def check_single_file(ldm, net):
    """diffusers' converter maps the original names back to exactly `net`'s tensors."""
    converted = convert_controlnet_checkpoint(dict(ldm), dict(net.config))
    state = net.state_dict()
    assert sorted(converted) == sorted(state), set(converted) ^ set(state)
    for k, v in state.items():
        assert converted[k].shape == v.shape and torch.equal(converted[k], v), k


def residual_case(expected, meta, name, net, folder, scale, guess, g, added=False, pool=False):
    batch, tokens = 2, 7
    cross = net.config.cross_attention_dim
    side = 8 * 2 ** (len(net.config.conditioning_embedding_out_channels) - 1)
    inputs = {
        "sample": torch.randn(batch, 4, 8, 8, generator=g),
        "timestep": torch.tensor([517.0]),
        "text": torch.randn(batch, tokens, cross, generator=g),
        "cond": torch.rand(batch, 3, side, side, generator=g),
    }
    kwargs = {}
    if added:
        inputs["text_embeds"] = torch.randn(batch, 32, generator=g)
        inputs["time_ids"] = torch.tensor([[32.0, 32, 0, 0, 32, 32], [64, 48, 4, 2, 32, 32]])
        kwargs["added_cond_kwargs"] = {"text_embeds": inputs["text_embeds"],
                                       "time_ids": inputs["time_ids"]}
    model = net
    if pool:
        model = ControlNetModel.from_config(net.config, global_pool_conditions=True).eval()
        assert model.config.global_pool_conditions
        model.load_state_dict(net.state_dict())
    with torch.no_grad():
        down, mid = model(inputs["sample"], inputs["timestep"], inputs["text"], inputs["cond"],
                          conditioning_scale=scale, guess_mode=guess, return_dict=False, **kwargs)
    for k, v in inputs.items():
        expected[f"res.{name}.{k}"] = v
    for i, d in enumerate(down):
        expected[f"res.{name}.down.{i}"] = d
    expected[f"res.{name}.mid"] = mid
    meta[name] = {"controlnet": folder, "scale": scale, "guess_mode": guess,
                  "global_pool_conditions": pool, "added": added, "residuals": len(down)}
    print(f"    res.{name}: {len(down)} residuals, |mid| max {mid.abs().max().item():.3f}")


class Runner:
    def __init__(self, recorder, expected):
        self.recorder, self.expected, self.cases = recorder, expected, {}

    def __call__(self, pipe, name, base, call, nets, controls, scheduler, kwargs, latents=None,
                 image=None, mask=None, seed=0, ip=None):
        """`ip`: IP-Adapter files (under ip-adapter-tiny/) loaded with their image encoder,
        the scale (a number or an InstantStyle dict) and the reference image."""
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config)
        call_kwargs = dict(kwargs)
        if controls:
            images = [self.expected[c] for c in controls]
            control = images if len(images) > 1 else images[0]
            call_kwargs["image" if call == "text_to_image" else "control_image"] = control
        if ip is not None:
            folder, weights = os.path.split(ip["file"])
            pipe.load_ip_adapter(IP_DIR, subfolder=folder, weight_name=weights,
                                 image_encoder_folder="models/image_encoder")
            pipe.set_ip_adapter_scale(ip["scale"])
            call_kwargs["ip_adapter_image"] = Image.open(os.path.join(IP_DIR, ip["image"]))
        for key, arg in (("latents", latents), ("image", image), ("mask_image", mask)):
            if arg is not None:
                call_kwargs[key] = self.expected[arg]
        settings = {"base": base, "call": call, "controlnets": nets, "controls": controls,
                    "scheduler": scheduler.__name__, "kwargs": kwargs, "latents": latents,
                    "image": image, "mask": mask, "seed": seed, "ip_adapter": ip}
        run(pipe, self.recorder, self.expected, name, settings, **call_kwargs)
        img = self.expected[f"{name}.images"]
        frac = ((img > 0.001) & (img < 0.999)).float().mean().item()
        assert frac > 0.5, f"{name}: only {frac:.2f} of the pixels unclamped"
        self.cases[name] = settings


def gen_tiny():
    recorder = ControlDrawRecorder()
    fresh_dir(OUT)
    sd_unet = UNet2DConditionModel.from_pretrained(os.path.join(FIX, "sd-tiny", "unet")).eval()
    xl_unet = UNet2DConditionModel.from_pretrained(os.path.join(FIX, "sdxl-tiny", "unet")).eval()
    sd = make_controlnet(sd_unet, 41)
    sd_bgr = make_controlnet(sd_unet, 42, controlnet_conditioning_channel_order="bgr")
    xl = make_controlnet(xl_unet, 43)
    for folder, net in (("sd", sd), ("sd_bgr", sd_bgr), ("xl", xl)):
        net.save_pretrained(os.path.join(OUT, folder), safe_serialization=True)
    assert xl.config.addition_embed_type == "text_time"

    single = make_controlnet(sd_unet, 44, embedding=(4, 4, 8, 8))
    single.save_config(os.path.join(OUT, "sd_single"))
    ldm = ldm_controlnet(single.state_dict(), single.config.layers_per_block, 8)
    check_single_file(ldm, single)
    save_file({k: v.contiguous() for k, v in ldm.items()},
              os.path.join(OUT, "sd_single_file.safetensors"), metadata={"format": "pt"})

    expected, residuals = {}, {}
    g = torch.Generator().manual_seed(7)
    residual_case(expected, residuals, "sd", sd, "sd", 0.7, False, g)
    residual_case(expected, residuals, "sd_guess", sd, "sd", 1.0, True, g)
    residual_case(expected, residuals, "sd_pool", sd, "sd", 0.9, False, g, pool=True)
    residual_case(expected, residuals, "sd_bgr", sd_bgr, "sd_bgr", 1.0, False, g)
    residual_case(expected, residuals, "sd_single", single, "sd_single", 1.0, False, g)
    residual_case(expected, residuals, "xl", xl, "xl", 0.8, False, g, added=True)
    residual_case(expected, residuals, "xl_guess", xl, "xl", 1.0, True, g, added=True)

    g = torch.Generator().manual_seed(9)
    latents1 = torch.randn(1, 4, 8, 8, generator=g)
    image, mask = image_and_mask(g)
    edges = lambda: (torch.rand(1, 1, SIZE, SIZE, generator=g) > 0.8).float().expand(1, 3, SIZE, SIZE)  # noqa: E731
    control2 = torch.rand(1, 3, SIZE, SIZE, generator=g)
    expected.update(latents1=latents1, image=image, mask=mask, control1=edges().contiguous(),
                    control2=control2)

    r = Runner(recorder, expected)
    sd_dir, xl_dir = os.path.join(FIX, "sd-tiny"), os.path.join(FIX, "sdxl-tiny")
    sd_args = dict(safety_checker=None, requires_safety_checker=False)

    t2i = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=STEPS)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd_dir, controlnet=sd, **sd_args)
    r(pipe, "sd_t2i", "sd-tiny", "text_to_image", ["sd"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=7.5), latents="latents1")
    r(pipe, "sd_guess", "sd-tiny", "text_to_image", ["sd"], ["control1"], DDIMScheduler,
      dict(t2i, guidance_scale=6.0, guess_mode=True, controlnet_conditioning_scale=0.8),
      latents="latents1")
    r(pipe, "sd_no_cfg", "sd-tiny", "text_to_image", ["sd"], ["control2"],
      EulerAncestralDiscreteScheduler, dict(prompt=PROMPT, num_inference_steps=STEPS,
                                            guidance_scale=1.0), seed=3)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd_dir, controlnet=[sd, sd_bgr],
                                                             **sd_args)
    r(pipe, "sd_multi", "sd-tiny", "text_to_image", ["sd", "sd_bgr"], ["control1", "control2"],
      EulerDiscreteScheduler,
      dict(t2i, guidance_scale=7.5, controlnet_conditioning_scale=[0.7, 1.2],
           control_guidance_start=[0.0, 0.25], control_guidance_end=[0.5, 1.0]),
      latents="latents1")
    pipe = StableDiffusionControlNetImg2ImgPipeline.from_pretrained(sd_dir, controlnet=sd,
                                                                    **sd_args)
    r(pipe, "sd_img2img", "sd-tiny", "img2img", ["sd"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=7.5, num_inference_steps=5, strength=0.75), image="image")
    pipe = StableDiffusionControlNetInpaintPipeline.from_pretrained(sd_dir, controlnet=sd,
                                                                    **sd_args)
    r(pipe, "sd_inpaint", "sd-tiny", "inpaint", ["sd"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=7.5, strength=0.9), image="image", mask="mask")

    xl_args = dict(add_watermarker=False)
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(xl_dir, controlnet=xl, **xl_args)
    r(pipe, "xl_t2i", "sdxl-tiny", "text_to_image", ["xl"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=5.0), latents="latents1")
    r(pipe, "xl_guess_window", "sdxl-tiny", "text_to_image", ["xl"], ["control2"],
      EulerDiscreteScheduler,
      dict(t2i, guidance_scale=5.0, guess_mode=True, control_guidance_start=0.25,
           control_guidance_end=0.75), latents="latents1")
    pipe = StableDiffusionXLControlNetImg2ImgPipeline.from_pretrained(xl_dir, controlnet=xl,
                                                                      **xl_args)
    r(pipe, "xl_img2img", "sdxl-tiny", "img2img", ["xl"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, num_inference_steps=5), image="image")
    pipe = StableDiffusionXLControlNetInpaintPipeline.from_pretrained(xl_dir, controlnet=xl,
                                                                      **xl_args)
    r(pipe, "xl_inpaint", "sdxl-tiny", "inpaint", ["xl"], ["control1"], EulerDiscreteScheduler,
      dict(t2i, strength=0.9), image="image", mask="mask")

    # IP-Adapter, alone and with a ControlNet (the adapters of gen_ip_adapter.py).
    sd_ip = dict(file="models/ip-adapter_sd-tiny.safetensors", scale=0.6, image="image.png")
    pipe = StableDiffusionPipeline.from_pretrained(sd_dir, **sd_args)
    r(pipe, "sd_ip", "sd-tiny", "text_to_image", [], [], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=7.5, height=SIZE, width=SIZE), latents="latents1", ip=sd_ip)
    pipe = StableDiffusionControlNetPipeline.from_pretrained(sd_dir, controlnet=sd, **sd_args)
    r(pipe, "sd_ip_plus_control", "sd-tiny", "text_to_image", ["sd"], ["control1"],
      EulerDiscreteScheduler, dict(t2i, guidance_scale=7.5), latents="latents1",
      ip=dict(file="models/ip-adapter-plus_sd-tiny.safetensors", scale=1.0, image="image2.png"))
    pipe = StableDiffusionXLPipeline.from_pretrained(xl_dir, **xl_args)
    r(pipe, "xl_ip_style", "sdxl-tiny", "text_to_image", [], [], EulerDiscreteScheduler,
      dict(t2i, guidance_scale=5.0, height=SIZE, width=SIZE), latents="latents1",
      ip=dict(file="sdxl_models/ip-adapter_sdxl-tiny.safetensors", image="image.png",
              scale={"down": {"block_1": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}}))
    pipe = StableDiffusionXLControlNetPipeline.from_pretrained(xl_dir, controlnet=xl, **xl_args)
    r(pipe, "xl_ip_plus_control", "sdxl-tiny", "text_to_image", ["xl"], ["control1"],
      EulerDiscreteScheduler, dict(t2i, guidance_scale=5.0), latents="latents1",
      ip=dict(file="sdxl_models/ip-adapter-plus_sdxl-tiny.safetensors", scale=0.7,
              image="image2.png"))

    finish(OUT, expected, {"residuals": residuals, "cases": r.cases})


# lllyasviel/sd-controlnet-canny config.json (published).
SD15_CANNY = {
    "_class_name": "ControlNetModel", "_diffusers_version": "0.16.0.dev0", "act_fn": "silu",
    "attention_head_dim": 8, "block_out_channels": [320, 640, 1280, 1280],
    "class_embed_type": None, "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                         "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_class_embeds": None, "only_cross_attention": False,
    "projection_class_embeddings_input_dim": None, "resnet_time_scale_shift": "default",
    "upcast_attention": False, "use_linear_projection": False,
}
# diffusers/controlnet-canny-sdxl-1.0 config.json (published).
SDXL_CANNY = {
    "_class_name": "ControlNetModel", "_diffusers_version": "0.20.0.dev0", "act_fn": "silu",
    "addition_embed_type": "text_time", "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256, "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280], "class_embed_type": None,
    "conditioning_channels": 3, "conditioning_embedding_out_channels": [16, 32, 96, 256],
    "controlnet_conditioning_channel_order": "rgb", "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1, "encoder_hid_dim": None, "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True, "freq_shift": 0, "global_pool_conditions": False, "in_channels": 4,
    "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32,
    "num_attention_heads": None, "num_class_embeds": None, "only_cross_attention": False,
    "projection_class_embeddings_input_dim": 2816, "resnet_time_scale_shift": "default",
    "transformer_layers_per_block": [1, 2, 10], "upcast_attention": None,
    "use_linear_projection": True,
}


def gen_full():
    for name, cfg, single in (("controlnet-sd15-canny", SD15_CANNY, True),
                              ("controlnet-sdxl-canny", SDXL_CANNY, False)):
        net = gen_unet.gen_full(name, cfg, ControlNetModel)
        state = net.state_dict()
        if single:
            ldm = ldm_controlnet(state, cfg["layers_per_block"],
                                 2 * len(cfg["conditioning_embedding_out_channels"]))
            converted = convert_controlnet_checkpoint(dict(ldm), dict(net.config))
            assert sorted(converted) == sorted(state)
            assert all(converted[k].shape == v.shape for k, v in state.items())
            write_list(os.path.join(FIX, "full", name, "ldm_tensors.json"), ldm.items())


def main():
    if "--full-only" not in sys.argv:
        gen_tiny()
    gen_full()


if __name__ == "__main__":
    main()
