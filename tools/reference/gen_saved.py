#!/usr/bin/env python3
"""Model folders exactly as today's `save_pretrained` writes them, for the loaders of `mm`.

The other generators write the PUBLISHED hub layout by hand (`save_file` of renamed tensors,
`preprocessor_config.json`). This one calls only `model.save_pretrained(folder)` and
`processor.save_pretrained(folder)` (or `image_processor.save_pretrained` for ViT, which has
no processor class) with their DEFAULT arguments, transformers 5.24.0, so the Rust tests see
what a user who saves a model today gets:

  tests/fixtures/saved/clip/        CLIPModel + CLIPProcessor
  tests/fixtures/saved/siglip/      SiglipModel + SiglipProcessor
  tests/fixtures/saved/vit/         ViTForImageClassification + ViTImageProcessor
  tests/fixtures/saved/vit-model/   ViTModel (with pooler) + ViTImageProcessor
  tests/fixtures/saved/llava/       LlavaForConditionalGeneration + LlavaProcessor
  tests/fixtures/saved/llava-next/  LlavaNextForConditionalGeneration + LlavaNextProcessor

What 5.24 writes (checked below, the script fails if it changes):

  model.save_pretrained      config.json, model.safetensors (+ generation_config.json for the
                             generative models). CLIP / SigLIP / ViT: the published tensor
                             names. LLaVA / NeXT: published names (`language_model.model.*`,
                             `language_model.lm_head.weight`, `multi_modal_projector.*`,
                             `image_newline`) EXCEPT the CLIP tower: `vision_tower.embeddings.*`,
                             `vision_tower.encoder.*` (no `vision_model.`).
  processor.save_pretrained  processor_config.json with the image processor's settings nested
                             under "image_processor" (and the processor's own options at the
                             top level), tokenizer.json, tokenizer_config.json,
                             chat_template.jinja when the tokenizer has a template; NO
                             preprocessor_config.json.
  ViTImageProcessor.save_pretrained   preprocessor_config.json.

Tokenizers: the tiny CLIP BPE of `tests/fixtures/sd-tiny/tokenizer` (CLIP, SigLIP) and the tiny
LLaVA BPE of `tests/fixtures/llava-tokenizer/tiny`; both are re-saved as `tokenizer.json`.

Every folder also gets `expected.safetensors`: the processors' outputs for
`$MM_ASSETS/images/CLIP.png` (RGBA, mostly transparent) opened with `Image.open` (ViT: its
processor rejects RGBA, so `.convert("RGB")`, which drops alpha) and `chelsea.png`, and the
models' outputs for them:

  clip / siglip   input_ids, attention_mask (the processor's text padding: longest for CLIP,
                  max_length for SigLIP), pixel_values, text_embeds / image_embeds
                  (L2-normalised), probs ([images, texts]: softmax for CLIP, sigmoid for SigLIP)
  vit             pixel_values, logits        vit-model: pixel_values, last_hidden_state,
                                              pooler_output
  llava           input_ids, attention_mask, pixel_values, logits of
                  `processor(text=PROMPT, images=Image.open(CLIP.png))`
  llava-next      the same plus image_sizes (pixel_values [1, tiles, 3, 30, 30])

The image processors are the classes `AutoImageProcessor` picks in this environment (the PIL
ones: torchvision is not installed). For a PIL image both backends of 5.24 call the same
`convert_to_rgb` (alpha composited onto white) when `do_convert_rgb` is set.

It also checks diffusers 0.42.1: `save_pretrained` of the tiny pipeline of
`tests/fixtures/sd-tiny` (the UNet and VAE there were written by `save_pretrained` with its
defaults) writes the same UNet / VAE / text encoder tensors, and a `tokenizer/` of
`tokenizer.json` (byte-identical to `saved/clip/tokenizer.json`) + `tokenizer_config.json`
instead of the published `vocab.json` + `merges.txt` (nothing is written).

Usage:  python tools/reference/gen_saved.py     (deterministic: reruns are byte-identical)
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import (  # noqa: E402
    AutoImageProcessor,
    AutoProcessor,
    AutoTokenizer,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessorPil,
    LlavaNextProcessor,
    LlavaProcessor,
    SiglipConfig,
    SiglipImageProcessorPil,
    SiglipModel,
    SiglipProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessorPil,
    ViTModel,
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gen_vision  # noqa: E402
import gen_vlm  # noqa: E402
from gen_vision import fresh_dir, save_expected  # noqa: E402

ROOT = gen_vision.ROOT
OUT = os.path.join(gen_vision.FIX, "saved")
ASSETS = os.environ.get("MM_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))
IMAGES = [os.path.join(ASSETS, "images", f) for f in ("CLIP.png", "chelsea.png")]
TEXTS = ["a photo of a red cat", "the moon"]
PROMPT = "USER: <image>\nWhat is this? ASSISTANT:"
CLIP_TOKENIZER = os.path.join(gen_vision.FIX, "sd-tiny", "tokenizer")
LLAVA_TOKENIZER = os.path.join(gen_vision.FIX, "llava-tokenizer", "tiny")
VISION = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
              image_size=30, patch_size=6)
TEXT = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16)


def open_images():
    images = [Image.open(p) for p in IMAGES]
    assert images[0].mode == "RGBA", images[0].mode
    return images


def keys(folder):
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        return sorted(f.keys())


def save(folder, model, processor):
    """The defaults, nothing else; checks the files processor.save_pretrained writes."""
    fresh_dir(folder)
    model.config.architectures = [type(model).__name__]
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    files = set(os.listdir(folder))
    if hasattr(processor, "tokenizer"):
        assert "preprocessor_config.json" not in files, files
        with open(os.path.join(folder, "processor_config.json")) as f:
            nested = json.load(f)["image_processor"]
        assert nested == processor.image_processor.to_dict() | nested, nested
        assert {"tokenizer.json", "tokenizer_config.json"} <= files, files
    else:
        assert "preprocessor_config.json" in files and "processor_config.json" not in files, files
    # What transformers reads back is the processor that made the expected outputs.
    loaded = AutoImageProcessor.from_pretrained(folder)
    assert loaded.to_dict() == (getattr(processor, "image_processor", processor)).to_dict()


def normalized(x):
    x = getattr(x, "pooler_output", x)  # 5.x get_*_features may return an output object
    return x / x.norm(dim=-1, keepdim=True)


def contrastive(name, model, processor, padding):
    folder = os.path.join(OUT, name)
    save(folder, model, processor)
    assert all(not k.startswith("model.") for k in keys(folder))
    text = processor(text=TEXTS, return_tensors="pt", **padding)
    # SigLIP was trained without a text mask (its tokenizer returns none; this one does).
    mask = text["attention_mask"] if name == "clip" else None
    pixels = processor(images=open_images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=text["input_ids"], attention_mask=mask, pixel_values=pixels)
        exp = {
            "input_ids": text["input_ids"],
            "attention_mask": text["attention_mask"],
            "pixel_values": pixels,
            "text_embeds": normalized(model.get_text_features(
                input_ids=text["input_ids"], attention_mask=mask)),
            "image_embeds": normalized(model.get_image_features(pixel_values=pixels)),
            "probs": (out.logits_per_image.softmax(-1) if name == "clip"
                      else torch.sigmoid(out.logits_per_image)),
        }
    save_expected(folder, exp)
    return folder


def gen_clip(tok):
    torch.manual_seed(1)
    cfg = CLIPConfig(
        text_config=dict(TEXT, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=VISION, projection_dim=8)
    model = gen_vision.randomize(CLIPModel._from_config(cfg, attn_implementation="eager"), 1).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 30},
                                            crop_size={"height": 30, "width": 30})
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tok)
    return contrastive("clip", model, processor, {"padding": True})


def gen_siglip(tok):
    torch.manual_seed(2)
    cfg = SiglipConfig(
        text_config=dict(TEXT, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id),
        vision_config=VISION)
    model = gen_vision.randomize(SiglipModel._from_config(cfg, attn_implementation="eager"), 2).eval()
    image_processor = SiglipImageProcessorPil(size={"height": 30, "width": 30})
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tok)
    return contrastive("siglip", model, processor,
                       {"padding": "max_length", "max_length": TEXT["max_position_embeddings"]})


def gen_vit(name, cls, seed):
    torch.manual_seed(seed)
    cfg = ViTConfig(**VISION, num_labels=3, id2label={0: "cat", 1: "logo", 2: "moon"},
                    label2id={"cat": 0, "logo": 1, "moon": 2})
    model = gen_vision.randomize(cls._from_config(cfg, attn_implementation="eager"), seed).eval()
    processor = ViTImageProcessorPil(size={"height": 30, "width": 30})
    folder = os.path.join(OUT, name)
    save(folder, model, processor)
    assert any(k.startswith(("encoder.layer.0.attention.attention.query",
                             "vit.encoder.layer.0.attention.attention.query")) for k in keys(folder))
    images = open_images()
    try:  # ViTImageProcessor has no do_convert_rgb: an RGBA image is refused
        processor(images=images[0])
        raise AssertionError("ViTImageProcessor took an RGBA image")
    except ValueError as e:
        assert "mean must have 4 elements" in str(e), e
    pixels = processor(images=[im.convert("RGB") for im in images],
                       return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(pixel_values=pixels)
    exp = {"pixel_values": pixels}
    if cls is ViTForImageClassification:
        exp["logits"] = out.logits
    else:
        exp["last_hidden_state"] = out.last_hidden_state
        exp["pooler_output"] = out.pooler_output
    save_expected(folder, exp)
    return folder


def vlm_config(cls, text_type, **extra):
    text = gen_vlm.text_config(text_type, hidden_size=32, intermediate_size=48,
                               num_hidden_layers=1)
    vision = dict(VISION, model_type="clip_vision_model", hidden_act="quick_gelu")
    return cls(text_config=text, vision_config=vision, image_token_index=gen_vlm.IMAGE_TOKEN,
               vision_feature_select_strategy="default", **extra)


def vlm(name, model, processor, tied):
    folder = os.path.join(OUT, name)
    save(folder, model, processor)
    names = keys(folder)
    assert "vision_tower.embeddings.patch_embedding.weight" in names, names
    assert not any(k.startswith(("model.", "vision_tower.vision_model.")) for k in names), names
    assert ("language_model.lm_head.weight" in names) != tied, names
    inputs = processor(text=PROMPT, images=open_images()[0], return_tensors="pt")
    n = (inputs["input_ids"] == gen_vlm.IMAGE_TOKEN).sum().item()
    with torch.no_grad():
        logits = model(**inputs).logits
    exp = dict(inputs)
    exp["logits"] = logits
    save_expected(folder, exp)
    print(f"  {name}: {n} image tokens, pixel_values {list(inputs['pixel_values'].shape)}")
    return folder


def processor_kwargs(tok):
    return dict(tokenizer=tok, patch_size=VISION["patch_size"], image_token="<image>",
                vision_feature_select_strategy="default", num_additional_image_tokens=1)


def gen_llava(tok):
    torch.manual_seed(3)
    cfg = vlm_config(LlavaConfig, "llama", vision_feature_layer=-2, image_seq_length=25)
    model = LlavaForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    gen_vlm.randomize(model, 3).eval()
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": 30},
                                            crop_size={"height": 30, "width": 30})
    processor = LlavaProcessor(image_processor=image_processor, **processor_kwargs(tok))
    return vlm("llava", model, processor, tied=False)


def gen_llava_next(tok):
    torch.manual_seed(4)
    pinpoints = [[30, 60], [60, 30], [60, 60]]
    cfg = vlm_config(LlavaNextConfig, "mistral", vision_feature_layer=[-2, -1],
                     image_grid_pinpoints=pinpoints, tie_word_embeddings=True)
    model = LlavaNextForConditionalGeneration._from_config(cfg, attn_implementation="eager")
    gen_vlm.randomize(model, 4).eval()
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30},
        image_grid_pinpoints=pinpoints)
    processor = LlavaNextProcessor(image_processor=image_processor, **processor_kwargs(tok))
    return vlm("llava-next", model, processor, tied=True)


def sanity(folder, cls, run):
    """transformers reads the folder back (its own conversion) to the same outputs."""
    model = cls.from_pretrained(folder, attn_implementation="eager").eval()
    exp = {}
    with safe_open(os.path.join(folder, "expected.safetensors"), "pt") as f:
        for k in f.keys():
            exp[k] = f.get_tensor(k)
    AutoProcessor.from_pretrained(folder) if cls not in (ViTForImageClassification, ViTModel) else None
    with torch.no_grad():
        got, key = run(model, exp)
    d = (got - exp[key]).abs().max().item()
    assert d == 0.0, (folder, key, d)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert size < 300_000, (folder, size)
    print(f"  {os.path.relpath(folder, ROOT)}: from_pretrained gives identical {key} "
          f"({size / 1024:.0f} KiB: {', '.join(sorted(os.listdir(folder)))})")


def check_diffusers():
    """diffusers 0.42.1 save_pretrained of the sd-tiny pipeline against the fixture."""
    from diffusers import StableDiffusionPipeline

    fixture = os.path.join(gen_vision.FIX, "sd-tiny")
    pipe = StableDiffusionPipeline.from_pretrained(fixture, safety_checker=None,
                                                   requires_safety_checker=False)
    with tempfile.TemporaryDirectory() as tmp:
        pipe.save_pretrained(tmp)
        for part in ("unet", "vae"):
            name = "diffusion_pytorch_model.safetensors"
            with safe_open(os.path.join(tmp, part, name), "pt") as a, \
                    safe_open(os.path.join(fixture, part, name), "pt") as b:
                assert sorted(a.keys()) == sorted(b.keys()), part
                assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys()), part
        # transformers saves a model loaded from published names under those names again.
        saved_te = keys(os.path.join(tmp, "text_encoder"))
        assert saved_te == keys(os.path.join(fixture, "text_encoder")), saved_te[:3]
        # Its tokenizer/ is the tokenizer.json of saved/clip (the same vocabulary, re-saved).
        with open(os.path.join(tmp, "tokenizer", "tokenizer.json"), "rb") as a, \
                open(os.path.join(OUT, "clip", "tokenizer.json"), "rb") as b:
            assert a.read() == b.read()
        print("  diffusers: save_pretrained of sd-tiny writes the same unet/, vae/ and "
              f"text_encoder/ tensors; tokenizer/ = "
              f"{sorted(os.listdir(os.path.join(tmp, 'tokenizer')))} "
              f"(sd-tiny: {sorted(os.listdir(os.path.join(fixture, 'tokenizer')))})")


def main():
    print(f"torch {torch.__version__}, writing to {OUT}")
    clip_tok = AutoTokenizer.from_pretrained(CLIP_TOKENIZER)
    llava_tok = AutoTokenizer.from_pretrained(LLAVA_TOKENIZER)
    folders = {
        "clip": gen_clip(clip_tok),
        "siglip": gen_siglip(clip_tok),
        "vit": gen_vit("vit", ViTForImageClassification, 5),
        "vit-model": gen_vit("vit-model", ViTModel, 6),
        "llava": gen_llava(llava_tok),
        "llava-next": gen_llava_next(llava_tok),
    }
    print("sanity checks:")
    sanity(folders["clip"], CLIPModel,
           lambda m, e: (normalized(m.get_image_features(pixel_values=e["pixel_values"])),
                         "image_embeds"))
    sanity(folders["siglip"], SiglipModel,
           lambda m, e: (normalized(m.get_text_features(input_ids=e["input_ids"])), "text_embeds"))
    sanity(folders["vit"], ViTForImageClassification,
           lambda m, e: (m(pixel_values=e["pixel_values"]).logits, "logits"))
    sanity(folders["vit-model"], ViTModel,
           lambda m, e: (m(pixel_values=e["pixel_values"]).pooler_output, "pooler_output"))
    sanity(folders["llava"], LlavaForConditionalGeneration,
           lambda m, e: (m(input_ids=e["input_ids"], pixel_values=e["pixel_values"]).logits,
                         "logits"))
    sanity(folders["llava-next"], LlavaNextForConditionalGeneration,
           lambda m, e: (m(input_ids=e["input_ids"], pixel_values=e["pixel_values"],
                           image_sizes=e["image_sizes"]).logits, "logits"))
    check_diffusers()
    print("done")


if __name__ == "__main__":
    sys.exit(main())
