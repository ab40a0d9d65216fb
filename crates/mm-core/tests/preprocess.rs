//! The Rust image processors against the Python PIL-based processors of transformers 5.24
//! (`tools/reference/gen_preprocess.py` wrote the fixtures) on the real photos in
//! `$MM_ASSETS/images`.

use std::path::{Path, PathBuf};

use mm_core::burn::tensor::Device;
use mm_core::image::{load_image, load_image_on_white};
use mm_core::processor::{ImageProcessor, ImageProcessorConfig};
use safetensors::SafeTensors;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("../shared/assets"),
    }
}

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/preprocess")
}

// Decoding is exact (PNG, and JPEG through Pillow's libjpeg-turbo decoder), so every image
// matches to float rounding.
const MEAN_TOL: f64 = 1e-6;
const MAX_TOL: f64 = 1e-4;

/// Compares the Rust output for `images` with the stored Python output; returns (mean, max).
fn check(processor: &str, images: &[&str], on_white: bool) -> Vec<(String, f64, f64)> {
    let bytes = std::fs::read(fixtures().join("expected.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let proc =
        ImageProcessor::from_file(fixtures().join(format!("{processor}_preprocessor_config.json")))
            .unwrap();
    let mut results = Vec::new();
    for file in images {
        let path = assets().join("images").join(file);
        let img = if on_white {
            load_image_on_white(&path).unwrap()
        } else {
            load_image(&path).unwrap()
        };
        let stem = Path::new(file).file_stem().unwrap().to_str().unwrap();
        let key = if on_white {
            format!("{processor}.{stem}_onwhite")
        } else {
            format!("{processor}.{stem}")
        };
        let view = st.tensor(&key).unwrap();
        assert_eq!(view.shape(), &[3, 224, 224], "{key}");
        // Stored as the uint8 pixels the Python processor normalised (see the generator).
        let config = proc.config();
        let plane = view.data().len() / 3;
        let expected: Vec<f32> = view
            .data()
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let c = i / plane;
                let (mean, std) = (
                    f64::from(config.image_mean[c]),
                    f64::from(config.image_std[c]),
                );
                ((f64::from(p) * config.rescale_factor - mean) / std) as f32
            })
            .collect();
        let (got, shape) = proc.preprocess_to_vec(&img).unwrap();
        assert_eq!(shape, [3, 224, 224], "{key}");
        let mut sum = 0.0f64;
        let mut max = 0.0f64;
        for (a, b) in got.iter().zip(&expected) {
            let d = f64::from((a - b).abs());
            sum += d;
            max = max.max(d);
        }
        let mean = sum / got.len() as f64;
        eprintln!("{key}: mean abs err {mean:.2e}, max {max:.2e}");
        assert!(
            mean <= MEAN_TOL,
            "{key}: mean abs error {mean} > {MEAN_TOL}"
        );
        assert!(max <= MAX_TOL, "{key}: max abs error {max} > {MAX_TOL}");
        results.push((key, mean, max));
    }
    results
}

const ALL: [&str; 6] = [
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "camera.png",
    "rocket.jpg",
    "CLIP.png",
];
const SUBSET: [&str; 3] = ["camera.png", "chelsea.png", "rocket.jpg"];

#[test]
fn clip_matches_python_on_all_images() {
    check("clip", &ALL, false);
}

#[test]
fn clip_matches_python_on_rgba_composited_on_white() {
    check("clip", &["CLIP.png"], true);
}

#[test]
fn siglip_matches_python() {
    check("siglip", &SUBSET, false);
}

#[test]
fn vit_matches_python() {
    check("vit", &SUBSET, false);
}

#[test]
fn fixture_configs_match_builtin_defaults() {
    for (name, builtin) in [
        ("clip", ImageProcessorConfig::clip()),
        ("siglip", ImageProcessorConfig::siglip()),
        ("vit", ImageProcessorConfig::vit()),
    ] {
        let cfg = ImageProcessorConfig::from_file(
            fixtures().join(format!("{name}_preprocessor_config.json")),
        )
        .unwrap();
        assert_eq!(cfg, builtin, "{name}");
    }
}

#[test]
fn batch_tensor_matches_single_images() {
    let device = Device::flex();
    let proc = ImageProcessor::new(ImageProcessorConfig::clip()).unwrap();
    let imgs: Vec<_> = ["chelsea.png", "rocket.jpg"]
        .iter()
        .map(|f| load_image(assets().join("images").join(f)).unwrap())
        .collect();
    let t = proc.preprocess(&imgs, &device).unwrap();
    assert_eq!(t.dims(), [2, 3, 224, 224]);
    let data = t.into_data().try_into_vec::<f32>().unwrap();
    let (second, _) = proc.preprocess_to_vec(&imgs[1]).unwrap();
    assert_eq!(&data[3 * 224 * 224..], &second[..]);
}

#[test]
fn sd15_feature_extractor_config_reads_as_clip() {
    let cfg = ImageProcessorConfig::from_file(
        assets().join("sd15-configs/feature_extractor/preprocessor_config.json"),
    )
    .unwrap();
    assert_eq!(cfg, ImageProcessorConfig::clip());
}

#[test]
fn resize_is_bit_identical_to_pillow_for_every_filter() {
    use mm_core::processor::{Resample, resize};
    let bytes = std::fs::read(fixtures().join("resize.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let chelsea = load_image(assets().join("images/chelsea.png")).unwrap();
    // RESIZE_PATCH of gen_preprocess.py: (200, 100) - (220, 115).
    let patch =
        mm_core::image::RgbImage::from_fn(20, 15, |x, y| *chelsea.get_pixel(200 + x, 100 + y));
    let cases = [
        ("down", &chelsea, 47, 31),
        ("up", &patch, 53, 37),
        ("h_only", &patch, 7, 15),
        ("v_only", &patch, 20, 40),
    ];
    let filters = [
        ("nearest", Resample::Nearest),
        ("lanczos", Resample::Lanczos),
        ("bilinear", Resample::Bilinear),
        ("bicubic", Resample::Bicubic),
        ("box", Resample::Box),
        ("hamming", Resample::Hamming),
    ];
    let mut mismatches = Vec::new();
    for (fname, filter) in filters {
        for (cname, src, w, h) in cases {
            let key = format!("resize.{fname}.{cname}");
            let view = st.tensor(&key).unwrap();
            assert_eq!(view.shape(), &[h as usize, w as usize, 3], "{key}");
            let got = resize(src, h, w, filter).unwrap();
            let differing = got
                .as_raw()
                .iter()
                .zip(view.data())
                .filter(|(a, b)| a != b)
                .count();
            if differing > 0 {
                mismatches.push(format!("{key}: {differing} values differ"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}
