#!/usr/bin/env python3
"""Reference fixture generator for the IP-Adapter support of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/ip-adapter-tiny/   laid out like the h94/IP-Adapter repository:
      models/image_encoder/         a tiny random `CLIPVisionModelWithProjection`
                                    (`save_pretrained`: config.json + model.safetensors)
      models/ip-adapter_sd-tiny.safetensors        ImageProjModel adapter    } for the UNet of
      models/ip-adapter-plus_sd-tiny.safetensors   Resampler (Plus) adapter  } sd-tiny (cross 16)
      sdxl_models/ip-adapter_sdxl-tiny.safetensors       } for the UNet of sdxl-tiny (cross 48),
      sdxl_models/ip-adapter-plus_sdxl-tiny.safetensors  } with the same image encoder (vit-h)
      image.png, image2.png         the reference images (crops of $MM_ASSETS photos)
      expected.safetensors          diffusers' results (float32), see below
  tests/fixtures/full/ip-adapter/   names and shapes of the published h94 files
                                    (ip-adapter_sd15, ip-adapter-plus_sd15,
                                    ip-adapter_sdxl_vit-h, ip-adapter-plus_sdxl_vit-h) and of
                                    the ViT-H/14 image encoder (`image_encoder/config.json` +
                                    `tensors.json`), built on the meta device

The adapter files hold what the h94 files hold: `image_proj.*` (the ImageProjModel `proj` /
`norm`, or the Resampler `latents`, `proj_in`, `layers.{i}.0.*` PerceiverAttention,
`layers.{i}.1.{0,1,3}` feed-forward, `proj_out`, `norm_out`) and `ip_adapter.{k}.to_k_ip.weight`
/ `to_v_ip.weight`, `k` the index of the cross-attention processor among all of the UNet's
`attn_processors` (1, 3, 5, ...). The script writes them as the inverse of diffusers'
`_convert_ip_adapter_image_proj_to_diffusers` applied to diffusers' own projection modules,
and checks that `load_ip_adapter` reads them back to exactly those modules.

`expected.safetensors`, per case prefix (`sd.` for the sd-tiny UNet, `sdxl.` for sdxl-tiny):

  <p>sample [2,4,8,8], <p>timestep [1], <p>encoder_hidden_states [2,5,cross]
  (sdxl) text_embeds [2,32], time_ids [2,6]          the UNet inputs ([uncond, cond] batch)
  pixel_values, pixel_values2 [1,3,32,32]           the feature extractor's output for the images
  <p><adapter>.embeds       `prepare_ip_adapter_image_embeds([image], None, cpu, 1, True)[0]`:
                            plain [2,1,24] (zeros, image_embeds), plus [2,1,17,32]
                            (hidden_states[-2] of zeros and of the image); `.embeds_nipp2`:
                            with num_images_per_prompt 2 ([4, ...])
  <p><adapter>.tokens       `unet.encoder_hid_proj([embeds])`, flattened to [2, n·tokens, cross]
  <p><adapter>.out_scale1 / .out_scale0.6 / .out_style     UNet outputs with the adapter at
                            scale 1.0, 0.6 and an InstantStyle dict (see SCALES)
  sd.plain.embeds_two / .tokens_two / .out_two             one adapter, two reference images
  <p>multi.out              two adapters at once (plain + plus) with per-adapter scales

Usage:  python tools/reference/gen_ip_adapter.py   # diffusers 0.42.1, transformers 5.24; ~40 s
"""

import json
import math
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.models.embeddings import (  # noqa: E402
    ImageProjection,
    IPAdapterPlusImageProjection,
)
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection  # noqa: E402

from gen_diffusion import ASSETS, FIX, fresh_dir, randomize  # noqa: E402

torch.set_default_dtype(torch.float32)

OUT = os.path.join(FIX, "ip-adapter-tiny")
ENCODER_DIR = "models/image_encoder"
FULL = os.path.join(FIX, "full", "ip-adapter")

CLIP_SIZES = (
    "hidden_size",
    "intermediate_size",
    "projection_dim",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
)


