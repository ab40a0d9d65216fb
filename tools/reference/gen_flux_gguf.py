#!/usr/bin/env python3
"""Reference fixtures for quantized FLUX.1 / T5 loading: original Black Forest Labs (BFL)
checkpoint names, ComfyUI-GGUF (city96) FLUX GGUF files and llama.cpp T5 encoder GGUF files.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/flux-gguf/      a tiny random dev-style `FluxTransformer2DModel` (diffusers 0.42.1):
                                 1 double- and 1 single-stream block, 2 heads of 16 (inner 32,
                                 axes_dims_rope [4, 4, 8]), in_channels 16, joint_attention_dim 32,
                                 pooled_projection_dim 32, guidance_embeds. Every parameter random
                                 (adaLN linears, RMS qk-norm scales and biases included, none zero)
                                 and then rounded to bfloat16 values (the model stays float32): the
                                 published BFL checkpoints are bfloat16, so the bf16 file below holds
                                 the model exactly. Linear in-features are 32, 128 or 160 (multiples
                                 of 32, block-quantizable) except img_in (16); time_in.in_layer and
                                 guidance_in.in_layer take the 256 sinusoidal channels (K-quants).
      config.json                the model's `save_pretrained` config
      transformer-bfl.safetensors   BFLOAT16 (as flux1-dev.safetensors), the 52 tensors under the
                                 original BFL names (no `model.diffusion_model.` prefix):
                                   img_in, txt_in, time_in.{in,out}_layer, vector_in.{in,out}_layer,
                                   guidance_in.{in,out}_layer                        (.weight/.bias)
                                   double_blocks.0.{img,txt}_mod.lin                 (.weight/.bias)
                                   double_blocks.0.{img,txt}_attn.qkv                (.weight/.bias)
                                   double_blocks.0.{img,txt}_attn.norm.{query,key}_norm.scale
                                   double_blocks.0.{img,txt}_attn.proj               (.weight/.bias)
                                   double_blocks.0.{img,txt}_mlp.{0,2}               (.weight/.bias)
                                   single_blocks.0.{linear1,linear2,modulation.lin}  (.weight/.bias)
                                   single_blocks.0.norm.{query,key}_norm.scale
                                   final_layer.linear, final_layer.adaLN_modulation.1 (.weight/.bias)
                                 built by `to_bfl` (the tables BFL_GLOBAL / _DOUBLE / _SINGLE / _FINAL) and proved by
                                 diffusers' own `convert_flux_transformer_checkpoint_to_diffusers`:
                                 the conversion gives back every diffusers tensor bit for bit and
                                 consumes every BFL tensor (see `diffusers_converter` for the one
                                 constant changed for the tiny size)
      transformer-q8_0.gguf      `gguf.GGUFWriter`, arch "flux" (as ComfyUI-GGUF's convert.py), the
                                 same 52 BFL-named tensors (numpy arrays in PyTorch shape, so the
                                 GGUF dims are reversed): every 2-D weight whose last dim is a
                                 multiple of 32 Q8_0 (`gguf.quants.quantize`), the rest F32 (1-D
                                 tensors, img_in.weight [32, 16]); general.quantization_version 2,
                                 general.file_type 7 (MOSTLY_Q8_0)
      transformer-mixed.gguf     the same names; 2-D weights rotate through Q4_0, Q4_1, Q5_0, Q5_1,
                                 Q8_0 (last dim a multiple of 32, sorted by name) and Q4_K / Q6_K
                                 (last dim 256, also in name order: guidance_in.in_layer Q4_K,
                                 time_in.in_layer Q6_K — the only two 256-wide inputs, so Q5_K,
                                 next in the rotation, does not occur); a few 1-D tensors F16
                                 or BF16 (MIXED_PLAIN), the rest F32. gguf 0.17.1 cannot quantize
                                 K-quants: `quantize_k` below makes valid Q4_K / Q5_K / Q6_K blocks
                                 (a plain min/max fit, not llama.cpp's search); the references use
                                 the package's `dequantize` of the written bytes, so only the
                                 dequantizer matters
      io.safetensors (float32)   inputs of one forward and its outputs:
                                   hidden_states [2,15,16]        2 packed latents of a 3x5 grid
                                   img_ids [15,3]                 `_prepare_latent_image_ids(2, 3, 5)`
                                   encoder_hidden_states [2,7,32]
                                   txt_ids [7,3]                  zeros
                                   pooled_projections [2,32]
                                   timestep [2]                   [0.9815, 0.31225] (t / 1000)
                                   guidance [2]                   [3.5, 3.5]
                                   out_f32 [2,15,16]              the model as is (= what the bf16
                                                                  BFL file loads to)
                                   out_q8_0, out_mixed [2,15,16]  the same model with every tensor
                                                                  replaced by what GGUFReader +
                                                                  `gguf.quants.dequantize` read from
                                                                  the .gguf file (mapped back with
                                                                  diffusers' converter)
      io.json                    `rel_q8_0`, `rel_mixed` (max|out_q - out_f32| / max|out_f32|),
                                 per file the type and PyTorch shape of every tensor, the mapping
                                 tables, the GGUF metadata written

  tests/fixtures/t5-gguf/        a tiny random T5 v1.1-style `T5EncoderModel` (transformers 5.24):
                                 gated-gelu, d_model 32, 2 heads of 16, d_ff 64, 2 layers, 8 buckets
                                 up to distance 20, vocabulary 64, layer norms random around 1
      config.json                `save_pretrained`'s config
      model-q8_0.gguf            arch "t5encoder", llama.cpp tensor names (`t5_to_llama_cpp`, equal to
                                 gguf's own `TensorNameMap` for MODEL_ARCH.T5ENCODER and the inverse
                                 of ComfyUI-GGUF's `T5_SD_MAP`): token_embd.weight (= shared.weight,
                                 the tied encoder.embed_tokens not stored), enc.blk.N.attn_norm /
                                 attn_q / attn_k / attn_v / attn_o / ffn_norm / ffn_gate / ffn_up /
                                 ffn_down .weight, enc.blk.0.attn_rel_b.weight (block 0 only),
                                 enc.output_norm.weight; 2-D weights with a last dim multiple of 32
                                 Q8_0 (token_embd included), the rest F32 (norms, attn_rel_b [8, 2]);
                                 llama.cpp's t5encoder hyperparameter keys (t5encoder.context_length,
                                 .embedding_length, .feed_forward_length, .block_count,
                                 .attention.head_count, .attention.key_length, .attention.value_length,
                                 .attention.layer_norm_rms_epsilon, .attention.relative_buckets_count),
                                 general.file_type 7
      io.safetensors             input_ids [2, 9] (int64; row 1: 6 tokens + </s>, then 2 <pad> = 0),
                                 attention_mask [2, 9] (int64), out_f32 / out_q8_0 [2, 9, 32]
                                 (float32 last_hidden_state with the mask; q8_0: the weights
                                 GGUFReader + dequantize read back, mapped with ComfyUI's table)
      io.json                    types and shapes of the GGUF tensors, the mapping, `rel_q8_0`

  tests/fixtures/full/flux1-schnell/transformer/bfl-tensors.json
  tests/fixtures/full/flux1-dev/transformer/bfl-tensors.json
                                 `[name, shape]` of the original BFL checkpoints (776 / 780 tensors),
                                 sorted: `to_bfl` of the model built on the meta device from the
                                 config.json already there (gen_flux.py's); diffusers' converter,
                                 unmodified (inner_dim 3072 is these models'), maps them back to
                                 exactly the names and shapes of `tensors.json` next to it
  tests/fixtures/full/t5-v1_1-xxl/gguf-tensors.json
                                 `[name, shape]` (PyTorch shapes) of the T5-XXL encoder under the
                                 llama.cpp names: 219 tensors (24 blocks x 9 + token_embd +
                                 enc.blk.0.attn_rel_b + enc.output_norm); ComfyUI's table maps them
                                 back to exactly `tensors.json` next to it

Only the folders flux-gguf/ and t5-gguf/ are recreated; in full/ only the three files named are
(re)written (gen_flux.py and gen_t5.py recreate those full/ folders and so delete them: run this
script after them). Size: 476 KB in all (flux-gguf 352 KB, t5-gguf 36 KB, the lists 88 KB).

An all-F32 `transformer-f32.gguf` (316 KB: over the budget, and the q8_0 file covers the same
names and F32 tensors) is written to a temporary folder and checked to read back to the model bit
for bit (out equal to out_f32); `--f32-gguf` keeps it in flux-gguf/.

Usage:  python tools/reference/gen_flux_gguf.py [--f32-gguf]
        # after gen_flux.py and gen_t5.py (reads full/*/config.json and tensors.json); diffusers
        # 0.42.1, transformers 5.24, gguf 0.17.1; ~10 s on CPU; byte-identical reruns
"""

