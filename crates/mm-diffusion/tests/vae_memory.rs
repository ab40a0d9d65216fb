//! An untiled encode or decode whose memory estimate exceeds the limit fails with
//! `Error::TooLarge` before allocating, and `TileMode::Auto` tiles exactly then. The memory
//! limit is process-global, so this binary holds a single test.

mod common;

use common::{Expected, device, fixture, max_abs_diff};
use mm_diffusion::Error;
use mm_diffusion::pipelines::{Flow, GenerateOptions, Hooks, StableDiffusion, StepInfo};
use mm_diffusion::vae::{Autoencoder, AutoencoderKL, AutoencoderTiny, TileMode, Tiling};

fn too_large(err: Error) -> String {
    match err {
        Error::Core(e @ mm_core::Error::TooLarge { .. }) => e.to_string(),
        other => panic!("expected TooLarge, got {other}"),
    }
}

fn with_mode<A: Autoencoder>(vae: &mut A, mode: TileMode, tiling: Tiling) {
    vae.set_options(vae.options().tile_mode(mode).tiling(tiling))
        .unwrap();
}

#[test]
fn estimates_are_checked_and_auto_tiles() {
    let exp = Expected::fixture("vae-tiling");
    let image = exp.float::<4>("image"); // [2, 3, 96, 80]
    let mut kl = AutoencoderKL::load(fixture("vae-kl-tiny").to_str().unwrap(), &device()).unwrap();
    let mut tiny =
        AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap();
    let kl_tiles = Tiling {
        sample_tile: 32,
        overlap: 0.25,
    };
    let tiny_tiles = Tiling {
        sample_tile: 64,
        overlap: 0.5,
    };

    // Untiled, the KL decode of 2 × 96 × 80 holds 4 maps of 16 channels at full resolution
    // (3.8 MiB), its encode 4 of 8 (1.9 MiB); with 32-pixel tiles, under 1 MiB.
    mm_core::limits::set_memory_limit(Some(3 << 19));
    let err = too_large(kl.decode(exp.float("kl.t32.mean")).unwrap_err());
    assert!(
        err.contains("AutoencoderKL decode of [2, 4, 24, 20]"),
        "{err}"
    );
    assert!(
        err.contains("MM_MEMORY_LIMIT") && err.contains("TileMode::Auto"),
        "{err}"
    );
    too_large(kl.encode(image.clone()).unwrap_err());
    // Auto tiles exactly as diffusers does.
    with_mode(&mut kl, TileMode::Auto, kl_tiles);
    exp.check("kl.t32.mean", kl.encode(image.clone()).unwrap().mean, 1e-4);
    exp.check(
        "kl.t32.decoded",
        kl.decode(exp.float("kl.t32.mean")).unwrap(),
        1e-4,
    );

    // TAESD's encode: 6 maps of 16 channels, 5.6 MiB untiled, 3.0 MiB in 64-pixel tiles.
    mm_core::limits::set_memory_limit(Some(4 << 20));
    let err = too_large(tiny.encode(image.clone()).unwrap_err());
    assert!(
        err.contains("AutoencoderTiny encode of [2, 3, 96, 80]"),
        "{err}"
    );
    with_mode(&mut tiny, TileMode::Auto, tiny_tiles);
    exp.check(
        "tiny.t64o50.latents",
        tiny.encode(image.clone()).unwrap(),
        1e-4,
    );
    let decoded = tiny.decode(exp.float("tiny.t64o50.latents")).unwrap();
    exp.check("tiny.t64o50.decoded", decoded, 1e-4);

    // A limit even one tile exceeds.
    mm_core::limits::set_memory_limit(Some(100 << 10));
    let err = too_large(kl.encode(image.clone()).unwrap_err());
    assert!(err.contains("in tiles of 32"), "{err}");

    // A pipeline refuses, before its first step, a request whose VAE decode would not fit:
    // sd-tiny at 256 × 256 needs about 5 MB for its UNet and the images but 9 MB to decode.
    mm_core::limits::set_memory_limit(Some(7 << 20));
    let pipe = StableDiffusion::load(fixture("sd-tiny").to_str().unwrap(), &device()).unwrap();
    let mut opts = GenerateOptions::new("a cat").steps(2);
    opts.width = Some(256);
    opts.height = Some(256);
    let mut steps = 0;
    let mut progress = |_: &StepInfo| {
        steps += 1;
        Flow::Continue
    };
    let err = pipe.text_to_image(&opts, Hooks::new().progress(&mut progress));
    let err = too_large(err.unwrap_err());
    assert!(
        err.contains("AutoencoderKL decode of [1, 4, 64, 64]"),
        "{err}"
    );
    assert_eq!(steps, 0, "refused before the first step");

    // With the limit back to the machine's memory, Auto does not tile.
    mm_core::limits::set_memory_limit(None);
    let auto = kl.encode(image.clone()).unwrap().mean;
    with_mode(&mut kl, TileMode::Off, kl_tiles);
    assert_eq!(
        max_abs_diff(auto.clone(), kl.encode(image).unwrap().mean),
        0.0
    );
    assert!(max_abs_diff(auto, exp.float("kl.t32.mean")) > 0.1);
}
