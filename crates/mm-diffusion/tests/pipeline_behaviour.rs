//! Pipeline behaviour beyond parity: typed errors for bad input and incomplete folders,
//! cancellation, previews, determinism of the seeded noise, the NaN guard.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use common::{device, fixture};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{
    Conditioning, Denoiser, Flow, GenerateOptions, Hooks, StableDiffusion, StepInfo,
};
use mm_diffusion::vae::AutoencoderTiny;

fn tiny() -> StableDiffusion {
    StableDiffusion::load(fixture("sd-tiny").to_str().unwrap(), &device()).unwrap()
}

fn opts() -> GenerateOptions {
    GenerateOptions::new("a red cat")
        .steps(4)
        .seed(3)
        .scheduler("DDIMScheduler")
}

fn image() -> Tensor<4> {
    Tensor::<4>::ones([1, 3, 32, 32], &device()) * 0.5
}

fn mask(h: usize, w: usize) -> Tensor<4> {
    Tensor::<4>::ones([1, 1, h, w], &device())
}

/// A copy of `sd-tiny` (without its expected outputs) in a fresh temporary folder.
fn copy_fixture(tag: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &target);
            } else if !entry.file_name().to_string_lossy().starts_with("expected") {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("mm-sd-tiny-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy(&fixture("sd-tiny"), &dir);
    dir
}

/// Loads a copy of `sd-tiny` broken by `damage`; the error must name `component` (and
/// mention `detail`).
fn check_missing(tag: &str, damage: impl FnOnce(&Path), component: &str, detail: &str) {
    let dir = copy_fixture(tag);
    damage(&dir);
    let err = StableDiffusion::load(dir.to_str().unwrap(), &device()).unwrap_err();
    let _ = std::fs::remove_dir_all(&dir);
    match &err {
        Error::MissingComponent { component: c, .. } if *c == component => {}
        _ => panic!("expected a missing {component}, got {err}"),
    }
    assert!(err.to_string().contains(detail), "{err}");
}

#[test]
fn missing_components_are_named() {
    check_missing(
        "novae",
        |dir| std::fs::remove_dir_all(dir.join("vae")).unwrap(),
        "vae",
        "vae",
    );
    check_missing(
        "nounet",
        |dir| {
            let index_path = dir.join("model_index.json");
            let mut index: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
            index.as_object_mut().unwrap().remove("unet");
            std::fs::write(&index_path, index.to_string()).unwrap();
        },
        "unet",
        "model_index.json",
    );
    check_missing(
        "notok",
        |dir| std::fs::remove_file(dir.join("tokenizer/merges.txt")).unwrap(),
        "tokenizer",
        "merges.txt",
    );
    check_missing(
        "nosched",
        |dir| std::fs::remove_file(dir.join("scheduler/scheduler_config.json")).unwrap(),
        "scheduler",
        "scheduler_config.json",
    );
    let err = StableDiffusion::load("/nonexistent/sd", &device()).unwrap_err();
    assert!(matches!(err, Error::Core(_)), "{err}");
}

#[test]
fn bad_arguments_are_typed_errors() {
    let pipe = tiny();
    let run = |o: GenerateOptions| pipe.text_to_image(&o, Hooks::new()).unwrap_err();
    assert!(matches!(
        run(opts().size(36, 32)),
        Error::NotMultiple { factor: 8, .. }
    ));
    assert!(matches!(
        run(opts().steps(0)),
        Error::InvalidArgument {
            name: "num_inference_steps",
            ..
        }
    ));
    assert!(matches!(
        run(opts().guidance_rescale(1.5)),
        Error::InvalidArgument {
            name: "guidance_rescale",
            ..
        }
    ));
    assert!(matches!(
        run(opts().num_images_per_prompt(0)),
        Error::InvalidArgument {
            name: "num_images_per_prompt",
            ..
        }
    ));
    assert!(matches!(
        run(opts().scheduler("NoSuchScheduler")),
        Error::Scheduler(_)
    ));
    let wrong = Tensor::<4>::zeros([1, 4, 4, 4], &device());
    assert!(matches!(
        run(opts().latents(wrong)),
        Error::Shape {
            what: "latents",
            ..
        }
    ));
    let nan = Tensor::<4>::zeros([1, 4, 8, 8], &device()) / 0.0;
    assert!(matches!(
        run(opts().latents(nan)),
        Error::NonFinite {
            what: "latents",
            ..
        }
    ));

    let img2img =
        |o: GenerateOptions, image: &Tensor<4>| pipe.img2img(image, &o, Hooks::new()).unwrap_err();
    assert!(matches!(
        img2img(opts().strength(1.5), &image()),
        Error::InvalidArgument {
            name: "strength",
            ..
        }
    ));
    // 4 steps × 0.1 strength leaves no step.
    assert!(matches!(
        img2img(opts().strength(0.1), &image()),
        Error::InvalidArgument {
            name: "strength",
            ..
        }
    ));
    let odd = Tensor::<4>::zeros([1, 3, 30, 32], &device());
    assert!(matches!(img2img(opts(), &odd), Error::NotMultiple { .. }));
    let gray = Tensor::<4>::zeros([1, 1, 32, 32], &device());
    assert!(matches!(img2img(opts(), &gray), Error::Shape { .. }));
    let latents = Tensor::<4>::zeros([1, 4, 8, 8], &device());
    assert!(matches!(
        img2img(opts().latents(latents), &image()),
        Error::InvalidArgument {
            name: "latents",
            ..
        }
    ));

    let err = pipe
        .inpaint(&image(), &mask(32, 24), &opts(), Hooks::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MaskSize {
                mask: (32, 24),
                image: (32, 32)
            }
        ),
        "{err}"
    );
    let err = pipe
        .inpaint(
            &image(),
            &mask(32, 32),
            &opts().strength(-0.5),
            Hooks::new(),
        )
        .unwrap_err();
    assert!(matches!(
        err,
        Error::InvalidArgument {
            name: "strength",
            ..
        }
    ));
}

