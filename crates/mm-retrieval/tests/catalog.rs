//! Catalogue behaviour with a table embedder (no model): incremental add / update / delete,
//! payload filters, persistence across processes, bad input as typed errors.

mod common;

use common::{Rng, TableEmbedder, key_image, temp_dir};
use mm_retrieval::{
    Catalog, EdgeOptions, EdgeStore, Error, Filter, Fusion, IndexOptions, Item, ItemId, SearchMode,
    SearchOptions, VectorStore,
};

/// `n` items with text and image vectors, a category (`c0` … `c4`) and a price.
fn catalogue(embedder: &TableEmbedder, n: u64, seed: u64) -> Vec<Item> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|id| {
            embedder.set_image(id as u32, rng.unit(embedder.dim));
            let text = format!("product {id}");
            embedder.set_text(&text, rng.unit(embedder.dim));
            Item::new(id)
                .with_image(key_image(id as u32))
                .with_text(text)
                .with_field("category", format!("c{}", id % 5))
                .with_field("price", id as f64 * 1.5)
        })
        .collect()
}

fn ids(hits: &[mm_retrieval::Hit]) -> Vec<ItemId> {
    hits.iter().map(|h| h.id).collect()
}

#[test]
fn incremental_add_update_delete() {
    let embedder = TableEmbedder::new(16);
    let items = catalogue(&embedder, 50, 1);
    let dir = temp_dir("incremental");
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    let report = catalog
        .index(&items, &IndexOptions::default(), None)
        .unwrap();
    assert_eq!((report.indexed, report.skipped.len()), (50, 0));
    assert_eq!(catalog.len().unwrap(), 50);

    // An item is its own best match in both modes.
    let hits = catalog
        .search_image(
            &key_image(7),
            &SearchOptions::new(3).mode(SearchMode::Image),
        )
        .unwrap();
    assert_eq!(hits[0].id, 7);
    assert!((hits[0].score - 1.0).abs() < 1e-4);
    let hits = catalog
        .search_text("product 7", &SearchOptions::new(3))
        .unwrap();
    assert_eq!(hits[0].id, 7);
    assert_eq!(hits[0].item.text.as_deref(), Some("product 7"));
    assert_eq!(hits[0].item.payload["category"], "c2");
    // Fused: both similarities known for every hit.
    assert!(
        hits.iter()
            .all(|h| h.image_score.is_some() && h.text_score.is_some())
    );

    // Add: a text-only item.
    embedder.set_text("a new scarf", common::Rng::new(99).unit(16));
    catalog
        .add(Item::new(1000).with_text("a new scarf"))
        .unwrap();
    assert_eq!(catalog.len().unwrap(), 51);
    let hits = catalog
        .search_text("a new scarf", &SearchOptions::new(1))
        .unwrap();
    assert_eq!(hits[0].id, 1000);
    assert!(hits[0].image_score.is_none());
    assert!(
        (hits[0].score - 1.0).abs() < 1e-4,
        "scored by its text alone"
    );

    // Update: item 7 gets another text; the old text no longer finds it first.
    embedder.set_text("renamed", common::Rng::new(5).unit(16));
    catalog
        .update(Item::new(7).with_image(key_image(7)).with_text("renamed"))
        .unwrap();
    assert_eq!(catalog.len().unwrap(), 51);
    let item = catalog.get(7).unwrap().unwrap();
    assert_eq!(item.text.as_deref(), Some("renamed"));
    assert!(
        item.payload.get("category").is_none(),
        "update replaces the payload"
    );
    let hits = catalog
        .search_text("renamed", &SearchOptions::new(1).mode(SearchMode::Text))
        .unwrap();
    assert_eq!(hits[0].id, 7);

    // Delete.
    catalog.delete(&[7, 1000, 123_456]).unwrap();
    assert_eq!(catalog.len().unwrap(), 49);
    assert!(catalog.get(7).unwrap().is_none());
    let hits = catalog
        .search_image(&key_image(7), &SearchOptions::new(10))
        .unwrap();
    assert!(!ids(&hits).contains(&7));
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn payload_filters() {
    let embedder = TableEmbedder::new(16);
    let items = catalogue(&embedder, 200, 2);
    let dir = temp_dir("filters");
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    catalog
        .index(&items, &IndexOptions::default(), None)
        .unwrap();
    for mode in [
        SearchMode::Image,
        SearchMode::Text,
        SearchMode::Fused(Fusion::default()),
        SearchMode::Fused(Fusion::rrf()),
    ] {
        let options = SearchOptions::new(10)
            .mode(mode)
            .filter(Filter::eq("category", "c3"));
        let hits = catalog.search_text("product 8", &options).unwrap();
        assert_eq!(hits.len(), 10, "{mode:?}");
        assert!(hits.iter().all(|h| h.item.payload["category"] == "c3"));
        if mode == SearchMode::Text {
            // The query is item 8's text vector (its image vector is unrelated).
            assert_eq!(hits[0].id, 8, "item 8 is in c3 and matches itself");
        }

        let options = SearchOptions::new(10).mode(mode).filter(Filter::all([
            Filter::any("category", ["c1", "c2"]),
            Filter::range("price", Some(30.0), Some(90.0)),
            Filter::not(Filter::eq("category", "c2")),
        ]));
        let hits = catalog.search_text("product 8", &options).unwrap();
        assert!(!hits.is_empty());
        for h in &hits {
            let price = h.item.payload["price"].as_f64().unwrap();
            assert!((30.0..=90.0).contains(&price));
            assert_eq!(h.item.payload["category"], "c1");
        }
        // Exactly the matching items: ids 21, 26, …, 56 (id % 5 == 1, 20 ≤ id ≤ 60).
        assert_eq!(hits.len(), 8);
    }
    // Bad filters are typed errors.
    for bad in [
        Filter::eq("price", 1.5),
        Filter::any("category", Vec::<String>::new()),
        Filter::range("price", None, None),
        Filter::range("price", Some(f64::NAN), None),
    ] {
        let err = catalog
            .search_text("product 1", &SearchOptions::new(5).filter(bad))
            .unwrap_err();
        assert!(matches!(err, Error::InvalidInput(_)), "{err}");
    }
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn persistence_same_results_after_reopen() {
    let embedder = TableEmbedder::new(32);
    let items = catalogue(&embedder, 400, 3);
    let dir = temp_dir("persist");
    let queries = ["product 3", "product 150", "product 399", "something else"];
    let before: Vec<Vec<(ItemId, f32)>> = {
        let catalog = Catalog::create(&dir, &embedder).unwrap();
        catalog
            .index(
                &items,
                &IndexOptions {
                    flush: false,
                    ..Default::default()
                },
                None,
            )
            .unwrap();
        catalog.delete(&[150]).unwrap();
        queries
            .iter()
            .map(|q| {
                let hits = catalog.search_text(q, &SearchOptions::new(10)).unwrap();
                hits.iter().map(|h| (h.id, h.score)).collect()
            })
            .collect()
    };
    let catalog = Catalog::open(&dir, &embedder).unwrap();
    assert_eq!(catalog.len().unwrap(), 399);
    assert_eq!(catalog.info().model, "table");
    assert_eq!(catalog.info().dim, 32);
    for (q, expected) in queries.iter().zip(&before) {
        let hits = catalog.search_text(q, &SearchOptions::new(10)).unwrap();
        let got: Vec<(ItemId, f32)> = hits.iter().map(|h| (h.id, h.score)).collect();
        assert_eq!(&got, expected, "query {q}");
    }
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_is_typed() {
    let dir = temp_dir("bad-input");
    let embedder = TableEmbedder::new(16);
    // Not a catalogue.
    assert!(matches!(
        Catalog::open(&dir, &embedder).unwrap_err(),
        Error::NotACatalog { .. }
    ));
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    // Already one.
    assert!(matches!(
        Catalog::create(&dir, &embedder).unwrap_err(),
        Error::AlreadyExists(_)
    ));
    // Items with nothing to embed, reserved keys, unreadable images: skipped and reported.
    std::fs::write(dir.join("fake.png"), b"this is not a PNG").unwrap();
    let items = vec![
        Item::new(1).with_text("fine"),
        Item::new(2),
        Item::new(3).with_text("reserved").with_field("_text", "x"),
        Item::new(4)
            .with_image_path(dir.join("fake.png"))
            .with_text("fake"),
        Item::new(5).with_image_path(dir.join("missing.jpg")),
        Item::new(6).with_image(key_image(6)),
    ];
    let report = catalog
        .index(
            &items,
            &IndexOptions {
                batch_size: 4,
                ..Default::default()
            },
            None,
        )
        .unwrap();
    assert_eq!(report.indexed, 2);
    let skipped: Vec<ItemId> = report.skipped.iter().map(|s| s.id).collect();
    assert_eq!(skipped, [2, 3, 4, 5]);
    assert!(matches!(
        report.skipped[1].error,
        Error::Payload { id: 3, .. }
    ));
    assert!(matches!(
        report.skipped[2].error,
        Error::Core(mm_core::Error::Image { .. })
    ));
    assert_eq!(
        report.skipped[2].path.as_deref(),
        Some(dir.join("fake.png").as_path())
    );
    assert!(matches!(report.skipped[3].error, Error::Core(_)));
    // `add` of an unreadable image is an error.
    assert!(
        catalog
            .add(Item::new(4).with_image_path(dir.join("fake.png")))
            .is_err()
    );
    // A query image that is not an image.
    let err = catalog
        .search_image_file(dir.join("fake.png"), &SearchOptions::new(3))
        .unwrap_err();
    assert!(matches!(err, Error::QueryImage { .. }), "{err}");
    assert!(matches!(
        catalog
            .search_image_file(dir.join("nope.jpg"), &SearchOptions::new(3))
            .unwrap_err(),
        Error::QueryImage { .. }
    ));
    // Bad queries.
    assert!(matches!(
        catalog
            .search_text("fine", &SearchOptions::new(0))
            .unwrap_err(),
        Error::InvalidInput(_)
    ));
    assert!(matches!(
        catalog
            .search_text("  ", &SearchOptions::new(3))
            .unwrap_err(),
        Error::InvalidInput(_)
    ));
    assert!(matches!(
        catalog
            .search_vector(&[0.0; 16], &SearchOptions::new(3))
            .unwrap_err(),
        Error::InvalidInput(_)
    ));
    assert!(matches!(
        catalog
            .search_vector(&[1.0; 3], &SearchOptions::new(3))
            .unwrap_err(),
        Error::InvalidInput(_)
    ));
    let nan_weights =
        SearchOptions::new(3).mode(SearchMode::Fused(Fusion::weighted(f32::NAN, 1.0)));
    assert!(matches!(
        catalog.search_text("fine", &nan_weights).unwrap_err(),
        Error::InvalidInput(_)
    ));
    assert!(matches!(
        catalog
            .index(
                &items,
                &IndexOptions {
                    batch_size: 0,
                    ..Default::default()
                },
                None
            )
            .unwrap_err(),
        Error::InvalidInput(_)
    ));
    drop(catalog);

    // A catalogue of another width.
    let wider = TableEmbedder::new(24);
    let err = Catalog::open(&dir, &wider).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                stored: 16,
                embedder: 24,
                ..
            }
        ),
        "{err}"
    );
    // The store alone, too.
    let store = EdgeStore::open(dir.join("shard"), EdgeOptions::default()).unwrap();
    assert_eq!(store.dim(), 16);
    assert!(matches!(
        Catalog::with_store(&wider, store).unwrap_err(),
        Error::DimensionMismatch { .. }
    ));
    // A broken catalog.json.
    std::fs::write(dir.join("catalog.json"), "{").unwrap();
    assert!(matches!(
        Catalog::open(&dir, &embedder).unwrap_err(),
        Error::NotACatalog { .. }
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn progress_and_cancel() {
    let embedder = TableEmbedder::new(8);
    let items = catalogue(&embedder, 40, 4);
    let dir = temp_dir("cancel");
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    let mut seen = Vec::new();
    let mut progress = |p: &mm_retrieval::IndexProgress| {
        seen.push(p.done);
        if p.done >= 20 {
            mm_retrieval::Flow::Cancel
        } else {
            mm_retrieval::Flow::Continue
        }
    };
    let options = IndexOptions {
        batch_size: 10,
        ..Default::default()
    };
    let err = catalog
        .index(&items, &options, Some(&mut progress))
        .unwrap_err();
    assert!(matches!(err, Error::Cancelled { indexed: 20 }));
    assert_eq!(seen, [10, 20]);
    assert_eq!(catalog.len().unwrap(), 20);
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}
