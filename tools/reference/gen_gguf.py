#!/usr/bin/env python3
"""Reference fixtures for the GGUF reader of `mm-core` (`mm_core::gguf`).

Writes (relative to the repository root, whatever the cwd) tests/fixtures/gguf/:

  types.gguf          written by the `gguf` package's GGUFWriter (alignment 64):
                        - metadata of every GGUF value type (u8 … f64, bool, string, arrays of
                          ints, strings, bools and an array of arrays)
                        - `random.<TYPE>` for F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
                          Q3_K, Q4_K, Q5_K, Q6_K: random blocks (every bit pattern of the
                          quantized values; finite f16 scales, one subnormal) in odd shapes of
                          whole blocks ([3, 5, 64], [5, 256], F32/F16/BF16 [3, 7, 11] with
                          ±0, ±inf and subnormals)
                        - `quantized.<TYPE>` for every type `gguf.quants.quantize` writes
                          (F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0): the package's quantization
                          of `input.<TYPE>` ([4, 64], normal values; Q8_0's with a zero block
                          and exact halves)
                        - `double_blocks.0.img_attn.qkv.{weight,bias}` (Q8_0 [6, 64], F32 [6]):
                          a linear layer under a ComfyUI-GGUF FLUX name
  types.safetensors   float32: every tensor's `gguf.quants.dequantize` (read back with the
                      package's GGUFReader) under its name, and the `input.<TYPE>` values
  types.json          what GGUFReader reads back: per tensor name, PyTorch shape, ggml type
                      name and id, data offset and size; per metadata key its value type and
                      value (f32 values widened exactly)
  tiny.gguf           one Q8_0 tensor `tensor.q8_0` [2, 32] and a few metadata entries (default
                      alignment 32): the base of the malformed files
  v2.gguf             tiny.gguf with version 2 (valid)
  malformed/*.gguf    tiny.gguf broken one way each (see MALFORMED below), and
                      unsupported_type.gguf: a valid file whose IQ4_NL tensor cannot be
                      dequantized

Usage:  python tools/reference/gen_gguf.py   # gguf 0.17.1, numpy; instant; byte-identical reruns
"""

import json
import os
import shutil
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import GGUFReader, GGUFValueType, GGUFWriter
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "gguf")

# Byte offsets of the f16 scale fields of each quantized block layout.
SCALES = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
PLAIN = [T.F32, T.F16, T.BF16]
QUANTIZABLE = [T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]

# key -> (value type, value, sub_type); written in this order.
METADATA = [
    ("test.u8", GGUFValueType.UINT8, 200),
    ("test.i8", GGUFValueType.INT8, -100),
    ("test.u16", GGUFValueType.UINT16, 60000),
    ("test.i16", GGUFValueType.INT16, -30000),
    ("test.u32", GGUFValueType.UINT32, 4_000_000_000),
    ("test.i32", GGUFValueType.INT32, -2_000_000_000),
    ("test.f32", GGUFValueType.FLOAT32, 0.1),
    ("test.bool", GGUFValueType.BOOL, True),
    ("test.string", GGUFValueType.STRING, "héllo, GGUF ✓"),
    ("test.u64", GGUFValueType.UINT64, 2**63 + 5),
    ("test.i64", GGUFValueType.INT64, -(2**62) - 3),
    ("test.f64", GGUFValueType.FLOAT64, 1 / 3),
    ("test.array.i32", GGUFValueType.ARRAY, [1, -2, 3]),
    ("test.array.f32", GGUFValueType.ARRAY, [0.5, -1.25, 3.1]),
    ("test.array.string", GGUFValueType.ARRAY, ["a", "", "ünï"]),
    ("test.array.bool", GGUFValueType.ARRAY, [True, False]),
    ("test.array.nested", GGUFValueType.ARRAY, [[1, 2], [3]]),
]


