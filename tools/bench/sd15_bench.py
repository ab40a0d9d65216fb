"""Stable Diffusion 1.5 on the CPU in PyTorch / diffusers / transformers: the reference for
`cargo bench -p mm-diffusion --bench unet|vae|text_encoder`.

Parts (random float32 weights built from the full-size configs in tests/fixtures/full/;
eval(), torch.no_grad(), torch's default thread count, diffusers' default attention
processor, AttnProcessor2_0 = sdpa):

- unet: one denoising step with classifier-free guidance: batch 2 (unconditional +
  conditional), 4x64x64 latents (512x512 images), 77x768 text embeddings, timestep 500;
- vae:  AutoencoderKL.decode of one 4x64x64 latent to a 512x512 image;
- text: CLIPTextModel (CLIP ViT-L/14 text transformer) on 2 x 77 token ids.

Warm-up runs, then the median (and min) of N timed runs, in seconds.

    /root/venvs/mmref/bin/python tools/bench/sd15_bench.py --part unet [--runs 5] [--warmup 1]

tools/bench/sd15_compare.py runs these and the Rust benches one after the other, with peak
memory.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

FULL = Path(__file__).resolve().parents[2] / "tests/fixtures/full"

# Criterion's group/name of the matching Rust bench, per part.
CASES = {
    "unet": "sd15_unet/cfg_step_512",
    "vae": "sd15_vae/decode_512",
    "text": "sd15_text_encoder/encode_2x77",
}


def prompt_ids():
    """<|startoftext|>, ten word tokens, then <|endoftext|> up to 77 tokens (SD's tokenizer pads
    with it); the same ids as crates/mm-diffusion/benches/text_encoder.rs."""
    ids = [49406] + [320 + 97 * i for i in range(10)]
    return ids + [49407] * (77 - len(ids))


def unet_case():
    config = json.loads((FULL / "unet-sd15/config.json").read_text())
    model = diffusers.UNet2DConditionModel.from_config(config).float().eval()
    latents = torch.randn(2, 4, 64, 64)
    text = torch.randn(2, 77, 768)
    t = torch.tensor([500.0])

    def step():
        out = model(latents, t, text).sample
        uncond, cond = out.chunk(2)
        return uncond + 7.5 * (cond - uncond)

    return step


def vae_case():
    config = json.loads((FULL / "sd15-vae/config.json").read_text())
    model = diffusers.AutoencoderKL.from_config(config).float().eval()
    latents = torch.randn(1, 4, 64, 64)
    return lambda: model.decode(latents).sample


def text_case():
    config = transformers.CLIPTextConfig.from_json_file(
        FULL / "sd15-single-file/text_encoder/config.json"
    )
    model = transformers.CLIPTextModel(config).float().eval()
    ids = torch.tensor([prompt_ids(), prompt_ids()])
    return lambda: model(input_ids=ids).last_hidden_state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=sorted(CASES), default="unet")
    parser.add_argument("--runs", type=int, default=5, help="timed runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs")
    parser.add_argument("--json", type=Path, help="also write the median here")
    args = parser.parse_args()

    torch.manual_seed(0)
    case = {"unet": unet_case, "vae": vae_case, "text": text_case}[args.part]()
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}, python {platform.python_version()}"
    )
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"timing: {args.warmup} warm-up + median of {args.runs} runs\n")

    with torch.no_grad():
        for _ in range(args.warmup):
            case()
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            case()
            times.append(time.perf_counter() - start)
    med, best = statistics.median(times), min(times)
    name = CASES[args.part]
    print(f"{name}  median {med:8.3f} s   min {best:8.3f} s")
    if args.json:
        args.json.write_text(json.dumps({name: med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
