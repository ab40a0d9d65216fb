//! Zero-shot image classification with SigLIP.
//!
//! ```text
//! huggingface-cli download google/siglip-base-patch16-224
//! cargo run --release --example siglip_zero_shot -- \
//!     --image photo.jpg --labels "a cat,a dog,an astronaut"
//! ```

use clap::Parser;
use mm_examples::{ZeroShotArgs, run_zero_shot};
use mm_vision::siglip::SiglipModel;

/// Scores candidate labels for an image with SigLIP (an independent probability per label).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ZeroShotArgs,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run_zero_shot::<SiglipModel>(
        Cli::parse().args,
        "google/siglip-base-patch16-224",
    ))
}
