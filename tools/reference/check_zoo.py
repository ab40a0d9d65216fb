#!/usr/bin/env python3
"""Interoperability of the tiny model zoo (`zoo/`, trained in Rust by the `train_zoo` example):
transformers and diffusers load its folders unchanged, and this script records what they
compute so that the Rust tests can compare (`crates/mm-train/tests/zoo.rs`).

  zoo/clip  → transformers `CLIPModel` + `CLIPTokenizer` + `CLIPImageProcessor`
  zoo/sd    → diffusers `StableDiffusionPipeline` (DPMSolverMultistepScheduler)

Every load is strict: a missing or unexpected tensor fails the script. Writes
`tests/fixtures/zoo/expected.safetensors` (+ `expected.json`):

  clip.pixel_values, clip.input_ids        inputs (seeded random pixels, tokenized captions)
  clip.text_embeds, clip.image_embeds      transformers' normalised embeddings
  sd.latents                               the initial latents given to the pipeline
  sd.image                                 the pipeline's image (`output_type="np"`, NCHW)

Usage:  python tools/reference/check_zoo.py
"""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPModel, CLIPTokenizer  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.environ.get("MM_ZOO", os.path.join(ROOT, "zoo"))
OUT = os.environ.get("MM_ZOO_OUT", os.path.join(ROOT, "tests", "fixtures", "zoo"))

CAPTIONS = ["a red circle on the left", "a blue star at the top", "a small green square in the center"]
PROMPT = "a yellow triangle on the right"
STEPS = 20
GUIDANCE = 5.0


def strict(info, what):
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs") and v}
    if bad:
        raise SystemExit(f"{what} does not load unchanged: {bad}")


def main():
    torch.manual_seed(0)
    tensors = {}

    clip, info = CLIPModel.from_pretrained(os.path.join(ZOO, "clip"), output_loading_info=True)
    strict(info, "zoo/clip")
    clip.eval()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(ZOO, "clip"))
    ids = tokenizer(CAPTIONS, padding="max_length", max_length=77, return_tensors="pt").input_ids
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = clip(input_ids=ids, pixel_values=pixels)
    tensors["clip.pixel_values"] = pixels
    tensors["clip.input_ids"] = ids.to(torch.int64)
    tensors["clip.text_embeds"] = out.text_embeds
    tensors["clip.image_embeds"] = out.image_embeds

    pipe = StableDiffusionPipeline.from_pretrained(os.path.join(ZOO, "sd"), safety_checker=None)
    for name in ("unet", "vae", "text_encoder"):
        model = getattr(pipe, name)
        _, info = type(model).from_pretrained(os.path.join(ZOO, "sd"), subfolder=name, output_loading_info=True)
        strict(info, f"zoo/sd/{name}")
    size = pipe.unet.config.sample_size
    latents = torch.randn(1, pipe.unet.config.in_channels, size, size)
    with torch.no_grad():
        image = pipe(
            PROMPT,
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            latents=latents.clone(),
            output_type="np",
        ).images
    tensors["sd.latents"] = latents
    tensors["sd.image"] = torch.from_numpy(np.ascontiguousarray(image.transpose(0, 3, 1, 2)))

    os.makedirs(OUT, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(
            {"captions": CAPTIONS, "prompt": PROMPT, "steps": STEPS, "guidance": GUIDANCE,
             "scheduler": type(pipe.scheduler).__name__},
            f,
            indent=2,
        )
        f.write("\n")
    print(f"zoo loads unchanged in transformers and diffusers; wrote {OUT}")


if __name__ == "__main__":
    main()
