#!/usr/bin/env python3
"""Reference fixture generator for Stable Diffusion 3 / 3.5 (`SD3Transformer2DModel`,
`StableDiffusion3Pipeline`, `StableDiffusion3Img2ImgPipeline`) of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/sd3-transformer-tiny/
      sd3/, sd35/        `SD3Transformer2DModel.save_pretrained` folders (`config.json`,
                         `diffusion_pytorch_model.safetensors`): 3 layers, 2 heads of 4 (inner 8 =
                         caption_projection_dim), patch 2, 16 channels in and out,
                         joint_attention_dim 24, pooled_projection_dim 20, sample_size 8,
                         pos_embed_max_size 10;
                         `sd3`: no qk norm, no dual attention (SD3 medium's block layout);
                         `sd35`: qk_norm "rms_norm", dual_attention_layers [0, 1] (SD3.5 medium's).
                         Every parameter is random (adaLN gates and RMS norms included, none zero);
                         `pos_embed.pos_embed` is diffusers' own sin-cos buffer (saved, as in the
                         published checkpoints).
                         Each also holds `io.safetensors` (float32):
                           hidden_states [2,16,6,10]   latents (H 6 != W 10: token grid 3x5,
                                                       cropped from the 10x10 position table at
                                                       top (10-3)//2 = 3, left (10-5)//2 = 2)
                           timestep [2]                 [981.5, 312.25]
                           encoder_hidden_states [2,7,24]
                           pooled_projections [2,20]
                           out [2,16,6,10]              forward(...).sample
                           out_skip [2,16,6,10]         forward(..., skip_layers=[1]).sample
      single_file.safetensors
                         the `sd35` weights in the original (Stability AI MMDiT) single-file layout,
                         every key prefixed `model.diffusion_model.` (`pos_embed`, `x_embedder.proj`,
                         `t_embedder.mlp.{0,2}`, `y_embedder.mlp.{0,2}`, `context_embedder`,
                         `joint_blocks.N.{x_block,context_block}.{attn.qkv, attn.proj, attn.ln_q,
                         attn.ln_k, adaLN_modulation.1, mlp.fc1, mlp.fc2}`,
                         `joint_blocks.N.x_block.attn2.{qkv,proj,ln_q,ln_k}`,
                         `final_layer.{linear,adaLN_modulation.1}`); diffusers'
                         `convert_sd3_transformer_checkpoint_to_diffusers` and
                         `SD3Transformer2DModel.from_single_file(path, config=<sd35 folder>)` give
                         back exactly the folder's tensors

  tests/fixtures/full/sd3-medium/transformer/, full/sd35-large/transformer/,
  full/sd35-medium/transformer/
                         the published `transformer/config.json` of
                         stabilityai/stable-diffusion-3-medium-diffusers, stable-diffusion-3.5-large,
                         stable-diffusion-3.5-medium, and `tensors.json`: `[name, shape]` of every
                         tensor `save_pretrained` writes (the model's `state_dict()`, incl. the
                         persistent `pos_embed.pos_embed` buffer), sorted, built on the meta device
  tests/fixtures/full/sd3-single-file/tensors.json
                         `[name, shape]` of the diffusion model of the original single-file SD3
                         medium checkpoint (prefix `model.diffusion_model.`): the inverse of
                         diffusers' converter applied to full/sd3-medium, checked by running the
                         converter back (exactly the diffusers names and shapes, every key
                         consumed) and by diffusers' `infer_diffusers_model_type` (-> "sd3"; the
                         SD3.5 large / medium lists, not written, give "sd35_large" / "sd35_medium")

  tests/fixtures/sd3-tiny/  a complete `StableDiffusion3Pipeline` folder (`model_index.json`,
                         `transformer/`, `vae/`, `text_encoder/`, `text_encoder_2/`,
                         `text_encoder_3/`, `tokenizer/`, `tokenizer_2/`, `tokenizer_3/`,
                         `scheduler/`) with tiny random models:
      transformer/       SD3.5-like: 3 layers, 2 heads of 4 (inner 8 = caption_projection_dim),
                         qk_norm "rms_norm", dual_attention_layers [0], joint_attention_dim 48,
                         pooled_projection_dim 40, sample_size 16, pos_embed_max_size 16
                         (`proj_out` scaled by 0.3)
      vae/               `AutoencoderKL` with SD3's settings: latent_channels 16, no quant convs,
                         scaling_factor 1.5305, shift_factor 0.0609, force_upcast; widths (4, 4),
                         1 layer per block, 2 groups: downscale factor 2
      text_encoder/      `CLIPTextModelWithProjection`, hidden 16, projection 16, 2 layers, quick_gelu
      text_encoder_2/    `CLIPTextModelWithProjection`, hidden 24, projection 24, 2 layers, gelu
                         (both with the legacy eos_token_id 2: pooled at the argmax id; saved under
                         the published `text_model.*` + `text_projection.weight` names; CLIP states
                         concatenate to 16 + 24 = 40 and are zero-padded to T5's 48, as SD3 pads
                         768 + 1280 = 2048 to 4096; pooled 16 + 24 = 40)
      text_encoder_3/    `T5EncoderModel`, d_model 48, 2 heads of 8, d_ff 16, gated-gelu, 2 layers,
                         8 buckets up to distance 20, vocabulary 78 (that of tokenizer_3)
      tokenizer/, tokenizer_2/   the tiny CLIP BPE of `gen_pipelines.make_tokenizer` in the published
                         layout (`vocab.json` + `merges.txt`); `tokenizer_2` pads with `!` (id 0)
                         as SD3's does, `tokenizer` with `<|endoftext|>`
      tokenizer_3/       `tests/fixtures/t5-tokenizer/{tokenizer.json, tokenizer_config.json}`
                         verbatim (T5-style Unigram; `model_index.json` names it
                         `T5TokenizerFast` as the published one does)
      scheduler/         SD3 medium's `scheduler_config.json` verbatim
                         (FlowMatchEulerDiscreteScheduler, shift 3.0, 1000 train steps)

  sd3-tiny/single_file.safetensors
                         the pipeline's transformer (original MMDiT names under
                         `model.diffusion_model.`, as sd3-transformer-tiny/single_file) and VAE (LDM
                         names under `first_stage_model.`: `gen_single_file.vae_ldm`) as one SD3
                         single file, 97 KiB; no text encoder (the two CLIPs would add 170 KB).
                         `StableDiffusion3Pipeline.from_single_file(file, config=<sd3-tiny>)`, the
                         text encoders loaded from the folder and passed in (diffusers looks for a
                         missing component's weights under `diffusion_pytorch_model.*` only), gives
                         back the folder's weights exactly. A file with the text encoders too
                         (`text_encoders.{clip_l,clip_g,t5xxl}.transformer.` + transformers' names;
                         written to a temporary file, checked, removed) loads with CLIP-G and T5 as
                         stored and CLIP-L's `text_projection` the identity (diffusers'
                         `torch.eye(hidden)`, whatever the file holds).

  Images are 12x20 pixels: latents [., 16, 6, 10], token grid 3x5 cropped from the 16x16 position
  table at top (16-3)//2 = 6, left (16-5)//2 = 5. The folder is checked to load back with
  `StableDiffusion3Pipeline.from_pretrained` to the same weights.

  sd3-tiny/expected.safetensors (float32):
    encode.<name>.{prompt_embeds, pooled_prompt_embeds}
    encode.<name>.{negative_prompt_embeds, negative_pooled_prompt_embeds}   (cases with
                         `negatives_stored`)
                         `pipe.encode_prompt(...)`: prompt_embeds [B, 77 + max_sequence_length, 48]
                         = the CLIP penultimate states (te1 ++ te2, zero-padded 40 -> 48) followed
                         by T5's last states; pooled [B, 40] = te1 ++ te2 `text_embeds`
    latents1 [1,16,6,10], latents2 [2,16,6,10]    initial latents passed to the text-to-image runs
    image [1,3,12,20]    8-bit values in [0, 1]: the img2img input
    <case>.latents_out   `output_type="latent"` (the raw latents, before 1/scaling + shift)
    <case>.images        `output_type="pt"` (in [0, 1])
    <case>.draw.<i>      every `randn_tensor` draw of the run, in order (img2img: draw.0 the VAE
                         posterior sample [1,16,6,10], draw.1 the noise of `scheduler.scale_noise`;
                         text-to-image with given latents: none)
    t2i_cfg.{hidden_states [2,16,6,10], timestep [2], encoder_hidden_states [2,109,48],
             pooled_projections [2,40], out [2,16,6,10]}
                         what the first transformer call of `t2i_cfg` received (CFG batch:
                         negative first; encoder_hidden_states =
                         cat(encode.cfg.negative_prompt_embeds, encode.cfg.prompt_embeds)) and
                         returned

  sd3-tiny/expected.json: the prompts (`prompt`, `negative_prompt`, `prompt_2`,
  `negative_prompt_2`, `prompt_3`, `long_prompt`), `tokens.t5` (T5 ids of
  the T5 inputs at the lengths used), `encode` (per case: the `encode_prompt` arguments,
  `max_sequence_length`, `text_encoder_3` — false: the pipeline has `text_encoder_3=None` —,
  `negatives_stored`) and `cases` (`call`, `scheduler`, `scheduler_overrides`, `kwargs` — every
  keyword of the pipeline call except generator/output_type/image/latents —, `latents`, `image`,
  `seed`, `draws`, `text_encoder_3` and `transformer_calls`: per transformer call of one run its
  `timestep`, `batch` and `skip_layers`).

  Encode cases (max_sequence_length 32 unless said; the prompt is 28 T5 tokens): cfg (negative
  prompt), prompt_3 (a different `prompt_3`, no guidance: only the T5 rows change), no_t5 (no
  `text_encoder_3`: T5 rows are zeros; no guidance), max_seq8 (the long prompt — 83 CLIP
  tokens, cut to 77; 163 T5 tokens, cut to 7 + `</s>` —; no guidance), clip_skip1
  (`clip_skip=1`: hidden_states[-3], which with 2 layers is the embeddings' output; diffusers
  applies it to the positive prompt only, so the negatives equal encode.cfg's and are not
  stored again).
  Runs (latents1 unless said, guidance 7 with the negative prompt unless said): t2i_cfg (4 steps,
  max_sequence_length 32), t2i_no_cfg (guidance 1), t2i_no_t5 (`text_encoder_3=None`,
  `tokenizer_3=None`), t2i_slg (skip_guidance_layers [1], start 0, stop 0.6, scale 2.8, 5 steps:
  steps 1 and 2 add the skip-layer pass, steps 0, 3, 4 do not), img2img
  (`StableDiffusion3Img2ImgPipeline` from the same components, strength 0.6, 5 steps of which 3
  run, seed 5), two_images (num_images_per_prompt 2, latents2), max_seq8 (the long prompt,
  max_sequence_length 8); all but t2i_cfg and max_seq8 at the default max_sequence_length 256.

Usage:  python tools/reference/gen_sd3.py     # diffusers 0.42.1, transformers 5.24; ~10 s on CPU;
                                              # byte-identical reruns
"""

