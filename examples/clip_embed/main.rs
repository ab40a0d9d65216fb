//! Image and text embeddings with CLIP, written as JSON (for search and retrieval).
//!
//! ```text
//! huggingface-cli download openai/clip-vit-base-patch32
//! cargo run --release --example clip_embed -- \
//!     --image a.jpg --image b.png --text "a cat" --out embeddings.json
//! ```

use std::path::PathBuf;

use burn::tensor::Tensor;
use clap::Parser;
use mm_examples::{AnyError, device};
use mm_vision::pipeline::ClipPipeline;
use serde::Serialize;

/// Writes L2-normalised CLIP embeddings of images and texts as JSON.
#[derive(Parser)]
struct Cli {
    /// Model folder or Hugging Face repo id (resolved in the local HF cache); default: the
    /// zoo CLIP (`zoo/clip`).
    #[arg(long, default_value = mm_examples::ZOO_CLIP)]
    model: String,
    /// Images to embed.
    #[arg(long)]
    image: Vec<PathBuf>,
    /// Texts to embed.
    #[arg(long)]
    text: Vec<String>,
    /// Output file (stdout when absent).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

#[derive(Serialize)]
struct Entry {
    input: String,
    embedding: Vec<f32>,
}

#[derive(Serialize)]
struct Output {
    model: String,
    images: Vec<Entry>,
    texts: Vec<Entry>,
}

fn rows(
    embeddings: Tensor<2>,
    inputs: impl Iterator<Item = String>,
) -> Result<Vec<Entry>, AnyError> {
    let [_, dim] = embeddings.dims();
    let values: Vec<f32> = embeddings
        .into_data()
        .convert::<f32>()
        .try_into_vec()
        .map_err(|e| format!("{e:?}"))?;
    Ok(inputs
        .zip(values.chunks(dim))
        .map(|(input, v)| Entry {
            input,
            embedding: v.to_vec(),
        })
        .collect())
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    if cli.image.is_empty() && cli.text.is_empty() {
        return Err("give at least one --image or --text".into());
    }
    let device = device(&cli.device)?;
    let clip = ClipPipeline::load(&cli.model, &device)?;
    let images = if cli.image.is_empty() {
        Vec::new()
    } else {
        let decoded = cli
            .image
            .iter()
            .map(mm_core::image::load_image_on_white) // CLIP: transparency onto white
            .collect::<Result<Vec<_>, _>>()?;
        rows(
            clip.embed_images(&decoded)?,
            cli.image.iter().map(|p| p.display().to_string()),
        )?
    };
    let texts = if cli.text.is_empty() {
        Vec::new()
    } else {
        let refs: Vec<&str> = cli.text.iter().map(String::as_str).collect();
        rows(clip.embed_texts(&refs)?, cli.text.iter().cloned())?
    };
    let json = serde_json::to_string(&Output {
        model: cli.model,
        images,
        texts,
    })?;
    match cli.out {
        Some(path) => std::fs::write(path, json)?,
        None => println!("{json}"),
    }
    Ok(())
}