#[test]
fn seeded_runs_are_deterministic() {
    let pipe = tiny();
    let a = pipe.text_to_image(&opts(), Hooks::new()).unwrap();
    let b = pipe.text_to_image(&opts(), Hooks::new()).unwrap();
    assert_eq!(a.images, b.images);
    assert_eq!(
        common::max_abs_diff(a.latents.clone(), b.latents.clone()),
        0.0
    );
    let c = pipe.text_to_image(&opts().seed(4), Hooks::new()).unwrap();
    assert!(common::max_abs_diff(a.latents, c.latents) > 1e-3);
    // img2img and inpainting draw from the same seeded source.
    let d = pipe.img2img(&image(), &opts(), Hooks::new()).unwrap();
    let e = pipe.img2img(&image(), &opts(), Hooks::new()).unwrap();
    assert_eq!(d.images, e.images);
}

#[test]
fn progress_reports_previews_and_cancels() {
    let pipe = tiny();
    let mut seen = Vec::new();
    let mut progress = |info: &StepInfo| {
        let preview = info.preview().unwrap();
        assert_eq!(preview.len(), 2);
        assert_eq!(preview[0].dimensions(), (8, 8)); // one pixel per latent
        seen.push((info.step, info.total, info.timestep));
        Flow::Continue
    };
    let out = pipe
        .text_to_image(
            &opts().num_images_per_prompt(2),
            Hooks::new().progress(&mut progress),
        )
        .unwrap();
    assert_eq!(out.images.len(), 2);
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert!(seen.iter().all(|s| s.1 == 4));
    assert_eq!(seen[0].2, 751.0); // DDIM, leading spacing, steps_offset 1

    let mut cancel = |info: &StepInfo| {
        if info.step == 2 {
            Flow::Cancel
        } else {
            Flow::Continue
        }
    };
    let err = pipe
        .text_to_image(&opts(), Hooks::new().progress(&mut cancel))
        .unwrap_err();
    assert!(
        matches!(err, Error::Cancelled { step: 2, total: 4 }),
        "{err}"
    );

    // A tiny autoencoder attached: previews are decoded at full size.
    let taesd = AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap();
    let pipe = tiny().with_preview_decoder(taesd);
    let mut sizes = Vec::new();
    let mut progress = |info: &StepInfo| {
        sizes.push(info.preview().unwrap()[0].dimensions());
        Flow::Continue
    };
    pipe.text_to_image(&opts().steps(2), Hooks::new().progress(&mut progress))
        .unwrap();
    assert_eq!(sizes, vec![(64, 64); 2]);
}

/// The progress callback counts the steps asked for, as diffusers' progress bar does, and
/// the model evaluations separately: Heun evaluates twice per step after the first, PNDM adds
/// a warm-up evaluation, img2img runs `floor(steps · strength)` steps.
#[test]
fn progress_counts_steps_not_evaluations() {
    let pipe = tiny();
    let run = |scheduler: &str, steps: usize, img2img: bool| {
        let mut seen = Vec::new();
        let mut progress = |info: &StepInfo| {
            seen.push((info.step, info.total, info.evaluation, info.evaluations));
            Flow::Continue
        };
        let opts = opts().scheduler(scheduler).steps(steps);
        let hooks = Hooks::new().progress(&mut progress);
        if img2img {
            pipe.img2img(&image(), &opts.strength(0.5), hooks).unwrap();
        } else {
            pipe.text_to_image(&opts, hooks).unwrap();
        }
        seen
    };
    let heun = run("HeunDiscreteScheduler", 3, false);
    assert_eq!(heun.len(), 5);
    assert!(heun.iter().all(|s| s.1 == 3 && s.3 == 5), "{heun:?}");
    let steps: Vec<usize> = heun.iter().map(|s| s.0).collect();
    assert_eq!(steps, vec![0, 1, 1, 2, 3]);
    let pndm = run("PNDMScheduler", 4, false);
    assert_eq!(pndm.len(), 5, "{pndm:?}");
    assert_eq!(pndm.last().unwrap().0, 4);
    assert!(pndm.iter().all(|s| s.1 == 4 && s.3 == 5), "{pndm:?}");
    let ddim = run("DDIMScheduler", 4, true);
    assert_eq!(
        ddim.iter().map(|s| (s.0, s.1)).collect::<Vec<_>>(),
        [(1, 2), (2, 2)]
    );
}

