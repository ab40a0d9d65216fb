"""The pieces of a CLIP ViT-B/32 forward pass timed one by one in PyTorch: the counterpart
of `cargo bench -p mm-vision --bench clip_ops` (same names, same shapes, same method:
3 warm-up runs, median of 15, each run ending with `.sum().item()`).

    /root/venvs/mmref/bin/python tools/bench/clip_ops.py [FILTER]
"""

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from transformers.models.clip.modeling_clip import CLIPEncoderLayer
from transformers import CLIPVisionConfig

WARMUP, RUNS = 3, 15
FILTER = sys.argv[1] if len(sys.argv) > 1 else None


def time_op(name, fn):
    if FILTER and FILTER not in name:
        return
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    print(f"{name:<40} {times[RUNS // 2]:9.3f} ms  (min {times[0]:.3f})")


def sync(t):
    return t.sum().item()


def split_heads(x, h):
    b, s, d = x.shape
    return x.view(b, s, h, d // h).transpose(1, 2)


def merge_heads(x):
    b, h, s, d = x.shape
    return x.transpose(1, 2).reshape(b, s, h * d)


def tower_ops(name, d, ff, heads, seq, causal, batch):
    p = lambda op: f"{name}/{batch}/{op}"  # noqa: E731
    x = torch.randn(batch, seq, d)
    h = torch.randn(batch, seq, ff)
    lin_dd = torch.nn.Linear(d, d)
    lin_qkv = torch.nn.Linear(d, 3 * d)
    fc1 = torch.nn.Linear(d, ff)
    fc2 = torch.nn.Linear(ff, d)
    norm = torch.nn.LayerNorm(d)
    time_op(p("linear d->d (x4 per layer)"), lambda: sync(lin_dd(x)))
    time_op(p("linear d->3d (fused qkv)"), lambda: sync(lin_qkv(x)))
    time_op(p("linear fc1 d->4d"), lambda: sync(fc1(x)))
    time_op(p("linear fc2 4d->d"), lambda: sync(fc2(h)))
    x2 = x.reshape(batch * seq, d)
    w = lin_dd.weight.t().contiguous()
    time_op(p("matmul 2d [b*s,d]x[d,d] no bias"), lambda: sync(x2 @ w))
    time_op(p("layernorm"), lambda: sync(norm(x)))
    time_op(p("quick_gelu [b,s,4d]"), lambda: sync(h * torch.sigmoid(1.702 * h)))
    time_op(p("add [b,s,d]"), lambda: sync(x + x))
    time_op(p("sigmoid [b,s,4d]"), lambda: sync(torch.sigmoid(h)))
    time_op(p("mul_scalar [b,s,4d]"), lambda: sync(h * 1.702))
    time_op(p("mul [b,s,4d]"), lambda: sync(h * h))
    time_op(p("gelu (erf) [b,s,4d]"), lambda: sync(F.gelu(h)))
    q = split_heads(x, heads)
    time_op(p("sdpa"), lambda: sync(F.scaled_dot_product_attention(q, q, q, is_causal=causal)))
    time_op(p("split+merge heads"), lambda: sync(merge_heads(split_heads(x, heads))))
    if causal:
        # transformers' CLIP text path: a causal + padding additive mask [b,1,s,s].
        mask = torch.zeros(batch, 1, seq, seq).masked_fill(
            torch.ones(seq, seq, dtype=torch.bool).triu(1), float("-inf")
        )
        time_op(p("sdpa + padding mask"), lambda: sync(F.scaled_dot_product_attention(q, q, q, attn_mask=mask)))
    cfg = CLIPVisionConfig(
        hidden_size=d, intermediate_size=ff, num_attention_heads=heads, hidden_act="quick_gelu"
    )
    cfg._attn_implementation = "sdpa"
    layer = CLIPEncoderLayer(cfg).eval()
    time_op(p("encoder layer (x12)"), lambda: sync(layer(x, None)))  # no mask: non-causal in both towers


def main():
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    with torch.no_grad():
        for batch in (1, 8):
            pixels = torch.randn(batch, 3, 224, 224)
            conv = torch.nn.Conv2d(3, 768, 32, stride=32, bias=False)
            time_op(f"vision/{batch}/patch conv", lambda: sync(conv(pixels)))
            w = conv.weight.reshape(768, 3 * 32 * 32).t()
            time_op(
                f"vision/{batch}/patch as reshape+matmul",
                lambda: sync(
                    pixels.reshape(batch, 3, 7, 32, 7, 32).permute(0, 2, 4, 1, 3, 5).reshape(batch * 49, -1) @ w
                ),
            )
            tower_ops("vision", 768, 3072, 12, 50, False, batch)
            tower_ops("text", 512, 2048, 8, 77, True, batch)


if __name__ == "__main__":
    main()
