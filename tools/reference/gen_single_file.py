#!/usr/bin/env python3
"""Reference fixtures for single-file (original CompVis / LDM layout) Stable Diffusion checkpoints.

A single-file checkpoint such as `v1-5-pruned-emaonly.safetensors` holds the UNet under
`model.diffusion_model.`, the VAE under `first_stage_model.` and the text encoder under
`cond_stage_model.transformer.` (SD 1.x, OpenAI CLIP) or `cond_stage_model.model.` (SD 2.x,
OpenCLIP), plus the noise-schedule buffers of the LDM training code. SDXL files
(`sd_xl_base_1.0.safetensors`) hold CLIP ViT-L under `conditioner.embedders.0.transformer.` and
OpenCLIP bigG under `conditioner.embedders.1.model.` (the refiner: bigG alone, under
`conditioner.embedders.0.model.`), and no schedule buffers.

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
                                        one single file; sdxl-tiny.safetensors and
                                        sdxl-tiny-refiner.safetensors the same for the SDXL
                                        folders of gen_sdxl.py
  tests/fixtures/full/sd15-single-file/ ldm_tensors.json (every tensor of the SD 1.5 single
  tests/fixtures/full/sd21-single-file/ file: name, shape), diffusers_tensors.json (what the
                                        conversion must produce, per component) and the
                                        unet/vae/text_encoder configs of the full-size models
  tests/fixtures/single-file-tiny/sdxl/ a tiny SDXL base single file: UNet with DownBlock2D
                                        first, transformer depth per level and label_emb
                                        (add_embedding), CLIP under
                                        conditioner.embedders.0.transformer., OpenCLIP bigG
                                        (CLIPTextModelWithProjection, text_projection stored
                                        [hidden, proj]) under conditioner.embedders.1.model.;
                                        no schedule buffers (as published); configs incl.
                                        text_encoder_2/
  tests/fixtures/single-file-tiny/sdxl-refiner/
                                        the refiner: 4 levels, bigG alone under
                                        conditioner.embedders.0.model.
  tests/fixtures/full/sdxl-base/        the published SDXL base / refiner 1.0 configs
  tests/fixtures/full/sdxl-refiner/     (unet, vae, text_encoder, text_encoder_2), a
                                        tensors.json (name, shape) per component and the
                                        ldm_tensors.json / diffusers_tensors.json lists

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
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from gen_unet import SDXL_BASE  # noqa: E402  (the published SDXL base unet/config.json)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
ASSETS = os.environ.get("MM_ASSETS", os.path.join(ROOT, "..", "shared", "assets"))

UNET = "model.diffusion_model."
VAE = "first_stage_model."
CLIP = "cond_stage_model.transformer."
OPENCLIP = "cond_stage_model.model."
SDXL_CLIP = "conditioner.embedders.0.transformer."
SDXL_OPENCLIP = "conditioner.embedders.1.model."
REFINER_OPENCLIP = "conditioner.embedders.0.model."
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


def clip_ldm(sd, prefix, n_pos):
    out = {prefix + k: v for k, v in sd.items()}
    out[prefix + "text_model.embeddings.position_ids"] = torch.arange(n_pos)[None]
    return out


OPENCLIP_LAYER = [("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"), ("mlp.fc1", "mlp.c_fc"),
                  ("mlp.fc2", "mlp.c_proj"), ("self_attn.out_proj", "attn.out_proj")]


def openclip_ldm(sd, prefix, made_up, extra_block):
    """OpenCLIP as the LDM files store it under `prefix`: fused in_proj, `text_projection` as
    [hidden, projection] and `logit_scale`. SD 2.x (`extra_block`): diffusers' CLIPTextModel
    has 23 of OpenCLIP-H's 24 resblocks and no projection, so the last block, text_projection
    and logit_scale are made up (`made_up`). SDXL: a CLIPTextModelWithProjection keeps every
    block, and its `text_projection.weight` is stored transposed; only logit_scale is made up."""
    out = {}
    e = "text_model.embeddings."
    out[prefix + "positional_embedding"] = sd[e + "position_embedding.weight"]
    out[prefix + "token_embedding.weight"] = sd[e + "token_embedding.weight"]
    for leaf in ("weight", "bias"):
        out[prefix + f"ln_final.{leaf}"] = sd[f"text_model.final_layer_norm.{leaf}"]
    layers = sorted({int(k.split(".")[3]) for k in sd if k.startswith("text_model.encoder.layers.")})
    for n in layers + [len(layers)] * extra_block:
        src = f"text_model.encoder.layers.{n}." if n < len(layers) else None
        dst = f"{prefix}transformer.resblocks.{n}."
        for leaf in ("weight", "bias"):
            if src is None:
                template = f"text_model.encoder.layers.0."
                for new, old in OPENCLIP_LAYER:
                    out[dst + f"{old}.{leaf}"] = made_up(sd[template + f"{new}.{leaf}"])
                q = sd[template + f"self_attn.q_proj.{leaf}"]
                out[dst + f"attn.in_proj_{leaf}"] = made_up(torch.cat([q, q, q]))
                continue
            for new, old in OPENCLIP_LAYER:
                out[dst + f"{old}.{leaf}"] = sd[src + f"{new}.{leaf}"]
            out[dst + f"attn.in_proj_{leaf}"] = torch.cat(
                [sd[src + f"self_attn.{x}_proj.{leaf}"] for x in "qkv"])
    hidden = sd[e + "token_embedding.weight"].shape[1]
    projection = sd.get("text_projection.weight")
    out[prefix + "text_projection"] = made_up(torch.empty(hidden, hidden)) if projection is None \
        else projection.T
    out[prefix + "logit_scale"] = made_up(torch.empty(()))
    return out


def buffers(make):
    out = {name: make((1000,)) for name in SCHEDULE_BUFFERS}
    out.update({name: make(()) for name in EMA_SCALARS})
    return out


def check_roundtrip(ldm, unet, vae, encoders, exact):
    """diffusers' converter on the LDM dict must give back every diffusers tensor."""
    got = {
        "unet": sfu.convert_ldm_unet_checkpoint(ldm, dict(unet.config)),
        "vae": sfu.convert_ldm_vae_checkpoint(ldm, dict(vae.config)),
    }
    for comp, kind, prefix, text in encoders:
        converted = sfu.convert_ldm_clip_checkpoint(ldm) if kind == "clip" \
            else sfu.convert_open_clip_checkpoint(text, ldm, prefix=prefix)
        converted.pop("text_model.embeddings.position_ids", None)
        # diffusers drops SD 2.x's last OpenCLIP resblock by a fixed list (`resblocks.23`, right
        # for the real 24-block model); for the tiny model drop every block past the config's
        # depth. (SDXL keeps every block: the list names only `cond_stage_model.` keys.)
        n = text.config.num_hidden_layers
        got[comp] = {k: v for k, v in converted.items()
                     if not (k.startswith("text_model.encoder.layers.") and int(k.split(".")[3]) >= n)}
    want = diffusers_state(unet, vae, encoders)
    for comp in got:
        part = {k[len(comp) + 1:]: v for k, v in want.items() if k.split(".")[0] == comp}
        assert set(got[comp]) == set(part), (comp, set(got[comp]) ^ set(part))
        for k, v in part.items():
            g = got[comp][k]
            assert tuple(g.shape) == tuple(v.shape), (comp, k, g.shape, v.shape)
            if exact:
                assert torch.equal(g, v), (comp, k)


