#!/usr/bin/env python3
"""PyTorch's float32 conv2d on the shapes of `crates/mm-core/benches/conv.rs` (Stable
Diffusion 1.5's UNet with CFG: batch 2, 512² images) on the CPU. Prints the median of
`--repeat` timed calls per case, in ms.

Usage:  python tools/bench/conv_bench.py [--repeat 10]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

# (name, channels in, channels out, side, kernel)
CASES = [
    ("3x3_320_64x64", 320, 320, 64, 3),
    ("3x3_640_32x32", 640, 640, 32, 3),
    ("3x3_1280_16x16", 1280, 1280, 16, 3),
    ("1x1_960_640_32x32", 960, 640, 32, 1),
]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with torch.no_grad():
        for name, cin, cout, side, k in CASES:
            x = torch.randn(2, cin, side, side)
            w = torch.randn(cout, cin, k, k) * 0.02
            b = torch.randn(cout)
            for _ in range(2):
                F.conv2d(x, w, b, padding=k // 2)
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                F.conv2d(x, w, b, padding=k // 2)
                times.append((time.perf_counter() - start) * 1e3)
            print(f"{name:<22} {statistics.median(times):8.2f} ms")


if __name__ == "__main__":
    main()
