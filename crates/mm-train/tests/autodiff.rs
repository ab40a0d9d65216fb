//! Every model trains on burn's autodiff device: the CPU kernels step aside for burn's
//! differentiable operations, the forward values equal the kernel path's, and the gradients
//! equal finite differences.

use burn::module::Module;
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use mm_core::config::read_json;
use mm_diffusion::unet::UNet2DConditionModel;
use mm_diffusion::vae::AutoencoderKL;
use mm_vision::clip::ClipModel;

fn fixture(path: &str) -> String {
    format!("{}/../../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn max_diff<const D: usize>(a: Tensor<D>, b: Tensor<D>) -> f32 {
    let a = a.into_data().try_to_vec::<f32>().unwrap();
    let b = b.into_data().try_to_vec::<f32>().unwrap();
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn clip_trains() {
    let device = Device::flex().autodiff();
    let config = read_json::<mm_vision::clip::ClipConfig>(std::path::Path::new(&fixture(
        "clip-tiny-gelu/config.json",
    )))
    .unwrap();
    let model = ClipModel::new(&config, &device).unwrap();
    let ids = Tensor::<2, Int>::from_data(
        TensorData::new(vec![96i64, 5, 6, 97, 96, 2, 3, 97], [2, 4]),
        &device,
    );
    let size = config.vision_config.image_size;
    let pixels = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let out = model.forward(ids.clone(), None, pixels.clone()).unwrap();
    let loss = out.logits_per_text.clone().powf_scalar(2.0).mean();
    let grads = loss.backward();
    // Every parameter gets a gradient, down to the first layers of both towers.
    let nonzero =
        |g: Option<Tensor<2>>| g.is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0);
    assert!(
        nonzero(model.text_projection.weight.val().grad(&grads)),
        "text_projection"
    );
    assert!(
        nonzero(
            model
                .text_model
                .embeddings
                .token_embedding
                .weight
                .val()
                .grad(&grads)
        ),
        "token embedding"
    );
    assert!(
        nonzero(
            model
                .vision_model
                .embeddings
                .position_embedding
                .weight
                .val()
                .grad(&grads)
        ),
        "position embedding"
    );
    let patch = model
        .vision_model
        .embeddings
        .patch_embedding
        .weight
        .val()
        .grad(&grads);
    assert!(
        patch.is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0),
        "patch embedding"
    );
    let plain = model.valid();
    let ref_out = plain.forward(ids.inner(), None, pixels.inner()).unwrap();
    let diff = max_diff(out.logits_per_text.inner(), ref_out.logits_per_text);
    eprintln!("clip autodiff vs kernel: {diff:e}");
    assert!(diff < 1e-4);
}

