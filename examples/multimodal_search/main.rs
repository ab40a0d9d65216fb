//! The chapter's product search: a folder of product images (and optional captions) embedded
//! with CLIP or SigLIP into an embedded Qdrant (qdrant-edge) folder, queried by text or image
//! against the image and text indexes, fused 0.6 / 0.4.
//!
//! ```text
//! huggingface-cli download openai/clip-vit-base-patch32
//! cargo run --release --example multimodal_search -- index \
//!     --images photos/ --captions captions.csv --db products.db \
//!     --model openai/clip-vit-base-patch32
//! cargo run --release --example multimodal_search -- query --db products.db \
//!     --text "red running shoes" -k 10
//! cargo run --release --example multimodal_search -- query --db products.db --image q.jpg
//! ```
//!
//! Without `--model`, indexing uses the zoo CLIP (`zoo/clip`, trained on the shapes world:
//! it knows colours, shapes and positions, nothing else; `cargo run --release --example
//! shapes_world` draws such a catalogue). Queries use the model the catalogue was built with
//! (recorded in `DB/catalog.json`) unless `--model` says otherwise.

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use mm_examples::{AnyError, device};
use mm_retrieval::embedder::load_image_text;
use mm_retrieval::item::id_from_key;
use mm_retrieval::{
    Catalog, Filter, Flow, Fusion, IndexOptions, IndexProgress, Item, SearchMode, SearchOptions,
};

/// Multimodal product search with CLIP / SigLIP and an embedded Qdrant.
///
/// Without `--model`, `index` uses the zoo CLIP (zoo/clip), which knows the shapes world's
/// colours, shapes and positions and nothing else. For real photos pass `--model
/// openai/clip-vit-base-patch32` (fetched once with `huggingface-cli download
/// openai/clip-vit-base-patch32`), another CLIP or SigLIP repo id, or a local model folder.
#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Embeds every image of a folder (and its caption) into the catalogue at --db.
    Index {
        /// Folder of product images (png, jpeg, webp; searched recursively).
        #[arg(long)]
        images: PathBuf,
        /// CSV of `file,caption` lines (file relative to --images; a header line is allowed).
        #[arg(long)]
        captions: Option<PathBuf>,
        /// Catalogue folder (created if needed; an existing one is added to).
        #[arg(long)]
        db: PathBuf,
        /// CLIP or SigLIP folder or Hugging Face repo id. Default: the zoo CLIP (zoo/clip),
        /// which knows the shapes world only; for photos use openai/clip-vit-base-patch32.
        #[arg(long)]
        model: Option<String>,
        /// Images per model call and per stored batch.
        #[arg(long, default_value_t = 16)]
        batch: usize,
        /// Device: cpu, or wgpu when built with `--features wgpu`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Searches the catalogue at --db with a text or an image.
    Query {
        /// Catalogue folder.
        #[arg(long)]
        db: PathBuf,
        /// Text query.
        #[arg(long, conflicts_with = "image", required_unless_present = "image")]
        text: Option<String>,
        /// Image query.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Results.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        /// Indexes searched: both fused by weights (default), both by reciprocal rank, or one.
        #[arg(long, value_enum, default_value_t = Mode::Fused)]
        mode: Mode,
        /// Weights of the image and text similarities in `fused` mode.
        #[arg(long, value_delimiter = ',', num_args = 2, default_values_t = [0.6, 0.4])]
        weights: Vec<f32>,
        /// Payload filter `key=value`, `key=a|b`, `key=min..max` (repeat: all must hold).
        #[arg(long)]
        filter: Vec<String>,
        /// Model (default: the one recorded in the catalogue).
        #[arg(long)]
        model: Option<String>,
        /// Device: cpu, or wgpu when built with `--features wgpu`.
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    Fused,
    Rrf,
    Image,
    Text,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run(Cli::parse()))
}

/// The zoo CLIP.
fn default_model() -> String {
    absolute(mm_examples::ZOO_CLIP)
}

/// A model argument naming a local folder, made absolute (so that queries from elsewhere find
/// it from `catalog.json`); a repo id as given.
fn absolute(model: &str) -> String {
    match std::fs::canonicalize(model) {
        Ok(p) if p.is_dir() => p.to_string_lossy().into_owned(),
        _ => model.to_string(),
    }
}

