#!/usr/bin/env python3
"""Reference pixel tensors for mm-core's image processors.

Runs the PIL-based ("slow") image processors of transformers 5.x (`CLIPImageProcessorPil`,
`SiglipImageProcessorPil`, `ViTImageProcessorPil`; in 5.x the plain `CLIPImageProcessor` names
the torchvision backend and only falls back to these when torchvision is missing) on the photos
in the shared assets folder and writes:

- `tests/fixtures/preprocess/expected.safetensors`: the processors' `[3, 224, 224]` outputs
  keyed `<processor>.<image stem>` (e.g. `clip.astronaut`), stored as the uint8 pixels they
  normalise (`round((v · std + mean) / rescale_factor)`, checked to give back every float within
  1e-5): a quarter of the f32 size. The test normalises them again with the config's values;
- `tests/fixtures/preprocess/{clip,siglip,vit}_preprocessor_config.json`: the processors'
  configs (`to_json_file`), from which the Rust test builds its processors;
- `tests/fixtures/preprocess/resize.safetensors`: plain `Image.resize` outputs (uint8, HWC) for
  every PIL filter, downscaling and upscaling, keyed `resize.<filter>.<case>`.

Images are opened as `Image.open(p).convert("RGB")`, exactly what `mm_core::image::load_image`
returns. For an image with alpha, the processors themselves would instead composite onto white
(`transformers.image_transforms.convert_to_rgb`), so `clip.CLIP_onwhite` additionally stores
what CLIP gives for the raw RGBA `CLIP.png` (matched by `load_image_on_white`).

Usage (from the repo root): python tools/reference/gen_preprocess.py [--assets DIR]
"""

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers import CLIPImageProcessorPil, SiglipImageProcessorPil, ViTImageProcessorPil

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / "tests" / "fixtures" / "preprocess"

ALL = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "CLIP.png"]
# grayscale `camera`, non-square `chelsea` (451x300) and the JPEG `rocket`.
SUBSET = ["camera.png", "chelsea.png", "rocket.jpg"]
# (left, upper, right, lower) of the 20x15 chelsea patch that the upscaling cases use.
RESIZE_PATCH = (200, 100, 220, 115)


def as_pixels(proc, pv):
    """The uint8 `[3, H, W]` pixels that `proc` rescaled and normalised into `pv`."""
    mean = np.array(proc.image_mean, dtype=np.float64)[:, None, None]
    std = np.array(proc.image_std, dtype=np.float64)[:, None, None]
    u8 = np.rint((pv.astype(np.float64) * std + mean) / proc.rescale_factor)
    assert u8.min() >= 0 and u8.max() <= 255
    back = (u8 * proc.rescale_factor - mean) / std
    assert np.abs(back - pv).max() < 1e-5, np.abs(back - pv).max()
    return np.ascontiguousarray(u8.astype(np.uint8))


def main():
    ap = argparse.ArgumentParser()
    default_assets = os.environ.get("MM_ASSETS", str(REPO.parent / "shared" / "assets"))
    ap.add_argument("--assets", default=default_assets)
    args = ap.parse_args()
    images_dir = Path(args.assets) / "images"
    OUT.mkdir(parents=True, exist_ok=True)

    processors = {
        "clip": (CLIPImageProcessorPil(), ALL),
        "siglip": (SiglipImageProcessorPil(), SUBSET),
        "vit": (ViTImageProcessorPil(), SUBSET),
    }
    tensors = {}
    for name, (proc, files) in processors.items():
        proc.to_json_file(str(OUT / f"{name}_preprocessor_config.json"))
        for f in files:
            img = Image.open(images_dir / f).convert("RGB")
            pv = proc(images=img, return_tensors="np")["pixel_values"][0]
            assert pv.shape == (3, 224, 224) and pv.dtype == np.float32, (pv.shape, pv.dtype)
            tensors[f"{name}.{Path(f).stem}"] = as_pixels(proc, pv)
    raw = Image.open(images_dir / "CLIP.png")
    assert raw.mode == "RGBA"
    clip = processors["clip"][0]
    pv = clip(images=raw, return_tensors="np")["pixel_values"][0]
    tensors["clip.CLIP_onwhite"] = as_pixels(clip, pv)

    save_file(tensors, str(OUT / "expected.safetensors"))
    size = (OUT / "expected.safetensors").stat().st_size
    print(f"wrote {len(tensors)} tensors ({size / 1e6:.1f} MB) to {OUT}")

    # Plain PIL resizes (uint8 HWC) of small images with every filter, to check the resampler
    # on its own: `resize.<filter>.<case>`.
    chelsea = Image.open(images_dir / "chelsea.png").convert("RGB")
    patch = chelsea.crop(RESIZE_PATCH)
    cases = {
        "down": (chelsea, (47, 31)),  # 451x300 -> 47x31
        "up": (patch, (53, 37)),  # 20x15 -> 53x37
        "h_only": (patch, (7, 15)),  # width only
        "v_only": (patch, (20, 40)),  # height only
    }
    filters = {
        "nearest": Image.NEAREST,
        "lanczos": Image.LANCZOS,
        "bilinear": Image.BILINEAR,
        "bicubic": Image.BICUBIC,
        "box": Image.BOX,
        "hamming": Image.HAMMING,
    }
    resized = {}
    for fname, code in filters.items():
        for cname, (src, size) in cases.items():
            resized[f"resize.{fname}.{cname}"] = np.ascontiguousarray(np.array(src.resize(size, code)))
    save_file(resized, str(OUT / "resize.safetensors"))
    print(f"wrote {len(resized)} resized images to {OUT / 'resize.safetensors'}")


if __name__ == "__main__":
    main()
