#!/usr/bin/env python3
"""Reference fixtures for single-file (original CompVis / LDM layout) Stable Diffusion checkpoints.

A single-file checkpoint such as `v1-5-pruned-emaonly.safetensors` holds the UNet under
`model.diffusion_model.`, the VAE under `first_stage_model.` and the text encoder under
`cond_stage_model.transformer.` (SD 1.x, OpenAI CLIP) or `cond_stage_model.model.` (SD 2.x,
OpenCLIP), plus the noise-schedule buffers of the LDM training code.

This script builds the LDM key layout from the diffusers models (`to_ldm` below, written for
this project) and proves it against diffusers' own single-file converter
(`diffusers.loaders.single_file_utils.convert_ldm_*`): converting the LDM dict back must give
every diffusers tensor, bit for bit (tiny models) or name for name and shape for shape
(full-size models on the meta device). It writes:

  tests/fixtures/single-file-tiny/sd1/  ldm.safetensors (a tiny SD 1.x single file, with the
                                        schedule buffers and CLIP's position_ids) and
                                        diffusers.safetensors (the same tensors under
                                        `unet.` / `vae.` / `text_encoder.` diffusers names),
                                        plus unet/vae/text_encoder configs
  tests/fixtures/single-file-tiny/sd2/  the same for an SD 2.x layout (OpenCLIP text encoder
                                        with fused in_proj, one extra resblock that diffusers
                                        drops, linear proj_in/proj_out)
  tests/fixtures/single-file-tiny/sd-tiny.safetensors
                                        the tiny pipeline of gen_pipelines.py
                                        (tests/fixtures/sd-tiny, run that script first) as
                                        one single file
  tests/fixtures/full/sd15-single-file/ ldm_tensors.json (every tensor of the SD 1.5 single
  tests/fixtures/full/sd21-single-file/ file: name, shape), diffusers_tensors.json (what the
                                        conversion must produce, per component) and the
                                        unet/vae/text_encoder configs of the full-size models

Usage:  python tools/reference/gen_single_file.py
"""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
ASSETS = os.environ.get("MM_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."
OPENCLIP = "cond_stage_model.model."
# Buffers of ldm.models.diffusion.ddpm.LatentDiffusion (1000 training steps) and of its EMA
# helper: present in the published files, not used by inference.
SCHEDULE_BUFFERS = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
    "posterior_mean_coef1", "posterior_mean_coef2",
]
EMA_SCALARS = ["model_ema.decay", "model_ema.num_updates"]

RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
          ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
          ("conv_shortcut", "skip_connection")]
UNET_FIXED = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
              "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2",
              "add_embedding.linear_1": "label_emb.0.0", "add_embedding.linear_2": "label_emb.0.2",
              "class_embedding.linear_1": "label_emb.0.0", "class_embedding.linear_2": "label_emb.0.2"}


def fresh_dir(path):
    if os.path.isdir(path):
        shutil.rmtree(path)
    os.makedirs(path)


def rename_resnet(rest):
    for new, old in RESNET:
        if rest.startswith(new + "."):
            return old + rest[len(new):]
    raise ValueError(rest)


def unet_to_ldm(name, lpb, up_with_attn):
    stem, leaf = name.rsplit(".", 1)
    if stem in UNET_FIXED:
        return f"{UNET_FIXED[stem]}.{leaf}"
    p = name.split(".")
    if p[0] == "down_blocks":
        b, kind = int(p[1]), p[2]
        if kind == "downsamplers":
            return f"input_blocks.{(b + 1) * (lpb + 1)}.0.op.{leaf}"
        i, rest = b * (lpb + 1) + int(p[3]) + 1, ".".join(p[4:])
        return f"input_blocks.{i}.0.{rename_resnet(rest)}" if kind == "resnets" else f"input_blocks.{i}.1.{rest}"
    if p[0] == "mid_block":
        k, rest = int(p[2]), ".".join(p[3:])
        return f"middle_block.{2 * k}.{rename_resnet(rest)}" if p[1] == "resnets" else f"middle_block.1.{rest}"
    if p[0] == "up_blocks":
        b, kind = int(p[1]), p[2]
        if kind == "upsamplers":
            slot = 2 if b in up_with_attn else 1
            return f"output_blocks.{b * (lpb + 1) + lpb}.{slot}.conv.{leaf}"
        i, rest = b * (lpb + 1) + int(p[3]), ".".join(p[4:])
        return f"output_blocks.{i}.0.{rename_resnet(rest)}" if kind == "resnets" else f"output_blocks.{i}.1.{rest}"
    raise ValueError(name)


VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def vae_to_ldm(name, n_up):
    p = name.split(".")
    coder, rest = p[0], ".".join(p[1:])
    if rest.startswith("conv_norm_out."):
        return f"{coder}.norm_out.{p[-1]}"
    if p[1] in ("down_blocks", "up_blocks"):
        i = int(p[2]) if p[1] == "down_blocks" else n_up - 1 - int(p[2])
        ldm = "down" if p[1] == "down_blocks" else "up"
        if p[3] in ("downsamplers", "upsamplers"):
            return f"{coder}.{ldm}.{i}.{'downsample' if ldm == 'down' else 'upsample'}.conv.{p[-1]}"
        tail = ".".join(p[5:]).replace("conv_shortcut", "nin_shortcut")
        return f"{coder}.{ldm}.{i}.block.{p[4]}.{tail}"
    if p[1] == "mid_block":
        if p[2] == "resnets":
            tail = ".".join(p[4:]).replace("conv_shortcut", "nin_shortcut")
            return f"{coder}.mid.block_{int(p[3]) + 1}.{tail}"
        stem = ".".join(p[4:-1])
        return f"{coder}.mid.attn_1.{VAE_ATTN[stem]}.{p[-1]}"
    return name  # conv_in, conv_out, quant_conv, post_quant_conv


def unet_ldm(sd, config):
    lpb = config["layers_per_block"]
    up_with_attn = {int(k.split(".")[1]) for k in sd if k.startswith("up_blocks.") and ".attentions." in k}
    return {UNET + unet_to_ldm(k, lpb, up_with_attn): v for k, v in sd.items()}


def vae_ldm(sd, config):
    out = {}
    for k, v in sd.items():
        ldm = vae_to_ldm(k, len(config["up_block_types"]))
        if ".mid.attn_1." in ldm and ldm.endswith("weight") and v.ndim == 2:
            v = v[:, :, None, None]  # LDM's attention projections are 1×1 convolutions
        out[VAE + ldm] = v
    return out


def clip_ldm(sd, n_pos):
    out = {CLIP + k: v for k, v in sd.items()}
    out[CLIP + "text_model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    return out


OPENCLIP_LAYER = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                  ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]


def openclip_ldm(sd, extra_layer):
    """OpenCLIP-H as SD 2.x stores it: fused in_proj, 24 resblocks (diffusers keeps 23),
    text_projection and logit_scale."""
    out = {}
    e = "text_model.embeddings."
    out[OPENCLIP + "positional_embedding"] = sd[e + "position_embedding.weight"]
    out[OPENCLIP + "token_embedding.weight"] = sd[e + "token_embedding.weight"]
    for leaf in ("weight", "bias"):
        out[OPENCLIP + f"ln_final.{leaf}"] = sd[f"text_model.final_layer_norm.{leaf}"]
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")})
    for n in layers + [len(layers)]:
        src = f"text_model.encoder.layers.{n}." if n < len(layers) else None
        dst = f"{OPENCLIP}transformer.resblocks.{n}."
        for leaf in ("weight", "bias"):
            if src is None:
                template = f"text_model.encoder.layers.0."
                for new, old in OPENCLIP_LAYER:
                    out[dst + f"{old}.{leaf}"] = extra_layer(sd[template + f"{new}.{leaf}"])
                q = sd[template + f"self_attn.q_proj.{leaf}"]
                out[dst + f"attn.in_proj_{leaf}"] = extra_layer(torch.cat([q, q, q]))
                continue
            for new, old in OPENCLIP_LAYER:
                out[dst + f"{old}.{leaf}"] = sd[src + f"{new}.{leaf}"]
            out[dst + f"attn.in_proj_{leaf}"] = torch.cat(
                [sd[src + f"self_attn.{x}_proj.{leaf}"] for x in "qkv"])
    hidden = sd[e + "token_embedding.weight"].shape[1]
    out[OPENCLIP + "text_projection"] = extra_layer(torch.empty(hidden, hidden))
    out[OPENCLIP + "logit_scale"] = extra_layer(torch.empty(()))
    return out


