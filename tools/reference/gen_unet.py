#!/usr/bin/env python3
"""Reference fixture generator for `UNet2DConditionModel` in `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/unet-sd1-tiny/     SD1-style tiny UNet: conv proj_in, int attention_head_dim,
                                    2 layers per block; float / per-sample timesteps, an odd
                                    latent size, ControlNet residuals, IP-Adapter layers
                                    (`ip_adapter.safetensors`, diffusers' IPAdapterAttnProcessor2_0)
  tests/fixtures/unet-sd2-tiny/     SD2-style: linear projections, upcast_attention,
                                    per-block attention_head_dim list
  tests/fixtures/unet-inpaint-tiny/ 9 input channels; weights saved as the `.fp16` variant
  tests/fixtures/unet-sdxl-tiny/    SDXL-style: text_time added embedding, no attention in the
                                    first block, transformer_layers_per_block list
  tests/fixtures/full/unet-sd15/    config.json + tensors.json of the published UNets, built
  tests/fixtures/full/unet-sd21/    on the meta device (no weights)
  tests/fixtures/full/unet-sdxl-base/

Usage:  python tools/reference/gen_unet.py [--tiny-only]
"""

import json
import math
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import UNet2DConditionModel  # noqa: E402
from diffusers.models.attention_processor import (  # noqa: E402
    AttnProcessor2_0,
    IPAdapterAttnProcessor2_0,
)
from safetensors.torch import save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_diffusion import ASSETS, FIX, fresh_dir  # noqa: E402

torch.set_default_dtype(torch.float32)


