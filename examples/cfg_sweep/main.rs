//! The chapter's second exercise: classifier-free guidance 1, 5, 10 and 15 over several seeds
//! and prompts → a labelled grid (rows: guidance scales, columns: prompts × seeds) and a plot
//! of prompt adherence against diversity per scale, on the zoo pipeline.
//!
//! Adherence is measured two ways: the fraction of pictures whose colour, shape and position
//! all match the prompt (the exact analyser of `mm_train::analysis` — the shapes world is
//! procedural) and the zoo CLIP's score (cosine similarity of picture and prompt). Diversity
//! is the mean RMS pixel distance between the pictures of one prompt from different seeds.
//! The prompts are held-out colour–shape pairs: combinations the UNet never saw in training.
//!
//! ```text
//! cargo run --release --example cfg_sweep
//! cargo run --release --example cfg_sweep -- --scales 1,3,5,7.5,10,15 --seeds 8 --prompts 12
//! ```

use std::path::PathBuf;

use burn::tensor::Device;
use clap::Parser;
use image::Rgb;
use mm_core::tokenizer::Tokenizer;
use mm_diffusion::pipelines::StableDiffusion;
use mm_examples::{AnyError, ZOO_CLIP, ZOO_SD, draw};
use mm_train::data::Batcher;
use mm_train::eval::{describe, guidance_report, single_object_samples};
use mm_train::shapes::{ShapesWorld, Split, WorldConfig};
use mm_vision::Pretrained;
use mm_vision::clip::ClipModel;

/// Sweeps the classifier-free guidance scale and plots adherence against diversity.
#[derive(Parser)]
struct Cli {
    /// The zoo pipeline folder (or another trained on the shapes world).
    #[arg(long, default_value = ZOO_SD)]
    model: String,
    /// The CLIP that judges the pictures.
    #[arg(long, default_value = ZOO_CLIP)]
    clip: String,
    /// Guidance scales.
    #[arg(long, value_delimiter = ',', default_values_t = [1.0, 5.0, 10.0, 15.0])]
    scales: Vec<f64>,
    /// Seeds per prompt.
    #[arg(long, default_value_t = 4)]
    seeds: u64,
    /// Prompts (one-object captions of held-out colour–shape pairs).
    #[arg(long, default_value_t = 8)]
    prompts: usize,
    /// Sampling steps (the pipeline's DPM++ 2M).
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// Output grid (PNG).
    #[arg(long, default_value = "cfg_sweep.png")]
    out: PathBuf,
    /// Output plot (PNG).
    #[arg(long, default_value = "cfg_sweep_plot.png")]
    plot: PathBuf,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<(), AnyError> {
    if cli.scales.is_empty() || cli.seeds == 0 || cli.prompts == 0 || cli.steps == 0 {
        return Err("give at least one scale, seed, prompt and step".into());
    }
    let device = Device::flex();
    let pipeline = StableDiffusion::load(&cli.model, &device)?;
    let clip = ClipModel::load(&cli.clip, &device)?;
    let tokenizer = Tokenizer::from_file(PathBuf::from(&cli.clip).join("tokenizer.json"))?;
    let batcher = Batcher::new(ShapesWorld::new(WorldConfig::default())?, tokenizer);
    let samples = single_object_samples(&batcher, Split::HeldOut, cli.prompts);
    let seeds: Vec<u64> = (0..cli.seeds).collect();
    println!(
        "| guidance | all right (analyser) | colour | shape | position | CLIP score | CLIP colour / shape / position | diversity |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|---:|");
    let mut reports = Vec::new();
    for &scale in &cli.scales {
        let r = guidance_report(
            &pipeline, &clip, &batcher, &samples, &seeds, scale, cli.steps,
        )?;
        println!(
            "| {scale} | {:.3} | {:.3} | {:.3} | {:.3} | {:.4} | {:.2} / {:.2} / {:.2} | {:.4} |",
            r.all_right,
            r.analyser.color,
            r.analyser.shape,
            r.analyser.position,
            r.clip_score,
            r.clip.color,
            r.clip.shape,
            r.clip.position,
            r.diversity
        );
        reports.push(r);
    }
    // Grid: one row per scale, the first two prompts' pictures of every seed.
    let shown = samples.len().min(2);
    let rows: Vec<Vec<_>> = reports
        .iter()
        .map(|r| r.images[..shown].iter().flatten().cloned().collect())
        .collect();
    let columns: Vec<String> = samples[..shown]
        .iter()
        .flat_map(|s| {
            let o = s.objects[0];
            let prompt = describe(o.color, o.shape, o.position);
            seeds.iter().map(move |seed| {
                if *seed == 0 {
                    prompt.clone()
                } else {
                    format!("seed {seed}")
                }
            })
        })
        .collect();
    let labels: Vec<String> = cli.scales.iter().map(|s| format!("cfg {s}")).collect();
    let zoom = (128 / rows[0][0].width()).max(1);
    draw::labelled_grid(&rows, &columns, &labels, zoom).save(&cli.out)?;
    // Plot: adherence against diversity, one point per scale.
    let max_div = reports.iter().map(|r| r.diversity).fold(0.0, f64::max) * 1.2 + 1e-3;
    let series = vec![
        draw::Series {
            name: "all attributes right (analyser)".into(),
            color: Rgb([200, 40, 40]),
            points: reports.iter().map(|r| (r.diversity, r.all_right)).collect(),
        },
        draw::Series {
            name: "CLIP score".into(),
            color: Rgb([40, 80, 200]),
            points: reports
                .iter()
                .map(|r| (r.diversity, r.clip_score.max(0.0)))
                .collect(),
        },
    ];
    let plot = draw::line_plot(
        "guidance: adherence vs diversity",
        "diversity (mean RMS pixel distance between seeds)",
        "adherence",
        (0.0, max_div),
        (0.0, 1.0),
        &series,
        &labels,
    );
    plot.save(&cli.plot)?;
    println!("grid: {}, plot: {}", cli.out.display(), cli.plot.display());
    Ok(())
}
