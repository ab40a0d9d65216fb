"""Writes a full-size FLUX.1-schnell pipeline folder with random weights and the two GGUF files
CPU users run it with (city96's `flux1-schnell-Q8_0.gguf` and `t5-v1_1-xxl-encoder-Q8_0.gguf`
layouts), for the pipeline memory measurement of `docs/performance.md` (the real checkpoints
are not downloadable here).

The folder (`--out`, default /work/flux-random):

- model_index.json (FluxPipeline), scheduler/ (FLUX.1-schnell's scheduler_config.json:
  FlowMatchEulerDiscreteScheduler, shift 1.0, no dynamic shifting);
- transformer/config.json only (tests/fixtures/full/flux1-schnell's), the weights in
  `flux1-schnell-Q8_0.gguf`: Black Forest Labs' names and shapes
  (tests/fixtures/full/flux1-schnell/transformer/bfl-tensors.json), arch "flux", 2-D weights
  whose last dimension is a multiple of 32 in Q8_0, the rest (biases, norm scales) F32;
- text_encoder/ (CLIP ViT-L/14's text transformer, `CLIPTextModel`, random bf16 safetensors;
  tests/fixtures/full/clip-vit-large-patch14's text config), tokenizer/ (the real CLIP BPE
  vocabulary from $MM_ASSETS/clip-tokenizer);
- text_encoder_2/config.json only (tests/fixtures/full/t5-v1_1-xxl's), the weights in
  `t5-v1_1-xxl-encoder-Q8_0.gguf`: llama.cpp names
  (tests/fixtures/full/t5-v1_1-xxl/gguf-tensors.json), arch "t5encoder", the 2-D weights
  Q8_0 except `attn_rel_b` (F32, as llama.cpp's quantizer leaves it), norms F32;
  tokenizer_2/ (the tiny T5-style tokenizer of tests/fixtures/t5-tokenizer: the real
  SentencePiece vocabulary is not here; its ids are valid T5-XXL ids);
- vae/ (diffusers AutoencoderKL with FLUX.1's published config: 16 latent channels, no
  quant convs, scaling 0.3611, shift 0.1159; random bf16 weights).

The GGUF files are written by gguf's GGUFWriter streaming: every tensor's info first, then
the header, key-values and tensor infos, then the data one tensor at a time, so Python never
holds more than one tensor (12.7 + 5.1 GB on disk, a few hundred MB of memory). Q8_0 blocks
are random but valid: an f16 scale of 1 / (74 sqrt(in)) (so that the dequantized weights have
a standard deviation of about 1 / sqrt(in), which keeps random activations finite through
57 blocks) and uniform int8 values. About 18 GB in all.

    /work/venv/bin/python tools/bench/make_random_flux.py [--out /work/flux-random] [--seed 0]
"""

import argparse
import gc
import json
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import gguf  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_random_sdxl import tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
FULL = ROOT / "tests/fixtures/full"
TINY = ROOT / "tests/fixtures/flux-tiny"

# black-forest-labs/FLUX.1-schnell's scheduler/scheduler_config.json.
SCHEDULER = {
    "_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.30.0.dev0",
    "base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096,
    "max_shift": 1.15, "num_train_timesteps": 1000, "shift": 1.0,
    "use_dynamic_shifting": False,
}
# black-forest-labs/FLUX.1-schnell's vae/config.json.
VAE = {
    "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4, "force_upcast": True, "in_channels": 3,
    "latent_channels": 16, "latents_mean": None, "latents_std": None, "layers_per_block": 2,
    "mid_block_add_attention": True, "norm_num_groups": 32, "out_channels": 3,
    "sample_size": 1024, "scaling_factor": 0.3611, "shift_factor": 0.1159,
    "up_block_types": ["UpDecoderBlock2D"] * 4, "use_post_quant_conv": False,
    "use_quant_conv": False,
}
Q8_0_BLOCK, Q8_0_BYTES = gguf.GGML_QUANT_SIZES[T.Q8_0]  # 32 values in 34 bytes


