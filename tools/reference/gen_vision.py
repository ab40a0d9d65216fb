#!/usr/bin/env python3
"""Reference fixture generator for the vision / vision-language models of `mm`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/clip-tiny-quickgelu/   CLIPModel, quick_gelu, legacy eos_token_id=2 (argmax pooling)
  tests/fixtures/clip-tiny-gelu/        CLIPModel, gelu, new-style eos (first-eos pooling)
  tests/fixtures/siglip-tiny/           SiglipModel with attention-pooling vision head
  tests/fixtures/vit-tiny/              ViTForImageClassification (5 labels)
  tests/fixtures/vit-tiny-model/        ViTModel (with pooler), keys without the `vit.` prefix
  tests/fixtures/full/<name>/           config.json + tensors.json (names & shapes only)

Each tiny folder holds `config.json`, `model.safetensors` (PUBLISHED checkpoint tensor
names, see `to_published`) and `expected.safetensors` (inputs and reference outputs).

transformers 5.x renamed the ViT modules (`encoder.layer.N.attention.attention.query` ->
`layers.N.attention.q_proj`, ...). Hub checkpoints still use the old names, so the
state dict is mapped back to them before saving. CLIP / SigLIP names are unchanged.

Usage:  python tools/reference/gen_vision.py
"""

import json
import math
import os
import re
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPModel,
    SiglipConfig,
    SiglipModel,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()
hf_logging.disable_progress_bar()
torch.set_default_dtype(torch.float32)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

SEQ_LEN = 12
NAME_DIFFS = {}  # model name -> list of (transformers name, published name) that differ


# --------------------------------------------------------------------------------------
# Name mapping transformers-5.24 state_dict <-> published checkpoint names
# --------------------------------------------------------------------------------------

_VIT_LAYER_SUB = [
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
    ("layernorm_before.", "layernorm_before."),
    ("layernorm_after.", "layernorm_after."),
]
_VIT_LAYER_RE = re.compile(r"^((?:vit\.)?)layers\.(\d+)\.(.*)$")


def to_published(kind, name):
    """Map a transformers-5.24 state_dict key to the key used by published hub files."""
    if kind != "vit":
        return name  # CLIP and SigLIP: identical
    m = _VIT_LAYER_RE.match(name)
    if not m:
        return name  # embeddings.*, layernorm.*, pooler.dense.*, classifier.*
    prefix, idx, rest = m.groups()
    for new, old in _VIT_LAYER_SUB:
        if rest.startswith(new):
            return f"{prefix}encoder.layer.{idx}.{old}{rest[len(new):]}"
    raise KeyError(f"unmapped ViT key {name}")


def persistent_state_dict(model):
    sd = model.state_dict()
    return {k: v for k, v in sd.items() if not k.endswith("position_ids")}


def published_state_dict(kind, model):
    out = {}
    diffs = []
    for k, v in persistent_state_dict(model).items():
        p = to_published(kind, k)
        if p != k:
            diffs.append((k, p))
        assert p not in out, p
        out[p] = v.detach().to(torch.float32).contiguous().clone()
    return out, diffs


# --------------------------------------------------------------------------------------
# Randomisation: every parameter gets a non-trivial value
# --------------------------------------------------------------------------------------


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    ln_params = set()
    for mod in model.modules():
        if isinstance(mod, torch.nn.LayerNorm):
            ln_params.add(id(mod.weight))
            ln_params.add(id(mod.bias))
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            leaf = name.rsplit(".", 1)[-1]
            if id(p) in ln_params:
                if leaf == "weight":
                    p.copy_(1.0 + 0.2 * torch.randn(shape, generator=g))
                else:
                    p.copy_(0.1 * torch.randn(shape, generator=g))
            elif leaf == "logit_scale":
                p.copy_(torch.full(shape, math.log(10.0)) + 0.3 * torch.randn(shape, generator=g))
            elif leaf == "logit_bias":
                p.copy_(torch.full(shape, -2.0) + 0.5 * torch.randn(shape, generator=g))
            elif ("embedding" in name and "patch" not in name) or leaf in ("probe", "cls_token", "class_embedding"):
                p.copy_(0.5 * torch.randn(shape, generator=g))
            elif "bias" in leaf:
                p.copy_(0.1 * torch.randn(shape, generator=g))
            elif p.dim() >= 2:
                fan_in = shape[1:].numel()
                p.copy_(torch.randn(shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(0.5 * torch.randn(shape, generator=g))
    return model


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------


def pad(seqs, pad_id):
    ids = torch.full((len(seqs), SEQ_LEN), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), SEQ_LEN), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, : len(s)] = 1
    return ids, mask


