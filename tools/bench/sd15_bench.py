"""Stable Diffusion 1.5 / SDXL on the CPU in PyTorch / diffusers / transformers: the reference
for `cargo bench --workspace --bench unet|vae|text_encoder` (`MM_BENCH_MODEL=sdxl` for SDXL).

Parts (random float32 weights built from the full-size configs in tests/fixtures/full/;
eval(), torch.no_grad(), torch's default thread count, diffusers' default attention
processor, AttnProcessor2_0 = sdpa), `--model sd15` (default):

- unet: one denoising step with classifier-free guidance: batch 2 (unconditional +
  conditional), 4x64x64 latents (512x512 images), 77x768 text embeddings, timestep 500;
- vae:  AutoencoderKL.decode of one 4x64x64 latent to a 512x512 image;
- text: CLIPTextModel (CLIP ViT-L/14 text transformer) on 2 x 77 token ids;
- controlnet: the unet step steered by a ControlNet (lllyasviel/sd-controlnet-canny's config):
  the ControlNet on the same batch and a 2x3x512x512 control image, then the UNet with its
  residuals.

`--model sdxl` (SDXL base, tests/fixtures/full/sdxl-base/):

- unet: one step with CFG, batch 2, 4x128x128 latents (1024x1024), 77x2048 text embeddings,
  added conditions text_embeds [2, 1280] and time_ids [2, 6];
- vae:  the decode of one 4x128x128 latent to a 1024x1024 image;
- text: CLIPTextModel (CLIP-L, text_encoder) on 1 x 77 ids;
- text2: CLIPTextModelWithProjection (OpenCLIP bigG, text_encoder_2) on 1 x 77 ids.
`--model sd3` (SD3 medium, tests/fixtures/full/sd3-medium/ and t5-v1_1-xxl/):
- transformer: one SD3Transformer2DModel step with CFG, batch 2, 16x128x128 latents
  (1024x1024), 333 x 4096 text states (77 CLIP + 256 T5), pooled [2, 2048], timestep 500;
- t5: T5EncoderModel (T5 v1.1 XXL) on 2 x 256 ids, bfloat16 weights and arithmetic.
`--model flux` (FLUX.1-schnell, tests/fixtures/full/flux1-schnell/):
- transformer: one FluxTransformer2DModel step at 1024x1024, batch 1: packed latents
  [1, 4096, 64] (img_ids of 128x128 latents), T5 states [1, 256, 4096], pooled [1, 768],
  timestep 1, no guidance; bfloat16 weights and arithmetic. The full model (11.9 G
  parameters, 23.8 GB in bf16) does not fit beside anything on a 24 GiB machine:
  `--layers D,S` (default 19,38) builds D double- and S single-stream blocks, as
  MM_BENCH_FLUX_LAYERS does for benches/flux.rs; sd15_compare.py --model flux extrapolates
  the full step from a few such slices.

Warm-up runs, then the median (and min) of N timed runs, in seconds.

    /root/venvs/mmref/bin/python tools/bench/sd15_bench.py --part unet [--model sdxl]
        [--runs 5] [--warmup 1]

tools/bench/sd15_compare.py runs these and the Rust benches one after the other, with peak
memory.
"""

import argparse
import contextlib
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402

FULL = Path(__file__).resolve().parents[2] / "tests/fixtures/full"
# --model flux: the "double,single" blocks of the slice (--layers).
FLUX_LAYERS = "19,38"

# The group/name of the matching Rust bench case, per model and part.
CASES = {
    "sd15": {
        "unet": "sd15_unet/cfg_step_512",
        "vae": "sd15_vae/decode_512",
        "text": "sd15_text_encoder/encode_2x77",
        "controlnet": "sd15_controlnet/cfg_step_512",
    },
    "sdxl": {
        "unet": "sdxl_unet/cfg_step_1024",
        "vae": "sdxl_vae/decode_1024",
        "text": "sdxl_text_encoder/clip_l_1x77",
        "text2": "sdxl_text_encoder/clip_bigg_1x77",
    },
    "sd3": {
        "transformer": "sd3_transformer/cfg_step_1024",
        "t5": "sd3_text_encoder/t5_xxl_2x256",
    },
    # PyTorch computes in bf16; the Rust bench has a Q8_0 (default) and a bf16 case.
    "flux": {
        "transformer": "flux_transformer/step_1024_bf16",
    },
}

