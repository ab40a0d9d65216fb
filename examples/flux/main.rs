//! FLUX.1 text-to-image (schnell or dev) with a progress bar: the chapter's flow-matching
//! example. Any FLUX.1 diffusers folder works; `text_to_image` runs the same folders.
//!
//! ```text
//! # The chapter's call: FLUX.1-schnell, 4 steps, no guidance, 256 T5 tokens, one model in
//! # memory at a time (diffusers' enable_model_cpu_offload), bf16 weights:
//! cargo run --release --example flux -- --model black-forest-labs/FLUX.1-schnell \
//!     --prompt "A cat holding a sign that says hello world" \
//!     --steps 4 --guidance 0 --max-sequence-length 256 \
//!     --dtype bf16 --memory sequential --out flux-schnell.png
//! # FLUX.1-dev: 28 steps (the default), distilled guidance 3.5 (the default):
//! cargo run --release --example flux -- --model black-forest-labs/FLUX.1-dev \
//!     --prompt "a tiny astronaut hatching from an egg on the moon" \
//!     --dtype bf16 --memory sequential --out flux-dev.png
//! # Quantized, as CPU users run FLUX.1 (city96's GGUF files: BFL names, Q8_0 blocks kept in
//! # memory; the folder gives the configs, CLIP, the VAE and the tokenizers):
//! cargo run --release --example flux -- --model black-forest-labs/FLUX.1-schnell \
//!     --transformer-file flux1-schnell-Q8_0.gguf --t5-file t5-v1_1-xxl-encoder-Q8_0.gguf \
//!     --prompt "A cat holding a sign that says hello world" \
//!     --steps 4 --guidance 0 --max-sequence-length 256 --memory sequential
//! # or quantize the folder's safetensors to Q8_0 (or q4_k) as they load:
//! cargo run --release --example flux -- --model black-forest-labs/FLUX.1-schnell \
//!     --quantize q8_0 --prompt "a red fox in the snow" --steps 4 --guidance 0 \
//!     --memory sequential
//! # the tiny random test pipeline (noise-like images, runs in a second):
//! cargo run --release --example flux -- --model tests/fixtures/flux-tiny \
//!     --prompt "a red cat" --steps 4 --width 32 --height 32 --out /tmp/tiny-flux.png
//! ```

use clap::Parser;
use mm_diffusion::pipelines::PipelineDir;
use mm_examples::{AnyError, DiffusionArgs, SizeArgs, run_diffusion};

/// Generates images from a prompt with a FLUX.1 pipeline.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    common: DiffusionArgs,
    #[command(flatten)]
    size: SizeArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let dir = PipelineDir::resolve(&cli.common.model)?;
    if dir.component_class("transformer").is_none()
        || dir.component_class("text_encoder_3").is_some()
    {
        return Err(format!(
            "{} is not a FLUX.1 folder ({}): use text_to_image for other pipelines",
            cli.common.model,
            dir.class_name().unwrap_or("no _class_name")
        )
        .into());
    }
    let opts = cli.size.apply(cli.common.options());
    run_diffusion(
        &cli.common,
        opts,
        Box::new(|pipe, opts, hooks| pipe.text_to_image(opts, hooks)),
    )
}
