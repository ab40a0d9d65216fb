//! The FLUX pipelines match diffusers 0.42.1 on the tiny random folder of
//! `tools/reference/gen_flux.py` (`tests/fixtures/flux-tiny`: CLIP's pooled embedding, T5,
//! a dev-style transformer with the guidance embedding, the 2×2-packed VAE latents, the
//! flow-matching scheduler with the resolution-dependent shift): prompt embeddings, and
//! text-to-image (dev with embedded guidance, dev with true CFG, schnell, two images per
//! prompt, 8 T5 tokens) and img2img — final latents and images — with diffusers' draws
//! replayed.

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{
    Flux, FluxPromptEncoder, GenerateOptions, Generated, Hooks, LoadOptions, MemoryMode,
    ModelFamily, PipelineDir, TextConditioner,
};
use mm_diffusion::transformer::FluxTransformer2DModel;
use mm_diffusion::vae::AutoencoderKL;
use mm_schedulers::QueuedNoise;
use serde_json::Value;

/// Prompt and pooled embeddings.
const EMBED_TOL: f32 = 1e-4;

const NAME: &str = "flux-tiny";

struct Fixture {
    dev: Flux,
    schnell: Flux,
    exp: Expected,
    cases: Value,
}

fn path() -> String {
    fixture(NAME).to_string_lossy().into_owned()
}

fn fixture_pipes() -> Fixture {
    let text = std::fs::read_to_string(fixture(NAME).join("expected.json")).unwrap();
    let cases: Value = serde_json::from_str(&text).unwrap();
    let device = device();
    // schnell: the same VAE and text encoders, the schnell transformer and scheduler.
    let transformer = FluxTransformer2DModel::load(
        fixture("flux-transformer-tiny")
            .join("schnell")
            .to_str()
            .unwrap(),
        &device,
    )
    .unwrap();
    let vae = AutoencoderKL::load(format!("{}/vae", path()), &device).unwrap();
    let dir = PipelineDir::resolve(&path()).unwrap();
    let text_encoder = FluxPromptEncoder::load(&dir, &LoadOptions::new(), &device).unwrap();
    let schnell = Flux::from_parts(
        transformer,
        vae,
        text_encoder,
        cases["schnell_scheduler"].clone(),
        &device,
    );
    Fixture {
        dev: Flux::load(&path(), &device).unwrap(),
        schnell,
        exp: Expected::fixture(NAME),
        cases,
    }
}

/// The options of a pipeline call from diffusers' keyword arguments.
fn options(case: &Value) -> GenerateOptions {
    let kwargs = case["kwargs"].as_object().unwrap();
    let mut opts = GenerateOptions::new(kwargs["prompt"].as_str().unwrap());
    for (key, v) in kwargs {
        let f = || v.as_f64().unwrap();
        let s = || v.as_str().unwrap().to_string();
        let n = || v.as_u64().unwrap() as usize;
        match key.as_str() {
            "prompt" => {}
            "height" => opts.height = Some(n()),
            "width" => opts.width = Some(n()),
            "num_inference_steps" => opts.steps = Some(n()),
            "negative_prompt" => opts.negative_prompt = Some(s()),
            "prompt_2" => opts.prompt_2 = Some(s()),
            "guidance_scale" => opts.guidance_scale = Some(f()),
            "true_cfg_scale" => opts.true_cfg_scale = Some(f()),
            "strength" => opts.strength = Some(f()),
            "num_images_per_prompt" => opts.num_images_per_prompt = n(),
            "max_sequence_length" => opts.max_sequence_length = Some(n()),
            other => panic!("unknown keyword {other}"),
        }
    }
    opts
}

impl Fixture {
    fn pipe(&self, case: &Value) -> &Flux {
        match case["transformer"].as_str().unwrap() {
            "schnell" => &self.schnell,
            _ => &self.dev,
        }
    }

    /// Runs case `name` with its draws replayed.
    fn run(&self, name: &str) -> Generated {
        let case = &self.cases["cases"][name];
        let mut opts = options(case);
        if let Some(key) = case["latents"].as_str() {
            opts = opts.latents(self.exp.float(key));
        }
        let draws = case["draws"].as_u64().unwrap() as usize;
        let mut noise =
            QueuedNoise::new((0..draws).map(|i| self.exp.float::<4>(&format!("{name}.draw.{i}"))));
        let hooks = Hooks::new().noise(&mut noise);
        let pipe = self.pipe(case);
        let out = match case["call"].as_str().unwrap() {
            "text_to_image" => pipe.text_to_image(&opts, hooks),
            "img2img" => {
                let image = self.exp.float::<4>(case["image"].as_str().unwrap());
                pipe.img2img(&image, &opts, hooks)
            }
            other => panic!("unknown call {other}"),
        }
        .unwrap();
        assert_eq!(noise.remaining(), 0, "{name}: draws left");
        out
    }