def clip_vision(*sizes):
    """A `CLIPVisionConfig`'s fields: `sizes` in `CLIP_SIZES` order, GELU, eps 1e-5."""
    return dict(zip(CLIP_SIZES, sizes, strict=True), hidden_act="gelu", layer_norm_eps=1e-5)


# hidden, intermediate, projection, layers, heads, image, patch.
ENCODER = clip_vision(32, 64, 24, 3, 4, 32, 8)
# h94/IP-Adapter models/image_encoder: OpenCLIP ViT-H/14 as a CLIPVisionModelWithProjection.
VIT_H = clip_vision(1280, 5120, 1024, 32, 16, 224, 14)

# InstantStyle-like per-block scales for each tiny UNet (sd-tiny: down block 0, up block 1
# (2 attentions) and mid have transformers; sdxl-tiny: down block 1, up block 0 (3 attentions)).
SCALES = {
    "sd": {"down": {"block_0": 0.3}, "up": {"block_1": [0.0, 1.0]}, "mid": 0.5},
    "sdxl": {"down": {"block_1": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}},
}
MULTI_SCALES = {
    "sd": [0.7, {"up": {"block_1": [1.0, 0.4]}, "mid": [0.8]}],
    "sdxl": [0.5, {"up": {"block_0": [0.0, 1.0, 0.0]}, "mid": 0.3}],
}


def projection_module(kind, dims):
    """diffusers' module for an h94 image projection of `dims`."""
    if kind == "plain":
        return ImageProjection(
            image_embed_dim=dims["clip_embeddings_dim"],
            cross_attention_dim=dims["cross_attention_dim"],
            num_image_text_embeds=4,
        )
    return IPAdapterPlusImageProjection(
        embed_dims=dims["embedding_dim"],
        output_dims=dims["output_dim"],
        hidden_dims=dims["dim"],
        depth=4,
        dim_head=64,
        heads=dims["heads"],
        num_queries=dims["num_queries"],
        ffn_ratio=4,
    )


def to_h94(kind, state):
    """The h94 names of a diffusers image projection's tensors: the inverse of
    `_convert_ip_adapter_image_proj_to_diffusers` (`to_k`/`to_v` stacked back into `to_kv`)."""
    if kind == "plain":
        return {k.replace("image_embeds", "proj"): v for k, v in state.items()}
    out = {}
    rules = [
        (".ln0.", ".0.norm1."),
        (".ln1.", ".0.norm2."),
        (".attn.to_q.", ".0.to_q."),
        (".attn.to_out.0.", ".0.to_out."),
        (".ff.0.", ".1.0."),
        (".ff.1.net.0.proj.", ".1.1."),
        (".ff.1.net.2.", ".1.3."),
    ]
    for name, value in state.items():
        if ".attn.to_v." in name:
            continue
        if ".attn.to_k." in name:
            other = state[name.replace(".to_k.", ".to_v.")]
            out[name.replace(".attn.to_k.", ".0.to_kv.")] = torch.cat([value, other], 0)
            continue
        for old, new in rules:
            name = name.replace(old, new)
        out[name] = value
    return out


def cross_attention_keys(unet):
    """(h94 key index, attn2 module) of every cross-attention, in `attn_processors` order."""
    out = []
    for k, name in enumerate(unet.attn_processors):
        if name.endswith("attn2.processor"):
            assert k % 2 == 1 and k == 2 * len(out) + 1, name
            out.append((k, unet.get_submodule(name[: -len(".processor")])))
    return out


def adapter_state(unet, kind, dims, seed, device="cpu"):
    """An h94 adapter file's tensors for `unet` (random, or shapes only on the meta device)."""
    with torch.device(device):
        proj = projection_module(kind, dims)
    if device == "cpu":
        randomize(proj, seed)
    state = {f"image_proj.{k}": v for k, v in to_h94(kind, proj.state_dict()).items()}
    g = torch.Generator().manual_seed(seed + 1)
    cross = unet.config.cross_attention_dim
    for k, attn in cross_attention_keys(unet):
        for part in ("to_k_ip", "to_v_ip"):
            shape = (attn.to_k.out_features, cross)
            if device == "cpu":
                value = torch.randn(shape, generator=g) / math.sqrt(cross)
            else:
                value = torch.empty(shape, device=device)
            state[f"ip_adapter.{k}.{part}.weight"] = value
    return proj, {k: v.contiguous() for k, v in state.items()}