#[test]
fn vae_and_unet_train() {
    let device = Device::flex().autodiff();
    let config = read_json::<mm_diffusion::vae::AutoencoderKLConfig>(std::path::Path::new(
        &fixture("vae-kl-tiny/config.json"),
    ))
    .unwrap();
    let vae = AutoencoderKL::new(&config, &device).unwrap();
    let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let post = vae.encode(x.clone()).unwrap();
    let rec = vae.decode(post.mean.clone()).unwrap();
    let loss = (rec.clone() - x.clone()).powf_scalar(2.0).mean();
    let grads = loss.backward();
    assert!(vae.decoder.conv_out.weight.val().grad(&grads).is_some());
    let plain = vae.valid();
    let r2 = plain.decode(plain.encode(x.inner()).unwrap().mean).unwrap();
    let d = max_diff(rec.inner(), r2);
    eprintln!("vae autodiff vs kernel: {d:e}");
    assert!(d < 1e-4);

    let config = read_json::<mm_diffusion::unet::UNet2DConditionConfig>(std::path::Path::new(
        &fixture("unet-sd1-tiny/config.json"),
    ))
    .unwrap();
    let unet = UNet2DConditionModel::new(&config, &device).unwrap();
    let s = Tensor::<4>::random([2, 4, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    let t = Tensor::<1>::from_floats([10.0, 500.0], &device);
    let c = Tensor::<3>::random([2, 5, 16], Distribution::Normal(0.0, 1.0), &device);
    let eps = unet.forward(s.clone(), t.clone(), c.clone()).unwrap();
    let grads = eps.clone().powf_scalar(2.0).mean().backward();
    assert!(unet.conv_in.weight.val().grad(&grads).is_some());
    let plain = unet.valid();
    let e2 = plain.forward(s.inner(), t.inner(), c.inner()).unwrap();
    let d = max_diff(eps.inner(), e2);
    eprintln!("unet autodiff vs kernel: {d:e}");
    assert!(d < 1e-4);
}

/// `f` on the autodiff device equals `f` on the kernel path, and its input gradient equals
/// central finite differences of the kernel path at a few coordinates.
fn check<const D: usize, const E: usize>(
    name: &str,
    x: Tensor<D>,
    f: impl Fn(Tensor<D>) -> Tensor<E>,
) {
    let plain = Device::flex();
    let x = x.inner();
    let y = f(x.clone());
    let weights = Tensor::<E>::random(y.shape(), Distribution::Normal(0.0, 1.0), &plain);
    let loss =
        |x: Tensor<D>| -> f64 { f64::from((f(x) * weights.clone()).sum().into_scalar::<f32>()) };

    let xa = x.clone().autodiff().require_grad();
    let ya = f(xa.clone());
    let value_diff = max_diff(
        ya.clone().inner().flatten::<1>(0, E - 1),
        y.flatten::<1>(0, E - 1),
    );
    let grads = (ya * weights.clone().autodiff()).sum().backward();
    let grad = xa
        .grad(&grads)
        .expect("a gradient")
        .flatten::<1>(0, D - 1)
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();

    let n = x.shape().num_elements();
    let flat = x.clone().flatten::<1>(0, D - 1);
    let shape = x.shape();
    let h = 1e-2f32;
    let mut worst: f64 = 0.0;
    for k in 0..5 {
        let i = (k * 7919 + 13) % n;
        let bump = |s: f32| {
            let mut v = flat.clone().into_data().try_to_vec::<f32>().unwrap();
            v[i] += s;
            Tensor::<1>::from_data(TensorData::new(v, [n]), &plain).reshape(shape.clone())
        };
        let numeric = (loss(bump(h)) - loss(bump(-h))) / (2.0 * f64::from(h));
        let err = (numeric - f64::from(grad[i])).abs() / (1.0 + numeric.abs());
        worst = worst.max(err);
    }
    eprintln!(
        "{name}: autodiff vs kernel {value_diff:e}, gradient vs finite differences {worst:.2e}"
    );
    assert!(value_diff < 1e-4, "{name}: values differ by {value_diff}");
    assert!(worst < 2e-2, "{name}: gradient off by {worst}");
}

#[test]
fn every_kernel_path_has_burns_gradients() {
    use burn::nn::conv::Conv2dConfig;
    use burn::nn::{GroupNormConfig, LinearConfig, PaddingConfig2d};
    use mm_core::nn::{Activation, geglu, group_norm, layer_norm, scaled_dot_product_attention};
    use mm_core::precision::{conv2d, linear};

    let d = Device::flex();
    let normal = |shape: Vec<usize>| {
        let n: usize = shape.iter().product();
        Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &d)
    };
    let x3 = normal(vec![2 * 5 * 16]).reshape([2, 5, 16]);
    let x4 = normal(vec![2 * 8 * 6 * 6]).reshape([2, 8, 6, 6]);
    for act in [
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::QuickGelu,
        Activation::Silu,
    ] {
        check(&format!("{act:?}"), x3.clone(), |x| act.forward(x));
    }
    check("geglu", x3.clone(), geglu);
    check("layer_norm", x3.clone(), |x| layer_norm(x, 1e-5));
    let norm = GroupNormConfig::new(4, 8).init(&d);
    check("group_norm + silu", x4.clone(), |x| {
        group_norm(
            &norm.clone().to_device(&x.device()),
            x,
            Some(Activation::Silu),
        )
    });
    let layer = LinearConfig::new(16, 12).init(&d);
    check("linear", x3.clone(), |x| {
        linear(&layer.clone().to_device(&x.device()), x)
    });
    let conv = Conv2dConfig::new([8, 4], [3, 3])
        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
        .init(&d);
    check("conv2d 3x3", x4.clone(), |x| {
        conv2d(&conv.clone().to_device(&x.device()), x)
    });
    let q = normal(vec![2 * 2 * 5 * 8]).reshape([2, 2, 5, 8]);
    let kv = normal(vec![2 * 2 * 7 * 8]).reshape([2, 2, 7, 8]);
    check("attention", q.clone(), |q| {
        let kv = kv.clone().to_device(&q.device());
        scaled_dot_product_attention(q, kv.clone(), kv, None, false)
    });
    let half = mm_core::precision::with_storage_dtype(layer.clone(), burn::tensor::DType::BF16);
    check("linear, bf16 weights", x3.clone(), |x| {
        linear(&half.clone().to_device(&x.device()), x)
    });
    let half_conv = mm_core::precision::with_storage_dtype(conv.clone(), burn::tensor::DType::BF16);
    check("conv2d 3x3, bf16 weights", x4.clone(), |x| {
        conv2d(&half_conv.clone().to_device(&x.device()), x)
    });
    let x32 = normal(vec![3 * 32]).reshape([3, 32]);
    let q8 = mm_core::quant::quantize_linears(
        LinearConfig::new(32, 12).init(&d),
        mm_core::gguf::GgmlType::Q8_0,
    )
    .unwrap();
    check("linear, Q8_0 weights", x32, |x| {
        linear(&q8.clone().to_device(&x.device()), x)
    });
    check("causal attention", q.clone(), |q| {
        scaled_dot_product_attention(q.clone(), q.clone(), q, None, true)
    });
}

/// Forward and backward through the other encoders and the LLaVA language decoder: every
/// one trains, and its autodiff forward equals its kernel forward.
#[test]
fn siglip_t5_and_the_llava_decoder_train() {
    use mm_vision::siglip::{SiglipConfig, SiglipModel};
    use mm_vision::t5::{T5Config, T5EncoderModel};
    use mm_vlm::config::LlavaConfig;
    use mm_vlm::kv_cache::KvCache;
    use mm_vlm::llama::LlamaForCausalLM;

    let device = Device::flex().autodiff();
    let ids = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [2, 4]), &device);
    let config: SiglipConfig =
        read_json(std::path::Path::new(&fixture("siglip-tiny/config.json"))).unwrap();
    let siglip = SiglipModel::new(&config, &device).unwrap();
    let size = config.vision_config.image_size;
    let pixels = Tensor::<4>::random([2, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let text = ids(vec![5, 6, 7, 8, 9, 10, 11, 12]);
    let out = siglip.forward(text.clone(), None, pixels.clone()).unwrap();
    let grads = out.loss().backward();
    assert!(siglip.logit_scale.val().grad(&grads).is_some());
    let plain = siglip
        .valid()
        .forward(text.inner(), None, pixels.inner())
        .unwrap();
    let d = max_diff(out.logits_per_text.inner(), plain.logits_per_text);
    eprintln!("siglip autodiff vs kernel: {d:e}");
    assert!(d < 1e-4);

    let config: T5Config =
        read_json(std::path::Path::new(&fixture("t5-tiny/config.json"))).unwrap();
    let t5 = T5EncoderModel::new(&config, &device).unwrap();
    let text = ids(vec![5, 6, 7, 1, 9, 10, 11, 1]);
    let states = t5.forward(text.clone(), None).unwrap();
    let grads = states.clone().powi_scalar(2).mean().backward();
    assert!(t5.shared.weight.val().grad(&grads).is_some());
    let d = max_diff(
        states.inner(),
        t5.valid().forward(text.inner(), None).unwrap(),
    );
    eprintln!("t5 autodiff vs kernel: {d:e}");
    assert!(d < 1e-4);

    let config: LlavaConfig =
        read_json(std::path::Path::new(&fixture("llava-tiny/config.json"))).unwrap();
    let decoder = LlamaForCausalLM::new(&config.text_config, false, &device);
    let text = ids(vec![1, 20, 30, 40, 1, 50, 60, 70]);
    let logits = decoder
        .forward(text.clone(), None, &mut KvCache::new())
        .unwrap();
    let loss = mm_train::objectives::causal_lm_loss(logits.clone(), text.clone()).unwrap();
    let grads = loss.backward();
    assert!(
        decoder
            .model
            .embed_tokens
            .weight
            .val()
            .grad(&grads)
            .is_some()
    );
    let plain = decoder
        .valid()
        .forward(text.inner(), None, &mut KvCache::new())
        .unwrap();
    let d = max_diff(logits.inner(), plain);
    eprintln!("llama decoder autodiff vs kernel: {d:e}");
    assert!(d < 1e-4);
}

/// `out` (computed on the autodiff device) equals the reference `name` of `expected`; the
/// gradients of its mean square.
fn against_reference<const D: usize>(
    what: &str,
    out: Tensor<D>,
    expected: &mm_core::weights::Weights,
    name: &str,
) -> burn::tensor::Gradients {
    let reference = expected.tensor(name, &out.device().inner()).unwrap();
    let d = max_diff(out.clone().inner(), reference);
    eprintln!("{what} on the autodiff device vs the reference: {d:e}");
    assert!(d < 1e-4, "{what}");
    out.powi_scalar(2).mean().backward()
}

fn nonzero<const D: usize>(gradient: Option<Tensor<D>>) -> bool {
    gradient.is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0)
}

