//! The shapes world: a deterministic, seeded generator of images with captions.
//!
//! Every sample is a function of `(seed, split, index)` alone — no state, no files — so a
//! training run, its evaluation and a test can each draw sample 12 345 without drawing the
//! ones before it. A sample holds one object, or two on opposite sides, each a [`ShapeKind`]
//! in a [`Color`], at a [`Position`], of a [`Size`], on a [`Background`], drawn with 4 × 4
//! supersampled edges, and a caption from one of several templates ("a small red circle on
//! the left", "on the left, a red circle", "a red circle on the left on a black background",
//! …).
//!
//! **Held-out split.** Some colour–shape pairs never occur in [`Split::Train`]: pair `(c, s)`
//! (indices into [`Color::ALL`] and [`ShapeKind::ALL`]) is held out when
//! `(c + 2·s + seed) mod 8 = 0` — one colour per shape, six pairs, every colour and every
//! shape still seen in training with others. [`Split::HeldOut`] samples put a held-out pair
//! first (the second object, if any, is a training pair): a model that composes colour and
//! shape gets them right without having seen them together.

use image::{Rgb, RgbImage};

use crate::{Error, Result};

/// A shape an object is drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShapeKind {
    /// A disc.
    Circle,
    /// An axis-aligned square.
    Square,
    /// An equilateral triangle pointing up.
    Triangle,
    /// A five-pointed star pointing up.
    Star,
    /// A square turned 45°.
    Diamond,
    /// A plus sign.
    Cross,
}

impl ShapeKind {
    /// Every shape, in index order.
    pub const ALL: [Self; 6] = [
        Self::Circle,
        Self::Square,
        Self::Triangle,
        Self::Star,
        Self::Diamond,
        Self::Cross,
    ];

    /// The word captions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Circle => "circle",
            Self::Square => "square",
            Self::Triangle => "triangle",
            Self::Star => "star",
            Self::Diamond => "diamond",
            Self::Cross => "cross",
        }
    }

    /// Whether the point `(x, y)` (relative to the centre, in units of the radius, `y`
    /// pointing down) is inside the shape.
    pub fn contains(self, x: f64, y: f64) -> bool {
        match self {
            Self::Circle => x * x + y * y <= 1.0,
            Self::Square => x.abs() <= 0.85 && y.abs() <= 0.85,
            Self::Diamond => x.abs() + y.abs() <= 1.0,
            Self::Cross => (x.abs() <= 0.3 && y.abs() <= 0.9) || (y.abs() <= 0.3 && x.abs() <= 0.9),
            Self::Triangle => in_polygon(&TRIANGLE, x, y),
            Self::Star => in_polygon(&STAR, x, y),
        }
    }
}

/// The triangle's corners (radius 1, pointing up).
const TRIANGLE: [(f64, f64); 3] = [(0.0, -1.0), (0.866_025, 0.5), (-0.866_025, 0.5)];

/// The star's outline: outer radius 1, inner radius 0.45, first point up.
const STAR: [(f64, f64); 10] = star_outline();

const fn star_outline() -> [(f64, f64); 10] {
    // cos / sin of -90° + 36°·k, k = 0..10 (const fn cannot call them).
    const COS: [f64; 10] = [
        0.0, 0.587_785, 0.951_057, 0.951_057, 0.587_785, 0.0, -0.587_785, -0.951_057, -0.951_057,
        -0.587_785,
    ];
    const SIN: [f64; 10] = [
        -1.0, -0.809_017, -0.309_017, 0.309_017, 0.809_017, 1.0, 0.809_017, 0.309_017, -0.309_017,
        -0.809_017,
    ];
    let mut out = [(0.0, 0.0); 10];
    let mut k = 0;
    while k < 10 {
        let r = if k % 2 == 0 { 1.0 } else { 0.45 };
        out[k] = (r * COS[k], r * SIN[k]);
        k += 1;
    }
    out
}