# Per model: the configs (under FULL) and the shapes of each part.
MODELS = {
    "sd15": {
        "unet": "unet-sd15/config.json", "vae": "sd15-vae/config.json",
        "text": "sd15-single-file/text_encoder/config.json",
        "controlnet": "controlnet-sd15-canny/config.json",
        "latent": 64, "text_batch": 2,
    },
    "sdxl": {
        "unet": "sdxl-base/unet/config.json", "vae": "sdxl-base/vae/config.json",
        "text": "sdxl-base/text_encoder/config.json",
        "text2": "sdxl-base/text_encoder_2/config.json",
        "latent": 128, "text_batch": 1,
    },
    "sd3": {
        "transformer": "sd3-medium/transformer/config.json", "t5": "t5-v1_1-xxl/config.json",
        "latent": 128, "text_tokens": 333, "t5_tokens": 256,
    },
    "flux": {
        "transformer": "flux1-schnell/transformer/config.json",
        "latent": 128, "text_tokens": 256,
    },
}


def prompt_ids():
    """<|startoftext|>, ten word tokens, then <|endoftext|> up to 77 tokens (SD's tokenizer pads
    with it); the same ids as crates/mm-diffusion/benches/text_encoder.rs."""
    ids = [49406] + [320 + 97 * i for i in range(10)]
    return ids + [49407] * (77 - len(ids))


def unet_case(model_name, controlnet=False):
    spec = MODELS[model_name]
    config = json.loads((FULL / spec["unet"]).read_text())
    model = diffusers.UNet2DConditionModel.from_config(config).float().eval()
    control = None
    if controlnet:
        net_config = json.loads((FULL / spec["controlnet"]).read_text())
        control = diffusers.ControlNetModel.from_config(net_config).float().eval()
    size = spec["latent"]
    latents = torch.randn(2, 4, size, size)
    text = torch.randn(2, 77, config["cross_attention_dim"])
    t = torch.tensor([500.0])
    added = None
    if config.get("addition_embed_type") == "text_time":
        pooled = config["projection_class_embeddings_input_dim"] - 6 * config["addition_time_embed_dim"]
        # original size, crop offset, target size: 1024^2, (0, 0), 1024^2
        time_ids = torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * 2)
        added = {"text_embeds": torch.randn(2, pooled), "time_ids": time_ids}

    image = torch.rand(2, 3, 8 * size, 8 * size)

    def step():
        residuals = {}
        if control is not None:
            down, mid = control(latents, t, text, image, added_cond_kwargs=added,
                                return_dict=False)
            residuals = {"down_block_additional_residuals": down,
                         "mid_block_additional_residual": mid}
        out = model(latents, t, text, added_cond_kwargs=added, **residuals).sample
        uncond, cond = out.chunk(2)
        return uncond + 7.5 * (cond - uncond)

    return step


def vae_case(model_name):
    spec = MODELS[model_name]
    config = json.loads((FULL / spec["vae"]).read_text())
    model = diffusers.AutoencoderKL.from_config(config).float().eval()
    latents = torch.randn(1, 4, spec["latent"], spec["latent"])
    return lambda: model.decode(latents).sample


def text_case(model_name, part="text"):
    spec = MODELS[model_name]
    config = transformers.CLIPTextConfig.from_json_file(FULL / spec[part])
    ids = torch.tensor([prompt_ids()] * spec["text_batch"])
    if part == "text2":
        model = transformers.CLIPTextModelWithProjection(config).float().eval()
        return lambda: model(input_ids=ids).text_embeds
    model = transformers.CLIPTextModel(config).float().eval()
    return lambda: model(input_ids=ids).last_hidden_state


def flux_layers():
    """(double, single) blocks of the FLUX slice: FLUX_LAYERS, set from --layers."""
    double, single = (int(n) for n in FLUX_LAYERS.split(","))
    return double, single