import inspect
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import diffusers  # noqa: E402
import diffusers.loaders.single_file_utils as sfu  # noqa: E402
import gguf  # noqa: E402
from diffusers import FluxPipeline, FluxTransformer2DModel  # noqa: E402
from gguf import GGMLQuantizationType as T  # noqa: E402
from gguf.quants import dequantize, quantize  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import T5Config, T5EncoderModel  # noqa: E402

from gen_diffusion import FIX, fresh_dir  # noqa: E402
from gen_sd3 import randomize  # noqa: E402
from gen_single_file import write_list  # noqa: E402

torch.set_default_dtype(torch.float32)
diffusers.utils.logging.set_verbosity_error()

FLUX_TINY = dict(
    patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
    axes_dims_rope=(4, 4, 8), guidance_embeds=True,
)
T5_TINY = dict(
    vocab_size=64, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
    relative_attention_num_buckets=8, relative_attention_max_distance=20,
    feed_forward_proj="gated-gelu", dropout_rate=0.0,
)


# --------------------------------------------------------------------------------------------
# 1. FLUX: diffusers <-> original BFL names.

# BFL name prefix -> the diffusers prefixes whose tensors are concatenated (dim 0, in this order)
# into it; `{i}` is the double-block index, `{j}` the single-block index. Each entry maps the
# `.weight` and the `.bias` (the qk-norm scales: `.scale` <- `.weight`).
BFL_GLOBAL = [
    ("img_in", ["x_embedder"]),
    ("txt_in", ["context_embedder"]),
    ("time_in.in_layer", ["time_text_embed.timestep_embedder.linear_1"]),
    ("time_in.out_layer", ["time_text_embed.timestep_embedder.linear_2"]),
    ("vector_in.in_layer", ["time_text_embed.text_embedder.linear_1"]),
    ("vector_in.out_layer", ["time_text_embed.text_embedder.linear_2"]),
    ("guidance_in.in_layer", ["time_text_embed.guidance_embedder.linear_1"]),
    ("guidance_in.out_layer", ["time_text_embed.guidance_embedder.linear_2"]),
]
BFL_DOUBLE = [
    ("img_mod.lin", ["norm1.linear"]),
    ("txt_mod.lin", ["norm1_context.linear"]),
    ("img_attn.qkv", ["attn.to_q", "attn.to_k", "attn.to_v"]),
    ("txt_attn.qkv", ["attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"]),
    ("img_attn.norm.query_norm", ["attn.norm_q"]),
    ("img_attn.norm.key_norm", ["attn.norm_k"]),
    ("txt_attn.norm.query_norm", ["attn.norm_added_q"]),
    ("txt_attn.norm.key_norm", ["attn.norm_added_k"]),
    ("img_attn.proj", ["attn.to_out.0"]),
    ("txt_attn.proj", ["attn.to_add_out"]),
    ("img_mlp.0", ["ff.net.0.proj"]),
    ("img_mlp.2", ["ff.net.2"]),
    ("txt_mlp.0", ["ff_context.net.0.proj"]),
    ("txt_mlp.2", ["ff_context.net.2"]),
]
BFL_SINGLE = [
    ("modulation.lin", ["norm.linear"]),
    ("linear1", ["attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"]),
    ("norm.query_norm", ["attn.norm_q"]),
    ("norm.key_norm", ["attn.norm_k"]),
    ("linear2", ["proj_out"]),
]
# final_layer.adaLN_modulation.1 = norm_out.linear with its two halves swapped: BFL's
# LastLayer splits the projection into (shift, scale), diffusers' AdaLayerNormContinuous into
# (scale, shift).
BFL_FINAL = [
    ("final_layer.linear", ["proj_out"], False),
    ("final_layer.adaLN_modulation.1", ["norm_out.linear"], True),
]