def random_blocks(rng, qtype, shape):
    """Random bytes for `shape` values of `qtype`, with finite f16 scales."""
    block, size = GGML_QUANT_SIZES[qtype]
    n_blocks = int(np.prod(shape)) // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for at in SCALES[qtype]:
        scales = rng.uniform(-1.0, 1.0, n_blocks).astype(np.float16)
        scales[0] = np.float16(2.0**-20)  # an f16 subnormal
        raw[:, at:at + 2] = scales.view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(*shape[:-1], shape[-1] // block * size)


def plain_values(rng, qtype, shape):
    """Values for F32 / F16 / BF16 tensors: normal values and the special ones."""
    x = rng.standard_normal(int(np.prod(shape))).astype(np.float32)
    special = [0.0, -0.0, np.inf, -np.inf, 1e-40, -3e-39, 6e-8, 65504.0, 1e30, -2.5]
    x[: len(special)] = special
    if qtype == T.F32:
        return x.reshape(shape)
    if qtype == T.F16:
        with np.errstate(over="ignore"):  # 1e30 → inf
            return x.astype(np.float16).reshape(shape)
    return quantize(x.reshape(shape), T.BF16)  # uint8 bytes


def q8_0_input(rng):
    """Normal values, a zero block and a block of exact halves (max 127: scale 1)."""
    x = rng.standard_normal((4, 64)).astype(np.float32)
    x[1, :32] = 0.0
    halves = np.arange(32, dtype=np.float32) - 15.5
    halves[-1] = 127.0
    x[2, 32:] = halves
    return x


def write_types(path):
    rng = np.random.default_rng(0)
    writer = GGUFWriter(path, arch="mm-test")
    writer.add_custom_alignment(64)
    for key, vtype, value in METADATA:
        writer.add_key_value(key, value, vtype)
    inputs = {}
    for qtype in PLAIN:
        writer.add_tensor(f"random.{qtype.name}", plain_values(rng, qtype, (3, 7, 11)),
                          raw_dtype=qtype if qtype == T.BF16 else None)
    for qtype in SCALES:
        shape = (5, 256) if GGML_QUANT_SIZES[qtype][0] == 256 else (3, 5, 64)
        writer.add_tensor(f"random.{qtype.name}", random_blocks(rng, qtype, shape), raw_dtype=qtype)
    for qtype in QUANTIZABLE:
        x = q8_0_input(rng) if qtype == T.Q8_0 else rng.standard_normal((4, 64)).astype(np.float32)
        inputs[f"input.{qtype.name}"] = x
        q = quantize(x, qtype)
        writer.add_tensor(f"quantized.{qtype.name}", q, raw_dtype=None if qtype == T.F16 else qtype)
    weight = rng.standard_normal((6, 64)).astype(np.float32)
    writer.add_tensor("double_blocks.0.img_attn.qkv.weight", quantize(weight, T.Q8_0), raw_dtype=T.Q8_0)
    writer.add_tensor("double_blocks.0.img_attn.qkv.bias", rng.standard_normal(6).astype(np.float32))
    finish(writer)
    return inputs


def finish(writer):
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def json_value(vtype, value):
    """The value as the manifest states it: f32 values rounded to f32 (then widened)."""
    if vtype == GGUFValueType.FLOAT32:
        return float(np.float32(value))
    if isinstance(value, list):
        return [json_value(GGUFValueType.get_type(v), v) for v in value]
    return value


def element_type(value):
    """GGUFWriter's element type of an array (nested: ARRAY)."""
    return GGUFValueType.get_type(value[0]).name


def manifest(path, inputs):
    reader = GGUFReader(path)
    expected = dict(inputs)
    tensors = []
    for t in reader.tensors:
        values = dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(d) for d in reversed(t.shape.tolist())]
        assert list(values.shape) == shape, (t.name, values.shape, shape)
        expected[t.name] = np.ascontiguousarray(values)
        tensors.append({"name": t.name, "shape": shape, "type": t.tensor_type.name,
                        "type_id": int(t.tensor_type), "offset": int(t.data_offset),
                        "size": int(t.n_bytes)})
    fields = {f.name: f for f in reader.fields.values()}
    metadata = []
    for key, vtype, value in METADATA:
        field = fields[key]
        assert field.types[0] == vtype, (key, field.types)
        entry = {"key": key, "type": vtype.name, "value": json_value(vtype, value)}
        if vtype == GGUFValueType.ARRAY:
            entry["element"] = element_type(value)
            if not isinstance(value[0], list):
                assert field.contents() == flat_contents(value, field.types[-1]), key
        elif vtype != GGUFValueType.FLOAT32:
            assert field.contents() == value, (key, field.contents())
        metadata.append(entry)
    arch = fields["general.architecture"].contents()
    alignment = fields["general.alignment"].contents()
    return expected, {"version": int(fields["GGUF.version"].contents()), "architecture": arch,
                      "alignment": alignment, "data_offset": int(reader.data_offset),
                      "tensors": tensors, "metadata": metadata}


