//! IP-Adapter matches diffusers on tiny random h94-layout adapters (`gen_ip_adapter.py`): the
//! image encoder's embeddings, the projected tokens and the UNet outputs at several scales
//! (uniform, InstantStyle per-block, two adapters at once), for IP-Adapter and IP-Adapter Plus
//! on an SD 1.x-style and an SDXL-style UNet; the loader expects exactly the tensors of the
//! published h94 files (checked without allocating them); unusable files and scales give
//! typed errors.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use burn::tensor::{DType, Tensor};
use common::{Expected, device, fixture, max_abs_diff};
use image::RgbImage;
use mm_core::processor::ImageSize;
use mm_core::weights::expected_tensors;
use mm_diffusion::Error;
use mm_diffusion::ip_adapter::{
    BlockScales, ImageEmbeds, ImageEncoder, ImageProjModelConfig, ImageProjection,
    ImageProjectionConfig, IpAdapter, IpAdapterCheckpoint, IpAdapterError, IpAdapterScale,
    ResamplerConfig, ScaleError,
};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetInput};
use mm_vision::clip::{ClipVisionConfig, ClipVisionModelWithProjection};

const TOL: f32 = 1e-4;

/// A tiny UNet of the fixtures and the adapters made for it.
struct Family {
    /// Prefix of its tensors in `expected.safetensors`.
    prefix: &'static str,
    /// Its UNet folder.
    unet: &'static str,
    /// Folder of its adapters (as in h94/IP-Adapter).
    subfolder: &'static str,
    plain: &'static str,
    plus: &'static str,
}

const SD: Family = Family {
    prefix: "sd.",
    unet: "sd-tiny/unet",
    subfolder: "models",
    plain: "ip-adapter_sd-tiny.safetensors",
    plus: "ip-adapter-plus_sd-tiny.safetensors",
};

const SDXL: Family = Family {
    prefix: "sdxl.",
    unet: "sdxl-tiny/unet",
    subfolder: "sdxl_models",
    plain: "ip-adapter_sdxl-tiny.safetensors",
    plus: "ip-adapter-plus_sdxl-tiny.safetensors",
};

impl Family {
    fn unet(&self) -> UNet2DConditionModel {
        UNet2DConditionModel::load(fixture(self.unet).to_str().unwrap(), &device()).unwrap()
    }

    fn file(&self, kind: &str) -> PathBuf {
        let name = if kind == "plain" {
            self.plain
        } else {
            self.plus
        };
        folder().join(self.subfolder).join(name)
    }

    /// The UNet inputs of the fixture with `tokens`.
    fn input(&self, exp: &Expected, tokens: Vec<Tensor<3>>) -> UNetInput {
        let p = self.prefix;
        let input = UNetInput::new(
            exp.float(&format!("{p}sample")),
            exp.float(&format!("{p}timestep")),
            exp.float(&format!("{p}encoder_hidden_states")),
        )
        .with_image_tokens(tokens);
        if p == "sdxl." {
            input.with_added_cond(exp.float("sdxl.text_embeds"), exp.float("sdxl.time_ids"))
        } else {
            input
        }
    }
}

fn folder() -> PathBuf {
    fixture("ip-adapter-tiny")
}

fn expected() -> Expected {
    Expected::open(&folder().join("expected.safetensors"))
}

fn encoder() -> ImageEncoder {
    let path = folder().join("models/image_encoder");
    ImageEncoder::load(path.to_str().unwrap(), &device()).unwrap()
}

fn image(name: &str) -> RgbImage {
    mm_core::image::load_image(folder().join(name)).unwrap()
}

fn check<const D: usize>(what: &str, actual: Tensor<D>, expected: Tensor<D>) -> f32 {
    assert_eq!(actual.dims(), expected.dims(), "shape of {what}");
    let err = max_abs_diff(actual, expected);
    eprintln!("{what}: max abs error {err:.2e}");
    assert!(err <= TOL, "{what}: max abs error {err:e}");
    err
}

