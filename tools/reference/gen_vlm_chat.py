#!/usr/bin/env python3
"""Reference data for mm-vlm's processor side: anyres arithmetic, chat templates, prompt token
ids and LLaVA / LLaVA-NeXT pixel values (transformers 5.24, PIL backends).

Writes (deterministically; re-running rewrites identical files):

- `tests/fixtures/llava-tokenizer/`: a small byte-level BPE tokenizer trained with the
  `tokenizers` library on a few sentences (`<s>`, `</s>`, `<unk>`, `<pad>` and `<image>` as
  added special tokens, a `<s> $A` post-processor like Llama's `add_bos_token`), its
  `tokenizer_config.json` with the llava-1.5-hf chat template, and `cases.json`:
  - `anyres`: `select_best_resolution`, `get_anyres_image_grid_shape`,
    `image_size_to_num_patches`, the `unpad_image` shape and `LlavaNextProcessor`'s token
    counts for many image sizes and pinpoint lists;
  - `templates` / `chats`: template texts and the strings `apply_chat_template` renders;
  - `prompts`: token ids (and attention masks) of `LlavaProcessor` / `LlavaNextProcessor`
    calls on prompts with `<image>` markers and real photos.
- `tests/fixtures/llava-processor/`: `{llava15,llava15_pad,next}_preprocessor_config.json`
  (downscaled sizes so that whole tensors stay small) and `expected.safetensors` with the
  pixel values of the PIL processors (`LlavaImageProcessorPil`, `LlavaNextImageProcessorPil`)
  for photos of `$MM_ASSETS/images` (`<config>.<stem>`, NeXT also `next.<stem>.image_size`),
  plus `stats.json`: sums / sums of squares / a few values of the full-size (336) published
  configurations.

The chat templates are written from memory of the published `chat_template` of
llava-hf/llava-1.5-7b-hf and llava-hf/llava-v1.6-mistral-7b-hf (as faithfully as possible, not
downloaded: no network here; the JSON escape `<\/s>` of the Mistral one is written decoded,
`</s>`), a Vicuna-style variant (system text first, then `USER:`/`ASSISTANT:` turns; a
reconstruction, not a verbatim copy of llava-v1.6-vicuna-7b-hf's),
plus Mistral-Instruct's text template and a synthetic multi-line template that exercises
`trim_blocks` / `lstrip_blocks`, loop controls and string methods.

Usage (from anywhere): python tools/reference/gen_vlm_chat.py [--assets DIR]
"""

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, decoders, processors, trainers
from transformers import LlavaProcessor, LlavaNextProcessor, PreTrainedTokenizerFast
from transformers import LlavaImageProcessorPil, LlavaNextImageProcessorPil
from transformers.image_processing_utils import select_best_resolution
from transformers.models.llava_next.modeling_llava_next import (
    get_anyres_image_grid_shape,
    image_size_to_num_patches,
    unpad_image,
)

REPO = Path(__file__).resolve().parents[2]
TOK_OUT = REPO / "tests" / "fixtures" / "llava-tokenizer"
TINY_TOK_OUT = TOK_OUT / "tiny"
PROC_OUT = REPO / "tests" / "fixtures" / "llava-processor"

LLAVA15_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': '}}{% endif %}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% if message['role'] != 'assistant' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

VICUNA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ message['content'][0]['text'] + ' ' }}{% else %}{{ message['role'].upper() + ': '}}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' '}}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

MISTRAL_NEXT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<<SYS>>\n' + message['content'][0]['text'] + '\n<</SYS>>\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' }}"
    "{# Render all images first #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{# Render all text next #}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{{' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'][0]['text'] + '</s> '}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

MISTRAL_INSTRUCT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
    "{% endif %}{% endfor %}"
)

# Synthetic (not a published template): trim_blocks / lstrip_blocks, `-` whitespace control,
# loop.last, `continue`, `break`, namespace, string methods, filters, tojson, and `tools` /
# `documents`, which transformers passes as None.
MULTILINE_TEMPLATE = """{% set ns = namespace(turns=0) %}
{% if tools is not none or documents is not none or tools is undefined %}
[tools: {{ tools }}]
{% endif %}
{% if messages[0]['role'] == 'system' %}
    {% set system_message = messages[0]['content'] | trim %}
{% else %}
    {% set system_message = "A chat between a curious user and an artificial intelligence assistant." %}
{% endif %}
{{ system_message }}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% continue %}
    {% endif %}
    {% if message['content'] == 'STOP' %}
        {% break %}
    {% endif %}
    {% set ns.turns = ns.turns + 1 %}
    {% if message['role'] == 'user' %}
 USER: {{ message['content'].strip() | replace('  ', ' ') }}
    {%- elif message['role'] == 'assistant' %}
 ASSISTANT: {{ message['content'].strip() + eos_token }}
    {%- endif %}
    {% if loop.last %}
[{{ ns.turns }} turns, last {{ message['role'] | upper }}, {{ message | length }} keys, {{ {'n': ns.turns} | tojson }}]
    {% endif %}
{% endfor %}
{%- if add_generation_prompt -%}
    {{ ' ASSISTANT:' }}
{%- endif %}
"""

