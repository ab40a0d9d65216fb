//! Canny edges against OpenCV's `cv2.Canny`. Fixtures: `tools/reference/gen_canny.py` (see
//! `tools/reference/README.md`): the edge maps of the photos of `$MM_ASSETS/images` and of small
//! synthetic images, with a manifest naming the input, channel mode and options of each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Instant;

use mm_core::image::canny::{CannyOptions, canny_gray, canny_rgb, control_image};
use mm_core::image::{GrayImage, RgbImage, load_image};
use mm_core::{Error, limits};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The test that lowers the process-wide memory limit holds this for writing; the others for
/// reading.
static LIMITS: RwLock<()> = RwLock::new(());

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/canny")
}

fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    }
}

fn manifest() -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join("manifest.json")).unwrap()).unwrap()
}

/// The inputs of the manifest, decoded and checked to be the pixels OpenCV was given.
fn inputs(manifest: &Value) -> BTreeMap<String, RgbImage> {
    let mut images = BTreeMap::new();
    for (name, info) in manifest["inputs"].as_object().unwrap() {
        let path = match info["source"].as_str().unwrap() {
            "assets" => assets().join("images").join(name),
            _ => fixtures().join(name),
        };
        let image = load_image(&path).unwrap();
        let digest: String = Sha256::digest(image.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            info["sha256"].as_str().unwrap(),
            "{name}: decoded pixels differ from those given to cv2.Canny"
        );
        images.insert(name.clone(), image);
    }
    images
}

/// The gray image of an RGB image whose three channels are equal.
fn gray_of(image: &RgbImage) -> GrayImage {
    assert!(image.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
    GrayImage::from_fn(image.width(), image.height(), |x, y| {
        [image.get_pixel(x, y).0[0]].into()
    })
}

fn options(case: &Value) -> CannyOptions {
    CannyOptions::default()
        .thresholds(
            case["low"].as_f64().unwrap(),
            case["high"].as_f64().unwrap(),
        )
        .l2_gradient(case["l2_gradient"].as_bool().unwrap())
}

#[test]
fn edges_equal_opencv() {
    let _guard = LIMITS.read().unwrap_or_else(|e| e.into_inner());
    let manifest = manifest();
    let images = inputs(&manifest);
    println!("OpenCV {}", manifest["opencv"].as_str().unwrap());
    println!(
        "{:<34} {:>9} {:>8} {:>8}",
        "case", "identical", "edges", "opencv"
    );
    let mut failures = Vec::new();
    for case in manifest["cases"].as_array().unwrap() {
        let file = case["edges"].as_str().unwrap();
        let image = &images[case["input"].as_str().unwrap()];
        let options = options(case);
        let got = match case["mode"].as_str().unwrap() {
            "gray" => canny_gray(&gray_of(image), &options).unwrap(),
            _ => canny_rgb(image, &options).unwrap(),
        };
        let want = gray_of(&load_image(fixtures().join(file)).unwrap());
        assert_eq!(got.dimensions(), want.dimensions(), "{file}");
        let identical = got.iter().zip(want.iter()).filter(|(a, b)| a == b).count();
        let fraction = identical as f64 / got.len() as f64;
        let count = |edges: &GrayImage| edges.iter().filter(|&&v| v == 255).count();
        assert_eq!(
            count(&want),
            case["edge_pixels"].as_u64().unwrap() as usize,
            "{file}: fixture decoded wrongly"
        );
        println!(
            "{file:<34} {:>8.4}% {:>8} {:>8}",
            100.0 * fraction,
            count(&got),
            count(&want)
        );
        if got != want {
            failures.push(format!("{file}: {:.4}% identical", 100.0 * fraction));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn control_image_repeats_the_edges_and_is_fast() {
    let _guard = LIMITS.read().unwrap_or_else(|e| e.into_inner());
    let photo = load_image(assets().join("images/CLIP.png")).unwrap();
    let options = CannyOptions::default();
    let edges = canny_rgb(&photo, &options).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        let control = control_image(&photo, &options).unwrap();
        best = best.min(start.elapsed().as_secs_f64());
        assert!(
            control
                .pixels()
                .zip(edges.pixels())
                .all(|(c, e)| c.0 == [e.0[0]; 3])
        );
    }
    println!(
        "control_image of {}x{}: {:.1} ms (best of 5)",
        photo.width(),
        photo.height(),
        1e3 * best
    );
}

#[test]
fn work_beyond_the_memory_limit_is_refused() {
    let _guard = LIMITS.write().unwrap_or_else(|e| e.into_inner());
    limits::set_memory_limit(Some(100_000));
    let result = canny_rgb(&RgbImage::new(200, 100), &CannyOptions::default());
    let small = canny_gray(&GrayImage::new(20, 10), &CannyOptions::default());
    limits::set_memory_limit(None);
    let err = result.unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(err.to_string().contains("200x100"), "{err}");
    assert!(small.is_ok());
}
