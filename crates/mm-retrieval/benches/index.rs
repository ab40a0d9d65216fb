//! Indexing throughput with CLIP ViT-B/32 (full size, random weights: the speed of the real
//! model) on the photos of `$MM_ASSETS/images`: images/s of `Catalog::index` (decode,
//! preprocess, image and text embeddings, store), and the latency of a text query (embed +
//! fused search).
//!
//! ```text
//! MM_ASSETS=$PWD/../shared/assets cargo bench -p mm-retrieval --bench index
//! ```
//!
//! `MM_BENCH_IMAGES` (default 96) items, `MM_BENCH_BATCH` (default 16).

use std::path::{Path, PathBuf};
use std::time::Instant;

use mm_core::processor::{ImageProcessor, ImageProcessorConfig};
use mm_core::tokenizer::Tokenizer;
use mm_retrieval::{Catalog, ClipEmbedder, IndexOptions, Item, SearchOptions};
use mm_vision::clip::{ClipConfig, ClipModel};
use mm_vision::pipeline::ImageTextPipeline;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let assets =
        std::env::var_os("MM_ASSETS").map_or_else(|| root.join("../shared/assets"), PathBuf::from);
    let device = mm_core::device::cpu();
    let config: ClipConfig = mm_core::config::read_json(
        root.join("tests/fixtures/full/clip-vit-base-patch32/config.json"),
    )
    .expect("config");
    let model = ClipModel::new(&config, &device).expect("model");
    let tokenizer =
        Tokenizer::from_file(assets.join("clip-tokenizer/tokenizer.json")).expect("tokenizer");
    let processor = ImageProcessor::new(ImageProcessorConfig::clip()).expect("processor");
    let pipeline = ImageTextPipeline::new(model, tokenizer, processor, &device).expect("pipeline");
    let clip =
        ClipEmbedder::new(pipeline, "clip-vit-base-patch32 (random weights)").expect("embedder");

    let photos = [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "camera.png",
        "rocket.jpg",
    ];
    let n = env("MM_BENCH_IMAGES", 96);
    let batch = env("MM_BENCH_BATCH", 16);
    let items: Vec<Item> = (0..n)
        .map(|i| {
            let name = photos[i % photos.len()];
            Item::new(i as u64)
                .with_image_path(assets.join("images").join(name))
                .with_text(format!("product {i}: a photo of {name}"))
        })
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-index");
    let _ = std::fs::remove_dir_all(&dir);
    let catalog = Catalog::create(&dir, &clip).expect("catalog");
    // Warm-up (first calls allocate buffers).
    catalog
        .index(
            &items[..batch.min(n)],
            &IndexOptions {
                batch_size: batch,
                ..Default::default()
            },
            None,
        )
        .expect("warm-up");
    let start = Instant::now();
    let report = catalog
        .index(
            &items,
            &IndexOptions {
                batch_size: batch,
                ..Default::default()
            },
            None,
        )
        .expect("index");
    let secs = start.elapsed().as_secs_f64();
    println!(
        "indexed {} items (image + text, batch {batch}) in {secs:.1} s: {:.1} items/s",
        report.indexed,
        report.indexed as f64 / secs
    );
    let images: Vec<image::RgbImage> = items[..batch.min(n)]
        .iter()
        .map(|i| mm_core::image::load_image_on_white(i.image_path().unwrap()).unwrap())
        .collect();
    let start = Instant::now();
    let reps = 3;
    for _ in 0..reps {
        mm_retrieval::Embedder::embed_images(&clip, &images).expect("embed");
    }
    let per_image = start.elapsed().as_secs_f64() / (reps * images.len()) as f64;
    println!("image embeddings alone: {:.1} images/s", 1.0 / per_image);
    let mut times = Vec::new();
    for q in 0..20 {
        let start = Instant::now();
        catalog
            .search_text(
                &format!("a photo of a cat number {q}"),
                &SearchOptions::new(10),
            )
            .expect("query");
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "text query (embed + fused search), p50 {:.1} ms, max {:.1} ms",
        times[10], times[19]
    );
    drop(catalog);
    let _ = std::fs::remove_dir_all(&dir);
}
