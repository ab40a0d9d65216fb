//! The SDXL pipelines match diffusers 0.42.1 on the tiny random base and refiner folders of
//! `tools/reference/gen_sdxl.py` (`tests/fixtures/sdxl-tiny`, `sdxl-tiny-refiner`): prompt and
//! pooled embeddings of both text encoders, and text-to-image (DPM++ 2M Karras, Euler a, no
//! CFG, micro-conditioning, `denoising_end`, Turbo-style 1 step), img2img, inpainting and the
//! refiner's `denoising_start` hand-off — final latents and images — with diffusers' generator
//! draws replayed through a `QueuedNoise`.

mod common;

use burn::tensor::Tensor;
use common::{Expected, device, fixture, max_abs_diff};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{
    Component, GenerateOptions, Generated, Hooks, LoadOptions, MemoryMode, StableDiffusion,
    StableDiffusionXL, TextConditioner,
};
use mm_diffusion::unet::UNet2DConditionModel;
use mm_schedulers::QueuedNoise;
use serde_json::Value;

/// Images are compared in `[0, 1]`.
const IMAGE_TOL: f32 = 1e-3;
/// Latents (magnitudes up to ~40 after CFG with a random UNet): relative to their maximum.
const LATENT_REL_TOL: f32 = 1e-4;
/// Prompt and pooled embeddings (one pass of each text encoder).
const EMBED_TOL: f32 = 1e-4;

struct Fixture {
    name: &'static str,
    pipe: StableDiffusionXL,
    exp: Expected,
    cases: Value,
}

fn load(name: &'static str) -> Fixture {
    load_with(name, LoadOptions::new())
}

fn load_with(name: &'static str, options: LoadOptions) -> Fixture {
    let path = fixture(name);
    let pipe =
        StableDiffusionXL::load_with_options(path.to_str().unwrap(), options, &device()).unwrap();
    let text = std::fs::read_to_string(path.join("expected.json")).unwrap();
    Fixture {
        name,
        pipe,
        exp: Expected::fixture(name),
        cases: serde_json::from_str(&text).unwrap(),
    }
}

fn pair(v: &Value) -> (usize, usize) {
    (
        v[0].as_u64().unwrap() as usize,
        v[1].as_u64().unwrap() as usize,
    )
}

/// The options of a pipeline call from diffusers' keyword arguments.
fn options(case: &Value) -> GenerateOptions {
    let kwargs = case["kwargs"].as_object().unwrap();
    let mut opts = GenerateOptions::new(kwargs["prompt"].as_str().unwrap());
    for (key, v) in kwargs {
        let f = || v.as_f64().unwrap();
        let s = || v.as_str().unwrap().to_string();
        let m = &mut opts.micro;
        match key.as_str() {
            "prompt" | "height" | "width" => {}
            "num_inference_steps" => opts.steps = Some(v.as_u64().unwrap() as usize),
            "negative_prompt" => opts.negative_prompt = Some(s()),
            "prompt_2" => opts.prompt_2 = Some(s()),
            "negative_prompt_2" => opts.negative_prompt_2 = Some(s()),
            "guidance_scale" => opts.guidance_scale = Some(f()),
            "guidance_rescale" => opts.guidance_rescale = f(),
            "strength" => opts.strength = Some(f()),
            "num_images_per_prompt" => opts.num_images_per_prompt = v.as_u64().unwrap() as usize,
            "denoising_end" => opts.denoising_end = Some(f()),
            "denoising_start" => opts.denoising_start = Some(f()),
            "original_size" => m.original_size = Some(pair(v)),
            "crops_coords_top_left" => m.crops_coords_top_left = pair(v),
            "target_size" => m.target_size = Some(pair(v)),
            "negative_original_size" => m.negative_original_size = Some(pair(v)),
            "negative_crops_coords_top_left" => m.negative_crops_coords_top_left = pair(v),
            "negative_target_size" => m.negative_target_size = Some(pair(v)),
            "aesthetic_score" => m.aesthetic_score = f(),
            "negative_aesthetic_score" => m.negative_aesthetic_score = f(),
            other => panic!("unknown keyword {other}"),
        }
    }
    opts = opts.scheduler(case["scheduler"].as_str().unwrap());
    for (key, value) in case["scheduler_overrides"].as_object().unwrap() {
        opts = opts.scheduler_option(key, value.clone());
    }
    opts
}