/// A denoiser that diverges: its prediction is NaN.
struct Diverging;

impl Denoiser for Diverging {
    fn in_channels(&self) -> usize {
        4
    }
    fn sample_size(&self) -> usize {
        8
    }
    fn predict(
        &self,
        sample: Tensor<4>,
        _t: f64,
        _c: &Conditioning,
    ) -> mm_diffusion::Result<Tensor<4>> {
        Ok(sample / 0.0 * 0.0)
    }
}

#[test]
fn nan_latents_are_an_error_not_a_black_image() {
    let pipe = StableDiffusion::load_with(
        fixture("sd-tiny").to_str().unwrap(),
        burn::tensor::DType::F32,
        &device(),
        |_, _| Ok(Diverging),
    )
    .unwrap();
    let err = pipe.text_to_image(&opts(), Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFinite {
                what: "latents",
                ..
            }
        ),
        "{err}"
    );
    // The 4-channel denoiser cannot take the 9-channel inpainting input and vice versa.
    let inpaint =
        StableDiffusion::load(fixture("sd-tiny-inpaint").to_str().unwrap(), &device()).unwrap();
    let err = inpaint.text_to_image(&opts(), Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
}

/// Sizes and batch counts no machine can hold are refused before anything is allocated
/// (`--images 18446744073709551615` and `--width 2^62` used to panic, `--images 1000000` and
/// 80000 × 80000 to abort), and an empty image is a typed error.
#[test]
fn oversized_requests_are_refused_up_front() {
    let pipe = tiny();
    let too_large = |opts: GenerateOptions| {
        let err = pipe.text_to_image(&opts, Hooks::new()).unwrap_err();
        assert!(
            matches!(err, Error::Core(mm_core::Error::TooLarge { .. })),
            "{err}"
        );
        assert!(err.to_string().contains("MM_MEMORY_LIMIT"), "{err}");
    };
    too_large(opts().num_images_per_prompt(usize::MAX));
    too_large(opts().num_images_per_prompt(1_000_000_000));
    let mut huge = opts();
    huge.width = Some(1 << 62);
    huge.height = Some(1 << 62);
    too_large(huge);
    let mut wide = opts();
    wide.width = Some(8_000_000);
    wide.height = Some(8_000_000);
    too_large(wide);

    let empty = Tensor::<4>::zeros([1, 3, 0, 0], &device());
    let err = pipe.img2img(&empty, &opts(), Hooks::new()).unwrap_err();
    assert!(
        matches!(err, Error::Shape { .. } | Error::NotMultiple { .. }),
        "{err}"
    );
}

/// The linear previews use the family's latent → RGB map: zeros give the map's offset, and
/// latents of another width than the family's are a typed error.
#[test]
fn linear_previews_follow_the_family() {
    use mm_diffusion::pipelines::{
        FLUX_LATENT_RGB_BIAS, ModelFamily, SD3_LATENT_RGB_BIAS, linear_preview,
    };
    let zeros = |c| Tensor::<4>::zeros([1, c, 2, 3], &device());
    for (family, bias) in [
        (ModelFamily::Flux, FLUX_LATENT_RGB_BIAS),
        (ModelFamily::StableDiffusion3, SD3_LATENT_RGB_BIAS),
    ] {
        let rgb = linear_preview(zeros(16), family).unwrap();
        assert_eq!(rgb.dims(), [1, 3, 2, 3]);
        let values: Vec<f32> = rgb.into_data().try_to_vec().unwrap();
        assert!(
            values
                .chunks(6)
                .zip(bias)
                .all(|(c, b)| c.iter().all(|v| *v == b))
        );
    }
    let sd = linear_preview(zeros(4), ModelFamily::StableDiffusion).unwrap();
    assert_eq!(sd.abs().max().into_scalar::<f32>(), 0.0);
    assert!(matches!(
        linear_preview(zeros(4), ModelFamily::Flux),
        Err(Error::Shape { .. })
    ));
}