def write_adapter(path, state):
    save_file(state, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)


def check_loaded(unet, projections, states):
    """diffusers' loader turned the files back into the modules they came from."""
    layers = unet.encoder_hid_proj.image_projection_layers
    assert len(layers) == len(projections)
    for loaded, proj in zip(layers, projections):
        a, b = loaded.state_dict(), proj.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)
    keys = cross_attention_keys(unet)
    for i, state in enumerate(states):
        for k, attn in keys:
            proc = attn.processor
            assert torch.equal(proc.to_k_ip[i].weight, state[f"ip_adapter.{k}.to_k_ip.weight"])
            assert torch.equal(proc.to_v_ip[i].weight, state[f"ip_adapter.{k}.to_v_ip.weight"])


def make_images():
    """Two small crops of asset photos, saved as PNG (landscape and portrait, so that both
    orientations of the shortest-edge resize are exercised)."""
    crops = [("chelsea.png", (170, 40, 230, 85)), ("coffee.png", (260, 120, 300, 172))]
    images = []
    for i, (name, box) in enumerate(crops):
        image = Image.open(os.path.join(ASSETS, "images", name)).convert("RGB").crop(box)
        path = os.path.join(OUT, "image.png" if i == 0 else f"image{i + 1}.png")
        image.save(path)
        os.chmod(path, 0o644)
        images.append(Image.open(path))
    return images


def make_encoder():
    folder = os.path.join(OUT, "models", "image_encoder")
    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**ENCODER)).eval()
    randomize(encoder, 3)
    encoder.save_pretrained(folder)
    for f in os.listdir(folder):
        os.chmod(os.path.join(folder, f), 0o644)


def unet_inputs(p, unet, expected, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = unet.config
    inputs = {
        "sample": torch.randn(2, cfg.in_channels, 8, 8, generator=g),
        "timestep": torch.tensor([637.0]),
        "encoder_hidden_states": torch.randn(2, 5, cfg.cross_attention_dim, generator=g),
    }
    added = None
    if cfg.addition_embed_type == "text_time":
        time_dim = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        added = {
            "text_embeds": torch.randn(2, time_dim, generator=g),
            "time_ids": torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, 32.0]] * 2),
        }
        inputs.update(added)
    for k, v in inputs.items():
        expected[f"{p}{k}"] = v
    return inputs, added


def image_embeds(pipe, images, num_images_per_prompt):
    """`prepare_ip_adapter_image_embeds` with guidance: per adapter `[negative; positive]`."""
    with torch.no_grad():
        return pipe.prepare_ip_adapter_image_embeds(
            images, None, torch.device("cpu"), num_images_per_prompt, True
        )


def run_unet(unet, inputs, added, embeds=None):
    """The UNet's output, with the adapters' `embeds` (none: the plain UNet)."""
    cond = dict(added or {})
    if embeds is not None:
        cond["image_embeds"] = embeds
    with torch.no_grad():
        return unet(
            inputs["sample"],
            inputs["timestep"],
            inputs["encoder_hidden_states"],
            added_cond_kwargs=cond or None,
        ).sample


def tokens(unet, embeds):
    with torch.no_grad():
        out = unet.encoder_hid_proj(embeds)
    return [t.reshape(t.shape[0], -1, t.shape[-1]) for t in out]


