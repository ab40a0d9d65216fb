//! ControlNet matches diffusers 0.42.1 on the tiny random ControlNets of
//! `tools/reference/gen_controlnet.py` (`tests/fixtures/controlnet-tiny`): the residuals of the
//! model (SD and SDXL variants, guess mode, `global_pool_conditions`, BGR channel order, the
//! original single-file layout), and whole ControlNet pipelines on the `sd-tiny` and
//! `sdxl-tiny` folders — single and multi ControlNet, guess mode, guidance windows,
//! text-to-image, img2img and inpainting — and IP-Adapter pipelines (plain and Plus adapters,
//! a number and an InstantStyle scale, alone and with a ControlNet; the adapters of
//! `tests/fixtures/ip-adapter-tiny`): final latents and images, with diffusers' draws
//! replayed. Full size: the models built from the published configs of
//! `lllyasviel/sd-controlnet-canny` and `diffusers/controlnet-canny-sdxl-1.0` expect exactly
//! diffusers' tensors, and every tensor of the original SD 1.5 single file maps onto them.

mod common;

use std::collections::BTreeMap;

use burn::tensor::{DType, Tensor};
use common::{Expected, check_run, device, fixture};
use mm_core::weights::expected_tensors;
use mm_diffusion::Error;
use mm_diffusion::controlnet::{ControlNetConfig, ControlNetModel};
use mm_diffusion::ip_adapter::{ImageEncoder, IpAdapterScale};
use mm_diffusion::pipelines::{
    ControlInput, DiffusionPipeline, GenerateOptions, Generated, Hooks, StableDiffusion,
    StableDiffusionXL, TextConditioner,
};
use mm_diffusion::single_file::controlnet_key;
use mm_diffusion::unet::{UNet2DConditionModel, UNetInput};
use mm_schedulers::QueuedNoise;
use serde_json::Value;

const RESIDUAL_TOL: f32 = 1e-4;
const NAME: &str = "controlnet-tiny";

