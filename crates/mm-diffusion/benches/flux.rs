//! FLUX.1-schnell's transformer step on the CPU (`Device::flex()`), random weights from the
//! full-size config (`tests/fixtures/full/flux1-schnell/transformer/config.json`,
//! `MM_BENCH_MODEL=flux`): one `FluxTransformer2DModel` call at 1024×1024, batch 1 — 4096
//! packed image tokens `[1, 4096, 64]` (`img_ids` of 128×128 latents), 256 T5 tokens
//! `[1, 256, 4096]`, pooled `[1, 768]`, timestep 1, no guidance (schnell) — with
//!
//! - `flux_transformer/step_1024_q8_0`: every linear weight whose input width is a whole
//!   number of 32-value blocks quantized to Q8_0 and kept in its blocks
//!   (`mm_core::quant::quantize_linears`, as city96's `flux1-schnell-Q8_0.gguf` loads);
//! - `flux_transformer/step_1024_bf16`: the weight matrices stored in bf16
//!   (`with_storage_dtype`; f32 arithmetic);
//! - `flux_transformer/ops`: where a block's time goes (see [`ops`]).
//!
//! The full model has 11.9 G parameters (23.8 GB in bf16, which does not fit a 24 GiB machine
//! beside anything else), so `MM_BENCH_FLUX_LAYERS=D,S` builds D double-stream and S
//! single-stream blocks (default `19,38`, the full model). Blocks of a kind are identical in
//! cost, so a step is `t(D, S) = t0 + D·t_double + S·t_single`, with `t0` the embedders, the
//! RoPE tables and the output norm; `tools/bench/sd15_compare.py --model flux --slices
//! 0,0:1,0:0,2` times a few slices on both sides and extrapolates the full step from them.
//!
//! The model is built block by block: each block's random f32 weights are materialised,
//! quantized (or cast) and dropped before the next, so the f32 model never exists whole.
//! Timed as the median of `MM_BENCH_RUNS` (3) calls after a warm-up (`MM_BENCH_WARMUP=0`
//! skips it); the weights are materialised by a small call first. The case runs only if its
//! weights fit in `mm_core::limits::memory_limit()` (else it says so and is skipped).

#[allow(dead_code)] // `with_bench_dtype`: this bench chooses its storage itself
mod common;

use std::hint::black_box;
use std::time::Instant;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{DType, Device, Distribution, Tensor};
use common::Family;
use criterion::{Criterion, criterion_group, criterion_main};
use mm_core::gguf::GgmlType;
use mm_core::nn::scaled_dot_product_attention;
use mm_core::precision::{linear, with_storage_dtype};
use mm_core::quant::quantize_linears;
use mm_diffusion::transformer::{
    FluxInput, FluxSingleTransformerBlock, FluxTransformer2DConfig, FluxTransformer2DModel, Rope,
    latent_image_ids,
};

/// How the weights are stored.
#[derive(Debug, Clone, Copy)]
enum Storage {
    /// Q8_0 blocks.
    Q8,
    /// bf16 matrices.
    Bf16,
}

impl Storage {
    /// Bytes per weight value, for the memory check.
    fn bytes_per_value(self) -> f64 {
        match self {
            Storage::Q8 => 34.0 / 32.0,
            Storage::Bf16 => 2.0,
        }
    }

    /// `module` with its weights stored this way.
    fn apply<M: Module>(self, module: M) -> M {
        match self {
            Storage::Q8 => quantize_linears(module, GgmlType::Q8_0).expect("Q8_0 quantization"),
            Storage::Bf16 => with_storage_dtype(module, DType::BF16),
        }
    }
}

/// `MM_BENCH_FLUX_LAYERS=D,S`: the numbers of double- and single-stream blocks (default
/// 19,38).
fn layers() -> (usize, usize) {
    let Ok(value) = std::env::var("MM_BENCH_FLUX_LAYERS") else {
        return (19, 38);
    };
    let parse = |s: &str| s.trim().parse::<usize>().ok();
    match value.split_once(',') {
        Some((d, s)) if parse(d).is_some() && parse(s).is_some() => {
            (parse(d).unwrap(), parse(s).unwrap())
        }
        _ => panic!("MM_BENCH_FLUX_LAYERS={value}: expected D,S (e.g. 2,0)"),
    }
}