TEMPLATES = {
    "llava15": LLAVA15_TEMPLATE,
    "bos_llava15": "{{ bos_token }}" + LLAVA15_TEMPLATE,
    "vicuna": VICUNA_TEMPLATE,
    "mistral_next": MISTRAL_NEXT_TEMPLATE,
    "mistral_instruct": MISTRAL_INSTRUCT_TEMPLATE,
    "multiline": MULTILINE_TEMPLATE,
}

CORPUS = [
    "USER: What is shown in this image? ASSISTANT: A cat sitting on a sofa.",
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "[INST] Describe the picture in detail. [/INST] The photo shows a rocket on a launch pad.",
    "Compare the two images. Which one is brighter? The first one has more light.",
    "An astronaut, a coffee cup, a camera man and a cat: four photos in one folder.",
    "You are a helpful assistant. Answer briefly.",
]


def parts(*items):
    """Content parts: strings become text parts, None an image."""
    return [{"type": "image"} if it is None else {"type": "text", "text": it} for it in items]


PARTS_CHATS = {
    "single": [{"role": "user", "content": parts(None, "What is shown in this image?")}],
    "text_only": [{"role": "user", "content": parts("Hello there!")}],
    "multi_turn": [
        {"role": "user", "content": parts(None, "What is shown in this image?")},
        {"role": "assistant", "content": parts("A cat sitting on a sofa.")},
        {"role": "user", "content": parts("What colour is it?")},
    ],
    "multi_image": [
        {"role": "user", "content": parts(None, None, "Compare the two images.")},
    ],
    "interleaved": [
        {"role": "user", "content": parts("First:", None, "second:", None)},
    ],
    "system": [
        {"role": "system", "content": parts("You are a helpful assistant.")},
        {"role": "user", "content": parts(None, "Describe the picture in detail.")},
    ],
}

STRING_CHATS = {
    "single": [{"role": "user", "content": "What is shown in this image?"}],
    "multi_turn": [
        {"role": "user", "content": "Describe the picture."},
        {"role": "assistant", "content": "  A rocket on a launch pad. "},
        {"role": "user", "content": "Is it  day or night?"},
    ],
    "system": [
        {"role": "system", "content": "  You are a helpful assistant.  "},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "STOP"},
        {"role": "user", "content": "never rendered"},
    ],
}

# (template, chat set) pairs rendered with and without add_generation_prompt.
RENDER = [
    ("llava15", PARTS_CHATS),
    ("vicuna", PARTS_CHATS),
    ("mistral_next", PARTS_CHATS),
    ("mistral_instruct", {k: v for k, v in STRING_CHATS.items() if k != "system"}),
    ("multiline", STRING_CHATS),
]

PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
PINPOINTS_34B = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
# A larger anyres grid (llava-onevision-like, 384 tiles) to exercise other ratios.
PINPOINTS_WIDE = [[384, 384], [384, 768], [768, 384], [768, 768], [384, 1152], [1152, 384],
                  [1152, 768], [768, 1152], [1152, 1152]]


def build_tokenizer(vocab_size=400, image_last=False):
    """The byte-level BPE; with `image_last`, `<image>` is added after training (the id right
    after the trained vocabulary, like llava-hf's 32000)."""
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<unk>", "<s>", "</s>", "<pad>"] + ([] if image_last else ["<image>"])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if image_last:
        tok.add_special_tokens(["<image>"])
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    return tok


def write_tokenizer(out=TOK_OUT, tok=None, padding_side="left"):
    out.mkdir(parents=True, exist_ok=True)
    tok = tok or build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "image_token": "<image>",
        "model_max_length": 4096,
        "padding_side": padding_side,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": LLAVA15_TEMPLATE,
    }
    with open(out / "tokenizer_config.json", "w") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    return PreTrainedTokenizerFast.from_pretrained(str(out))


