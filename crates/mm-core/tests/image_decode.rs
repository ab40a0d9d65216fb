//! Image decoding against Pillow 13 (`Image.open(p).convert("RGB")`), and the limits checked
//! before decoding. Fixtures: `tools/reference/gen_jpeg.py` (see `tools/reference/README.md`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use mm_core::image::{RgbImage, decode_image, decode_image_on_white, load_image};
use mm_core::{Error, limits};
use safetensors::SafeTensors;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Tests that change the process-wide limits hold this for writing; decoding tests for reading.
static LIMITS: RwLock<()> = RwLock::new(());

fn read_limits() -> std::sync::RwLockReadGuard<'static, ()> {
    LIMITS.read().unwrap_or_else(|e| e.into_inner())
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/jpeg")
}

fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets"),
    }
}

fn read_json(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(name)).unwrap()).unwrap()
}

/// The fixture JPEGs by name (file stem), sorted.
fn fixture_jpegs() -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// Largest absolute difference and the share of differing bytes.
fn difference(a: &RgbImage, b: &[u8]) -> (u8, f64) {
    let a = a.as_raw();
    let max = a
        .iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0);
    let differing = a.iter().zip(b).filter(|(x, y)| x != y).count();
    (max, differing as f64 / a.len() as f64)
}

#[test]
fn fixture_jpegs_equal_pillow_pixels() {
    let _guard = read_limits();
    let expected_bytes = std::fs::read(fixtures().join("expected.safetensors")).unwrap();
    let expected = SafeTensors::deserialize(&expected_bytes).unwrap();
    let jpegs = fixture_jpegs();
    let mut failures = Vec::new();
    let mut portable = 0;
    for (name, bytes) in &jpegs {
        // Corrupt data can put IDCT inputs out of range, where Pillow's x86 SIMD IDCT saturates
        // and libjpeg-turbo's C IDCT (built here) wraps: there the reference is Pillow with
        // JSIMD_FORCENONE=1. Valid files decode the same both ways (checked by gen_jpeg.py).
        let want = match expected.tensor(&format!("{name}.portable")) {
            Ok(want) => {
                portable += 1;
                assert!(name.starts_with("corrupt_"), "{name}");
                want
            }
            Err(_) => expected.tensor(name).unwrap(),
        };
        let [h, w, 3] = want.shape() else {
            panic!("{name}: shape {:?}", want.shape())
        };
        let got = decode_image(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got.dimensions(), (*w as u32, *h as u32), "{name}");
        let (max, share) = difference(&got, want.data());
        if max != 0 {
            failures.push(format!(
                "{name}: max |diff| {max}, {:.2} % of bytes differ",
                100.0 * share
            ));
        }
        // No alpha in a JPEG: compositing on white changes nothing.
        assert_eq!(decode_image_on_white(bytes).unwrap(), got, "{name}");
    }
    assert!(
        failures.is_empty(),
        "not Pillow's pixels:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        jpegs.len() + portable,
        expected.len(),
        "one reference per fixture"
    );
}

#[test]
fn asset_jpegs_equal_pillow_pixels() {
    let _guard = read_limits();
    let reference = read_json("assets.json");
    let mut checked = 0;
    for entry in std::fs::read_dir(assets().join("images")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let ext = path.extension().map(|e| e.to_ascii_lowercase());
        if !matches!(ext.as_ref().and_then(|e| e.to_str()), Some("jpg" | "jpeg")) {
            continue;
        }
        let want = &reference[&name];
        assert!(
            want.is_object(),
            "{name}: no Pillow reference in assets.json"
        );
        let img = load_image(&path).unwrap();
        assert_eq!(
            (u64::from(img.width()), u64::from(img.height())),
            (
                want["width"].as_u64().unwrap(),
                want["height"].as_u64().unwrap()
            ),
            "{name}"
        );
        for sample in want["samples_x_y_r_g_b"].as_array().unwrap() {
            let v: Vec<u32> = sample
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect();
            let got = img.get_pixel(v[0], v[1]).0;
            assert_eq!(
                got.map(u32::from),
                [v[2], v[3], v[4]],
                "{name} at ({}, {})",
                v[0],
                v[1]
            );
        }
        let digest: String = Sha256::digest(img.as_raw())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            digest,
            want["sha256_rgb"].as_str().unwrap(),
            "{name}: sha256 of RGB"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no JPEG in {}",
        assets().join("images").display()
    );
}