    /// Checks a run against `<name>.latents_unpacked` / `.images`.
    fn run_and_check(&self, name: &str) {
        let out = self.run(name);
        let expected = self.exp.float::<4>(&format!("{name}.latents_unpacked"));
        let scale = expected.clone().abs().max().into_scalar::<f32>().max(1.0);
        assert_eq!(out.latents.dims(), expected.dims(), "{name}");
        let rel = common::max_abs_diff(out.latents, expected) / scale;
        eprintln!("{name}: latents error / max |latent| {rel:.2e}");
        assert!(rel <= common::LATENT_REL_TOL, "{name}: latents {rel:e}");
        eprint!("{name}: ");
        self.exp
            .check(&format!("{name}.images"), out.pixels, common::IMAGE_TOL);
    }
}

#[test]
fn prompt_embeddings_match_encode_prompt() {
    let f = fixture_pipes();
    let encoder = f.dev.prompt_encoder.get().unwrap();
    for (name, case) in f.cases["encode"].as_object().unwrap() {
        let text = |k: &str| case[k].as_str().map(String::from);
        let mut opts = GenerateOptions::new(text("prompt").unwrap())
            .num_images_per_prompt(case["num_images_per_prompt"].as_u64().unwrap() as usize);
        opts.prompt_2 = text("prompt_2");
        opts.max_sequence_length = case["max_sequence_length"].as_u64().map(|k| k as usize);
        let e = encoder.encode_prompts(&opts, false).unwrap();
        let key = |k: &str| format!("encode.{name}.{k}");
        eprint!("encode {name}: ");
        f.exp.check(&key("prompt_embeds"), e.cond, EMBED_TOL);
        eprint!("encode {name}: ");
        f.exp
            .check(&key("pooled_prompt_embeds"), e.pooled.unwrap(), EMBED_TOL);
    }
}

#[test]
fn text_to_image_matches_diffusers() {
    let f = fixture_pipes();
    for name in [
        "dev_t2i",
        "dev_true_cfg",
        "schnell_t2i",
        "two_images",
        "max_seq8",
    ] {
        f.run_and_check(name);
    }
}

#[test]
fn img2img_matches_diffusers() {
    fixture_pipes().run_and_check("img2img");
}

#[test]
fn sequential_memory_mode_gives_the_same_image() {
    let f = fixture_pipes();
    let sequential = Flux::load_with_options(
        &path(),
        LoadOptions::new().memory(MemoryMode::Sequential),
        &device(),
    )
    .unwrap();
    assert!(sequential.unet.resident().is_none());
    let case = &f.cases["cases"]["dev_t2i"];
    let opts = options(case).latents(f.exp.float("latents1"));
    let a = f.dev.text_to_image(&opts, Hooks::new()).unwrap();
    let b = sequential.text_to_image(&opts, Hooks::new()).unwrap();
    assert_eq!(common::max_abs_diff(a.pixels, b.pixels), 0.0);
}

#[test]
fn defaults_and_settings_follow_diffusers() {
    let f = fixture_pipes();
    let pipe = &f.dev;
    assert_eq!(pipe.family(), ModelFamily::Flux);
    let scheduler = pipe.scheduler(&GenerateOptions::new("x")).unwrap();
    assert_eq!(scheduler.timesteps().len(), 28);
    // Sizes must be multiples of the VAE factor times 2 (packing): 4 here.
    let odd = GenerateOptions::new("x").size(10, 16).steps(1);
    assert!(matches!(
        pipe.text_to_image(&odd, Hooks::new()),
        Err(Error::NotMultiple { factor: 4, .. })
    ));
    // SD3's and SDXL's settings are refused; FLUX's by the other pipelines.
    let slg = GenerateOptions::new("x").prompt_3("y").steps(1);
    assert!(matches!(
        pipe.text_to_image(&slg, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "prompt_3",
            ..
        })
    ));
    let sd = mm_diffusion::pipelines::StableDiffusion::load(
        fixture("sd-tiny").to_str().unwrap(),
        &device(),
    )
    .unwrap();
    let true_cfg = GenerateOptions::new("x").true_cfg_scale(2.0).steps(1);
    assert!(matches!(
        sd.text_to_image(&true_cfg, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "true_cfg_scale",
            ..
        })
    ));
    let long = GenerateOptions::new("x").max_sequence_length(513).steps(1);
    assert!(matches!(
        pipe.text_to_image(&long, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "max_sequence_length",
            ..
        })
    ));
    // Inpainting is not this pipeline's.
    let image = Tensor::<4>::zeros([1, 3, 16, 16], &device());
    let mask = Tensor::<4>::zeros([1, 1, 16, 16], &device());
    assert!(
        pipe.inpaint(&image, &mask, &GenerateOptions::new("x"), Hooks::new())
            .is_err()
    );
}
