"""JPEG decoding fixtures: small JPEGs of every layout plus Pillow's decoded pixels.

Writes tests/fixtures/jpeg/:
  *.jpg                 the inputs (Pillow's encoder where it can make the layout, else the
                        minimal baseline encoder below: 4:4:0, 4:1:1, YCCK, restart intervals
                        on subsampled MCUs)
  expected.safetensors  for each NAME.jpg a uint8 tensor NAME [H, W, 3] =
                        np.asarray(Image.open(NAME.jpg).convert("RGB")), and NAME.portable,
                        the same with libjpeg-turbo's C code (JSIMD_FORCENONE=1), where that
                        differs (corrupt data only)
  prefixes_pillow_decodes.json
                        for each NAME.jpg the [start, end) ranges of prefix lengths data[:n]
                        that Pillow decodes (all others raise)
  assets.json           for each JPEG of $MM_ASSETS/images (rocket.jpg): sha256 and 32 sampled
                        pixels of Pillow's RGB decode (the assets themselves are not copied)
  bomb_gray1_20000x20000.png
                        a valid 1-bit grayscale PNG of 20000x20000 black pixels (49 KB)
                        that decodes to 400 MB of gray and 1.2 GB of RGB

Deterministic: re-running rewrites byte-identical files.
"""

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "jpeg"
ASSETS = Path(os.environ.get("MM_ASSETS", ROOT.parent / "shared" / "assets"))


