//! The Stable Diffusion pipelines match diffusers 0.42.1 on the tiny random pipelines of
//! `tools/reference/gen_pipelines.py` (`tests/fixtures/sd-tiny`, `sd-tiny-inpaint`): tokenizer
//! ids, prompt embeddings, and 4-step text-to-image, img2img and inpainting runs (final
//! latents and images), with diffusers' generator draws replayed through a `QueuedNoise`.

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture, max_abs_diff};
use mm_core::tokenizer::Tokenizer;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, PromptEncoder, StableDiffusion};
use mm_schedulers::QueuedNoise;
use serde_json::Value;

/// Images are compared in `[0, 1]`.
const IMAGE_TOL: f32 = 1e-3;
/// Latents after 4 steps of CFG 7.5 reach magnitudes of ~10: relative to their maximum.
const LATENT_REL_TOL: f32 = 1e-4;
/// Prompt embeddings (one text encoder pass).
const EMBED_TOL: f32 = 1e-4;

struct Fixture {
    name: &'static str,
    pipe: StableDiffusion,
    exp: Expected,
    cases: Value,
}

fn load(name: &'static str) -> Fixture {
    let path = fixture(name);
    let pipe = StableDiffusion::load(path.to_str().unwrap(), &device()).unwrap();
    let cases = serde_json::from_str(&std::fs::read_to_string(path.join("expected.json")).unwrap())
        .unwrap();
    Fixture {
        name,
        pipe,
        exp: Expected::fixture(name),
        cases,
    }
}

impl Fixture {
    /// Options of a case from `expected.json`.
    fn options(&self, case: &Value) -> GenerateOptions {
        let mut opts = GenerateOptions::new(self.cases["prompt"].as_str().unwrap())
            .steps(4)
            .guidance_scale(case["guidance_scale"].as_f64().unwrap());
        if case["guidance_scale"].as_f64().unwrap() > 1.0 && case.get("clip_skip").is_none() {
            opts = opts.negative_prompt(self.cases["negative_prompt"].as_str().unwrap());
        }
        if let Some(s) = case["scheduler"].as_str() {
            opts = opts.scheduler(s);
        }
        if let Some(n) = case.get("images").and_then(Value::as_u64) {
            opts = opts.num_images_per_prompt(n as usize);
        }
        if let Some(k) = case.get("clip_skip").and_then(Value::as_u64) {
            opts = opts.clip_skip(k as usize);
        }
        if let Some(r) = case.get("guidance_rescale").and_then(Value::as_f64) {
            opts = opts.guidance_rescale(r);
        }
        if let Some(s) = case.get("strength").and_then(Value::as_f64) {
            opts = opts.strength(s);
        }
        opts
    }

    /// diffusers' generator draws `<name>.draw.<i>` for the given indices.
    fn draws(&self, name: &str, indices: &[usize]) -> QueuedNoise<4> {
        QueuedNoise::new(
            indices
                .iter()
                .map(|i| self.exp.float::<4>(&format!("{name}.draw.{i}"))),
        )
    }

    /// Checks a run's final latents and images against `<name>.latents_out` / `.images`.
    fn check(&self, name: &str, out: mm_diffusion::pipelines::Generated) {
        let expected = self.exp.float::<4>(&format!("{name}.latents_out"));
        assert_eq!(out.latents.dims(), expected.dims());
        let scale = expected.clone().abs().max().into_scalar::<f32>().max(1.0);
        let rel = max_abs_diff(out.latents, expected) / scale;
        eprintln!(
            "{} {name}: latents max abs error / max |latent| {rel:.2e}",
            self.name
        );
        assert!(rel <= LATENT_REL_TOL, "{name}: latents {rel:e}");
        eprint!("{} {name}: ", self.name);
        self.exp
            .check(&format!("{name}.images"), out.pixels, IMAGE_TOL);
        assert_eq!(out.images.len(), out.images.len());
    }
}

/// `tok` gives the ids of every tokenizer case (`CLIPTokenizer`, padded to 77, truncated).
fn check_token_cases(tok: &Tokenizer, cases: &Value) {
    for case in cases["tokens"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let ids = tok.encode(text).unwrap().ids.remove(0);
        assert_eq!(ids, expected, "ids of {text:?}");
    }
}

#[test]
fn tokenizer_ids_match_clip_tokenizer() {
    let f = load("sd-tiny");
    check_token_cases(
        &f.pipe.prompt_encoder.resident().unwrap().tokenizer,
        &f.cases,
    );
}

/// A `tokenizer/` as diffusers 0.42.1 `save_pretrained` writes it with transformers 5.24:
/// `tokenizer.json` + `tokenizer_config.json`, no `vocab.json` + `merges.txt`
/// (tools/reference/gen_saved.py checks that the `tokenizer.json` it writes for `sd-tiny` is
/// byte-identical to `tests/fixtures/saved/clip/tokenizer.json`).
#[test]
fn saved_tokenizer_folder_gives_the_same_ids() {
    let pipeline = std::env::temp_dir().join(format!("mm-saved-tokenizer-{}", std::process::id()));
    let tokenizer_dir = pipeline.join("tokenizer");
    std::fs::create_dir_all(&tokenizer_dir).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture("saved/clip").join(file), tokenizer_dir.join(file)).unwrap();
    }
    let tokenizer = PromptEncoder::load_tokenizer(&pipeline).unwrap();
    std::fs::remove_dir_all(&pipeline).unwrap();
    let text = std::fs::read_to_string(fixture("sd-tiny").join("expected.json")).unwrap();
    check_token_cases(&tokenizer, &serde_json::from_str(&text).unwrap());
}

