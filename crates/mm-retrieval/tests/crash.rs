//! A crash in the middle of indexing loses nothing acknowledged: a child process (this test
//! binary, running `crash_child`) indexes batches and prints `ACK n` after each acknowledged
//! one; the parent kills it with SIGKILL mid-way, reopens the catalogue and finds every
//! acknowledged item (the WAL is replayed on open).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{Rng, TableEmbedder, temp_dir};
use mm_retrieval::{Catalog, IndexOptions, Item};

const ENV: &str = "MM_RETRIEVAL_CRASH_DIR";
const BATCH: u64 = 25;
const DIM: usize = 32;

fn embedder() -> TableEmbedder {
    TableEmbedder::new(DIM)
}

fn batch(b: u64) -> Vec<Item> {
    (b * BATCH..(b + 1) * BATCH)
        .map(|id| {
            Item::new(id)
                .with_text(format!("item {id}"))
                .with_field("batch", b as i64)
        })
        .collect()
}

/// The child: indexes batches until killed (a no-op in a normal test run).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(ENV) else {
        return;
    };
    let embedder = embedder();
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    let options = IndexOptions {
        batch_size: BATCH as usize,
        optimize: false,
        flush: false,
    };
    for b in 0..100_000 {
        catalog.index(&batch(b), &options, None).unwrap();
        println!("ACK {b}");
    }
}

#[test]
fn killed_while_indexing_loses_nothing_acknowledged() {
    let dir = temp_dir("crash");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(ENV, &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut acked = None;
    // Kill at a varying point: after 20–39 acknowledged batches.
    let kill_after = 20 + Rng::new(std::process::id() as u64).next_u64() % 20;
    for line in stdout.lines() {
        let line = line.unwrap();
        if let Some(n) = line.strip_prefix("ACK ") {
            acked = Some(n.trim().parse::<u64>().unwrap());
            if acked.unwrap() + 1 >= kill_after {
                child.kill().unwrap(); // SIGKILL: no destructor, no flush
                break;
            }
        }
    }
    child.wait().unwrap();
    let acked = acked.expect("the child acknowledged nothing");

    let embedder = embedder();
    let catalog = Catalog::open(&dir, &embedder).unwrap();
    let count = catalog.len().unwrap() as u64;
    assert!(
        count >= (acked + 1) * BATCH,
        "{count} items after {} acknowledged",
        acked + 1
    );
    let store = catalog.store();
    let ids: Vec<u64> = (0..(acked + 1) * BATCH).collect();
    use mm_retrieval::VectorStore;
    let payloads = store.payloads(&ids).unwrap();
    assert_eq!(payloads.len(), ids.len(), "an acknowledged item is missing");
    // Every acknowledged item is searchable with its vector.
    let mut rng = Rng::new(1);
    for _ in 0..20 {
        let id = rng.next_u64() % ((acked + 1) * BATCH);
        let hits = catalog
            .search_text(&format!("item {id}"), &mm_retrieval::SearchOptions::new(1))
            .unwrap();
        assert_eq!(hits[0].id, id);
    }
    // The catalogue keeps working after the crash.
    catalog
        .index(&batch(10_000), &IndexOptions::default(), None)
        .unwrap();
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}