/// The schnell config with `double` and `single` blocks.
fn config(double: usize, single: usize) -> FluxTransformer2DConfig {
    let mut config: FluxTransformer2DConfig =
        mm_core::config::read_json(common::full_config("flux1-schnell/transformer/config.json"))
            .expect("FLUX.1-schnell config");
    config.num_layers = double;
    config.num_single_layers = single;
    config
}

/// The model of `config`, random weights stored as `storage`, built one block at a time (the
/// parameters are lazy: each block's f32 values exist only while it is converted).
fn model(
    config: &FluxTransformer2DConfig,
    storage: Storage,
    device: &Device,
) -> FluxTransformer2DModel {
    let start = Instant::now();
    let mut model = FluxTransformer2DModel::new(config, device).expect("FLUX transformer");
    model.transformer_blocks = std::mem::take(&mut model.transformer_blocks)
        .into_iter()
        .map(|block| storage.apply(block))
        .collect();
    model.single_transformer_blocks = std::mem::take(&mut model.single_transformer_blocks)
        .into_iter()
        .map(|block| storage.apply(block))
        .collect();
    let model = storage.apply(model);
    eprintln!(
        "built {} double + {} single blocks ({storage:?}) in {:.1} s",
        config.num_layers,
        config.num_single_layers,
        start.elapsed().as_secs_f64()
    );
    model
}

/// The step's inputs: batch 1, `size`² latents (`(size / 2)²` packed tokens), `text` T5
/// tokens.
fn input(config: &FluxTransformer2DConfig, size: usize, text: usize, device: &Device) -> FluxInput {
    let normal = Distribution::Normal(0.0, 1.0);
    let tokens = (size / 2) * (size / 2);
    let axes = config.axes_dims_rope.len();
    FluxInput {
        hidden_states: Tensor::random([1, tokens, config.in_channels], normal, device),
        encoder_hidden_states: Tensor::random(
            [1, text, config.joint_attention_dim],
            normal,
            device,
        ),
        pooled_projections: Tensor::random([1, config.pooled_projection_dim], normal, device),
        timestep: Tensor::from_floats([1.0], device),
        guidance: None,
        img_ids: latent_image_ids(size, size, device),
        txt_ids: Tensor::zeros([text, axes], device),
    }
}

/// One step of the slice `MM_BENCH_FLUX_LAYERS` with weights stored as `storage`.
fn step(c: &mut Criterion, storage: Storage, name: &str) {
    common::configure();
    if common::family() != Family::Flux {
        return;
    }
    if !common::selected(&format!("flux_transformer/{name}")) {
        return;
    }
    let (double, single) = layers();
    let config = config(double, single);
    let device = Device::flex();
    let params = FluxTransformer2DModel::new(&config, &device)
        .expect("FLUX transformer")
        .num_params();
    let bytes = params as f64 * storage.bytes_per_value();
    let limit = mm_core::limits::memory_limit() as f64;
    if bytes > 0.8 * limit {
        eprintln!(
            "flux_transformer/{name}: skipped, {:.1} GB of weights ({double},{single} blocks) \
             exceed 80 % of the memory limit ({:.1} GB); set MM_BENCH_FLUX_LAYERS",
            bytes / 1e9,
            limit / 1e9
        );
        return;
    }
    eprintln!(
        "flux_transformer/{name}: {double} double + {single} single blocks, {:.2} G parameters, \
         {:.2} GB of weights",
        params as f64 / 1e9,
        bytes / 1e9
    );
    common::run(c, "flux_transformer", name, 3600, || {
        let model = model(&config, storage, &device);
        let start = Instant::now();
        model
            .forward(input(&config, 8, 4, &device))
            .expect("materialising step");
        eprintln!("materialising step {:.1} s", start.elapsed().as_secs_f64());
        // 1024×1024 images: 128×128 latents, 4096 packed tokens; 256 T5 tokens.
        let input = input(&config, 128, 256, &device);
        move || {
            let out = model.forward(input.clone()).expect("step");
            black_box(out.sum().into_scalar::<f32>());
        }
    });
}

