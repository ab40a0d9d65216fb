#!/usr/bin/env python3
"""Reference fixture generator for the Stable Diffusion pipelines of `mm-diffusion`.

Writes (relative to the repository root, whatever the cwd):

  tests/fixtures/sd-tiny/           a complete diffusers `StableDiffusionPipeline` folder
                                    (`model_index.json`, `unet/`, `vae/`, `text_encoder/`,
                                    `tokenizer/`, `scheduler/`) with tiny random models and a
                                    tiny CLIP-format BPE vocabulary, plus `expected.safetensors`
  tests/fixtures/sd-tiny-inpaint/   the same with a 9-channel inpainting UNet

`expected.safetensors` holds the inputs (initial latents, images, masks, the noise diffusers
drew from its generator, in order) and the outputs of `encode_prompt` and of 4-step runs of
the text-to-image, img2img and inpainting pipelines (`output_type="latent"` and `"pt"`).
`expected.json` holds the prompts, the settings of every case and the token ids.

Noise: diffusers draws every random tensor through `randn_tensor`; the script records those
draws (posterior samples of the VAE, initial noise) in call order as `<case>.draw.<i>`, so the
Rust tests can replay them with a `QueuedNoise`.

Usage:  python tools/reference/gen_pipelines.py
"""

import json
import os
import shutil
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import diffusers.models.autoencoders.vae as dvae  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion as p_txt  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img as p_img  # noqa: E402
import diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint as p_inp  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from gen_diffusion import FIX, fresh_dir, randomize  # noqa: E402

torch.set_default_dtype(torch.float32)

PROMPT = "A photo of a red cat, sitting on the moon!"
NEGATIVE = "blurry dog"
# Tokenizer checks: case, punctuation, digits, unicode, repeated spaces, an unknown symbol.
TOKENIZER_PROMPTS = [
    PROMPT,
    NEGATIVE,
    "",
    "an astronaut riding a horse   on Mars, 4k, café",
    "red red red cat's dogs",
    # 81 words: longer than 77 tokens, truncated (diffusers warns)
    "a red cat " * 27,
]
LONG_PROMPT = TOKENIZER_PROMPTS[-1]
CORPUS = (
    "a photo of a red cat sitting on the moon blurry dog an astronaut riding a horse on mars "
    "the cat and the dog sat on the mat photo photos red reds riding rider"
)
STEPS = 4
# Stable Diffusion 1.5's scheduler/scheduler_config.json.
SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}


def bytes_to_unicode():
    """GPT-2 / CLIP byte-to-symbol table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(corpus, count):
    """A few BPE merges learnt greedily from `corpus` (words end with `</w>`)."""
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in corpus.split()]
    merges = []
    for _ in range(count):
        pairs = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + 1
        if not pairs:
            break
        best = max(sorted(pairs), key=lambda p: pairs[p])
        merges.append(best)
        merged = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged.append(out)
        words = merged
    return merges


def make_tokenizer(folder):
    """A CLIP-format vocabulary: 256 byte symbols, the same with `</w>`, the merges, then
    `<|startoftext|>` and `<|endoftext|>` (the layout of OpenAI's vocab.json)."""
    os.makedirs(folder, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    merges = learn_merges(CORPUS, 60)
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    tok = CLIPTokenizer(
        os.path.join(folder, "vocab.json"),
        os.path.join(folder, "merges.txt"),
        model_max_length=77,
    )
    return tok, len(vocab)


def make_text_encoder(tok, vocab_size):
    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        projection_dim=16,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    return randomize(CLIPTextModel(config), 11).eval()


def make_vae():
    torch.manual_seed(0)
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=32,
    )
    return randomize(vae, 12).eval()


def make_unet(in_channels, seed):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
        attention_head_dim=2,
    )
    unet = randomize(unet, seed).eval()
    with torch.no_grad():
        # Keep the noise prediction O(0.1) so that 4 steps of CFG 7.5 stay in range.
        unet.conv_out.weight.mul_(0.2)
    return unet


class DrawRecorder:
    """Records every `randn_tensor` draw of the pipelines and of the VAE posterior."""

    modules = (dvae, p_txt, p_img, p_inp)

    def __init__(self):
        self.originals = [m.randn_tensor for m in self.modules]
        self.draws = []

        def recording(*args, **kwargs):
            t = self.originals[0](*args, **kwargs)
            self.draws.append(t.clone())
            return t

        for m in self.modules:
            m.randn_tensor = recording

    def take(self):
        out, self.draws = self.draws, []
        return out


