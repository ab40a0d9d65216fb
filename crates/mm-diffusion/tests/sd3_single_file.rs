//! Stable Diffusion 3 / 3.5 single files (Stability AI's layout) load as diffusers'
//! `from_single_file` reads them: the tiny SD3.5-style transformer of
//! `tests/fixtures/sd3-transformer-tiny/single_file.safetensors` converts to exactly the
//! folder's tensors and output (prefixed or bare), SD3 medium's 491 original names map to
//! exactly the diffusers names and shapes, the tiny pipeline as one file
//! (`sd3-tiny/single_file.safetensors`: transformer + VAE) generates what the folder does,
//! text encoders stored in the file replace the folder's (CLIP-L with diffusers' identity
//! projection), and bad files are typed errors — a float8 T5 among them.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{DType, Tensor};
use common::{Expected, TempFile, device, fixture, max_abs_diff, values};
use mm_core::weights::Weights;
use mm_diffusion::Error;
use mm_diffusion::pipelines::{
    GenerateOptions, Hooks, LoadOptions, MemoryMode, PromptEmbeds, StableDiffusion3,
    TextConditioner,
};
use mm_diffusion::single_file::{
    Component, Family, LdmLayout, Sd3Variant, SingleFile, map_sd3_key, sd3_num_layers, sd3_variant,
};
use mm_diffusion::transformer::{SD3Input, SD3Transformer2DConfig, SD3Transformer2DModel};
use safetensors::SafeTensors;
use safetensors::tensor::{Dtype, TensorView};

const PREFIX: &str = "model.diffusion_model.";

fn transformer_fixture() -> PathBuf {
    fixture("sd3-transformer-tiny")
}

fn sd3_tiny() -> String {
    fixture("sd3-tiny").to_string_lossy().into_owned()
}

/// Asserts that `got` holds exactly the tensors of `want`, with the same values.
fn assert_same_tensors(got: &Weights, want: &Weights, what: &str) {
    let names = |w: &Weights| w.names().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{what}: names");
    for name in want.names() {
        assert_eq!(got.shape(name), want.shape(name), "{what}: {name}");
        assert_eq!(values(got, name), values(want, name), "{what}: {name}");
    }
}

/// One tensor to write: name, dtype, shape, bytes.
type Entry = (String, Dtype, Vec<usize>, Vec<u8>);

/// The tensors of a safetensors file as entries, names mapped by `rename` (`None` drops).
fn entries(path: &Path, rename: impl Fn(&str) -> Option<String>) -> Vec<Entry> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .filter_map(|(name, t)| {
            let new = rename(&name)?;
            Some((new, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        })
        .collect()
}

/// Writes `tensors` to a temporary safetensors file named after `tag`.
fn write_file(tag: &str, tensors: &[Entry]) -> TempFile {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "mm-sd3-single-file-{}-{tag}.safetensors",
        std::process::id()
    ));
    std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
    TempFile(path)
}

/// The SD3 pipeline single file with the `sd3-tiny` folder's text encoders added under
/// `text_encoders.<name>.transformer.` (CLIP's `position_ids` too, as published; T5 in
/// `t5_dtype`, its bytes kept only for F32).
fn with_encoders(tag: &str, t5_dtype: Dtype) -> TempFile {
    let dir = fixture("sd3-tiny");
    let mut all = entries(&dir.join("single_file.safetensors"), |n| Some(n.into()));
    for (sub, key) in [("text_encoder", "clip_l"), ("text_encoder_2", "clip_g")] {
        let prefix = format!("text_encoders.{key}.transformer.");
        all.extend(entries(&dir.join(sub).join("model.safetensors"), |n| {
            Some(format!("{prefix}{n}"))
        }));
        let ids: Vec<u8> = (0..77i64).flat_map(i64::to_le_bytes).collect();
        let name = format!("{prefix}text_model.embeddings.position_ids");
        all.push((name, Dtype::I64, vec![1, 77], ids));
    }
    let t5 = entries(&dir.join("text_encoder_3/model.safetensors"), |n| {
        Some(format!("text_encoders.t5xxl.transformer.{n}"))
    });
    all.extend(t5.into_iter().map(|(n, d, s, b)| match t5_dtype {
        Dtype::F32 => (n, d, s, b),
        // One byte per value: what the values are does not matter, they cannot be read.
        other => (n, other, s, b.chunks_exact(4).map(|c| c[3]).collect()),
    }));
    write_file(tag, &all)
}