def end_to_end(images_dir):
    """Processor + model: mm-vlm's `llava-tiny` and `llava-next-tiny` models (written by
    gen_vlm.py) with a tokenizer that fits them (299 trained tokens, `<image>` = 299 =
    `image_token_index`): the ids of a chat prompt with one photo, and 8 greedily generated
    tokens."""
    import shutil
    import tempfile

    import torch
    from transformers import (
        CLIPImageProcessorPil,
        LlavaForConditionalGeneration,
        LlavaNextForConditionalGeneration,
    )

    tok = build_tokenizer(vocab_size=299, image_last=True)
    assert tok.token_to_id("<image>") == 299, tok.get_vocab_size()
    tokenizer = write_tokenizer(TINY_TOK_OUT, tok, padding_side="right")
    runs = [
        ("llava-tiny", "llava15", LlavaForConditionalGeneration, CLIPImageProcessorPil,
         LlavaProcessor, "chelsea.png"),
        ("llava-next-tiny", "mistral_next", LlavaNextForConditionalGeneration,
         LlavaNextImageProcessorPil, LlavaNextProcessor, "coffee.png"),
    ]
    cases = []
    for folder, template, model_cls, image_cls, processor_cls, photo in runs:
        with tempfile.TemporaryDirectory() as tmp:
            for name in ["config.json", "model.safetensors", "generation_config.json",
                         "preprocessor_config.json"]:
                shutil.copy(REPO / "tests" / "fixtures" / folder / name, Path(tmp) / name)
            model = model_cls.from_pretrained(tmp).eval()
            processor = processor_cls(
                image_processor=image_cls.from_pretrained(tmp),
                tokenizer=tokenizer,
                patch_size=6,
                vision_feature_select_strategy="default",
                num_additional_image_tokens=1,
                chat_template=TEMPLATES[template],
            )
        messages = [{"role": "user", "content": [{"type": "image", "image": load_photo(images_dir, photo)},
                                                  {"type": "text", "text": "What is shown?"}]}]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
        n = inputs["input_ids"].shape[1]
        cases.append({
            "model": folder,
            "template": template,
            "image": photo,
            "text": "What is shown?",
            "input_ids": inputs["input_ids"][0].tolist(),
            "new_tokens": out[0, n:].tolist(),
        })
    return cases


def anyres_table():
    sizes = [
        (1, 1), (2, 3), (10, 1000), (1000, 10), (100, 1000), (300, 451), (427, 640), (512, 512),
        (762, 2162), (336, 336), (335, 337), (337, 335), (672, 1344), (1008, 336), (480, 640),
        (640, 480), (720, 1280), (1080, 1920), (1920, 1080), (333, 999), (999, 333), (400, 401),
        (401, 400), (17, 4000), (4000, 17), (168, 336), (336, 168), (3000, 2000), (224, 225),
        (700, 1000), (555, 777), (1234, 987), (50, 75), (75, 50), (299, 300), (500, 333),
    ]
    rows = []
    for name, pinpoints, tile, patch, extra in [
        ("llava-v1.6", PINPOINTS, 336, 14, 1),
        ("llava-v1.6-34b", PINPOINTS_34B, 336, 14, 0),
        ("wide-384", PINPOINTS_WIDE, 384, 16, 0),
        ("tiny-32", [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]], 32, 8, 1),
    ]:
        proc = LlavaNextProcessor.__new__(LlavaNextProcessor)
        proc.image_processor = type("IP", (), {"image_grid_pinpoints": pinpoints})()
        proc.patch_size = patch
        proc.num_additional_image_tokens = extra
        for h, w in sizes:
            best = select_best_resolution((h, w), pinpoints)
            grid = get_anyres_image_grid_shape((h, w), pinpoints, tile)
            n_patches = image_size_to_num_patches((h, w), pinpoints, tile)
            side = tile // patch
            import torch

            feats = torch.zeros(1, grid[0] * side, grid[1] * side)
            unpadded = tuple(unpad_image(feats, (h, w)).shape[1:])
            n_tokens = proc._get_number_of_features(h, w, tile, tile)
            rows.append({
                "pinpoints_name": name,
                "pinpoints": pinpoints,
                "tile": tile,
                "patch_size": patch,
                "num_additional_image_tokens": extra,
                "image_size": [h, w],
                "best_resolution": list(best),
                "grid_shape": list(grid),
                "num_patches": n_patches,
                "unpadded": list(unpadded),
                "num_features": n_tokens,
            })
    return rows