impl Fixture {
    /// Runs case `name` with its draws replayed (inpainting: diffusers' third draw, the
    /// masked image's posterior, is unused by a 4-channel UNet and skipped here).
    fn run(&self, name: &str) -> Generated {
        let case = &self.cases["cases"][name];
        let mut opts = options(case);
        if let Some(key) = case["latents"].as_str() {
            opts = opts.latents(self.exp.float(key));
        }
        let call = case["call"].as_str().unwrap();
        let draws = case["draws"].as_u64().unwrap() as usize;
        let used = if call == "inpaint" { 2 } else { draws };
        let mut noise =
            QueuedNoise::new((0..used).map(|i| self.exp.float::<4>(&format!("{name}.draw.{i}"))));
        let hooks = Hooks::new().noise(&mut noise);
        let image = || self.exp.float::<4>(case["image"].as_str().unwrap());
        let out = match call {
            "text_to_image" => {
                let size = case["kwargs"]["height"].as_u64().unwrap() as usize;
                self.pipe.text_to_image(&opts.size(size, size), hooks)
            }
            "img2img" => self.pipe.img2img(&image(), &opts, hooks),
            "inpaint" => {
                let mask = self.exp.float::<4>(case["mask"].as_str().unwrap());
                self.pipe.inpaint(&image(), &mask, &opts, hooks)
            }
            other => panic!("unknown call {other}"),
        }
        .unwrap();
        assert_eq!(noise.remaining(), 0, "{name}: draws left");
        out
    }

    /// Checks a run's final latents and images against `<name>.latents_out` / `.images`.
    fn check(&self, name: &str, out: Generated) {
        let expected = self.exp.float::<4>(&format!("{name}.latents_out"));
        assert_eq!(out.latents.dims(), expected.dims(), "{name}");
        let scale = expected.clone().abs().max().into_scalar::<f32>().max(1.0);
        let rel = max_abs_diff(out.latents, expected) / scale;
        eprintln!(
            "{} {name}: latents error / max |latent| {rel:.2e}",
            self.name
        );
        assert!(rel <= LATENT_REL_TOL, "{name}: latents {rel:e}");
        eprint!("{} {name}: ", self.name);
        self.exp
            .check(&format!("{name}.images"), out.pixels, IMAGE_TOL);
    }

    fn run_and_check(&self, name: &str) {
        let out = self.run(name);
        self.check(name, out);
    }

    /// Every encode case: prompt, negative and pooled embeddings.
    fn check_encodes(&self) {
        let encoder = self.pipe.prompt_encoder.get().unwrap();
        for (name, case) in self.cases["encode"].as_object().unwrap() {
            let text = |k: &str| case[k].as_str().map(String::from);
            let mut opts = GenerateOptions::new(text("prompt").unwrap())
                .num_images_per_prompt(case["num_images_per_prompt"].as_u64().unwrap() as usize);
            opts.prompt_2 = text("prompt_2");
            opts.negative_prompt = text("negative_prompt");
            opts.negative_prompt_2 = text("negative_prompt_2");
            opts.clip_skip = case["clip_skip"].as_u64().map(|k| k as usize);
            let guided = case["guidance"].as_bool().unwrap();
            let e = encoder.encode_prompts(&opts, guided).unwrap();
            let key = |k: &str| format!("encode.{name}.{k}");
            eprint!("{} encode {name}: ", self.name);
            self.exp.check(&key("prompt_embeds"), e.cond, EMBED_TOL);
            self.exp
                .check(&key("pooled_prompt_embeds"), e.pooled.unwrap(), EMBED_TOL);
            match (e.uncond, e.uncond_pooled) {
                (Some(u), Some(p)) => {
                    self.exp.check(&key("negative_prompt_embeds"), u, EMBED_TOL);
                    self.exp
                        .check(&key("negative_pooled_prompt_embeds"), p, EMBED_TOL);
                }
                (None, None) => assert!(!guided, "{name}: no negative embeddings"),
                _ => panic!("{name}: negative embeddings without pooled ones"),
            }
        }
    }
}

