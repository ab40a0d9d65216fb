//! Set-up shared by the Stable Diffusion benches: full-size configs, the environment knobs,
//! and one timed case (criterion under `cargo bench`, a single smoke run under `cargo test`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::tensor::DType;
use criterion::Criterion;
use mm_core::precision::with_storage_dtype;

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

/// Times `f` as `group/name`: 10 criterion samples over about `seconds` under `cargo bench`
/// (`--bench`), else one call with its wall time printed (the smoke test of `cargo test`).
pub fn run(c: &mut Criterion, group: &str, name: &str, seconds: u64, mut f: impl FnMut()) {
    if !std::env::args().any(|a| a == "--bench") {
        let start = Instant::now();
        f();
        eprintln!(
            "{group}/{name}: {:.3} s (smoke run)",
            start.elapsed().as_secs_f64()
        );
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
