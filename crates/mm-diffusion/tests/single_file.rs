//! Single-file (CompVis/LDM layout) checkpoints: every tensor lands under the diffusers name
//! diffusers' own converter gives it, with the same values, for tiny SD 1.x / 2.x / SDXL base /
//! SDXL refiner files and for the full SD 1.5, SD 2.1, SDXL base and refiner key lists, which
//! are also exactly what the Rust models built from the full-size configs expect.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{TempFile, device, fixture, values};
use mm_core::weights::{Weights, expected_tensors};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, StableDiffusion};
use mm_diffusion::single_file::{Component, Family, LdmLayout, SingleFile, map_key};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel, ClipTextModelWithProjection};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

/// The layout of a folder's configs (`text_encoder_2/`, where there is one, is the OpenCLIP
/// encoder).
fn layout(dir: &Path) -> LdmLayout {
    let json = |c: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(c).join("config.json")).unwrap())
            .unwrap()
    };
    let openclip = ["text_encoder_2", "text_encoder"]
        .into_iter()
        .find(|c| dir.join(c).is_dir())
        .unwrap();
    LdmLayout {
        layers_per_block: json("unet")["layers_per_block"].as_u64().unwrap() as usize,
        vae_up_blocks: json("vae")["up_block_types"].as_array().unwrap().len(),
        text_layers: json(openclip)["num_hidden_layers"].as_u64().unwrap() as usize,
    }
}

