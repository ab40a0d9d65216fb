"""Stable Diffusion 1.5 / SDXL on the CPU, Rust against PyTorch in one run: the UNet step with
classifier-free guidance, the VAE decode and the text encoder(s) (the cases of
tools/bench/sd15_bench.py and `cargo bench --workspace --bench unet|vae|text_encoder`).

Each round runs, per part, PyTorch (`sd15_bench.py`, median of --runs) and then the Rust
bench binary, each in a process of its own whose peak resident memory (weights included) is
read from the kernel's accounting (wait4). The Rust side is criterion's median of 10 samples
for SD 1.5; for SDXL (`--model sdxl`: 1024x1024, parts unet, vae, text = CLIP-L, text2 =
OpenCLIP bigG) and SD3 (`--model sd3`: parts transformer, t5) it is, like PyTorch's, --warmup
calls and the median of --runs (`MM_BENCH_RUNS`). Prints a table per round and the medians over the rounds, with the
Rust / PyTorch ratios.

    /root/venvs/mmref/bin/python tools/bench/sd15_compare.py [--model sd15|sdxl]
        [--parts unet,vae,text] [--rounds 1] [--runs 5] [--rust-only] [--json FILE]

Run on an otherwise idle machine. MM_BENCH_DTYPE=bf16 in the environment keeps the Rust
weights in bfloat16 (see crates/mm-diffusion/benches/common); PyTorch stays float32
(--rust-only skips it).
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

# The Rust bench binary of each part.
BENCHES = {"unet": "unet", "vae": "vae", "text": "text_encoder", "text2": "text_encoder",
           "controlnet": "unet", "transformer": "sd3", "t5": "sd3"}


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
    """mm-diffusion's bench binaries, built first (release). Built workspace-wide: with
    `-p mm-diffusion` cargo resolves burn's features for that package alone and rebuilds it."""
    cmd = ["cargo", "bench", "--workspace", "--no-run", "--message-format=json"]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    exes = {}
    for line in out.splitlines():
        msg = json.loads(line)
        if (msg.get("reason") == "compiler-artifact" and msg.get("executable")
                and "mm-diffusion" in msg["package_id"]):
            exes[msg["target"]["name"]] = msg["executable"]
    return {part: exes[BENCHES[part]] for part in parts}


def torch_case(model, part, runs, warmup):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "tools/bench/sd15_bench.py", "--model", model, "--part", part,
               "--runs", str(runs), "--warmup", str(warmup), "--json", f.name]
        _, rss = run(cmd)
        return json.loads(Path(f.name).read_text())[CASES[model][part]], rss


def rust_case(model, part, exe, runs, warmup):
    """SD 1.5: criterion's median; SDXL: the median of `runs` (benches/common's loop). The
    case's name as a filter, so that the process builds that model alone."""
    case = CASES[model][part]
    env = dict(os.environ, MM_BENCH_MODEL=model, MM_BENCH_WARMUP=str(warmup))
    if model == "sd15":
        _, rss = run([exe, "--bench", case], env=env)
        estimates = ROOT / "target/criterion" / case / "new/estimates.json"
        return json.loads(estimates.read_text())["median"]["point_estimate"] / 1e9, rss
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        env.update(MM_BENCH_RUNS=str(runs), MM_BENCH_JSON=f.name)
        _, rss = run([exe, "--bench", case], env=env)
        return json.loads(Path(f.name).read_text())[case], rss


def table(rows):
    lines = ["| part | PyTorch | Rust | Rust / PyTorch | PyTorch peak RSS | Rust peak RSS | ratio |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for part, torch_result, (t_rs, rss_rs) in rows:
        if torch_result is None:  # --rust-only
            lines.append(f"| {part} | | {t_rs:.3f} s | | | {rss_rs / 1e9:.2f} GB | |")
            continue
        t_py, rss_py = torch_result
        lines.append(f"| {part} | {t_py:.3f} s | {t_rs:.3f} s | {t_rs / t_py:.2f} | "
                     f"{rss_py / 1e9:.2f} GB | {rss_rs / 1e9:.2f} GB | {rss_rs / rss_py:.2f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(CASES), default="sd15")
    parser.add_argument("--parts", help="comma-separated; default: all of the model's "
                        "(unet,vae,text, and text2 for sdxl)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5,
                        help="timed runs per part (PyTorch's; SDXL's Rust side's too)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed calls before the timed ones (0 or 1; SD3: 0 saves minutes)")
    parser.add_argument("--rust-only", action="store_true", help="skip PyTorch")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    parts = args.parts.split(",") if args.parts else list(CASES[args.model])
    exes = rust_executables(parts)
    results = {part: [] for part in parts}
    for r in range(args.rounds):
        rows = []
        for part in parts:
            torch_result = (None if args.rust_only
                            else torch_case(args.model, part, args.runs, args.warmup))
            rust_result = rust_case(args.model, part, exes[part], args.runs, args.warmup)
            results[part].append({"torch": torch_result, "rust": rust_result})
            rows.append((part, torch_result, rust_result))
        print(f"round {r + 1}\n{table(rows)}\n", flush=True)
    summary = []
    for part in parts:
        med = [None if m0[side] is None else
               tuple(statistics.median(m[side][i] for m in results[part]) for i in range(2))
               for m0 in results[part][:1] for side in ("torch", "rust")]
        summary.append((part, *med))
    print(f"medians over {args.rounds} round(s)\n{table(summary)}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