def buffers(make):
    out = {name: make((1000,)) for name in SCHEDULE_BUFFERS}
    out.update({name: make(()) for name in EMA_SCALARS})
    return out


def check_roundtrip(ldm, unet, vae, text, openclip, exact):
    """diffusers' converter on the LDM dict must give back every diffusers tensor."""
    got = {
        "unet": sfu.convert_ldm_unet_checkpoint(ldm, dict(unet.config)),
        "vae": sfu.convert_ldm_vae_checkpoint(ldm, dict(vae.config)),
        "text_encoder": sfu.convert_open_clip_checkpoint(text, ldm) if openclip
        else sfu.convert_ldm_clip_checkpoint(ldm),
    }
    got["text_encoder"].pop("text_model.embeddings.position_ids", None)
    # diffusers drops OpenCLIP's last resblock by a fixed list (`resblocks.23`, right for the
    # real 24-block model); for the tiny model drop every block past the config's depth.
    n = text.config.num_hidden_layers
    got["text_encoder"] = {k: v for k, v in got["text_encoder"].items()
                           if not (k.startswith("text_model.encoder.layers.") and int(k.split(".")[3]) >= n)}
    for comp, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        want = model.state_dict()
        if comp == "text_encoder":
            want = {k: v for k, v in published(want).items() if not k.endswith("position_ids")}
        assert set(got[comp]) == set(want), (comp, set(got[comp]) ^ set(want))
        for k, v in want.items():
            g = got[comp][k]
            assert tuple(g.shape) == tuple(v.shape), (comp, k, g.shape, v.shape)
            if exact:
                assert torch.equal(g, v), (comp, k)


def published(sd):
    """transformers 5 drops the `text_model.` prefix of a standalone CLIPTextModel; the published
    SD `text_encoder/` checkpoints (and the LDM files) keep it."""
    return {k if k.startswith("text_model.") else "text_model." + k: v for k, v in sd.items()}


def build(unet_cfg, vae_cfg, text_cfg):
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return unet, vae, text


def to_ldm(unet, vae, text, openclip, make_buffer, extra_layer):
    ldm = {}
    ldm.update(unet_ldm(unet.state_dict(), unet.config))
    ldm.update(vae_ldm(vae.state_dict(), vae.config))
    text_sd = published(text.state_dict())
    if openclip:
        ldm.update(openclip_ldm(text_sd, extra_layer))
    else:
        ldm.update(clip_ldm(text_sd, text.config.max_position_embeddings))
    ldm.update(buffers(make_buffer))
    return ldm


TINY_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(4, 4, 8, 8), norm_num_groups=2, cross_attention_dim=8,
                 attention_head_dim=2,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
TINY_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                block_out_channels=(4, 4, 8, 8), norm_num_groups=2,
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
TINY_TEXT = dict(vocab_size=64, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                 num_attention_heads=2, max_position_embeddings=12, projection_dim=8,
                 bos_token_id=0, eos_token_id=2, pad_token_id=1)


