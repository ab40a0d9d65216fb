//! Set-up shared by the Stable Diffusion benches: full-size configs, the environment knobs,
//! and one timed case (criterion under `cargo bench`, a single smoke run under `cargo test`).
//!
//! Environment:
//! - `MM_BENCH_MODEL=sdxl` times SDXL base's parts (1024×1024) instead of SD 1.5's (512×512);
//!   `sd3` and `flux` select the benches of `sd3.rs` and `flux.rs`;
//! - `MM_BENCH_RUNS=N` replaces criterion by one warm-up call and the median of N timed calls
//!   (the default for SDXL, with N = 3: a UNet step takes minutes, criterion's minimum of 10
//!   samples would take most of an hour); `MM_BENCH_JSON=FILE` also writes
//!   `{"group/name": median seconds}` there;
//! - `MM_BENCH_WARMUP=0` skips the warm-up call of the median loop (an SD3 step at 1024²
//!   takes minutes; the models are materialised by a small call before timing anyway);
//! - `MM_BENCH_DTYPE=bf16|f16` stores the weight matrices in half precision;
//! - `MM_BENCH_COMPUTE=bf16` runs the calls under `autocast(ComputeDtype::Bf16, ..)` (bf16
//!   products with f32 sums, see `mm_core::precision::ComputeDtype`), all of them in one
//!   scope, which keeps the weights packed to bf16 from the first call on — as
//!   `tools/bench/sd15_bench.py --autocast bf16` runs PyTorch's calls in one
//!   `torch.autocast` block, which keeps its weights' bf16 casts; `MM_BENCH_SCOPE=call` opens
//!   a scope per call instead (every call packs its weights, like a fresh block per call);
//! - `MM_BENCH_ERROR=1` also prints, before timing, how far the case's output computed with
//!   bf16 products is from the f32 one (relative to the output's largest value, and RMS);
//! - `MM_BENCH_POOL_MIB=N` limits the pool of recycled buffers.
//!
//! A positional argument (`cargo bench --workspace --bench text_encoder -- clip_bigg`) selects
//! the cases whose `group/name` contains it; the others do not even build their model, so a
//! process's peak memory is its case's.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::DType;
use criterion::Criterion;
use mm_core::precision::{Autocast, ComputeDtype, autocast, compute_error, with_storage_dtype};

/// A file of the full-size configs under the workspace's `tests/fixtures/full/`.
pub fn full_config(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/full")
        .join(relative)
}

/// Applies the environment's knobs: `MM_BENCH_POOL_MIB=N` limits the pool of recycled buffers
/// to N MiB (`0` turns it off, see `mm_core::memory`).
pub fn configure() {
    if let Ok(mib) = std::env::var("MM_BENCH_POOL_MIB") {
        let mib: usize = mib.parse().expect("MM_BENCH_POOL_MIB: a number of MiB");
        mm_core::memory::set_pool_limit(mib << 20);
    }
}

/// `module` with its weight matrices stored as `MM_BENCH_DTYPE` says (`bf16` or `f16`, as
/// `load_with_dtype` stores a checkpoint; the arithmetic stays f32), else as it is.
pub fn with_bench_dtype<M: Module>(module: M) -> M {
    match std::env::var("MM_BENCH_DTYPE").as_deref() {
        Ok("bf16") => with_storage_dtype(module, DType::BF16),
        Ok("f16") => with_storage_dtype(module, DType::F16),
        _ => module,
    }
}

/// `MM_BENCH_COMPUTE`: `bf16`, else (unset or `f32`) f32.
fn compute_dtype() -> ComputeDtype {
    match std::env::var("MM_BENCH_COMPUTE").as_deref() {
        Ok("bf16") => ComputeDtype::Bf16,
        Ok("f32") | Err(_) => ComputeDtype::F32,
        Ok(other) => panic!("MM_BENCH_COMPUTE={other}: expected f32 or bf16"),
    }
}

/// With `MM_BENCH_ERROR=1`: how far `output` with bf16 products is from the f32 one
/// (`mm_core::precision::compute_error`), printed.
pub fn bf16_error<const D: usize>(id: &str, output: impl Fn() -> burn::tensor::Tensor<D>) {
    if std::env::var_os("MM_BENCH_ERROR").is_some() && selected(id) {
        println!("{id}: bf16 vs f32 compute: {}", compute_error(output));
    }
}

