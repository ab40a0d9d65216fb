//! Retrieval quality on a synthetic catalogue with exact ground truth: items belong to known
//! concepts; an item's image and text vectors are noisy views of its concept (independent
//! noise, plus a shared per-item offset and a per-modality offset, like CLIP's modality gap);
//! queries are further noisy views; the relevant set of a query is every item of its concept.
//! recall@10 and MRR for the image index, the text index, weighted fusion (0.6 / 0.4) and RRF.
//!
//! `cargo test --release -p mm-retrieval --test quality -- --nocapture` prints the table.

mod common;

use std::collections::HashSet;

use common::{Rng, TableEmbedder, add, key_image, normalize, temp_dir};
use mm_retrieval::metrics::{recall_at_k, reciprocal_rank};
use mm_retrieval::{Catalog, Fusion, IndexOptions, Item, ItemId, SearchMode, SearchOptions};

const DIM: usize = 64;
const CONCEPTS: usize = 100;
const PER_CONCEPT: usize = 30;
const QUERIES_PER_CONCEPT: usize = 4;

struct Noise {
    image: f32,
    text: f32,
}

#[derive(Default, Clone, Copy)]
struct Score {
    recall: f64,
    mrr: f64,
}

/// Scores per query kind (text, image) and mode (image, text, weighted, rrf).
fn run(name: &str, noise: Noise) -> [[Score; 4]; 2] {
    let mut rng = Rng::new(7);
    let embedder = TableEmbedder::new(DIM);
    let gap_image = normalize(rng.gaussian(DIM, 1.0))
        .iter()
        .map(|x| x * 0.5)
        .collect::<Vec<_>>();
    let gap_text = normalize(rng.gaussian(DIM, 1.0))
        .iter()
        .map(|x| x * 0.5)
        .collect::<Vec<_>>();
    let means: Vec<Vec<f32>> = (0..CONCEPTS).map(|_| rng.unit(DIM)).collect();
    let mut items = Vec::new();
    let mut members: Vec<HashSet<ItemId>> = vec![HashSet::new(); CONCEPTS];
    for (c, mean) in means.iter().enumerate() {
        for j in 0..PER_CONCEPT {
            let id = (c * PER_CONCEPT + j) as u64;
            let identity = add(mean, &rng.gaussian(DIM, 0.05));
            let image = add(&add(&identity, &rng.gaussian(DIM, noise.image)), &gap_image);
            let text = add(&add(&identity, &rng.gaussian(DIM, noise.text)), &gap_text);
            embedder.set_image(id as u32, image);
            let caption = format!("item {id}");
            embedder.set_text(&caption, text);
            items.push(
                Item::new(id)
                    .with_image(key_image(id as u32))
                    .with_text(caption)
                    .with_field("concept", c as i64),
            );
            members[c].insert(id);
        }
    }
    let dir = temp_dir(&format!("quality-{name}"));
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    let report = catalog
        .index(
            &items,
            &IndexOptions {
                batch_size: 500,
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(report.indexed, items.len());

    let modes = [
        SearchMode::Image,
        SearchMode::Text,
        SearchMode::Fused(Fusion::default()),
        SearchMode::Fused(Fusion::rrf()),
    ];
    let mut scores = [[Score::default(); 4]; 2];
    let n = (CONCEPTS * QUERIES_PER_CONCEPT) as f64;
    for (c, mean) in means.iter().enumerate() {
        for q in 0..QUERIES_PER_CONCEPT {
            let text = format!("query {c} {q}");
            embedder.set_text(&text, add(&add(mean, &rng.gaussian(DIM, 0.08)), &gap_text));
            let key = 10_000_000 + (c * QUERIES_PER_CONCEPT + q) as u32;
            embedder.set_image(key, add(&add(mean, &rng.gaussian(DIM, 0.08)), &gap_image));
            for (m, mode) in modes.iter().enumerate() {
                let options = SearchOptions::new(10).mode(*mode);
                let by_text = catalog.search_text(&text, &options).unwrap();
                let by_image = catalog.search_image(&key_image(key), &options).unwrap();
                for (kind, hits) in [by_text, by_image].into_iter().enumerate() {
                    let ids: Vec<ItemId> = hits.iter().map(|h| h.id).collect();
                    scores[kind][m].recall += recall_at_k(&ids, &members[c], 10) / n;
                    scores[kind][m].mrr += reciprocal_rank(&ids, &members[c]) / n;
                }
            }
        }
    }
    println!(
        "\n{name} (image noise σ {}, text noise σ {}; {} items, {} queries of each kind)",
        noise.image,
        noise.text,
        items.len(),
        CONCEPTS * QUERIES_PER_CONCEPT
    );
    println!("| query | mode | recall@10 | MRR |\n|---|---|---:|---:|");
    for (kind, name) in ["text", "image"].iter().enumerate() {
        for (m, mode) in ["image index", "text index", "fused 0.6/0.4", "RRF k=60"]
            .iter()
            .enumerate()
        {
            let s = scores[kind][m];
            println!("| {name} | {mode} | {:.3} | {:.3} |", s.recall, s.mrr);
        }
    }
    drop(catalog);
    let _ = std::fs::remove_dir_all(&dir);
    scores
}

/// Image and text descriptions equally informative, noise independent: fusing the two
/// similarities averages the noise out, so both fusions must beat each index alone.
#[test]
fn fusion_beats_each_index_when_both_are_informative() {
    let scores = run(
        "balanced",
        Noise {
            image: 0.35,
            text: 0.35,
        },
    );
    for (kind, kind_scores) in scores.iter().enumerate() {
        let best_single = kind_scores[0].recall.max(kind_scores[1].recall);
        let best_single_mrr = kind_scores[0].mrr.max(kind_scores[1].mrr);
        for fused in &kind_scores[2..] {
            assert!(
                fused.recall >= best_single,
                "query kind {kind}: fused recall {} < single {best_single}",
                fused.recall
            );
            assert!(fused.mrr >= best_single_mrr - 0.01);
        }
        assert!(
            kind_scores[2].recall > best_single + 0.02,
            "fusion should help clearly"
        );
    }
}

/// Texts nearly uninformative: the image index is the one to trust. Weighted fusion (which
/// sees the similarities) stays at the image index's level; reciprocal-rank fusion, blind to
/// how weak the text similarities are, falls well below it: the data says not to fuse ranks.
#[test]
fn fusion_with_an_uninformative_index() {
    let scores = run(
        "noisy-text",
        Noise {
            image: 0.35,
            text: 1.0,
        },
    );
    for kind_scores in &scores {
        assert!(kind_scores[0].recall > kind_scores[1].recall);
        assert!(kind_scores[2].recall > kind_scores[1].recall);
        assert!(kind_scores[3].recall > kind_scores[1].recall);
        assert!(kind_scores[2].recall >= kind_scores[0].recall - 0.02);
        assert!(kind_scores[3].recall < kind_scores[0].recall - 0.05);
    }
}