#[test]
fn prompt_embeddings_match_encode_prompt() {
    let f = load("sd-tiny");
    let enc = f.pipe.prompt_encoder.resident().unwrap();
    let prompt = f.cases["prompt"].as_str().unwrap();
    let negative = f.cases["negative_prompt"].as_str().unwrap();

    let e = enc.encode(prompt, negative, 1, true, None).unwrap();
    f.exp.check("encode.cond", e.cond, EMBED_TOL);
    f.exp.check("encode.uncond", e.uncond.unwrap(), EMBED_TOL);
    assert!(e.truncated.is_empty());

    // clip_skip = 1 (penultimate layer + final norm) for the prompt only; 2 images each.
    let e = enc.encode(prompt, "", 2, true, Some(1)).unwrap();
    f.exp.check("encode.skip1.cond", e.cond, EMBED_TOL);
    f.exp
        .check("encode.skip1.uncond", e.uncond.unwrap(), EMBED_TOL);

    // Too long: truncated to 77 tokens like diffusers, and reported.
    let long = f.cases["tokens"][5]["text"].as_str().unwrap();
    let e = enc.encode(long, "", 1, false, None).unwrap();
    assert!(e.uncond.is_none());
    f.exp.check("encode.long.cond", e.cond, EMBED_TOL);
    assert_eq!(e.truncated.len(), 1);
    assert_eq!(e.truncated[0].removed, "a red cat a red cat");
    assert_eq!(e.truncated[0].tokens, 83);
    assert!(e.truncated[0].to_string().contains("truncated"));

    // A clip_skip that skips every layer is an error, not a panic.
    assert!(enc.encode(prompt, "", 1, false, Some(3)).is_err());
}

#[test]
fn text_to_image_matches_diffusers() {
    let mut f = load("sd-tiny");
    let cases = f.cases["txt2img"].as_object().unwrap().clone();
    for (name, case) in &cases {
        // v-prediction (SD 2.x) lives in the scheduler config.
        match case.get("prediction_type") {
            Some(p) => f.pipe.scheduler_config["prediction_type"] = p.clone(),
            None => {
                f.pipe
                    .scheduler_config
                    .as_object_mut()
                    .unwrap()
                    .remove("prediction_type");
            }
        }
        let latents = if case["images"] == 2 {
            "latents2"
        } else {
            "latents1"
        };
        let opts = f.options(case).latents(f.exp.float(latents));
        let out = f.pipe.text_to_image(&opts, Hooks::new()).unwrap();
        assert_eq!(out.images.len(), case["images"].as_u64().unwrap() as usize);
        assert_eq!(out.images[0].dimensions(), (32, 32));
        f.check(name, out);
    }
}

#[test]
fn img2img_matches_diffusers() {
    let f = load("sd-tiny");
    let image: Tensor<4> = f.exp.float("image");
    for (sched, case) in f.cases["img2img"].as_object().unwrap() {
        let name = format!("img2img_{sched}");
        let mut noise = f.draws(&name, &[0, 1]);
        let out = f
            .pipe
            .img2img(&image, &f.options(case), Hooks::new().noise(&mut noise))
            .unwrap();
        assert_eq!(noise.remaining(), 0);
        f.check(&name, out);
    }
}

#[test]
fn inpaint_blending_matches_diffusers() {
    let f = load("sd-tiny");
    let (image, mask): (Tensor<4>, Tensor<4>) = (f.exp.float("image"), f.exp.float("mask"));
    for (case_name, case) in f.cases["inpaint"].as_object().unwrap() {
        let name = format!("inpaint_{case_name}");
        // diffusers also encodes the masked image (draw 2) but a 4-channel UNet never uses
        // it; the Rust pipeline skips that encode.
        let mut noise = f.draws(&name, &[0, 1]);
        let out = f
            .pipe
            .inpaint(
                &image,
                &mask,
                &f.options(case),
                Hooks::new().noise(&mut noise),
            )
            .unwrap();
        assert_eq!(noise.remaining(), 0);
        f.check(&name, out);
    }
}

#[test]
fn inpaint_unet9_matches_diffusers() {
    let f = load("sd-tiny-inpaint");
    assert_eq!(f.pipe.unet.resident().unwrap().config().in_channels, 9);
    let (image, mask): (Tensor<4>, Tensor<4>) = (f.exp.float("image"), f.exp.float("mask"));
    for (name, case) in f.cases["inpaint"].as_object().unwrap() {
        let draws = case["draws"].as_u64().unwrap() as usize;
        let mut noise = f.draws(name, &(0..draws).collect::<Vec<_>>());
        let mut opts = f.options(case);
        if case.get("latents").is_some() {
            opts = opts.latents(f.exp.float("latents1"));
        }
        let out = f
            .pipe
            .inpaint(&image, &mask, &opts, Hooks::new().noise(&mut noise))
            .unwrap();
        assert_eq!(noise.remaining(), 0);
        f.check(name, out);
    }
}