/// The model family whose full-size parts the benches time (`MM_BENCH_MODEL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Stable Diffusion 1.5 at 512×512 (the default).
    Sd15,
    /// Stable Diffusion XL base at 1024×1024 (`MM_BENCH_MODEL=sdxl`).
    Sdxl,
    /// Stable Diffusion 3 medium at 1024×1024 (`MM_BENCH_MODEL=sd3`).
    Sd3,
    /// FLUX.1-schnell at 1024×1024 (`MM_BENCH_MODEL=flux`).
    Flux,
}

/// `MM_BENCH_MODEL`: `sdxl`, `sd3` or `flux`, else (unset or `sd15`) SD 1.5.
pub fn family() -> Family {
    match std::env::var("MM_BENCH_MODEL").as_deref() {
        Ok("sdxl") => Family::Sdxl,
        Ok("sd3") => Family::Sd3,
        Ok("flux") => Family::Flux,
        Ok("sd15") | Err(_) => Family::Sd15,
        Ok(other) => panic!("MM_BENCH_MODEL={other}: expected sd15, sdxl, sd3 or flux"),
    }
}

/// The number of timed calls of the median loop (`MM_BENCH_RUNS`; 3 for SDXL, SD3 and FLUX), or
/// `None` for criterion.
fn median_runs() -> Option<usize> {
    match std::env::var("MM_BENCH_RUNS") {
        Ok(n) => Some(n.parse().expect("MM_BENCH_RUNS: a number of runs")),
        Err(_) => (family() != Family::Sd15).then_some(3),
    }
}

/// Whether the command line's filter (its first positional argument, as criterion reads it)
/// selects `id`; no filter selects everything.
pub fn selected(id: &str) -> bool {
    // criterion's options that take a value, whose value is not a filter
    const VALUED: [&str; 12] = [
        "--save-baseline",
        "--baseline",
        "--load-baseline",
        "--profile-time",
        "--sample-size",
        "--warm-up-time",
        "--measurement-time",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--color",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args
        .iter()
        .enumerate()
        .find(|(i, a)| !a.starts_with('-') && (*i == 0 || !VALUED.contains(&args[i - 1].as_str())));
    filter.is_none_or(|(_, f)| id.contains(f.as_str()))
}

/// One warm-up call (none with `MM_BENCH_WARMUP=0`), then `runs` timed ones; prints (and
/// writes to `MM_BENCH_JSON`) the median.
fn median_of(id: &str, runs: usize, f: &mut impl FnMut()) {
    if std::env::var("MM_BENCH_WARMUP").as_deref() != Ok("0") {
        let start = Instant::now();
        f();
        eprintln!("{id}: warm-up {:.3} s", start.elapsed().as_secs_f64());
    }
    let mut times: Vec<f64> = (0..runs)
        .map(|i| {
            let start = Instant::now();
            f();
            let t = start.elapsed().as_secs_f64();
            eprintln!("{id}: run {} {t:.3} s", i + 1);
            t
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{id}  median {median:8.3} s   min {:8.3} s   ({runs} runs)",
        times[0]
    );
    if let Ok(path) = std::env::var("MM_BENCH_JSON") {
        let json = serde_json::json!({ id: median });
        std::fs::write(&path, format!("{json:#}\n")).expect("MM_BENCH_JSON: writable");
    }
}

/// Times the call `setup` returns as `group/name`, if the command line selects it (`setup`,
/// which builds the model, runs only then): under `cargo bench` (`--bench`) 10 criterion
/// samples over about `seconds`, or the median loop of `MM_BENCH_RUNS` (SDXL's default);
/// else one call with its wall time printed (the smoke test of `cargo test`).
pub fn run<F: FnMut()>(
    c: &mut Criterion,
    group: &str,
    name: &str,
    seconds: u64,
    setup: impl FnOnce() -> F,
) {
    let id = format!("{group}/{name}");
    if !selected(&id) {
        return;
    }
    let (mut setup_f, compute) = (setup(), compute_dtype());
    let per_call = std::env::var("MM_BENCH_SCOPE").as_deref() == Ok("call");
    let _scope = (!per_call).then(|| Autocast::enter(compute));
    let mut f = move || autocast(compute, &mut setup_f);
    let bench = std::env::args().any(|a| a == "--bench");
    if let (true, Some(runs)) = (bench, median_runs()) {
        median_of(&id, runs, &mut f);
        return;
    }
    if !bench {
        let start = Instant::now();
        f();
        eprintln!("{id}: {:.3} s (smoke run)", start.elapsed().as_secs_f64());
        return;
    }
    let mut group = c.benchmark_group(group);
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(seconds));
    group.bench_function(name, |b| b.iter(&mut f));
    group.finish();
}