def run(pipe, recorder, expected, name, settings, **kwargs):
    """Runs `pipe` twice (latents and images out) with a fresh generator each time; stores the
    outputs, the draws and the settings."""
    results = {}
    for output_type in ("latent", "pt"):
        gen = torch.Generator().manual_seed(settings.get("seed", 0))
        with torch.no_grad():
            out = pipe(output_type=output_type, generator=gen, **kwargs).images
        results[output_type] = out
        draws = recorder.take()
    expected[f"{name}.latents_out"] = results["latent"]
    expected[f"{name}.images"] = results["pt"]
    for i, d in enumerate(draws):
        expected[f"{name}.draw.{i}"] = d
    settings["draws"] = len(draws)
    frac = ((results["pt"] > 0.001) & (results["pt"] < 0.999)).float().mean().item()
    print(f"    {name}: {len(draws)} draws, {frac * 100:.0f}% of pixels unclamped")
    return settings


def build_pipeline(folder, unet, tok, tok_dir, text_encoder, vae):
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tok,
        unet=unet,
        scheduler=PNDMScheduler.from_config(SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    fresh_dir(folder)
    pipe.save_pretrained(folder, safe_serialization=True)
    publish_text_encoder(folder, text_encoder)
    publish_tokenizer(folder, tok_dir)
    # Stable Diffusion 1.5's scheduler file lists only the keys it sets. Keys it leaves out
    # (`timestep_spacing`, …) take the defaults of whichever class is built from it
    # (diffusers' `_use_default_values`): Euler gets "linspace", DDIM / PNDM "leading". Write
    # it that way and reload, so the in-memory pipeline is what loading the folder gives.
    sched_dir = os.path.join(folder, "scheduler")
    with open(os.path.join(sched_dir, "scheduler_config.json"), "w") as f:
        json.dump(SCHEDULER, f, indent=2)
        f.write("\n")
    pipe.scheduler = PNDMScheduler.from_pretrained(sched_dir)
    return pipe


def publish_tokenizer(folder, tok_dir):
    """transformers 5 saves only `tokenizer.json`; published Stable Diffusion folders have
    `vocab.json` + `merges.txt` (+ `tokenizer_config.json`, `special_tokens_map.json`), which is
    what the Rust loader reads and what `CLIPTokenizer.from_pretrained` reads back below."""
    out = os.path.join(folder, "tokenizer")
    os.remove(os.path.join(out, "tokenizer.json"))
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(os.path.join(tok_dir, name), os.path.join(out, name))
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
    }
    with open(os.path.join(out, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
        f.write("\n")


def publish_text_encoder(folder, text_encoder):
    """transformers 5 saves `CLIPTextModel` without the `text_model.` prefix that every
    published Stable Diffusion `text_encoder/model.safetensors` has: rename, check that
    transformers loads the published names back to the same model, and alias `text_model` (which
    diffusers 0.42.1's `encode_prompt(clip_skip=...)` still reaches for) to the flat model."""
    path = os.path.join(folder, "text_encoder", "model.safetensors")
    tensors = load_file(path)
    save_file({f"text_model.{k}": v for k, v in tensors.items()}, path, metadata={"format": "pt"})
    reloaded = CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")).eval()
    ids = torch.arange(77).unsqueeze(0) % text_encoder.config.vocab_size
    with torch.no_grad():
        a = reloaded(ids).last_hidden_state
        b = text_encoder(ids).last_hidden_state
    assert torch.equal(a, b), "text encoder does not reload from the published names"
    if not hasattr(text_encoder, "text_model"):
        object.__setattr__(text_encoder, "text_model", text_encoder)


def image_and_mask(g):
    """A 32x32 RGB image quantised to 8 bits (as a decoded PNG would be), in [0, 1], and a mask
    with a hard rectangle plus grey values on both sides of 0.5 (binarised by the pipeline)."""
    image = torch.randint(0, 256, (1, 3, 32, 32), generator=g).float() / 255.0
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 4:20] = 1.0
    mask[..., 0:4, :] = torch.rand(1, 1, 4, 32, generator=g)
    return image, mask


def finish(folder, expected, cases):
    out = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in expected.items()}
    save_file(out, os.path.join(folder, "expected.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(folder, "expected.json"), "w") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
        f.write("\n")
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
            total += os.path.getsize(os.path.join(root, name))
    print(f"  {os.path.relpath(folder, FIX)}: {total / 1024:.0f} KiB")


def gen_sd_tiny(recorder, tok_dir, tok, text_encoder, vae):
    folder = os.path.join(FIX, "sd-tiny")
    unet = make_unet(4, 13)
    pipe = build_pipeline(folder, unet, tok, tok_dir, text_encoder, vae)
    shutil.rmtree(tok_dir)
    expected, cases = {}, {"prompt": PROMPT, "negative_prompt": NEGATIVE}

    # Tokenizer ids (the pipeline's own tokenizer, reloaded from the saved folder).
    saved_tok = CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer"))
    cases["tokens"] = [
        {
            "text": t,
            "ids": saved_tok(t, padding="max_length", max_length=77, truncation=True).input_ids,
            "untruncated_len": len(saved_tok(t).input_ids),
        }
        for t in TOKENIZER_PROMPTS
    ]
    for t in cases["tokens"]:
        assert tok(t["text"], padding="max_length", max_length=77, truncation=True).input_ids == t["ids"]

    # encode_prompt: CFG with a negative prompt, the empty default, clip_skip, 2 images.
    with torch.no_grad():
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 1, True, NEGATIVE)
        expected["encode.cond"], expected["encode.uncond"] = cond, uncond
        cond, uncond = pipe.encode_prompt(PROMPT, "cpu", 2, True, None, clip_skip=1)
        expected["encode.skip1.cond"], expected["encode.skip1.uncond"] = cond, uncond
        cond, _ = pipe.encode_prompt(LONG_PROMPT, "cpu", 1, False, None)
        expected["encode.long.cond"] = cond

    g = torch.Generator().manual_seed(5)
    latents1 = torch.randn(1, 4, 8, 8, generator=g)
    latents2 = torch.randn(2, 4, 8, 8, generator=g)
    expected["latents1"], expected["latents2"] = latents1, latents2
    base = dict(prompt=PROMPT, num_inference_steps=STEPS)
    config = pipe.scheduler.config

    txt = {}
    pipe.scheduler = DDIMScheduler.from_config(config)
    txt["ddim"] = run(
        pipe, recorder, expected, "ddim",
        {"scheduler": "DDIMScheduler", "guidance_scale": 7.5, "images": 1},
        negative_prompt=NEGATIVE, latents=latents1, guidance_scale=7.5, **base,
    )
    pipe.scheduler = EulerDiscreteScheduler.from_config(config)
    txt["euler"] = run(
        pipe, recorder, expected, "euler",
        {"scheduler": "EulerDiscreteScheduler", "guidance_scale": 7.5, "images": 1},
        negative_prompt=NEGATIVE, latents=latents1, guidance_scale=7.5, **base,
    )
    pipe.scheduler = PNDMScheduler.from_config(config)
    txt["pndm_two_images_skip1_rescale"] = run(
        pipe, recorder, expected, "pndm_two_images_skip1_rescale",
        {"scheduler": None, "guidance_scale": 5.0, "images": 2, "clip_skip": 1,
         "guidance_rescale": 0.7},
        latents=latents2, guidance_scale=5.0, num_images_per_prompt=2, clip_skip=1,
        guidance_rescale=0.7, **base,
    )
    pipe.scheduler = DDIMScheduler.from_config(config)
    txt["ddim_no_cfg"] = run(
        pipe, recorder, expected, "ddim_no_cfg",
        {"scheduler": "DDIMScheduler", "guidance_scale": 1.0, "images": 1},
        latents=latents1, guidance_scale=1.0, **base,
    )
    # SD 2.x-style v-prediction: only the scheduler config changes.
    pipe.scheduler = DDIMScheduler.from_config(config, prediction_type="v_prediction")
    txt["ddim_v_prediction"] = run(
        pipe, recorder, expected, "ddim_v_prediction",
        {"scheduler": "DDIMScheduler", "guidance_scale": 7.5, "images": 1,
         "prediction_type": "v_prediction"},
        negative_prompt=NEGATIVE, latents=latents1, guidance_scale=7.5, **base,
    )
    cases["txt2img"] = txt

    image, mask = image_and_mask(g)
    expected["image"], expected["mask"] = image, mask
    img2img = StableDiffusionImg2ImgPipeline(**pipe.components)
    img2img.set_progress_bar_config(disable=True)
    i2i = {}
    for sched, cls in (("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler)):
        img2img.scheduler = cls.from_config(config)
        i2i[sched] = run(
            img2img, recorder, expected, f"img2img_{sched}",
            {"scheduler": cls.__name__, "guidance_scale": 7.5, "strength": 0.75, "seed": 7},
            image=image, strength=0.75, negative_prompt=NEGATIVE, guidance_scale=7.5, **base,
        )
    cases["img2img"] = i2i

    inpaint = StableDiffusionInpaintPipeline(**pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    inp = {}
    for sched, cls in (("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler)):
        inpaint.scheduler = cls.from_config(config)
        inp[f"blend_{sched}"] = run(
            inpaint, recorder, expected, f"inpaint_blend_{sched}",
            {"scheduler": cls.__name__, "guidance_scale": 7.5, "strength": 0.75, "seed": 8},
            image=image, mask_image=mask, strength=0.75, negative_prompt=NEGATIVE,
            guidance_scale=7.5, height=32, width=32, **base,
        )
    inpaint.scheduler = DDIMScheduler.from_config(config)
    inp["blend_full_strength"] = run(
        inpaint, recorder, expected, "inpaint_blend_full_strength",
        {"scheduler": "DDIMScheduler", "guidance_scale": 7.5, "strength": 1.0, "seed": 9},
        image=image, mask_image=mask, strength=1.0, negative_prompt=NEGATIVE,
        guidance_scale=7.5, height=32, width=32, **base,
    )
    cases["inpaint"] = inp
    finish(folder, expected, cases)


def gen_sd_tiny_inpaint(recorder, tok_dir, tok, text_encoder, vae):
    folder = os.path.join(FIX, "sd-tiny-inpaint")
    unet = make_unet(9, 14)
    base_pipe = build_pipeline(folder, unet, tok, tok_dir, text_encoder, vae)
    shutil.rmtree(tok_dir)
    inpaint = StableDiffusionInpaintPipeline(**base_pipe.components)
    inpaint.set_progress_bar_config(disable=True)
    # The inpainting pipeline class, as published inpainting checkpoints name it.
    with open(os.path.join(folder, "model_index.json")) as f:
        index = json.load(f)
    index["_class_name"] = "StableDiffusionInpaintPipeline"
    with open(os.path.join(folder, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    g = torch.Generator().manual_seed(6)
    latents1 = torch.randn(1, 4, 8, 8, generator=g)
    image, mask = image_and_mask(g)
    expected = {"latents1": latents1, "image": image, "mask": mask}
    config = inpaint.scheduler.config
    cases = {"prompt": PROMPT, "negative_prompt": NEGATIVE}
    inp = {}
    base = dict(prompt=PROMPT, num_inference_steps=STEPS, image=image, mask_image=mask,
                negative_prompt=NEGATIVE, guidance_scale=7.5, height=32, width=32)
    for sched, cls in (("ddim", DDIMScheduler), ("euler", EulerDiscreteScheduler)):
        inpaint.scheduler = cls.from_config(config)
        inp[f"unet9_{sched}"] = run(
            inpaint, recorder, expected, f"unet9_{sched}",
            {"scheduler": cls.__name__, "guidance_scale": 7.5, "strength": 1.0, "seed": 10,
             "latents": "latents1"},
            latents=latents1, strength=1.0, **base,
        )
    inpaint.scheduler = DDIMScheduler.from_config(config)
    inp["unet9_strength"] = run(
        inpaint, recorder, expected, "unet9_strength",
        {"scheduler": "DDIMScheduler", "guidance_scale": 7.5, "strength": 0.75, "seed": 11},
        strength=0.75, **base,
    )
    cases["inpaint"] = inp
    finish(folder, expected, cases)


def main():
    recorder = DrawRecorder()
    tok_dir = os.path.join(FIX, "sd-tiny-tokenizer-tmp")
    tok, vocab_size = make_tokenizer(tok_dir)
    text_encoder = make_text_encoder(tok, vocab_size)
    vae = make_vae()
    gen_sd_tiny(recorder, tok_dir, tok, text_encoder, vae)
    tok, _ = make_tokenizer(tok_dir)
    gen_sd_tiny_inpaint(recorder, tok_dir, tok, text_encoder, vae)


if __name__ == "__main__":
    main()