import hashlib
import json
import math
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.models.autoencoders.vae as dvae  # noqa: E402
import diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 as p3_txt  # noqa: E402
import diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img as p3_img  # noqa: E402
import diffusers.schedulers.scheduling_flow_match_euler_discrete as s_fm  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    SD3Transformer2DModel,
    StableDiffusion3Img2ImgPipeline,
    StableDiffusion3Pipeline,
)
from diffusers.loaders.single_file_utils import (  # noqa: E402
    convert_sd3_transformer_checkpoint_to_diffusers,
    infer_diffusers_model_type,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from gen_diffusion import FIX, fresh_dir  # noqa: E402
from gen_pipelines import (  # noqa: E402
    LONG_PROMPT,
    NEGATIVE,
    PROMPT,
    DrawRecorder,
    finish,
    make_tokenizer,
    publish_tokenizer,
    run,
)
from gen_sdxl import NEGATIVE_2, PROMPT_2, publish_tokenizer_2, reload_tokenizers  # noqa: E402
from gen_single_file import VAE as LDM_VAE, vae_ldm, write_list  # noqa: E402

torch.set_default_dtype(torch.float32)
diffusers.utils.logging.set_verbosity_error()

PREFIX = "model.diffusion_model."
PROMPT_3 = "the cat and the dog on a mat"
SEQ = 32  # max_sequence_length of the encode cases (PROMPT is 28 T5 tokens: untruncated)
HEIGHT, WIDTH = 12, 20
GUIDANCE = 7.0
T5_TOKENIZER = os.path.join(FIX, "t5-tokenizer")

# stabilityai/stable-diffusion-3-medium-diffusers scheduler/scheduler_config.json.
SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "_diffusers_version": "0.29.0.dev0",
    "num_train_timesteps": 1000,
    "shift": 3.0,
}