def render_cases(tokenizer):
    cases = []
    for tname, chats in RENDER:
        for cname, messages in chats.items():
            for agp in (False, True):
                out = tokenizer.apply_chat_template(
                    messages, chat_template=TEMPLATES[tname], add_generation_prompt=agp, tokenize=False
                )
                ids = tokenizer(out, add_special_tokens=False)["input_ids"]
                cases.append({
                    "template": tname,
                    "chat": cname,
                    "messages": messages,
                    "add_generation_prompt": agp,
                    "rendered": out,
                    "ids_no_special": ids,
                })
    # A template that raises.
    bad = [{"role": "tool", "content": parts("x")}]
    try:
        tokenizer.apply_chat_template(bad, chat_template=MISTRAL_NEXT_TEMPLATE, tokenize=False)
        raise AssertionError("expected raise_exception")
    except Exception as e:  # jinja2 TemplateError
        error = str(e)
    return cases, {"template": "mistral_next", "messages": bad, "error": error}


def load_photo(images_dir, name):
    # Raw PIL image: the processors convert to RGB themselves (alpha composited on white).
    img = Image.open(images_dir / name)
    img.load()
    return img


def prompt_cases(tokenizer, images_dir):
    cases = []
    full = image_processors(336, PINPOINTS)
    llava = LlavaProcessor(full["llava15"], tokenizer, patch_size=14,
                           vision_feature_select_strategy="default", num_additional_image_tokens=1)
    small = LlavaProcessor(image_processors(32, PINPOINTS)["llava15"], tokenizer, patch_size=8,
                           vision_feature_select_strategy="full", num_additional_image_tokens=0)
    nxt = LlavaNextProcessor(full["next"], tokenizer, patch_size=14,
                             vision_feature_select_strategy="default", num_additional_image_tokens=1)
    runs = [
        ("llava15", llava, "USER: <image>\nWhat is shown in this image? ASSISTANT:", ["chelsea.png"]),
        ("llava15", llava, "USER: <image>\n<image>\nCompare the two images. ASSISTANT:",
         ["rocket.jpg", "coffee.png"]),
        ("llava15", llava, "A chat without images.", []),
        ("llava15_small", small, "<image> first, then <image>!", ["camera.png", "CLIP.png"]),
        ("next", nxt, "[INST] <image>\nDescribe the picture in detail. [/INST]", ["chelsea.png"]),
        ("next", nxt, "[INST] <image>\n<image>\nWhich is wider? [/INST]", ["CLIP.png", "astronaut.png"]),
        ("next", nxt, "<image>", ["rocket.jpg"]),
    ]
    for name, proc, text, files in runs:
        images = [load_photo(images_dir, f) for f in files] or None
        out = proc(text=text, images=images, return_tensors="np")
        case = {
            "processor": name,
            "text": text,
            "images": files,
            "input_ids": out["input_ids"][0].tolist(),
            "attention_mask": out["attention_mask"][0].tolist(),
        }
        if "pixel_values" in out:
            case["pixel_values_shape"] = list(out["pixel_values"].shape)
        if "image_sizes" in out:
            case["image_sizes"] = out["image_sizes"].tolist()
        cases.append(case)
    # processor.apply_chat_template(tokenize=True): renders, then tokenizes with special tokens
    # unless the rendered prompt already starts with the BOS token.
    for tname, source in [("llava15", LLAVA15_TEMPLATE), ("bos_llava15", "{{ bos_token }}" + LLAVA15_TEMPLATE)]:
        proc = LlavaProcessor(full["llava15"], tokenizer, patch_size=14,
                              vision_feature_select_strategy="default",
                              num_additional_image_tokens=1, chat_template=source)
        files = ["chelsea.png", "coffee.png"]
        messages = PARTS_CHATS["multi_image"]
        with_images = [
            {**m, "content": [dict(p) for p in m["content"]]} for m in messages
        ]
        photos = iter(files)
        for m in with_images:
            for p in m["content"]:
                if p["type"] == "image":
                    p["image"] = load_photo(images_dir, next(photos))
        out = proc.apply_chat_template(
            with_images, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="np"
        )
        cases.append({
            "processor": "llava15",
            "chat_template": tname,
            "messages": messages,
            "text": None,
            "images": files,
            "input_ids": out["input_ids"][0].tolist(),
            "attention_mask": out["attention_mask"][0].tolist(),
            "pixel_values_shape": list(out["pixel_values"].shape),
        })
    # Batch of two prompts, left padding as the tokenizer config says.
    out = llava(text=["<image> short", "USER: <image>\na longer prompt here ASSISTANT:"],
                images=[load_photo(images_dir, "chelsea.png"), load_photo(images_dir, "camera.png")],
                padding=True, return_tensors="np")
    cases.append({
        "processor": "llava15",
        "text": ["<image> short", "USER: <image>\na longer prompt here ASSISTANT:"],
        "images": ["chelsea.png", "camera.png"],
        "input_ids": out["input_ids"].tolist(),
        "attention_mask": out["attention_mask"].tolist(),
        "pixel_values_shape": list(out["pixel_values"].shape),
    })
    return cases