/// Even-odd point-in-polygon test.
fn in_polygon(corners: &[(f64, f64)], x: f64, y: f64) -> bool {
    let mut inside = false;
    let mut j = corners.len() - 1;
    for (i, &(xi, yi)) in corners.iter().enumerate() {
        let (xj, yj) = corners[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

/// An object's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    /// Red.
    Red,
    /// Green.
    Green,
    /// Blue.
    Blue,
    /// Yellow.
    Yellow,
    /// Purple.
    Purple,
    /// Orange.
    Orange,
    /// Cyan.
    Cyan,
    /// Pink.
    Pink,
}

impl Color {
    /// Every colour, in index order.
    pub const ALL: [Self; 8] = [
        Self::Red,
        Self::Green,
        Self::Blue,
        Self::Yellow,
        Self::Purple,
        Self::Orange,
        Self::Cyan,
        Self::Pink,
    ];

    /// The word captions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Red => "red",
            Self::Green => "green",
            Self::Blue => "blue",
            Self::Yellow => "yellow",
            Self::Purple => "purple",
            Self::Orange => "orange",
            Self::Cyan => "cyan",
            Self::Pink => "pink",
        }
    }

    /// The sRGB value it is drawn in.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Self::Red => [220, 30, 30],
            Self::Green => [30, 170, 40],
            Self::Blue => [30, 60, 220],
            Self::Yellow => [240, 220, 30],
            Self::Purple => [140, 40, 180],
            Self::Orange => [250, 140, 20],
            Self::Cyan => [30, 200, 210],
            Self::Pink => [250, 130, 190],
        }
    }
}

/// Where an object is: the centre of the image, or halfway to one of its sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// Left half.
    Left,
    /// Right half.
    Right,
    /// Top half.
    Top,
    /// Bottom half.
    Bottom,
    /// Centre.
    Center,
}

impl Position {
    /// Every position, in index order.
    pub const ALL: [Self; 5] = [
        Self::Left,
        Self::Right,
        Self::Top,
        Self::Bottom,
        Self::Center,
    ];

    /// The phrase captions use ("on the left", "in the center", …).
    pub fn phrase(self) -> &'static str {
        match self {
            Self::Left => "on the left",
            Self::Right => "on the right",
            Self::Top => "at the top",
            Self::Bottom => "at the bottom",
            Self::Center => "in the center",
        }
    }

    /// The object's centre before jitter, in fractions of the image side `(x, y)`.
    pub fn anchor(self) -> (f64, f64) {
        match self {
            Self::Left => (0.25, 0.5),
            Self::Right => (0.75, 0.5),
            Self::Top => (0.5, 0.25),
            Self::Bottom => (0.5, 0.75),
            Self::Center => (0.5, 0.5),
        }
    }

    /// The position across the image (two objects are placed opposite each other).
    pub fn opposite(self) -> Self {
        match self {
            Self::Left => Self::Right,
            Self::Right => Self::Left,
            Self::Top => Self::Bottom,
            Self::Bottom => Self::Top,
            Self::Center => Self::Center,
        }
    }
}

/// An object's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    /// Radius 0.12 of the image side.
    Small,
    /// Radius 0.2 of the image side.
    Large,
}

impl Size {
    /// Both sizes.
    pub const ALL: [Self; 2] = [Self::Small, Self::Large];

    /// The word captions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Small => "small",
            Self::Large => "large",
        }
    }

    /// The radius, in fractions of the image side.
    pub fn radius(self) -> f64 {
        match self {
            Self::Small => 0.12,
            Self::Large => 0.2,
        }
    }
}

/// The plain background an image is drawn on (none of the object colours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Background {
    /// White.
    White,
    /// Black.
    Black,
    /// Mid gray.
    Gray,
}

impl Background {
    /// Every background.
    pub const ALL: [Self; 3] = [Self::White, Self::Black, Self::Gray];

    /// The word captions use.
    pub fn name(self) -> &'static str {
        match self {
            Self::White => "white",
            Self::Black => "black",
            Self::Gray => "gray",
        }
    }

    /// The sRGB value.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Self::White => [245, 245, 245],
            Self::Black => [15, 15, 15],
            Self::Gray => [128, 128, 128],
        }
    }
}

/// One object of a sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// Its shape.
    pub shape: ShapeKind,
    /// Its colour.
    pub color: Color,
    /// Where it is.
    pub position: Position,
    /// How large it is.
    pub size: Size,
    /// Its centre after jitter, in fractions of the image side `(x, y)`.
    pub center: (f64, f64),
}