#[test]
fn cut_jpegs_fail_where_pillow_fails() {
    let _guard = read_limits();
    let prefixes = read_json("prefixes_pillow_decodes.json");
    for (name, bytes) in &fixture_jpegs() {
        let decodable: Vec<(usize, usize)> = prefixes[name]
            .as_array()
            .unwrap_or_else(|| panic!("{name}: no prefix reference"))
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap() as usize,
                    r[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        for end in 0..bytes.len() {
            let pillow_ok = decodable.iter().any(|&(a, b)| (a..b).contains(&end));
            match decode_image(&bytes[..end]) {
                Ok(_) if pillow_ok => {}
                Err(Error::Image { path: None, .. }) if !pillow_ok => {}
                other => panic!(
                    "{name} cut to {end} of {} bytes: Pillow {}, here {:?}",
                    bytes.len(),
                    if pillow_ok { "decodes" } else { "fails" },
                    other.map(|i| i.dimensions())
                ),
            }
        }
        // A cut inside the scan data says so.
        if let Err(err) = decode_image(&bytes[..bytes.len() * 3 / 4]) {
            assert!(err.to_string().contains("truncated"), "{name}: {err}");
        }
    }
    // Data after the end-of-image marker is ignored, as by Pillow.
    let bytes = std::fs::read(fixtures().join("pil_420_37x23.jpg")).unwrap();
    let mut padded = bytes.clone();
    padded.extend_from_slice(b"trailing garbage");
    assert_eq!(
        decode_image(&padded).unwrap(),
        decode_image(&bytes).unwrap()
    );
}

#[test]
fn broken_jpegs_are_typed_errors() {
    let _guard = read_limits();
    let bytes = std::fs::read(fixtures().join("pil_420_37x23.jpg")).unwrap();
    // A frame header claiming 2 components (Pillow: "cannot handle 2-layer images").
    let sof = bytes.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut two = bytes.clone();
    two[sof + 9] = 2;
    let err = decode_image(&two).unwrap_err();
    assert!(matches!(err, Error::Image { .. }), "{err}");
    // 12-bit samples (Pillow: "cannot handle 12-bit layers").
    let mut twelve = bytes.clone();
    twelve[sof + 4] = 12;
    let err = decode_image(&twelve).unwrap_err();
    assert!(matches!(err, Error::Image { .. }), "{err}");
    // A Huffman table with too many codes: a libjpeg error, not an abort.
    let dht = bytes.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
    let mut bad = bytes.clone();
    bad[dht + 5..dht + 21].fill(0xFF);
    let err = decode_image(&bad).unwrap_err();
    assert!(err.to_string().contains("cannot decode JPEG"), "{err}");
}

#[test]
fn oversized_images_are_refused_before_decoding() {
    let _guard = read_limits();
    // 49 KB of PNG that decodes to 400 MB of gray, 1.2 GB of RGB.
    let path = fixtures().join("bomb_gray1_20000x20000.png");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("20000x20000") && text.contains("MM_MAX_IMAGE_PIXELS"),
        "{text}"
    );
    assert!(text.contains("bomb_gray1"), "names the file: {text}");
    // A JPEG header claiming 60000x60000.
    let mut jpeg = std::fs::read(fixtures().join("pil_420_37x23.jpg")).unwrap();
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
    let err = decode_image(&jpeg).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { .. }) && err.to_string().contains("MM_MAX_IMAGE_PIXELS"),
        "{err}"
    );
}

#[test]
fn memory_limit_counts_the_decoded_and_rgb_buffers() {
    let _guard = LIMITS.write().unwrap_or_else(|e| e.into_inner());
    let jpeg = std::fs::read(fixtures().join("pil_gray_37x23.jpg")).unwrap();
    // Gray 37x23 = 851 bytes decoded + 2553 bytes of RGB.
    limits::set_memory_limit(Some(3403));
    let err = decode_image(&jpeg).unwrap_err();
    limits::set_memory_limit(Some(3404));
    let ok = decode_image(&jpeg);
    limits::set_memory_limit(None);
    assert!(
        matches!(err, Error::TooLarge { .. }) && err.to_string().contains("MM_MEMORY_LIMIT"),
        "{err}"
    );
    ok.unwrap();

    let png = std::fs::read(assets().join("images/camera.png")).unwrap();
    // Gray 512x512 PNG: 256 KiB decoded + 768 KiB of RGB.
    limits::set_memory_limit(Some(1 << 20));
    let ok = decode_image(&png);
    limits::set_memory_limit(Some((1 << 20) - 1));
    let err = decode_image(&png);
    limits::set_memory_limit(None);
    ok.unwrap();
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");

    // The pixel limit applies to every format.
    limits::set_max_image_pixels(Some(37 * 23 - 1));
    let err = decode_image(&jpeg);
    limits::set_max_image_pixels(None);
    assert!(matches!(err, Err(Error::TooLarge { .. })), "{err:?}");
}