# The published transformer/config.json files (values checked against public copies;
# `_diffusers_version` as recalled: informational only).
SD3_MEDIUM = {
    "_class_name": "SD3Transformer2DModel",
    "_diffusers_version": "0.29.0.dev0",
    "attention_head_dim": 64,
    "caption_projection_dim": 1536,
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 24,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "sample_size": 128,
}
SD35_LARGE = {
    "_class_name": "SD3Transformer2DModel",
    "_diffusers_version": "0.31.0.dev0",
    "attention_head_dim": 64,
    "caption_projection_dim": 2432,
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 38,
    "num_layers": 38,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 192,
    "qk_norm": "rms_norm",
    "sample_size": 128,
}
SD35_MEDIUM = {
    "_class_name": "SD3Transformer2DModel",
    "_diffusers_version": "0.31.0.dev0",
    "attention_head_dim": 64,
    "caption_projection_dim": 1536,
    "dual_attention_layers": list(range(13)),
    "in_channels": 16,
    "joint_attention_dim": 4096,
    "num_attention_heads": 24,
    "num_layers": 24,
    "out_channels": 16,
    "patch_size": 2,
    "pooled_projection_dim": 2048,
    "pos_embed_max_size": 384,
    "qk_norm": "rms_norm",
    "sample_size": 128,
}

TINY = dict(
    sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=3,
    attention_head_dim=4, num_attention_heads=2, joint_attention_dim=24,
    caption_projection_dim=8, pooled_projection_dim=20, pos_embed_max_size=10,
)
TINY_CONFIGS = {
    "sd3": dict(TINY, dual_attention_layers=(), qk_norm=None),
    "sd35": dict(TINY, dual_attention_layers=(0, 1), qk_norm="rms_norm"),
}


