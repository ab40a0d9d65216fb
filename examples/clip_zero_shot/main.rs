//! Zero-shot image classification with CLIP.
//!
//! ```text
//! # the zoo CLIP (trained on the shapes world, no download):
//! cargo run --release --example shapes_world -- --count 1 --start 3 --out shape.png
//! cargo run --release --example clip_zero_shot -- --image shape.png --template "{}" \
//!     --labels "a red circle,a blue square,a green star,a yellow triangle"
//! # a real CLIP:
//! huggingface-cli download openai/clip-vit-base-patch32
//! cargo run --release --example clip_zero_shot -- --model openai/clip-vit-base-patch32 \
//!     --image photo.jpg --labels "a cat,a dog,an astronaut"
//! ```

use clap::Parser;
use mm_examples::{ZeroShotArgs, run_zero_shot};
use mm_vision::clip::ClipModel;

/// Ranks candidate labels for an image with CLIP (softmax over the labels).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ZeroShotArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run_zero_shot::<ClipModel>(
        Cli::parse().args,
        mm_examples::ZOO_CLIP,
    ))
}
