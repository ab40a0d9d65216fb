//! The SD3 pipelines match diffusers 0.42.1 on the tiny random folder of
//! `tools/reference/gen_sd3.py` (`tests/fixtures/sd3-tiny`: CLIP-L and CLIP-G with projection,
//! T5, an SD3.5-style transformer with qk norm and a dual-attention block, the 16-channel VAE
//! with `shift_factor`, the flow-matching scheduler with shift 3): prompt and pooled
//! embeddings (with and without T5, `prompt_3`, `max_sequence_length`, `clip_skip`), and
//! text-to-image (CFG, no CFG, no T5, skip-layer guidance, two images per prompt, 8 T5
//! tokens) and img2img — final latents and images — with diffusers' draws replayed.

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture, max_abs_diff};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{
    GenerateOptions, Generated, Hooks, LoadOptions, MemoryMode, ModelFamily, SkipLayerGuidance,
    StableDiffusion3, TextConditioner,
};
use mm_schedulers::QueuedNoise;
use serde_json::Value;

/// Prompt and pooled embeddings.
const EMBED_TOL: f32 = 1e-4;

const NAME: &str = "sd3-tiny";

struct Fixture {
    with_t5: StableDiffusion3,
    without_t5: StableDiffusion3,
    exp: Expected,
    cases: Value,
}

fn load(options: LoadOptions) -> StableDiffusion3 {
    StableDiffusion3::load_with_options(fixture(NAME).to_str().unwrap(), options, &device())
        .unwrap()
}

fn fixture_pipes() -> Fixture {
    let text = std::fs::read_to_string(fixture(NAME).join("expected.json")).unwrap();
    Fixture {
        with_t5: load(LoadOptions::new()),
        without_t5: load(LoadOptions::new().without_t5()),
        exp: Expected::fixture(NAME),
        cases: serde_json::from_str(&text).unwrap(),
    }
}

/// The options of a pipeline call from diffusers' keyword arguments.
fn options(case: &Value) -> GenerateOptions {
    let kwargs = case["kwargs"].as_object().unwrap();
    let mut opts = GenerateOptions::new(kwargs["prompt"].as_str().unwrap());
    let mut slg = SkipLayerGuidance::new(Vec::new());
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
            "guidance_scale" => opts.guidance_scale = Some(f()),
            "strength" => opts.strength = Some(f()),
            "num_images_per_prompt" => opts.num_images_per_prompt = n(),
            "max_sequence_length" => opts.max_sequence_length = Some(n()),
            "skip_guidance_layers" => {
                slg.layers = (v.as_array().unwrap().iter())
                    .map(|l| l.as_u64().unwrap() as usize)
                    .collect();
            }
            "skip_layer_guidance_scale" => slg.scale = f(),
            "skip_layer_guidance_start" => slg.start = f(),
            "skip_layer_guidance_stop" => slg.stop = f(),
            other => panic!("unknown keyword {other}"),
        }
    }
    if !slg.layers.is_empty() {
        opts.skip_layer_guidance = Some(slg);
    }
    opts.scheduler(case["scheduler"].as_str().unwrap())
}