def randomize(model, seed):
    """Norms around 1, biases small, weights scaled by fan-in (activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    norm_params = set()
    for mod in model.modules():
        if isinstance(mod, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            norm_params.update({id(mod.weight), id(mod.bias)})
    with torch.no_grad():
        for name, p in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if id(p) in norm_params:
                base = 1.0 if leaf == "weight" else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=g))
            elif leaf == "bias":
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1:].numel()))
    return model


def save(folder, model, expected, fp16=False):
    """`save_pretrained` (published diffusers names) + `expected.safetensors`. With `fp16`,
    the weights are written as `diffusion_pytorch_model.fp16.safetensors` in float16 (the
    model was rounded to float16 values before computing the outputs)."""
    fresh_dir(folder)
    if fp16:
        model.save_pretrained(folder, safe_serialization=True, variant="fp16")
        path = os.path.join(folder, "diffusion_pytorch_model.fp16.safetensors")
        state = {k: v.to(torch.float16).contiguous() for k, v in model.state_dict().items()}
        save_file(state, path, metadata={"format": "pt"})
    else:
        model.save_pretrained(folder, safe_serialization=True)
    out = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in expected.items()}
    save_file(out, os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    for f in os.listdir(folder):
        os.chmod(os.path.join(folder, f), 0o644)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"  {os.path.relpath(folder, FIX)}: {size / 1024:.0f} KiB")


def skip_shapes(model, sample):
    """Shapes of the skip connections (what a ControlNet's down residuals must match) and of
    the middle block's output, recorded with hooks on a forward pass."""
    shapes = {}

    def record(name):
        def hook(_module, _inputs, output):
            shapes[name] = output

        return hook

    handles = [model.conv_in.register_forward_hook(record("conv_in"))]
    for i, block in enumerate(model.down_blocks):
        handles.append(block.register_forward_hook(record(f"down{i}")))
    handles.append(model.mid_block.register_forward_hook(record("mid")))
    with torch.no_grad():
        model(sample, 1.0, torch.zeros(sample.shape[0], 3, model.config.cross_attention_dim))
    for h in handles:
        h.remove()
    down = [tuple(shapes["conv_in"].shape)]
    for i in range(len(model.down_blocks)):
        down += [tuple(t.shape) for t in shapes[f"down{i}"][1]]
    return down, tuple(shapes["mid"].shape)


def gen_sd1():
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 8, 12),
        layers_per_block=2,
        attention_head_dim=2,
        cross_attention_dim=16,
        norm_num_groups=4,
    )
    randomize(model, 11).eval()
    g = torch.Generator().manual_seed(12)
    sample = torch.randn(2, 4, 12, 12, generator=g)
    ehs = torch.randn(2, 5, 16, generator=g)
    t = torch.tensor([421.7])
    t_batch = torch.tensor([999.0, 3.25])
    odd = torch.randn(1, 4, 7, 5, generator=g)
    down_shapes, mid_shape = skip_shapes(model, sample[:1])
    down_res = [0.5 * torch.randn(s, generator=g) for s in down_shapes]
    mid_res = 0.5 * torch.randn(mid_shape, generator=g)
    with torch.no_grad():
        out = model(sample, t, ehs).sample
        out_t_batch = model(sample, t_batch, ehs).sample
        out_odd = model(odd, t, ehs[:1]).sample
        out_control = model(
            sample[:1],
            t,
            ehs[:1],
            down_block_additional_residuals=tuple(down_res),
            mid_block_additional_residual=mid_res,
        ).sample
    expected = {
        "sample": sample,
        "encoder_hidden_states": ehs,
        "timestep": t,
        "timestep_batch": t_batch,
        "out": out,
        "out_timestep_batch": out_t_batch,
        "odd_sample": odd,
        "out_odd": out_odd,
        "mid_residual": mid_res,
        "out_control": out_control,
    }
    for i, r in enumerate(down_res):
        expected[f"down_residual_{i}"] = r
    # IP-Adapter: decoupled cross-attention in every attn2, 3 image tokens of width 10.
    image_tokens = torch.randn(2, 3, 10, generator=g)
    ip_state = attach_ip_adapter(model, image_dim=10, scale=0.6, seed=13)
    with torch.no_grad():
        expected["image_tokens"] = image_tokens
        expected["out_ip_adapter"] = model(sample, t, (ehs, [image_tokens])).sample
    model.set_attn_processor(AttnProcessor2_0())  # keep the IP layers out of the checkpoint
    folder = os.path.join(FIX, "unet-sd1-tiny")
    save(folder, model, expected)
    save_file(ip_state, os.path.join(folder, "ip_adapter.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(folder, "ip_adapter.safetensors"), 0o644)


def attach_ip_adapter(model, image_dim, scale, seed):
    """diffusers' `IPAdapterAttnProcessor2_0` (one adapter) on every cross-attention, with
    random `to_k_ip`/`to_v_ip`; returns those weights under the Rust model's names
    (`<attn2>.ip_adapter.to_k_ip.0.weight`)."""
    g = torch.Generator().manual_seed(seed)
    processors, state = {}, {}
    for name in model.attn_processors:
        attn_name = name.removesuffix(".processor")
        if attn_name.endswith("attn1"):
            processors[name] = AttnProcessor2_0()
            continue
        hidden = model.get_submodule(attn_name).to_q.out_features
        proc = IPAdapterAttnProcessor2_0(hidden, image_dim, num_tokens=(3,), scale=scale)
        with torch.no_grad():
            for kind in ("to_k_ip", "to_v_ip"):
                layer = getattr(proc, kind)[0]
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=g) / math.sqrt(image_dim))
                state[f"{attn_name}.ip_adapter.{kind}.0.weight"] = layer.weight.detach().clone()
        processors[name] = proc
    model.set_attn_processor(processors)
    return state


def gen_sd2():
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=16,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        attention_head_dim=[2, 2, 4],
        cross_attention_dim=24,
        norm_num_groups=4,
        use_linear_projection=True,
        upcast_attention=True,
        class_embed_type="projection",  # as SD 2.1 unCLIP (image embeddings)
        projection_class_embeddings_input_dim=6,
    )
    randomize(model, 21).eval()
    g = torch.Generator().manual_seed(22)
    sample = torch.randn(2, 4, 8, 12, generator=g)
    ehs = torch.randn(2, 6, 24, generator=g)
    class_labels = torch.randn(2, 6, generator=g)
    t = torch.tensor([57.5])
    with torch.no_grad():
        out = model(sample, t, ehs, class_labels=class_labels).sample
    expected = {
        "sample": sample,
        "encoder_hidden_states": ehs,
        "class_labels": class_labels,
        "timestep": t,
        "out": out,
    }
    save(os.path.join(FIX, "unet-sd2-tiny"), model, expected)


