//! End to end through the real pipeline: the tiny random CLIP saved by transformers
//! (`tests/fixtures/saved/clip`) on the photos of `$MM_ASSETS/images`, with an unreadable file
//! in the folder. Random weights, so only self-matches are meaningful.

mod common;

use common::{TableEmbedder, assets, repo_root, temp_dir};
use mm_retrieval::embedder::load_image_text;
use mm_retrieval::{
    Catalog, ClipEmbedder, Embedder, Error, IndexOptions, Item, SearchMode, SearchOptions,
};

#[test]
fn tiny_clip_on_real_photos() {
    let device = mm_core::device::cpu();
    let model = repo_root().join("tests/fixtures/saved/clip");
    let clip = ClipEmbedder::load(model.to_str().unwrap(), &device).unwrap();
    assert_eq!(clip.dim(), 8);
    let dir = temp_dir("clip");
    let images = assets().join("images");
    let photos = [
        "astronaut.png",
        "chelsea.png",
        "coffee.png",
        "camera.png",
        "rocket.jpg",
    ];
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("broken.jpg"), b"\xff\xd8\xff not really a jpeg").unwrap();
    let mut items: Vec<Item> = photos
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Item::new(i as u64)
                .with_image_path(images.join(name))
                .with_text(format!("a photo: {name}"))
        })
        .collect();
    items.insert(
        2,
        Item::new(99)
            .with_image_path(dir.join("broken.jpg"))
            .with_text("broken"),
    );
    let db = dir.join("db");
    let catalog = Catalog::create(&db, &clip).unwrap();
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
    assert_eq!(report.indexed, 5);
    assert_eq!(report.skipped.len(), 1);
    assert_eq!(report.skipped[0].id, 99);
    assert!(matches!(
        report.skipped[0].error,
        Error::Core(mm_core::Error::Image { .. })
    ));

    // A photo finds itself first in the image index, with similarity 1.
    for (i, name) in photos.iter().enumerate() {
        let hits = catalog
            .search_image_file(
                images.join(name),
                &SearchOptions::new(3).mode(SearchMode::Image),
            )
            .unwrap();
        assert_eq!(hits[0].id, i as u64, "{name}");
        assert!((hits[0].score - 1.0).abs() < 1e-4);
        assert_eq!(hits[0].item.image_path(), Some(images.join(name).as_path()));
    }
    // Its caption finds it first in the text index.
    let hits = catalog
        .search_text(
            "a photo: coffee.png",
            &SearchOptions::new(5).mode(SearchMode::Text),
        )
        .unwrap();
    assert_eq!(hits[0].id, 2);
    // Fused queries return every item, each with both similarities.
    let hits = catalog
        .search_text("a cat", &SearchOptions::new(10))
        .unwrap();
    assert_eq!(hits.len(), 5);
    assert!(
        hits.iter()
            .all(|h| h.image_score.is_some() && h.text_score.is_some())
    );
    // A query image that is not an image.
    assert!(matches!(
        catalog
            .search_image_file(dir.join("broken.jpg"), &SearchOptions::new(3))
            .unwrap_err(),
        Error::QueryImage { .. }
    ));
    drop(catalog);

    // Reopened with the same model: the same answers.
    let boxed = load_image_text(model.to_str().unwrap(), &device).unwrap();
    let catalog = Catalog::open(&db, boxed).unwrap();
    assert_eq!(catalog.len().unwrap(), 5);
    let hits = catalog
        .search_image_file(
            images.join("chelsea.png"),
            &SearchOptions::new(1).mode(SearchMode::Image),
        )
        .unwrap();
    assert_eq!(hits[0].id, 1);
    drop(catalog);
    // Reopened with a model of another width: a typed error.
    let err = Catalog::open(&db, TableEmbedder::new(512)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::DimensionMismatch {
                stored: 8,
                embedder: 512,
                ..
            }
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn siglip_is_an_embedder_too() {
    let device = mm_core::device::cpu();
    let model = repo_root().join("tests/fixtures/saved/siglip");
    let siglip = load_image_text(model.to_str().unwrap(), &device).unwrap();
    let v = siglip.embed_texts(&["a cat", "a dog"]).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].len(), siglip.dim());
    let image = mm_core::image::load_image(assets().join("images/chelsea.png")).unwrap();
    assert_eq!(
        siglip.embed_images(&[image]).unwrap()[0].len(),
        siglip.dim()
    );
    // Not an image–text model.
    let err = load_image_text(
        repo_root()
            .join("tests/fixtures/saved/vit")
            .to_str()
            .unwrap(),
        &device,
    );
    assert!(matches!(err, Err(Error::InvalidInput(_))));
}