fn transformer_input(exp: &Expected) -> SD3Input {
    SD3Input::new(
        exp.float("hidden_states"),
        exp.float("timestep"),
        exp.float("encoder_hidden_states"),
        exp.float("pooled_projections"),
    )
}

/// The tiny transformer from `file` gives the folder's tensors and the folder model's
/// output; returns that output's largest difference.
fn check_transformer_file(file: &Path) -> f32 {
    let dev = device();
    let folder = transformer_fixture().join("sd35");
    let sf = SingleFile::open(file).unwrap();
    assert_eq!(sf.family(), Family::Sd3);
    assert_eq!(sf.sd3_variant(), None);
    let parts = sf.sd3_components(&sf.default_layout()).unwrap();
    assert!(parts.vae.is_none() && parts.text_encoder.is_none());
    assert!(parts.text_encoder_2.is_none() && parts.text_encoder_3.is_none());
    assert!(parts.ignored.is_empty(), "{:?}", parts.ignored);
    let want = Weights::open(folder.join("diffusion_pytorch_model.safetensors")).unwrap();
    assert_same_tensors(&parts.transformer, &want, "transformer");

    let config: SD3Transformer2DConfig =
        mm_core::config::read_json(folder.join("config.json")).unwrap();
    let from_file =
        SD3Transformer2DModel::from_single_file(file, &config, DType::F32, &dev).unwrap();
    let from_folder = SD3Transformer2DModel::load(folder.to_string_lossy(), &dev).unwrap();
    let exp = Expected::open(&folder.join("io.safetensors"));
    let a = from_file.forward(transformer_input(&exp)).unwrap();
    let b = from_folder.forward(transformer_input(&exp)).unwrap();
    exp.check("out", a.clone(), 1e-4);
    let err = max_abs_diff(a, b);
    eprintln!("{}: |file − folder| max {err:e}", file.display());
    assert!(err <= 1e-6, "{err}");
    err
}

#[test]
fn tiny_transformer_single_file_gives_the_folder_model() {
    check_transformer_file(&transformer_fixture().join("single_file.safetensors"));
}

#[test]
fn a_bare_transformer_file_without_the_prefix_loads_the_same() {
    let src = transformer_fixture().join("single_file.safetensors");
    let bare = entries(&src, |n| n.strip_prefix(PREFIX).map(str::to_string));
    assert!(bare.iter().any(|(n, ..)| n == "pos_embed"));
    let file = write_file("bare", &bare);
    check_transformer_file(&file.0);
}

type Entries = Vec<(String, Vec<usize>)>;

