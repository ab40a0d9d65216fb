"""Stable Diffusion 1.5 UNet CPU step in PyTorch / diffusers: the reference for
`cargo bench -p mm-diffusion --bench unet`.

One denoising step with classifier-free guidance: batch 2 (unconditional + conditional),
4x64x64 latents (512x512 images), 77x768 text embeddings, timestep 500, random float32
weights built from tests/fixtures/full/unet-sd15/config.json; eval(), torch.no_grad(),
torch's default thread count and attention processor (AttnProcessor2_0, i.e. sdpa).
Warm-up runs, then the median (and min) of N timed runs, in seconds.

    /root/venvs/mmref/bin/python tools/bench/unet_bench.py [--runs 5] [--warmup 1]
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
from diffusers import UNet2DConditionModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests/fixtures/full/unet-sd15/config.json"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = UNet2DConditionModel.from_config(json.loads(CONFIG.read_text())).float().eval()
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, python {platform.python_version()}")
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"timing: {args.warmup} warm-up + median of {args.runs} runs\n")

    latents = torch.randn(2, 4, 64, 64)
    text = torch.randn(2, 77, 768)
    t = torch.tensor([500.0])

    def step():
        out = model(latents, t, text).sample
        uncond, cond = out.chunk(2)
        return uncond + 7.5 * (cond - uncond)

    with torch.no_grad():
        for _ in range(args.warmup):
            step()
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
    med, best = statistics.median(times), min(times)
    print(f"sd15_unet/cfg_step_512  median {med:8.3f} s   min {best:8.3f} s")
    if args.json:
        args.json.write_text(json.dumps({"sd15_unet/cfg_step_512": med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
