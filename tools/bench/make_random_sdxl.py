"""Writes a full-size SDXL base diffusers folder with random weights, for the pipeline memory
and speed measurements of `docs/performance.md` (the real checkpoint is not downloadable here).

The layout is the real one (`stabilityai/stable-diffusion-xl-base-1.0`, fp16 safetensors
without the `.fp16` variant suffix): model_index.json, unet/, vae/, text_encoder/
(CLIPTextModel, CLIP-L), text_encoder_2/ (CLIPTextModelWithProjection, OpenCLIP bigG),
tokenizer/ and tokenizer_2/ (the real CLIP BPE vocabulary from $MM_ASSETS/clip-tokenizer;
tokenizer_2 pads with "!" as SDXL's does), scheduler/ (tests/fixtures/sdxl-tiny's
EulerDiscreteScheduler). Configs: tests/fixtures/full/sdxl-base/. About 7 GB.

Each component is built, saved and freed before the next (the f32 UNet alone is 10 GB), so
this runs in about 12 GB of memory.

    /work/venv/bin/python tools/bench/make_random_sdxl.py [--out /work/sdxl-random] [--seed 0]
"""

import argparse
import gc
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "tests/fixtures/full/sdxl-base"
TINY = ROOT / "tests/fixtures/sdxl-tiny"


def save(model, out):
    """Saves `model` (float32 as built) to `out` in float16 safetensors, then frees it."""
    model.to(torch.float16).save_pretrained(out, safe_serialization=True)
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    print(f"{out}: {size / 1e9:.2f} GB", flush=True)
    del model
    gc.collect()


def tokenizer(assets, out, pad):
    """The CLIP BPE files and the configs of SDXL's tokenizer folders."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(assets / name, out / name)
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
               "pad_token": pad, "unk_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    config = {**special, "tokenizer_class": "CLIPTokenizer", "model_max_length": 77,
              "do_lower_case": True, "errors": "replace",
              "add_prefix_space": False, "clean_up_tokenization_spaces": True}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/sdxl-random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assets", type=Path,
                        default=Path(os.environ.get("MM_ASSETS", ROOT.parent / "shared/assets")))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    shutil.copy(TINY / "model_index.json", out / "model_index.json")
    shutil.copytree(TINY / "scheduler", out / "scheduler", dirs_exist_ok=True)
    clip = args.assets / "clip-tokenizer"
    tokenizer(clip, out / "tokenizer", "<|endoftext|>")
    tokenizer(clip, out / "tokenizer_2", "!")

    def config(part):
        return json.loads((FULL / part / "config.json").read_text())

    for part, cls in [("text_encoder", transformers.CLIPTextModel),
                      ("text_encoder_2", transformers.CLIPTextModelWithProjection)]:
        text_config = transformers.CLIPTextConfig.from_json_file(FULL / part / "config.json")
        save(cls(text_config), out / part)
    save(diffusers.AutoencoderKL.from_config(config("vae")), out / "vae")
    save(diffusers.UNet2DConditionModel.from_config(config("unet")), out / "unet")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 1e9:.2f} GB in all")


if __name__ == "__main__":
    main()
