//! Half-precision storage (`load_with_dtype(BF16 | F16)`): the matrices stay in half precision
//! and, on the CPU, the arithmetic is f32 — a UNet loaded in half precision computes exactly
//! what an f32 UNet with the same rounded weights computes, and a whole pipeline stays close to
//! the f32 one.

mod common;

use burn::module::Module;
use burn::tensor::{DType, Tensor};
use common::{Expected, device, fixture, max_abs_diff};
use mm_core::precision::{cast_params, with_storage_dtype};
use mm_core::weights::Weights;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, StableDiffusion};
use mm_diffusion::unet::{UNet2DConditionConfig, UNet2DConditionModel, UNetInput};

/// Bytes of the module's parameters as stored.
fn param_bytes<M: Module>(module: &M) -> usize {
    struct Bytes(usize);
    impl burn::module::ModuleVisitor for Bytes {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
            let t = param.val();
            self.0 += t.shape().num_elements() * t.dtype().size();
        }
    }
    let mut bytes = Bytes(0);
    module.visit(&mut bytes);
    bytes.0
}

#[test]
fn half_storage_unet_computes_in_f32() {
    let name = "unet-sd2-tiny"; // linear projections, upcast attention, class embedding
    let dir = fixture(name);
    let config: UNet2DConditionConfig =
        mm_core::config::read_json(dir.join("config.json")).unwrap();
    let load = |dtype| {
        let weights = Weights::open(&dir).unwrap().with_dtype(dtype);
        UNet2DConditionModel::from_weights(&config, weights, &device()).unwrap()
    };
    let exp = Expected::fixture(name);
    let run = |unet: &UNet2DConditionModel| {
        let input = UNetInput::new(
            exp.float("sample"),
            exp.float("timestep"),
            exp.float("encoder_hidden_states"),
        )
        .with_class_labels(exp.float("class_labels"));
        unet.forward_with(input).unwrap()
    };
    let full = load(DType::F32);
    for dtype in [DType::BF16, DType::F16] {
        let half = load(dtype);
        assert_eq!(half.conv_in.weight.val().dtype(), dtype);
        let (b16, b32) = (param_bytes(&half), param_bytes(&full));
        assert!(b16 * 10 < b32 * 6, "{dtype:?}: {b16} bytes vs {b32}");
        let out = run(&half);
        assert_eq!(out.dtype(), DType::F32);
        let rounded = cast_params(with_storage_dtype(full.clone(), dtype), DType::F32);
        let err = max_abs_diff(out.clone(), run(&rounded));
        eprintln!(
            "{dtype:?}: vs rounded f32 weights {err:.2e}, vs f32 weights {:.2e}",
            max_abs_diff(out, run(&full))
        );
        assert!(err < 1e-5, "{dtype:?}: {err}");
    }
}

#[test]
fn half_storage_pipeline_is_close_to_f32() {
    let path = fixture("sd-tiny");
    let path = path.to_str().unwrap();
    let opts = GenerateOptions::new("a photo of an astronaut")
        .steps(4)
        .seed(7)
        .size(32, 32);
    let full = StableDiffusion::load(path, &device()).unwrap();
    let want = full.text_to_image(&opts, Hooks::new()).unwrap();
    for (dtype, tol) in [(DType::F16, 5e-3), (DType::BF16, 2e-2)] {
        let half = StableDiffusion::load_with_dtype(path, dtype, &device()).unwrap();
        let got = half.text_to_image(&opts, Hooks::new()).unwrap();
        let err = max_abs_diff(got.pixels, want.pixels.clone());
        eprintln!("{dtype:?} storage: images within {err:.2e} of f32");
        assert!(err <= tol, "{dtype:?}: {err}");
    }
}
