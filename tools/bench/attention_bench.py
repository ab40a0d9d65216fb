#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the shapes of `crates/mm-core/benches/attention.rs`
(Stable Diffusion 1.5's UNet with CFG, CLIP), float32 on the CPU. Prints the median of
`--repeat` timed calls per case, in ms.

Usage:  python tools/bench/attention_bench.py [--repeat 10]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

CASES = [
    ("sd15_self_4096x40", 2, 8, 4096, 4096, 40, False),
    ("sd15_cross_4096x77x40", 2, 8, 4096, 77, 40, False),
    ("sd15_self_1024x80", 2, 8, 1024, 1024, 80, False),
    ("clip_vision_b8_50x64", 8, 12, 50, 50, 64, False),
    ("clip_text_b8_77x64_causal", 8, 8, 77, 77, 64, True),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with torch.no_grad():
        for name, b, h, sq, sk, d, causal in CASES:
            if args.only and args.only not in name:
                continue
            q = torch.randn(b, h, sq, d)
            k = torch.randn(b, h, sk, d)
            v = torch.randn(b, h, sk, d)
            for _ in range(2):
                F.scaled_dot_product_attention(q, k, v, is_causal=causal)
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().item()
                times.append((time.perf_counter() - t) * 1e3)
            print(f"{name:30s} {statistics.median(times):10.2f} ms")


if __name__ == "__main__":
    main()
