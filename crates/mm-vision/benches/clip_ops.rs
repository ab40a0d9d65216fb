//! The pieces of a CLIP ViT-B/32 forward pass timed one by one on `Device::flex()`, to see
//! where `benches/clip.rs`' time goes. Plain timing (no criterion): warm-up, then the median
//! of N runs, in milliseconds. `tools/bench/clip_ops.py` times the same ops in PyTorch.
//!
//! `cargo bench -p mm-vision --bench clip_ops [-- FILTER]`

use std::hint::black_box;
use std::time::Instant;

use burn::nn::LinearConfig;
use burn::nn::conv::Conv2dConfig;
use burn::tensor::{Bool, Device, Distribution, Tensor};
use mm_core::nn::LayerNormConfig;
use mm_core::nn::{Activation, merge_heads, quick_gelu, scaled_dot_product_attention, split_heads};
use mm_vision::encoder::{Encoder, EncoderDims};

/// Warm-up and timed runs per op; `cargo test --benches` (no `--bench` argument) runs every
/// op once as a smoke test instead.
fn runs() -> (usize, usize) {
    if std::env::args().any(|a| a == "--bench") {
        (3, 15)
    } else {
        (0, 1)
    }
}

/// Runs `f` (which must finish its work before returning) and reports the median in ms.
fn time(name: &str, filter: &Option<String>, mut f: impl FnMut() -> f32) {
    if filter.as_ref().is_some_and(|p| !name.contains(p.as_str())) {
        return;
    }
    let (warmup, runs) = runs();
    for _ in 0..warmup {
        black_box(f());
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            black_box(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<40} {:9.3} ms  (min {:.3})",
        times[runs / 2],
        times[0]
    );
}

/// Forces completion by reading one number back.
fn sync<const D: usize>(t: Tensor<D>) -> f32 {
    t.sum().into_scalar::<f32>()
}

struct Tower {
    name: &'static str,
    hidden: usize,
    ff: usize,
    heads: usize,
    seq: usize,
    causal: bool,
}