def randomize(model, seed):
    """Every parameter random, none left at its (often zero) initial value: norm weights
    (LayerNorm / GroupNorm / RMSNorm / T5LayerNorm) around 1, biases small, other weights scaled
    by fan-in so activations stay O(1). (`gen_diffusion.randomize`, plus the RMS norms.)"""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mod in model.modules():
        if "Norm" in type(mod).__name__:
            for p in mod.parameters(recurse=False):
                norm_params.add(id(p))
    with torch.no_grad():
        for name, p in model.named_parameters():
            shape = p.shape
            leaf = name.rsplit(".", 1)[-1]
            if id(p) in norm_params:
                base = 1.0 if leaf == "weight" else 0.0
                p.copy_(base + 0.2 * torch.randn(shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(shape, generator=g))
            else:
                p.copy_(torch.randn(shape, generator=g) / math.sqrt(shape[1:].numel()))
    return model


# --------------------------------------------------------------------------------------------
# Single-file layout: the inverse of diffusers' `convert_sd3_transformer_checkpoint_to_diffusers`.

def swap_scale_shift(w):
    """diffusers' `swap_scale_shift` swaps the two halves; it is its own inverse."""
    a, b = w.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def to_single_file(sd, num_layers, cat=torch.cat):
    """diffusers `SD3Transformer2DModel` state dict -> original MMDiT names (no prefix)."""
    out = {}
    src = dict(sd)

    def take(name):
        return src.pop(name)

    def lin(dst, s):
        out[f"{dst}.weight"] = take(f"{s}.weight")
        out[f"{dst}.bias"] = take(f"{s}.bias")

    out["pos_embed"] = take("pos_embed.pos_embed")
    lin("x_embedder.proj", "pos_embed.proj")
    lin("t_embedder.mlp.0", "time_text_embed.timestep_embedder.linear_1")
    lin("t_embedder.mlp.2", "time_text_embed.timestep_embedder.linear_2")
    lin("y_embedder.mlp.0", "time_text_embed.text_embedder.linear_1")
    lin("y_embedder.mlp.2", "time_text_embed.text_embedder.linear_2")
    lin("context_embedder", "context_embedder")
    for i in range(num_layers):
        d, x, c = f"transformer_blocks.{i}", f"joint_blocks.{i}.x_block", f"joint_blocks.{i}.context_block"
        last = i == num_layers - 1
        for leaf in ("weight", "bias"):
            out[f"{x}.attn.qkv.{leaf}"] = cat([take(f"{d}.attn.to_{n}.{leaf}") for n in "qkv"])
            out[f"{c}.attn.qkv.{leaf}"] = cat([take(f"{d}.attn.add_{n}_proj.{leaf}") for n in "qkv"])
        if f"{d}.attn.norm_q.weight" in src:
            out[f"{x}.attn.ln_q.weight"] = take(f"{d}.attn.norm_q.weight")
            out[f"{x}.attn.ln_k.weight"] = take(f"{d}.attn.norm_k.weight")
            out[f"{c}.attn.ln_q.weight"] = take(f"{d}.attn.norm_added_q.weight")
            out[f"{c}.attn.ln_k.weight"] = take(f"{d}.attn.norm_added_k.weight")
        lin(f"{x}.attn.proj", f"{d}.attn.to_out.0")
        if not last:
            lin(f"{c}.attn.proj", f"{d}.attn.to_add_out")
        if f"{d}.attn2.to_q.weight" in src:
            for leaf in ("weight", "bias"):
                out[f"{x}.attn2.qkv.{leaf}"] = cat([take(f"{d}.attn2.to_{n}.{leaf}") for n in "qkv"])
            if f"{d}.attn2.norm_q.weight" in src:
                out[f"{x}.attn2.ln_q.weight"] = take(f"{d}.attn2.norm_q.weight")
                out[f"{x}.attn2.ln_k.weight"] = take(f"{d}.attn2.norm_k.weight")
            lin(f"{x}.attn2.proj", f"{d}.attn2.to_out.0")
        lin(f"{x}.adaLN_modulation.1", f"{d}.norm1.linear")
        if last:
            # The last context block is "pre only": diffusers' AdaLayerNormContinuous splits
            # (scale, shift) where the original splits (shift, scale).
            for leaf in ("weight", "bias"):
                out[f"{c}.adaLN_modulation.1.{leaf}"] = swap_scale_shift(take(f"{d}.norm1_context.linear.{leaf}"))
        else:
            lin(f"{c}.adaLN_modulation.1", f"{d}.norm1_context.linear")
        lin(f"{x}.mlp.fc1", f"{d}.ff.net.0.proj")
        lin(f"{x}.mlp.fc2", f"{d}.ff.net.2")
        if not last:
            lin(f"{c}.mlp.fc1", f"{d}.ff_context.net.0.proj")
            lin(f"{c}.mlp.fc2", f"{d}.ff_context.net.2")
    lin("final_layer.linear", "proj_out")
    for leaf in ("weight", "bias"):
        out[f"final_layer.adaLN_modulation.1.{leaf}"] = swap_scale_shift(take(f"norm_out.linear.{leaf}"))
    assert not src, f"unmapped diffusers tensors: {sorted(src)}"
    return out


def check_converter(single, diffusers_sd, exact):
    """diffusers' converter maps the prefixed single-file dict back onto `diffusers_sd`
    (names and shapes; values too when `exact`) and consumes every key."""
    ckpt = {PREFIX + k: v for k, v in single.items()}
    back = convert_sd3_transformer_checkpoint_to_diffusers(ckpt)
    assert not ckpt, f"converter left {sorted(ckpt)}"
    assert sorted(back) == sorted(diffusers_sd), (
        sorted(set(back) ^ set(diffusers_sd)))
    for k, v in back.items():
        assert v.shape == diffusers_sd[k].shape, k
        if exact:
            assert torch.equal(v, diffusers_sd[k]), k


# --------------------------------------------------------------------------------------------
# 1. Tiny transformers.

def gen_transformer_tiny():
    root = os.path.join(FIX, "sd3-transformer-tiny")
    fresh_dir(root)
    for idx, (name, cfg) in enumerate(TINY_CONFIGS.items()):
        folder = os.path.join(root, name)
        torch.manual_seed(0)
        model = randomize(SD3Transformer2DModel(**cfg), 60 + idx).eval()
        assert all(p.abs().min() > 0 for p in model.parameters())  # nothing left at zero
        model.save_pretrained(folder, safe_serialization=True)
        saved = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
        assert sorted(saved) == sorted(model.state_dict()), name
        reloaded = SD3Transformer2DModel.from_pretrained(folder).eval()

        g = torch.Generator().manual_seed(70 + idx)
        io = {
            "hidden_states": torch.randn(2, 16, 6, 10, generator=g),
            "timestep": torch.tensor([981.5, 312.25]),
            "encoder_hidden_states": torch.randn(2, 7, cfg["joint_attention_dim"], generator=g),
            "pooled_projections": torch.randn(2, cfg["pooled_projection_dim"], generator=g),
        }
        with torch.no_grad():
            out = reloaded(**io).sample
            out_skip = reloaded(**io, skip_layers=[1]).sample
            assert torch.equal(out, model(**io).sample)
        assert (out - out_skip).abs().max() > 1e-2
        io.update(out=out, out_skip=out_skip)
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(folder, "io.safetensors"),
                  metadata={"format": "pt"})
        print(f"  sd3-transformer-tiny/{name}: |out| max {out.abs().max().item():.2f}, "
              f"std {out.std().item():.2f}, |out - out_skip| max {(out - out_skip).abs().max().item():.2f}")

        if name == "sd35":
            sd = {k: v.clone() for k, v in model.state_dict().items()}
            single = to_single_file(sd, cfg["num_layers"])
            check_converter(single, sd, exact=True)
            path = os.path.join(root, "single_file.safetensors")
            save_file({PREFIX + k: v.contiguous() for k, v in single.items()}, path,
                      metadata={"format": "pt"})
            from_single = SD3Transformer2DModel.from_single_file(path, config=folder).eval()
            for k, v in from_single.state_dict().items():
                assert torch.equal(v, sd[k]), k
            with torch.no_grad():
                assert torch.equal(from_single(**{k: io[k] for k in list(io)[:4]}).sample, out)
            print(f"  sd3-transformer-tiny/single_file.safetensors: {len(single)} tensors, "
                  "converter and from_single_file give back the folder's weights")
    for dirpath, _, files in os.walk(root):
        for f in files:
            os.chmod(os.path.join(dirpath, f), 0o644)


# --------------------------------------------------------------------------------------------
# 3. Full-size name / shape lists.

def meta_state(config):
    kwargs = {k: v for k, v in config.items() if not k.startswith("_")}
    with torch.device("meta"):
        model = SD3Transformer2DModel(**kwargs)
    return model.state_dict()


