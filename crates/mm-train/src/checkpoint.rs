//! Saving and resuming a training run: the weights in safetensors with the checkpoint's own
//! names (so diffusers / transformers read them), the optimizer state, the EMA weights and the
//! step.
//!
//! The optimizer keys its state by [`ParamId`]; a model rebuilt and loaded from a file has
//! fresh ids. [`stable_param_ids`] sets every parameter's id from its path, so the model of a
//! resumed run finds its state again.

use std::path::Path;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::store::ModuleSnapshot;
use burn::tensor::{DType, Int, Tensor};
use mm_core::weights::{Weights, save_safetensors};
use serde::{Deserialize, Serialize};

use crate::ema::Ema;
use crate::{Error, Result, io};

/// The file names in a checkpoint folder.
const MODEL: &str = "model.safetensors";
const EMA: &str = "ema.safetensors";
const OPTIMIZER: &str = "optimizer.bpk";
const STATE: &str = "state.json";

/// Gives every parameter of `module` an id derived from its path (FNV-1a), the same in every
/// run.
pub fn stable_param_ids<M: Module>(module: M) -> M {
    module.map(&mut PathIds { path: Vec::new() })
}

struct PathIds {
    path: Vec<String>,
}

impl PathIds {
    fn id(&self) -> ParamId {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.path.join(".").bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        ParamId::from(hash)
    }
}

impl ModuleMapper for PathIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        param.id = self.id();
        param
    }

    fn map_int<const D: usize>(
        &mut self,
        mut param: Param<Tensor<D, Int>>,
    ) -> Param<Tensor<D, Int>> {
        param.id = self.id();
        param
    }
}

/// The progress saved with a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps taken.
    pub step: usize,
    /// EMA updates made (0 without EMA).
    pub ema_updates: usize,
}

/// Writes `dir/model.safetensors`, `dir/optimizer.bpk`, `dir/ema.safetensors` (with an EMA)
/// and `dir/state.json`.
pub fn save<M: Module + ModuleSnapshot>(
    dir: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    ema: Option<&Ema<M>>,
    step: usize,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    save_safetensors(model, dir.join(MODEL), DType::F32)?;
    if let Some(ema) = ema {
        save_safetensors(ema.model(), dir.join(EMA), DType::F32)?;
    }
    optimizer
        .save(dir.join(OPTIMIZER))
        .map_err(|e| Error::Checkpoint(format!("{}: {e:?}", dir.join(OPTIMIZER).display())))?;
    let state = TrainState {
        step,
        ema_updates: ema.map_or(0, Ema::updates),
    };
    let json =
        serde_json::to_string_pretty(&state).map_err(|e| Error::Checkpoint(e.to_string()))?;
    std::fs::write(dir.join(STATE), json).map_err(|e| io(dir, e))
}

/// What [`resume`] restores.
pub struct Resumed<M> {
    /// The model, its weights loaded, its ids stable.
    pub model: M,
    /// The optimizer with its state.
    pub optimizer: ModuleOptimizer,
    /// The EMA weights, when the checkpoint has them (its ids stable too).
    pub ema: Option<M>,
    /// The saved progress.
    pub state: TrainState,
}

/// Whether `dir` holds a checkpoint written by [`save`].
pub fn exists(dir: &Path) -> bool {
    dir.join(STATE).is_file()
}

/// Reads a checkpoint folder written by [`save`] into `fresh` (a model of the same config,
/// on the training device) and `optimizer` (configured as for the saved run).
pub fn resume<M: Module + ModuleSnapshot + Clone>(
    dir: &Path,
    fresh: M,
    optimizer: ModuleOptimizer,
) -> Result<Resumed<M>> {
    let state: TrainState = mm_core::config::read_json(dir.join(STATE))?;
    let fresh = stable_param_ids(fresh);
    let model = Weights::open(dir.join(MODEL))?.load_into(fresh.clone())?;
    let ema = if dir.join(EMA).is_file() {
        Some(Weights::open(dir.join(EMA))?.load_into(fresh.valid())?)
    } else {
        None
    };
    let optimizer = optimizer
        .load(dir.join(OPTIMIZER))
        .map_err(|e| Error::Checkpoint(format!("{}: {e:?}", dir.join(OPTIMIZER).display())))?;
    Ok(Resumed {
        model,
        optimizer,
        ema,
        state,
    })
}