fn read_list(path: &Path) -> Entries {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn sd3_medium_single_file_keys_map_to_the_diffusers_names() {
    let full = fixture("full");
    let list = read_list(&full.join("sd3-single-file/tensors.json"));
    assert_eq!(list.len(), 491);
    let num_layers = sd3_num_layers(list.iter().map(|(n, _)| n.as_str()));
    assert_eq!(num_layers, 24);
    let shape = |name: &str| list.iter().find(|(n, _)| n == name).map(|(_, s)| s.clone());
    assert_eq!(sd3_variant(shape), Some(Sd3Variant::Sd3Medium));
    assert_eq!(
        Sd3Variant::Sd3Medium.configs(),
        "stabilityai/stable-diffusion-3-medium-diffusers"
    );
    let mut got: Entries = Vec::new();
    let mut swapped = Vec::new();
    for (name, shape) in &list {
        let m = map_sd3_key(name, num_layers, &LdmLayout::SD3)
            .unwrap_or_else(|| panic!("{name} dropped"));
        assert_eq!(m.component, Component::Transformer, "{name}");
        if m.swap_halves {
            swapped.push(name.strip_prefix(PREFIX).unwrap());
        }
        got.extend(m.names.iter().cloned().zip(m.shapes(shape)));
    }
    got.sort();
    swapped.sort();
    assert_eq!(
        swapped,
        [
            "final_layer.adaLN_modulation.1.bias",
            "final_layer.adaLN_modulation.1.weight",
            "joint_blocks.23.context_block.adaLN_modulation.1.bias",
            "joint_blocks.23.context_block.adaLN_modulation.1.weight",
        ]
    );
    let want = read_list(&full.join("sd3-medium/transformer/tensors.json"));
    assert_eq!(got, want);
    // The model built from the published config expects exactly those (nothing allocated).
    let config: SD3Transformer2DConfig =
        mm_core::config::read_json(full.join("sd3-medium/transformer/config.json")).unwrap();
    let model = SD3Transformer2DModel::new(&config, &device()).unwrap();
    assert_eq!(mm_core::weights::expected_tensors(&model), want);
}

#[test]
fn the_sd35_variants_are_told_by_their_shapes() {
    let variant = |entries: &[(&str, Vec<usize>)]| {
        sd3_variant(|name| {
            (entries.iter())
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
        })
    };
    let bias = "joint_blocks.0.context_block.adaLN_modulation.1.bias";
    let medium = [(bias, vec![9216]), ("pos_embed", vec![1, 147456, 1536])];
    assert_eq!(variant(&medium), Some(Sd3Variant::Sd35Medium));
    let (large_bias, large_fc1) = (
        format!("{PREFIX}{bias}"),
        format!("{PREFIX}joint_blocks.37.x_block.mlp.fc1.weight"),
    );
    let large = [
        (large_bias.as_str(), vec![14592]),
        (large_fc1.as_str(), vec![9728, 2432]),
    ];
    assert_eq!(variant(&large), Some(Sd3Variant::Sd35Large));
    assert_eq!(variant(&[(bias, vec![48])]), None);
}

fn options() -> GenerateOptions {
    GenerateOptions::new("a red cat on a mat")
        .negative_prompt("blurry")
        .size(20, 12)
        .steps(2)
        .seed(3)
        .max_sequence_length(16)
}

/// Generates with both pipelines; returns the largest latent difference (the images are
/// asserted equal).
fn same_generation(a: &StableDiffusion3, b: &StableDiffusion3) -> f32 {
    let x = a.text_to_image(&options(), Hooks::new()).unwrap();
    let y = b.text_to_image(&options(), Hooks::new()).unwrap();
    let err = max_abs_diff(x.latents, y.latents);
    assert_eq!(x.images, y.images);
    err
}

#[test]
fn a_single_file_pipeline_generates_what_the_folder_does() {
    let dev = device();
    let file = fixture("sd3-tiny").join("single_file.safetensors");
    let folder = StableDiffusion3::load(&sd3_tiny(), &dev).unwrap();
    for memory in [MemoryMode::Resident, MemoryMode::Sequential] {
        let options = LoadOptions::new().memory(memory);
        let from_file =
            StableDiffusion3::from_single_file(&file, &sd3_tiny(), options, &dev).unwrap();
        assert_eq!(
            from_file.unet.resident().is_some(),
            memory == MemoryMode::Resident
        );
        let err = same_generation(&from_file, &folder);
        eprintln!("{memory:?}: |file − folder| latents max {err:e}");
        assert!(err <= 1e-6, "{memory:?}: {err}");
    }
}

/// The prompt embeddings of [`options`] (with guidance).
fn embeds(pipe: &StableDiffusion3) -> PromptEmbeds {
    let encoder = pipe.prompt_encoder.get().unwrap();
    encoder.encode_prompts(&options(), true).unwrap()
}

#[test]
fn text_encoders_in_the_file_replace_the_folders() {
    let dev = device();
    let file = with_encoders("encoders", Dtype::F32);
    let sf = SingleFile::open(&file.0).unwrap();
    let parts = sf.sd3_components(&LdmLayout::SD3).unwrap();
    let dir = fixture("sd3-tiny");
    let folder = |sub: &str| Weights::open(dir.join(sub).join("model.safetensors")).unwrap();
    assert_same_tensors(
        &parts.text_encoder_2.unwrap(),
        &folder("text_encoder_2"),
        "clip_g",
    );
    assert_same_tensors(
        &parts.text_encoder_3.unwrap(),
        &folder("text_encoder_3"),
        "t5",
    );
    // CLIP-L: the stored projection is set aside for diffusers' identity.
    let clip_l = parts.text_encoder.unwrap();
    let stored = folder("text_encoder");
    let eye: Vec<f32> = (0..256).map(|i| f32::from(i % 17 == 0)).collect();
    assert_eq!(values(&clip_l, "text_projection.weight"), eye);
    assert_ne!(values(&stored, "text_projection.weight"), eye);
    let without = |w: Weights| w.rename(|n| (n != "text_projection.weight").then(|| n.into()));
    assert_same_tensors(&without(clip_l), &without(stored), "clip_l");
    let mut ignored = parts.ignored;
    ignored.sort();
    assert_eq!(
        ignored,
        [
            "text_encoders.clip_g.transformer.text_model.embeddings.position_ids",
            "text_encoders.clip_l.transformer.text_model.embeddings.position_ids",
            "text_encoders.clip_l.transformer.text_projection.weight",
        ]
    );

    // The pipeline uses them: the text states are the folder's, CLIP-L's pooled half is its
    // unprojected output, CLIP-G's half the folder's.
    let from_file =
        StableDiffusion3::from_single_file(&file.0, &sd3_tiny(), LoadOptions::new(), &dev).unwrap();
    let from_folder = StableDiffusion3::load(&sd3_tiny(), &dev).unwrap();
    let (a, b) = (embeds(&from_file), embeds(&from_folder));
    assert_eq!(max_abs_diff(a.cond, b.cond), 0.0);
    let (pa, pb): (Tensor<2>, Tensor<2>) = (a.pooled.unwrap(), b.pooled.unwrap());
    assert_eq!(
        max_abs_diff(pa.clone().narrow(1, 16, 24), pb.clone().narrow(1, 16, 24)),
        0.0
    );
    assert!(max_abs_diff(pa.narrow(1, 0, 16), pb.narrow(1, 0, 16)) > 1e-3);
}

#[test]
fn a_float8_t5_is_a_typed_error_unless_t5_is_left_out() {
    let dev = device();
    let file = with_encoders("fp8", Dtype::F8_E4M3);
    let sf = SingleFile::open(&file.0).unwrap();
    let t5 = sf
        .sd3_components(&LdmLayout::SD3)
        .unwrap()
        .text_encoder_3
        .unwrap();
    assert_eq!(t5.unreadable_dtype("shared.weight"), Some("F8_E4M3"));
    assert_eq!(t5.stored_dtype("shared.weight"), None);
    let check = |err: &mm_core::Error| match err {
        mm_core::Error::UnsupportedDtype { tensor, dtype, .. } => {
            assert!(
                tensor.starts_with("text_encoders.t5xxl.transformer."),
                "{err}"
            );
            assert_eq!(dtype, "F8_E4M3");
        }
        other => panic!("{other}"),
    };
    check(&t5.check_readable().unwrap_err());
    check(&t5.tensor::<2>("shared.weight", &dev).unwrap_err());
    for memory in [MemoryMode::Resident, MemoryMode::Sequential] {
        let options = LoadOptions::new().memory(memory);
        let err = StableDiffusion3::from_single_file(&file.0, &sd3_tiny(), options, &dev)
            .map(drop)
            .unwrap_err();
        match &err {
            Error::Core(core) => check(core),
            other => panic!("{memory:?}: {other}"),
        }
        eprintln!("{memory:?}: {err}");
    }
    // Without T5 the rest of the file loads: the CLIP states are the folder's, T5's zeros.
    let options = LoadOptions::new().without_t5();
    let from_file =
        StableDiffusion3::from_single_file(&file.0, &sd3_tiny(), options.clone(), &dev).unwrap();
    let folder = StableDiffusion3::load_with_options(&sd3_tiny(), options, &dev).unwrap();
    assert!(from_file.prompt_encoder.get().unwrap().t5.is_none());
    let (a, b) = (embeds(&from_file), embeds(&folder));
    assert_eq!(max_abs_diff(a.cond, b.cond), 0.0);
}

#[test]
fn files_of_other_families_are_typed_errors() {
    let dev = device();
    let family = |err: Error| match err {
        Error::SingleFileFamily { found, hint } => (found, hint),
        other => panic!("{other}"),
    };
    // An SD 1.x file given to the SD3 loaders.
    let sd1 = fixture("single-file-tiny").join("sd1/ldm.safetensors");
    let err = StableDiffusion3::from_single_file(&sd1, &sd3_tiny(), LoadOptions::new(), &dev)
        .map(drop)
        .unwrap_err();
    assert_eq!(family(err).0, Family::Sd1);
    let config = SD3Transformer2DConfig::default();
    let err = SD3Transformer2DModel::from_single_file(&sd1, &config, DType::F32, &dev)
        .map(drop)
        .unwrap_err();
    assert_eq!(family(err).0, Family::Sd1);
    // An SD3 file given to the SD / SDXL conversions.
    let sd3 = SingleFile::open(transformer_fixture().join("single_file.safetensors")).unwrap();
    for err in [
        sd3.components(&LdmLayout::SD1).map(drop).unwrap_err(),
        sd3.sdxl_components(&LdmLayout::SDXL).map(drop).unwrap_err(),
    ] {
        let (found, hint) = family(err);
        assert_eq!(found, Family::Sd3);
        assert!(hint.contains("sd3_components"), "{hint}");
    }
    // A diffusers file is no single file at all.
    let diffusers = transformer_fixture().join("sd35/diffusion_pytorch_model.safetensors");
    let err = SingleFile::open(&diffusers).map(drop).unwrap_err();
    assert!(matches!(err, Error::NotSingleFile(_)), "{err}");
    // Configs of another family.
    let err = StableDiffusion3::from_single_file(
        transformer_fixture().join("single_file.safetensors"),
        &fixture("sd-tiny").to_string_lossy(),
        LoadOptions::new(),
        &dev,
    )
    .map(drop)
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::MissingComponent {
                component: "transformer",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_malformed_fused_projection_is_a_typed_error() {
    let src = transformer_fixture().join("single_file.safetensors");
    let name = format!("{PREFIX}joint_blocks.1.context_block.attn.qkv.weight");
    let mut tensors = entries(&src, |n| (n != name).then(|| n.into()));
    tensors.push((name.clone(), Dtype::F32, vec![23, 8], vec![0; 4 * 23 * 8]));
    let file = write_file("bad-qkv", &tensors);
    let sf = SingleFile::open(&file.0).unwrap();
    match sf.sd3_components(&LdmLayout::SD3).map(drop).unwrap_err() {
        Error::SingleFileTensor { name: n, shape, .. } => {
            assert_eq!((n, shape), (name, vec![23, 8]));
        }
        other => panic!("{other}"),
    }
}