/// `actual` (from the image encoder) against diffusers' `[negative; positive]` embeddings.
fn check_embeds(exp: &Expected, name: &str, actual: &ImageEmbeds) {
    let expected = match actual {
        ImageEmbeds::Pooled { .. } => ImageEmbeds::from_diffusers_pooled(exp.float(name), true),
        ImageEmbeds::Hidden { .. } => ImageEmbeds::from_diffusers_hidden(exp.float(name), true),
    };
    match (actual.clone(), expected.unwrap()) {
        (
            ImageEmbeds::Pooled { positive, negative },
            ImageEmbeds::Pooled {
                positive: p,
                negative: n,
            },
        ) => check_both(name, (positive, negative), (p, n)),
        (
            ImageEmbeds::Hidden { positive, negative },
            ImageEmbeds::Hidden {
                positive: p,
                negative: n,
            },
        ) => check_both(name, (positive, negative), (p, n)),
        _ => unreachable!(),
    }
}

/// The positive and the negative embeddings of `name`, both present.
fn check_both<const D: usize>(
    name: &str,
    actual: (Tensor<D>, Option<Tensor<D>>),
    expected: (Tensor<D>, Option<Tensor<D>>),
) {
    check(&format!("{name} (positive)"), actual.0, expected.0);
    let negative = actual.1.unwrap();
    check(&format!("{name} (negative)"), negative, expected.1.unwrap());
}

/// One adapter, loaded through the public API: embeddings, tokens (also with 2 images per
/// prompt) and UNet outputs at scale 1 (as loaded), 0.6 and `style`.
fn check_adapter(family: &Family, kind: &str, style: IpAdapterScale) {
    let exp = expected();
    let mut unet = family.unet();
    let ip = IpAdapter::load(&[family.file(kind)], &mut unet, &device())
        .unwrap()
        .with_image_encoder(encoder());
    assert_eq!(ip.num_adapters(), 1);
    assert_eq!(ip.image_proj[0].takes_hidden_states(), kind == "plus");
    let q = format!("{}{kind}.", family.prefix);
    let embeds = ip.encode_images(&[vec![image("image.png")]]).unwrap();
    check_embeds(&exp, &format!("{q}embeds"), &embeds[0]);
    let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
    exp.check(&format!("{q}tokens"), tokens[0].clone(), TOL);
    let nipp2 = ip.image_tokens(&embeds, 2, true).unwrap().remove(0);
    exp.check(&format!("{q}tokens_nipp2"), nipp2, TOL);
    let run = |unet: &UNet2DConditionModel| {
        unet.forward_with(family.input(&exp, tokens.clone()))
            .unwrap()
    };
    exp.check(&format!("{q}out_scale1"), run(&unet), TOL);
    unet.set_ip_adapter_scale(&[IpAdapterScale::Uniform(0.6)])
        .unwrap();
    exp.check(&format!("{q}out_scale0.6"), run(&unet), TOL);
    unet.set_ip_adapter_scale(&[style]).unwrap();
    exp.check(&format!("{q}out_style"), run(&unet), TOL);
}

fn sd_style() -> IpAdapterScale {
    IpAdapterScale::parse(
        r#"{"down": {"block_0": 0.3}, "up": {"block_1": [0.0, 1.0]}, "mid": 0.5}"#,
    )
    .unwrap()
    .remove(0)
}

fn sdxl_style() -> IpAdapterScale {
    // InstantStyle's SDXL recipe on the tiny UNet's blocks (its down block 1 and up block 0
    // have the transformers).
    IpAdapterScale::Blocks(
        BlockScales::default()
            .down(1, [0.0, 1.0])
            .up(0, [0.0, 1.0, 0.0]),
    )
}

