"""PyTorch side of `cargo bench -p mm-core --bench elementwise`: the same activations and group
norm on the same shapes (f32, CPU, default threads), median of `--runs` calls after a warm-up,
each on a fresh copy of the input (made outside the timing).

    python tools/bench/elementwise_bench.py [--runs 20]
"""

import argparse
import time

import torch
import torch.nn.functional as F


def median_ms(fn, make, runs):
    fn(make())
    times = []
    for _ in range(runs):
        x = make()
        start = time.perf_counter()
        fn(x).sum().item()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=20)
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    norm = torch.nn.GroupNorm(32, 320)

    def geglu(h):
        value, gate = h.chunk(2, dim=-1)
        return value * F.gelu(gate)

    cases = [
        ("gelu_2x4096x1280", F.gelu, (2, 4096, 1280)),
        ("geglu_2x4096x2560", geglu, (2, 4096, 2560)),
        ("silu_2x320x64x64", F.silu, (2, 320, 64, 64)),
        ("quick_gelu_8x50x3072", lambda x: x * torch.sigmoid(1.702 * x), (8, 50, 3072)),
        ("group_norm_silu_2x320x64x64", lambda x: F.silu(norm(x)), (2, 320, 64, 64)),
    ]
    with torch.no_grad():
        for name, fn, shape in cases:
            base = torch.randn(shape)
            print(f"{name:30s} {median_ms(fn, base.clone, args.runs):8.2f} ms")


if __name__ == "__main__":
    main()
