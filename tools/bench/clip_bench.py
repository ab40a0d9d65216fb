"""CLIP ViT-B/32 CPU inference in PyTorch / transformers: the reference for
`cargo bench -p mm-vision --bench clip` (see docs/performance.md).

Random float32 weights built from tests/fixtures/full/clip-vit-base-patch32/config.json,
eval mode, torch.no_grad(), torch's default thread count and default attention (sdpa).
Each case: warm-up runs, then the median (and min) of N timed runs, in milliseconds.

    /root/venvs/mmref/bin/python tools/bench/clip_bench.py [--runs 20] [--warmup 3]
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import CLIPConfig, CLIPModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests/fixtures/full/clip-vit-base-patch32/config.json"


def timed(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times), min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per case")
    parser.add_argument("--attn", default=None, help="attn_implementation (default: transformers' choice, sdpa)")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = CLIPConfig(**json.loads(CONFIG.read_text()))
    kwargs = {} if args.attn is None else {"attn_implementation": args.attn}
    model = CLIPModel._from_config(config, **kwargs) if kwargs else CLIPModel(config)
    model = model.float().eval()

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}")
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"attention implementation: {model.config._attn_implementation}")
    print(f"timing: {args.warmup} warm-up + median of {args.runs} runs\n")

    image_size = config.vision_config.image_size
    seq = config.text_config.max_position_embeddings
    vocab = config.text_config.vocab_size
    batches = [int(b) for b in args.batches.split(",")]
    results = {}
    with torch.no_grad():
        for batch in batches:
            pixels = torch.randn(batch, 3, image_size, image_size)
            med, best = timed(lambda: model.get_image_features(pixel_values=pixels), args.warmup, args.runs)
            results[f"image_features/{batch}"] = med
            print(f"image_features/{batch:<2}  median {med:8.2f} ms   min {best:8.2f} ms")
        for batch in batches:
            ids = torch.randint(0, vocab, (batch, seq))
            mask = torch.ones(batch, seq, dtype=torch.long)
            med, best = timed(
                lambda: model.get_text_features(input_ids=ids, attention_mask=mask), args.warmup, args.runs
            )
            results[f"text_features/{batch}"] = med
            print(f"text_features/{batch:<2}   median {med:8.2f} ms   min {best:8.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