def published(sd):
    """transformers 5 drops the `text_model.` prefix of a standalone CLIPTextModel; the published
    SD `text_encoder/` checkpoints (and the LDM files) keep it. (CLIPTextModelWithProjection
    still has it, next to its `text_projection`.)"""
    keep = ("text_model.", "text_projection.")
    return {k if k.startswith(keep) else "text_model." + k: v for k, v in sd.items()}


def diffusers_state(unet, vae, encoders):
    """Every tensor of the diffusers models, as `<component>.<name>` (no position_ids)."""
    out = {}
    parts = [("unet", unet.state_dict()), ("vae", vae.state_dict())]
    parts += [(comp, published(text.state_dict())) for comp, _, _, text in encoders]
    for comp, sd in parts:
        out.update({f"{comp}.{k}": v for k, v in sd.items() if not k.endswith("position_ids")})
    return out


def build(unet_cfg, vae_cfg, text_cfg):
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(**text_cfg))
    return unet, vae, text


def sd_encoders(text, openclip):
    """The text encoder of an SD 1.x (OpenAI CLIP) or SD 2.x (OpenCLIP-H) single file, as
    `(component, kind, LDM prefix, model)`."""
    return [("text_encoder", "openclip", OPENCLIP, text) if openclip else ("text_encoder", "clip", CLIP, text)]


