//! The catalogue checks of `tests/catalog.rs` against a live Qdrant server (feature `server`).
//! They run when `MM_QDRANT_URL` names a server's gRPC endpoint; without it the live test says
//! so and passes (no server can be started where the workspace's CI runs):
//!
//! ```text
//! docker run -p 6333:6333 -p 6334:6334 qdrant/qdrant
//! MM_QDRANT_URL=http://localhost:6334 cargo test --release -p mm-retrieval --features server \
//!     --test server -- --nocapture
//! ```
#![cfg(feature = "server")]

mod common;

use common::TableEmbedder;
use common::checks;
use mm_retrieval::{Catalog, Error, ItemId, SearchOptions, ServerStore};

/// A collection name of this run, so runs do not meet.
fn collection(check: &str) -> String {
    format!("mm-retrieval-test-{check}-{}", std::process::id())
}

#[test]
fn live_server() {
    let Ok(url) = std::env::var("MM_QDRANT_URL") else {
        eprintln!("MM_QDRANT_URL is not set: the live Qdrant server checks did not run");
        return;
    };
    let embedder = TableEmbedder::new(16);

    let name = collection("incremental");
    let store = ServerStore::connect(&url, &name, 16).unwrap();
    let catalog = Catalog::with_store(&embedder, store).unwrap();
    checks::incremental_add_update_delete(&embedder, &catalog);
    let query = SearchOptions::new(10);
    let ranked = |catalog: &Catalog<&TableEmbedder, ServerStore>| -> Vec<(ItemId, f32)> {
        let hits = catalog.search_text("product 3", &query).unwrap();
        hits.iter().map(|h| (h.id, h.score)).collect()
    };
    let before = ranked(&catalog);
    drop(catalog);
    // Connecting again finds the collection as it was left.
    let store = ServerStore::connect(&url, &name, 16).unwrap();
    let catalog = Catalog::with_store(&embedder, store).unwrap();
    assert_eq!(catalog.len().unwrap(), 49);
    assert_eq!(ranked(&catalog), before);
    drop(catalog);
    // Another width is a typed error.
    let err = ServerStore::connect(&url, &name, 24).unwrap_err();
    checks::assert_width_mismatch(&err, 16, 24);
    ServerStore::connect(&url, &name, 16)
        .unwrap()
        .delete_collection()
        .unwrap();

    let name = collection("filters");
    let store = ServerStore::connect(&url, &name, 16).unwrap();
    let catalog = Catalog::with_store(&embedder, store).unwrap();
    checks::payload_filters(&embedder, &catalog);
    drop(catalog);
    ServerStore::connect(&url, &name, 16)
        .unwrap()
        .delete_collection()
        .unwrap();
}

/// No server at the address: a typed error, not a panic or a hang.
#[test]
fn no_server_is_a_store_error() {
    let err = ServerStore::connect("http://127.0.0.1:9", "products", 16).unwrap_err();
    assert!(matches!(err, Error::Store(_)), "{err}");
}