impl Fixture {
    fn pipe(&self, t5: bool) -> &StableDiffusion3 {
        if t5 { &self.with_t5 } else { &self.without_t5 }
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
        let pipe = self.pipe(case["text_encoder_3"].as_bool().unwrap());
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

    fn run_and_check(&self, name: &str) {
        common::check_run(&self.exp, name, self.run(name));
    }
}

#[test]
fn prompt_embeddings_match_encode_prompt() {
    let f = fixture_pipes();
    for (name, case) in f.cases["encode"].as_object().unwrap() {
        let text = |k: &str| case[k].as_str().map(String::from);
        let mut opts = GenerateOptions::new(text("prompt").unwrap())
            .num_images_per_prompt(case["num_images_per_prompt"].as_u64().unwrap() as usize);
        opts.prompt_2 = text("prompt_2");
        opts.prompt_3 = text("prompt_3");
        opts.negative_prompt = text("negative_prompt");
        opts.clip_skip = case["clip_skip"].as_u64().map(|k| k as usize);
        opts.max_sequence_length = case["max_sequence_length"].as_u64().map(|k| k as usize);
        let guided = case["guidance"].as_bool().unwrap();
        let pipe = f.pipe(case["text_encoder_3"].as_bool().unwrap());
        let encoder = pipe.prompt_encoder.get().unwrap();
        let e = encoder.encode_prompts(&opts, guided).unwrap();
        let key = |k: &str| format!("encode.{name}.{k}");
        eprint!("encode {name}: ");
        f.exp.check(&key("prompt_embeds"), e.cond, EMBED_TOL);
        eprint!("encode {name}: ");
        f.exp
            .check(&key("pooled_prompt_embeds"), e.pooled.unwrap(), EMBED_TOL);
        if case["negatives_stored"].as_bool().unwrap() {
            eprint!("encode {name}: ");
            f.exp
                .check(&key("negative_prompt_embeds"), e.uncond.unwrap(), EMBED_TOL);
            eprint!("encode {name}: ");
            let p = e.uncond_pooled.unwrap();
            f.exp
                .check(&key("negative_pooled_prompt_embeds"), p, EMBED_TOL);
        }
    }
}

#[test]
fn first_transformer_call_sees_what_diffusers_passes() {
    let f = fixture_pipes();
    let case = &f.cases["cases"]["t2i_cfg"];
    let opts = options(case).latents(f.exp.float("latents1"));
    let pipe = &f.with_t5;
    let embeds = pipe.encode_prompt(&opts).unwrap();
    f.exp
        .check("t2i_cfg.encoder_hidden_states", embeds.context(), EMBED_TOL);
    f.exp.check(
        "t2i_cfg.pooled_projections",
        embeds.pooled_context().unwrap(),
        EMBED_TOL,
    );
    // The transformer's output for the recorded first call.
    let transformer = pipe.unet.get().unwrap();
    let input = mm_diffusion::transformer::SD3Input::new(
        f.exp.float("t2i_cfg.hidden_states"),
        f.exp.float("t2i_cfg.timestep"),
        f.exp.float("t2i_cfg.encoder_hidden_states"),
        f.exp.float("t2i_cfg.pooled_projections"),
    );
    f.exp
        .check("t2i_cfg.out", transformer.forward(input).unwrap(), 1e-4);
}

#[test]
fn text_to_image_matches_diffusers() {
    let f = fixture_pipes();
    for name in [
        "t2i_cfg",
        "t2i_no_cfg",
        "t2i_no_t5",
        "two_images",
        "max_seq8",
    ] {
        f.run_and_check(name);
    }
}

#[test]
fn skip_layer_guidance_matches_diffusers() {
    fixture_pipes().run_and_check("t2i_slg");
}

#[test]
fn img2img_matches_diffusers() {
    fixture_pipes().run_and_check("img2img");
}

#[test]
fn sequential_memory_mode_gives_the_same_image() {
    let f = fixture_pipes();
    let sequential = load(LoadOptions::new().memory(MemoryMode::Sequential));
    assert!(sequential.unet.resident().is_none());
    let case = &f.cases["cases"]["t2i_cfg"];
    let opts = options(case).latents(f.exp.float("latents1"));
    let a = f.with_t5.text_to_image(&opts, Hooks::new()).unwrap();
    let b = sequential.text_to_image(&opts, Hooks::new()).unwrap();
    assert_eq!(max_abs_diff(a.pixels, b.pixels), 0.0);
}

#[test]
fn defaults_and_settings_follow_diffusers() {
    let f = fixture_pipes();
    let pipe = &f.with_t5;
    assert_eq!(pipe.family(), ModelFamily::StableDiffusion3);
    // 28 steps by default, the folder's flow-matching scheduler with its shift.
    let opts = GenerateOptions::new("x");
    let scheduler = pipe.scheduler(&opts).unwrap();
    assert_eq!(scheduler.timesteps().len(), 28);
    assert_eq!(scheduler.timesteps()[0], 1000.0);
    // Sizes must be multiples of the VAE factor times the patch (2 · 2 here).
    let odd = GenerateOptions::new("x").size(10, 16).steps(1);
    assert!(matches!(
        pipe.text_to_image(&odd, Hooks::new()),
        Err(Error::NotMultiple { factor: 4, .. })
    ));
    // SDXL's settings are refused; SD3's are refused by the other pipelines.
    let xl = GenerateOptions::new("x").denoising_end(0.5);
    assert!(matches!(
        pipe.text_to_image(&xl, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "denoising_end",
            ..
        })
    ));
    let sd = mm_diffusion::pipelines::StableDiffusion::load(
        fixture("sd-tiny").to_str().unwrap(),
        &device(),
    )
    .unwrap();
    let t5_only = GenerateOptions::new("x").prompt_3("y").steps(1);
    assert!(matches!(
        sd.text_to_image(&t5_only, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "prompt_3",
            ..
        })
    ));
    // max_sequence_length above diffusers' 512, and skip-layer guidance naming no block
    // or a block the transformer does not have.
    let long = GenerateOptions::new("x").max_sequence_length(513).steps(1);
    assert!(matches!(
        pipe.text_to_image(&long, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "max_sequence_length",
            ..
        })
    ));
    let run = |slg: SkipLayerGuidance| {
        let opts = GenerateOptions::new("x")
            .size(16, 16)
            .steps(3)
            .skip_layer_guidance(slg.window(0.0, 1.0));
        pipe.text_to_image(&opts, Hooks::new())
    };
    assert!(matches!(
        run(SkipLayerGuidance::new([])),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        run(SkipLayerGuidance::new([7])),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(run(SkipLayerGuidance::new([1])).is_ok());
    // img2img keeps the image's size (diffusers resizes it to height × width).
    let photo = Tensor::<4>::zeros([1, 3, 16, 16], &device());
    let resized = GenerateOptions::new("x").size(32, 32).steps(2);
    assert!(matches!(
        pipe.img2img(&photo, &resized, Hooks::new()),
        Err(Error::InvalidArgument {
            name: "height/width",
            ..
        })
    ));
    // SD3 inpainting is not this pipeline's: a typed refusal.
    let image = Tensor::<4>::zeros([1, 3, 16, 16], &device());
    let mask = Tensor::<4>::zeros([1, 1, 16, 16], &device());
    assert!(
        pipe.inpaint(&image, &mask, &GenerateOptions::new("x"), Hooks::new())
            .is_err()
    );
}