IMAGES = ["astronaut.png", "chelsea.png", "coffee.png", "camera.png", "rocket.jpg", "CLIP.png"]


def image_processors(side, pinpoints):
    """LLaVA 1.5 without / with pad-to-square and LLaVA-NeXT, at tiles of `side` pixels."""
    common = {"size": {"shortest_edge": side}, "crop_size": {"height": side, "width": side}}
    return {
        "llava15": LlavaImageProcessorPil(**common),
        "llava15_pad": LlavaImageProcessorPil(**common, do_pad=True),
        "next": LlavaNextImageProcessorPil(**common, image_grid_pinpoints=pinpoints),
    }


def pixel_fixtures(images_dir):
    PROC_OUT.mkdir(parents=True, exist_ok=True)
    procs = image_processors(32, [[32, 64], [64, 32], [64, 64], [96, 32], [32, 96]])
    tensors = {}
    for name, proc in procs.items():
        proc.to_json_file(str(PROC_OUT / f"{name}_preprocessor_config.json"))
        for f in IMAGES:
            out = proc(images=load_photo(images_dir, f), return_tensors="np")
            pv = out["pixel_values"][0]
            assert pv.dtype == np.float32
            tensors[f"{name}.{Path(f).stem}"] = np.ascontiguousarray(pv)
            if "image_sizes" in out:
                tensors[f"{name}.{Path(f).stem}.image_size"] = np.asarray(out["image_sizes"][0], dtype=np.int64)
    save_file(tensors, str(PROC_OUT / "expected.safetensors"))

    # Full-size published configurations: statistics only.
    full = image_processors(336, PINPOINTS)
    stats = {}
    for name, proc in full.items():
        proc.to_json_file(str(PROC_OUT / f"{name}_full_preprocessor_config.json"))
        for f in IMAGES:
            out = proc(images=load_photo(images_dir, f), return_tensors="np")
            pv = out["pixel_values"][0].astype(np.float64)
            flat = pv.reshape(-1)
            idx = np.linspace(0, flat.size - 1, 64).astype(np.int64)
            stats[f"{name}.{Path(f).stem}"] = {
                "shape": list(pv.shape),
                "sum": float(pv.sum()),
                "sum_sq": float((pv * pv).sum()),
                "patch_sums": [float(p.sum()) for p in pv.reshape(pv.shape[0], -1)] if pv.ndim == 4 else None,
                "sample_index": idx.tolist(),
                "sample": [float(v) for v in flat[idx]],
                "image_size": out["image_sizes"][0].tolist() if "image_sizes" in out else None,
            }
    with open(PROC_OUT / "stats.json", "w") as fh:
        json.dump(stats, fh, indent=1)
        fh.write("\n")


def main():
    ap = argparse.ArgumentParser()
    default_assets = os.environ.get("MM_ASSETS", str(REPO.parent / "shared" / "assets"))
    ap.add_argument("--assets", default=default_assets)
    args = ap.parse_args()
    images_dir = Path(args.assets) / "images"

    tokenizer = write_tokenizer()
    chats, error_case = render_cases(tokenizer)
    cases = {
        "templates": TEMPLATES,
        "special_tokens": {"bos_token": "<s>", "eos_token": "</s>"},
        "anyres": anyres_table(),
        "chats": chats,
        "template_error": error_case,
        "prompts": prompt_cases(tokenizer, images_dir),
        "end_to_end": end_to_end(images_dir),
    }
    with open(TOK_OUT / "cases.json", "w") as f:
        json.dump(cases, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    pixel_fixtures(images_dir)
    for d in (TOK_OUT, PROC_OUT):
        total = sum(p.stat().st_size for p in d.iterdir())
        print(f"{d.relative_to(REPO)}: {total / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