fn run(cli: Cli) -> Result<(), AnyError> {
    match cli.command {
        Command::Index {
            images,
            captions,
            db,
            model,
            batch,
            device: name,
        } => {
            let model = model.map_or_else(default_model, |m| absolute(&m));
            let device = device(&name)?;
            let embedder = load_image_text(&model, &device)?;
            let catalog = Catalog::open_or_create(&db, embedder)?;
            if catalog.info().model != model {
                eprintln!(
                    "warning: {} was built with {}, indexing with {model}",
                    db.display(),
                    catalog.info().model
                );
            }
            let captions = match &captions {
                Some(path) => read_captions(path)?,
                None => Default::default(),
            };
            let items = folder_items(&images, &captions)?;
            if items.is_empty() {
                return Err(format!("no png / jpeg / webp files in {}", images.display()).into());
            }
            let bar = ProgressBar::new(items.len() as u64).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} images, {msg} [{elapsed} < {eta}, {per_sec}]",
                )
                .map_err(|e| e.to_string())?,
            );
            let mut progress = |p: &IndexProgress| {
                bar.set_position(p.done as u64);
                bar.set_message(format!("{} skipped", p.skipped));
                Flow::Continue
            };
            let options = IndexOptions {
                batch_size: batch,
                ..Default::default()
            };
            let report = catalog.index(&items, &options, Some(&mut progress))?;
            bar.finish();
            for s in &report.skipped {
                let path = s.path.as_deref().unwrap_or(Path::new("?"));
                eprintln!("skipped {}: {}", path.display(), s.error);
            }
            println!(
                "indexed {} images into {} ({} skipped; {} items in the catalogue)",
                report.indexed,
                db.display(),
                report.skipped.len(),
                catalog.len()?
            );
        }
        Command::Query {
            db,
            text,
            image,
            k,
            mode,
            weights,
            filter,
            model,
            device: name,
        } => {
            let info = mm_retrieval::catalog::read_info(&db)?;
            let model = model.map_or(info.model, |m| absolute(&m));
            let device = device(&name)?;
            let catalog = Catalog::open(&db, load_image_text(&model, &device)?)?;
            let mode = match mode {
                Mode::Fused => SearchMode::Fused(Fusion::weighted(weights[0], weights[1])),
                Mode::Rrf => SearchMode::Fused(Fusion::rrf()),
                Mode::Image => SearchMode::Image,
                Mode::Text => SearchMode::Text,
            };
            let mut options = SearchOptions::new(k).mode(mode);
            if !filter.is_empty() {
                let filters = filter
                    .iter()
                    .map(|f| Filter::parse(f))
                    .collect::<Result<Vec<_>, _>>()?;
                options = options.filter(Filter::all(filters));
            }
            let hits = match (&text, &image) {
                (Some(text), _) => catalog.search_text(text, &options)?,
                (None, Some(image)) => catalog.search_image_file(image, &options)?,
                (None, None) => return Err("give --text or --image".into()),
            };
            let show = |s: Option<f32>| s.map_or("    -".to_string(), |s| format!("{s:.3}"));
            println!("rank  score  image   text  item");
            for (rank, hit) in hits.iter().enumerate() {
                let what = hit
                    .item
                    .image_path()
                    .map(|p| p.display().to_string())
                    .or_else(|| hit.item.text.clone())
                    .unwrap_or_else(|| hit.id.to_string());
                let caption = match (&hit.item.text, hit.item.image_path()) {
                    (Some(t), Some(_)) => format!("  \"{t}\""),
                    _ => String::new(),
                };
                println!(
                    "{:>4}  {:.3}  {}  {}  {what}{caption}",
                    rank + 1,
                    hit.score,
                    show(hit.image_score),
                    show(hit.text_score)
                );
            }
        }
    }
    Ok(())
}

/// Every png / jpeg / webp file under `dir` (sorted), with its caption; the id is the hash of
/// the path relative to `dir`, so indexing a folder again updates its items.
fn folder_items(
    dir: &Path,
    captions: &std::collections::HashMap<String, String>,
) -> Result<Vec<Item>, AnyError> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).map_err(|e| format!("cannot read {}: {e}", d.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                matches!(
                    e.to_ascii_lowercase().as_str(),
                    "png" | "jpg" | "jpeg" | "webp"
                )
            }) {
                files.push(path);
            }
        }
    }
    files.sort();
    let absolute_dir = std::fs::canonicalize(dir)?;
    Ok(files
        .into_iter()
        .map(|path| {
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            let mut item = Item::new(id_from_key(&rel))
                .with_image_path(absolute_dir.join(&rel))
                .with_field("file", rel.clone());
            if let Some(caption) = captions.get(&rel) {
                item = item.with_text(caption.clone());
            }
            item
        })
        .collect())
}

/// Reads `file,caption` lines (fields may be double-quoted, `""` inside quotes is a quote);
/// a first line `file,caption` / `image,caption` / `filename,…` is a header.
fn read_captions(path: &Path) -> Result<std::collections::HashMap<String, String>, AnyError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut out = std::collections::HashMap::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields =
            split_csv(line).ok_or_else(|| format!("{}:{}: bad quoting", path.display(), n + 1))?;
        let [file, caption] = &fields[..] else {
            return Err(format!(
                "{}:{}: expected 2 fields (file,caption), got {}",
                path.display(),
                n + 1,
                fields.len()
            )
            .into());
        };
        if n == 0
            && matches!(
                file.to_ascii_lowercase().as_str(),
                "file" | "image" | "filename" | "path"
            )
        {
            continue;
        }
        out.insert(file.trim().to_string(), caption.trim().to_string());
    }
    Ok(out)
}

fn split_csv(line: &str) -> Option<Vec<String>> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if field.trim().is_empty() => {
                field.clear();
                quoted = true;
            }
            (false, ',') => fields.push(std::mem::take(&mut field)),
            (_, c) => field.push(c),
        }
    }
    if quoted {
        return None;
    }
    fields.push(field);
    Some(fields)
}