def gen_family(p, pipe, subfolder, files, dims, images, expected):
    """Loads each adapter with diffusers' `load_ip_adapter` and records the embeddings, the
    projected tokens and UNet outputs at several scales; then both adapters at once."""
    unet = pipe.unet
    inputs, added = unet_inputs(p, unet, expected, seed=11 if p == "sd." else 12)
    projections, states = {}, {}
    for n, kind in enumerate(("plain", "plus")):
        seed = 20 + n + (10 if p == "sdxl." else 0)
        proj, state = adapter_state(unet, kind, dims[kind], seed=seed)
        write_adapter(os.path.join(OUT, subfolder, files[kind]), state)
        projections[kind], states[kind] = proj, state
    base = run_unet(unet, inputs, added)
    for kind in ("plain", "plus"):
        pipe.load_ip_adapter(
            OUT, subfolder=subfolder, weight_name=files[kind], image_encoder_folder=ENCODER_DIR
        )
        check_loaded(unet, [projections[kind]], [states[kind]])
        q = f"{p}{kind}."
        embeds = image_embeds(pipe, [images[0]], 1)
        nipp2 = image_embeds(pipe, [images[0]], 2)
        expected[f"{q}embeds"] = embeds[0]
        expected[f"{q}embeds_nipp2"] = nipp2[0]
        expected[f"{q}tokens"] = tokens(unet, embeds)[0]
        expected[f"{q}tokens_nipp2"] = tokens(unet, nipp2)[0]
        expected[f"{q}out_scale1"] = run_unet(unet, inputs, added, embeds)
        pipe.set_ip_adapter_scale(0.6)
        expected[f"{q}out_scale0.6"] = run_unet(unet, inputs, added, embeds)
        pipe.set_ip_adapter_scale(SCALES[p[:-1]])
        expected[f"{q}out_style"] = run_unet(unet, inputs, added, embeds)
        outs = [expected[f"{q}out_{case}"] for case in ("scale1", "scale0.6", "style")] + [base]
        for i in range(len(outs)):
            for j in range(i):
                assert (outs[i] - outs[j]).abs().max() > 1e-3, (q, i, j)
        if p == "sd." and kind == "plain":
            # One adapter, two reference images: their tokens are concatenated.
            pipe.set_ip_adapter_scale(1.0)
            two = image_embeds(pipe, [images], 1)
            expected[f"{q}embeds_two"] = two[0]
            expected[f"{q}tokens_two"] = tokens(unet, two)[0]
            expected[f"{q}out_two"] = run_unet(unet, inputs, added, two)
        pipe.unload_ip_adapter()
    # Both adapters at once (diffusers' list form), one scale config each.
    both = ["plain", "plus"]
    pipe.load_ip_adapter(
        OUT,
        subfolder=subfolder,
        weight_name=[files[k] for k in both],
        image_encoder_folder=ENCODER_DIR,
    )
    check_loaded(unet, [projections[k] for k in both], [states[k] for k in both])
    pipe.set_ip_adapter_scale(MULTI_SCALES[p[:-1]])
    embeds = image_embeds(pipe, [images[0], images[1]], 1)
    expected[f"{p}multi.embeds0"] = embeds[0]
    expected[f"{p}multi.embeds1"] = embeds[1]
    expected[f"{p}multi.out"] = run_unet(unet, inputs, added, embeds)
    pipe.unload_ip_adapter()


def pixel_values(pipe, images, expected):
    """The feature extractor diffusers created in `load_ip_adapter` (`CLIPImageProcessor` with
    the encoder's image size): its pixels for each image."""
    fe = pipe.feature_extractor
    assert fe.size == {"shortest_edge": ENCODER["image_size"]}, fe.size
    for i, image in enumerate(images):
        key = "pixel_values" if i == 0 else f"pixel_values{i + 1}"
        expected[key] = fe(image, return_tensors="pt").pixel_values


def adapter_dims(kind, encoder, cross, plus=None):
    """The h94 projection dims of a `kind` adapter for `encoder` (a CLIPVisionConfig's
    fields) and a UNet of cross-attention width `cross`; `plus`: (dim, heads, queries)."""
    if kind == "plain":
        return {"clip_embeddings_dim": encoder["projection_dim"], "cross_attention_dim": cross}
    dim, heads, queries = plus
    return {
        "dim": dim,
        "heads": heads,
        "num_queries": queries,
        "embedding_dim": encoder["hidden_size"],
        "output_dim": cross,
    }


