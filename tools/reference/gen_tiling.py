#!/usr/bin/env python3
"""Reference outputs of diffusers' tiled VAE encoding and decoding for `mm-diffusion`.

Reads the tiny random autoencoders that `gen_diffusion.py` writes (run that first) and
writes only

  tests/fixtures/vae-tiling/expected.safetensors

with the diffusers 0.42.1 outputs of `enable_tiling()` at tile sizes small enough that a
96x80 image is cut into several overlapping tiles:

  image                    [2, 3, 96, 80] in [-1, 1] (both models)
  kl.t32.{mean,logvar}     AutoencoderKL (vae-kl-tiny), tile_sample_min_size 32 (its
                           sample_size), tile_overlap_factor 0.25: 4x4 tiles, the last column
                           8 pixels wide
  kl.t32.decoded           tiled decode of kl.t32.mean with the same tiles (4x4 latent tiles)
  kl.t64o50.*              the first image, 64-pixel tiles overlapping by 0.5 (3x3 tiles)
  tiny.t64o50.latents      AutoencoderTiny (taesd-tiny), tile_sample_min_size 64,
                           tile_overlap_factor 0.5: 3x3 tiles, the last column 16 pixels wide
  tiny.t64o50.decoded      tiled decode of those latents (8-latent tiles every 4)
  tiny.large_image         [1, 3, 128, 112]
  tiny.t128o25.{latents,decoded}
                           128-pixel tiles overlapping by 0.25 (2x2 tiles, the last column
                           thinner than the blend)

diffusers keeps the tile sizes in plain attributes (`tile_sample_min_size`,
`tile_latent_min_size`, `tile_overlap_factor`) that `enable_tiling()` does not reset; the
script sets them as a user would. Deterministic: re-running rewrites identical bytes.

Usage:  python tools/reference/gen_tiling.py
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKL, AutoencoderTiny  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_default_dtype(torch.float32)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")


def set_tiles(model, sample, overlap, factor):
    model.enable_tiling()
    model.tile_sample_min_size = sample
    model.tile_latent_min_size = sample // factor
    model.tile_overlap_factor = overlap


def kl_case(model, image, sample, overlap):
    set_tiles(model, sample, overlap, 4)
    with torch.no_grad():
        posterior = model.encode(image).latent_dist
        decoded = model.decode(posterior.mean).sample
    return {"mean": posterior.mean, "logvar": posterior.logvar, "decoded": decoded}


def tiny_case(model, image, sample, overlap):
    set_tiles(model, sample, overlap, 8)
    with torch.no_grad():
        latents = model.encode(image).latents
        decoded = model.decode(latents).sample
    return {"latents": latents, "decoded": decoded}


def main():
    g = torch.Generator().manual_seed(5)
    image = torch.rand(2, 3, 96, 80, generator=g) * 2 - 1
    large = torch.rand(1, 3, 128, 112, generator=g) * 2 - 1
    kl = AutoencoderKL.from_pretrained(os.path.join(FIX, "vae-kl-tiny")).eval()
    tiny = AutoencoderTiny.from_pretrained(os.path.join(FIX, "taesd-tiny")).eval()
    cases = {
        "kl.t32": kl_case(kl, image, 32, 0.25),
        "kl.t64o50": kl_case(kl, image[:1], 64, 0.5),
        "tiny.t64o50": tiny_case(tiny, image, 64, 0.5),
        "tiny.t128o25": tiny_case(tiny, large, 128, 0.25),
    }
    out = {"image": image, "tiny.large_image": large}
    for case, tensors in cases.items():
        for name, t in tensors.items():
            out[f"{case}.{name}"] = t
    folder = os.path.join(FIX, "vae-tiling")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "expected.safetensors")
    save_file({k: v.contiguous() for k, v in out.items()}, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    print(f"  vae-tiling: {os.path.getsize(path) / 1024:.0f} KiB")
    for k, v in out.items():
        print(f"    {k}: {list(v.shape)}")


if __name__ == "__main__":
    main()