#[test]
fn image_encoder_matches_diffusers() {
    let exp = expected();
    let encoder = encoder();
    // diffusers' `CLIPImageProcessor(size=image_size, crop_size=image_size)`.
    let size = encoder.processor().config().size;
    assert_eq!(size, ImageSize::ShortestEdge { shortest_edge: 32 });
    for (name, key) in [
        ("image.png", "pixel_values"),
        ("image2.png", "pixel_values2"),
    ] {
        let pixels = encoder.pixel_values(&[image(name)]).unwrap();
        exp.check(key, pixels, TOL);
    }
    let pixels = encoder.pixel_values(&[image("image.png")]).unwrap();
    check_embeds(
        &exp,
        "sd.plain.embeds",
        &encoder.pooled(pixels.clone()).unwrap(),
    );
    check_embeds(&exp, "sd.plus.embeds", &encoder.hidden(pixels).unwrap());
}

#[test]
fn sd_ip_adapter_matches_diffusers() {
    check_adapter(&SD, "plain", sd_style());
    // One adapter, two reference images: their tokens are concatenated.
    let exp = expected();
    let mut unet = SD.unet();
    let ip = IpAdapter::load(&[SD.file("plain")], &mut unet, &device())
        .unwrap()
        .with_image_encoder(encoder());
    let embeds = ip
        .encode_images(&[vec![image("image.png"), image("image2.png")]])
        .unwrap();
    assert_eq!(embeds[0].num_images(), 2);
    check_embeds(&exp, "sd.plain.embeds_two", &embeds[0]);
    let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
    exp.check("sd.plain.tokens_two", tokens[0].clone(), TOL);
    let out = unet.forward_with(SD.input(&exp, tokens)).unwrap();
    exp.check("sd.plain.out_two", out, TOL);
}

#[test]
fn sd_ip_adapter_plus_matches_diffusers() {
    check_adapter(&SD, "plus", sd_style());
}

#[test]
fn sdxl_ip_adapter_matches_diffusers() {
    check_adapter(&SDXL, "plain", sdxl_style());
}

#[test]
fn sdxl_ip_adapter_plus_matches_diffusers() {
    check_adapter(&SDXL, "plus", sdxl_style());
}

/// Both adapters at once (a plain one with the first image, a Plus one with the second), one
/// scale config each, as diffusers' list form.
fn check_two_adapters(family: &Family, scales: &str) {
    let exp = expected();
    let mut unet = family.unet();
    let files = [family.file("plain"), family.file("plus")];
    let ip = IpAdapter::load(&files, &mut unet, &device())
        .unwrap()
        .with_image_encoder(encoder());
    unet.set_ip_adapter_scale(&IpAdapterScale::parse(scales).unwrap())
        .unwrap();
    let images = [vec![image("image.png")], vec![image("image2.png")]];
    let embeds = ip.encode_images(&images).unwrap();
    let p = family.prefix;
    check_embeds(&exp, &format!("{p}multi.embeds0"), &embeds[0]);
    check_embeds(&exp, &format!("{p}multi.embeds1"), &embeds[1]);
    let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
    assert_eq!(tokens.len(), 2);
    let out = unet.forward_with(family.input(&exp, tokens)).unwrap();
    exp.check(&format!("{p}multi.out"), out, TOL);
}

#[test]
fn two_adapters_at_once_match_diffusers() {
    check_two_adapters(
        &SD,
        r#"[0.7, {"up": {"block_1": [1.0, 0.4]}, "mid": [0.8]}]"#,
    );
    check_two_adapters(
        &SDXL,
        r#"[0.5, {"up": {"block_0": [0.0, 1.0, 0.0]}, "mid": 0.3}]"#,
    );
}