def randomize(*models, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for model in models:
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def save_configs(folder, unet, vae, text):
    """`unet/`, `vae/` and `text_encoder/` config.json, as in a diffusers folder."""
    unet.save_config(os.path.join(folder, "unet"))
    vae.save_config(os.path.join(folder, "vae"))
    os.makedirs(os.path.join(folder, "text_encoder"), exist_ok=True)
    text.config.to_json_file(os.path.join(folder, "text_encoder", "config.json"))


def gen_tiny(name, openclip):
    folder = os.path.join(FIX, "single-file-tiny", name)
    fresh_dir(folder)
    unet_cfg = dict(TINY_UNET)
    if openclip:  # the SD 2.x variant: linear projections, per-block head dims, upcast attention
        unet_cfg.update(use_linear_projection=True, upcast_attention=True, attention_head_dim=(1, 2, 2, 2), cross_attention_dim=8)
    torch.manual_seed(0)
    unet, vae, text = build(unet_cfg, TINY_VAE, dict(TINY_TEXT, hidden_act="gelu" if openclip else "quick_gelu"))
    randomize(unet, vae, text, seed=1 if openclip else 0)
    g = torch.Generator().manual_seed(2)
    ldm = to_ldm(unet, vae, text, openclip, lambda s: torch.rand(s, generator=g),
                 lambda t: torch.randn(t.shape, generator=g))
    check_roundtrip(ldm, unet, vae, text, openclip, exact=True)
    save_file({k: v.contiguous() for k, v in ldm.items()}, os.path.join(folder, "ldm.safetensors"))
    diffusers = {}
    for comp, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        sd = model.state_dict()
        diffusers.update({f"{comp}.{k}": v.contiguous() for k, v in (published(sd) if model is text else sd).items()
                          if not k.endswith("position_ids")})
    save_file(diffusers, os.path.join(folder, "diffusers.safetensors"))
    save_configs(folder, unet, vae, text)
    print(f"  single-file-tiny/{name}: {len(ldm)} LDM tensors -> {len(diffusers)} diffusers tensors")


SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                 projection_dim=768)
SD21_UNET = dict(sample_size=96, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                 cross_attention_dim=1024, use_linear_projection=True, upcast_attention=True,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD21_TEXT = dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu",
                 projection_dim=512)


def read_config(component):
    with open(os.path.join(ASSETS, "sd15-configs", component, "config.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def gen_full(name, unet_cfg, vae_cfg, text_cfg, openclip):
    folder = os.path.join(FIX, "full", name)
    fresh_dir(folder)
    with torch.device("meta"):
        unet, vae, text = build(unet_cfg, vae_cfg, text_cfg)
        ldm = to_ldm(unet, vae, text, openclip, torch.empty, torch.empty_like)
    ldm[CLIP + "text_model.embeddings.position_ids"] = torch.empty(1, 77, dtype=torch.int64, device="meta") \
        if not openclip else None
    ldm = {k: v for k, v in ldm.items() if v is not None}
    check_roundtrip(ldm, unet, vae, text, openclip, exact=False)
    with open(os.path.join(folder, "ldm_tensors.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps([k, list(v.shape)]) for k, v in sorted(ldm.items())) + "\n]\n")
    want = []
    for comp, model in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        sd = model.state_dict()
        want += [(f"{comp}.{k}", list(v.shape)) for k, v in (published(sd) if model is text else sd).items()
                 if not k.endswith("position_ids")]
    with open(os.path.join(folder, "diffusers_tensors.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in sorted(want)) + "\n]\n")
    save_configs(folder, unet, vae, text)
    print(f"  full/{name}: {len(ldm)} LDM tensors -> {len(want)} diffusers tensors")


def gen_pipeline():
    """The tiny Stable Diffusion pipeline of gen_pipelines.py (tests/fixtures/sd-tiny) as one
    single file: loaded with that folder's configs, it must generate the same images."""
    src = os.path.join(FIX, "sd-tiny")
    unet = UNet2DConditionModel.from_pretrained(os.path.join(src, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(src, "vae"))
    text = CLIPTextModel.from_pretrained(os.path.join(src, "text_encoder"))
    g = torch.Generator().manual_seed(3)
    ldm = to_ldm(unet, vae, text, False, lambda s: torch.rand(s, generator=g),
                 lambda t: torch.randn(t.shape, generator=g))
    check_roundtrip(ldm, unet, vae, text, False, exact=True)
    out = os.path.join(FIX, "single-file-tiny", "sd-tiny.safetensors")
    save_file({k: v.contiguous() for k, v in ldm.items()}, out)
    print(f"  single-file-tiny/sd-tiny.safetensors: {len(ldm)} LDM tensors")


def main():
    gen_tiny("sd1", openclip=False)
    gen_tiny("sd2", openclip=True)
    gen_pipeline()
    sd15_vae = read_config("vae")
    gen_full("sd15-single-file", read_config("unet"), sd15_vae, SD15_TEXT, openclip=False)
    gen_full("sd21-single-file", SD21_UNET, sd15_vae, SD21_TEXT, openclip=True)


if __name__ == "__main__":
    main()