/// The rest of the models, loaded from their fixtures onto the autodiff device (fine-tuning
/// starts from a checkpoint): each computes the reference output of transformers / diffusers
/// and its loss reaches the first layer.
#[test]
fn vit_controlnet_sd3_and_flux_train_from_checkpoints() {
    use mm_diffusion::controlnet::ControlNetModel;
    use mm_diffusion::transformer::{
        FluxInput, FluxTransformer2DModel, SD3Input, SD3Transformer2DModel,
    };
    use mm_diffusion::unet::UNetInput;
    use mm_vision::Pretrained;
    use mm_vision::vit::ViTForImageClassification;

    let device = Device::flex().autodiff();
    let open = |path: &str| mm_core::weights::Weights::open(fixture(path)).unwrap();

    let e = open("vit-tiny/expected.safetensors");
    let vit = ViTForImageClassification::load(fixture("vit-tiny"), &device).unwrap();
    let (logits, _) = vit
        .forward(e.tensor("pixel_values", &device).unwrap())
        .unwrap();
    let grads = against_reference("ViT", logits, &e, "logits");
    let patches = &vit.vit.embeddings.patch_embeddings.projection;
    assert!(nonzero(patches.weight.val().grad(&grads)));

    let e = open("controlnet-tiny/expected.safetensors");
    let net = ControlNetModel::load(fixture("controlnet-tiny/sd"), &device).unwrap();
    let input = UNetInput::new(
        e.tensor("res.sd.sample", &device).unwrap(),
        e.tensor("res.sd.timestep", &device).unwrap(),
        e.tensor("res.sd.text", &device).unwrap(),
    );
    let out = net
        .forward(input, e.tensor("res.sd.cond", &device).unwrap(), 0.7, false)
        .unwrap();
    let grads = against_reference("ControlNet", out.mid, &e, "res.sd.mid");
    let control = &net.controlnet_cond_embedding.conv_in;
    assert!(nonzero(control.weight.val().grad(&grads)));

    let e = open("sd3-transformer-tiny/sd3/io.safetensors");
    let sd3 = SD3Transformer2DModel::load(fixture("sd3-transformer-tiny/sd3"), &device).unwrap();
    let input = SD3Input::new(
        e.tensor("hidden_states", &device).unwrap(),
        e.tensor("timestep", &device).unwrap(),
        e.tensor("encoder_hidden_states", &device).unwrap(),
        e.tensor("pooled_projections", &device).unwrap(),
    );
    let grads = against_reference("SD3 transformer", sd3.forward(input).unwrap(), &e, "out");
    assert!(nonzero(sd3.pos_embed.proj.weight.val().grad(&grads)));

    let e = open("flux-transformer-tiny/schnell/io.safetensors");
    let flux =
        FluxTransformer2DModel::load(fixture("flux-transformer-tiny/schnell"), &device).unwrap();
    let out = flux
        .forward(FluxInput {
            hidden_states: e.tensor("hidden_states", &device).unwrap(),
            encoder_hidden_states: e.tensor("encoder_hidden_states", &device).unwrap(),
            pooled_projections: e.tensor("pooled_projections", &device).unwrap(),
            timestep: e.tensor("timestep", &device).unwrap(),
            guidance: None,
            img_ids: e.tensor("img_ids", &device).unwrap(),
            txt_ids: e.tensor("txt_ids", &device).unwrap(),
        })
        .unwrap();
    let grads = against_reference("FLUX transformer", out, &e, "out");
    assert!(nonzero(flux.x_embedder.weight.val().grad(&grads)));
}