def flat_contents(values, vtype):
    """What GGUFReader's `contents()` gives back for a flat array written from `values`."""
    if vtype == GGUFValueType.FLOAT32:
        return [float(np.float32(v)) for v in values]
    return values


def compact_json(info):
    """The manifest with one tensor or metadata entry per line."""
    dump = lambda v: json.dumps(v, ensure_ascii=False)  # noqa: E731
    lines = [f' "{k}": {dump(v)},' for k, v in info.items() if k not in ("tensors", "metadata")]
    for k in ("tensors", "metadata"):
        items = ",\n".join(f"  {dump(v)}" for v in info[k])
        lines.append(f' "{k}": [\n{items}\n ],')
    lines[-1] = lines[-1].rstrip(",")
    return "{\n" + "\n".join(lines) + "\n}\n"


def write_tiny(path, alignment=None, extra=None):
    writer = GGUFWriter(path, arch="mm-test")
    if alignment is not None:
        writer.add_custom_alignment(alignment)
    writer.add_string("general.name", "tiny")
    writer.add_array("test.ids", [1, 2, 3])
    rng = np.random.default_rng(1)
    writer.add_tensor("tensor.q8_0", quantize(rng.standard_normal((2, 32)).astype(np.float32), T.Q8_0),
                      raw_dtype=T.Q8_0)
    if extra is not None:
        extra(writer, rng)
    finish(writer)


def patched(data, at, fmt, value):
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def malformed(tiny):
    """name -> bytes of tiny.gguf broken one way."""
    name = b"tensor.q8_0"
    info = tiny.index(struct.pack("<Q", len(name)) + name)  # the tensor table entry
    dims = info + 8 + len(name) + 4  # two u64 dimensions
    type_at = dims + 16
    offset_at = type_at + 4
    info_end = offset_at + 8
    data_start = (info_end + 31) // 32 * 32
    array = tiny.index(b"test.ids") + len(b"test.ids") + 4 + 4  # its u64 length
    return {
        "bad_magic.gguf": b"GGUX" + tiny[4:],
        "bad_version.gguf": patched(tiny, 4, "<I", 1),
        "big_endian.gguf": patched(tiny, 4, ">I", 3),
        "empty.gguf": b"",
        "truncated_header.gguf": tiny[:20],
        "truncated_metadata.gguf": tiny[:info - 3],
        "truncated_tensor_info.gguf": tiny[:info_end - 5],
        "truncated_data.gguf": tiny[:data_start + 10],
        "out_of_bounds.gguf": patched(tiny, offset_at, "<Q", 1 << 20),
        "misaligned.gguf": patched(tiny, offset_at, "<Q", 4),
        "unknown_type.gguf": patched(tiny, type_at, "<I", 99),
        "shape_mismatch.gguf": patched(tiny, dims, "<Q", 33),
        "huge_tensor_count.gguf": patched(tiny, 8, "<Q", 1 << 62),
        "huge_kv_count.gguf": patched(tiny, 16, "<Q", 1 << 62),
        "huge_array.gguf": patched(tiny, array, "<Q", 1 << 61),
    }


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    os.makedirs(os.path.join(OUT, "malformed"))
    types = os.path.join(OUT, "types.gguf")
    inputs = write_types(types)
    expected, info = manifest(types, inputs)
    save_file(expected, os.path.join(OUT, "types.safetensors"))
    with open(os.path.join(OUT, "types.json"), "w") as f:
        f.write(compact_json(info))

    tiny_path = os.path.join(OUT, "tiny.gguf")
    write_tiny(tiny_path)
    with open(tiny_path, "rb") as f:
        tiny = f.read()
    assert struct.unpack_from("<I", tiny, 4)[0] == 3
    with open(os.path.join(OUT, "v2.gguf"), "wb") as f:
        f.write(patched(tiny, 4, "<I", 2))
    for name, data in malformed(tiny).items():
        with open(os.path.join(OUT, "malformed", name), "wb") as f:
            f.write(data)
    write_tiny(os.path.join(OUT, "malformed", "bad_alignment.gguf"), alignment=48)

    def iq4_nl(writer, rng):
        raw = rng.integers(0, 256, size=(2, 18), dtype=np.uint8)
        writer.add_tensor("tensor.iq4_nl", raw, raw_dtype=T.IQ4_NL)

    write_tiny(os.path.join(OUT, "malformed", "unsupported_type.gguf"), extra=iq4_nl)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"wrote {OUT}: {total} bytes")


if __name__ == "__main__":
    sys.exit(main())