def gen_full():
    for name, cfg in (("sd3-medium", SD3_MEDIUM), ("sd35-large", SD35_LARGE),
                      ("sd35-medium", SD35_MEDIUM)):
        folder = os.path.join(FIX, "full", name, "transformer")
        fresh_dir(os.path.dirname(folder))
        os.makedirs(folder)
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
            f.write("\n")
        state = meta_state(cfg)
        write_list(os.path.join(folder, "tensors.json"), state.items())
        # The original layout of each (checked against the converter, not written except SD3 medium).
        single = to_single_file(state, cfg["num_layers"])
        check_converter(single, state, exact=False)
        prefixed = {PREFIX + k: v for k, v in single.items()}
        kind = infer_diffusers_model_type(prefixed)
        expect = {"sd3-medium": "sd3", "sd35-large": "sd35_large", "sd35-medium": "sd35_medium"}[name]
        assert kind == expect, (name, kind)
        n = sum(v.numel() for v in state.values())
        print(f"  full/{name}/transformer: {len(state)} tensors, {n / 1e9:.3f} G values; "
              f"single file {len(single)} tensors, detected as {kind!r}")
        if name == "sd3-medium":
            out = os.path.join(FIX, "full", "sd3-single-file")
            fresh_dir(out)
            write_list(os.path.join(out, "tensors.json"), prefixed.items())


# --------------------------------------------------------------------------------------------
# 2. The pipeline.

# Where Stability AI's SD3 files keep the text encoders (transformers' own names below).
CLIP_L, CLIP_G, T5XXL = (f"text_encoders.{n}.transformer." for n in ("clip_l", "clip_g", "t5xxl"))


def sd3_single_file(pipe, encoders=False):
    """The pipeline's transformer (`model.diffusion_model.`, original MMDiT names) and VAE
    (`first_stage_model.`, LDM names) as one SD3 single file; with `encoders`, the three text
    encoders too (`text_encoders.{clip_l,clip_g,t5xxl}.transformer.` + transformers' names,
    CLIP's `position_ids` buffer included as in the published files)."""
    sd = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    single = {PREFIX + k: v for k, v in to_single_file(sd, pipe.transformer.config.num_layers).items()}
    single.update(vae_ldm(pipe.vae.state_dict(), pipe.vae.config))
    if encoders:
        for prefix, model in ((CLIP_L, pipe.text_encoder), (CLIP_G, pipe.text_encoder_2)):
            single.update({prefix + k: v for k, v in model.state_dict().items()})
            single[prefix + "text_model.embeddings.position_ids"] = torch.arange(77)[None]
        # `encoder.embed_tokens` is tied to `shared`: stored twice (a copy), as diffusers
        # leaves it unloaded (on the meta device) when only `shared` is in the file.
        single.update({T5XXL + k: v.clone() for k, v in pipe.text_encoder_3.state_dict().items()})
    return {k: v.contiguous() for k, v in single.items()}


def assert_same_weights(a, b, name):
    a, b = a.state_dict(), b.state_dict()
    meta = [k for k, v in a.items() if v.is_meta]
    assert not meta, (name, meta)
    assert sorted(a) == sorted(b), (name, sorted(set(a) ^ set(b)))
    assert all(torch.equal(a[k], b[k]) for k in a), name


def gen_single_file(pipe, folder):
    """sd3-tiny/single_file.safetensors: the transformer and the VAE (no text encoder: the
    CLIPs alone would weigh 170 KB), which diffusers' `from_single_file` with the folder as
    `config` loads back to the folder's weights (text encoders from the folder). A file with
    the text encoders too (not written) checks what diffusers makes of them: CLIP-G and T5 as
    stored, CLIP-L with an identity `text_projection` whatever the file holds."""
    path = os.path.join(folder, "single_file.safetensors")
    single = sd3_single_file(pipe)
    assert all(k.startswith((PREFIX, LDM_VAE)) for k in single)
    save_file(single, path, metadata={"format": "pt"})
    # diffusers looks for a missing component's weights under its own file names
    # (`diffusion_pytorch_model.*`) only: the text encoders' `model.safetensors` are passed in
    # (loaded from the folder, as the Rust loader takes them).
    encoders = {sub: type(getattr(pipe, sub)).from_pretrained(os.path.join(folder, sub))
                for sub in ("text_encoder", "text_encoder_2", "text_encoder_3")}
    loaded = StableDiffusion3Pipeline.from_single_file(path, config=folder, **encoders)
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        assert_same_weights(getattr(loaded, sub), getattr(pipe, sub), sub)
    del loaded
    print(f"  sd3-tiny/single_file.safetensors: {len(single)} tensors, "
          f"{os.path.getsize(path) / 1024:.0f} KiB; from_single_file gives back the folder's weights")

    tmp = os.path.join(folder, "single_file_with_encoders.tmp.safetensors")
    try:
        save_file(sd3_single_file(pipe, encoders=True), tmp, metadata={"format": "pt"})
        loaded = StableDiffusion3Pipeline.from_single_file(tmp, config=folder)
        assert loaded.text_encoder_3 is not None
        for sub in ("transformer", "vae", "text_encoder_2", "text_encoder_3"):
            assert_same_weights(getattr(loaded, sub), getattr(pipe, sub), sub)
        a, b = loaded.text_encoder.state_dict(), pipe.text_encoder.state_dict()
        assert sorted(a) == sorted(b)
        for k in a:
            want = torch.eye(16) if k == "text_projection.weight" else b[k]
            assert torch.equal(a[k], want), k
        assert not torch.equal(b["text_projection.weight"], torch.eye(16))
        del loaded
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    print("  (with the text encoders: CLIP-G and T5 as stored, CLIP-L's projection the identity)")


class Sd3DrawRecorder(DrawRecorder):
    """`gen_pipelines.DrawRecorder` on the SD3 pipeline modules, the VAE posterior and the
    flow-matching scheduler (which draws only with `stochastic_sampling`)."""

    modules = (dvae, p3_txt, p3_img, s_fm)