def swap_halves(t):
    a, b = t.chunk(2, dim=0)
    return torch.cat([b, a], dim=0)


def bfl_table(num_layers, num_single_layers, guidance):
    """[(bfl prefix, [diffusers prefixes], swap)] for a model of this size."""
    rows = [(b, d, False) for b, d in BFL_GLOBAL if guidance or not b.startswith("guidance_in")]
    for i in range(num_layers):
        rows += [(f"double_blocks.{i}.{b}", [f"transformer_blocks.{i}.{x}" for x in d], False)
                 for b, d in BFL_DOUBLE]
    for j in range(num_single_layers):
        rows += [(f"single_blocks.{j}.{b}", [f"single_transformer_blocks.{j}.{x}" for x in d], False)
                 for b, d in BFL_SINGLE]
    return rows + BFL_FINAL


def to_bfl(state, cfg):
    """The original BFL state dict of a diffusers FluxTransformer2DModel state dict (any device,
    meta included); every diffusers tensor is used exactly once."""
    used, out = set(), {}
    for bfl, parts, swap in bfl_table(cfg["num_layers"], cfg["num_single_layers"],
                                      cfg["guidance_embeds"]):
        norm = bfl.endswith("_norm")
        for leaf in (("weight",) if norm else ("weight", "bias")):
            names = [f"{p}.{leaf}" for p in parts]
            used.update(names)
            t = torch.cat([state[n] for n in names], dim=0)
            out[f"{bfl}.{'scale' if norm else leaf}"] = swap_halves(t) if swap else t
    assert used == set(state), sorted(set(state) ^ used)
    return out


def diffusers_converter(inner_dim):
    """diffusers' `convert_flux_transformer_checkpoint_to_diffusers`. It splits the single blocks'
    fused linear1 with a hard-coded `inner_dim = 3072` (FLUX.1's); for another width the function's
    own source is recompiled with only that constant replaced."""
    fn = sfu.convert_flux_transformer_checkpoint_to_diffusers
    if inner_dim == 3072:
        return fn
    src = inspect.getsource(fn)
    assert src.count("inner_dim = 3072\n") == 1 and src.count("3072") == 1
    scope = dict(vars(sfu))
    exec(compile(src.replace("inner_dim = 3072\n", f"inner_dim = {inner_dim}\n"), sfu.__file__,
                 "exec"), scope)
    return scope[fn.__name__]