def random_q8_0(rng, shape):
    """Random valid Q8_0 bytes for a [rows, cols] matrix: per block of 32 values an f16 scale
    of 1 / (74 sqrt(cols)) (uniform int8 values have a standard deviation of about 74) and
    32 uniform int8 values; returned as uint8 [rows, cols / 32 * 34], GGUFWriter's byte
    shape."""
    rows, cols = shape
    blocks = rows * cols // Q8_0_BLOCK
    raw = rng.integers(0, 256, size=(blocks, Q8_0_BYTES), dtype=np.uint8)
    scale = np.float16(1.0 / (74.0 * np.sqrt(cols)))
    raw[:, :2] = np.frombuffer(scale.tobytes(), dtype=np.uint8)
    return raw.reshape(rows, cols // Q8_0_BLOCK * Q8_0_BYTES)


def is_norm(name):
    """Norm scales (RMS / layer norms): around 1, as trained ones are."""
    return any(k in name for k in ("norm", "scale")) and "attn_rel_b" not in name


def plan(tensors, quantize):
    """(name, numpy shape, GGML type) per tensor; `quantize(name, shape)` says which are
    Q8_0."""
    out = []
    for name, shape in tensors:
        qtype = T.Q8_0 if quantize(name, shape) else T.F32
        out.append((name, tuple(shape), qtype))
    return out


def data(rng, name, shape, qtype):
    """The tensor's bytes for GGUFWriter.write_tensor_data."""
    if qtype == T.Q8_0:
        return random_q8_0(rng, shape)
    if is_norm(name):
        return (1.0 + 0.01 * rng.standard_normal(shape)).astype(np.float32)
    return (0.02 * rng.standard_normal(shape)).astype(np.float32)


def write_gguf(path, arch, tensors, metadata, seed):
    """Streams `tensors` [(name, shape, type)] with random data into a GGUF file."""
    rng = np.random.default_rng(seed)
    start = time.time()
    writer = gguf.GGUFWriter(str(path), arch=arch)
    for add, value in metadata:
        getattr(writer, add)(value)
    for name, shape, qtype in tensors:
        if qtype == T.Q8_0:
            rows, cols = shape
            byte_shape = (rows, cols // Q8_0_BLOCK * Q8_0_BYTES)
            nbytes = rows * byte_shape[1]
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8), nbytes, raw_dtype=qtype)
        else:
            nbytes = int(np.prod(shape)) * 4
            writer.add_tensor_info(name, shape, np.dtype(np.float32), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for i, (name, shape, qtype) in enumerate(tensors):
        writer.write_tensor_data(data(rng, name, shape, qtype))
        if i % 100 == 0:
            print(f"  {path.name}: {i}/{len(tensors)} tensors, {time.time() - start:.0f} s",
                  flush=True)
    writer.close()
    print(f"{path}: {path.stat().st_size / 1e9:.2f} GB in {time.time() - start:.0f} s",
          flush=True)


def flux_gguf(path, seed):
    """city96's flux1-schnell-Q8_0.gguf layout: BFL names, arch "flux"."""
    names = json.loads((FULL / "flux1-schnell/transformer/bfl-tensors.json").read_text())
    tensors = plan(names, lambda n, s: len(s) == 2 and s[-1] % Q8_0_BLOCK == 0)
    write_gguf(path, "flux", tensors, [
        ("add_quantization_version", gguf.GGML_QUANT_VERSION),
        ("add_file_type", gguf.LlamaFileType.MOSTLY_Q8_0),
    ], seed)


def t5_gguf(path, seed):
    """city96's t5-v1_1-xxl-encoder-Q8_0.gguf layout: llama.cpp names, arch "t5encoder"."""
    config = transformers.T5Config.from_json_file(FULL / "t5-v1_1-xxl/config.json")
    names = json.loads((FULL / "t5-v1_1-xxl/gguf-tensors.json").read_text())
    tensors = plan(names, lambda n, s: (len(s) == 2 and s[-1] % Q8_0_BLOCK == 0
                                        and "attn_rel_b" not in n))
    write_gguf(path, "t5encoder", tensors, [
        ("add_context_length", 512),
        ("add_embedding_length", config.d_model),
        ("add_feed_forward_length", config.d_ff),
        ("add_block_count", config.num_layers),
        ("add_head_count", config.num_heads),
        ("add_key_length", config.d_kv),
        ("add_value_length", config.d_kv),
        ("add_layer_norm_rms_eps", config.layer_norm_epsilon),
        ("add_relative_attn_buckets_count", config.relative_attention_num_buckets),
        ("add_quantization_version", gguf.GGML_QUANT_VERSION),
        ("add_file_type", gguf.LlamaFileType.MOSTLY_Q8_0),
    ], seed + 1)


def save(model, out):
    """Saves `model` (built in bfloat16) to `out` as safetensors, then frees it."""
    model.save_pretrained(out, safe_serialization=True)
    size = sum(f.stat().st_size for f in Path(out).iterdir())
    print(f"{out}: {size / 1e9:.2f} GB", flush=True)
    del model
    gc.collect()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/work/flux-random"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--assets", type=Path,
                        default=Path(os.environ.get("MM_ASSETS", ROOT.parent / "shared/assets")))
    parser.add_argument("--skip-gguf", action="store_true",
                        help="only the folder (the GGUF files exist already)")
    args = parser.parse_args()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    torch.set_default_dtype(torch.bfloat16)

    shutil.copy(TINY / "model_index.json", out / "model_index.json")
    (out / "scheduler").mkdir(exist_ok=True)
    (out / "scheduler/scheduler_config.json").write_text(json.dumps(SCHEDULER, indent=2) + "\n")
    (out / "transformer").mkdir(exist_ok=True)
    shutil.copy(FULL / "flux1-schnell/transformer/config.json", out / "transformer/config.json")
    (out / "text_encoder_2").mkdir(exist_ok=True)
    shutil.copy(FULL / "t5-v1_1-xxl/config.json", out / "text_encoder_2/config.json")
    tokenizer(args.assets / "clip-tokenizer", out / "tokenizer", "<|endoftext|>")
    (out / "tokenizer_2").mkdir(exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "tests/fixtures/t5-tokenizer" / name, out / "tokenizer_2" / name)

    clip = json.loads((FULL / "clip-vit-large-patch14/config.json").read_text())["text_config"]
    save(transformers.CLIPTextModel(transformers.CLIPTextConfig(**clip)), out / "text_encoder")
    save(diffusers.AutoencoderKL.from_config(VAE), out / "vae")
    torch.set_default_dtype(torch.float32)

    if not args.skip_gguf:
        flux_gguf(out / "flux1-schnell-Q8_0.gguf", args.seed)
        t5_gguf(out / "t5-v1_1-xxl-encoder-Q8_0.gguf", args.seed)
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {total / 1e9:.2f} GB in all")


if __name__ == "__main__":
    main()