fn cases() -> Value {
    let text = std::fs::read_to_string(fixture(NAME).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn controlnet_dir(name: &str) -> String {
    fixture(NAME).join(name).to_string_lossy().into_owned()
}

fn controlnet(name: &str) -> ControlNetModel {
    ControlNetModel::load(controlnet_dir(name), &device()).unwrap()
}

fn config(name: &str) -> ControlNetConfig {
    mm_core::config::read_json(fixture(NAME).join(name).join("config.json")).unwrap()
}

/// The single file with every tensor under `control_model.`, beside a tensor of another
/// model (as in the original repository's training checkpoints, which hold the whole SD
/// model).
fn prefixed_single_file() -> std::path::PathBuf {
    let bytes = std::fs::read(fixture(NAME).join("sd_single_file.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st.tensors();
    let mut views: Vec<_> = (tensors.iter())
        .map(|(name, view)| (format!("control_model.{name}"), view.clone()))
        .collect();
    let (_, other) = &tensors[0];
    views.push(("model.diffusion_model.out.2.bias".into(), other.clone()));
    let path =
        std::env::temp_dir().join(format!("mm-controlnet-{}.safetensors", std::process::id()));
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    path
}

/// The ControlNet of a residual case, loaded as a user would (`sd_single_prefixed`: the
/// single file with the `control_model.` prefix).
fn residual_model(case: &Value, prefixed: bool) -> ControlNetModel {
    let folder = case["controlnet"].as_str().unwrap();
    if folder == "sd_single" {
        let file = match prefixed {
            true => prefixed_single_file(),
            false => fixture(NAME).join("sd_single_file.safetensors"),
        };
        let net = ControlNetModel::from_single_file(&file, &config(folder), DType::F32, &device());
        if prefixed {
            std::fs::remove_file(file).unwrap();
        }
        return net.unwrap();
    }
    if case["global_pool_conditions"].as_bool().unwrap() {
        let mut config = config(folder);
        config.global_pool_conditions = true;
        let dir = fixture(NAME).join(folder);
        let weights =
            mm_core::weights::Weights::open(dir.join("diffusion_pytorch_model.safetensors"))
                .unwrap();
        return ControlNetModel::from_weights(&config, weights, &device()).unwrap();
    }
    controlnet(folder)
}

#[test]
fn residuals_match_diffusers() {
    let exp = Expected::fixture(NAME);
    let cases = cases();
    let residuals = cases["residuals"].as_object().unwrap();
    // The single file also with the `control_model.` prefix: the same model.
    let prefixed = ("sd_single", &residuals["sd_single"], true);
    let all = residuals
        .iter()
        .map(|(name, case)| (name.as_str(), case, false));
    for (name, case, prefixed) in all.chain([prefixed]) {
        let net = residual_model(case, prefixed);
        let key = |k: &str| format!("res.{name}.{k}");
        let mut input = UNetInput::new(
            exp.float(&key("sample")),
            exp.float(&key("timestep")),
            exp.float(&key("text")),
        );
        if case["added"].as_bool().unwrap() {
            input =
                input.with_added_cond(exp.float(&key("text_embeds")), exp.float(&key("time_ids")));
        }
        let out = net
            .forward(
                input,
                exp.float(&key("cond")),
                case["scale"].as_f64().unwrap(),
                case["guess_mode"].as_bool().unwrap(),
            )
            .unwrap();
        assert_eq!(out.down.len(), case["residuals"].as_u64().unwrap() as usize);
        assert_eq!(out.down.len(), net.num_residuals());
        let mut worst = 0f32;
        for (i, d) in out.down.into_iter().enumerate() {
            worst = worst.max(exp.check(&key(&format!("down.{i}")), d, RESIDUAL_TOL));
        }
        worst = worst.max(exp.check(&key("mid"), out.mid, RESIDUAL_TOL));
        let tag = if prefixed {
            " (control_model. prefix)"
        } else {
            ""
        };
        eprintln!("residuals {name}{tag}: max error {worst:.2e}");
    }
}

/// The options of a pipeline call from diffusers' keyword arguments.
fn options(case: &Value, exp: &Expected) -> GenerateOptions {
    let kwargs = case["kwargs"].as_object().unwrap();
    let mut opts = GenerateOptions::new(kwargs["prompt"].as_str().unwrap())
        .scheduler(case["scheduler"].as_str().unwrap());
    // Per ControlNet: scale, start, end (diffusers takes a number or a list for each).
    let per_net = |key: &str, i: usize| {
        kwargs.get(key).map(|v| match v {
            Value::Array(list) => list[i].as_f64().unwrap(),
            v => v.as_f64().unwrap(),
        })
    };
    for (i, image) in case["controls"].as_array().unwrap().iter().enumerate() {
        let mut input = ControlInput::new(exp.float::<4>(image.as_str().unwrap()));
        input.conditioning_scale = per_net("controlnet_conditioning_scale", i);
        input = input.guidance_window(
            per_net("control_guidance_start", i).unwrap_or(0.0),
            per_net("control_guidance_end", i).unwrap_or(1.0),
        );
        opts = opts.control(input);
    }
    for (key, v) in kwargs {
        match key.as_str() {
            "num_inference_steps" => opts.steps = Some(v.as_u64().unwrap() as usize),
            "negative_prompt" => opts.negative_prompt = v.as_str().map(String::from),
            "guidance_scale" => opts.guidance_scale = v.as_f64(),
            "strength" => opts.strength = v.as_f64(),
            "guess_mode" => opts.guess_mode = v.as_bool().unwrap(),
            _ => {}
        }
    }
    opts
}

/// Runs pipeline case `name` on `pipe` (its ControlNets attached) with the draws replayed
/// (inpainting with a 4-channel UNet: diffusers' third draw, the masked image's posterior, is
/// unused and skipped).
fn run_case<T: TextConditioner>(
    pipe: &DiffusionPipeline<UNet2DConditionModel, T>,
    exp: &Expected,
    name: &str,
    case: &Value,
) -> Generated {
    let mut opts = options(case, exp);
    if let Some(image) = case["ip_adapter"]["image"].as_str() {
        let path = fixture("ip-adapter-tiny").join(image);
        opts = opts.ip_adapter_image(mm_core::image::load_image(path).unwrap());
    }
    if let Some(key) = case["latents"].as_str() {
        opts = opts.latents(exp.float(key));
    }
    let call = case["call"].as_str().unwrap();
    let draws = case["draws"].as_u64().unwrap() as usize;
    let used = if call == "inpaint" { 2 } else { draws };
    let mut noise =
        QueuedNoise::new((0..used).map(|i| exp.float::<4>(&format!("{name}.draw.{i}"))));
    let hooks = Hooks::new().noise(&mut noise);
    let image = || exp.float::<4>(case["image"].as_str().unwrap());
    let out = match call {
        "text_to_image" => pipe.text_to_image(&opts, hooks),
        "img2img" => pipe.img2img(&image(), &opts, hooks),
        "inpaint" => {
            let mask = exp.float::<4>(case["mask"].as_str().unwrap());
            pipe.inpaint(&image(), &mask, &opts, hooks)
        }
        other => panic!("unknown call {other}"),
    }
    .unwrap();
    assert_eq!(noise.remaining(), 0, "{name}: draws left");
    out
}

/// The case's ControlNets and IP-Adapter attached to `pipe`.
fn attach<T: TextConditioner>(
    mut pipe: DiffusionPipeline<UNet2DConditionModel, T>,
    case: &Value,
) -> DiffusionPipeline<UNet2DConditionModel, T> {
    for net in case["controlnets"].as_array().unwrap() {
        pipe = pipe.with_controlnet(controlnet(net.as_str().unwrap()));
    }
    let ip = &case["ip_adapter"];
    if ip.is_null() {
        return pipe;
    }
    let dir = fixture("ip-adapter-tiny");
    let encoder = ImageEncoder::load(
        dir.join("models/image_encoder").to_str().unwrap(),
        &device(),
    );
    let file = dir.join(ip["file"].as_str().unwrap());
    let mut pipe = pipe
        .with_ip_adapter(&[file], Some(encoder.unwrap()))
        .unwrap();
    let scale = IpAdapterScale::parse(&ip["scale"].to_string()).unwrap();
    pipe.set_ip_adapter_scale(&scale).unwrap();
    pipe
}

/// Every pipeline case whose base folder is `base`, each on a fresh pipeline from `load`.
fn check_pipelines<T: TextConditioner>(
    base: &str,
    load: impl Fn() -> DiffusionPipeline<UNet2DConditionModel, T>,
) {
    let exp = Expected::fixture(NAME);
    let cases = cases();
    let mut ran = 0;
    for (name, case) in cases["cases"].as_object().unwrap() {
        if case["base"].as_str() != Some(base) {
            continue;
        }
        let pipe = attach(load(), case);
        let out = run_case(&pipe, &exp, name, case);
        check_run(&exp, name, out);
        ran += 1;
    }
    assert!(ran >= 4, "{base}: {ran} cases");
}

#[test]
fn sd_controlnet_pipelines_match_diffusers() {
    let path = fixture("sd-tiny");
    check_pipelines("sd-tiny", || {
        StableDiffusion::load(path.to_str().unwrap(), &device()).unwrap()
    });
}

#[test]
fn sdxl_controlnet_pipelines_match_diffusers() {
    let path = fixture("sdxl-tiny");
    check_pipelines("sdxl-tiny", || {
        StableDiffusionXL::load(path.to_str().unwrap(), &device()).unwrap()
    });
}

type Entries = Vec<(String, Vec<usize>)>;

fn read_list(path: &std::path::Path) -> Entries {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn full_size_controlnets_expect_the_published_tensors() {
    for name in ["controlnet-sd15-canny", "controlnet-sdxl-canny"] {
        let dir = fixture("full").join(name);
        let config: ControlNetConfig = mm_core::config::read_json(dir.join("config.json")).unwrap();
        let model = ControlNetModel::new(&config, &device()).unwrap();
        let want = read_list(&dir.join("tensors.json"));
        assert_eq!(expected_tensors(&model), want, "{name}");
        eprintln!("{name}: {} tensors", want.len());
        let ldm = dir.join("ldm_tensors.json");
        if !ldm.is_file() {
            continue;
        }
        // Every tensor of the original single file maps onto one the model expects, with its
        // shape, and together they cover the model.
        let hint_convs = 2 * config.conditioning_embedding_out_channels.len();
        let mapped: BTreeMap<String, Vec<usize>> = read_list(&ldm)
            .into_iter()
            .map(|(name, shape)| (controlnet_key(&name, 2, hint_convs), shape))
            .collect();
        let want: BTreeMap<String, Vec<usize>> = want.into_iter().collect();
        assert_eq!(mapped, want, "{name}: single-file keys");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let exp = Expected::fixture(NAME);
    let net = controlnet("sd");
    let key = |k: &str| format!("res.sd.{k}");
    let input = UNetInput::new(
        exp.float(&key("sample")),
        exp.float(&key("timestep")),
        exp.float(&key("text")),
    );
    // A control image of another size.
    let small = Tensor::<4>::zeros([2, 3, 16, 16], &device());
    let err = net.forward(input.clone(), small, 1.0, false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "controlnet_cond",
                ..
            }
        ),
        "{err}"
    );
    // A non-finite scale.
    let cond = exp.float::<4>(&key("cond"));
    let err = net.forward(input, cond, f64::NAN, false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "conditioning_scale",
                ..
            }
        ),
        "{err}"
    );
    // An SDXL ControlNet on an SD pipeline: another number of residuals.
    let path = fixture("sd-tiny");
    let pipe = StableDiffusion::load(path.to_str().unwrap(), &device())
        .unwrap()
        .with_controlnet(controlnet("xl"));
    let control = exp.float::<4>("control1");
    let opts = GenerateOptions::new("a cat")
        .steps(2)
        .control(ControlInput::new(control.clone()));
    let err = pipe.text_to_image(&opts, Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err}");
    // One control input for two ControlNets (diffusers: the scale / image lists' lengths).
    let pipe = pipe.with_controlnet(controlnet("sd"));
    let err = pipe.text_to_image(&opts, Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "control",
                ..
            }
        ),
        "{err}"
    );
    // A control tensor of another size than the requested image.
    let pipe = StableDiffusion::load(path.to_str().unwrap(), &device())
        .unwrap()
        .with_controlnet(controlnet("sd"));
    let err = pipe
        .text_to_image(&opts.clone().size(64, 64), Hooks::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shape {
                what: "control image",
                ..
            }
        ),
        "{err}"
    );
    // A bad guidance window.
    let bad = GenerateOptions::new("a cat")
        .steps(2)
        .control(ControlInput::new(control).guidance_window(0.6, 0.4));
    let err = pipe.text_to_image(&bad, Hooks::new()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // A single file that is not a ControlNet.
    let err = ControlNetModel::from_single_file(
        fixture("sd-tiny").join("vae/diffusion_pytorch_model.safetensors"),
        &config("sd_single"),
        DType::F32,
        &device(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::NotSingleFile(_)), "{err}");
}

