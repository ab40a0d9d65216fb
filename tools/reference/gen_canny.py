#!/usr/bin/env python3
"""Canny edge maps of OpenCV (`cv2.Canny`, aperture 3) for `mm_core::image::canny`.

ControlNet's Canny preprocessor (diffusers docs) is `cv2.Canny(np.array(pil_image), low, high)`
on the 3-channel image in RGB order, then the edge map replicated to three channels. This
script runs that on:

- every photo of `$MM_ASSETS/images`, opened as `np.array(Image.open(p).convert("RGB"))`
  (grayscale replicated, alpha dropped: what `mm_core::image::load_image` returns), at
  thresholds (100, 200) and (50, 150), with L1 and L2 gradients; for a grayscale photo
  (`camera.png`, mode L) also on the 1-channel array (OpenCV's gray path);
- `chelsea.png` at thresholds that exercise OpenCV's conversion of them: zero, swapped (low above
  high), fractional (floored, or squared then floored for L2) and far above any gradient;
- small synthetic images stored as inputs here: a 48x40 RGB image of three levels in 2x2 blocks
  (many equal gradients, both across channels, where the first channel of largest magnitude
  wins, and between neighbours, where the non-maximum suppression's `>` / `>=` matter), and
  random RGB images of 1x1 ... 4x7 pixels (borders everywhere).

It (re)writes `tests/fixtures/canny/` only:

- `<stem>.<rgb|gray>.<low>-<high>.<l1|l2>.png`: the edge maps, 1-bit PNGs (edge = white);
- `input.<name>.png`: the synthetic inputs (RGB);
- `manifest.json`: OpenCV's version, per input the size and sha256 of the pixels Canny read
  (the Rust test checks that it decodes the same), and per case the input, channel mode,
  thresholds, gradient norm, edge-map file and its number of edge pixels.

Every map is computed twice, with OpenCV's default thread count and with one thread (where
OpenCV may hand the work to IPP); the script asserts they agree.

Deterministic: re-running rewrites byte-identical files.
Usage (from anywhere): MM_ASSETS=/path/to/shared/assets python tools/reference/gen_canny.py
"""

import hashlib
import json
import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "canny"
ASSETS = Path(os.environ.get("MM_ASSETS", ROOT.parent / "shared" / "assets"))

PHOTOS = ["astronaut.png", "camera.png", "chelsea.png", "coffee.png", "rocket.jpg", "CLIP.png"]
SETTINGS = [(low, high, l2) for low, high in [(100, 200), (50, 150)] for l2 in (False, True)]
THRESHOLD_CASES = [(0, 0), (200, 100), (100.7, 200.2), (100, 1e10)]


def canny(pixels, low, high, l2):
    default = cv2.Canny(pixels, low, high, L2gradient=l2)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    single = cv2.Canny(pixels, low, high, L2gradient=l2)
    cv2.setNumThreads(threads)
    assert np.array_equal(default, single), "cv2.Canny depends on the thread count"
    assert set(np.unique(default)) <= {0, 255}
    return default


def threshold_text(t):
    return f"{t:g}".replace("+", "")


def main():
    if OUT.exists():
        for old in OUT.iterdir():
            old.unlink()
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = {}
    cases = []

    def add_input(name, pixels, source):
        inputs[name] = {
            "source": source,
            "width": pixels.shape[1],
            "height": pixels.shape[0],
            "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
        }

    def add_case(name, mode, pixels, low, high, l2):
        edges = canny(pixels, low, high, l2)
        stem = Path(name).stem.removeprefix("input.")
        file = f"{stem}.{mode}.{threshold_text(low)}-{threshold_text(high)}.{'l2' if l2 else 'l1'}.png"
        Image.fromarray(edges).convert("1", dither=Image.Dither.NONE).save(OUT / file, optimize=True)
        cases.append(
            {
                "input": name,
                "mode": mode,
                "low": low,
                "high": high,
                "l2_gradient": l2,
                "edges": file,
                "edge_pixels": int(np.count_nonzero(edges)),
            }
        )

    for name in PHOTOS:
        opened = Image.open(ASSETS / "images" / name)
        rgb = np.array(opened.convert("RGB"))
        add_input(name, rgb, "assets")
        for low, high, l2 in SETTINGS:
            add_case(name, "rgb", rgb, low, high, l2)
        if opened.mode == "L":
            gray = np.array(opened)
            for low, high, l2 in SETTINGS:
                add_case(name, "gray", gray, low, high, l2)
        if name == "chelsea.png":
            for low, high in THRESHOLD_CASES:
                for l2 in (False, True):
                    add_case(name, "rgb", rgb, low, high, l2)

    rng = np.random.default_rng(0)
    levels = rng.choice(np.array([0, 128, 255], dtype=np.uint8), size=(20, 24, 3))
    synthetic = {"ties_48x40": levels.repeat(2, axis=0).repeat(2, axis=1)}
    for w, h in [(1, 1), (5, 1), (1, 5), (2, 3), (3, 3), (4, 7)]:
        synthetic[f"noise_{w}x{h}"] = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    for stem, pixels in synthetic.items():
        name = f"input.{stem}.png"
        Image.fromarray(pixels).save(OUT / name, optimize=True)
        add_input(name, pixels, "fixture")
        for l2 in (False, True):
            add_case(name, "rgb", pixels, 100, 200, l2)

    manifest = {"opencv": cv2.__version__, "inputs": inputs, "cases": cases}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    size = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(cases)} edge maps ({size / 1e3:.0f} KB in all) to {OUT}")


if __name__ == "__main__":
    main()