def pixel_values(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 32, 32, generator=g)


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def save_expected(folder, tensors):
    out = {}
    for k, v in tensors.items():
        v = v.detach()
        if v.dtype.is_floating_point:
            v = v.to(torch.float32)
        if v.dim() == 0:
            v = v.reshape(1)
        out[k] = v.contiguous().clone()
    path = os.path.join(folder, "expected.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    return out


def save_model(folder, kind, name, model):
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    sd, diffs = published_state_dict(kind, model)
    NAME_DIFFS[name] = diffs
    path = os.path.join(folder, "model.safetensors")
    save_file(sd, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)


def add_hidden(out, prefix, hidden_states):
    for i, h in enumerate(hidden_states):
        out[f"{prefix}hidden_states.{i}"] = h


# --------------------------------------------------------------------------------------
# CLIP
# --------------------------------------------------------------------------------------


def clip_config(hidden_act, eos, bos, pad_id, projection_dim):
    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=16,
        hidden_act=hidden_act,
        projection_dim=projection_dim,
        eos_token_id=eos,
        bos_token_id=bos,
        pad_token_id=pad_id,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
        hidden_act=hidden_act,
        projection_dim=projection_dim,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)


def gen_clip(name, hidden_act, eos, bos, pad_id, projection_dim, texts, seed):
    torch.manual_seed(seed)
    cfg = clip_config(hidden_act, eos, bos, pad_id, projection_dim)
    model = CLIPModel._from_config(cfg, attn_implementation="eager")
    randomize(model, seed).eval()
    ids, mask = pad(texts, pad_id)
    px = pixel_values(seed + 1)
    out = {"input_ids": ids, "attention_mask": mask, "pixel_values": px}
    with torch.no_grad():
        t = model.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        v = model.vision_model(pixel_values=px, output_hidden_states=True)
        out["text.last_hidden_state"] = t.last_hidden_state
        add_hidden(out, "text.", t.hidden_states)
        out["text.pooler_output"] = t.pooler_output
        out["vision.last_hidden_state"] = v.last_hidden_state
        add_hidden(out, "vision.", v.hidden_states)
        out["vision.pooler_output"] = v.pooler_output
        out["text_embeds_raw"] = model.text_projection(t.pooler_output)
        out["image_embeds_raw"] = model.visual_projection(v.pooler_output)
        full = model(input_ids=ids, attention_mask=mask, pixel_values=px, return_loss=True)
        out["text_embeds"] = full.text_embeds
        out["image_embeds"] = full.image_embeds
        out["logits_per_image"] = full.logits_per_image
        out["logits_per_text"] = full.logits_per_text
        out["loss"] = full.loss
        # cross-checks
        assert torch.allclose(full.text_embeds, torch.nn.functional.normalize(out["text_embeds_raw"], dim=-1), atol=1e-6)
        assert len(t.hidden_states) == cfg.text_config.num_hidden_layers + 1
        # explicit pooling check
        if eos == 2:
            pos = ids.argmax(-1)
        else:
            pos = (ids == eos).int().argmax(-1)
        assert torch.equal(t.pooler_output, t.last_hidden_state[torch.arange(2), pos])
        print(f"  {name}: text pooled at positions {pos.tolist()} (argmax={ids.argmax(-1).tolist()})")
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    save_model(folder, "clip", name, model)
    save_expected(folder, out)
    return folder, model, out


# --------------------------------------------------------------------------------------
# SigLIP
# --------------------------------------------------------------------------------------