#[test]
fn control_images_are_resized_like_diffusers_pil_path() {
    // An RgbImage control input of another size is resized (Lanczos) to the generation size
    // and, for text-to-image without a size, sets it (rounded down to multiples of 8).
    let path = fixture("sd-tiny");
    let pipe = StableDiffusion::load(path.to_str().unwrap(), &device())
        .unwrap()
        .with_controlnet(controlnet("sd"));
    let image = image::RgbImage::from_fn(50, 41, |x, y| {
        image::Rgb([(x * 5) as u8, (y * 6) as u8, 128])
    });
    let opts = GenerateOptions::new("a cat")
        .steps(1)
        .guidance_scale(1.0)
        .control(ControlInput::new(image));
    let out = pipe.text_to_image(&opts, Hooks::new()).unwrap();
    assert_eq!(out.pixels.dims(), [1, 3, 40, 48]);
}

#[test]
fn ip_adapter_pipeline_misuse_is_a_typed_error() {
    let path = fixture("sd-tiny");
    let path = path.to_str().unwrap();
    let dir = fixture("ip-adapter-tiny");
    let image = mm_core::image::load_image(dir.join("image.png")).unwrap();
    let opts = GenerateOptions::new("a cat").steps(1);
    // Reference images without an adapter.
    let pipe = StableDiffusion::load(path, &device()).unwrap();
    let with_image = opts.clone().ip_adapter_image(image);
    let err = pipe.text_to_image(&with_image, Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidArgument {
                name: "ip_adapter_image",
                ..
            }
        ),
        "{err}"
    );
    // An adapter without reference images.
    let encoder = ImageEncoder::load(
        dir.join("models/image_encoder").to_str().unwrap(),
        &device(),
    );
    let file = dir.join("models/ip-adapter_sd-tiny.safetensors");
    let pipe = pipe
        .with_ip_adapter(&[&file], Some(encoder.unwrap()))
        .unwrap();
    let err = pipe.text_to_image(&opts, Hooks::new()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingInput {
                what: "ip_adapter_image",
                ..
            }
        ),
        "{err}"
    );
    // An SDXL adapter on an SD 1.x pipeline: another cross-attention width.
    let pipe = StableDiffusion::load(path, &device()).unwrap();
    let xl = dir.join("sdxl_models/ip-adapter_sdxl-tiny.safetensors");
    let err = pipe.with_ip_adapter(&[&xl], None).unwrap_err();
    assert!(matches!(err, Error::IpAdapter { .. }), "{err}");
    // The adapter's layers go into a resident UNet.
    let sequential = mm_diffusion::pipelines::LoadOptions::new()
        .memory(mm_diffusion::pipelines::MemoryMode::Sequential);
    let pipe = StableDiffusion::load_with_options(path, sequential, &device()).unwrap();
    let err = pipe.with_ip_adapter(&[&file], None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidArgument { name: "memory", .. }),
        "{err}"
    );
}
