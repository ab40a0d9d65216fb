//! Single-file (CompVis/LDM layout) checkpoints: every tensor lands under the diffusers name
//! diffusers' own converter gives it, with the same values, for tiny SD 1.x / 2.x files and for
//! the full SD 1.5 and SD 2.1 key lists, which are also exactly what the Rust models built from
//! the full-size configs expect.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use burn::tensor::Tensor;
use common::{device, fixture};
use mm_core::weights::{Weights, expected_tensors};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, StableDiffusion};
use mm_diffusion::single_file::{Component, LdmLayout, SingleFile, map_key};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use mm_diffusion::vae::{AutoencoderKL, AutoencoderKLConfig};
use mm_vision::Pretrained;
use mm_vision::clip::{ClipTextConfig, ClipTextModel};
use safetensors::SafeTensors;

/// A tensor's values as f32, whatever its rank.
fn values(w: &Weights, name: &str) -> Vec<f32> {
    let dev = device();
    let data = match w.shape(name).unwrap().len() {
        1 => w.tensor::<1>(name, &dev).map(Tensor::into_data),
        2 => w.tensor::<2>(name, &dev).map(Tensor::into_data),
        3 => w.tensor::<3>(name, &dev).map(Tensor::into_data),
        4 => w.tensor::<4>(name, &dev).map(Tensor::into_data),
        r => panic!("{name}: rank {r}"),
    };
    data.unwrap_or_else(|e| panic!("{name}: {e}"))
        .try_to_vec::<f32>()
        .unwrap()
}

fn layout(dir: &Path) -> LdmLayout {
    let json = |c: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(c).join("config.json")).unwrap())
            .unwrap()
    };
    LdmLayout {
        layers_per_block: json("unet")["layers_per_block"].as_u64().unwrap() as usize,
        vae_up_blocks: json("vae")["up_block_types"].as_array().unwrap().len(),
        text_layers: json("text_encoder")["num_hidden_layers"].as_u64().unwrap() as usize,
    }
}

fn check_tiny(name: &str) {
    let dir = fixture("single-file-tiny").join(name);
    let file = SingleFile::open(dir.join("ldm.safetensors")).unwrap();
    let layout = layout(&dir);
    let parts = file.components(&layout).unwrap();
    let bytes = std::fs::read(dir.join("diffusers.safetensors")).unwrap();
    let want = SafeTensors::deserialize(&bytes).unwrap();
    let mut compared = 0;
    for (prefix, weights) in [
        ("unet", &parts.unet),
        ("vae", &parts.vae),
        ("text_encoder", &parts.text_encoder),
    ] {
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
    assert!(compared > 900, "{compared}");
    // The schedule buffers and EMA counters are set aside, not lost silently.
    assert!(
        parts.ignored.iter().any(|n| n == "alphas_cumprod"),
        "{:?}",
        parts.ignored
    );

    // The converted UNet, VAE and text encoder load strictly into the models.
    let dev = device();
    let unet_config: UNet2DConditionConfig =
        mm_core::config::read_json(dir.join("unet/config.json")).unwrap();
    UNet2DConditionModel::from_weights(&unet_config, parts.unet, &dev).unwrap();
    let vae_config: AutoencoderKLConfig =
        mm_core::config::read_json(dir.join("vae/config.json")).unwrap();
    AutoencoderKL::from_weights(&vae_config, parts.vae, &dev).unwrap();
    let text_config = ClipTextConfig::from_file(&dir.join("text_encoder/config.json")).unwrap();
    ClipTextModel::from_weights(&text_config, parts.text_encoder, &dev).unwrap();
}

#[test]
fn tiny_sd1_single_file_converts_exactly() {
    check_tiny("sd1");
}

#[test]
fn tiny_sd2_single_file_converts_exactly() {
    let dir = fixture("single-file-tiny").join("sd2");
    assert!(
        SingleFile::open(dir.join("ldm.safetensors"))
            .unwrap()
            .has_openclip_text_encoder()
    );
    check_tiny("sd2");
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
                let prefix = match m.component {
                    Component::Unet => "unet",
                    Component::Vae => "vae",
                    Component::TextEncoder => "text_encoder",
                };
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
    // parameters stay uninitialised: nothing full-size is allocated).
    let dev = device();
    let unet_config: UNet2DConditionConfig =
        mm_core::config::read_json(dir.join("unet/config.json")).unwrap();
    let vae_config: AutoencoderKLConfig =
        mm_core::config::read_json(dir.join("vae/config.json")).unwrap();
    let text_config = ClipTextConfig::from_file(&dir.join("text_encoder/config.json")).unwrap();
    let mut built: Entries = Vec::new();
    let mut add = |prefix: &str, list: Entries| {
        built.extend(list.into_iter().map(|(n, s)| (format!("{prefix}.{n}"), s)));
    };
    add(
        "unet",
        expected_tensors(&UNet2DConditionModel::new(&unet_config, &dev).unwrap()),
    );
    add(
        "vae",
        expected_tensors(&AutoencoderKL::new(&vae_config, &dev).unwrap()),
    );
    add(
        "text_encoder",
        expected_tensors(&ClipTextModel::new(&text_config, &dev).unwrap()),
    );
    built.sort();
    assert_eq!(built, want, "{name}: the Rust models' tensors");
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
