//! Tiled and sliced autoencoding (`VaeOptions`) matches diffusers' `enable_tiling()` /
//! `enable_slicing()` on the tiny random autoencoders, at tile sizes that cut a 96×80 image
//! into several overlapping tiles (`tools/reference/gen_tiling.py`).

mod common;

use common::{Expected, device, fixture, max_abs_diff};
use mm_diffusion::Error;
use mm_diffusion::vae::{
    Autoencoder, AutoencoderKL, AutoencoderKLConfig, AutoencoderTiny, TileMode, Tiling,
};

const TOL: f32 = 1e-4;

fn kl() -> AutoencoderKL {
    AutoencoderKL::load(fixture("vae-kl-tiny").to_str().unwrap(), &device()).unwrap()
}

fn tiny() -> AutoencoderTiny {
    AutoencoderTiny::load(fixture("taesd-tiny").to_str().unwrap(), &device()).unwrap()
}

fn expected() -> Expected {
    Expected::fixture("vae-tiling")
}

/// `vae` with tiling on, `sample_tile`-pixel tiles overlapping by `overlap`.
fn tiled<A: Autoencoder>(mut vae: A, sample_tile: usize, overlap: f64) -> A {
    let tiling = Tiling {
        sample_tile,
        overlap,
    };
    let options = vae.options().tile_mode(TileMode::On).tiling(tiling);
    vae.set_options(options).unwrap();
    vae
}

#[test]
fn kl_tiles_match_diffusers() {
    let exp = expected();
    for (case, tile, overlap, batch) in [("kl.t32", 32, 0.25, 2), ("kl.t64o50", 64, 0.5, 1)] {
        let vae = tiled(kl(), tile, overlap);
        let image = exp.float::<4>("image").narrow(0, 0, batch);
        let posterior = vae.encode(image).unwrap();
        exp.check(&format!("{case}.mean"), posterior.mean, TOL);
        exp.check(&format!("{case}.logvar"), posterior.logvar, TOL);
        let decoded = vae.decode(exp.float(&format!("{case}.mean"))).unwrap();
        exp.check(&format!("{case}.decoded"), decoded, TOL);
    }
}

#[test]
fn tiny_tiles_match_diffusers() {
    let exp = expected();
    for (case, image, tile, overlap) in [
        ("tiny.t64o50", "image", 64, 0.5),
        ("tiny.t128o25", "tiny.large_image", 128, 0.25),
    ] {
        let vae = tiled(tiny(), tile, overlap);
        let latents = vae.encode(exp.float(image)).unwrap();
        exp.check(&format!("{case}.latents"), latents, TOL);
        let decoded = vae.decode(exp.float(&format!("{case}.latents"))).unwrap();
        exp.check(&format!("{case}.decoded"), decoded, TOL);
    }
}

#[test]
fn defaults_are_diffusers() {
    let (kl, tiny) = (kl(), tiny());
    for (options, tile, overlap) in [(kl.options(), 32, 0.25), (tiny.options(), 512, 0.125)] {
        assert_eq!(options.tile_mode, TileMode::Off);
        assert!(!options.slicing);
        assert_eq!(options.tiling.sample_tile, tile);
        assert_eq!(options.tiling.overlap, overlap);
    }
    assert_eq!("auto".parse::<TileMode>().unwrap(), TileMode::Auto);
    let err = "sometimes".parse::<TileMode>().unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
}

#[test]
fn slicing_gives_the_batch_result() {
    let exp = expected();
    let mut vae = tiled(kl(), 32, 0.25);
    vae.set_options(vae.options().slicing(true)).unwrap();
    let posterior = vae.encode(exp.float("image")).unwrap();
    exp.check("kl.t32.mean", posterior.mean, TOL);
    exp.check(
        "kl.t32.decoded",
        vae.decode(exp.float("kl.t32.mean")).unwrap(),
        TOL,
    );

    let mut vae = tiny();
    let image = exp.float::<4>("image");
    let whole = vae.decode(vae.encode(image.clone()).unwrap()).unwrap();
    vae.set_options(vae.options().slicing(true)).unwrap();
    let sliced = vae.decode(vae.encode(image).unwrap()).unwrap();
    assert!(max_abs_diff(whole, sliced) < 1e-5);
}

#[test]
fn tiles_larger_than_the_image_change_nothing() {
    let image = expected().float::<4>("image");
    let (untiled, tiled_kl) = (kl(), tiled(kl(), 96, 0.25));
    let a = untiled.encode(image.clone()).unwrap().mean;
    let b = tiled_kl.encode(image.clone()).unwrap().mean;
    assert_eq!(max_abs_diff(a.clone(), b), 0.0);
    let decoded = untiled.decode(a.clone()).unwrap();
    assert_eq!(max_abs_diff(decoded, tiled_kl.decode(a).unwrap()), 0.0);

    let (untiled, tiled_tiny) = (tiny(), tiled(tiny(), 128, 0.25));
    let a = untiled.encode(image.clone()).unwrap();
    assert_eq!(
        max_abs_diff(a.clone(), tiled_tiny.encode(image).unwrap()),
        0.0
    );
    let decoded = untiled.decode(a.clone()).unwrap();
    assert_eq!(max_abs_diff(decoded, tiled_tiny.decode(a).unwrap()), 0.0);
}

#[test]
fn unusable_tilings_are_rejected() {
    let mut kl = kl();
    for (sample_tile, overlap) in [(30, 0.25), (32, 1.0), (0, 0.25), (32, -0.5), (36, 0.5)] {
        let tiling = Tiling {
            sample_tile,
            overlap,
        };
        let err = kl.set_options(kl.options().tiling(tiling)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    let mut tiny = tiny();
    // Not whole latents, an overlap of one latent (diffusers divides by zero), none at all.
    for (sample_tile, overlap) in [(60, 0.5), (64, 0.125), (64, 0.0), (64, 1.0), (100, 0.25)] {
        let tiling = Tiling {
            sample_tile,
            overlap,
        };
        let err = tiny.set_options(tiny.options().tiling(tiling)).unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    assert_eq!(
        tiny.options().tiling.sample_tile,
        512,
        "a rejected tiling is not kept"
    );
}

#[test]
fn an_unusable_sample_size_still_gives_a_usable_default() {
    // 30-pixel tiles would not be whole latents (diffusers would cut them between latents):
    // the default is rounded down to 16 pixels, and untiled calls are unaffected.
    let config = AutoencoderKLConfig {
        sample_size: 30.into(),
        ..kl().config().clone()
    };
    let mut vae = AutoencoderKL::new(&config, &device()).unwrap();
    assert_eq!(vae.options().tiling.sample_tile, 16);
    let image = expected().float::<4>("image");
    let untiled = vae.encode(image.clone()).unwrap().mean;
    assert_eq!(untiled.dims(), [2, 4, 24, 20]);
    vae.set_options(vae.options().tile_mode(TileMode::On))
        .unwrap();
    assert_eq!(vae.encode(image).unwrap().mean.dims(), [2, 4, 24, 20]);
}