def gen_siglip(seed):
    name = "siglip-tiny"
    torch.manual_seed(seed)
    text = dict(
        vocab_size=99,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=16,
        pad_token_id=1,
        eos_token_id=1,
        bos_token_id=None,
    )
    vision = dict(
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )
    cfg = SiglipConfig(text_config=text, vision_config=vision)
    model = SiglipModel._from_config(cfg, attn_implementation="eager")
    randomize(model, seed).eval()
    texts = [[5, 17, 40, 63, 22, 8, 1], [12, 98, 33, 1]]  # real text ends with eos (=1)
    ids, mask = pad(texts, 1)
    px = pixel_values(seed + 1)
    out = {"input_ids": ids, "attention_mask": mask, "pixel_values": px}
    with torch.no_grad():
        t = model.text_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        v = model.vision_model(pixel_values=px, output_hidden_states=True)
        out["text.last_hidden_state"] = t.last_hidden_state
        add_hidden(out, "text.", t.hidden_states)
        out["text.pooler_output"] = t.pooler_output
        out["vision.last_hidden_state"] = v.last_hidden_state
        add_hidden(out, "vision.", v.hidden_states)
        out["vision.pooler_output"] = v.pooler_output
        tn = model.text_model(input_ids=ids)
        out["text_nomask.pooler_output"] = tn.pooler_output
        full = model(input_ids=ids, attention_mask=mask, pixel_values=px, return_loss=True)
        out["text_embeds"] = full.text_embeds
        out["image_embeds"] = full.image_embeds
        out["logits_per_image"] = full.logits_per_image
        out["logits_per_text"] = full.logits_per_text
        out["loss"] = full.loss
        # SigLIP text pooling = head(final_layer_norm(h)[:, -1]) regardless of the mask
        assert torch.allclose(t.pooler_output, model.text_model.head(t.last_hidden_state[:, -1]), atol=1e-6)
        assert not torch.allclose(tn.pooler_output, t.pooler_output, atol=1e-3)
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    save_model(folder, "siglip", name, model)
    save_expected(folder, out)
    return folder, model, out


# --------------------------------------------------------------------------------------
# ViT
# --------------------------------------------------------------------------------------

VIT_LABELS = ["tabby cat", "golden retriever", "school bus", "espresso", "volcano"]


def vit_config(**extra):
    return ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        image_size=32,
        patch_size=8,
        encoder_stride=8,
        **extra,
    )


def gen_vit_cls(seed):
    name = "vit-tiny"
    torch.manual_seed(seed)
    cfg = vit_config(
        id2label={i: l for i, l in enumerate(VIT_LABELS)},
        label2id={l: i for i, l in enumerate(VIT_LABELS)},
    )
    assert cfg.num_labels == 5
    model = ViTForImageClassification._from_config(cfg, attn_implementation="eager")
    randomize(model, seed).eval()
    px = pixel_values(seed + 1)
    out = {"pixel_values": px}
    with torch.no_grad():
        r = model(pixel_values=px, output_hidden_states=True)
        out["logits"] = r.logits
        # ViTForImageClassification exposes no last_hidden_state: run the backbone for it.
        b = model.vit(pixel_values=px, output_hidden_states=True)
        out["last_hidden_state"] = b.last_hidden_state
        add_hidden(out, "", r.hidden_states)
        assert torch.allclose(model.classifier(b.last_hidden_state[:, 0]), r.logits, atol=1e-6)
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    save_model(folder, "vit", name, model)
    save_expected(folder, out)
    return folder, model, out


def gen_vit_model(seed):
    name = "vit-tiny-model"
    torch.manual_seed(seed)
    cfg = vit_config()
    model = ViTModel._from_config(cfg, add_pooling_layer=True, attn_implementation="eager")
    randomize(model, seed).eval()
    px = pixel_values(seed + 1)
    out = {"pixel_values": px}
    with torch.no_grad():
        r = model(pixel_values=px, output_hidden_states=True)
        out["last_hidden_state"] = r.last_hidden_state
        out["pooler_output"] = r.pooler_output
        add_hidden(out, "", r.hidden_states)
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    save_model(folder, "vit", name, model)
    save_expected(folder, out)
    return folder, model, out


# --------------------------------------------------------------------------------------
# Full-size key lists
# --------------------------------------------------------------------------------------