def gen_inpaint():
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=16,
        in_channels=9,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=16,
        norm_num_groups=4,
        # Less common options, exercised here: asymmetric downsampling padding, scaled
        # ResNet outputs, centred input, `sin, cos` order with a frequency shift of 1, other
        # kernel sizes of conv_in / conv_out.
        downsample_padding=0,
        mid_block_scale_factor=1.414,
        resnet_out_scale_factor=1.25,
        center_input_sample=True,
        flip_sin_to_cos=False,
        freq_shift=1,
        conv_in_kernel=5,
        conv_out_kernel=1,
    )
    randomize(model, 31).eval()
    with torch.no_grad():  # the stored weights are float16: compute with the rounded values
        for p in model.parameters():
            p.copy_(p.to(torch.float16).to(torch.float32))
    g = torch.Generator().manual_seed(32)
    sample = torch.randn(1, 9, 8, 8, generator=g)
    ehs = torch.randn(1, 4, 16, generator=g)
    t = torch.tensor([250.0])
    with torch.no_grad():
        out = model(sample, t, ehs).sample
    expected = {"sample": sample, "encoder_hidden_states": ehs, "timestep": t, "out": out}
    save(os.path.join(FIX, "unet-inpaint-tiny"), model, expected, fp16=True)


def gen_sdxl():
    torch.manual_seed(0)
    model = UNet2DConditionModel(
        sample_size=16,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 8, 12),
        layers_per_block=1,
        transformer_layers_per_block=[1, 1, 2],
        attention_head_dim=[1, 2, 3],
        cross_attention_dim=16,
        norm_num_groups=4,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=4,
        only_cross_attention=[False, True, False],  # not SDXL: exercises attn1 on the text
        projection_class_embeddings_input_dim=12 + 6 * 4,
    )
    randomize(model, 41).eval()
    g = torch.Generator().manual_seed(42)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 5, 16, generator=g)
    text_embeds = torch.randn(2, 12, generator=g)
    time_ids = torch.tensor([[64.0, 48.0, 0.0, 0.0, 64.0, 48.0], [32.0, 32.0, 8.0, 4.0, 64.0, 64.0]])
    t = torch.tensor([700.0, 700.0])
    with torch.no_grad():
        out = model(
            sample, t, ehs, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}
        ).sample
    expected = {
        "sample": sample,
        "encoder_hidden_states": ehs,
        "timestep": t,
        "text_embeds": text_embeds,
        "time_ids": time_ids,
        "out": out,
    }
    save(os.path.join(FIX, "unet-sdxl-tiny"), model, expected)


# Published configs of the full-size UNets not in $MM_ASSETS (stabilityai/stable-diffusion-2-1
# and stabilityai/stable-diffusion-xl-base-1.0, `unet/config.json`).
SD21 = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.10.0.dev0",
    "act_fn": "silu",
    "attention_head_dim": [5, 10, 20, 20],
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 1024,
    "down_block_types": [
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "sample_size": 96,
    "up_block_types": [
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ],
    "upcast_attention": True,
    "use_linear_projection": True,
}

SDXL_BASE = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.19.0.dev0",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


def gen_full(name, cfg, cls=UNet2DConditionModel):
    """full/<name>/: `cfg` and the (name, shape) list of `cls` built from it on the meta
    device; returns that model."""
    folder = os.path.join(FIX, "full", name)
    fresh_dir(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with torch.device("meta"):
        model = cls.from_config(cfg)
    entries = sorted([k, list(v.shape)] for k, v in model.state_dict().items())
    with open(os.path.join(folder, "tensors.json"), "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in entries) + "\n]\n")
    for n in os.listdir(folder):
        os.chmod(os.path.join(folder, n), 0o644)
    params = sum(math.prod(s) for _, s in entries)
    print(f"  full/{name}: {len(entries)} tensors, {params / 1e6:.2f}M params")
    return model


def main():
    gen_sd1()
    gen_sd2()
    gen_inpaint()
    gen_sdxl()
    if "--tiny-only" in sys.argv:
        return
    with open(os.path.join(ASSETS, "sd15-configs", "unet", "config.json")) as f:
        gen_full("unet-sd15", json.load(f))
    gen_full("unet-sd21", SD21)
    gen_full("unet-sdxl-base", SDXL_BASE)


if __name__ == "__main__":
    main()
