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
        [--compute f32,bf16]

`--compute f32,bf16` adds the bf16 rows: PyTorch under `torch.autocast("cpu",
dtype=torch.bfloat16)` and Rust with `MM_BENCH_COMPUTE=bf16` (bf16 products, f32 sums), and
prints each part's Rust bf16 time against PyTorch's f32 and bf16 times. Both sides run all
their calls in one autocast scope, which keeps the weights' bf16 copies from the warm-up
on (a pipeline inside one scope: every step after the first); `bf16-call` runs each call in
a scope of its own instead (every call converts its weights: a text encoder's one call per
generation).

Run on an otherwise idle machine. MM_BENCH_DTYPE=bf16 in the environment keeps the Rust
weights in bfloat16 (see crates/mm-diffusion/benches/common); PyTorch stays float32
(--rust-only skips it).

`--model flux` (part transformer: FLUX.1-schnell's step at 1024x1024, batch 1) times slices
of the model, `--slices D,S:D,S:...` (double- and single-stream blocks; default
0,0:1,0:0,2): per slice PyTorch (bf16 weights and arithmetic, `sd15_bench.py --layers`) and
the Rust bench (`benches/flux.rs`, MM_BENCH_FLUX_LAYERS) with Q8_0 weights and with bf16
storage (`--flux-rust q8_0,bf16`). Then, per side, a least-squares fit of the slice times
t(D, S) = t0 + D * t_double + S * t_single (and of the peak RSS likewise) gives the
embedders + output part, one block of each kind, and the full 19,38 step extrapolated.

    /work/venv/bin/python tools/bench/sd15_compare.py --model flux --slices 0,0:1,0:0,2 \
        --runs 3 --warmup 1
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
# FLUX.1-schnell: the full model's blocks, and the Rust bench's case per weight storage.
FLUX_FULL = (19, 38)
FLUX_RUST = {"q8_0": "flux_transformer/step_1024_q8_0", "bf16": "flux_transformer/step_1024_bf16"}


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


def rust_executables(parts, model="sd15"):
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
    if model == "flux":
        return {part: exes["flux"] for part in parts}
    return {part: exes[BENCHES[part]] for part in parts}


def torch_case(model, part, runs, warmup, layers=None, compute="f32"):
    """PyTorch's median and peak RSS (`layers`: the FLUX slice, "D,S"; `compute` bf16: under
    torch.autocast("cpu", dtype=torch.bfloat16))."""
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [sys.executable, "tools/bench/sd15_bench.py", "--model", model, "--part", part,
               "--runs", str(runs), "--warmup", str(warmup), "--json", f.name]
        if layers is not None:
            cmd += ["--layers", layers]
        if compute in ("bf16", "bf16-call"):
            cmd += ["--autocast", "bf16"]
        if compute == "bf16-call":
            cmd += ["--autocast-scope", "call"]
        _, rss = run(cmd)
        return json.loads(Path(f.name).read_text())[CASES[model][part]], rss


def rust_case(model, part, exe, runs, warmup, case=None, env_extra=None):
    """SD 1.5: criterion's median; SDXL: the median of `runs` (benches/common's loop). The
    case's name as a filter, so that the process builds that model alone (`case` overrides
    the part's, `env_extra` adds to the environment)."""
    case = case or CASES[model][part]
    env = dict(os.environ, MM_BENCH_MODEL=model, MM_BENCH_WARMUP=str(warmup),
               **(env_extra or {}))
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


def fit(points):
    """Least-squares (t0, t_double, t_single) of t = t0 + D * t_double + S * t_single over
    `points` [(D, S, t)], and the largest residual; needs slices that vary D and S apart."""
    import numpy as np
    a = np.array([[1.0, d, s] for d, s, _ in points])
    y = np.array([t for _, _, t in points])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return coef, float(np.abs(a @ coef - y).max())


def flux_main(args):
    """--model flux: both sides per slice, then the per-block fit and the full step."""
    slices = [tuple(int(n) for n in s.split(",")) for s in args.slices.split(":")]
    storages = args.flux_rust.split(",")
    exe = rust_executables(["transformer"], "flux")["transformer"]
    results = []
    for r in range(args.rounds):
        rows = []
        for d, s in slices:
            layers = f"{d},{s}"
            torch_result = (None if args.rust_only else
                            torch_case("flux", "transformer", args.runs, args.warmup, layers))
            for storage in storages:
                rust_result = rust_case("flux", "transformer", exe, args.runs, args.warmup,
                                        case=FLUX_RUST[storage],
                                        env_extra={"MM_BENCH_FLUX_LAYERS": layers})
                results.append({"round": r, "slice": [d, s], "storage": storage,
                                "torch": torch_result, "rust": rust_result})
                rows.append((f"{layers} (Rust {storage})", torch_result, rust_result))
        print(f"round {r + 1}\n{table(rows)}\n", flush=True)
    if len({d for d, _ in slices}) < 2 or len({s for _, s in slices}) < 2 or len(slices) < 3:
        print("(the fit needs at least 3 slices varying the double and the single blocks)")
    else:
        for storage in storages:
            rows = []
            per_side = {}
            for side in ("torch", "rust"):
                ms = [m for m in results if m["storage"] == storage and m[side] is not None]
                if not ms:
                    continue
                times = {}
                for m in ms:
                    times.setdefault(tuple(m["slice"]), []).append(m[side])
                pts_t = [(d, s, statistics.median(v[0] for v in vs))
                         for (d, s), vs in times.items()]
                pts_m = [(d, s, statistics.median(v[1] for v in vs))
                         for (d, s), vs in times.items()]
                (t0, td, ts), res_t = fit(pts_t)
                (m0, md, ms_), res_m = fit(pts_m)
                full_t = t0 + FLUX_FULL[0] * td + FLUX_FULL[1] * ts
                full_m = m0 + FLUX_FULL[0] * md + FLUX_FULL[1] * ms_
                per_side[side] = [(t0, m0), (td, md), (ts, ms_), (full_t, full_m)]
                print(f"{side} ({storage if side == 'rust' else 'bf16'}): fit residual "
                      f"max {res_t:.3f} s, {res_m / 1e9:.3f} GB")
            names = ["embedders + output (t0; RSS: the rest of the process)",
                     "one double-stream block", "one single-stream block",
                     f"full step {FLUX_FULL[0]},{FLUX_FULL[1]} (extrapolated)"]
            for i, name in enumerate(names):
                rows.append((name, per_side["torch"][i] if "torch" in per_side else None,
                             per_side["rust"][i]))
            print(f"fit, Rust {storage}\n{table(rows)}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


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
    parser.add_argument("--compute", default="f32",
                        help="comma-separated arithmetic of both sides: f32 (PyTorch f32, Rust "
                             "f32), bf16 (PyTorch under torch.autocast bf16, Rust with "
                             "MM_BENCH_COMPUTE=bf16, one scope for all calls), bf16-call (a "
                             "scope per call)")
    parser.add_argument("--slices", default="0,0:1,0:0,2",
                        help="--model flux: the D,S slices (double,single blocks), ':'-separated")
    parser.add_argument("--flux-rust", default="q8_0,bf16",
                        help="--model flux: the Rust weight storages (q8_0, bf16)")
    args = parser.parse_args()
    if args.model == "flux":
        flux_main(args)
        return
    parts = args.parts.split(",") if args.parts else list(CASES[args.model])
    exes = rust_executables(parts)
    computes = args.compute.split(",")
    labels = [part if compute == "f32" else f"{part} ({compute})"
              for part in parts for compute in computes]
    results = {label: [] for label in labels}
    for r in range(args.rounds):
        rows = []
        for part in parts:
            for compute in computes:
                label = part if compute == "f32" else f"{part} ({compute})"
                torch_result = (None if args.rust_only else
                                torch_case(args.model, part, args.runs, args.warmup,
                                           compute=compute))
                env_extra = {"MM_BENCH_COMPUTE": compute.removesuffix("-call")}
                if compute == "bf16-call":
                    env_extra["MM_BENCH_SCOPE"] = "call"
                rust_result = rust_case(args.model, part, exes[part], args.runs, args.warmup,
                                        env_extra=env_extra)
                results[label].append({"torch": torch_result, "rust": rust_result})
                rows.append((label, torch_result, rust_result))
        print(f"round {r + 1}\n{table(rows)}\n", flush=True)
    summary = []
    for label in labels:
        med = [None if m0[side] is None else
               tuple(statistics.median(m[side][i] for m in results[label]) for i in range(2))
               for m0 in results[label][:1] for side in ("torch", "rust")]
        summary.append((label, *med))
    print(f"medians over {args.rounds} round(s)\n{table(summary)}")
    # bf16 against PyTorch's f32: the "<= 0.6x PyTorch's f32 time".
    by_label = {label: (torch, rust) for label, torch, rust in summary}
    for part in parts:
        for compute in ("bf16", "bf16-call"):
            f32_row, bf16_row = by_label.get(part), by_label.get(f"{part} ({compute})")
            if f32_row and bf16_row and f32_row[0] is not None and bf16_row[0] is not None:
                rust = bf16_row[1][0]
                print(f"{part}: Rust {compute} / PyTorch f32 = {rust / f32_row[0][0]:.2f}, "
                      f"Rust {compute} / PyTorch {compute} = {rust / bf16_row[0][0]:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
