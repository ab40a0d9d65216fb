//! Catalogue behaviour with a table embedder (no model): incremental add / update / delete,
//! payload filters, persistence across processes, bad input as typed errors.

mod common;

use common::checks::{self, catalogue};
use common::{TableEmbedder, key_image, temp_dir};
use mm_retrieval::{
    Catalog, EdgeOptions, EdgeStore, Error, Fusion, IndexOptions, Item, ItemId, SearchMode,
    SearchOptions, VectorStore,
};

#[test]
fn incremental_add_update_delete() {
    let embedder = TableEmbedder::new(16);
    let dir = temp_dir("incremental");
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    checks::incremental_add_update_delete(&embedder, &catalog);
    drop(catalog);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn payload_filters() {
    let embedder = TableEmbedder::new(16);
    let dir = temp_dir("filters");
    let catalog = Catalog::create(&dir, &embedder).unwrap();
    checks::payload_filters(&embedder, &catalog);
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
    checks::assert_width_mismatch(&err, 16, 24);
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
