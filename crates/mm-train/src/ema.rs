//! An exponential moving average of a model's weights (diffusers' `EMAModel`).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// A copy of a model, without autodiff, whose float parameters follow the trained model's as
/// `ema ← d · ema + (1 − d) · θ` after each step, with diffusers' warm-up of the decay
/// `d = min(max_decay, (1 + n) / (10 + n))` for the `n`-th update. Parameters are matched by
/// [`ParamId`], which optimizer steps keep.
#[derive(Debug, Clone)]
pub struct Ema<M> {
    model: M,
    max_decay: f64,
    updates: usize,
}

impl<M: Module> Ema<M> {
    /// Starts the average at `model`'s current weights.
    pub fn new(model: &M, max_decay: f64) -> Self {
        Self {
            model: model.valid(),
            max_decay,
            updates: 0,
        }
    }

    /// Resumes an average saved after `updates` updates.
    pub fn resume(model: M, max_decay: f64, updates: usize) -> Self {
        Self {
            model: model.valid(),
            max_decay,
            updates,
        }
    }

    /// The decay the next update uses.
    pub fn decay(&self) -> f64 {
        let n = self.updates as f64;
        self.max_decay.min((1.0 + n) / (10.0 + n))
    }

    /// How many updates were made.
    pub fn updates(&self) -> usize {
        self.updates
    }

    /// Moves the average towards `model`'s weights.
    pub fn update(&mut self, model: &M) {
        let mut live = Collect(HashMap::new());
        model.visit(&mut live);
        let mut blend = Blend {
            live: live.0,
            decay: self.decay(),
        };
        self.model = self.model.clone().map(&mut blend);
        self.updates += 1;
    }

    /// The averaged model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// Takes the averaged model.
    pub fn into_model(self) -> M {
        self.model
    }
}

/// Every float parameter, flattened, without autodiff.
struct Collect(HashMap<ParamId, Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.0
            .insert(param.id, param.val().inner().flatten(0, D - 1));
    }
}

struct Blend {
    live: HashMap<ParamId, Tensor<1>>,
    decay: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(live) = self.live.remove(&param.id) else {
            return param;
        };
        let decay = self.decay;
        param.map(|t| {
            let shape = t.shape();
            t * decay + live.reshape(shape) * (1.0 - decay)
        })
    }
}