def latent_image_ids(h, w):
    """diffusers' `_prepare_latent_image_ids` for h x w latents: (0, row, column) per packed
    token."""
    ids = torch.zeros(h // 2, w // 2, 3)
    ids[..., 1] += torch.arange(h // 2)[:, None]
    ids[..., 2] += torch.arange(w // 2)[None, :]
    return ids.reshape(-1, 3)


def flux_case(model_name):
    """One FLUX.1 transformer step (batch 1, no CFG: schnell) on the --layers slice, built
    directly in bfloat16 (weights and arithmetic)."""
    spec = MODELS[model_name]
    config = json.loads((FULL / spec["transformer"]).read_text())
    config["num_layers"], config["num_single_layers"] = flux_layers()
    torch.set_default_dtype(torch.bfloat16)
    model = diffusers.FluxTransformer2DModel.from_config(config).eval()
    torch.set_default_dtype(torch.float32)
    params = sum(p.numel() for p in model.parameters())
    print(f"FLUX slice {config['num_layers']},{config['num_single_layers']}: "
          f"{params / 1e9:.2f} G parameters")
    size, text = spec["latent"], spec["text_tokens"]
    bf16 = torch.bfloat16
    latents = torch.randn(1, (size // 2) ** 2, config["in_channels"], dtype=bf16)
    states = torch.randn(1, text, config["joint_attention_dim"], dtype=bf16)
    pooled = torch.randn(1, config["pooled_projection_dim"], dtype=bf16)
    t = torch.tensor([1.0], dtype=bf16)
    img_ids = latent_image_ids(size, size).to(bf16)
    txt_ids = torch.zeros(text, 3, dtype=bf16)

    def step():
        return model(latents, states, pooled, t, img_ids, txt_ids).sample
    return step


def transformer_case(model_name):
    """One SD3 transformer step with CFG (float32 weights), or FLUX's step (see flux_case)."""
    if model_name == "flux":
        return flux_case(model_name)
    spec = MODELS[model_name]
    config = json.loads((FULL / spec["transformer"]).read_text())
    model = diffusers.SD3Transformer2DModel.from_config(config).float().eval()
    size = spec["latent"]
    latents = torch.randn(2, config["in_channels"], size, size)
    text = torch.randn(2, spec["text_tokens"], config["joint_attention_dim"])
    pooled = torch.randn(2, config["pooled_projection_dim"])
    t = torch.tensor([500.0, 500.0])

    def step():
        out = model(latents, text, pooled, t).sample
        uncond, cond = out.chunk(2)
        return uncond + 7.0 * (cond - uncond)
    return step


def t5_case(model_name):
    """The T5 v1.1 XXL encoder on 2 x 256 ids, in bfloat16 (created in bf16), or float32 with
    MM_BENCH_TORCH_T5=f32 (19 GB of weights); the same ids as benches/sd3.rs."""
    spec = MODELS[model_name]
    config = transformers.T5Config.from_json_file(FULL / spec["t5"])
    f32 = os.environ.get("MM_BENCH_TORCH_T5") == "f32"
    torch.set_default_dtype(torch.float32 if f32 else torch.bfloat16)
    model = transformers.T5EncoderModel(config).eval()
    torch.set_default_dtype(torch.float32)
    n = spec["t5_tokens"]
    row = [100 + 37 * i if i < 40 else (1 if i == 40 else 0) for i in range(n)]
    ids = torch.tensor([row] * 2)
    return lambda: model(input_ids=ids).last_hidden_state


PARTS = {
    "unet": unet_case,
    "vae": vae_case,
    "text": text_case,
    "text2": lambda model_name: text_case(model_name, "text2"),
    "controlnet": lambda model_name: unet_case(model_name, controlnet=True),
    "transformer": transformer_case,
    "t5": t5_case,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="sd15")
    parser.add_argument("--part", choices=sorted(PARTS), default="unet",
                        help="text2: SDXL's second text encoder")
    parser.add_argument("--runs", type=int, default=5, help="timed runs")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs")
    parser.add_argument("--json", type=Path, help="also write the median here")
    parser.add_argument("--autocast", choices=["bf16"],
                        help="run the case under torch.autocast('cpu', dtype=torch.bfloat16): "
                             "bf16 products (linear, conv, matmul, attention) on f32 weights")
    parser.add_argument("--autocast-scope", choices=["run", "call"], default="run",
                        help="run: one autocast block around the warm-up and the timed calls "
                             "(autocast keeps the weights' bf16 casts between calls); call: a "
                             "block per call (every call casts its weights)")
    parser.add_argument("--layers", default="19,38",
                        help="--model flux: double,single blocks of the slice (default 19,38)")
    args = parser.parse_args()
    global FLUX_LAYERS
    FLUX_LAYERS = args.layers

    torch.manual_seed(0)
    if args.part not in CASES[args.model]:
        parser.error(f"--model {args.model} has no part {args.part}")
    case = PARTS[args.part](args.model)
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, "
        f"transformers {transformers.__version__}, python {platform.python_version()}"
    )
    print(f"torch threads: {torch.get_num_threads()} (interop {torch.get_num_interop_threads()})")
    print(f"timing: {args.warmup} warm-up + median of {args.runs} runs\n")

    def autocast():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if args.autocast
                else contextlib.nullcontext())

    per_call = args.autocast_scope == "call"
    if args.autocast:
        print(f"autocast: bfloat16, one block per {'call' if per_call else 'run'}\n")
    outer, inner = ((contextlib.nullcontext, autocast) if per_call
                    else (autocast, contextlib.nullcontext))
    with torch.no_grad(), outer():
        for _ in range(args.warmup):
            with inner():
                case()
        times = []
        for _ in range(args.runs):
            with inner():
                start = time.perf_counter()
                case()
                times.append(time.perf_counter() - start)
    med, best = statistics.median(times), min(times)
    name = CASES[args.model][args.part]
    print(f"{name}  median {med:8.3f} s   min {best:8.3f} s")
    if args.json:
        args.json.write_text(json.dumps({name: med}, indent=2) + "\n")


if __name__ == "__main__":
    main()