class TransformerCapture:
    """Wraps `transformer.forward`: keeps what the first call after `reset()` received and
    returned, and the timestep / batch / skip_layers of every call."""

    def __init__(self, transformer):
        self.first, self.calls = None, []
        forward = transformer.forward

        def capturing(*args, **kwargs):
            out = forward(*args, **kwargs)
            t = kwargs["timestep"]
            self.calls.append({
                "timestep": float(t[0]),
                "batch": int(kwargs["hidden_states"].shape[0]),
                "skip_layers": kwargs.get("skip_layers"),
            })
            assert torch.equal(t, t[:1].expand_as(t))
            if self.first is None:
                self.first = {k: kwargs[k].clone() for k in (
                    "hidden_states", "timestep", "encoder_hidden_states", "pooled_projections")}
                self.first["out"] = out[0].clone()
            return out

        transformer.forward = capturing

    def reset(self):
        self.first, self.calls = None, []


def text_config(vocab_size, hidden, act):
    # Legacy CLIP ids (bos 0, eos 2, pad 1) as in the published SD3 text encoder configs:
    # transformers pools at input_ids.argmax(-1).
    return CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
        projection_dim=hidden, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, hidden_act=act, bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )


def make_components(vocab_size):
    torch.manual_seed(0)
    te1 = randomize(CLIPTextModelWithProjection(text_config(vocab_size, 16, "quick_gelu")), 81).eval()
    torch.manual_seed(0)
    te2 = randomize(CLIPTextModelWithProjection(text_config(vocab_size, 24, "gelu")), 82).eval()
    t5_config = T5Config(
        vocab_size=78, d_model=48, d_kv=8, d_ff=16, num_layers=2, num_heads=2,
        relative_attention_num_buckets=8, relative_attention_max_distance=20,
        feed_forward_proj="gated-gelu", dropout_rate=0.0,
    )
    torch.manual_seed(0)
    te3 = randomize(T5EncoderModel(t5_config), 83).eval()
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(4, 4),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=2,
        sample_size=32,
        use_quant_conv=False,
        use_post_quant_conv=False,
        scaling_factor=1.5305,
        shift_factor=0.0609,
        force_upcast=True,
    )
    vae = randomize(vae, 84).eval()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=16, out_channels=16, num_layers=3,
        attention_head_dim=4, num_attention_heads=2, joint_attention_dim=48,
        caption_projection_dim=8, pooled_projection_dim=40, pos_embed_max_size=16,
        dual_attention_layers=(0,), qk_norm="rms_norm",
    )
    transformer = randomize(transformer, 85).eval()
    with torch.no_grad():
        # Keep the velocity O(0.3) so that 4-5 steps of CFG 7 stay in range.
        transformer.proj_out.weight.mul_(0.3)
        transformer.proj_out.bias.mul_(0.3)
    return te1, te2, te3, vae, transformer


def check_with_projection(folder, sub, model):
    """`CLIPTextModelWithProjection` saves the published names (`text_model.*`,
    `text_projection.weight`): check them and that they load back."""
    path = os.path.join(folder, sub)
    names = load_file(os.path.join(path, "model.safetensors")).keys()
    assert "text_projection.weight" in names
    assert all(n.startswith("text_model.") or n == "text_projection.weight" for n in names)
    reloaded = CLIPTextModelWithProjection.from_pretrained(path).eval()
    ids = torch.arange(77).unsqueeze(0) % model.config.vocab_size
    with torch.no_grad():
        a, b = reloaded(ids), model(ids)
    # Equal up to float rounding: the loaded weights sit at other alignments (other SIMD paths).
    assert torch.allclose(a.last_hidden_state, b.last_hidden_state, rtol=0, atol=1e-5)
    assert torch.allclose(a.text_embeds, b.text_embeds, rtol=0, atol=1e-5)


def publish_tokenizer_3(folder):
    """tokenizer_3/ holds exactly the t5-tokenizer fixture's files."""
    out = os.path.join(folder, "tokenizer_3")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(T5_TOKENIZER, name), os.path.join(out, name))
    tok = T5TokenizerFast.from_pretrained(out)
    ref = T5TokenizerFast.from_pretrained(T5_TOKENIZER)
    for t in (PROMPT, NEGATIVE, "", LONG_PROMPT, PROMPT_3):
        for n in (8, SEQ, 256):
            a = tok(t, padding="max_length", max_length=n, truncation=True).input_ids
            assert a == ref(t, padding="max_length", max_length=n, truncation=True).input_ids
    assert tok.pad_token_id == 0 and tok.eos_token_id == 1
    return tok


