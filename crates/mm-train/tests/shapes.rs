//! The shapes world: deterministic per (seed, split, index), held-out pairs never in
//! training, captions that say what is drawn, and pixels that show it.

use mm_train::Error;
use mm_train::shapes::{Color, Position, ShapeKind, ShapesWorld, Split, WorldConfig};

fn world() -> ShapesWorld {
    ShapesWorld::new(WorldConfig::default()).unwrap()
}

#[test]
fn samples_are_a_function_of_seed_split_and_index() {
    let world = world();
    let a = world.sample(Split::Train, 17);
    let b = world.sample(Split::Train, 17);
    assert_eq!(a.image, b.image);
    assert_eq!(a.caption, b.caption);
    assert_ne!(world.sample(Split::Train, 18).image, a.image);
    let other = ShapesWorld::new(WorldConfig {
        seed: 1,
        ..WorldConfig::default()
    })
    .unwrap();
    assert_ne!(other.sample(Split::Train, 17).caption, a.caption);
}

#[test]
fn held_out_pairs_never_occur_in_training() {
    let world = world();
    let held = world.held_out_pairs().to_vec();
    assert_eq!(held.len(), 6);
    // Every colour and every shape still occurs in training with others.
    for color in Color::ALL {
        assert!(world.train_pairs().iter().any(|p| p.0 == color));
    }
    for shape in ShapeKind::ALL {
        assert!(world.train_pairs().iter().any(|p| p.1 == shape));
        assert_eq!(held.iter().filter(|p| p.1 == shape).count(), 1);
    }
    let mut two = 0;
    for i in 0..600 {
        let s = world.sample(Split::Train, i);
        two += usize::from(s.objects.len() == 2);
        assert!(
            s.objects
                .iter()
                .all(|o| !held.contains(&(o.color, o.shape))),
            "{}",
            s.caption
        );
        let h = world.sample(Split::HeldOut, i);
        assert!(h.objects.iter().any(|o| held.contains(&(o.color, o.shape))));
    }
    // About a third of the samples have two objects.
    assert!((150..250).contains(&two), "{two}");
}

#[test]
fn captions_name_the_objects_and_pixels_show_them() {
    let world = world();
    for i in 0..200 {
        let s = world.sample(Split::Train, i);
        for o in &s.objects {
            assert!(s.caption.contains(o.color.name()), "{}", s.caption);
            assert!(s.caption.contains(o.shape.name()), "{}", s.caption);
            assert!(s.caption.contains(o.position.phrase()), "{}", s.caption);
            // The object's colour is drawn at its centre (every shape covers its centre).
            let n = f64::from(world.config().image_size);
            let (x, y) = ((o.center.0 * n) as u32, (o.center.1 * n) as u32);
            assert_eq!(s.image.get_pixel(x, y).0, o.color.rgb(), "{}", s.caption);
        }
        // Two objects sit on opposite sides.
        if let [a, b] = &s.objects[..] {
            assert_eq!(a.position.opposite(), b.position);
            assert_ne!(a.position, Position::Center);
        }
        // The background shows in a corner.
        assert_eq!(s.image.get_pixel(0, 0).0, s.background.rgb());
    }
}

#[test]
fn shapes_cover_what_their_geometry_says() {
    // The fraction of the radius-1 box each shape covers.
    let coverage = |shape: ShapeKind| {
        let n = 400;
        let inside = (0..n * n)
            .filter(|i| {
                let x = (f64::from(i % n) + 0.5) / f64::from(n) * 2.0 - 1.0;
                let y = (f64::from(i / n) + 0.5) / f64::from(n) * 2.0 - 1.0;
                shape.contains(x, y)
            })
            .count();
        inside as f64 / f64::from(n * n)
    };
    let expected = [
        (ShapeKind::Circle, std::f64::consts::PI / 4.0),
        (ShapeKind::Square, 0.85 * 0.85),
        (ShapeKind::Diamond, 0.5),
        (ShapeKind::Triangle, 3.0 * 3f64.sqrt() / 16.0),
        (ShapeKind::Cross, (2.0 * 0.6 * 1.8 - 0.36) / 4.0),
        // Ten triangles of sides 1 and 0.45 at 36°.
        (ShapeKind::Star, 5.0 * 0.45 * 36f64.to_radians().sin() / 4.0),
    ];
    for (shape, area) in expected {
        assert!(
            (coverage(shape) - area).abs() < 0.01,
            "{shape:?}: {}",
            coverage(shape)
        );
    }
}

#[test]
fn bad_settings_are_typed_errors() {
    for config in [
        WorldConfig {
            image_size: 8,
            ..WorldConfig::default()
        },
        WorldConfig {
            two_objects: 1.5,
            ..WorldConfig::default()
        },
        WorldConfig {
            jitter: 0.2,
            ..WorldConfig::default()
        },
    ] {
        assert!(matches!(
            ShapesWorld::new(config),
            Err(Error::InvalidConfig(_))
        ));
    }
}

#[test]
fn shape_contrast_changes_only_the_shape() {
    let world = ShapesWorld::new(WorldConfig::default()).unwrap();
    for i in 0..200 {
        let [a, b] = world.shape_contrast(Split::Train, i);
        let drawn = world.sample(Split::Train, i);
        assert_eq!((&a.caption, &a.objects), (&drawn.caption, &drawn.objects));
        assert_ne!(a.objects[0].shape, b.objects[0].shape);
        assert!(
            world
                .train_pairs()
                .contains(&(b.objects[0].color, b.objects[0].shape))
        );
        assert_eq!(a.objects[0].color, b.objects[0].color);
        assert_eq!(a.objects[0].center, b.objects[0].center);
        assert_eq!(a.objects[1..], b.objects[1..]);
        assert_eq!(a.background, b.background);
        assert!(
            b.caption.contains(b.objects[0].shape.name()),
            "{}",
            b.caption
        );
    }
}
