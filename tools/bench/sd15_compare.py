"""Stable Diffusion 1.5 on the CPU, Rust against PyTorch in one run: the UNet step with
classifier-free guidance, the 512x512 VAE decode and the text encoder (the cases of
tools/bench/sd15_bench.py and `cargo bench -p mm-diffusion --bench unet|vae|text_encoder`).

Each round runs, per part, PyTorch (`sd15_bench.py`, median of --runs) and then the Rust
bench binary (criterion, 10 samples; its median), each in a process of its own whose peak
resident memory (weights included) is read from the kernel's accounting (wait4). Prints a
table per round and the medians over the rounds, with the Rust / PyTorch ratios.

    /root/venvs/mmref/bin/python tools/bench/sd15_compare.py [--parts unet,vae,text]
        [--rounds 1] [--runs 5] [--json FILE]

Run on an otherwise idle machine. MM_BENCH_DTYPE=bf16 in the environment keeps the Rust
weights in bfloat16 (see crates/mm-diffusion/benches/common); PyTorch stays float32.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd15_bench import CASES  # noqa: E402

BENCHES = {"unet": "unet", "vae": "vae", "text": "text_encoder"}


def run(cmd, **kwargs):
    """Runs `cmd`; returns its standard output and its peak RSS in bytes."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, **kwargs)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{text}")
    return text, usage.ru_maxrss * 1024


def rust_executables(parts):
    """The bench binaries, built first (release)."""
    cmd = ["cargo", "bench", "-p", "mm-diffusion", "--no-run", "--message-format=json"]
    for part in parts:
        cmd += ["--bench", BENCHES[part]]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    exes = {}
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            exes[msg["target"]["name"]] = msg["executable"]
    return {part: exes[BENCHES[part]] for part in parts}


def torch_case(part, runs):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "tools/bench/sd15_bench.py", "--part", part,
               "--runs", str(runs), "--json", f.name]
        _, rss = run(cmd)
        return json.loads(Path(f.name).read_text())[CASES[part]], rss


def rust_case(part, exe):
    _, rss = run([exe, "--bench"])
    estimates = ROOT / "target/criterion" / CASES[part] / "new/estimates.json"
    return json.loads(estimates.read_text())["median"]["point_estimate"] / 1e9, rss


def table(rows):
    lines = ["| part | PyTorch | Rust | Rust / PyTorch | PyTorch peak RSS | Rust peak RSS | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for part, (t_py, rss_py), (t_rs, rss_rs) in rows:
        lines.append(f"| {part} | {t_py:.3f} s | {t_rs:.3f} s | {t_rs / t_py:.2f} | "
                     f"{rss_py / 1e9:.2f} GB | {rss_rs / 1e9:.2f} GB | {rss_rs / rss_py:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="unet,vae,text")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5, help="PyTorch's timed runs per part")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    parts = args.parts.split(",")
    exes = rust_executables(parts)
    results = {part: [] for part in parts}
    for r in range(args.rounds):
        rows = []
        for part in parts:
            torch_result = torch_case(part, args.runs)
            rust_result = rust_case(part, exes[part])
            results[part].append({"torch": torch_result, "rust": rust_result})
            rows.append((part, torch_result, rust_result))
        print(f"round {r + 1}\n{table(rows)}\n", flush=True)
    summary = []
    for part in parts:
        med = [tuple(statistics.median(m[side][i] for m in results[part]) for i in range(2))
               for side in ("torch", "rust")]
        summary.append((part, *med))
    print(f"medians over {args.rounds} round(s)\n{table(summary)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