def write_scheduler(folder):
    sched_dir = os.path.join(folder, "scheduler")
    with open(os.path.join(sched_dir, "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
        f.write("\n")
    return FlowMatchEulerDiscreteScheduler.from_pretrained(sched_dir)


def encode_cases(pipes, expected, specs):
    """Stores the outputs of each encode case; returns the cases' arguments and every output
    (stored or not) as `raw[name][key]`."""
    cases, raw = {}, {}
    for name, spec in specs.items():
        pipe = pipes[spec.get("text_encoder_3", True)]
        msl = spec.get("max_sequence_length", SEQ)
        with torch.no_grad():
            pe, npe, pooled, npooled = pipe.encode_prompt(
                spec["prompt"], spec.get("prompt_2"), spec.get("prompt_3"),
                device=torch.device("cpu"),
                num_images_per_prompt=spec.get("num_images_per_prompt", 1),
                do_classifier_free_guidance=spec["guidance"],
                negative_prompt=spec.get("negative_prompt"),
                negative_prompt_2=spec.get("negative_prompt_2"),
                negative_prompt_3=spec.get("negative_prompt_3"),
                clip_skip=spec.get("clip_skip"),
                max_sequence_length=msl,
            )
        assert pe.shape[1:] == (77 + msl, 48), pe.shape
        expected[f"encode.{name}.prompt_embeds"] = pe
        expected[f"encode.{name}.pooled_prompt_embeds"] = pooled
        raw[name] = {"prompt_embeds": pe, "pooled_prompt_embeds": pooled,
                     "negative_prompt_embeds": npe, "negative_pooled_prompt_embeds": npooled}
        if spec["guidance"] and spec.get("store_negative", True):
            expected[f"encode.{name}.negative_prompt_embeds"] = npe
            expected[f"encode.{name}.negative_pooled_prompt_embeds"] = npooled
        cases[name] = {
            "prompt": spec["prompt"],
            "prompt_2": spec.get("prompt_2"),
            "prompt_3": spec.get("prompt_3"),
            "negative_prompt": spec.get("negative_prompt"),
            "negative_prompt_2": spec.get("negative_prompt_2"),
            "negative_prompt_3": spec.get("negative_prompt_3"),
            "num_images_per_prompt": spec.get("num_images_per_prompt", 1),
            "guidance": spec["guidance"],
            "clip_skip": spec.get("clip_skip"),
            "max_sequence_length": msl,
            "text_encoder_3": spec.get("text_encoder_3", True),
            "negatives_stored": spec["guidance"] and spec.get("store_negative", True),
        }
    return cases, raw


class Runner:
    def __init__(self, recorder, capture, expected, config):
        self.recorder, self.capture, self.expected = recorder, capture, expected
        self.config = config  # the folder's scheduler config
        self.cases, self.fractions = {}, {}

    def __call__(self, pipe, name, call, seed, kwargs, latents=None, image=None,
                 keep_first=False, text_encoder_3=True):
        """Runs `pipe` with the folder's scheduler; `latents` / `image` are (expected key,
        tensor) pairs. `keep_first`: store what the first transformer call got and gave."""
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.config)
        call_kwargs = dict(kwargs)
        for key, arg in (("latents", latents), ("image", image)):
            if arg is not None:
                call_kwargs[key] = arg[1]
        settings = {
            "call": call,
            "scheduler": "FlowMatchEulerDiscreteScheduler",
            "scheduler_overrides": {},
            "kwargs": kwargs,
            "latents": latents[0] if latents else None,
            "image": image[0] if image else None,
            "seed": seed,
            "text_encoder_3": text_encoder_3,
        }
        self.capture.reset()
        run(pipe, self.recorder, self.expected, name, settings, **call_kwargs)
        calls = self.capture.calls
        half = len(calls) // 2  # run() calls the pipeline twice (latents, then images)
        assert calls[:half] == calls[half:], name
        settings["transformer_calls"] = calls[:half]
        if keep_first:
            for k, v in self.capture.first.items():
                self.expected[f"{name}.{k}"] = v
        lat, img = self.expected[f"{name}.latents_out"], self.expected[f"{name}.images"]
        assert torch.isfinite(lat).all() and torch.isfinite(img).all(), name
        frac = ((img > 0.001) & (img < 0.999)).float().mean().item()
        assert frac > 0.5, f"{name}: only {frac:.2f} of the pixels unclamped"
        self.fractions[name] = frac
        print(f"      latents |max| {lat.abs().max().item():.2f}, image std {img.std().item():.3f}, "
              f"{len(calls[:half])} transformer calls")
        self.cases[name] = settings
        return settings


def gen_pipeline(recorder):
    folder = os.path.join(FIX, "sd3-tiny")
    tok_dir = os.path.join(FIX, "sd3-tiny-tokenizer-tmp")
    try:
        tok, vocab_size = make_tokenizer(tok_dir)
        tok2 = CLIPTokenizer(os.path.join(tok_dir, "vocab.json"), os.path.join(tok_dir, "merges.txt"),
                             model_max_length=77, pad_token="!")
        tok3 = T5TokenizerFast.from_pretrained(T5_TOKENIZER)
        te1, te2, te3, vae, transformer = make_components(vocab_size)
        pipe = StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER),
            vae=vae, text_encoder=te1, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok2,
            text_encoder_3=te3, tokenizer_3=tok3,
        )
        pipe.set_progress_bar_config(disable=True)
        fresh_dir(folder)
        pipe.save_pretrained(folder, safe_serialization=True)
        check_with_projection(folder, "text_encoder", te1)
        check_with_projection(folder, "text_encoder_2", te2)
        publish_tokenizer(folder, tok_dir)
        publish_tokenizer_2(folder, tok_dir)
        pipe.tokenizer_3 = publish_tokenizer_3(folder)
        pipe.scheduler = write_scheduler(folder)
        pipe.tokenizer, pipe.tokenizer_2 = reload_tokenizers(folder, tok, tok2)
    finally:
        shutil.rmtree(tok_dir, ignore_errors=True)
    assert pipe.tokenizer.pad_token_id != pipe.tokenizer_2.pad_token_id
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer_2.pad_token_id == 0
    # transformers 5 names the tokenizer class `T5Tokenizer` (T5TokenizerFast is an alias of it);
    # the published SD3 model_index.json says T5TokenizerFast, which still loads.
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    assert index["tokenizer_3"] == ["transformers", "T5Tokenizer"], index
    index["tokenizer_3"] = ["transformers", "T5TokenizerFast"]
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2, sort_keys=True)
        f.write("\n")
    assert index["text_encoder_3"] == ["transformers", "T5EncoderModel"], index
    assert index["image_encoder"] == [None, None] and index["feature_extractor"] == [None, None]
    assert pipe.vae_scale_factor == 2

    # The folder loads back in diffusers to the same models.
    loaded = StableDiffusion3Pipeline.from_pretrained(folder)
    for sub in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        a, b = getattr(loaded, sub).state_dict(), getattr(pipe, sub).state_dict()
        assert sorted(a) == sorted(b), sub
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    del loaded
    gen_single_file(pipe, folder)

    no_t5 = StableDiffusion3Pipeline(**dict(pipe.components, text_encoder_3=None, tokenizer_3=None))
    no_t5.set_progress_bar_config(disable=True)

    expected = {}
    out = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "prompt_2": PROMPT_2,
           "negative_prompt_2": NEGATIVE_2, "prompt_3": PROMPT_3,
           "long_prompt": LONG_PROMPT}
    out["tokens"] = {
        "t5": [
            {"text": t, "max_length": n,
             "ids": pipe.tokenizer_3(t, padding="max_length", max_length=n, truncation=True).input_ids}
            for t, n in ((PROMPT, SEQ), (NEGATIVE, SEQ), ("", SEQ), (PROMPT_3, SEQ),
                         (LONG_PROMPT, 8), ("", 8))
        ],
    }
    out["encode"], e = encode_cases({True: pipe, False: no_t5}, expected, {
        "cfg": dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=True),
        "prompt_3": dict(prompt=PROMPT, prompt_3=PROMPT_3, guidance=False),
        "no_t5": dict(prompt=PROMPT, guidance=False, text_encoder_3=False),
        "max_seq8": dict(prompt=LONG_PROMPT, guidance=False, max_sequence_length=8),
        # diffusers applies clip_skip to the positive prompt only: the negatives are
        # encode.cfg's (checked below), not stored again.
        "clip_skip1": dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance=True, clip_skip=1,
                           store_negative=False),
    })
    # Sanity: what each case changes, and only that.
    cfg_, p3, no3, skip = e["cfg"], e["prompt_3"], e["no_t5"], e["clip_skip1"]
    for k in ("prompt_embeds", "negative_prompt_embeds"):
        assert not cfg_[k][:, :77, 40:].any()  # CLIP 16 + 24 = 40 zero-padded to 48
    assert torch.equal(p3["prompt_embeds"][:, :77], cfg_["prompt_embeds"][:, :77])
    assert not torch.equal(p3["prompt_embeds"][:, 77:], cfg_["prompt_embeds"][:, 77:])
    assert torch.equal(p3["pooled_prompt_embeds"], cfg_["pooled_prompt_embeds"])
    assert torch.equal(no3["prompt_embeds"][:, :77], cfg_["prompt_embeds"][:, :77])
    assert not no3["prompt_embeds"][:, 77:].any()
    for k in ("pooled_prompt_embeds", "negative_pooled_prompt_embeds"):
        assert torch.equal(skip[k], cfg_[k])
    # clip_skip reaches the positive prompt's CLIP states only.
    assert not torch.equal(skip["prompt_embeds"][:, :77], cfg_["prompt_embeds"][:, :77])
    assert torch.equal(skip["prompt_embeds"][:, 77:], cfg_["prompt_embeds"][:, 77:])
    assert torch.equal(skip["negative_prompt_embeds"], cfg_["negative_prompt_embeds"])

    g = torch.Generator().manual_seed(90)
    latents1 = torch.randn(1, 16, HEIGHT // 2, WIDTH // 2, generator=g)
    latents2 = torch.randn(2, 16, HEIGHT // 2, WIDTH // 2, generator=g)
    image = torch.randint(0, 256, (1, 3, HEIGHT, WIDTH), generator=g).float() / 255.0
    expected.update(latents1=latents1, latents2=latents2, image=image)
    l1, l2, img = ("latents1", latents1), ("latents2", latents2), ("image", image)

    capture = TransformerCapture(pipe.transformer)
    r = Runner(recorder, capture, expected, pipe.scheduler.config)
    t2i = dict(prompt=PROMPT, num_inference_steps=4, height=HEIGHT, width=WIDTH)
    cfg = dict(t2i, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE)
    r(pipe, "t2i_cfg", "text_to_image", 0, dict(cfg, max_sequence_length=SEQ), latents=l1,
      keep_first=True)
    first = r.cases["t2i_cfg"]
    assert torch.equal(expected["t2i_cfg.encoder_hidden_states"],
                       torch.cat([cfg_["negative_prompt_embeds"], cfg_["prompt_embeds"]]))
    assert first["transformer_calls"][0] == {"timestep": 1000.0, "batch": 2, "skip_layers": None}
    r(pipe, "t2i_no_cfg", "text_to_image", 0, dict(t2i, guidance_scale=1.0), latents=l1)
    assert all(c["batch"] == 1 for c in r.cases["t2i_no_cfg"]["transformer_calls"])
    r(no_t5, "t2i_no_t5", "text_to_image", 0, cfg, latents=l1, text_encoder_3=False)
    r(pipe, "t2i_slg", "text_to_image", 0,
      dict(cfg, num_inference_steps=5, skip_guidance_layers=[1], skip_layer_guidance_scale=2.8,
           skip_layer_guidance_start=0.0, skip_layer_guidance_stop=0.6),
      latents=l1)
    calls = r.cases["t2i_slg"]["transformer_calls"]
    # Step i adds the skip-layer pass when start * steps < i < stop * steps (strict): 1 and 2.
    step, steps_with_skip = -1, []
    for c in calls:
        if c["skip_layers"] is None:
            step += 1
        else:
            steps_with_skip.append(step)
    assert steps_with_skip == [1, 2], steps_with_skip
    assert all(c["batch"] == 1 for c in calls if c["skip_layers"]) and len(calls) == 7
    i2i_pipe = StableDiffusion3Img2ImgPipeline(**pipe.components)
    i2i_pipe.set_progress_bar_config(disable=True)
    r(i2i_pipe, "img2img", "img2img", 5,
      dict(prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=GUIDANCE,
           num_inference_steps=5, strength=0.6, height=HEIGHT, width=WIDTH),
      image=img)
    assert r.cases["img2img"]["draws"] == 2 and len(r.cases["img2img"]["transformer_calls"]) == 3
    r(pipe, "two_images", "text_to_image", 0, dict(cfg, num_images_per_prompt=2), latents=l2)
    r(pipe, "max_seq8", "text_to_image", 0,
      dict(cfg, prompt=LONG_PROMPT, max_sequence_length=8), latents=l1)
    out["cases"] = r.cases
    finish(folder, expected, out)
    print("  unclamped pixels: " + ", ".join(f"{k} {v:.3f}" for k, v in r.fractions.items()))


def main():
    gen_transformer_tiny()
    gen_full()
    gen_pipeline(Sd3DrawRecorder())
    for path in ("sd3-tiny/expected.safetensors", "sd3-transformer-tiny/sd3/io.safetensors",
                 "sd3-transformer-tiny/sd35/io.safetensors"):
        with open(os.path.join(FIX, path), "rb") as f:
            print(f"  {path} sha256 {hashlib.sha256(f.read()).hexdigest()}")


if __name__ == "__main__":
    main()
