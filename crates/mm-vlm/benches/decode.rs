//! Llama decoding on the CPU (`Device::flex()`): prefill and per-token decode of a
//! reduced-depth model with LLaVA 1.5 7B widths (hidden 4096, MLP 11008, 32 heads, vocab
//! 32064), random weights held in bfloat16.
//!
//! `cargo bench -p mm-vlm --bench decode` (`MM_BENCH_LAYERS`, default 2; `MM_BENCH_PROMPT`,
//! default 128; `MM_BENCH_TOKENS`, default 16; `MM_BENCH_F32=1` keeps float32 weights);
//! compare with `tools/bench/llava_bench.py`.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Int, Tensor};
use mm_core::precision::with_storage_dtype;
use mm_vlm::config::LlavaConfig;
use mm_vlm::kv_cache::KvCache;
use mm_vlm::llama::LlamaForCausalLM;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let device = Device::flex();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/full/llava-1.5-7b-hf/config.json");
    let mut text = LlavaConfig::from_file(path).unwrap().text_config;
    text.num_hidden_layers = env("MM_BENCH_LAYERS", 2);
    let (prompt, tokens) = (env("MM_BENCH_PROMPT", 128), env("MM_BENCH_TOKENS", 16));
    let f32_weights = std::env::var_os("MM_BENCH_F32").is_some();
    let model = LlamaForCausalLM::new(&text, false, &device);
    let model = if f32_weights {
        model
    } else {
        with_storage_dtype(model, DType::BF16)
    };
    let vocab = text.vocab_size as f64;
    println!(
        "llama decode: {} layers, hidden {}, vocab {}, {} weights, prompt {prompt}, {tokens} new tokens",
        text.num_hidden_layers,
        text.hidden_size,
        text.vocab_size,
        if f32_weights { "f32" } else { "bf16" }
    );

    let ids = Tensor::<2, Int>::random([1, prompt], Distribution::Uniform(0.0, vocab), &device);
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for run in 0..3 {
        let mut cache = KvCache::new();
        let start = Instant::now();
        let embeds = model.model.embed(ids.clone()).unwrap();
        let logits = model.last_logits(embeds, None, &mut cache).unwrap();
        let mut next = logits.argmax(1);
        let _ = next.to_data();
        let t_prefill = start.elapsed().as_secs_f64() * 1e3;
        let start = Instant::now();
        for _ in 0..tokens {
            let embeds = model.model.embed(next).unwrap();
            next = model
                .last_logits(embeds, None, &mut cache)
                .unwrap()
                .argmax(1);
            let _ = next.to_data();
        }
        let t_decode = start.elapsed().as_secs_f64() * 1e3 / tokens as f64;
        println!("  run {run}: prefill {t_prefill:.1} ms, decode {t_decode:.1} ms/token");
        if run > 0 {
            prefill.push(t_prefill);
            decode.push(t_decode);
        }
    }
    println!(
        "runs 1-2 (the slower): prefill {:.1} ms ({:.1} tokens/s), decode {:.1} ms/token",
        median(prefill.clone()),
        prompt as f64 / median(prefill) * 1e3,
        median(decode)
    );
}
