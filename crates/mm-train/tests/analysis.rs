//! The analyser reads the world's own pictures back: the colour, shape and position of the
//! object of every one-object sample.

use mm_train::analysis::analyse;
use mm_train::eval::analyser_scores;
use mm_train::shapes::{Object, ShapesWorld, Split, WorldConfig};

#[test]
fn the_analyser_reads_rendered_samples() {
    let world = ShapesWorld::new(WorldConfig::default()).unwrap();
    let samples: Vec<_> = (0..)
        .map(|i| world.sample(Split::HeldOut, i))
        .filter(|s| s.objects.len() == 1)
        .take(300)
        .collect();
    let images: Vec<_> = samples.iter().map(|s| s.image.clone()).collect();
    let objects: Vec<Object> = samples.iter().map(|s| s.objects[0]).collect();
    let scores = analyser_scores(&images, &objects);
    eprintln!("analyser on 300 rendered held-out samples: {scores:?}");
    assert_eq!(scores.color, 1.0);
    assert_eq!(scores.position, 1.0);
    assert!(scores.shape >= 0.97, "{scores:?}");
}

#[test]
fn a_blank_image_has_no_object() {
    let image = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    let a = analyse(&image);
    assert_eq!((a.color, a.shape, a.position), (None, None, None));
    assert!(analyse(&image::RgbImage::new(4, 4)).color.is_none());
}
