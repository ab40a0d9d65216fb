#!/usr/bin/env python3
"""Reference fixture generator for the autoencoders of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/taesd-tiny/        AutoencoderTiny, tiny random config (diffusers layout)
  tests/fixtures/vae-kl-tiny/       AutoencoderKL, tiny random config, 3 down/up blocks
  tests/fixtures/full/sd15-vae/     config.json + tensors.json (names & shapes of the real
                                    Stable Diffusion 1.5 VAE, built on the meta device)

Each tiny folder holds `config.json`, `diffusion_pytorch_model.safetensors` (the tensor names
diffusers saves) and `expected.safetensors` (inputs and reference outputs, float32).

Usage:  python tools/reference/gen_diffusion.py
"""

import json
import math
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKL, AutoencoderTiny  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

torch.set_default_dtype(torch.float32)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
ASSETS = os.environ.get("MM_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def randomize(model, seed):
    """Every parameter gets a non-trivial value: norms (group and layer norms) around 1,
    biases small, weights scaled by fan-in so activations stay O(1) through the network."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mod in model.modules():
        if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            norm_params.add(id(mod.weight))
            norm_params.add(id(mod.bias))
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            leaf = name.rsplit(".", 1)[-1]
            if id(p) in norm_params:
                base = 1.0 if leaf == "weight" else 0.0
                p.copy_(base + 0.2 * torch.randn(shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(shape, generator=g))
            else:
                fan_in = shape[1:].numel()
                p.copy_(torch.randn(shape, generator=g) / math.sqrt(fan_in))
    return model


def save(folder, model, expected):
    model.save_pretrained(folder, safe_serialization=True)
    out = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in expected.items()}
    save_file(out, os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(folder):
        os.chmod(os.path.join(folder, f), 0o644)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"  {os.path.relpath(folder, FIX)}: {size / 1024:.0f} KiB")


def gen_tiny():
    torch.manual_seed(0)
    model = AutoencoderTiny(
        encoder_block_out_channels=(16, 16, 16, 16),
        decoder_block_out_channels=(16, 16, 16, 16),
        latent_channels=4,
        num_encoder_blocks=(1, 2, 2, 2),
        num_decoder_blocks=(2, 2, 2, 1),
        latent_magnitude=3,
        latent_shift=0.5,
        scaling_factor=1.0,
    )
    randomize(model, 1).eval()
    g = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 32, 24, generator=g) * 2 - 1  # diffusers convention: [-1, 1]
    latents_in = torch.randn(2, 4, 4, 3, generator=g) * 4  # exercises the tanh clamp
    with torch.no_grad():
        latents = model.encode(image).latents
        decoded = model.decode(latents).sample
        decoded_random = model.decode(latents_in).sample
        scaled = model.scale_latents(latents)
        unscaled = model.unscale_latents(scaled)
    folder = os.path.join(FIX, "taesd-tiny")
    fresh_dir(folder)
    save(
        folder,
        model,
        {
            "image": image,
            "latents": latents,
            "decoded": decoded,
            "latents_in": latents_in,
            "decoded_in": decoded_random,
            "scaled_latents": scaled,
            "unscaled_latents": unscaled,
        },
    )


def gen_kl():
    torch.manual_seed(0)
    model = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
        scaling_factor=0.3611,
        shift_factor=0.1159,
    )
    randomize(model, 3).eval()
    g = torch.Generator().manual_seed(4)
    image = torch.rand(2, 3, 24, 16, generator=g) * 2 - 1
    noise = torch.randn(2, 4, 6, 4, generator=g)
    with torch.no_grad():
        posterior = model.encode(image).latent_dist
        decoded = model.decode(posterior.mean).sample
        sample = posterior.mean + posterior.std * noise
    # Tiled encode/decode: sample_size 32 gives 32-pixel / 8-latent tiles, overlap 0.25; a
    # 48x40 image is split into 2x2 overlapping tiles, its 12x10 latent too.
    tiled_image = torch.rand(1, 3, 48, 40, generator=g) * 2 - 1
    model.enable_tiling()
    with torch.no_grad():
        tiled = model.encode(tiled_image).latent_dist
        tiled_decoded = model.decode(tiled.mean).sample
        # 28 wide: the last tile column is 4 pixels (1 latent), thinner than the blend.
        thin = model.encode(tiled_image[..., :28]).latent_dist.mean
        thin_decoded = model.decode(thin).sample
    model.disable_tiling()
    folder = os.path.join(FIX, "vae-kl-tiny")
    fresh_dir(folder)
    save(
        folder,
        model,
        {
            "image": image,
            "latent_mean": posterior.mean,
            "latent_logvar": posterior.logvar,
            "noise": noise,
            "latent_sample": sample,
            "decoded": decoded,
            "tiled_image": tiled_image,
            "tiled_latent_mean": tiled.mean,
            "tiled_latent_logvar": tiled.logvar,
            "tiled_decoded": tiled_decoded,
            "thin_latent_mean": thin,
            "thin_decoded": thin_decoded,
        },
    )


def gen_full():
    folder = os.path.join(FIX, "full", "sd15-vae")
    fresh_dir(folder)
    src = os.path.join(ASSETS, "sd15-configs", "vae", "config.json")
    with open(src) as f:
        cfg = json.load(f)
    shutil.copy(src, os.path.join(folder, "config.json"))
    init = {k: v for k, v in cfg.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = AutoencoderKL(**init)
    entries = sorted([k, list(v.shape)] for k, v in model.state_dict().items())
    with open(os.path.join(folder, "tensors.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    for name in os.listdir(folder):
        os.chmod(os.path.join(folder, name), 0o644)
    n = sum(math.prod(s) for _, s in entries)
    print(f"  full/sd15-vae: {len(entries)} tensors, {n / 1e6:.2f}M params")


def main():
    gen_tiny()
    gen_kl()
    gen_full()


if __name__ == "__main__":
    main()