def check_converter(bfl, want, inner_dim, exact):
    """diffusers' converter on the BFL dict gives `want` (names and shapes; with `exact` also
    dtypes and values, bit for bit) and consumes every BFL tensor."""
    ckpt = dict(bfl)
    got = diffusers_converter(inner_dim)(ckpt)
    assert not ckpt, f"BFL tensors the converter left: {sorted(ckpt)}"
    assert sorted(got) == sorted(want), sorted(set(got) ^ set(want))
    for k, v in want.items():
        assert tuple(got[k].shape) == tuple(v.shape), (k, got[k].shape, v.shape)
        if exact:
            assert got[k].dtype == v.dtype and torch.equal(got[k], v), k
    return got


def make_flux():
    torch.manual_seed(0)
    model = randomize(FluxTransformer2DModel(**FLUX_TINY), 120).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())  # bf16 values: the bf16 file is exact
    assert all(p.abs().min() > 0 for p in model.parameters())  # nothing left at zero
    return model


def flux_inputs():
    g = torch.Generator().manual_seed(121)
    latents = torch.randn(2, 4, 6, 10, generator=g)
    return {
        "hidden_states": FluxPipeline._pack_latents(latents, 2, 4, 6, 10),
        "img_ids": FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32),
        "encoder_hidden_states": torch.randn(2, 7, 32, generator=g),
        "txt_ids": torch.zeros(7, 3),
        "pooled_projections": torch.randn(2, 32, generator=g),
        "timestep": torch.tensor([0.9815, 0.31225]),
        "guidance": torch.tensor([3.5, 3.5]),
    }


def flux_forward(model, io):
    with torch.no_grad():
        return model(**io).sample


# --------------------------------------------------------------------------------------------
# 2. GGUF writing and reading.

QK_K = 256


def _f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16)


def _nonzero_div(a, b):
    return np.where(b > 0, a / np.where(b > 0, b, 1), 0)