def full_configs():
    clip_b32 = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
            num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu",
            projection_dim=512, eos_token_id=2, bos_token_id=0, pad_token_id=1, layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=224, patch_size=32, hidden_act="quick_gelu", projection_dim=512, layer_norm_eps=1e-5,
        ),
        projection_dim=512,
        logit_scale_init_value=2.6592,
    )
    clip_l14 = CLIPConfig(
        text_config=dict(
            vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
            projection_dim=768, eos_token_id=2, bos_token_id=0, pad_token_id=1, layer_norm_eps=1e-5,
        ),
        vision_config=dict(
            hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
            image_size=224, patch_size=14, hidden_act="quick_gelu", projection_dim=768, layer_norm_eps=1e-5,
        ),
        projection_dim=768,
        logit_scale_init_value=2.6592,
    )
    siglip = SiglipConfig(
        text_config=dict(
            vocab_size=32000, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=64, hidden_act="gelu_pytorch_tanh",
            layer_norm_eps=1e-6,
        ),
        vision_config=dict(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            image_size=224, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6,
        ),
    )
    vit = ViTConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        image_size=224, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-12,
        id2label={i: f"LABEL_{i}" for i in range(1000)},
        label2id={f"LABEL_{i}": i for i in range(1000)},
    )
    return [
        ("clip-vit-base-patch32", "clip", CLIPModel, clip_b32),
        ("clip-vit-large-patch14", "clip", CLIPModel, clip_l14),
        ("siglip-base-patch16-224", "siglip", SiglipModel, siglip),
        ("vit-base-patch16-224", "vit", ViTForImageClassification, vit),
    ]


def gen_full():
    base = os.path.join(FIX, "full")
    os.makedirs(base, exist_ok=True)
    for name, kind, cls, cfg in full_configs():
        with torch.device("meta"):
            model = cls._from_config(cfg)
        cfg = model.config
        cfg.architectures = [cls.__name__]
        folder = os.path.join(base, name)
        fresh_dir(folder)
        cfg.save_pretrained(folder)
        entries = []
        for k, v in persistent_state_dict(model).items():
            entries.append([to_published(kind, k), list(v.shape)])
        entries.sort(key=lambda e: e[0])
        with open(os.path.join(folder, "tensors.json"), "w") as f:
            f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
        n = sum(math.prod(s) for _, s in entries)
        print(f"  full/{name}: {len(entries)} tensors, {n / 1e6:.2f}M params")


# --------------------------------------------------------------------------------------
# Sanity checks: reload the written files
# --------------------------------------------------------------------------------------


def reverse_load(kind, cls, folder, ctor_kwargs):
    cfg = cls.config_class.from_pretrained(folder)
    model = cls._from_config(cfg, attn_implementation="eager", **ctor_kwargs).eval()
    pub = load_file(os.path.join(folder, "model.safetensors"))
    rev = {to_published(kind, k): k for k in persistent_state_dict(model)}
    assert set(rev) == set(pub), (set(rev) ^ set(pub))
    missing, unexpected = model.load_state_dict({rev[k]: v for k, v in pub.items()}, strict=False)
    assert not unexpected, unexpected
    assert all(m.endswith("position_ids") for m in missing), missing
    return model


def check_same(tag, a, b):
    if not torch.equal(a, b):
        d = (a - b).abs().max().item()
        assert d < 1e-5, f"{tag}: max diff {d}"
        return d
    return 0.0


def sanity(folder, kind, cls, ctor_kwargs):
    exp = load_file(os.path.join(folder, "expected.safetensors"))
    for how in ("state_dict", "from_pretrained"):
        if how == "state_dict":
            model = reverse_load(kind, cls, folder, ctor_kwargs)
        else:
            # transformers' own loader (with its checkpoint conversion mapping) on the local folder
            model = cls.from_pretrained(folder, attn_implementation="eager", **ctor_kwargs).eval()
        with torch.no_grad():
            if cls in (CLIPModel, SiglipModel):
                r = model(
                    input_ids=exp["input_ids"], attention_mask=exp["attention_mask"],
                    pixel_values=exp["pixel_values"], return_loss=True,
                )
                d = max(check_same(f"{folder}:{how}:{k}", getattr(r, k), exp[k])
                        for k in ("logits_per_image", "text_embeds", "image_embeds"))
            elif cls is ViTForImageClassification:
                r = model(pixel_values=exp["pixel_values"])
                d = check_same(f"{folder}:{how}:logits", r.logits, exp["logits"])
            else:
                r = model(pixel_values=exp["pixel_values"])
                d = max(check_same(f"{folder}:{how}:pooler", r.pooler_output, exp["pooler_output"]),
                        check_same(f"{folder}:{how}:lhs", r.last_hidden_state, exp["last_hidden_state"]))
        print(f"  reload OK via {how:15s} {os.path.relpath(folder, ROOT)} (max diff {d:.2e})")