#[test]
fn prompt_embeddings_match_encode_prompt() {
    for name in ["sdxl-tiny", "sdxl-tiny-refiner"] {
        load(name).check_encodes();
    }
}

#[test]
fn long_prompts_are_truncated_and_reported() {
    let f = load("sdxl-tiny");
    let case = &f.cases["encode"]["long"];
    let opts = GenerateOptions::new(case["prompt"].as_str().unwrap());
    let e = f.pipe.encode_prompt(&opts.guidance_scale(1.0)).unwrap();
    // Both tokenizers cut the same text: reported once.
    assert_eq!(e.truncated.len(), 1);
    assert_eq!(e.truncated[0].max_length, 77);
}

#[test]
fn text_to_image_matches_diffusers() {
    let f = load("sdxl-tiny");
    for name in [
        "dpmpp_2m_karras",
        "euler_a",
        "euler_no_cfg",
        "micro_cond",
        "base_denoising_end",
        "turbo",
    ] {
        f.run_and_check(name);
    }
}

/// An LCM-distilled UNet (`time_cond_proj_dim`: the guidance scale goes in as an embedding,
/// no unconditional branch) with the LCM scheduler.
#[test]
fn lcm_distilled_unet_matches_diffusers() {
    let mut f = load("sdxl-tiny");
    let dir = fixture("sdxl-tiny").join("unet_lcm");
    let unet = UNet2DConditionModel::load(dir.to_str().unwrap(), &device()).unwrap();
    // Without the guidance embedding the UNet says what it needs.
    let missing = unet.forward(
        Tensor::zeros([1, 4, 8, 8], &device()),
        Tensor::from_floats([1.0], &device()),
        Tensor::zeros([1, 77, 48], &device()),
    );
    assert!(
        matches!(
            missing,
            Err(Error::MissingInput {
                what: "timestep_cond",
                ..
            })
        ),
        "{missing:?}"
    );
    let Component::Resident(text) = f.pipe.prompt_encoder else {
        panic!("resident")
    };
    f.pipe =
        StableDiffusionXL::from_parts(unet, f.pipe.vae, text, f.pipe.scheduler_config, &device());
    f.run_and_check("lcm");
}

#[test]
fn img2img_and_inpainting_match_diffusers() {
    let f = load("sdxl-tiny");
    for name in ["img2img", "inpaint", "inpaint_full_strength"] {
        f.run_and_check(name);
    }
}

#[test]
fn refiner_matches_diffusers() {
    let f = load("sdxl-tiny-refiner");
    for name in ["refine_from_base", "refine_image"] {
        f.run_and_check(name);
    }
}

/// The "ensemble of experts" end to end: the base's latents at `denoising_end` 0.5 go to the
/// refiner with `denoising_start` 0.5.
#[test]
fn base_to_refiner_hand_off_matches_diffusers() {
    let base = load("sdxl-tiny");
    let latents = base.run("base_denoising_end").latents;
    let refiner = load("sdxl-tiny-refiner");
    let case = &refiner.cases["cases"]["refine_from_base"];
    let out = refiner
        .pipe
        .img2img(&latents, &options(case), Hooks::new())
        .unwrap();
    refiner.check("refine_from_base", out);
}

/// Sequential memory mode loads the text encoders and the UNet for each use and gives the
/// same results.
#[test]
fn sequential_memory_mode_gives_the_same_images() {
    let f = load_with(
        "sdxl-tiny",
        LoadOptions::new().memory(MemoryMode::Sequential),
    );
    assert!(f.pipe.unet.resident().is_none());
    assert!(f.pipe.prompt_encoder.resident().is_none());
    f.run_and_check("dpmpp_2m_karras");
    f.run_and_check("inpaint");
}

