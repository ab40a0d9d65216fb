#!/usr/bin/env python3
"""Reference fixture generator for the vision-language models of `mm` (crates/mm-vlm).

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/llava-tiny/        LlavaForConditionalGeneration: Llama (GQA) + CLIP 30/6,
                                    feature layer -2
  tests/fixtures/llava-next-tiny/   LlavaNextForConditionalGeneration: Mistral (GQA, sliding
                                    window 24) + CLIP 30/6, feature layers [-3, -1],
                                    pinpoints 30x60 / 60x30 / 60x60
  tests/fixtures/llama-rope-tiny/   LlamaForCausalLM, one weights file, config_<rope>.json and
                                    logits for rope default / linear / dynamic / llama3
  tests/fixtures/full/llava-1.5-7b-hf/            config.json + tensors.json (meta device)
  tests/fixtures/full/llava-v1.6-mistral-7b-hf/   config.json + tensors.json (meta device)

Each tiny folder holds `config.json`, `generation_config.json`, `preprocessor_config.json`,
`model.safetensors` under the PUBLISHED llava-hf names (`language_model.model.*`,
`language_model.lm_head.weight`, `vision_tower.vision_model.*`, `multi_modal_projector.*`,
`image_newline`; transformers 5 saves `model.language_model.*`, `lm_head.weight`, ...),
the source images (`image*.png`) and `expected.safetensors`:

  pixel_values_1 / input_ids_1 / logits_1       one image
  pixel_values_2 / input_ids_2 / logits_2       two images (NeXT: padded to the max patches)
  image_sizes_1 / image_sizes_2                 NeXT only, (height, width)
  generated_1                                   greedy 20 new tokens of prompt 1 (prompt + new)
  text_ids / text_logits / text_generated       a prompt without image, its logits, greedy 20
  padded_ids / padded_mask / padded_logits      a left-padded batch of two text prompts

Usage:  python tools/reference/gen_vlm.py
"""

import json
import math
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlamaConfig,
    LlamaForCausalLM,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_default_dtype(torch.float32)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

IMAGE_TOKEN = 299
VOCAB = 300
NEW_TOKENS = 20
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


# --------------------------------------------------------------------------------------
# Names: transformers 5.x state_dict -> published llava-hf checkpoints
# --------------------------------------------------------------------------------------


def to_published(name):
    # transformers 5 keeps the CLIP vision transformer directly under `vision_tower`
    if name.startswith("model.vision_tower.") and not name.startswith("model.vision_tower.vision_model."):
        return "vision_tower.vision_model." + name[len("model.vision_tower."):]
    for new, old in (
        ("model.language_model.", "language_model.model."),
        ("model.vision_tower.", "vision_tower."),
        ("model.multi_modal_projector.", "multi_modal_projector."),
        ("model.image_newline", "image_newline"),
        ("lm_head.", "language_model.lm_head."),
    ):
        if name.startswith(new):
            return old + name[len(new):]
    raise KeyError(name)