#[test]
fn precomputed_embeds_match_diffusers() {
    // diffusers' `ip_adapter_image_embeds` (`[negative; positive]` per adapter), without an
    // image encoder.
    let exp = expected();
    for family in [&SD, &SDXL] {
        let p = family.prefix;
        let mut unet = family.unet();
        let files = [family.file("plain"), family.file("plus")];
        let ip = IpAdapter::load(&files, &mut unet, &device()).unwrap();
        assert!(ip.image_encoder.is_none());
        let embeds = [
            ImageEmbeds::from_diffusers_pooled(exp.float(&format!("{p}plain.embeds")), true)
                .unwrap(),
            ImageEmbeds::from_diffusers_hidden(exp.float(&format!("{p}plus.embeds")), true)
                .unwrap(),
        ];
        let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
        exp.check(&format!("{p}plain.tokens"), tokens[0].clone(), TOL);
        exp.check(&format!("{p}plus.tokens"), tokens[1].clone(), TOL);
        // Without guidance: the positive tokens only.
        let positive = ip.image_tokens(&embeds, 1, false).unwrap();
        let expected = exp.float::<3>(&format!("{p}plain.tokens")).narrow(0, 1, 1);
        check(
            &format!("{p}plain.tokens (unguided)"),
            positive[0].clone(),
            expected,
        );
        // A plain adapter's negative defaults to zeros, as diffusers' `encode_image`.
        let ImageEmbeds::Pooled { positive, .. } = embeds[0].clone() else {
            unreachable!()
        };
        let implicit = ImageEmbeds::Pooled {
            positive,
            negative: None,
        };
        let tokens = ip
            .image_tokens(&[implicit, embeds[1].clone()], 1, true)
            .unwrap();
        exp.check(&format!("{p}plain.tokens"), tokens[0].clone(), TOL);
    }
}

#[test]
fn half_precision_unet_takes_adapters_in_its_dtype() {
    let exp = expected();
    let path = fixture(SD.unet);
    let mut unet =
        UNet2DConditionModel::load_with_dtype(path.to_str().unwrap(), DType::F16, &device())
            .unwrap();
    let ip = IpAdapter::load(&[SD.file("plus")], &mut unet, &device()).unwrap();
    let attn2 = &unet.down_blocks[0].attentions[0].transformer_blocks[0].attn2;
    let layers = attn2.ip_adapter.as_ref().unwrap();
    assert_eq!(layers.to_k_ip[0].weight.val().dtype(), DType::F16);
    let ImageProjection::Resampler(resampler) = &ip.image_proj[0] else {
        panic!("a Plus adapter has a resampler")
    };
    assert_eq!(resampler.proj_in.weight.val().dtype(), DType::F16);
    // f32 arithmetic on half-precision weights: close to diffusers' f32 results.
    let embeds = [ImageEmbeds::from_diffusers_hidden(exp.float("sd.plus.embeds"), true).unwrap()];
    let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
    assert_eq!(tokens[0].dtype(), DType::F32);
    let err = max_abs_diff(tokens[0].clone(), exp.float("sd.plus.tokens"));
    eprintln!("f16 sd.plus.tokens: max abs error {err:.2e}");
    assert!(err < 2e-2, "{err}");
    let out = unet.forward_with(SD.input(&exp, tokens)).unwrap();
    let err = max_abs_diff(out, exp.float("sd.plus.out_scale1"));
    eprintln!("f16 sd.plus.out_scale1: max abs error {err:.2e}");
    assert!(err < 2e-2, "{err}");
}