/// The weights of each component of a converted file, by diffusers folder name.
fn converted(file: &SingleFile, layout: &LdmLayout) -> (Vec<(&'static str, Weights)>, Vec<String>) {
    if file.family().is_sdxl() {
        let p = file.sdxl_components(layout).unwrap();
        let mut parts = vec![("unet", p.unet), ("vae", p.vae)];
        parts.extend(p.text_encoder.map(|w| ("text_encoder", w)));
        parts.push(("text_encoder_2", p.text_encoder_2));
        (parts, p.ignored)
    } else {
        let p = file.components(layout).unwrap();
        let parts = vec![
            ("unet", p.unet),
            ("vae", p.vae),
            ("text_encoder", p.text_encoder),
        ];
        (parts, p.ignored)
    }
}

/// Converts a tiny single file, compares every tensor with diffusers', and loads the models
/// strictly; returns the tensors set aside.
fn check_tiny(name: &str, family: Family) -> Vec<String> {
    let dir = fixture("single-file-tiny").join(name);
    let file = SingleFile::open(dir.join("ldm.safetensors")).unwrap();
    assert_eq!(file.family(), family);
    let (parts, ignored) = converted(&file, &layout(&dir));
    let bytes = std::fs::read(dir.join("diffusers.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&bytes).unwrap();
    let components: BTreeSet<&str> = want
        .names()
        .iter()
        .map(|n| n.split('.').next().unwrap())
        .collect();
    assert_eq!(
        components,
        parts.iter().map(|(c, _)| *c).collect(),
        "{name}: components"
    );
    let mut compared = 0;
    for (prefix, weights) in &parts {
        let expected: BTreeSet<String> = want
            .names()
            .into_iter()
            .filter_map(|n| n.strip_prefix(&format!("{prefix}.")).map(str::to_string))
            .collect();
        let got: BTreeSet<String> = weights.names().map(str::to_string).collect();
        assert_eq!(got, expected, "{name}/{prefix}: names");
        for n in &expected {
            let view = want.tensor(&format!("{prefix}.{n}")).unwrap();
            assert_eq!(
                weights.shape(n).unwrap(),
                view.shape(),
                "{name}/{prefix}.{n}"
            );
            let reference: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!(values(weights, n), reference, "{name}/{prefix}.{n}");
            compared += 1;
        }
    }
    assert!(compared > 600, "{compared}");

    // The converted models load strictly.
    let dev = device();
    for (component, weights) in parts {
        let config = dir.join(component).join("config.json");
        match component {
            "unet" => {
                let config: UNet2DConditionConfig = mm_core::config::read_json(config).unwrap();
                UNet2DConditionModel::from_weights(&config, weights, &dev).map(drop)
            }
            "vae" => {
                let config: AutoencoderKLConfig = mm_core::config::read_json(config).unwrap();
                AutoencoderKL::from_weights(&config, weights, &dev).map(drop)
            }
            "text_encoder" => {
                let config = ClipTextConfig::from_file(&config).unwrap();
                ClipTextModel::from_weights(&config, weights, &dev)
                    .map(drop)
                    .map_err(Into::into)
            }
            _ => {
                let config = ClipTextConfig::from_file(&config).unwrap();
                ClipTextModelWithProjection::from_weights(&config, weights, &dev)
                    .map(drop)
                    .map_err(Into::into)
            }
        }
        .unwrap_or_else(|e| panic!("{name}/{component}: {e}"));
    }
    ignored
}

#[test]
fn tiny_sd1_single_file_converts_exactly() {
    let ignored = check_tiny("sd1", Family::Sd1);
    // The schedule buffers and EMA counters are set aside, not lost silently.
    assert!(ignored.iter().any(|n| n == "alphas_cumprod"), "{ignored:?}");
}

#[test]
fn tiny_sd2_single_file_converts_exactly() {
    let dir = fixture("single-file-tiny").join("sd2");
    assert!(
        SingleFile::open(dir.join("ldm.safetensors"))
            .unwrap()
            .has_openclip_text_encoder()
    );
    let ignored = check_tiny("sd2", Family::Sd2);
    assert!(ignored.iter().any(|n| n == "alphas_cumprod"), "{ignored:?}");
}

#[test]
fn tiny_sdxl_single_file_converts_exactly() {
    let mut ignored = check_tiny("sdxl", Family::Sdxl);
    ignored.sort();
    assert_eq!(
        ignored,
        [
            "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
            "conditioner.embedders.1.model.logit_scale",
        ]
    );
}

#[test]
fn tiny_sdxl_refiner_single_file_converts_exactly() {
    let ignored = check_tiny("sdxl-refiner", Family::SdxlRefiner);
    assert_eq!(ignored, ["conditioner.embedders.0.model.logit_scale"]);
}

type Entries = Vec<(String, Vec<usize>)>;

fn read_list(path: &Path) -> Entries {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every tensor of the real single files maps to exactly the tensors the diffusers models
/// expect (names generated on the meta device by the reference tool, checked there against
/// diffusers' converter).
fn check_full(name: &str, layout: &LdmLayout, ignored: &[&str]) {
    let dir = fixture("full").join(name);
    let mut got: Entries = Vec::new();
    let mut dropped = Vec::new();
    for (ldm, shape) in read_list(&dir.join("ldm_tensors.json")) {
        match map_key(&ldm, layout) {
            Some(m) => {
                let prefix = m.component.name();
                for (n, s) in m.names.iter().zip(m.shapes(&shape)) {
                    got.push((format!("{prefix}.{n}"), s));
                }
            }
            None => dropped.push(ldm),
        }
    }
    got.sort();
    let want = read_list(&dir.join("diffusers_tensors.json"));
    let (g, w): (BTreeSet<_>, BTreeSet<_>) = (got.iter().collect(), want.iter().collect());
    assert_eq!(got.len(), g.len(), "{name}: two tensors mapped to one name");
    let extra: Vec<_> = g.difference(&w).collect();
    let missing: Vec<_> = w.difference(&g).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "{name}: extra {extra:?}, missing {missing:?}"
    );
    for d in &dropped {
        assert!(
            ignored.iter().any(|i| d.contains(i)),
            "{name}: unexpectedly dropped {d}"
        );
    }

    // The Rust models built from the full-size configs expect exactly those tensors (their
    // parameters stay uninitialised: nothing full-size is allocated), and, where the folder
    // lists them, each component's `tensors.json`.
    let mut built: Entries = Vec::new();
    for component in COMPONENTS.iter().filter(|c| dir.join(c).is_dir()) {
        let expected = expected_by(&dir.join(component), component);
        let list = dir.join(component).join("tensors.json");
        if list.is_file() {
            assert_eq!(expected, read_list(&list), "{name}/{component}");
        }
        built.extend(
            expected
                .into_iter()
                .map(|(n, s)| (format!("{component}.{n}"), s)),
        );
    }
    built.sort();
    assert_eq!(built, want, "{name}: the Rust models' tensors");
}

const COMPONENTS: [&str; 4] = ["unet", "vae", "text_encoder", "text_encoder_2"];

/// The (name, shape) list of the Rust model built from `dir/config.json` for a component.
fn expected_by(dir: &Path, component: &str) -> Entries {
    let dev = device();
    let config = dir.join("config.json");
    match component {
        "unet" => {
            let config: UNet2DConditionConfig = mm_core::config::read_json(config).unwrap();
            expected_tensors(&UNet2DConditionModel::new(&config, &dev).unwrap())
        }
        "vae" => {
            let config: AutoencoderKLConfig = mm_core::config::read_json(config).unwrap();
            expected_tensors(&AutoencoderKL::new(&config, &dev).unwrap())
        }
        "text_encoder" => {
            let config = ClipTextConfig::from_file(&config).unwrap();
            expected_tensors(&ClipTextModel::new(&config, &dev).unwrap())
        }
        _ => {
            let config = ClipTextConfig::from_file(&config).unwrap();
            expected_tensors(&ClipTextModelWithProjection::new(&config, &dev).unwrap())
        }
    }
}

const BUFFERS: [&str; 4] = ["alphas", "betas", "posterior", "model_ema."];

#[test]
fn sd15_single_file_keys_cover_the_diffusers_models() {
    let ignored = [&BUFFERS[..], &["position_ids"]].concat();
    check_full("sd15-single-file", &LdmLayout::SD1, &ignored);
}

#[test]
fn sd21_single_file_keys_cover_the_diffusers_models() {
    let ignored = [
        &BUFFERS[..],
        &["resblocks.23.", "text_projection", "logit_scale"],
    ]
    .concat();
    check_full("sd21-single-file", &LdmLayout::SD2, &ignored);
}

#[test]
fn sdxl_base_single_file_keys_cover_the_diffusers_models() {
    let dir = fixture("full").join("sdxl-base");
    assert_eq!(layout(&dir), LdmLayout::SDXL);
    // The published configs.
    let unet: UNet2DConditionConfig =
        mm_core::config::read_json(dir.join("unet/config.json")).unwrap();
    let real: UNet2DConditionConfig =
        mm_core::config::read_json(fixture("full").join("unet-sdxl-base/config.json")).unwrap();
    assert_eq!(unet, real);
    let vae: AutoencoderKLConfig = mm_core::config::read_json(dir.join("vae/config.json")).unwrap();
    assert_eq!((vae.scaling_factor, vae.force_upcast), (0.13025, true));
    let text = ClipTextConfig::from_file(&dir.join("text_encoder/config.json")).unwrap();
    assert_eq!(
        (
            text.hidden_size,
            text.num_hidden_layers,
            text.projection_dim
        ),
        (768, 12, 768)
    );
    let text_2 = ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json")).unwrap();
    assert_eq!(
        (
            text_2.hidden_size,
            text_2.num_hidden_layers,
            text_2.projection_dim
        ),
        (1280, 32, 1280)
    );
    // Nothing but CLIP-L's position_ids and bigG's logit_scale is dropped: all 32 blocks stay.
    check_full(
        "sdxl-base",
        &LdmLayout::SDXL,
        &[
            "embedders.0.transformer.text_model.embeddings.position_ids",
            "embedders.1.model.logit_scale",
        ],
    );
}

#[test]
fn sdxl_refiner_single_file_keys_cover_the_diffusers_models() {
    let dir = fixture("full").join("sdxl-refiner");
    assert_eq!(layout(&dir), LdmLayout::SDXL);
    assert!(!dir.join("text_encoder").exists());
    check_full(
        "sdxl-refiner",
        &LdmLayout::SDXL,
        &["embedders.0.model.logit_scale"],
    );
}

#[test]
fn sdxl_keys_map_at_any_transformer_depth() {
    let layout = LdmLayout::SDXL;
    let m = map_key(
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight",
        &layout,
    )
    .unwrap();
    assert_eq!(
        m.names,
        ["down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight"]
    );
    let m = map_key("model.diffusion_model.label_emb.0.2.bias", &layout).unwrap();
    assert_eq!(m.names, ["add_embedding.linear_2.bias"]);
    let m = map_key("conditioner.embedders.1.model.text_projection", &layout).unwrap();
    assert_eq!((m.component, m.transpose), (Component::TextEncoder2, true));
    assert_eq!(m.shapes(&[1280, 640]), [vec![640, 1280]]);
    let m = map_key(
        "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_bias",
        &layout,
    )
    .unwrap();
    assert_eq!(m.component, Component::TextEncoder2);
    assert_eq!(m.names.len(), 3);
    // SD 2.x's OpenCLIP text_projection stays unused (CLIPTextModel has none).
    assert_eq!(
        map_key("cond_stage_model.model.text_projection", &LdmLayout::SD2),
        None
    );
}

/// A copy of the tiny SDXL base file with one tensor replaced (or added), opened.
fn sdxl_with(name: &str, shape: &[usize]) -> (SingleFile, TempFile) {
    let src = fixture("single-file-tiny")
        .join("sdxl")
        .join("ldm.safetensors");
    let bytes = std::fs::read(src).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let data = vec![0u8; 4 * shape.iter().product::<usize>()];
    let mut views: Vec<(String, TensorView)> = file
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != name)
        .collect();
    views.push((
        name.to_string(),
        TensorView::new(Dtype::F32, shape.to_vec(), &data).unwrap(),
    ));
    let path = std::env::temp_dir().join(format!(
        "mm-single-file-{}-{}-{}.safetensors",
        std::process::id(),
        name.replace('.', "-"),
        shape.len()
    ));
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    (SingleFile::open(&path).unwrap(), TempFile(path))
}

#[test]
fn malformed_openclip_tensors_are_typed_errors() {
    // Tiny bigG: hidden 12, projection 10.
    let layer = "conditioner.embedders.1.model.transformer.resblocks.1.attn.";
    for (name, shape) in [
        (format!("{layer}in_proj_weight"), vec![33, 12]),
        (format!("{layer}in_proj_weight"), vec![36, 11]),
        (format!("{layer}in_proj_weight"), vec![36]),
        (format!("{layer}in_proj_bias"), vec![35]),
        (format!("{layer}in_proj_bias"), vec![33]),
        (
            "conditioner.embedders.1.model.text_projection".into(),
            vec![10, 12],
        ),
        (
            "conditioner.embedders.1.model.text_projection".into(),
            vec![12],
        ),
    ] {
        let (file, _tmp) = sdxl_with(&name, &shape);
        let err = file.sdxl_components(&LdmLayout::SDXL).unwrap_err();
        match &err {
            Error::SingleFileTensor {
                name: n, shape: s, ..
            } => {
                assert_eq!((n, s), (&name, &shape), "{err}")
            }
            _ => panic!("{name} {shape:?}: {err}"),
        }
    }
}

#[test]
fn an_unknown_tensor_under_a_known_prefix_fails_the_strict_load() {
    let (file, _tmp) = sdxl_with("conditioner.embedders.1.model.transformer.extra", &[2]);
    let parts = file.sdxl_components(&LdmLayout::SDXL).unwrap();
    assert!(parts.text_encoder_2.contains("transformer.extra"));
    let dir = fixture("single-file-tiny").join("sdxl");
    let config = ClipTextConfig::from_file(&dir.join("text_encoder_2/config.json")).unwrap();
    let err = ClipTextModelWithProjection::from_weights(&config, parts.text_encoder_2, &device())
        .unwrap_err();
    assert!(err.to_string().contains("transformer.extra"), "{err}");
}

#[test]
fn each_family_has_its_own_conversion() {
    let found = |err: Error| match err {
        Error::SingleFileFamily { found, .. } => found,
        e => panic!("{e}"),
    };
    let tiny = fixture("single-file-tiny");
    let sdxl = SingleFile::open(tiny.join("sdxl/ldm.safetensors")).unwrap();
    assert_eq!(sdxl.default_layout(), LdmLayout::SDXL);
    assert!(!sdxl.has_openclip_text_encoder());
    let err = sdxl.components(&LdmLayout::SDXL).unwrap_err();
    assert_eq!(found(err), Family::Sdxl);
    let sd1 = SingleFile::open(tiny.join("sd1/ldm.safetensors")).unwrap();
    assert_eq!(sd1.default_layout(), LdmLayout::SD1);
    let err = sd1.sdxl_components(&LdmLayout::SD1).unwrap_err();
    assert_eq!(found(err), Family::Sd1);
    let refiner = SingleFile::open(tiny.join("sdxl-refiner/ldm.safetensors")).unwrap();
    let parts = refiner.sdxl_components(&LdmLayout::SDXL).unwrap();
    assert!(parts.text_encoder.is_none());
}

#[test]
fn a_diffusers_file_is_not_a_single_file() {
    let path = fixture("vae-kl-tiny").join("diffusion_pytorch_model.safetensors");
    let err = SingleFile::open(&path).unwrap_err();
    assert!(matches!(err, Error::NotSingleFile(_)), "{err}");
}

#[test]
fn a_single_file_pipeline_generates_what_the_folder_does() {
    let dev = device();
    let folder = fixture("sd-tiny");
    let folder = folder.to_str().unwrap();
    let from_folder = StableDiffusion::load(folder, &dev).unwrap();
    let file = fixture("single-file-tiny").join("sd-tiny.safetensors");
    let from_file = StableDiffusion::from_single_file(&file, folder, &dev).unwrap();
    let opts = GenerateOptions::new("a red cat")
        .steps(2)
        .seed(3)
        .scheduler("DDIMScheduler");
    let a = from_folder.text_to_image(&opts, Hooks::new()).unwrap();
    let b = from_file.text_to_image(&opts, Hooks::new()).unwrap();
    assert_eq!(a.images, b.images);
    let diff = (a.latents - b.latents).abs().max().into_scalar::<f32>();
    assert_eq!(diff, 0.0);
}
