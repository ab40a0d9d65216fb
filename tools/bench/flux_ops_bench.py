"""Where a FLUX.1 block's time goes in PyTorch (bf16 weights and arithmetic, as
`sd15_bench.py --model flux` runs the step): the counterpart of the Rust bench's
`flux_transformer/ops` case (`MM_BENCH_MODEL=flux cargo bench --workspace --bench flux --
ops`). At the 1024x1024 step's shapes (4096 image + 256 text = 4352 joined tokens, width
3072, 24 heads of 128):

- proj_mlp: `F.linear` [4352, 3072] x [3072 -> 12288] (a single block's largest product),
  bf16 and f32;
- attention: `F.scaled_dot_product_attention` on [1, 24, 4352, 128], bf16 and f32;
- one diffusers `FluxSingleTransformerBlock` (bf16), with the step's RoPE.

One warm-up call, then the median of --runs, in ms with the achieved GFLOP/s.

    /work/venv/bin/python tools/bench/flux_ops_bench.py [--runs 3]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from diffusers.models.transformers.transformer_flux import FluxPosEmbed, FluxSingleTransformerBlock

TOKENS, DIM, HEADS, HEAD = 4096 + 256, 3072, 24, 128


def timed(name, flops, runs, f):
    """Prints the median time of `runs` calls of `f` after one warm-up call."""
    f()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        f()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    print(f"  {name:<32} {t * 1e3:8.1f} ms  {flops / t / 1e9:6.1f} GFLOP/s", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    product = 2.0 * TOKENS * DIM * 4 * DIM
    attention = 4.0 * TOKENS * TOKENS * HEADS * HEAD
    with torch.no_grad():
        for dtype in (torch.bfloat16, torch.float32):
            x = torch.randn(TOKENS, DIM, dtype=dtype)
            w = torch.randn(4 * DIM, DIM, dtype=dtype) * DIM ** -0.5
            timed(f"proj_mlp {dtype}", product, args.runs, lambda: F.linear(x, w))
            q, k, v = (torch.randn(1, HEADS, TOKENS, HEAD, dtype=dtype) for _ in range(3))
            timed(f"attention {dtype}", attention, args.runs,
                  lambda: F.scaled_dot_product_attention(q, k, v))
        torch.set_default_dtype(torch.bfloat16)
        block = FluxSingleTransformerBlock(DIM, HEADS, HEAD).eval()
        torch.set_default_dtype(torch.float32)
        ids = torch.zeros(64, 64, 3)
        ids[..., 1] += torch.arange(64)[:, None]
        ids[..., 2] += torch.arange(64)[None, :]
        ids = torch.cat([torch.zeros(256, 3), ids.reshape(-1, 3)])
        rope = FluxPosEmbed(theta=10000, axes_dim=[16, 56, 56])(ids)
        hidden = torch.randn(1, 4096, DIM, dtype=torch.bfloat16)
        context = torch.randn(1, 256, DIM, dtype=torch.bfloat16)
        temb = torch.randn(1, DIM, dtype=torch.bfloat16)
        flops = 2.0 * TOKENS * DIM * 12 * DIM + attention
        timed("single block bf16", flops, args.runs,
              lambda: block(hidden, context, temb, image_rotary_emb=rope))


if __name__ == "__main__":
    main()