#[test]
fn scales_parse_from_diffusers_json() {
    let parsed = IpAdapterScale::parse(
        r#"[1, {"down": {"block_2": [0.0, 1.0]}, "up": {"block_0": [0.0, 1.0, 0.0]}}]"#,
    )
    .unwrap();
    let style = BlockScales::default()
        .down(2, [0.0, 1.0])
        .up(0, [0.0, 1.0, 0.0]);
    assert_eq!(
        parsed,
        vec![IpAdapterScale::Uniform(1.0), IpAdapterScale::Blocks(style)]
    );
    // Round trip through serde in diffusers' JSON shape.
    let json = serde_json::to_string(&parsed).unwrap();
    assert_eq!(
        json,
        r#"[1.0,{"down":{"block_2":[0.0,1.0]},"up":{"block_0":[0.0,1.0,0.0]}}]"#
    );
    assert_eq!(IpAdapterScale::parse(&json).unwrap(), parsed);
    assert_eq!(
        IpAdapterScale::parse(r#"{"mid": 0.5, "down": 1}"#)
            .unwrap()
            .len(),
        1
    );
    // A list of numbers is one scale per adapter, never a dict in serde's list form.
    assert_eq!(
        IpAdapterScale::parse("[1.0, 0.5, 0.0]").unwrap(),
        vec![
            IpAdapterScale::Uniform(1.0),
            IpAdapterScale::Uniform(0.5),
            IpAdapterScale::Uniform(0.0)
        ]
    );
    for bad in [
        r#"{"middle": 1.0}"#,
        r#"{"down": {"blk_2": 1.0}}"#,
        "\"strong\"",
        "[[1.0, 0.5]]",
    ] {
        let err = IpAdapterScale::parse(bad).unwrap_err();
        assert!(
            matches!(err, Error::IpAdapterScale(ScaleError::Parse(_))),
            "{bad}: {err}"
        );
    }
}

fn full_list(path: &str) -> Vec<(String, Vec<usize>)> {
    let text = std::fs::read_to_string(fixture("full").join(path)).unwrap();
    let mut list: Vec<(String, Vec<usize>)> = serde_json::from_str(&text).unwrap();
    list.sort();
    list
}

fn full_unet(name: &str) -> UNet2DConditionModel {
    let path = fixture("full").join(name).join("config.json");
    let config: UNet2DConditionConfig = mm_core::config::read_json(path).unwrap();
    UNet2DConditionModel::new(&config, &device()).unwrap()
}

/// The sizes the loader reads from the published file's shapes are the published ones, and it
/// then expects exactly the file's tensors (the model is never materialised).
fn check_published(unet: &UNet2DConditionModel, name: &str, config: ImageProjectionConfig) {
    let theirs = full_list(&format!("ip-adapter/{name}.json"));
    let shapes: BTreeMap<String, Vec<usize>> = (theirs.iter())
        .filter_map(|(n, s)| Some((n.strip_prefix("image_proj.")?.to_string(), s.clone())))
        .collect();
    assert_eq!(
        ImageProjectionConfig::infer(&shapes).unwrap(),
        config,
        "{name}"
    );
    let checkpoint = IpAdapterCheckpoint::new(&config, unet, &device()).unwrap();
    let ours = expected_tensors(&checkpoint);
    let missing: Vec<_> = theirs.iter().filter(|t| !ours.contains(t)).collect();
    let extra: Vec<_> = ours.iter().filter(|t| !theirs.contains(t)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: file tensors we lack: {missing:?}\nours not in the file: {extra:?}"
    );
}

/// The published plain and Plus adapters (`names`, ViT-H image encoder) for the UNet `unet`
/// of cross-attention width `cross` with `layers` cross-attentions, the Plus Resampler
/// `dim` wide with `heads` heads.
fn check_published_pair(
    unet: &str,
    names: [&str; 2],
    cross: usize,
    (dim, heads): (usize, usize),
    layers: usize,
) {
    let unet = full_unet(unet);
    let plain = ImageProjModelConfig {
        cross_attention_dim: cross,
        clip_embeddings_dim: 1024,
        clip_extra_context_tokens: 4,
    };
    check_published(
        &unet,
        names[0],
        ImageProjectionConfig::ImageProjModel(plain),
    );
    let plus = ResamplerConfig {
        dim,
        depth: 4,
        dim_head: 64,
        heads,
        num_queries: 16,
        embedding_dim: 1280,
        output_dim: cross,
        ff_mult: 4,
    };
    check_published(&unet, names[1], ImageProjectionConfig::Resampler(plus));
    let plain_file = full_list(&format!("ip-adapter/{}.json", names[0]));
    assert_eq!(plain_file.len(), 4 + 2 * layers);
}

#[test]
fn published_sd15_adapters_names_and_shapes() {
    let names = ["ip-adapter_sd15", "ip-adapter-plus_sd15"];
    check_published_pair("unet-sd15", names, 768, (768, 12), 16);
}

#[test]
fn published_sdxl_adapters_names_and_shapes() {
    let names = ["ip-adapter_sdxl_vit-h", "ip-adapter-plus_sdxl_vit-h"];
    check_published_pair("unet-sdxl-base", names, 2048, (1280, 20), 70);
}

#[test]
fn published_image_encoder_names_and_shapes() {
    // h94's models/image_encoder: ViT-H/14 as CLIPVisionModelWithProjection.
    let path = fixture("full/ip-adapter/image_encoder/config.json");
    let config = ClipVisionConfig::from_file(&path).unwrap();
    assert_eq!((config.hidden_size, config.projection_dim), (1280, 1024));
    let model = ClipVisionModelWithProjection::new(&config, &device()).unwrap();
    let theirs = full_list("ip-adapter/image_encoder/tensors.json");
    assert_eq!(expected_tensors(&model), theirs);
}

// Unusable files and arguments.

fn ip_error(err: Error) -> (PathBuf, IpAdapterError) {
    match err {
        Error::IpAdapter { path, problem } => (path, problem),
        other => panic!("expected Error::IpAdapter, got {other}"),
    }
}

/// The UNet has no IP-Adapter layers: image tokens are refused.
fn assert_no_adapter(unet: &UNet2DConditionModel, family: &Family) {
    let exp = expected();
    let tokens = vec![exp.float(&format!("{}plain.tokens", family.prefix))];
    let err = unet.forward_with(family.input(&exp, tokens)).unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
}

#[test]
fn adapter_for_another_base_model_is_refused() {
    // The SDXL adapter (48-wide cross-attention, 12 layers) on the SD UNet (16 wide, 4).
    let mut unet = SD.unet();
    let file = SDXL.file("plain");
    let err = IpAdapter::load(&[&file], &mut unet, &device()).unwrap_err();
    let message = err.to_string();
    let (path, problem) = ip_error(err);
    assert_eq!(path, file);
    assert_eq!(
        problem,
        IpAdapterError::CrossAttentionWidth {
            tensor: "ip_adapter.1.to_k_ip.weight".into(),
            found: 48,
            expected: 16
        }
    );
    assert!(
        message.contains("ip-adapter_sdxl-tiny.safetensors"),
        "{message}"
    );
    assert!(message.contains("ip_adapter.1.to_k_ip.weight"), "{message}");
    assert_no_adapter(&unet, &SD);
    // The other way round, and one file of a list: nothing is loaded.
    let mut unet = SDXL.unet();
    let files = [SDXL.file("plain"), SD.file("plus")];
    let (path, problem) = ip_error(IpAdapter::load(&files, &mut unet, &device()).unwrap_err());
    assert_eq!(path, SD.file("plus"));
    assert!(
        matches!(
            problem,
            IpAdapterError::CrossAttentionWidth {
                found: 16,
                expected: 48,
                ..
            }
        ),
        "{problem}"
    );
    assert_no_adapter(&unet, &SDXL);
    // Same width, other layers: the SD adapter (4 cross-attentions) on unet-sd1-tiny (11).
    let mut unet =
        UNet2DConditionModel::load(fixture("unet-sd1-tiny").to_str().unwrap(), &device()).unwrap();
    let (_, problem) =
        ip_error(IpAdapter::load(&[SD.file("plain")], &mut unet, &device()).unwrap_err());
    assert_eq!(
        problem,
        IpAdapterError::LayerCount {
            found: 4,
            expected: 11
        }
    );
}

/// A copy of `source` in the temp folder, with `edit` applied to its bytes.
fn edited_copy(source: &PathBuf, tag: &str, edit: impl FnOnce(Vec<u8>) -> Vec<u8>) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mm-ip-adapter-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(source.file_name().unwrap());
    std::fs::write(&path, edit(std::fs::read(source).unwrap())).unwrap();
    path
}

