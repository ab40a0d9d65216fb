#!/usr/bin/env python3
"""Reference fixtures for the T5 encoder of `mm-vision` (`T5EncoderModel`).

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/t5-tiny/        a tiny random T5 v1.1-style `T5EncoderModel` (`gated-gelu`
                                 feed-forward, `d_model` 32 ≠ heads × d_kv = 4 × 12)
                                 written by `save_pretrained`
  tests/fixtures/t5-tiny-relu/   the same with the original T5's `relu` feed-forward
  each with expected.safetensors:
      input_ids [2, 24] (int64), attention_mask [2, 24] (the second row padded after 15
      tokens), last_hidden_state [2, 24, 32] with the mask, last_hidden_state_nomask (the
      first row alone, no mask)

  tests/fixtures/full/t5-v1_1-xxl/   google/t5-v1_1-xxl's config (the T5 encoder of Stable
                                 Diffusion 3's `text_encoder_3` and FLUX.1's `text_encoder_2`)
                                 and `tensors.json`: the (name, shape) list `save_pretrained`
                                 writes for a `T5EncoderModel` of it (the tied
                                 `encoder.embed_tokens.weight` left out), built on the meta device

  tests/fixtures/t5-tokenizer/    a T5-style SentencePiece-Unigram `tokenizer.json` built with
                                 `tokenizers` (T5's layout: `<pad>` 0, `</s>` 1, `<unk>` 2,
                                 whitespace collapse + NFKC normalizer, WhitespaceSplit +
                                 Metaspace pre-tokenizer, `$A </s>` post-processor; a small
                                 hand-made vocabulary instead of T5's 32k pieces and its
                                 precompiled charsmap), `tokenizer_config.json`, `prompts.json`
                                 and `expected.safetensors`: `T5TokenizerFast`'s ids and masks
                                 for each prompt as SD3 calls it (`padding="max_length"`,
                                 `max_length=16`, `truncation=True`)

24 tokens with 8 buckets and a maximum distance of 20 take every branch of the relative
position buckets (exact, log-spaced, clamped; both directions).

Usage:  python tools/reference/gen_t5.py   # transformers 5.24; a few seconds; byte-identical reruns
"""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import T5Config, T5EncoderModel  # noqa: E402

from gen_diffusion import FIX, fresh_dir, randomize  # noqa: E402
from gen_single_file import write_list  # noqa: E402

torch.set_default_dtype(torch.float32)


def gen(name, feed_forward_proj, seed):
    folder = os.path.join(FIX, name)
    fresh_dir(folder)
    config = T5Config(vocab_size=64, d_model=32, d_kv=12, d_ff=48, num_layers=3, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20,
                      feed_forward_proj=feed_forward_proj, dropout_rate=0.0)
    torch.manual_seed(0)
    model = randomize(T5EncoderModel(config), seed).eval()
    model.save_pretrained(folder, safe_serialization=True)
    reloaded = T5EncoderModel.from_pretrained(folder).eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, 64, (2, 24), generator=g)
    ids[:, -1] = 1  # </s>
    mask = torch.ones(2, 24, dtype=torch.int64)
    ids[1, 15:] = 0  # <pad>
    ids[1, 14] = 1
    mask[1, 15:] = 0
    with torch.no_grad():
        out = reloaded(input_ids=ids, attention_mask=mask).last_hidden_state
        alone = reloaded(input_ids=ids[:1]).last_hidden_state
        assert torch.equal(out, model(input_ids=ids, attention_mask=mask).last_hidden_state)
    expected = {"input_ids": ids, "attention_mask": mask, "last_hidden_state": out,
                "last_hidden_state_nomask": alone}
    save_file({k: v.contiguous() for k, v in expected.items()},
              os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    total = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    print(f"  {name}: |h| max {out.abs().max().item():.2f}, {total / 1024:.0f} KiB")


# google/t5-v1_1-xxl config.json (published), the encoder's fields.
XXL = {
    "architectures": ["T5ForConditionalGeneration"], "d_ff": 10240, "d_kv": 64,
    "d_model": 4096, "decoder_start_token_id": 0, "dropout_rate": 0.1, "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True,
    "layer_norm_epsilon": 1e-06, "model_type": "t5", "num_decoder_layers": 24,
    "num_heads": 64, "num_layers": 24, "output_past": True, "pad_token_id": 0,
    "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "vocab_size": 32128,
}


def gen_full():
    folder = os.path.join(FIX, "full", "t5-v1_1-xxl")
    fresh_dir(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(XXL, f, indent=2)
        f.write("\n")
    with torch.device("meta"):
        model = T5EncoderModel(T5Config(**XXL))
    state = {k: v for k, v in model.state_dict().items() if k != "encoder.embed_tokens.weight"}
    write_list(os.path.join(folder, "tensors.json"), state.items())
    print(f"  full/t5-v1_1-xxl: {len(state)} tensors")


PROMPTS = [
    "a photo of a cat",
    "A Photo  of   the CAT!",
    "café au lait, 日本 and ﬁve ①",
    "",
    "the cat and the dog and the cat and the dog and the cat and the dog on a mat",
    "unknown ✨ glyphs ☃",
]
PIECES = ["▁a", "▁photo", "▁of", "▁the", "▁cat", "▁and", "▁dog", "▁on", "▁mat", "▁five",
          "▁caf", "é", "▁au", "▁lait", ",", "!", "▁", "日本", "▁1"]


def gen_tokenizer():
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    folder = os.path.join(FIX, "t5-tokenizer")
    fresh_dir(folder)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    letters += [c.upper() for c in letters]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(p, -2.0 - 0.1 * i) for i, p in enumerate(PIECES)]
    vocab += [(c, -8.0 - 0.01 * i) for i, c in enumerate(letters + list("▁日本é"))]
    tok = Tokenizer(models.Unigram(vocab, unk_id=2, byte_fallback=False))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                 pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", pair="$A </s> $B </s>",
                                                       special_tokens=[("</s>", 1)])
    path = os.path.join(folder, "tokenizer.json")
    tok.save(path)
    fast = T5TokenizerFast(tokenizer_file=path, eos_token="</s>", unk_token="<unk>",
                           pad_token="<pad>", extra_ids=0)
    fast.save_pretrained(folder)
    assert fast.pad_token_id == 0 and fast.eos_token_id == 1
    expected = {}
    for i, prompt in enumerate(PROMPTS):
        enc = fast(prompt, padding="max_length", max_length=16, truncation=True,
                   add_special_tokens=True, return_tensors="pt")
        expected[f"{i}.input_ids"] = enc.input_ids
        expected[f"{i}.attention_mask"] = enc.attention_mask
        print(f"    {prompt!r}: {enc.input_ids[0].tolist()}")
    save_file(expected, os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "prompts.json"), "w") as f:
        json.dump({"max_length": 16, "prompts": PROMPTS}, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main():
    gen_tokenizer()
    gen("t5-tiny", "gated-gelu", 51)
    gen("t5-tiny-relu", "relu", 52)
    gen_full()


if __name__ == "__main__":
    main()
