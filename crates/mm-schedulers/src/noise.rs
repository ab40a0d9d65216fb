//! Where stochastic schedulers get their noise from.
//!
//! Every scheduler step takes a `&mut dyn NoiseSource<D>`; deterministic
//! schedulers never call it. Use [`SeededNoise`] for reproducible runs,
//! [`QueuedNoise`] to feed exact tensors (tests, noise from another tool),
//! [`NoNoise`] for deterministic schedulers.

use std::collections::VecDeque;

use burn::tensor::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::StandardNormal;

use crate::common::from_vec;
use crate::error::{Result, SchedulerError};

/// A source of standard-normal noise.
pub trait NoiseSource<const D: usize> {
    /// Noise of `shape` on `device`.
    fn noise(&mut self, shape: [usize; D], device: &Device) -> Result<Tensor<D>>;
}

/// Standard-normal noise from a seeded `StdRng`: the same seed gives the same run.
#[derive(Debug)]
pub struct SeededNoise {
    rng: StdRng,
}

impl SeededNoise {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
        }
    }
}

impl<const D: usize> NoiseSource<D> for SeededNoise {
    fn noise(&mut self, shape: [usize; D], device: &Device) -> Result<Tensor<D>> {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n)
            .map(|_| self.rng.sample::<f32, _>(StandardNormal))
            .collect();
        Ok(from_vec(v, shape, device))
    }
}

/// Hands out given tensors in order; errors when empty or on a shape mismatch.
#[derive(Debug, Default)]
pub struct QueuedNoise<const D: usize> {
    queue: VecDeque<Tensor<D>>,
}

impl<const D: usize> QueuedNoise<D> {
    /// A queue of noise tensors.
    pub fn new(noise: impl IntoIterator<Item = Tensor<D>>) -> Self {
        Self {
            queue: noise.into_iter().collect(),
        }
    }

    /// Appends a tensor.
    pub fn push(&mut self, t: Tensor<D>) {
        self.queue.push_back(t);
    }

    /// Tensors not consumed yet.
    pub fn remaining(&self) -> usize {
        self.queue.len()
    }
}

impl<const D: usize> NoiseSource<D> for QueuedNoise<D> {
    fn noise(&mut self, shape: [usize; D], _device: &Device) -> Result<Tensor<D>> {
        let t = self
            .queue
            .pop_front()
            .ok_or_else(|| SchedulerError::Noise("noise queue is empty".into()))?;
        if t.dims() != shape {
            return Err(SchedulerError::Shape(format!(
                "noise {:?} vs sample {:?}",
                t.dims(),
                shape
            )));
        }
        Ok(t)
    }
}

/// For deterministic schedulers: errors if noise is ever requested.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoNoise;

impl<const D: usize> NoiseSource<D> for NoNoise {
    fn noise(&mut self, _shape: [usize; D], _device: &Device) -> Result<Tensor<D>> {
        Err(SchedulerError::Noise(
            "this run has no noise source but the scheduler is stochastic".into(),
        ))
    }
}