/// Where a block's time goes, at the step's shapes (4352 joined tokens): `flux_transformer/ops`
/// times, each as the median of `MM_BENCH_RUNS` calls, one single-stream block with Q8_0
/// weights and its pieces — its largest product (`proj_mlp`, 3072 → 12288) with Q8_0, bf16
/// and f32 weights, and the attention `[1, 24, 4352, 128]` alone — and prints them (the
/// median loop's JSON holds the block's time).
fn ops(c: &mut Criterion) {
    common::configure();
    if common::family() != Family::Flux {
        return;
    }
    common::run(c, "flux_transformer", "ops", 600, || {
        let device = Device::flex();
        let config = config(0, 1);
        let dim = config.inner_dim();
        let tokens = 4096 + 256;
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<3>::random([1, tokens, dim], normal, &device);
        let temb = Tensor::<2>::random([1, dim], normal, &device);
        let ids = latent_image_ids(128, 128, &device)
            .into_data()
            .try_to_vec::<f32>()
            .expect("ids");
        let axes = &config.axes_dims_rope;
        let rope = Rope::new(&ids, axes, 10000.0, &device).concat(&Rope::new(
            &vec![0.0; 256 * axes.len()],
            axes,
            10000.0,
            &device,
        ));
        let block = FluxSingleTransformerBlock::new(
            dim,
            config.num_attention_heads,
            config.attention_head_dim,
            &device,
        );
        let block = Storage::Q8.apply(block);
        let layer = || LinearConfig::new(dim, 4 * dim).init(&device);
        let layers = [
            ("proj_mlp Q8_0", Storage::Q8.apply(layer())),
            ("proj_mlp bf16", Storage::Bf16.apply(layer())),
            ("proj_mlp f32", layer()),
        ];
        let heads = config.num_attention_heads;
        let head = config.attention_head_dim;
        let qkv = || Tensor::<4>::random([1, heads, tokens, head], normal, &device);
        let (q, k, v) = (qkv(), qkv(), qkv());
        let runs = std::env::var("MM_BENCH_RUNS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(3);
        let time = |name: &str, flops: f64, f: &mut dyn FnMut()| {
            f();
            let mut times: Vec<f64> = (0..runs)
                .map(|_| {
                    let start = Instant::now();
                    f();
                    start.elapsed().as_secs_f64()
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let t = times[times.len() / 2];
            eprintln!(
                "  {name:<32} {:8.1} ms  {:6.1} GFLOP/s",
                t * 1e3,
                flops / t / 1e9
            );
        };
        let product = 2.0 * tokens as f64 * dim as f64 * 4.0 * dim as f64;
        for (name, layer) in &layers {
            time(name, product, &mut || {
                let out = linear(layer, x.clone());
                black_box(out.sum().into_scalar::<f32>());
            });
        }
        let attention = 4.0 * (tokens * tokens * heads * head) as f64;
        time("attention [1, 24, 4352, 128]", attention, &mut || {
            let out = scaled_dot_product_attention(q.clone(), k.clone(), v.clone(), None, false);
            black_box(out.sum().into_scalar::<f32>());
        });
        // q, k, v, mlp (3072 → 3 · 3072 + 12288) and proj_out (15360 → 3072), plus attention
        let block_flops = 2.0 * tokens as f64 * dim as f64 * (7.0 + 5.0) * dim as f64 + attention;
        time("single block Q8_0", block_flops, &mut || {
            let out = block.forward(x.clone(), &temb, &rope);
            black_box(out.sum().into_scalar::<f32>());
        });
        move || {
            let out = block.forward(x.clone(), &temb, &rope);
            black_box(out.sum().into_scalar::<f32>());
        }
    });
}

fn q8_0_step(c: &mut Criterion) {
    step(c, Storage::Q8, "step_1024_q8_0");
}

fn bf16_step(c: &mut Criterion) {
    step(c, Storage::Bf16, "step_1024_bf16");
}

criterion_group!(benches, q8_0_step, bf16_step, ops);
criterion_main!(benches);
