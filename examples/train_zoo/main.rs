//! Trains the tiny model zoo from scratch on the shapes world and writes it as a transformers
//! CLIP folder (`<out>/clip`) and a diffusers Stable Diffusion pipeline folder (`<out>/sd`):
//! the models every example runs on when no `--model` is given.
//!
//! ```text
//! cargo run --release --example train_zoo                      # everything, into zoo/
//! cargo run --release --example train_zoo -- --only unet       # retrain the UNet on zoo/'s CLIP and VAE
//! ```
//!
//! Deterministic for a seed; resumable (`--checkpoints DIR` keeps each part's checkpoint and a
//! rerun continues from it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use mm_core::tokenizer::Tokenizer;
use mm_diffusion::vae::AutoencoderKL;
use mm_examples::AnyError;
use mm_train::data::Batcher;
use mm_train::shapes::{ShapesWorld, WorldConfig};
use mm_train::train::{StepReport, TrainConfig};
use mm_train::zoo;
use mm_vision::Pretrained;
use mm_vision::clip::ClipTextModel;

/// Trains the tiny model zoo (CLIP, autoencoder, UNet) on the shapes world.
#[derive(Parser)]
struct Cli {
    /// Output folder (gets `clip/` and `sd/`).
    #[arg(long, default_value = "zoo")]
    out: PathBuf,
    /// The CLIP tokenizer folder (`vocab.json`, `merges.txt`, `tokenizer.json`);
    /// default `$MM_ASSETS/clip-tokenizer`.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Train only this part: clip, vae or unet (the others are read from `--out`).
    #[arg(long)]
    only: Option<String>,
    /// CLIP steps.
    #[arg(long, default_value_t = 1600)]
    clip_steps: usize,
    /// Autoencoder steps.
    #[arg(long, default_value_t = 1200)]
    vae_steps: usize,
    /// UNet steps.
    #[arg(long, default_value_t = 2400)]
    unet_steps: usize,
    /// Batch sizes of the CLIP, autoencoder and UNet runs.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 8, 8])]
    batch: Vec<usize>,
    /// Peak learning rates of the CLIP, autoencoder and UNet runs.
    #[arg(long, value_delimiter = ',', default_values_t = [1e-3, 2e-3, 1e-3])]
    lr: Vec<f64>,
    /// Keep checkpoints here (every 250 steps) and resume from them.
    #[arg(long)]
    checkpoints: Option<PathBuf>,
    /// Seed of the world and of every random draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run())
}

fn run() -> Result<(), AnyError> {
    let cli = Cli::parse();
    let tokenizer_dir = cli.tokenizer.clone().unwrap_or_else(|| {
        let assets = std::env::var("MM_ASSETS").unwrap_or_else(|_| "../shared/assets".into());
        Path::new(&assets).join("clip-tokenizer")
    });
    let tokenizer = Tokenizer::from_file(tokenizer_dir.join("tokenizer.json"))?;
    let world = ShapesWorld::new(WorldConfig {
        seed: cli.seed,
        ..WorldConfig::default()
    })?;
    let batcher = Batcher::new(world, tokenizer);
    let plain = Device::flex();
    plain.seed(cli.seed);
    let device = plain.clone().autodiff();
    let (clip_dir, sd_dir) = (cli.out.join("clip"), cli.out.join("sd"));
    let wants = |part: &str| cli.only.as_deref().is_none_or(|only| only == part);
    if let Some(only) = &cli.only
        && !["clip", "vae", "unet"].contains(&only.as_str())
    {
        return Err(format!("--only {only}: expected clip, vae or unet").into());
    }
    if cli.batch.len() != 3 || cli.lr.len() != 3 || cli.batch.contains(&0) {
        return Err("--batch and --lr take three values: CLIP, autoencoder, UNet".into());
    }
    let config = |steps: usize, lr: f64, part: &str| {
        let config = TrainConfig::new(steps, lr);
        match &cli.checkpoints {
            Some(dir) => config.with_checkpoints(dir.join(part), 250),
            None => config,
        }
    };

    if wants("clip") {
        let started = Instant::now();
        let trained = zoo::train_clip(
            &batcher,
            &config(cli.clip_steps, cli.lr[0], "clip"),
            cli.batch[0],
            &device,
            bar("clip", cli.clip_steps),
        )?;
        let clip = trained.best();
        zoo::write_clip(&clip_dir, &clip, &tokenizer_dir)?;
        zoo::write_text_encoder(&sd_dir, &clip, &tokenizer_dir)?;
        println!(
            "CLIP: {} steps in {:.0} s → {}",
            trained.steps,
            started.elapsed().as_secs_f64(),
            clip_dir.display()
        );
    }
    if wants("vae") {
        let started = Instant::now();
        let trained = zoo::train_vae(
            &batcher,
            &config(cli.vae_steps, cli.lr[1], "vae"),
            cli.batch[1],
            &device,
            bar("vae", cli.vae_steps),
        )?;
        let vae = trained.best();
        let scale = zoo::latent_scaling_factor(&vae, &batcher, 256, &plain)?;
        zoo::write_vae(&sd_dir, &vae, scale)?;
        println!(
            "VAE: {} steps in {:.0} s, scaling_factor {scale:.5} → {}",
            trained.steps,
            started.elapsed().as_secs_f64(),
            sd_dir.join("vae").display()
        );
    }
    if wants("unet") {
        let started = Instant::now();
        let vae = AutoencoderKL::load(sd_dir.join("vae").to_string_lossy(), &plain)?;
        let text = ClipTextModel::load(sd_dir.join("text_encoder").to_string_lossy(), &plain)?;
        let unet_config = config(cli.unet_steps, cli.lr[2], "unet").with_ema(0.995);
        let trained = zoo::train_unet(
            &batcher,
            &vae,
            &text,
            &unet_config,
            cli.batch[2],
            &device,
            bar("unet", cli.unet_steps),
        )?;
        zoo::write_unet(&sd_dir, &trained.best())?;
        println!(
            "UNet: {} steps in {:.0} s → {}",
            trained.steps,
            started.elapsed().as_secs_f64(),
            sd_dir.join("unet").display()
        );
    }
    Ok(())
}

/// A progress bar for one part, showing the loss and the learning rate.
fn bar(part: &str, steps: usize) -> impl FnMut(StepReport) -> bool {
    let bar = ProgressBar::new(steps as u64).with_style(
        ProgressStyle::with_template("{prefix:>5} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(part.to_string());
    let mut smoothed = None;
    move |report: StepReport| {
        let s = smoothed.map_or(report.loss, |s: f64| 0.98 * s + 0.02 * report.loss);
        smoothed = Some(s);
        bar.set_position(report.step as u64 + 1);
        if bar.is_hidden() && (report.step + 1).is_multiple_of(50) {
            eprintln!(
                "{} step {} loss {s:.5} lr {:.2e}",
                bar.prefix(),
                report.step + 1,
                report.lr
            );
        }
        bar.set_message(format!("loss {s:.4} lr {:.1e}", report.lr));
        if report.step + 1 == report.steps {
            bar.finish();
        }
        true
    }
}
