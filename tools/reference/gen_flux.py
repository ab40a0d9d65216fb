#!/usr/bin/env python3
"""Reference fixture generator for the FLUX.1 transformer (`FluxTransformer2DModel`) of
`mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/flux-transformer-tiny/
      schnell/, dev/     `FluxTransformer2DModel.save_pretrained` folders (`config.json`,
                         `diffusion_pytorch_model.safetensors`): 2 double-stream and 2
                         single-stream blocks, 2 heads of 8 (axes_dims_rope [2, 2, 4]),
                         in_channels 16 (4 latent channels packed 2x2), joint_attention_dim 24,
                         pooled_projection_dim 20; `dev` has `guidance_embeds`. Every parameter is
                         random (adaLN gates and RMS norms included, none zero).
                         Each also holds `io.safetensors` (float32):
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

Usage:  python tools/reference/gen_flux.py     # diffusers 0.42.1; a few seconds
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from diffusers import FluxPipeline, FluxTransformer2DModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from gen_diffusion import FIX, fresh_dir  # noqa: E402
from gen_sd3 import randomize  # noqa: E402
from gen_single_file import write_list  # noqa: E402

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


def gen_tiny():
    root = os.path.join(FIX, "flux-transformer-tiny")
    fresh_dir(root)
    for idx, (name, cfg) in enumerate(TINY_CONFIGS.items()):
        folder = os.path.join(root, name)
        torch.manual_seed(0)
        model = randomize(FluxTransformer2DModel(**cfg), 90 + idx).eval()
        assert all(p.abs().min() > 0 for p in model.parameters())
        model.save_pretrained(folder, safe_serialization=True)
        reloaded = FluxTransformer2DModel.from_pretrained(folder).eval()
        g = torch.Generator().manual_seed(95 + idx)
        latents = torch.randn(2, 4, 6, 10, generator=g)
        io = {
            "latents": latents,
            "hidden_states": FluxPipeline._pack_latents(latents, 2, 4, 6, 10),
            "img_ids": FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32),
            "encoder_hidden_states": torch.randn(2, 7, cfg["joint_attention_dim"], generator=g),
            "txt_ids": torch.zeros(7, 3),
            "pooled_projections": torch.randn(2, cfg["pooled_projection_dim"], generator=g),
            "timestep": torch.tensor([0.9815, 0.31225]),
        }
        if cfg["guidance_embeds"]:
            io["guidance"] = torch.tensor([3.5, 3.5])
        args = {k: v for k, v in io.items() if k != "latents"}
        with torch.no_grad():
            out = reloaded(**args).sample
            assert torch.equal(out, model(**args).sample)
        io["out"] = out
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"),
                  metadata={"format": "pt"})
        print(f"  flux-transformer-tiny/{name}: |out| max {out.abs().max().item():.2f}, "
              f"std {out.std().item():.2f}")


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


def main():
    gen_tiny()
    gen_full()


if __name__ == "__main__":
    main()