def gen_tiny_family(p, pipeline, name, subfolder, plus, images, expected):
    """The plain and Plus adapters for the tiny UNet `name` (`plus`: the Resampler's
    (dim, heads, queries)) and diffusers' results with them; returns the pipeline."""
    pipe = pipeline.from_pretrained(os.path.join(FIX, name))
    cross = pipe.unet.config.cross_attention_dim
    dims = {kind: adapter_dims(kind, ENCODER, cross, plus) for kind in ("plain", "plus")}
    files = {
        "plain": f"ip-adapter_{name}.safetensors",
        "plus": f"ip-adapter-plus_{name}.safetensors",
    }
    gen_family(p, pipe, subfolder, files, dims, images, expected)
    return pipe


def gen_tiny():
    fresh_dir(OUT)
    os.makedirs(os.path.join(OUT, "models"))
    os.makedirs(os.path.join(OUT, "sdxl_models"))
    images = make_images()
    make_encoder()
    expected = {}

    sd = gen_tiny_family(
        "sd.", StableDiffusionPipeline, "sd-tiny", "models", (8, 2, 5), images, expected
    )
    pixel_values(sd, images, expected)
    gen_tiny_family(
        "sdxl.", StableDiffusionXLPipeline, "sdxl-tiny", "sdxl_models", (12, 1, 6), images, expected
    )

    out = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in expected.items()}
    path = os.path.join(OUT, "expected.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"  ip-adapter-tiny: {size / 1024:.0f} KiB")


def write_json(path, value):
    with open(path, "w") as f:
        if isinstance(value, list):
            f.write("[\n" + ",\n".join(json.dumps(e) for e in value) + "\n]\n")
        else:
            json.dump(value, f, indent=2)
            f.write("\n")
    os.chmod(path, 0o644)


def gen_full():
    """Names and shapes of the published h94 files for SD 1.5 and SDXL (dims of
    tencent-ailab/IP-Adapter's `ImageProjModel` / `Resampler` as the h94 files were made:
    4 tokens; Plus: 16 queries, depth 4, 64-wide heads, ViT-H's 1280 hidden states),
    checked by diffusers' own loader on the meta device."""
    fresh_dir(FULL)
    vit_h = CLIPVisionConfig(**VIT_H)
    variants = [
        ("ip-adapter_sd15", "unet-sd15", "plain", None),
        ("ip-adapter-plus_sd15", "unet-sd15", "plus", (768, 12, 16)),
        ("ip-adapter_sdxl_vit-h", "unet-sdxl-base", "plain", None),
        ("ip-adapter-plus_sdxl_vit-h", "unet-sdxl-base", "plus", (1280, 20, 16)),
    ]
    for name, unet_name, kind, plus in variants:
        with open(os.path.join(FIX, "full", unet_name, "config.json")) as f:
            cfg = json.load(f)
        with torch.device("meta"):
            unet = UNet2DConditionModel.from_config(cfg)
        cross = unet.config.cross_attention_dim
        dims = adapter_dims(kind, VIT_H, cross, plus)
        _, state = adapter_state(unet, kind, dims, seed=0, device="meta")
        split = {"image_proj": {}, "ip_adapter": {}}
        for k, v in state.items():
            top, rest = k.split(".", 1)
            split[top][rest] = v
        with torch.device("meta"):
            unet._load_ip_adapter_weights([split], low_cpu_mem_usage=False)
        layers = len(cross_attention_keys(unet))
        entries = sorted([k, list(v.shape)] for k, v in state.items())
        write_json(os.path.join(FULL, f"{name}.json"), entries)
        print(f"  full/ip-adapter/{name}: {len(entries)} tensors, {layers} cross-attentions")
    enc_dir = os.path.join(FULL, "image_encoder")
    os.makedirs(enc_dir)
    with torch.device("meta"):
        encoder = CLIPVisionModelWithProjection(vit_h)
    config = {
        "architectures": ["CLIPVisionModelWithProjection"],
        "model_type": "clip_vision_model",
        **VIT_H,
    }
    config["num_channels"] = 3
    write_json(os.path.join(enc_dir, "config.json"), config)
    entries = sorted([k, list(v.shape)] for k, v in encoder.state_dict().items())
    write_json(os.path.join(enc_dir, "tensors.json"), entries)
    print(f"  full/ip-adapter/image_encoder: {len(entries)} tensors")


def main():
    gen_tiny()
    gen_full()


if __name__ == "__main__":
    main()
