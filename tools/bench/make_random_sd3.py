"""Writes a full-size Stable Diffusion 3 medium diffusers folder with random weights, for the
pipeline memory and speed measurements of `docs/performance.md` (the real checkpoint is not
downloadable here).

The layout is the real one (`stabilityai/stable-diffusion-3-medium-diffusers`, bfloat16
safetensors): model_index.json, transformer/ (tests/fixtures/full/sd3-medium's config),
vae/ (SD3's 16-channel AutoencoderKL config), text_encoder/ (CLIP-L with projection),
text_encoder_2/ (OpenCLIP bigG with projection; tests/fixtures/full/sdxl-base's config),
text_encoder_3/ (T5 v1.1 XXL encoder; tests/fixtures/full/t5-v1_1-xxl's config), tokenizer/
and tokenizer_2/ (the real CLIP BPE vocabulary from $MM_ASSETS/clip-tokenizer; tokenizer_2
pads with "!"), tokenizer_3/ (the tiny T5-style tokenizer of tests/fixtures/t5-tokenizer: the
real SentencePiece vocabulary is not here; its ids are valid T5-XXL ids) and scheduler/ (SD3
medium's FlowMatchEulerDiscreteScheduler config, from tests/fixtures/sd3-tiny). About 15 GB.

Each component is built directly in bfloat16, saved and freed before the next (T5-XXL is
9.5 GB), so this runs in about 11 GB of memory.

    /work/venv/bin/python tools/bench/make_random_sd3.py [--out /work/sd3-random] [--seed 0]
"""

import argparse
import gc
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_sdxl import tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "tests/fixtures/full"
TINY = ROOT / "tests/fixtures/sd3-tiny"

# stabilityai/stable-diffusion-3-medium-diffusers' vae/config.json.
VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True, "in_channels": 3,
    "latent_channels": 16, "latents_mean": None, "latents_std": None, "layers_per_block": 2,
    "mid_block_add_attention": True, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 1024, "scaling_factor": 1.5305, "shift_factor": 0.0609,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "use_post_quant_conv": False,
    "use_quant_conv": False,
}
# CLIP-L with projection (text_encoder/config.json of SD3 medium).
CLIP_L = {
    "architectures": ["CLIPTextModelWithProjection"], "attention_dropout": 0.0,
    "bos_token_id": 0, "eos_token_id": 2, "hidden_act": "quick_gelu", "hidden_size": 768,
    "initializer_factor": 1.0, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-05, "max_position_embeddings": 77, "model_type": "clip_text_model",
    "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 768, "vocab_size": 49408,
}


def save(model, out):
    """Saves `model` (built in bfloat16) to `out` as safetensors, then frees it."""
    model.save_pretrained(out, safe_serialization=True)
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    print(f"{out}: {size / 1e9:.2f} GB", flush=True)
    del model
    gc.collect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/sd3-random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assets", type=Path,
                        default=Path(os.environ.get("MM_ASSETS", ROOT.parent / "shared/assets")))
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_default_dtype(torch.bfloat16)

    shutil.copy(TINY / "model_index.json", out / "model_index.json")
    shutil.copytree(TINY / "scheduler", out / "scheduler", dirs_exist_ok=True)
    clip = args.assets / "clip-tokenizer"
    tokenizer(clip, out / "tokenizer", "<|endoftext|>")
    tokenizer(clip, out / "tokenizer_2", "!")
    shutil.copytree(TINY / "tokenizer_3", out / "tokenizer_3", dirs_exist_ok=True)

    save(transformers.CLIPTextModelWithProjection(transformers.CLIPTextConfig(**CLIP_L)),
         out / "text_encoder")
    bigg = transformers.CLIPTextConfig.from_json_file(
        FULL / "sdxl-base/text_encoder_2/config.json")
    save(transformers.CLIPTextModelWithProjection(bigg), out / "text_encoder_2")
    t5 = transformers.T5Config.from_json_file(FULL / "t5-v1_1-xxl/config.json")
    save(transformers.T5EncoderModel(t5), out / "text_encoder_3")
    save(diffusers.AutoencoderKL.from_config(VAE), out / "vae")
    config = json.loads((FULL / "sd3-medium/transformer/config.json").read_text())
    save(diffusers.SD3Transformer2DModel.from_config(config), out / "transformer")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 1e9:.2f} GB in all")


if __name__ == "__main__":
    main()
