"""Llama decoding on the CPU in PyTorch / transformers: the reference for
`cargo bench -p mm-vlm --bench decode`.

A reduced-depth `LlamaForCausalLM` with the LLaVA 1.5 7B text widths (from
tests/fixtures/full/llava-1.5-7b-hf/config.json), random bfloat16 weights, eval mode,
torch.no_grad(), default threads and attention (sdpa). Prefill = the prompt's forward pass
with the cache; decode = each further single-token step. Median over runs 1..N-1.

    /root/venvs/mmref/bin/python tools/bench/llava_bench.py [--layers 2] [--prompt 128] [--tokens 16]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "tests/fixtures/full/llava-1.5-7b-hf/config.json"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args()
    text = json.loads(CONFIG.read_text())["text_config"]
    text = {k: v for k, v in text.items() if k not in ("architectures", "_name_or_path", "torch_dtype", "model_type")}
    cfg = LlamaConfig(**text, num_hidden_layers=a.layers)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {a.layers} layers, hidden "
          f"{cfg.hidden_size}, vocab {cfg.vocab_size}, bf16, prompt {a.prompt}, {a.tokens} new tokens")
    ids = torch.randint(0, cfg.vocab_size, (1, a.prompt))
    prefill, decode = [], []
    with torch.no_grad():
        for run in range(a.runs):
            cache = DynamicCache()
            t0 = time.perf_counter()
            out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            for _ in range(a.tokens):
                out = model(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            t2 = time.perf_counter()
            tp, td = (t1 - t0) * 1e3, (t2 - t1) * 1e3 / a.tokens
            print(f"  run {run}: prefill {tp:.1f} ms, decode {td:.1f} ms/token")
            if run > 0:
                prefill.append(tp)
                decode.append(td)
    mp = statistics.median(prefill)
    print(f"median of runs 1-{a.runs - 1}: prefill {mp:.1f} ms ({a.prompt / mp * 1e3:.1f} tokens/s), "
          f"decode {statistics.median(decode):.1f} ms/token")


if __name__ == "__main__":
    main()
