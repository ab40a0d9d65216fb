//! The chapter's first exercise: the same prompt and seed with DPM++ 2M, Euler and DDIM at 20
//! and 50 steps → a labelled image grid (rows: schedulers, columns: steps) and a table of the
//! wall time of each configuration. Runs on the zoo pipeline by default (no download).
//!
//! ```text
//! cargo run --release --example scheduler_comparison -- --prompt "a red circle on the left"
//! cargo run --release --example scheduler_comparison -- --model stable-diffusion-v1-5/stable-diffusion-v1-5 \
//!     --prompt "a lighthouse at dusk" --steps 20,50 --out schedulers.png
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use mm_diffusion::pipelines::{GenerateOptions, Hooks, StableDiffusion};
use mm_examples::{AnyError, ZOO_SD, device, draw};

/// The same prompt and seed through several schedulers and step counts.
#[derive(Parser)]
struct Cli {
    /// Stable Diffusion 1.x / 2.x pipeline folder or repo id (default: the zoo's).
    #[arg(long, default_value = ZOO_SD)]
    model: String,
    /// The prompt.
    #[arg(long, default_value = "a red circle on the left")]
    prompt: String,
    /// Seed of the initial noise (the same for every configuration).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Step counts (columns).
    #[arg(long, value_delimiter = ',', default_values_t = [20, 50])]
    steps: Vec<usize>,
    /// Schedulers (rows): diffusers class names.
    #[arg(long, value_delimiter = ',', default_values_t = [
        "DPMSolverMultistepScheduler".to_string(),
        "EulerDiscreteScheduler".to_string(),
        "DDIMScheduler".to_string(),
    ])]
    schedulers: Vec<String>,
    /// Classifier-free guidance scale (default: the pipeline's, 7.5).
    #[arg(long)]
    guidance: Option<f64>,
    /// Output grid (PNG).
    #[arg(long, default_value = "scheduler_comparison.png")]
    out: PathBuf,
    /// Device: cpu, or wgpu when built with `--features wgpu`.
    #[arg(long, default_value = "cpu")]
    device: String,
}

fn main() -> std::process::ExitCode {
    mm_examples::report(run(Cli::parse()))
}

/// The short name of a scheduler class for labels.
fn short(class: &str) -> &str {
    match class {
        "DPMSolverMultistepScheduler" => "DPM++ 2M",
        "EulerDiscreteScheduler" => "Euler",
        "EulerAncestralDiscreteScheduler" => "Euler a",
        "DDIMScheduler" => "DDIM",
        "DDPMScheduler" => "DDPM",
        "PNDMScheduler" => "PNDM",
        "LMSDiscreteScheduler" => "LMS",
        "HeunDiscreteScheduler" => "Heun",
        "UniPCMultistepScheduler" => "UniPC",
        other => other.trim_end_matches("Scheduler"),
    }
}

fn run(cli: Cli) -> Result<(), AnyError> {
    if cli.steps.is_empty() || cli.schedulers.is_empty() || cli.steps.contains(&0) {
        return Err("give at least one scheduler and one step count (> 0)".into());
    }
    let device = device(&cli.device)?;
    let pipeline = StableDiffusion::load(&cli.model, &device)?;
    println!("prompt: {:?}, seed {}", cli.prompt, cli.seed);
    println!("| scheduler | steps | wall time (s) | per step (ms) |");
    println!("|---|---:|---:|---:|");
    let mut rows = Vec::new();
    for scheduler in &cli.schedulers {
        let mut row = Vec::new();
        for &steps in &cli.steps {
            let mut opts = GenerateOptions::new(&cli.prompt)
                .seed(cli.seed)
                .steps(steps)
                .scheduler(scheduler);
            opts.guidance_scale = cli.guidance;
            let started = Instant::now();
            let generated = pipeline.text_to_image(&opts, Hooks::new())?;
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "| {} | {steps} | {seconds:.3} | {:.1} |",
                short(scheduler),
                seconds * 1e3 / steps as f64
            );
            row.extend(generated.images);
        }
        rows.push(row);
    }
    let zoom = (256 / rows[0][0].width()).max(1);
    let columns: Vec<String> = cli.steps.iter().map(|s| format!("{s} steps")).collect();
    let row_labels: Vec<String> = cli
        .schedulers
        .iter()
        .map(|s| short(s).to_string())
        .collect();
    draw::labelled_grid(&rows, &columns, &row_labels, zoom).save(&cli.out)?;
    println!("grid: {}", cli.out.display());
    Ok(())
}