def describe_hidden_states(model, out):
    """Print what entry 0 / entry -1 of hidden_states are (transformers 5 `capture_outputs`)."""
    with torch.no_grad():
        px = out["pixel_values"]
        vm = model.vision_model
        emb = vm.pre_layrnorm(vm.embeddings(px))
        print("  CLIP vision hidden_states.0 == pre_layrnorm(embeddings):",
              torch.allclose(out["vision.hidden_states.0"], emb, atol=1e-6))
        n = len([k for k in out if k.startswith("vision.hidden_states.")])
        print(f"  CLIP vision hidden_states.{n - 1} == last_hidden_state (no post_layernorm):",
              torch.allclose(out[f"vision.hidden_states.{n - 1}"], out["vision.last_hidden_state"], atol=1e-6))
        tm = model.text_model
        n = len([k for k in out if k.startswith("text.hidden_states.")])
        print("  CLIP text hidden_states.0 == embeddings:",
              torch.allclose(out["text.hidden_states.0"], tm.embeddings(out["input_ids"]), atol=1e-6))
        print(f"  CLIP text final_layer_norm(hidden_states.{n - 1}) == last_hidden_state:",
              torch.allclose(tm.final_layer_norm(out[f"text.hidden_states.{n - 1}"]), out["text.last_hidden_state"], atol=1e-5))


def main():
    print(f"torch {torch.__version__}, writing to {FIX}")
    os.makedirs(FIX, exist_ok=True)
    # clip-tiny-quickgelu: legacy eos_token_id=2 -> pooling at input_ids.argmax(-1).
    # Text uses bos=97 and the "real" eos 98 (= highest id, like 49407 in real CLIP).
    f1, m1, o1 = gen_clip(
        "clip-tiny-quickgelu", "quick_gelu", eos=2, bos=0, pad_id=1, projection_dim=24,
        texts=[[97, 5, 17, 40, 63, 22, 98], [97, 12, 33, 98]], seed=1,
    )
    describe_hidden_states(m1, o1)
    # clip-tiny-gelu: new-style eos 97 (not the max id); 98 appears before the eos so that
    # argmax pooling and first-eos pooling disagree.
    f2, m2, o2 = gen_clip(
        "clip-tiny-gelu", "gelu", eos=97, bos=96, pad_id=1, projection_dim=20,
        texts=[[96, 5, 98, 40, 63, 22, 8, 97], [96, 98, 33, 97]], seed=2,
    )
    f3, _, _ = gen_siglip(seed=3)
    f4, _, _ = gen_vit_cls(seed=4)
    f5, _, _ = gen_vit_model(seed=5)
    gen_full()

    print("name differences transformers-5.24 state_dict -> published:")
    for name, diffs in NAME_DIFFS.items():
        if not diffs:
            print(f"  {name}: none")
            continue
        print(f"  {name}: {len(diffs)} renamed, e.g.")
        for a, b in diffs:
            if ".0." in a or ".0." in b:
                print(f"    {a} -> {b}")

    print("sanity checks:")
    sanity(f1, "clip", CLIPModel, {})
    sanity(f2, "clip", CLIPModel, {})
    sanity(f3, "siglip", SiglipModel, {})
    sanity(f4, "vit", ViTForImageClassification, {})
    sanity(f5, "vit", ViTModel, {"add_pooling_layer": True})

    for name in ("clip-tiny-quickgelu", "clip-tiny-gelu", "siglip-tiny", "vit-tiny", "vit-tiny-model"):
        folder = os.path.join(FIX, name)
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
        assert size < 1.5e6, (name, size)
        print(f"  {name}: {size / 1024:.1f} KiB")
    print("done")


if __name__ == "__main__":
    sys.exit(main())