def sdxl_encoders(text, text_2):
    """SDXL base: CLIP ViT-L and OpenCLIP bigG; the refiner (`text` None): bigG alone."""
    if text is None:
        return [("text_encoder_2", "openclip-xl", REFINER_OPENCLIP, text_2)]
    return [("text_encoder", "clip", SDXL_CLIP, text), ("text_encoder_2", "openclip-xl", SDXL_OPENCLIP, text_2)]


def to_ldm(unet, vae, encoders, make_buffer, made_up):
    """The LDM single file of these models. `make_buffer(shape)` gives the schedule buffers of
    SD 1.x / 2.x files (None: none, as in the SDXL files); `made_up(like)` the tensors the LDM
    file has and the diffusers models lack."""
    ldm = {}
    ldm.update(unet_ldm(unet.state_dict(), unet.config))
    ldm.update(vae_ldm(vae.state_dict(), vae.config))
    for _, kind, prefix, text in encoders:
        text_sd = published(text.state_dict())
        if kind == "clip":
            ldm.update(clip_ldm(text_sd, prefix, text.config.max_position_embeddings))
        else:
            ldm.update(openclip_ldm(text_sd, prefix, made_up, extra_block=kind == "openclip"))
    if make_buffer is not None:
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


def save_configs(folder, unet, vae, encoders):
    """`unet/`, `vae/` and `text_encoder/` (`text_encoder_2/`) config.json, as in a diffusers
    folder."""
    unet.save_config(os.path.join(folder, "unet"))
    vae.save_config(os.path.join(folder, "vae"))
    for comp, _, _, text in encoders:
        os.makedirs(os.path.join(folder, comp), exist_ok=True)
        text.config.to_json_file(os.path.join(folder, comp, "config.json"))


def write_tiny(name, unet, vae, encoders, make_buffer, seed):
    """Random weights, the LDM file, checked against diffusers' converter, and the diffusers
    tensors and configs."""
    folder = os.path.join(FIX, "single-file-tiny", name)
    fresh_dir(folder)
    randomize(unet, vae, *(text for *_, text in encoders), seed=seed)
    g = torch.Generator().manual_seed(2)
    ldm = to_ldm(unet, vae, encoders, (lambda s: torch.rand(s, generator=g)) if make_buffer else None,
                 lambda t: torch.randn(t.shape, generator=g))
    check_roundtrip(ldm, unet, vae, encoders, exact=True)
    save_file({k: v.contiguous() for k, v in ldm.items()}, os.path.join(folder, "ldm.safetensors"))
    diffusers = {k: v.contiguous() for k, v in diffusers_state(unet, vae, encoders).items()}
    save_file(diffusers, os.path.join(folder, "diffusers.safetensors"))
    save_configs(folder, unet, vae, encoders)
    print(f"  single-file-tiny/{name}: {len(ldm)} LDM tensors -> {len(diffusers)} diffusers tensors")


def gen_tiny(name, openclip):
    unet_cfg = dict(TINY_UNET)
    if openclip:  # the SD 2.x variant: linear projections, per-block head dims, upcast attention
        unet_cfg.update(use_linear_projection=True, upcast_attention=True, attention_head_dim=(1, 2, 2, 2), cross_attention_dim=8)
    torch.manual_seed(0)
    unet, vae, text = build(unet_cfg, TINY_VAE, dict(TINY_TEXT, hidden_act="gelu" if openclip else "quick_gelu"))
    write_tiny(name, unet, vae, sd_encoders(text, openclip), True, seed=1 if openclip else 0)