/// The file without the tensor `name`.
fn without(bytes: Vec<u8>, name: &str) -> Vec<u8> {
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept = st.tensors().into_iter().filter(|(n, _)| n != name);
    safetensors::serialize(kept, None).unwrap()
}

#[test]
fn truncated_or_incomplete_files_are_refused() {
    let mut unet = SD.unet();
    let source = SD.file("plus");
    let truncated = edited_copy(&source, "truncated", |b| b[..b.len() / 2].to_vec());
    let err = IpAdapter::load(&[&truncated], &mut unet, &device()).unwrap_err();
    assert!(
        matches!(&err, Error::Core(mm_core::Error::Safetensors { path, .. }) if *path == truncated),
        "{err}"
    );
    // A missing key/value projection: the load report names the file and the tensor.
    let missing = edited_copy(&source, "missing", |b| {
        without(b, "ip_adapter.3.to_v_ip.weight")
    });
    let err = IpAdapter::load(&[&missing], &mut unet, &device()).unwrap_err();
    let Error::Core(mm_core::Error::Load(report)) = &err else {
        panic!("expected a load report, got {err}");
    };
    assert_eq!(
        report.missing,
        vec!["ip_adapter.3.to_v_ip.weight".to_string()]
    );
    assert!(report.source.contains(missing.to_str().unwrap()), "{err}");
    // A tensor that tells the projection's sizes.
    let plain = edited_copy(&SD.file("plain"), "no-norm", |b| {
        without(b, "image_proj.norm.weight")
    });
    let (path, problem) = ip_error(IpAdapter::load(&[&plain], &mut unet, &device()).unwrap_err());
    assert_eq!(path, plain);
    assert_eq!(
        problem,
        IpAdapterError::MissingTensor {
            tensor: "image_proj.norm.weight".into()
        }
    );
    // Not an IP-Adapter file at all (the UNet's own weights).
    let weights = fixture(SD.unet).join("diffusion_pytorch_model.safetensors");
    let (_, problem) = ip_error(IpAdapter::load(&[weights], &mut unet, &device()).unwrap_err());
    assert_eq!(
        problem,
        IpAdapterError::NotIpAdapter {
            missing: "image_proj"
        }
    );
    // A file that is not there.
    let err =
        IpAdapter::load(&[folder().join("nope.safetensors")], &mut unet, &device()).unwrap_err();
    assert!(
        matches!(err, Error::Core(mm_core::Error::MissingFile { .. })),
        "{err}"
    );
    assert_no_adapter(&unet, &SD);
    for dir in [truncated, missing, plain] {
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }
}

