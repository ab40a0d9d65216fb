//! The embedded engine's approximate (HNSW) search against exact brute force on the same
//! vectors, at the default settings: recall@10 ≥ 0.99 on CLIP-like vectors (clustered: each a
//! random concept direction plus noise of the same norm). Uniformly random vectors of width 768
//! are HNSW's worst case, see the `store` bench and docs/performance.md.

mod common;

use common::{Rng, brute_force, temp_dir};
use mm_retrieval::metrics::overlap_at_k;
use mm_retrieval::{EdgeOptions, EdgeStore, ItemId, Point, SearchParams, Space, VectorStore};

/// 4 000 vectors of width 768 around 400 concepts (12 MB, above the default indexing threshold,
/// so `optimize` builds an HNSW graph), 200 queries drawn the same way.
#[test]
fn hnsw_recall_at_10_against_brute_force() {
    const N: u64 = 4000;
    const DIM: usize = 768;
    let dir = temp_dir("ann");
    let store = EdgeStore::create(&dir, DIM, EdgeOptions::default()).unwrap();
    let mut rng = Rng::new(11);
    let concepts: Vec<Vec<f32>> = (0..400).map(|_| rng.unit(DIM)).collect();
    let draw = |rng: &mut Rng| {
        let c = &concepts[(rng.next_u64() % 400) as usize];
        common::normalize(common::add(c, &rng.unit(DIM)))
    };
    let vectors: Vec<(ItemId, Vec<f32>)> = (0..N).map(|id| (id, draw(&mut rng))).collect();
    for chunk in vectors.chunks(1000) {
        store
            .upsert(
                chunk
                    .iter()
                    .map(|(id, v)| Point {
                        id: *id,
                        image: Some(v.clone()),
                        text: None,
                        payload: Default::default(),
                    })
                    .collect(),
            )
            .unwrap();
    }
    store.optimize().unwrap();
    assert_eq!(store.indexed_vectors(), N as usize, "HNSW built");
    let (mut ann, mut exact_engine) = (0.0, 0.0);
    const Q: usize = 200;
    for _ in 0..Q {
        let q = draw(&mut rng);
        let truth = brute_force(&vectors, &q, 10);
        let hits = store
            .search(Space::Image, &q, 10, None, SearchParams::default())
            .unwrap();
        let got: Vec<ItemId> = hits.iter().map(|h| h.id).collect();
        ann += overlap_at_k(&got, &truth, 10) / Q as f64;
        let exact = SearchParams {
            exact: true,
            ..Default::default()
        };
        let hits = store.search(Space::Image, &q, 10, None, exact).unwrap();
        let got: Vec<ItemId> = hits.iter().map(|h| h.id).collect();
        exact_engine += overlap_at_k(&got, &truth, 10) / Q as f64;
    }
    println!("HNSW recall@10 vs brute force: {ann:.4}; the engine's exact mode: {exact_engine:.4}");
    assert!(exact_engine > 0.999);
    assert!(ann >= 0.99, "recall@10 {ann}");
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