def published_state_dict(model, tied):
    out = {}
    for k, v in model.state_dict().items():
        if k.endswith("position_ids") or (tied and k == "lm_head.weight"):
            continue
        out[to_published(k)] = v.detach().to(torch.float32).contiguous().clone()
    return out


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if "norm" in name and leaf == "weight":  # LayerNorm / RMSNorm scales
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif "bias" in leaf:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "embed" in name or leaf in ("class_embedding", "image_newline"):
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1:].numel()))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
    return model


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def save_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def save_expected(folder, tensors):
    out = {}
    for k, v in tensors.items():
        v = torch.as_tensor(v).detach()
        if v.dtype.is_floating_point:
            v = v.to(torch.float32)
        out[k] = v.contiguous().clone()
    path = os.path.join(folder, "expected.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)


def make_image(seed, width, height):
    """A smooth deterministic RGB picture (PNG-friendly, small)."""
    g = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    chans = []
    for _ in range(3):
        a, b, c = g.uniform(0.05, 0.4, 3)
        chans.append(127 + 120 * np.sin(a * x + b * y + c * 6))
    arr = np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def greedy(model, **inputs):
    out = model.generate(**inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS)
    assert out.shape[1] == inputs["input_ids"].shape[1] + NEW_TOKENS
    return out


def text_config(model_type, **extra):
    cfg = dict(
        model_type=model_type,
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    cfg.update(extra)
    return cfg


VISION = dict(
    model_type="clip_vision_model",
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=2,
    image_size=30,
    patch_size=6,
    projection_dim=16,
    hidden_act="quick_gelu",
)


def text_cases(model, out, seed):
    """Text-only prompt (logits + greedy) and a left-padded batch."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.cat([torch.tensor([[1]]), torch.randint(3, IMAGE_TOKEN, (1, 9), generator=g)], 1)
    with torch.no_grad():
        out["text_ids"] = ids
        out["text_logits"] = model(input_ids=ids).logits
        out["text_generated"] = greedy(model, input_ids=ids, attention_mask=torch.ones_like(ids))
        a = torch.randint(3, IMAGE_TOKEN, (1, 7), generator=g)[0]
        b = torch.randint(3, IMAGE_TOKEN, (1, 4), generator=g)[0]
        padded = torch.zeros(2, 7, dtype=torch.long)
        mask = torch.zeros(2, 7, dtype=torch.long)
        padded[0] = a
        mask[0] = 1
        padded[1, 3:] = b
        mask[1, 3:] = 1
        out["padded_ids"] = padded
        out["padded_mask"] = mask
        out["padded_logits"] = model(input_ids=padded, attention_mask=mask).logits
        alone = model(input_ids=b[None]).logits
        assert torch.allclose(out["padded_logits"][1, 3:], alone[0], atol=1e-5)


def write_model(folder, model, tied, gen_eos):
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    save_json(os.path.join(folder, "generation_config.json"),
              {"bos_token_id": 1, "eos_token_id": gen_eos, "pad_token_id": 0})
    path = os.path.join(folder, "model.safetensors")
    save_file(published_state_dict(model, tied), path, metadata={"format": "pt"})
    os.chmod(path, 0o644)


# --------------------------------------------------------------------------------------
# LLaVA 1.5
# --------------------------------------------------------------------------------------


def gen_llava(seed=11):
    name = "llava-tiny"
    torch.manual_seed(seed)
    cfg = LlavaConfig(
        text_config=text_config("llama"),
        vision_config=VISION,
        image_token_index=IMAGE_TOKEN,
        image_seq_length=25,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
    )
    model = LlavaForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    randomize(model, seed).eval()
    folder = os.path.join(FIX, name)
    fresh_dir(folder)

    proc = CLIPImageProcessorPil(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30},
                                 image_mean=CLIP_MEAN, image_std=CLIP_STD)
    proc.save_pretrained(folder)
    images = [make_image(seed, 40, 34), make_image(seed + 1, 36, 48)]
    for i, im in enumerate(images):
        im.save(os.path.join(folder, f"image{i + 1}.png"))
    px = proc(images=images, return_tensors="pt")["pixel_values"]

    n = 25  # (30 / 6)^2 patches, class token dropped
    ids1 = torch.tensor([[1, 17, 42] + [IMAGE_TOKEN] * n + [57, 88, 9, 130]])
    ids2 = torch.tensor([[1, 23] + [IMAGE_TOKEN] * n + [64, 5, 201] + [IMAGE_TOKEN] * n + [77, 3]])
    out = {"pixel_values_1": px[:1], "pixel_values_2": px, "input_ids_1": ids1, "input_ids_2": ids2}
    with torch.no_grad():
        out["logits_1"] = model(input_ids=ids1, pixel_values=px[:1]).logits
        out["logits_2"] = model(input_ids=ids2, pixel_values=px).logits
        out["generated_1"] = greedy(model, input_ids=ids1, pixel_values=px[:1],
                                    attention_mask=torch.ones_like(ids1))
        feats = model.model.get_image_features(pixel_values=px[:1], vision_feature_layer=-2,
                                               vision_feature_select_strategy="default").pooler_output
        out["image_features_1"] = torch.cat(list(feats), 0)
    text_cases(model, out, seed)
    write_model(folder, model, tied=False, gen_eos=[2])
    save_expected(folder, out)
    return folder, out


# --------------------------------------------------------------------------------------
# LLaVA-NeXT
# --------------------------------------------------------------------------------------


def gen_llava_next(seed=12):
    name = "llava-next-tiny"
    torch.manual_seed(seed)
    pinpoints = [[30, 60], [60, 30], [60, 60]]
    cfg = LlavaNextConfig(
        text_config=text_config("mistral", sliding_window=24, hidden_size=48, intermediate_size=64),
        vision_config=VISION,
        image_token_index=IMAGE_TOKEN,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=[-3, -1],
        vision_feature_select_strategy="default",
    )
    model = LlavaNextForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    randomize(model, seed).eval()
    folder = os.path.join(FIX, name)
    fresh_dir(folder)

    proc = LlavaNextImageProcessorPil(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30},
        image_grid_pinpoints=pinpoints, image_mean=CLIP_MEAN, image_std=CLIP_STD,
    )
    proc.save_pretrained(folder)
    # (width, height): a wide picture (1x2 grid, unpadded rows) and a tall one (2x2 grid)
    images = [make_image(seed, 50, 28), make_image(seed + 1, 40, 56)]
    for i, im in enumerate(images):
        im.save(os.path.join(folder, f"image{i + 1}.png"))
    enc1 = proc(images=images[:1], return_tensors="pt")
    enc2 = proc(images=images, return_tensors="pt")

    with torch.no_grad():
        def count(enc):
            f = model.model.get_image_features(
                pixel_values=enc["pixel_values"], image_sizes=enc["image_sizes"],
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy="default").pooler_output
            return [x.shape[0] for x in f], torch.cat(list(f), 0)

        (n1,), feats1 = count(enc1)
        na, nb = count(enc2)[0]
    print(f"  {name}: image tokens {n1} (image 1), {nb} (image 2); "
          f"pixel_values {list(enc2['pixel_values'].shape)}, image_sizes {enc2['image_sizes'].tolist()}")
    ids1 = torch.tensor([[1, 17] + [IMAGE_TOKEN] * n1 + [57, 88, 9]])
    ids2 = torch.tensor([[1, 23] + [IMAGE_TOKEN] * na + [64, 5] + [IMAGE_TOKEN] * nb + [77]])
    out = {
        "pixel_values_1": enc1["pixel_values"], "image_sizes_1": enc1["image_sizes"],
        "pixel_values_2": enc2["pixel_values"], "image_sizes_2": enc2["image_sizes"],
        "input_ids_1": ids1, "input_ids_2": ids2, "image_features_1": feats1,
    }
    with torch.no_grad():
        out["logits_1"] = model(input_ids=ids1, pixel_values=enc1["pixel_values"],
                                image_sizes=enc1["image_sizes"]).logits
        out["logits_2"] = model(input_ids=ids2, pixel_values=enc2["pixel_values"],
                                image_sizes=enc2["image_sizes"]).logits
        out["generated_1"] = greedy(model, input_ids=ids1, pixel_values=enc1["pixel_values"],
                                    image_sizes=enc1["image_sizes"], attention_mask=torch.ones_like(ids1))
    assert ids2.shape[1] + NEW_TOKENS > 24, "the sliding window must bind"
    text_cases(model, out, seed)
    write_model(folder, model, tied=False, gen_eos=2)
    save_expected(folder, out)
    return folder, out


# --------------------------------------------------------------------------------------
# Rotary scaling variants (one text-only LlamaForCausalLM, four rope configs)
# --------------------------------------------------------------------------------------

ROPES = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.5},
    "dynamic": {"rope_type": "dynamic", "factor": 3.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 8},
}


def gen_rope(seed=13):
    """`llama-rope-tiny/`: model.safetensors (LlamaForCausalLM names), config_<rope>.json in
    the published spelling (`rope_theta` + `rope_scaling`), logits_<rope> for a 24-token prompt
    (past max_position_embeddings = 16, where dynamic NTK rescales)."""
    name = "llama-rope-tiny"
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    base = dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=16,
                rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=False)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 64, (1, 24), generator=g)
    out = {"input_ids": ids}
    weights = None
    for rope, scaling in ROPES.items():
        cfg = dict(base, model_type="llama", rope_scaling=scaling)
        torch.manual_seed(seed)
        model = LlamaForCausalLM._from_config(LlamaConfig(**{k: v for k, v in cfg.items() if k != "model_type"}),
                                              attn_implementation="eager")
        if weights is None:
            randomize(model, seed).eval()
            weights = {k: v.clone() for k, v in model.state_dict().items()}
            path = os.path.join(folder, "model.safetensors")
            save_file({k: v.contiguous() for k, v in weights.items()}, path, metadata={"format": "pt"})
            os.chmod(path, 0o644)
        else:
            model.load_state_dict(weights)
            model.eval()
        with torch.no_grad():
            out[f"logits_{rope}"] = model(input_ids=ids).logits
        save_json(os.path.join(folder, f"config_{rope}.json"), cfg)
    for rope in ("linear", "dynamic", "llama3"):
        d = (out[f"logits_{rope}"] - out["logits_default"]).abs().max().item()
        assert d > 1e-3, (rope, d)
    save_expected(folder, out)
    print(f"  {name}: rope variants {list(ROPES)}")


# --------------------------------------------------------------------------------------
# Full-size name lists
# --------------------------------------------------------------------------------------

CLIP_L336 = {
    "hidden_size": 1024, "image_size": 336, "intermediate_size": 4096, "model_type": "clip_vision_model",
    "num_attention_heads": 16, "num_hidden_layers": 24, "patch_size": 14, "projection_dim": 768,
    "vocab_size": 32000,
}

# The published config.json files (llava-hf), values copied from the hub.
FULL = {
    "llava-1.5-7b-hf": (LlavaConfig, LlavaForConditionalGeneration, {
        "architectures": ["LlavaForConditionalGeneration"],
        "ignore_index": -100,
        "image_token_index": 32000,
        "model_type": "llava",
        "pad_token_id": 32001,
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "lmsys/vicuna-7b-v1.5",
            "architectures": ["LlamaForCausalLM"],
            "max_position_embeddings": 4096,
            "model_type": "llama",
            "rms_norm_eps": 1e-05,
            "torch_dtype": "float16",
            "vocab_size": 32064,
        },
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
        "transformers_version": "4.36.0.dev0",
        "vision_config": CLIP_L336,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }),
    "llava-v1.6-mistral-7b-hf": (LlavaNextConfig, LlavaNextForConditionalGeneration, {
        "architectures": ["LlavaNextForConditionalGeneration"],
        "ignore_index": -100,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "image_token_index": 32000,
        "model_type": "llava_next",
        "projector_hidden_act": "gelu",
        "text_config": {
            "_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
            "architectures": ["MistralForCausalLM"],
            "intermediate_size": 14336,
            "max_position_embeddings": 32768,
            "model_type": "mistral",
            "num_key_value_heads": 8,
            "rms_norm_eps": 1e-05,
            "rope_theta": 1000000.0,
            "sliding_window": None,
            "torch_dtype": "bfloat16",
            "vocab_size": 32064,
        },
        "torch_dtype": "float16",
        "transformers_version": "4.39.0.dev0",
        "use_image_newline_parameter": True,
        "vision_config": CLIP_L336,
        "vision_feature_layer": -2,
        "vision_feature_select_strategy": "default",
        "vocab_size": 32064,
    }),
}


def gen_full():
    base = os.path.join(FIX, "full")
    for name, (cfg_cls, cls, raw) in FULL.items():
        folder = os.path.join(base, name)
        fresh_dir(folder)
        save_json(os.path.join(folder, "config.json"), raw)
        kwargs = {k: v for k, v in raw.items() if k not in ("architectures", "model_type", "transformers_version")}
        cfg = cfg_cls(**kwargs)
        with torch.device("meta"):
            model = cls._from_config(cfg)
        tied = cfg.tie_word_embeddings
        entries = sorted([to_published(k), list(v.shape)]
                         for k, v in model.state_dict().items()
                         if not k.endswith("position_ids") and not (tied and k == "lm_head.weight"))
        with open(os.path.join(folder, "tensors.json"), "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
        n = sum(math.prod(s) for _, s in entries)
        print(f"  full/{name}: {len(entries)} tensors, {n / 1e9:.3f}B params")


# --------------------------------------------------------------------------------------
# Sanity: the published-name files load back through transformers' own loader
# --------------------------------------------------------------------------------------


def sanity(folder, cls, expected):
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    exp = load_file(os.path.join(folder, "expected.safetensors"))
    kw = {"image_sizes": exp["image_sizes_1"]} if "image_sizes_1" in exp else {}
    with torch.no_grad():
        r = model(input_ids=exp["input_ids_1"], pixel_values=exp["pixel_values_1"], **kw).logits
    d = (r - exp["logits_1"]).abs().max().item()
    assert d < 1e-5, (folder, d)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert size < 1e6, (folder, size)
    print(f"  reload OK via from_pretrained {os.path.relpath(folder, ROOT)} "
          f"(max diff {d:.1e}, {size / 1024:.0f} KiB)")


def main():
    print(f"torch {torch.__version__}, writing to {FIX}")
    f1, o1 = gen_llava()
    print(f"  llava-tiny: generated {o1['generated_1'][0, -NEW_TOKENS:].tolist()}")
    f2, o2 = gen_llava_next()
    print(f"  llava-next-tiny: generated {o2['generated_1'][0, -NEW_TOKENS:].tolist()}")
    gen_rope()
    gen_full()
    print("sanity checks:")
    sanity(f1, LlavaForConditionalGeneration, o1)
    sanity(f2, LlavaNextForConditionalGeneration, o2)
    print("done")


if __name__ == "__main__":
    sys.exit(main())