def quantize_k(x, qtype):
    """Q4_K / Q5_K / Q6_K bytes [.., last // 256 * type_size] of float32 `x` (last dim a multiple
    of 256), and the values they stand for (computed as gguf's dequantizer computes them)."""
    shape = x.shape
    blocks = x.reshape(-1, QK_K).astype(np.float32)
    n = len(blocks)
    if qtype in (T.Q4_K, T.Q5_K):
        bits = 4 if qtype == T.Q4_K else 5
        nmax = (1 << bits) - 1
        sub = blocks.reshape(n, 8, 32)
        lo = np.minimum(sub.min(-1), 0.0)
        scale = (sub.max(-1) - lo) / nmax  # >= 0
        mins = -lo  # >= 0
        d = _f16(scale.max(-1) / 63).astype(np.float32)[:, None]
        dmin = _f16(mins.max(-1) / 63).astype(np.float32)[:, None]
        sc = np.rint(_nonzero_div(scale, d)).clip(0, 63).astype(np.uint8)
        mn = np.rint(_nonzero_div(mins, dmin)).clip(0, 63).astype(np.uint8)
        ds = (d * sc.astype(np.float32))[..., None]
        dm = (dmin * mn.astype(np.float32))[..., None]
        q = np.rint(_nonzero_div(sub + dm, ds)).clip(0, nmax).astype(np.uint8)
        values = (ds * q.astype(np.float32) - dm).reshape(n, QK_K)
        # 12 scale bytes: 6-bit scales and mins, the upper two bits of sub-blocks 4..7 in the
        # top bits of bytes 0..7 (gguf's Q4_K.get_scale_min, inverted).
        packed = np.zeros((n, 12), dtype=np.uint8)
        packed[:, 0:4] = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
        packed[:, 4:8] = mn[:, :4] | ((mn[:, 4:] >> 4) << 6)
        packed[:, 8:12] = (sc[:, 4:] & 0x0F) | ((mn[:, 4:] & 0x0F) << 4)
        low = (q & 0x0F).reshape(n, 4, 2, 32)  # 4 groups of 32 bytes: sub-blocks 2g, 2g + 1
        qs = (low[:, :, 0] | (low[:, :, 1] << 4)).reshape(n, 128)
        head = [_f16(d[:, 0]).view(np.uint8).reshape(n, 2), _f16(dmin[:, 0]).view(np.uint8).reshape(n, 2),
                packed]
        if qtype == T.Q5_K:
            hbit = (q >> 4) & 1  # [n, 8 sub-blocks, 32]: bit i of byte l = sub-block i, value l
            qh = np.zeros((n, 32), dtype=np.uint8)
            for i in range(8):
                qh |= hbit[:, i] << i
            head.append(qh)
        raw = np.concatenate(head + [qs], axis=1)
    elif qtype == T.Q6_K:
        sub = blocks.reshape(n, 16, 16)
        scale = np.abs(sub).max(-1) / 31
        d = _f16(scale.max(-1) / 127).astype(np.float32)[:, None]
        isc = np.rint(_nonzero_div(scale, d)).clip(-128, 127).astype(np.int8)
        ds = (d * isc.astype(np.float32))[..., None]
        q = (np.rint(_nonzero_div(sub, ds)).clip(-32, 31) + 32).astype(np.uint8).reshape(n, QK_K)
        values = (ds * (q.reshape(n, 16, 16).astype(np.int8) - np.int8(32)).astype(np.float32))
        values = values.reshape(n, QK_K)
        # value v: half h = v // 128, r = v % 128; ql byte h*64 + r % 64, nibble r // 64;
        # qh byte h*32 + v % 32, bits 2 * ((v % 128) // 32)
        qv = q.reshape(n, 2, 2, 64)
        ql = ((qv[:, :, 0] & 0x0F) | ((qv[:, :, 1] & 0x0F) << 4)).reshape(n, 128)
        hi = (q >> 4).reshape(n, 2, 4, 32)
        qh = (hi[:, :, 0] | (hi[:, :, 1] << 2) | (hi[:, :, 2] << 4) | (hi[:, :, 3] << 6)).reshape(n, 64)
        raw = np.concatenate([ql, qh, isc.view(np.uint8), _f16(d[:, 0]).view(np.uint8).reshape(n, 2)],
                             axis=1)
    else:
        raise ValueError(qtype)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    assert raw.shape == (n, size)
    raw = raw.reshape(*shape[:-1], shape[-1] // block * size)
    values = values.reshape(shape)
    # The package's dequantizer reads the bytes back to exactly these values.
    assert np.array_equal(dequantize(raw, qtype), values), qtype.name
    return raw, values


def encode(x, qtype):
    """(what GGUFWriter.add_tensor gets, its raw_dtype) for float32 numpy `x`."""
    if qtype == T.F32:
        return x.astype(np.float32), None
    if qtype == T.F16:
        return x.astype(np.float16), None
    if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        return quantize_k(x, qtype)[0], qtype
    return quantize(x, qtype), qtype


def write_gguf(path, arch, tensors, types, metadata=()):
    """`tensors`: name -> float32 numpy array (PyTorch shape); `types`: name -> GGML type."""
    writer = gguf.GGUFWriter(path, arch=arch)
    for add, value in metadata:
        getattr(writer, add)(value)
    for name in sorted(tensors):
        data, raw_dtype = encode(tensors[name], types[name])
        writer.add_tensor(name, data, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf(path, arch):
    """name -> (float32 torch tensor in PyTorch shape, GGML type name), as GGUFReader sees it."""
    reader = gguf.GGUFReader(path)
    field = reader.get_field("general.architecture")
    assert field.contents() == arch, field.contents()
    out = {}
    for t in reader.tensors:
        shape = [int(d) for d in reversed(t.shape.tolist())]
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        assert list(values.shape) == shape, (t.name, values.shape, shape)
        out[t.name] = (torch.from_numpy(np.ascontiguousarray(values)), t.tensor_type.name)
    return out


def check_read(read, tensors, types):
    """The file holds the tensors under their names and types; plain types are lossless here
    except F16/BF16 rounding, which `dequantize(quantize(..))` reproduces."""
    assert sorted(read) == sorted(tensors)
    for name, (values, tname) in read.items():
        qtype = types[name]
        assert tname == qtype.name, (name, tname, qtype.name)
        x = tensors[name]
        if qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
            expect = quantize_k(x, qtype)[1]
        elif qtype == T.F32:
            expect = x
        else:
            expect = dequantize(quantize(x, qtype), qtype)
        assert np.array_equal(values.numpy(), expect), name
        assert qtype in (T.F32, T.F16, T.BF16) or not np.array_equal(values.numpy(), x), name


def blockable(shape, block=32):
    return len(shape) == 2 and shape[-1] % block == 0


def q8_0_types(tensors):
    return {k: T.Q8_0 if blockable(v.shape) else T.F32 for k, v in tensors.items()}


# A few 1-D tensors stored in 16 bits in the mixed file (the rest of the 1-D ones: F32).
MIXED_PLAIN = {
    "double_blocks.0.img_attn.norm.query_norm.scale": T.F16,
    "double_blocks.0.img_mlp.0.bias": T.F16,
    "single_blocks.0.linear1.bias": T.F16,
    "double_blocks.0.txt_attn.norm.key_norm.scale": T.BF16,
    "double_blocks.0.txt_attn.qkv.bias": T.BF16,
    "final_layer.adaLN_modulation.1.bias": T.BF16,
}
ROTATE_32 = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
ROTATE_256 = [T.Q4_K, T.Q6_K, T.Q5_K]


def mixed_types(tensors):
    types, i32, i256 = {}, 0, 0
    for name in sorted(tensors):
        shape = tensors[name].shape
        if blockable(shape, 256):
            types[name] = ROTATE_256[i256 % len(ROTATE_256)]
            i256 += 1
        elif blockable(shape, 32):
            types[name] = ROTATE_32[i32 % len(ROTATE_32)]
            i32 += 1
        else:
            types[name] = MIXED_PLAIN.get(name, T.F32)
    used = set(types.values())
    assert {T.Q4_K, T.Q6_K, T.F16, T.BF16, T.F32, *ROTATE_32} <= used, used
    assert all(types[k] == v for k, v in MIXED_PLAIN.items())
    return types


FLUX_META = [("add_quantization_version", gguf.GGML_QUANT_VERSION)]


def type_table(read):
    return {name: {"type": tname, "shape": list(v.shape)} for name, (v, tname) in sorted(read.items())}


def gen_flux_gguf(keep_f32=False):
    folder = os.path.join(FIX, "flux-gguf")
    fresh_dir(folder)
    model = make_flux()
    cfg = dict(model.config)
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(folder, "config.json"))
        reloaded = FluxTransformer2DModel.from_pretrained(tmp).eval()
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    # The BFL checkpoint, proved by diffusers' converter (float32 and the stored bfloat16).
    bfl = to_bfl(state, cfg)
    assert len(bfl) == 52, len(bfl)
    check_converter(bfl, state, inner, exact=True)
    bfl16 = {k: v.to(torch.bfloat16).contiguous() for k, v in bfl.items()}
    assert all(torch.equal(bfl16[k].float(), bfl[k]) for k in bfl)
    check_converter(bfl16, {k: v.to(torch.bfloat16) for k, v in state.items()}, inner, exact=True)
    save_file(bfl16, os.path.join(folder, "transformer-bfl.safetensors"), metadata={"format": "pt"})

    io = flux_inputs()
    out = flux_forward(model, io)
    assert torch.equal(flux_forward(reloaded, io), out)
    # What the BFL file loads to (read back, converted): the same model.
    loaded = check_converter(load_file(os.path.join(folder, "transformer-bfl.safetensors")),
                             {k: v.to(torch.bfloat16) for k, v in state.items()}, inner, exact=True)
    twin = FluxTransformer2DModel(**FLUX_TINY).eval()
    twin.load_state_dict({k: v.float() for k, v in loaded.items()}, strict=True)
    assert torch.equal(flux_forward(twin, io), out)

    tensors = {k: v.numpy() for k, v in bfl.items()}
    outputs = {"out_f32": out}
    files, rel = {}, {}
    for tag, types, meta in (
        ("q8_0", q8_0_types(tensors), [("add_file_type", gguf.LlamaFileType.MOSTLY_Q8_0)]),
        ("mixed", mixed_types(tensors), []),
    ):
        path = os.path.join(folder, f"transformer-{tag}.gguf")
        write_gguf(path, "flux", tensors, types, FLUX_META + meta)
        read = read_gguf(path, "flux")
        check_read(read, tensors, types)
        got = check_converter({k: v for k, (v, _) in read.items()}, state, inner, exact=False)
        twin.load_state_dict(got, strict=True)
        o = flux_forward(twin, io)
        outputs[f"out_{tag}"] = o
        rel[f"rel_{tag}"] = float((o - out).abs().max() / out.abs().max())
        files[f"transformer-{tag}.gguf"] = type_table(read)
        print(f"  flux-gguf/transformer-{tag}.gguf: {os.path.getsize(path)} bytes, "
              f"rel {rel[f'rel_{tag}']:.4f}")
    assert 0 < rel["rel_q8_0"] < rel["rel_mixed"] < 0.2, rel
    # An all-F32 file reads back to the model exactly. Not kept by default (316 KB, over the
    # fixture budget; the q8_0 file tests the same names and F32 tensors): `--f32-gguf` keeps it.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(folder if keep_f32 else tmp, "transformer-f32.gguf")
        types = {k: T.F32 for k in tensors}
        write_gguf(path, "flux", tensors, types, FLUX_META + [("add_file_type", gguf.LlamaFileType.ALL_F32)])
        read = read_gguf(path, "flux")
        check_read(read, tensors, types)
        twin.load_state_dict(check_converter({k: v for k, (v, _) in read.items()}, state, inner,
                                             exact=True), strict=True)
        assert torch.equal(flux_forward(twin, io), out)
    save_file({k: v.contiguous() for k, v in {**io, **outputs}.items()},
              os.path.join(folder, "io.safetensors"), metadata={"format": "pt"})
    info = {
        **rel,
        "max_abs_out_f32": float(out.abs().max()),
        "bfl_dtype": "bfloat16",
        "gguf_architecture": "flux",
        "gguf_metadata": {"general.quantization_version": gguf.GGML_QUANT_VERSION,
                          "general.file_type": {"transformer-q8_0.gguf": int(gguf.LlamaFileType.MOSTLY_Q8_0),
                                                "transformer-mixed.gguf": None}},
        "bfl_from_diffusers_note": "each BFL tensor <bfl>.weight / <bfl>.bias is the diffusers "
                                   "<diffusers>.weight / .bias, or the concatenation along dim 0 "
                                   "of the `rows` [name, first row, end row) (fused q,k,v[,mlp]); "
                                   "qk-norms: <bfl>.scale = <diffusers>.weight; swap_halves: the "
                                   "two halves of dim 0 exchanged (BFL shift, scale = diffusers "
                                   "scale, shift)",
        "bfl_from_diffusers": bfl_table_json(cfg),
        "files": files,
    }
    write_json(os.path.join(folder, "io.json"), info)
    print(f"  flux-gguf: |out_f32| max {out.abs().max().item():.2f}, std {out.std().item():.2f}")


def bfl_table_json(cfg):
    """The mapping as io.json states it: BFL name -> diffusers names with row ranges."""
    rows = []
    inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    mlp = 4 * inner
    for bfl, parts, swap in bfl_table(cfg["num_layers"], cfg["num_single_layers"],
                                      cfg["guidance_embeds"]):
        if len(parts) == 1:
            rows.append({"bfl": bfl, "diffusers": parts[0], **({"swap_halves": True} if swap else {})})
        else:
            sizes = [mlp if p.endswith("proj_mlp") else inner for p in parts]
            starts = np.cumsum([0] + sizes).tolist()
            rows.append({"bfl": bfl, "rows": [[p, starts[i], starts[i + 1]] for i, p in enumerate(parts)]})
    return rows


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


# --------------------------------------------------------------------------------------------
# 3. T5 encoder: transformers <-> llama.cpp names.

def t5_to_llama_cpp(name):
    """llama.cpp's name of a transformers T5EncoderModel tensor."""
    if name == "shared.weight":
        return "token_embd.weight"
    if name == "encoder.final_layer_norm.weight":
        return "enc.output_norm.weight"
    parts = name.split(".")
    assert parts[:2] == ["encoder", "block"], name
    n, rest = parts[2], ".".join(parts[3:])
    leaf = {
        "layer.0.layer_norm.weight": "attn_norm",
        "layer.0.SelfAttention.q.weight": "attn_q",
        "layer.0.SelfAttention.k.weight": "attn_k",
        "layer.0.SelfAttention.v.weight": "attn_v",
        "layer.0.SelfAttention.o.weight": "attn_o",
        "layer.0.SelfAttention.relative_attention_bias.weight": "attn_rel_b",
        "layer.1.layer_norm.weight": "ffn_norm",
        "layer.1.DenseReluDense.wi_0.weight": "ffn_gate",
        "layer.1.DenseReluDense.wi_1.weight": "ffn_up",
        "layer.1.DenseReluDense.wo.weight": "ffn_down",
    }[rest]
    return f"enc.blk.{n}.{leaf}.weight"


# ComfyUI-GGUF loader.py's T5_SD_MAP (llama.cpp -> transformers), applied in this order with
# str.replace as its `sd_map_replace` does: the check of the table above.
COMFY_T5_SD_MAP = [
    ("enc.", "encoder."), (".blk.", ".block."), ("token_embd", "shared"),
    ("output_norm", "final_layer_norm"), ("attn_q", "layer.0.SelfAttention.q"),
    ("attn_k", "layer.0.SelfAttention.k"), ("attn_v", "layer.0.SelfAttention.v"),
    ("attn_o", "layer.0.SelfAttention.o"), ("attn_norm", "layer.0.layer_norm"),
    ("attn_rel_b", "layer.0.SelfAttention.relative_attention_bias"),
    ("ffn_up", "layer.1.DenseReluDense.wi_1"), ("ffn_down", "layer.1.DenseReluDense.wo"),
    ("ffn_gate", "layer.1.DenseReluDense.wi_0"), ("ffn_norm", "layer.1.layer_norm"),
]


def comfy_to_transformers(name):
    for a, b in COMFY_T5_SD_MAP:
        name = name.replace(a, b)
    return name


def t5_gguf_names(state, num_layers):
    """llama.cpp name -> tensor; checked against gguf's TensorNameMap and ComfyUI's table."""
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.T5ENCODER, num_layers)
    out = {}
    for k, v in state.items():
        if k == "encoder.embed_tokens.weight":
            continue  # tied to shared.weight, not stored
        name = t5_to_llama_cpp(k)
        assert tmap.get_name(k, try_suffixes=(".weight",)) == name, (k, name)
        assert comfy_to_transformers(name) == k, (name, k)
        out[name] = v
    return out