# SDXL's layout at toy size: DownBlock2D first, transformer depth per level (more than one),
# linear projections, the "text_time" added embedding (pooled text of the projection width
# plus 6 time ids, 5 for the refiner, each embedded to addition_time_embed_dim).
TINY_XL_TEXT_2 = dict(TINY_TEXT, hidden_size=12, intermediate_size=16, num_hidden_layers=3,
                      num_attention_heads=2, projection_dim=10, hidden_act="gelu")
TINY_XL_UNET = dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=2,
                    block_out_channels=(4, 4, 4), norm_num_groups=2, attention_head_dim=(1, 2, 2),
                    transformer_layers_per_block=(1, 1, 2), cross_attention_dim=8 + 12,
                    use_linear_projection=True, addition_embed_type="text_time",
                    addition_time_embed_dim=2, projection_class_embeddings_input_dim=6 * 2 + 10,
                    down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2,
                    up_block_types=("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",))
TINY_XL_REFINER_UNET = dict(TINY_XL_UNET, block_out_channels=(4, 4, 4, 4), attention_head_dim=2, layers_per_block=1,
                            transformer_layers_per_block=2, cross_attention_dim=12,
                            projection_class_embeddings_input_dim=5 * 2 + 10,
                            down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * 2 + ("DownBlock2D",),
                            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 2 + ("UpBlock2D",))
# The VAE is SD's (checked at full depth by sd1/sd2): two levels keep these fixtures small.
TINY_XL_VAE = dict(TINY_VAE, block_out_channels=(4, 4), layers_per_block=1,
                   down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


def gen_tiny_sdxl(name, refiner):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**(TINY_XL_REFINER_UNET if refiner else TINY_XL_UNET))
    vae = AutoencoderKL(**TINY_XL_VAE)
    text = None if refiner else CLIPTextModel(CLIPTextConfig(**dict(TINY_TEXT, hidden_act="quick_gelu")))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(**TINY_XL_TEXT_2))
    write_tiny(name, unet, vae, sdxl_encoders(text, text_2), False, seed=3 if refiner else 2)


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

# The published configs of stabilityai/stable-diffusion-xl-base-1.0 and -refiner-1.0 (the base
# UNet's is gen_unet.py's SDXL_BASE).
SDXL_REFINER_UNET = dict(
    SDXL_BASE,
    attention_head_dim=[6, 12, 24, 24],
    block_out_channels=[384, 768, 1536, 1536],
    cross_attention_dim=1280,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    projection_class_embeddings_input_dim=2560,
    transformer_layers_per_block=4,
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
)
SDXL_VAE = {
    "_class_name": "AutoencoderKL",
    "_diffusers_version": "0.20.0.dev0",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": True,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 1024,
    "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SDXL_TEXT = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "torch_dtype": "float16",
    "transformers_version": "4.32.0.dev0",
    "vocab_size": 49408,
}
SDXL_TEXT_2 = dict(
    SDXL_TEXT,
    architectures=["CLIPTextModelWithProjection"],
    hidden_act="gelu",
    hidden_size=1280,
    intermediate_size=5120,
    num_attention_heads=20,
    num_hidden_layers=32,
    projection_dim=1280,
)


def read_config(component):
    with open(os.path.join(ASSETS, "sd15-configs", component, "config.json")) as f:
        return {k: v for k, v in json.load(f).items() if not k.startswith("_")}


def write_list(path, entries):
    """A JSON list of (name, shape), one a line, sorted by name."""
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps([k, list(v.shape)]) for k, v in sorted(entries)) + "\n]\n")


def write_lists(folder, ldm, want):
    """ldm_tensors.json and diffusers_tensors.json."""
    write_list(os.path.join(folder, "ldm_tensors.json"), ldm.items())
    write_list(os.path.join(folder, "diffusers_tensors.json"), want.items())


def gen_full(name, unet_cfg, vae_cfg, text_cfg, openclip):
    folder = os.path.join(FIX, "full", name)
    fresh_dir(folder)
    with torch.device("meta"):
        unet, vae, text = build(unet_cfg, vae_cfg, text_cfg)
        encoders = sd_encoders(text, openclip)
        ldm = to_ldm(unet, vae, encoders, torch.empty, torch.empty_like)
    check_roundtrip(ldm, unet, vae, encoders, exact=False)
    want = diffusers_state(unet, vae, encoders)
    write_lists(folder, ldm, want)
    save_configs(folder, unet, vae, encoders)
    print(f"  full/{name}: {len(ldm)} LDM tensors -> {len(want)} diffusers tensors")