#[test]
fn bad_requests_are_typed_errors() {
    let f = load("sdxl-tiny");
    let base = GenerateOptions::new("a cat").steps(4).size(32, 32);
    let invalid = |r: mm_diffusion::Result<Generated>, want: &str| match r {
        Err(Error::InvalidArgument { name, .. }) => assert_eq!(name, want),
        Err(e) => panic!("{want}: wrong error {e}"),
        Ok(_) => panic!("{want}: accepted"),
    };
    let image = Tensor::<4>::zeros([1, 3, 32, 32], &device()) + 0.5;
    invalid(
        f.pipe.img2img(
            &image,
            &base.clone().denoising_start(0.6).denoising_end(0.4),
            Hooks::new(),
        ),
        "denoising_start",
    );
    invalid(
        f.pipe
            .text_to_image(&base.clone().denoising_start(0.5), Hooks::new()),
        "denoising_start",
    );
    invalid(
        f.pipe
            .text_to_image(&base.clone().denoising_end(1.5), Hooks::new()),
        "denoising_end",
    );
    assert!(matches!(
        f.pipe
            .text_to_image(&base.clone().size(36, 32), Hooks::new()),
        Err(Error::NotMultiple { .. })
    ));
    // A refiner folder given as a base: it loads as what it is (one text encoder, aesthetic
    // ids) and refuses text-to-image, which diffusers' base pipeline cannot load it for.
    let refiner = load("sdxl-tiny-refiner");
    invalid(refiner.pipe.text_to_image(&base, Hooks::new()), "model");
    // An SD 1.x folder is refused by the SDXL loader.
    let sd = fixture("sd-tiny");
    assert!(matches!(
        StableDiffusionXL::load(sd.to_str().unwrap(), &device()),
        Err(Error::MissingComponent {
            component: "text_encoder_2",
            ..
        })
    ));
    // SDXL settings on an SD 1.x pipeline are refused, not ignored.
    let sd = StableDiffusion::load(sd.to_str().unwrap(), &device()).unwrap();
    invalid(
        sd.text_to_image(&base.clone().prompt_2("a dog"), Hooks::new()),
        "prompt_2",
    );
    // An SDXL folder without its second text encoder.
    let broken = std::env::temp_dir().join(format!("mm-sdxl-broken-{}", std::process::id()));
    copy_dir(&fixture("sdxl-tiny"), &broken);
    std::fs::remove_dir_all(broken.join("text_encoder_2")).unwrap();
    let err = StableDiffusionXL::load(broken.to_str().unwrap(), &device()).unwrap_err();
    std::fs::remove_dir_all(&broken).unwrap();
    assert!(
        matches!(
            err,
            Error::MissingComponent {
                component: "text_encoder_2",
                ..
            }
        ),
        "{err}"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The tiny base and refiner as single files (`gen_single_file.py`), loaded with their
/// folders' configs, generate what the folders do; a file with the other kind's configs is a
/// typed error.
#[test]
fn single_files_generate_the_same_images() {
    for (name, case, memory) in [
        ("sdxl-tiny", "micro_cond", MemoryMode::Resident),
        ("sdxl-tiny-refiner", "refine_image", MemoryMode::Sequential),
    ] {
        let mut f = load(name);
        let file = fixture("single-file-tiny").join(format!("{name}.safetensors"));
        let configs = fixture(name);
        f.pipe = StableDiffusionXL::from_single_file(
            &file,
            configs.to_str().unwrap(),
            LoadOptions::new().memory(memory),
            &device(),
        )
        .unwrap();
        f.run_and_check(case);
    }
    let base_file = fixture("single-file-tiny").join("sdxl-tiny.safetensors");
    let refiner_configs = fixture("sdxl-tiny-refiner");
    let err = StableDiffusionXL::from_single_file(
        &base_file,
        refiner_configs.to_str().unwrap(),
        LoadOptions::new(),
        &device(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}
