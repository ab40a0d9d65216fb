//! Draws samples of the shapes world (`mm_train::shapes`) into one PNG grid and prints their
//! captions: the data the tiny model zoo trains on. With `--folder`, also writes them as a
//! catalogue of PNG files with a captions CSV, for `multimodal_search`.
//!
//! ```text
//! cargo run --release --example shapes_world -- --count 16 --out shapes.png
//! cargo run --release --example shapes_world -- --split held-out --count 8 --out held-out.png
//! # a catalogue for multimodal_search: 3 000 PNGs and captions.csv
//! cargo run --release --example shapes_world -- --count 3000 --folder catalogue/
//! cargo run --release --example multimodal_search -- index --images catalogue/ \
//!     --captions catalogue/captions.csv --db shapes.db
//! cargo run --release --example multimodal_search -- query --db shapes.db --text "a red star"
//! ```

use clap::Parser;
use image::RgbImage;
use mm_examples::AnyError;
use mm_train::shapes::{ShapesWorld, Split, WorldConfig};

/// Samples of the shapes world as a PNG grid, with their captions.
#[derive(Parser)]
struct Cli {
    /// Samples to draw.
    #[arg(long, default_value_t = 16)]
    count: u64,
    /// The first sample's index.
    #[arg(long, default_value_t = 0)]
    start: u64,
    /// train, or held-out (colour–shape pairs never seen in training).
    #[arg(long, default_value = "train")]
    split: String,
    /// The world's seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    size: u32,
    /// Output PNG (a grid of the first 1 024 samples at most).
    #[arg(long, default_value = "shapes.png")]
    out: std::path::PathBuf,
    /// Also write every sample (up to 100 000) as FOLDER/NNNNNN.png, with FOLDER/captions.csv
    /// (`file,caption`): a catalogue for `multimodal_search index`.
    #[arg(long)]
    folder: Option<std::path::PathBuf>,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let split = match cli.split.as_str() {
        "train" => Split::Train,
        "held-out" | "heldout" => Split::HeldOut,
        other => return Err(format!("unknown split '{other}' (train or held-out)").into()),
    };
    let world = ShapesWorld::new(WorldConfig {
        seed: cli.seed,
        image_size: cli.size,
        ..WorldConfig::default()
    })?;
    let count = cli.count.clamp(1, 1024);
    let columns = (count as f64).sqrt().ceil() as u32;
    let rows = (count as u32).div_ceil(columns);
    let mut grid = RgbImage::new(columns * cli.size, rows * cli.size);
    for i in 0..count {
        let sample = world.sample(split, cli.start + i);
        println!("{:>4}  {}", cli.start + i, sample.caption);
        let (x, y) = (
            (i as u32 % columns) * cli.size,
            (i as u32 / columns) * cli.size,
        );
        image::imageops::replace(&mut grid, &sample.image, x.into(), y.into());
    }
    if let Some(folder) = &cli.folder {
        write_folder(
            &world,
            split,
            cli.start,
            cli.count.clamp(1, 100_000),
            folder,
        )?;
    }
    grid.save(&cli.out)?;
    eprintln!("wrote {} ({columns} × {rows} samples)", cli.out.display());
    Ok(())
}

/// Samples `start..start + count` as PNG files in `folder`, with `captions.csv`.
fn write_folder(
    world: &ShapesWorld,
    split: Split,
    start: u64,
    count: u64,
    folder: &std::path::Path,
) -> Result<(), AnyError> {
    std::fs::create_dir_all(folder)?;
    let mut csv = String::from("file,caption\n");
    for index in start..start + count {
        let sample = world.sample(split, index);
        let file = format!("{index:06}.png");
        sample.image.save(folder.join(&file))?;
        csv.push_str(&format!(
            "{file},\"{}\"\n",
            sample.caption.replace('"', "\"\"")
        ));
    }
    let captions = folder.join("captions.csv");
    std::fs::write(&captions, csv)?;
    eprintln!(
        "wrote {count} samples to {} and their captions to {}",
        folder.display(),
        captions.display()
    );
    Ok(())
}