fn tower_ops(t: &Tower, batch: usize, device: &Device, filter: &Option<String>) {
    let (d, s) = (t.hidden, t.seq);
    let p = |op: &str| format!("{}/{batch}/{op}", t.name);
    let x = Tensor::<3>::random([batch, s, d], Distribution::Normal(0.0, 1.0), device);
    let h = Tensor::<3>::random([batch, s, t.ff], Distribution::Normal(0.0, 1.0), device);

    let lin_dd = LinearConfig::new(d, d).init(device);
    let lin_qkv = LinearConfig::new(d, 3 * d).init(device);
    let fc1 = LinearConfig::new(d, t.ff).init(device);
    let fc2 = LinearConfig::new(t.ff, d).init(device);
    let norm = LayerNormConfig::new(d).init(device);

    time(&p("linear d->d (x4 per layer)"), filter, || {
        sync(lin_dd.forward(x.clone()))
    });
    time(&p("linear d->3d (fused qkv)"), filter, || {
        sync(lin_qkv.forward(x.clone()))
    });
    time(&p("linear fc1 d->4d"), filter, || {
        sync(fc1.forward(x.clone()))
    });
    time(&p("linear fc2 4d->d"), filter, || {
        sync(fc2.forward(h.clone()))
    });
    let x2 = x.clone().reshape([batch * s, d]);
    let w = lin_dd.weight.val();
    time(&p("matmul 2d [b*s,d]x[d,d] no bias"), filter, || {
        sync(x2.clone().matmul(w.clone()))
    });
    // Weight layout: burn's Linear keeps [d_in, d_out] row-major; PyTorch keeps
    // [d_out, d_in] and multiplies by its transpose. Same product, different gemm strides.
    let xs = x.clone().reshape([batch * s, d]);
    let hs = h.clone().reshape([batch * s, t.ff]);
    for (name, input, weight) in [
        ("qkv/out", &xs, lin_dd.weight.val()),
        ("fc1", &xs, fc1.weight.val()),
        ("fc2", &hs, fc2.weight.val()),
    ] {
        let out_in = Tensor::<2>::from_data(weight.clone().transpose().into_data(), device);
        let view = out_in.transpose();
        time(&p(&format!("matmul {name} w[in,out]")), filter, || {
            sync(input.clone().matmul(weight.clone()))
        });
        time(&p(&format!("matmul {name} w[out,in]^T")), filter, || {
            sync(input.clone().matmul(view.clone()))
        });
    }
    time(&p("layernorm"), filter, || sync(norm.forward(x.clone())));
    time(&p("quick_gelu [b,s,4d]"), filter, || {
        sync(quick_gelu(h.clone()))
    });
    time(&p("add [b,s,d]"), filter, || sync(x.clone() + x.clone()));
    time(&p("sigmoid [b,s,4d]"), filter, || {
        sync(burn::tensor::activation::sigmoid(h.clone()))
    });
    time(&p("mul_scalar [b,s,4d]"), filter, || {
        sync(h.clone() * 1.702)
    });
    time(&p("mul [b,s,4d]"), filter, || sync(h.clone() * h.clone()));
    time(&p("gelu (erf) [b,s,4d]"), filter, || {
        sync(burn::tensor::activation::gelu(h.clone()))
    });

    let q = split_heads(x.clone(), t.heads);
    let mask: Option<Tensor<2, Bool>> = None;
    time(&p("sdpa"), filter, || {
        sync(scaled_dot_product_attention(
            q.clone(),
            q.clone(),
            q.clone(),
            mask.clone(),
            t.causal,
        ))
    });
    // Attention spelled out with batched matmuls + softmax (the unfused alternative).
    let scale = 1.0 / ((d / t.heads) as f64).sqrt();
    let causal_mask = Tensor::<2, Bool>::tril_mask([s, s], 0, device).reshape([1, 1, s, s]);
    let unfused = |q: Tensor<4>| {
        let scores = q.clone().matmul(q.clone().swap_dims(2, 3)) * scale;
        let scores = if t.causal {
            scores.mask_fill(
                causal_mask.clone().expand([batch, t.heads, s, s]),
                f32::NEG_INFINITY,
            )
        } else {
            scores
        };
        burn::tensor::activation::softmax(scores, 3).matmul(q)
    };
    let fused = scaled_dot_product_attention(q.clone(), q.clone(), q.clone(), None, t.causal);
    let diff = (unfused(q.clone()) - fused)
        .abs()
        .max()
        .into_scalar::<f32>();
    assert!(diff < 1e-3, "unfused attention differs by {diff}");
    time(&p("attention as matmul+softmax+matmul"), filter, || {
        sync(unfused(q.clone()))
    });
    time(&p("split+merge heads"), filter, || {
        sync(merge_heads(split_heads(x.clone(), t.heads)))
    });
    if t.causal {
        let m = Tensor::<2, burn::tensor::Int>::ones([batch, s], device);
        let m = Some(mm_core::nn::padding_mask(m));
        time(&p("sdpa + padding mask"), filter, || {
            sync(scaled_dot_product_attention(
                q.clone(),
                q.clone(),
                q.clone(),
                m.clone(),
                t.causal,
            ))
        });
    }

    let dims = EncoderDims {
        hidden_size: d,
        intermediate_size: t.ff,
        num_heads: t.heads,
        num_layers: 1,
        layer_norm_eps: 1e-5,
        activation: Activation::QuickGelu,
    };
    let layer = Encoder::new(&dims, device);
    time(&p("encoder layer (x12)"), filter, || {
        sync(layer.forward(x.clone(), None, t.causal).1)
    });
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a name filter.
    let filter = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let device = Device::flex();
    let vision = Tower {
        name: "vision",
        hidden: 768,
        ff: 3072,
        heads: 12,
        seq: 50,
        causal: false,
    };
    let text = Tower {
        name: "text",
        hidden: 512,
        ff: 2048,
        heads: 8,
        seq: 77,
        causal: true,
    };

    for batch in [1, 8] {
        let pixels = Tensor::<4>::random(
            [batch, 3, 224, 224],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let conv = Conv2dConfig::new([3, 768], [32, 32])
            .with_stride([32, 32])
            .with_bias(false)
            .init(&device);
        time(&format!("vision/{batch}/patch conv"), &filter, || {
            sync(conv.forward(pixels.clone()))
        });
        // The same patch embedding as one matmul: stride == kernel, so the "im2col" is a
        // reshape + permute of the pixels.
        let weight = conv.weight.val().reshape([768, 3 * 32 * 32]).transpose();
        let patch_matmul = || {
            pixels
                .clone()
                .reshape([batch, 3, 7, 32, 7, 32])
                .permute([0, 2, 4, 1, 3, 5])
                .reshape([batch * 49, 3 * 32 * 32])
                .matmul(weight.clone())
                .reshape([batch, 49, 768])
        };
        let reference = conv
            .forward(pixels.clone())
            .reshape([batch, 768, 49])
            .swap_dims(1, 2);
        let diff = (patch_matmul() - reference)
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 1e-3, "patch matmul differs from the conv by {diff}");
        time(
            &format!("vision/{batch}/patch as reshape+matmul"),
            &filter,
            || sync(patch_matmul()),
        );
        tower_ops(&vision, batch, &device, &filter);
        tower_ops(&text, batch, &device, &filter);
    }
}