#[test]
fn pickle_files_are_refused() {
    let mut unet = SD.unet();
    let file = PathBuf::from("IP-Adapter/models/ip-adapter_sd15.bin");
    let err = IpAdapter::load(&[&file], &mut unet, &device()).unwrap_err();
    assert!(
        err.to_string().contains("ip-adapter_sd15.safetensors"),
        "{err}"
    );
    let (path, problem) = ip_error(err);
    assert_eq!(path, file);
    assert_eq!(
        problem,
        IpAdapterError::NotSafetensors {
            suggestion: "ip-adapter_sd15.safetensors".into()
        }
    );
    let none: [PathBuf; 0] = [];
    let err = IpAdapter::load(&none, &mut unet, &device()).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn unusable_scales_are_refused() {
    let mut unet = SD.unet();
    let scale = |unet: &mut UNet2DConditionModel, json: &str| {
        let scales = IpAdapterScale::parse(json).unwrap();
        match unet.set_ip_adapter_scale(&scales) {
            Err(Error::IpAdapterScale(e)) => e,
            other => panic!("{json}: {other:?}"),
        }
    };
    // No adapter loaded.
    let err = scale(&mut unet, "1.0");
    assert_eq!(
        err,
        ScaleError::AdapterCount {
            configs: 1,
            adapters: 0
        }
    );
    IpAdapter::load(&[SD.file("plain")], &mut unet, &device()).unwrap();
    // One config per adapter.
    let err = scale(&mut unet, "[1.0, 0.5]");
    assert_eq!(
        err,
        ScaleError::AdapterCount {
            configs: 2,
            adapters: 1
        }
    );
    // Up block 1 has two transformers; the middle block one.
    let err = scale(&mut unet, r#"{"up": {"block_1": [0.0, 1.0, 0.5]}}"#);
    assert_eq!(
        err,
        ScaleError::Count {
            block: "up.block_1".into(),
            expected: 2,
            got: 3
        }
    );
    let err = scale(&mut unet, r#"{"mid": [1.0, 0.5]}"#);
    assert_eq!(
        err,
        ScaleError::Count {
            block: "mid".into(),
            expected: 1,
            got: 2
        }
    );
    // Down block 1 is a DownBlock2D (no transformers); there is no down block 5.
    for block in ["down.block_1", "down.block_5"] {
        let index = &block["down.block_".len()..];
        let err = scale(
            &mut unet,
            &format!(r#"{{"down": {{"block_{index}": 1.0}}}}"#),
        );
        assert_eq!(
            err,
            ScaleError::UnknownBlock {
                block: block.into()
            }
        );
    }
    let err = unet
        .set_ip_adapter_scale(&[IpAdapterScale::Uniform(f64::NAN)])
        .unwrap_err();
    assert!(
        matches!(err, Error::IpAdapterScale(ScaleError::NotFinite { .. })),
        "{err}"
    );
    // Still the scale 1 of loading: the output is that of diffusers at 1.
    let exp = expected();
    let embeds = [ImageEmbeds::from_diffusers_pooled(exp.float("sd.plain.embeds"), true).unwrap()];
    let ip = IpAdapter::load(&[SD.file("plain")], &mut unet, &device()).unwrap();
    let tokens = ip.image_tokens(&embeds, 1, true).unwrap();
    exp.check(
        "sd.plain.out_scale1",
        unet.forward_with(SD.input(&exp, tokens)).unwrap(),
        TOL,
    );
}

#[test]
fn unusable_embeds_are_refused() {
    let exp = expected();
    let mut unet = SD.unet();
    let ip = IpAdapter::load(&[SD.file("plus")], &mut unet, &device()).unwrap();
    // No encoder.
    let err = ip.encode_images(&[vec![image("image.png")]]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingInput {
                what: "image_encoder",
                ..
            }
        ),
        "{err}"
    );
    let ip = ip.with_image_encoder(encoder());
    // One image set per adapter.
    let err = ip.encode_images::<Vec<RgbImage>>(&[]).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // Pooled embeddings for a Plus adapter.
    let pooled = ImageEmbeds::from_diffusers_pooled(exp.float("sd.plain.embeds"), true).unwrap();
    let err = ip.image_tokens(&[pooled], 1, true).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
    // Hidden states of another width, a Plus negative left out under guidance.
    let hidden = exp.float::<4>("sd.plus.embeds");
    let narrow = ImageEmbeds::from_diffusers_hidden(hidden.clone().narrow(3, 0, 16), true).unwrap();
    let err = ip.image_tokens(&[narrow], 1, true).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let positive_only =
        ImageEmbeds::from_diffusers_hidden(hidden.clone().narrow(0, 1, 1), false).unwrap();
    let err = ip
        .image_tokens(std::slice::from_ref(&positive_only), 1, true)
        .unwrap_err();
    assert!(matches!(err, Error::MissingInput { .. }), "{err}");
    assert!(ip.image_tokens(&[positive_only], 1, false).is_ok());
    // diffusers' tensor with the wrong batch for the guidance.
    let err = ImageEmbeds::from_diffusers_hidden(hidden, false).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    let err = ip.image_tokens(&[], 1, true).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}