/// Which part of the world a sample comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// Colour–shape pairs seen in training.
    Train,
    /// A held-out colour–shape pair first (see the [module](self) docs).
    HeldOut,
}

/// An image, its caption and what is in it.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The image (`image_size`² RGB).
    pub image: RgbImage,
    /// The caption.
    pub caption: String,
    /// The objects, in caption order.
    pub objects: Vec<Object>,
    /// The background.
    pub background: Background,
}

/// The settings of a [`ShapesWorld`].
#[derive(Debug, Clone, PartialEq)]
pub struct WorldConfig {
    /// Seed of every draw and of the held-out pairs.
    pub seed: u64,
    /// Side of the square images, in pixels (16 to 1024).
    pub image_size: u32,
    /// Probability of a second object (0 to 1).
    pub two_objects: f64,
    /// Largest shift of an object's centre from its position's anchor, in fractions of the
    /// image side (0 to 0.05).
    pub jitter: f64,
}

impl Default for WorldConfig {
    /// Seed 0, 64² images, a second object one time in three, jitter 0.04.
    fn default() -> Self {
        Self {
            seed: 0,
            image_size: 64,
            two_objects: 1.0 / 3.0,
            jitter: 0.04,
        }
    }
}

/// The generator (see the [module](self) docs).
#[derive(Debug, Clone)]
pub struct ShapesWorld {
    config: WorldConfig,
    held_out: Vec<(Color, ShapeKind)>,
    train: Vec<(Color, ShapeKind)>,
}

impl ShapesWorld {
    /// The world of `config`; settings out of their ranges are [`Error::InvalidConfig`].
    pub fn new(config: WorldConfig) -> Result<Self> {
        let bad = |what: String| Err(Error::InvalidConfig(what));
        if !(16..=1024).contains(&config.image_size) {
            return bad(format!("image_size {} (16 to 1024)", config.image_size));
        }
        if !(0.0..=1.0).contains(&config.two_objects) {
            return bad(format!("two_objects {} (0 to 1)", config.two_objects));
        }
        if !(0.0..=0.05).contains(&config.jitter) {
            return bad(format!("jitter {} (0 to 0.05)", config.jitter));
        }
        let (mut held_out, mut train) = (Vec::new(), Vec::new());
        for (c, &color) in Color::ALL.iter().enumerate() {
            for (s, &shape) in ShapeKind::ALL.iter().enumerate() {
                let key = (c as u64 + 2 * s as u64).wrapping_add(config.seed) % 8;
                let list = if key == 0 { &mut held_out } else { &mut train };
                list.push((color, shape));
            }
        }
        Ok(Self {
            config,
            held_out,
            train,
        })
    }

    /// The settings.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The colour–shape pairs that never occur in [`Split::Train`].
    pub fn held_out_pairs(&self) -> &[(Color, ShapeKind)] {
        &self.held_out
    }

    /// The colour–shape pairs of [`Split::Train`].
    pub fn train_pairs(&self) -> &[(Color, ShapeKind)] {
        &self.train
    }