T5_TEXT = torch.tensor([[13, 7, 41, 22, 5, 60, 33, 18, 1], [9, 27, 50, 3, 44, 12, 1, 0, 0]])


def gen_t5_gguf():
    folder = os.path.join(FIX, "t5-gguf")
    fresh_dir(folder)
    config = T5Config(**T5_TINY)
    torch.manual_seed(0)
    model = randomize(T5EncoderModel(config), 130).eval()
    assert model.encoder.embed_tokens.weight is model.shared.weight
    assert all(p.abs().min() > 0 for p in model.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        shutil.copy(os.path.join(tmp, "config.json"), os.path.join(folder, "config.json"))
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    tensors = {k: v.numpy() for k, v in t5_gguf_names(state, config.num_layers).items()}
    assert len(tensors) == 9 * config.num_layers + 3, len(tensors)
    types = q8_0_types(tensors)
    assert types["token_embd.weight"] == T.Q8_0 and types["enc.blk.0.attn_rel_b.weight"] == T.F32
    path = os.path.join(folder, "model-q8_0.gguf")
    write_gguf(path, "t5encoder", tensors, types, [
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
    ])
    read = read_gguf(path, "t5encoder")
    check_read(read, tensors, types)

    ids = T5_TEXT.clone()
    mask = (torch.arange(9) < torch.tensor([[9], [7]])).long()
    assert ids.shape == (2, 9) and (ids[mask == 0] == 0).all() and ids.max() < config.vocab_size
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask).last_hidden_state
    # ComfyUI's mapping of what the reader sees, into a fresh model.
    twin = T5EncoderModel(config).eval()
    loaded = {comfy_to_transformers(k): v for k, (v, _) in read.items()}
    missing, unexpected = twin.load_state_dict(loaded, strict=False)
    assert list(missing) == ["encoder.embed_tokens.weight"] and not unexpected, (missing, unexpected)
    assert twin.encoder.embed_tokens.weight is twin.shared.weight
    with torch.no_grad():
        out_q = twin(input_ids=ids, attention_mask=mask).last_hidden_state
    rel = float((out_q - out).abs().max() / out.abs().max())
    assert 0 < rel < 0.05, rel
    save_file({"input_ids": ids, "attention_mask": mask, "out_f32": out.contiguous(),
               "out_q8_0": out_q.contiguous()}, os.path.join(folder, "io.safetensors"),
              metadata={"format": "pt"})
    write_json(os.path.join(folder, "io.json"), {
        "rel_q8_0": rel,
        "max_abs_out_f32": float(out.abs().max()),
        "gguf_architecture": "t5encoder",
        "llama_cpp_to_transformers": {t5_to_llama_cpp(k): k for k in sorted(state)
                                      if k != "encoder.embed_tokens.weight"},
        "files": {"model-q8_0.gguf": type_table(read)},
    })
    print(f"  t5-gguf/model-q8_0.gguf: {os.path.getsize(path)} bytes, rel {rel:.4f}, "
          f"|out| max {out.abs().max().item():.2f}")


