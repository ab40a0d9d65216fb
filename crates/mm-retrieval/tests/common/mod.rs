//! Test helpers: an embedder over a table of known vectors, synthetic catalogues with ground
//! truth, exact brute-force search.
#![allow(dead_code)]

pub mod checks;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::RgbImage;
use mm_retrieval::{Embedder, ItemId, Result};

/// A deterministic generator (SplitMix64 + Box–Muller), so tests need no RNG crate.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 0.5) / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
    pub fn gaussian(&mut self, dim: usize, sigma: f32) -> Vec<f32> {
        (0..dim).map(|_| sigma * self.normal()).collect()
    }
    pub fn unit(&mut self, dim: usize) -> Vec<f32> {
        normalize(self.gaussian(dim, 1.0))
    }
}

pub fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

pub fn add(a: &[f32], b: &[f32]) -> Vec<f32> {
    a.iter().zip(b).map(|(x, y)| x + y).collect()
}

/// A 2 × 2 image carrying a 32-bit key in its first four channel bytes.
pub fn key_image(key: u32) -> RgbImage {
    let b = key.to_le_bytes();
    RgbImage::from_raw(2, 2, vec![b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0]).unwrap()
}

fn image_key(image: &RgbImage) -> Option<u32> {
    let raw = image.as_raw();
    (image.dimensions() == (2, 2)).then(|| u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

/// An embedder that looks texts and (keyed) images up in tables; anything else gets a vector
/// derived from a hash of its content.
#[derive(Debug)]
pub struct TableEmbedder {
    pub dim: usize,
    pub texts: Mutex<HashMap<String, Vec<f32>>>,
    pub images: Mutex<HashMap<u32, Vec<f32>>>,
}

impl TableEmbedder {
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            texts: Mutex::new(HashMap::new()),
            images: Mutex::new(HashMap::new()),
        }
    }
    pub fn set_text(&self, text: &str, v: Vec<f32>) {
        self.texts.lock().unwrap().insert(text.into(), v);
    }
    pub fn set_image(&self, key: u32, v: Vec<f32>) {
        self.images.lock().unwrap().insert(key, v);
    }
    fn fallback(&self, bytes: &[u8]) -> Vec<f32> {
        Rng::new(mm_retrieval::item::id_from_key(&String::from_utf8_lossy(
            bytes,
        )))
        .unit(self.dim)
    }
}

impl Embedder for TableEmbedder {
    fn model_id(&self) -> &str {
        "table"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let table = self.texts.lock().unwrap();
        Ok(texts
            .iter()
            .map(|t| {
                table
                    .get(*t)
                    .cloned()
                    .unwrap_or_else(|| self.fallback(t.as_bytes()))
            })
            .collect())
    }
    fn embed_images(&self, images: &[RgbImage]) -> Result<Vec<Vec<f32>>> {
        let table = self.images.lock().unwrap();
        Ok(images
            .iter()
            .map(|i| {
                image_key(i)
                    .and_then(|k| table.get(&k).cloned())
                    .unwrap_or_else(|| self.fallback(i.as_raw()))
            })
            .collect())
    }
}

/// Exact top-k by cosine (vectors normalised), best first, ties by id.
pub fn brute_force(vectors: &[(ItemId, Vec<f32>)], query: &[f32], k: usize) -> Vec<ItemId> {
    let q = normalize(query.to_vec());
    let mut scored: Vec<(f32, ItemId)> = vectors
        .iter()
        .map(|(id, v)| {
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            (v.iter().zip(&q).map(|(a, b)| a * b).sum::<f32>() / n, *id)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, id)| id).collect()
}

/// A fresh folder under the target directory, removed first if it exists.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mm-retrieval-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn assets() -> PathBuf {
    match std::env::var_os("MM_ASSETS") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join("../shared/assets"),
    }
}