    /// Sample `index` of `split`: the same for the same seed, split and index, whatever else
    /// was drawn.
    pub fn sample(&self, split: Split, index: u64) -> Sample {
        let tag = match split {
            Split::Train => 0x5452_4149_4e00_0000,
            Split::HeldOut => 0x484f_4c44_4f55_5400,
        };
        let mut rng = Rng::new(self.config.seed ^ tag ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let background = *rng.pick(&Background::ALL);
        let first_pairs = match split {
            Split::Train => &self.train,
            Split::HeldOut => &self.held_out,
        };
        let two = rng.uniform() < self.config.two_objects;
        let position = if two {
            *rng.pick(&[Position::Left, Position::Top])
        } else {
            *rng.pick(&Position::ALL)
        };
        let pair = *rng.pick(first_pairs);
        let mut objects = vec![self.object(&mut rng, pair, position)];
        if two {
            let mut pair = *rng.pick(&self.train);
            while pair == (objects[0].color, objects[0].shape) {
                pair = *rng.pick(&self.train);
            }
            objects.push(self.object(&mut rng, pair, position.opposite()));
            if rng.uniform() < 0.5 {
                objects.swap(0, 1);
            }
        }
        let template = rng.below(4);
        self.compose(objects, background, template)
    }

    /// The sample of `objects` on `background`, captioned with template `template` (0 to 3,
    /// taken modulo 4): for building variants of drawn samples (a contrast set that changes
    /// one attribute).
    pub fn compose(&self, objects: Vec<Object>, background: Background, template: u64) -> Sample {
        Sample {
            image: self.render(&objects, background),
            caption: caption(&objects, background, template % 4),
            objects,
            background,
        }
    }

    /// Sample `index` of `split` and, after it, a copy whose first object has another shape
    /// (still a pair of `split`), otherwise identical: a hard negative for contrastive
    /// training, which random batches almost never hold (colour, position, size and
    /// background already tell most captions apart).
    pub fn shape_contrast(&self, split: Split, index: u64) -> [Sample; 2] {
        let sample = self.sample(split, index);
        let pairs = match split {
            Split::Train => &self.train,
            Split::HeldOut => &self.held_out,
        };
        let first = sample.objects[0];
        let others: Vec<ShapeKind> = ShapeKind::ALL
            .into_iter()
            .filter(|&s| s != first.shape && pairs.contains(&(first.color, s)))
            .collect();
        let mut objects = sample.objects.clone();
        if !others.is_empty() {
            objects[0].shape = others[(index as usize / 7) % others.len()];
        }
        let template = Rng::new(index).below(4);
        let variant = self.compose(objects, sample.background, template);
        [sample, variant]
    }

    /// An object of `pair` at `position`, its size and jitter drawn from `rng`.
    fn object(
        &self,
        rng: &mut Rng,
        (color, shape): (Color, ShapeKind),
        position: Position,
    ) -> Object {
        let size = *rng.pick(&Size::ALL);
        let (ax, ay) = position.anchor();
        let j = self.config.jitter;
        let center = (
            ax + j * (2.0 * rng.uniform() - 1.0),
            ay + j * (2.0 * rng.uniform() - 1.0),
        );
        Object {
            shape,
            color,
            position,
            size,
            center,
        }
    }

    /// The image of `objects` on `background`, each pixel the mean of 4 × 4 samples.
    pub fn render(&self, objects: &[Object], background: Background) -> RgbImage {
        const SUB: u32 = 4;
        let n = self.config.image_size;
        let side = f64::from(n);
        RgbImage::from_fn(n, n, |px, py| {
            let mut acc = [0u32; 3];
            for sy in 0..SUB {
                for sx in 0..SUB {
                    let x = (f64::from(px) + (f64::from(sx) + 0.5) / f64::from(SUB)) / side;
                    let y = (f64::from(py) + (f64::from(sy) + 0.5) / f64::from(SUB)) / side;
                    let color = objects
                        .iter()
                        .rev()
                        .find(|o| {
                            let r = o.size.radius();
                            o.shape.contains((x - o.center.0) / r, (y - o.center.1) / r)
                        })
                        .map_or(background.rgb(), |o| o.color.rgb());
                    for (a, c) in acc.iter_mut().zip(color) {
                        *a += u32::from(c);
                    }
                }
            }
            Rgb(acc.map(|a| ((a + SUB * SUB / 2) / (SUB * SUB)) as u8))
        })
    }
}

/// The caption of `objects` on `background` with template `template` (0 to 3).
fn caption(objects: &[Object], background: Background, template: u64) -> String {
    let phrase = |o: &Object| match template {
        0 => format!(
            "{} {} {} {}",
            article(o.size.name()),
            o.color.name(),
            o.shape.name(),
            o.position.phrase()
        ),
        2 => format!(
            "{}, {} {}",
            o.position.phrase(),
            article(o.color.name()),
            o.shape.name()
        ),
        _ => format!(
            "{} {} {}",
            article(o.color.name()),
            o.shape.name(),
            o.position.phrase()
        ),
    };
    let body = objects.iter().map(phrase).collect::<Vec<_>>().join(" and ");
    match template {
        1 => format!("{body} on a {} background", background.name()),
        3 => format!("a picture of {body}"),
        _ => body,
    }
}

/// `word` with its indefinite article ("a red", "an orange").
pub fn article(word: &str) -> String {
    let vowel = word.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {word}", if vowel { "an" } else { "a" })
}

/// SplitMix64: small, fast, and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