# --------------------------------------------------------------------------------------------
# 4. Full-size name lists.

def read_list(path):
    with open(path) as f:
        return {k: tuple(s) for k, s in json.load(f)}


def gen_full_lists():
    for name in ("flux1-schnell", "flux1-dev"):
        folder = os.path.join(FIX, "full", name, "transformer")
        with open(os.path.join(folder, "config.json")) as f:
            cfg = {k: v for k, v in json.load(f).items() if not k.startswith("_")}
        with torch.device("meta"):
            model = FluxTransformer2DModel(**cfg)
        cfg = dict(model.config)
        state = model.state_dict()
        want = read_list(os.path.join(folder, "tensors.json"))
        assert {k: tuple(v.shape) for k, v in state.items()} == want, name
        bfl = to_bfl(state, cfg)
        inner = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        assert inner == 3072  # the converter runs unmodified
        got = check_converter(bfl, state, inner, exact=False)
        assert {k: tuple(v.shape) for k, v in got.items()} == want
        assert len(bfl) == (780 if cfg["guidance_embeds"] else 776), len(bfl)
        write_list(os.path.join(folder, "bfl-tensors.json"), bfl.items())
        print(f"  full/{name}/transformer/bfl-tensors.json: {len(bfl)} tensors")

    folder = os.path.join(FIX, "full", "t5-v1_1-xxl")
    with open(os.path.join(folder, "config.json")) as f:
        config = T5Config(**json.load(f))
    with torch.device("meta"):
        model = T5EncoderModel(config)
    names = t5_gguf_names(model.state_dict(), config.num_layers)
    assert len(names) == 219 and sum(k.endswith("attn_rel_b.weight") for k in names) == 1
    want = read_list(os.path.join(folder, "tensors.json"))
    assert {comfy_to_transformers(k): tuple(v.shape) for k, v in names.items()} == want
    write_list(os.path.join(folder, "gguf-tensors.json"), names.items())
    print(f"  full/t5-v1_1-xxl/gguf-tensors.json: {len(names)} tensors")


def main():
    gen_flux_gguf(keep_f32="--f32-gguf" in sys.argv[1:])
    gen_t5_gguf()
    gen_full_lists()
    for folder in ("flux-gguf", "t5-gguf"):
        for f in os.listdir(os.path.join(FIX, folder)):
            os.chmod(os.path.join(FIX, folder, f), 0o644)


if __name__ == "__main__":
    main()
