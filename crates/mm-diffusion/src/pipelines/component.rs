//! [`Component`]: a model of a pipeline that is either kept in memory or loaded for each use
//! ([`MemoryMode`]).

use std::fmt;
use std::ops::Deref;

use crate::Result;

/// Where a pipeline keeps its models between calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryMode {
    /// Every model stays loaded (fastest; the memory of all of them at once).
    #[default]
    Resident,
    /// Only the model that is running is in memory: the text encoders are loaded for the
    /// prompt and dropped, then the denoiser for the loop — the CPU counterpart of diffusers'
    /// `enable_model_cpu_offload`. The autoencoder, the smallest model (84 M parameters for
    /// SDXL, 2.4 % of the pipeline), stays loaded: the checks before the first step use it.
    /// Each call reads the weights again (from the page cache after the first time).
    Sequential,
}

type Loader<T> = Box<dyn Fn() -> Result<T> + Send + Sync>;

/// A model of a pipeline: resident, or loaded by a closure each time it is used and dropped
/// afterwards ([`MemoryMode::Sequential`]).
pub enum Component<T> {
    /// Kept in memory.
    Resident(T),
    /// Loaded for each use.
    OnDemand(Loader<T>),
}

impl<T> Component<T> {
    /// A component that loads with `load` each time it is used.
    pub fn on_demand(load: impl Fn() -> Result<T> + Send + Sync + 'static) -> Self {
        Self::OnDemand(Box::new(load))
    }

    /// A component loaded by `load`: now ([`MemoryMode::Resident`]) or at each use.
    pub fn with_mode(
        mode: MemoryMode,
        load: impl Fn() -> Result<T> + Send + Sync + 'static,
    ) -> Result<Self> {
        Ok(match mode {
            MemoryMode::Resident => Self::Resident(load()?),
            MemoryMode::Sequential => Self::on_demand(load),
        })
    }

    /// The model: borrowed when resident, freshly loaded otherwise (dropped with the
    /// returned value).
    pub fn get(&self) -> Result<Held<'_, T>> {
        Ok(match self {
            Self::Resident(model) => Held::Borrowed(model),
            Self::OnDemand(load) => Held::Owned(load()?),
        })
    }

    /// The model if it is resident.
    pub fn resident(&self) -> Option<&T> {
        match self {
            Self::Resident(model) => Some(model),
            Self::OnDemand(_) => None,
        }
    }

    /// The resident model, mutably (`None` when loaded on demand).
    pub fn resident_mut(&mut self) -> Option<&mut T> {
        match self {
            Self::Resident(model) => Some(model),
            Self::OnDemand(_) => None,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Component<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Resident(model) => f.debug_tuple("Resident").field(model).finish(),
            Self::OnDemand(_) => f.write_str("OnDemand"),
        }
    }
}

/// A model borrowed from a resident [`Component`] or loaded for one use.
#[derive(Debug)]
pub enum Held<'a, T> {
    /// The resident model.
    Borrowed(&'a T),
    /// A model loaded for this use; dropping it frees its memory.
    Owned(T),
}

impl<T> Deref for Held<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        match self {
            Self::Borrowed(model) => model,
            Self::Owned(model) => model,
        }
    }
}
