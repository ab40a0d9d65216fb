//! Store benchmark: qdrant-edge (HNSW at the default settings) against exact brute force on the
//! same random unit vectors of width 768: ingest throughput, HNSW build time, query latency
//! p50 / p99 (k = 10, one query at a time), recall@10 of HNSW against brute force, peak RSS.
//!
//! ```text
//! cargo bench -p mm-retrieval --bench store                              # 100 000 vectors
//! MM_BENCH_VECTORS=1000000 cargo bench -p mm-retrieval --bench store     # 1 M (35 min, 2 cores)
//! ```
//!
//! `MM_BENCH_QUERIES` (default 500), `MM_BENCH_DIR` (default: a folder under target/),
//! `MM_BENCH_EF` (HNSW ef; default the store's), `MM_BENCH_EFS=128,256,512` (a sweep), `MM_BENCH_M`, `MM_BENCH_EF_CONSTRUCT`,
//! `MM_BENCH_DATA=clustered` (vectors around 1 000 random centres, noise of the centre's
//! norm: closer to CLIP embeddings than uniform random vectors). The engine runs first and its peak RSS
//! is read before the brute-force copy of the vectors is allocated.

use std::time::Instant;

use mm_retrieval::metrics::overlap_at_k;
use mm_retrieval::{EdgeOptions, EdgeStore, ItemId, Point, SearchParams, Space, VectorStore};

const DIM: usize = 768;

/// The vector of one id: deterministic, so the brute-force phase regenerates it.
fn vector(seed: u64) -> Vec<f32> {
    if std::env::var("MM_BENCH_DATA").is_ok_and(|d| d == "clustered") {
        let centre = random_unit(1 << 40 | (seed % 1000));
        let noise = random_unit(seed);
        let v: Vec<f32> = centre.iter().zip(&noise).map(|(c, n)| c + n).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        return v.iter().map(|x| x / n).collect();
    }
    random_unit(seed)
}

