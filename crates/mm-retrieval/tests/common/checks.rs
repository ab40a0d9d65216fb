//! Catalogue checks that hold for every store: run on the embedded store by `tests/catalog.rs`
//! and on a Qdrant server by `tests/server.rs`.

use mm_retrieval::{
    Catalog, Error, Filter, Fusion, IndexOptions, Item, ItemId, SearchMode, SearchOptions,
    VectorStore,
};

use super::{Rng, TableEmbedder, key_image};

/// `n` items with text and image vectors, a category (`c0` … `c4`) and a price.
pub fn catalogue(embedder: &TableEmbedder, n: u64, seed: u64) -> Vec<Item> {
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

pub fn ids(hits: &[mm_retrieval::Hit]) -> Vec<ItemId> {
    hits.iter().map(|h| h.id).collect()
}

/// Index, search, add, update and delete, on an empty catalogue of width 16 over `embedder`.
pub fn incremental_add_update_delete<S: VectorStore>(
    embedder: &TableEmbedder,
    catalog: &Catalog<&TableEmbedder, S>,
) {
    let items = catalogue(embedder, 50, 1);
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
    embedder.set_text("a new scarf", Rng::new(99).unit(16));
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
    embedder.set_text("renamed", Rng::new(5).unit(16));
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
}

/// Payload filters in every search mode, and bad filters as typed errors, on an empty
/// catalogue of width 16 over `embedder`.
pub fn payload_filters<S: VectorStore>(
    embedder: &TableEmbedder,
    catalog: &Catalog<&TableEmbedder, S>,
) {
    let items = catalogue(embedder, 200, 2);
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
}

/// `err` says a store of width `stored` met an embedder of width `embedder`.
pub fn assert_width_mismatch(err: &Error, stored: usize, embedder: usize) {
    assert!(
        matches!(
            err,
            Error::DimensionMismatch { stored: s, embedder: e, .. } if *s == stored && *e == embedder
        ),
        "{err}"
    );
}