def write_json(path, cfg):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def gen_full_sdxl(name, unet_cfg, text_cfg):
    """The published configs (written as they are), `tensors.json` of each component built
    from them, and the single file's and the conversion's tensor lists (`text_cfg` None: the
    refiner, bigG alone)."""
    folder = os.path.join(FIX, "full", name)
    fresh_dir(folder)
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_cfg)
        vae = AutoencoderKL.from_config(SDXL_VAE)
        text = text_cfg and CLIPTextModel(CLIPTextConfig.from_dict(text_cfg))
        text_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_dict(SDXL_TEXT_2))
        encoders = sdxl_encoders(text, text_2)
        ldm = to_ldm(unet, vae, encoders, None, torch.empty_like)
    check_roundtrip(ldm, unet, vae, encoders, exact=False)
    want = diffusers_state(unet, vae, encoders)
    write_lists(folder, ldm, want)
    configs = {"unet": unet_cfg, "vae": SDXL_VAE, "text_encoder": text_cfg, "text_encoder_2": SDXL_TEXT_2}
    for comp in ["unet", "vae"] + [c for c, *_ in encoders]:
        write_json(os.path.join(folder, comp, "config.json"), configs[comp])
        write_list(os.path.join(folder, comp, "tensors.json"),
                   [(k[len(comp) + 1:], v) for k, v in want.items() if k.split(".")[0] == comp])
    print(f"  full/{name}: {len(ldm)} LDM tensors -> {len(want)} diffusers tensors")


def gen_pipeline(name, kind):
    """A tiny pipeline of gen_pipelines.py / gen_sdxl.py (tests/fixtures/<name>, run that script
    first) as one single file: loaded with that folder's configs, it must generate the same
    images. `kind`: "sd" (SD 1.x), "sdxl" (base) or "sdxl-refiner"."""
    src = os.path.join(FIX, name)
    unet = UNet2DConditionModel.from_pretrained(os.path.join(src, "unet"))
    vae = AutoencoderKL.from_pretrained(os.path.join(src, "vae"))
    g = torch.Generator().manual_seed(3)
    if kind == "sd":
        encoders = sd_encoders(CLIPTextModel.from_pretrained(os.path.join(src, "text_encoder")), False)
        make_buffer = lambda s: torch.rand(s, generator=g)  # noqa: E731
    else:
        text = None if kind == "sdxl-refiner" else CLIPTextModel.from_pretrained(
            os.path.join(src, "text_encoder"))
        text_2 = CLIPTextModelWithProjection.from_pretrained(os.path.join(src, "text_encoder_2"))
        encoders = sdxl_encoders(text, text_2)
        make_buffer = None
    ldm = to_ldm(unet, vae, encoders, make_buffer, lambda t: torch.randn(t.shape, generator=g))
    check_roundtrip(ldm, unet, vae, encoders, exact=True)
    out = os.path.join(FIX, "single-file-tiny", f"{name}.safetensors")
    save_file({k: v.contiguous() for k, v in ldm.items()}, out)
    print(f"  single-file-tiny/{name}.safetensors: {len(ldm)} LDM tensors")


def main():
    gen_tiny("sd1", openclip=False)
    gen_tiny("sd2", openclip=True)
    gen_tiny_sdxl("sdxl", refiner=False)
    gen_tiny_sdxl("sdxl-refiner", refiner=True)
    gen_pipeline("sd-tiny", "sd")
    gen_pipeline("sdxl-tiny", "sdxl")
    gen_pipeline("sdxl-tiny-refiner", "sdxl-refiner")
    sd15_vae = read_config("vae")
    gen_full("sd15-single-file", read_config("unet"), sd15_vae, SD15_TEXT, openclip=False)
    gen_full("sd21-single-file", SD21_UNET, sd15_vae, SD21_TEXT, openclip=True)
    gen_full_sdxl("sdxl-base", SDXL_BASE, SDXL_TEXT)
    gen_full_sdxl("sdxl-refiner", SDXL_REFINER_UNET, None)


if __name__ == "__main__":
    main()