/// A random unit vector (normal components, normalised) from a seed.
fn random_unit(seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0xdead_beef;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut v: Vec<f32> = (0..DIM / 2)
        .flat_map(|_| {
            let (u, w) = (next().max(1e-7), next());
            let r = (-2.0 * u.ln()).sqrt();
            let t = 2.0 * std::f32::consts::PI * w;
            [r * t.cos(), r * t.sin()]
        })
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn status(field: &str) -> f64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0 / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let n = env("MM_BENCH_VECTORS", 100_000);
    let queries = env("MM_BENCH_QUERIES", 500);
    let dir = std::env::var_os("MM_BENCH_DIR").map_or_else(
        || std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("bench-store-{n}")),
        std::path::PathBuf::from,
    );
    let _ = std::fs::remove_dir_all(&dir);
    let mut options = EdgeOptions::default();
    options.m = env("MM_BENCH_M", options.m);
    options.ef_construct = env("MM_BENCH_EF_CONSTRUCT", options.ef_construct);
    let ef = std::env::var("MM_BENCH_EF")
        .ok()
        .and_then(|v| v.parse().ok());
    let data = std::env::var("MM_BENCH_DATA").unwrap_or_else(|_| "random".into());
    println!(
        "{n} {data} unit vectors of width {DIM}, {queries} queries, k = 10, {options:?}, ef override {ef:?}"
    );

    // Phase 1: the engine.
    let store = EdgeStore::create(&dir, DIM, options).expect("create");
    let start = Instant::now();
    for first in (0..n).step_by(1000) {
        let points = (first..(first + 1000).min(n))
            .map(|id| Point {
                id: id as ItemId,
                image: Some(vector(id as u64)),
                text: None,
                payload: Default::default(),
            })
            .collect();
        store.upsert(points).expect("upsert");
    }
    let ingest = start.elapsed().as_secs_f64();
    println!(
        "ingest: {ingest:.1} s ({:.0} vectors/s), RSS {:.2} GiB",
        n as f64 / ingest,
        status("VmRSS")
    );
    let start = Instant::now();
    store.optimize().expect("optimize");
    store.flush().expect("flush");
    let build = start.elapsed().as_secs_f64();
    println!(
        "HNSW build (optimize + flush): {build:.1} s ({:.0} vectors/s), indexed {} vectors, RSS {:.2} GiB",
        n as f64 / build,
        store.indexed_vectors(),
        status("VmRSS")
    );
    let query_vectors: Vec<Vec<f32>> = (0..queries).map(|q| vector(u64::MAX - q as u64)).collect();
    let run = |params: SearchParams| {
        let mut times = Vec::with_capacity(queries);
        let mut results = Vec::with_capacity(queries);
        for q in &query_vectors {
            let start = Instant::now();
            let hits = store
                .search(Space::Image, q, 10, None, params)
                .expect("search");
            times.push(start.elapsed().as_secs_f64() * 1e3);
            results.push(hits.iter().map(|h| h.id).collect::<Vec<_>>());
        }
        times.sort_by(f64::total_cmp);
        (times, results)
    };
    // Optional sweep of the beam width (recall against the engine's exact mode).
    let (exact_times, exact_ids) = run(SearchParams {
        hnsw_ef: None,
        exact: true,
    });
    if let Ok(sweep) = std::env::var("MM_BENCH_EFS") {
        for ef in sweep
            .split(',')
            .filter_map(|e| e.trim().parse::<usize>().ok())
        {
            let (times, ids) = run(SearchParams {
                hnsw_ef: Some(ef),
                exact: false,
            });
            let recall = ids
                .iter()
                .zip(&exact_ids)
                .map(|(a, e)| overlap_at_k(a, e, 10))
                .sum::<f64>()
                / queries as f64;
            println!(
                "  ef {ef}: recall@10 vs exact {recall:.4}, p50 {:.2} ms, p99 {:.2} ms",
                percentile(&times, 0.5),
                percentile(&times, 0.99)
            );
        }
    }
    let (hnsw_times, hnsw) = run(SearchParams {
        hnsw_ef: ef,
        exact: false,
    });
    let engine_peak = status("VmHWM");
    println!(
        "HNSW query: p50 {:.2} ms, p99 {:.2} ms; engine's exact mode: p50 {:.2} ms, p99 {:.2} ms",
        percentile(&hnsw_times, 0.5),
        percentile(&hnsw_times, 0.99),
        percentile(&exact_times, 0.5),
        percentile(&exact_times, 0.99)
    );
    println!(
        "peak RSS (engine phase): {engine_peak:.2} GiB; now {:.2} GiB anonymous + {:.2} GiB \
         file-backed (pages of the memory-mapped segments, which the kernel can drop)",
        status("RssAnon"),
        status("RssFile")
    );
    let disk = std::process::Command::new("du")
        .arg("-sh")
        .arg(&dir)
        .output()
        .ok();
    if let Some(out) = disk {
        print!("on disk: {}", String::from_utf8_lossy(&out.stdout));
    }
    drop(store);

    // Phase 2: exact brute force over a flat matrix (one pass of dot products per query).
    let start = Instant::now();
    let mut flat = Vec::with_capacity(n * DIM);
    for id in 0..n {
        flat.extend(vector(id as u64));
    }
    println!(
        "brute force: matrix built in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    let mut times = Vec::with_capacity(queries);
    let mut recall = 0.0;
    for (q, ann) in query_vectors.iter().zip(&hnsw) {
        let start = Instant::now();
        let mut scores: Vec<(f32, ItemId)> = flat
            .chunks_exact(DIM)
            .enumerate()
            .map(|(id, v)| {
                (
                    v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(),
                    id as ItemId,
                )
            })
            .collect();
        let k = 10.min(scores.len());
        scores.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
        scores.truncate(k);
        scores.sort_by(|a, b| b.0.total_cmp(&a.0));
        times.push(start.elapsed().as_secs_f64() * 1e3);
        let truth: Vec<ItemId> = scores.iter().map(|s| s.1).collect();
        recall += overlap_at_k(ann, &truth, 10) / queries as f64;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "brute force query (one thread): p50 {:.2} ms, p99 {:.2} ms; peak RSS now {:.2} GiB",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        status("VmHWM")
    );
    println!("HNSW recall@10 against brute force: {recall:.4}");
    let _ = std::fs::remove_dir_all(&dir);
}