def test_image(width, height, seed):
    """Smooth gradients, sharp edges and noise: exercises every IDCT and upsampling path."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 127 + 120 * np.sin(x / 5.0 + seed)
    g = 255 * x / max(width - 1, 1) * (y % 7 < 4)
    b = 255 * ((x // 4 + y // 3) % 2)
    img = np.stack([r, g, b], axis=-1) + rng.normal(0, 25, (height, width, 3))
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


# --- Minimal baseline (SOF0, Huffman) encoder, for layouts Pillow's encoder cannot write ---

ZIGZAG = sorted(range(64), key=lambda i: (i // 8 + i % 8, (i // 8) if (i // 8 + i % 8) % 2 else (i % 8)))
DCT = np.array(
    [[np.sqrt((1 if u == 0 else 2) / 8) * np.cos((2 * x + 1) * u * np.pi / 16) for x in range(8)] for u in range(8)]
)
QUANT = np.array([[3 + 2 * (u + v) for v in range(8)] for u in range(8)])
# Valid (not optimal) Huffman tables: every DC category 0..11 gets a 4-bit code, every AC symbol
# (EOB, ZRL, run 0..15 x size 1..10) an 8-bit code; no code is all ones.
DC_SYMBOLS = list(range(12))
AC_SYMBOLS = [0x00, 0xF0] + [(run << 4) | size for run in range(16) for size in range(1, 11)]


def huffman_table(symbols, length):
    return {s: (i, length) for i, s in enumerate(symbols)}


DC_CODES = huffman_table(DC_SYMBOLS, 4)
AC_CODES = huffman_table(AC_SYMBOLS, 8)


class BitWriter:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def bits(self, value, length):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:
                    self.out.append(0)  # byte stuffing
                self.acc = self.n = 0

    def flush(self):
        if self.n:
            self.bits((1 << (8 - self.n)) - 1, 8 - self.n)  # pad with ones


def magnitude(v):
    size = int(abs(v)).bit_length()
    return size, (v if v >= 0 else v + (1 << size) - 1)


def encode_block(w, block, pred):
    coef = DCT @ (block.astype(np.float64) - 128) @ DCT.T
    q = np.round(coef / QUANT).astype(int).reshape(64)[ZIGZAG]
    size, bits = magnitude(q[0] - pred)
    w.bits(*DC_CODES[size])
    w.bits(bits, size)
    run = 0
    for k in range(1, 64):
        if q[k] == 0:
            run += 1
            continue
        while run > 15:
            w.bits(*AC_CODES[0xF0])
            run -= 16
        size, bits = magnitude(q[k])
        w.bits(*AC_CODES[(run << 4) | size])
        w.bits(bits, size)
        run = 0
    if run:
        w.bits(*AC_CODES[0x00])
    return q[0]


def segment(marker, payload):
    return struct.pack(">HH", marker, len(payload) + 2) + payload


def huffman_segment(table_class, table_id, symbols, length):
    counts = [0] * 16
    counts[length - 1] = len(symbols)
    return bytes([table_class << 4 | table_id]) + bytes(counts) + bytes(symbols)


def encode_baseline(channels, sampling, ids, adobe_transform=None, restart_interval=0):
    """Encodes full-resolution uint8 planes [H, W] with per-component (h, v) sampling factors.

    Chroma is box-filtered down; edges are padded by replication to whole MCUs.
    """
    height, width = channels[0].shape
    hmax = max(h for h, _ in sampling)
    vmax = max(v for _, v in sampling)
    single = len(channels) == 1
    mcu_w, mcu_h = (8, 8) if single else (8 * hmax, 8 * vmax)
    mcus_x, mcus_y = -(-width // mcu_w), -(-height // mcu_h)
    planes = []
    for plane, (h, v) in zip(channels, sampling):
        fx, fy = (1, 1) if single else (hmax // h, vmax // v)
        ph, pw = -(-height // fy) * fy, -(-width // fx) * fx
        p = np.pad(plane.astype(np.float64), ((0, ph - height), (0, pw - width)), mode="edge")
        p = p.reshape(ph // fy, fy, pw // fx, fx).mean(axis=(1, 3))
        bh, bw = (mcus_y * 8, mcus_x * 8) if single else (mcus_y * v * 8, mcus_x * h * 8)
        planes.append(np.pad(p, ((0, bh - p.shape[0]), (0, bw - p.shape[1])), mode="edge"))

    w = BitWriter()
    preds = [0] * len(planes)
    for mcu in range(mcus_x * mcus_y):
        if restart_interval and mcu and mcu % restart_interval == 0:
            w.flush()
            w.out += bytes([0xFF, 0xD0 + (mcu // restart_interval - 1) % 8])
            preds = [0] * len(planes)
        my, mx = divmod(mcu, mcus_x)
        for c, (plane, (h, v)) in enumerate(zip(planes, sampling)):
            h, v = (1, 1) if single else (h, v)
            for by in range(v):
                for bx in range(h):
                    y0, x0 = (my * v + by) * 8, (mx * h + bx) * 8
                    preds[c] = encode_block(w, plane[y0 : y0 + 8, x0 : x0 + 8], preds[c])
    w.flush()

    out = bytearray(b"\xff\xd8")
    if adobe_transform is None:
        out += segment(0xFFE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    else:
        out += segment(0xFFEE, b"Adobe" + struct.pack(">HHHB", 100, 0, 0, adobe_transform))
    out += segment(0xFFDB, bytes([0]) + bytes(int(QUANT.reshape(64)[k]) for k in ZIGZAG))
    sof = struct.pack(">BHHB", 8, height, width, len(channels))
    for cid, (h, v) in zip(ids, sampling):
        sof += bytes([cid, h << 4 | v, 0])
    out += segment(0xFFC0, sof)
    out += segment(0xFFC4, huffman_segment(0, 0, DC_SYMBOLS, 4) + huffman_segment(1, 0, AC_SYMBOLS, 8))
    if restart_interval:
        out += segment(0xFFDD, struct.pack(">H", restart_interval))
    out += segment(0xFFDA, bytes([len(channels)]) + b"".join(bytes([cid, 0]) for cid in ids) + b"\x00\x3f\x00")
    out += w.out + b"\xff\xd9"
    return bytes(out)


def ycbcr(rgb):
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, cb, cr)]


# --- Cases ---


def pillow(img, mode="RGB", **params):
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, "JPEG", quality=params.pop("quality", 90), **params)
    return buf.getvalue()


def cases():
    odd = test_image(37, 23, 1)
    mid = test_image(64, 48, 2)
    wide = test_image(53, 19, 3)
    out = {
        # Pillow's encoder (libjpeg-turbo 3.2.0).
        "pil_444_37x23": pillow(odd, subsampling="4:4:4"),
        "pil_422_37x23": pillow(odd, subsampling="4:2:2"),
        "pil_420_37x23": pillow(odd, subsampling="4:2:0"),
        "pil_420_64x48": pillow(mid, subsampling="4:2:0", quality=75),
        "pil_gray_37x23": pillow(odd, "L"),
        "pil_progressive_420_37x23": pillow(odd, subsampling="4:2:0", progressive=True),
        "pil_progressive_444_64x48": pillow(mid, subsampling="4:4:4", progressive=True, optimize=True),
        "pil_progressive_gray_53x19": pillow(wide, "L", progressive=True),
        "pil_restart_blocks_420_53x19": pillow(wide, subsampling="4:2:0", restart_marker_blocks=1),
        "pil_restart_rows_422_64x48": pillow(mid, subsampling="4:2:2", restart_marker_rows=1),
        "pil_rgb_adobe_37x23": pillow(odd, keep_rgb=True, subsampling="4:4:4"),
        "pil_cmyk_adobe_37x23": pillow(odd, "CMYK"),
    }
    # The minimal encoder: layouts Pillow's encoder cannot write.
    ycc = ycbcr(odd)
    out["enc_440_37x23"] = encode_baseline(ycc, [(1, 2), (1, 1), (1, 1)], [1, 2, 3])
    out["enc_411_37x23"] = encode_baseline(ycc, [(4, 1), (1, 1), (1, 1)], [1, 2, 3])
    out["enc_restart_411_53x19"] = encode_baseline(
        ycbcr(wide), [(4, 1), (1, 1), (1, 1)], [1, 2, 3], restart_interval=1
    )
    # YCCK (Adobe transform 2): libjpeg converts to CMYK; Pillow reads it as inverted CMYK.
    k = ((np.arange(37)[None, :] * 7 + np.arange(23)[:, None] * 3) % 256).astype(np.uint8)
    out["enc_ycck_420_37x23"] = encode_baseline(
        [*ycc, k], [(2, 2), (1, 1), (1, 1), (2, 2)], [1, 2, 3, 4], adobe_transform=2
    )
    # Corrupt but complete: scan bytes changed (libjpeg warns and decodes on; Pillow ignores
    # warnings), and junk bytes before EOI ("extraneous bytes before marker").
    data = bytearray(out["pil_420_64x48"])
    sos = data.index(b"\xff\xda")
    for i in range(sos + 40, len(data) - 40, 97):
        if data[i] != 0xFF and data[i - 1] != 0xFF:
            data[i] ^= 0x5A if (data[i] ^ 0x5A) != 0xFF else 0x0F
    out["corrupt_scan_420_64x48"] = bytes(data)
    out["corrupt_trailing_junk_37x23"] = out["pil_420_37x23"][:-2] + b"\x12\x34\x56\xff\xd9"
    return out


def bomb_png(width=20000, height=20000):
    """1-bit grayscale, all black: rows of zeros compress ~1000:1."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def decode_rgb(data):
    return np.ascontiguousarray(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    expected = {}
    for name, data in cases().items():
        (OUT / f"{name}.jpg").write_bytes(data)
        expected[name] = decode_rgb(data)
    # libjpeg-turbo's portable C code (JSIMD_FORCENONE=1), which the Rust decoder builds: the
    # same pixels for every valid file; corrupt data can give IDCT inputs out of range, which
    # the x86 SIMD IDCT saturates and the C IDCT wraps. Stored as NAME.portable where they differ.
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "JSIMD_FORCENONE": "1"}
        subprocess.run([sys.executable, __file__, "--decode-portable", tmp], env=env, check=True)
        portable = np.load(Path(tmp) / "portable.npz")
        for name in list(expected):
            if not np.array_equal(portable[name], expected[name]):
                assert name.startswith("corrupt_"), f"{name}: SIMD and C decodes differ"
                expected[f"{name}.portable"] = portable[name]
    save_file(expected, str(OUT / "expected.safetensors"))

    # Which prefixes of each fixture Pillow decodes (cut files are errors, "image file is
    # truncated", except where the data already ended the image, as after a marker hit inside
    # corrupt scan data): [start, end) ranges of prefix lengths; the Rust test compares.
    prefixes = {}
    for name, data in cases().items():
        ok = []
        for end in range(len(data) + 1):
            try:
                Image.open(io.BytesIO(data[:end])).convert("RGB")
            except (OSError, SyntaxError):
                continue
            if ok and ok[-1][1] == end:
                ok[-1][1] = end + 1
            else:
                ok.append([end, end + 1])
        prefixes[name] = ok
    (OUT / "prefixes_pillow_decodes.json").write_text(json.dumps(prefixes, indent=0) + "\n")

    assets = {}
    for path in sorted((ASSETS / "images").iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg"):
            continue
        rgb = np.asarray(Image.open(path).convert("RGB"))
        h, w, _ = rgb.shape
        rng = np.random.RandomState(0)
        xs, ys = rng.randint(0, w, 32), rng.randint(0, h, 32)
        assets[path.name] = {
            "width": w,
            "height": h,
            "sha256_rgb": hashlib.sha256(rgb.tobytes()).hexdigest(),
            "samples_x_y_r_g_b": [[int(x), int(y), *map(int, rgb[y, x])] for x, y in zip(xs, ys)],
        }
    (OUT / "assets.json").write_text(json.dumps(assets, indent=1) + "\n")
    (OUT / "bomb_gray1_20000x20000.png").write_bytes(bomb_png())


if __name__ == "__main__":
    if sys.argv[1:2] == ["--decode-portable"]:
        np.savez(Path(sys.argv[2]) / "portable.npz", **{n: decode_rgb(d) for n, d in cases().items()})
    else:
        main()
