//! Building any scheduler by diffusers class name, from any compatible config.

use serde_json::Value;

use crate::config::{SchedulerConfig, class_name_of};
use crate::error::{Result, SchedulerError};
use crate::scheduler::Scheduler;

/// The diffusers class names this crate implements.
pub const SUPPORTED_CLASSES: &[&str] = &[
    "DDIMScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DDPMScheduler",
    "LCMScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "PNDMScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "DPMSolverSinglestepScheduler",
];

fn build<const D: usize, C, S>(
    config: &Value,
    new: fn(C) -> Result<S>,
) -> Result<Box<dyn Scheduler<D>>>
where
    C: SchedulerConfig,
    S: Scheduler<D> + 'static,
{
    Ok(Box::new(new(C::from_value(config)?)?))
}

/// Builds the scheduler `class_name` from a config JSON of any scheduler
/// (diffusers' `Class.from_config(other.config)`): e.g. the Euler ancestral
/// scheduler of SDXL from its DDIM-style `scheduler_config.json`.
pub fn scheduler_from_config<const D: usize>(
    class_name: &str,
    config: &Value,
) -> Result<Box<dyn Scheduler<D>>> {
    use crate::*;
    match class_name {
        "DDIMScheduler" => build::<D, DdimConfig, _>(config, DdimScheduler::new),
        "EulerDiscreteScheduler" => build::<D, EulerConfig, _>(config, EulerScheduler::new),
        "EulerAncestralDiscreteScheduler" => {
            build::<D, EulerAncestralConfig, _>(config, EulerAncestralScheduler::new)
        }
        "DPMSolverMultistepScheduler" => {
            build::<D, DpmSolverMultistepConfig, _>(config, DpmSolverMultistepScheduler::<D>::new)
        }
        "DDPMScheduler" => build::<D, DdpmConfig, _>(config, DdpmScheduler::new),
        "LCMScheduler" => build::<D, LcmConfig, _>(config, LcmScheduler::new),
        "FlowMatchEulerDiscreteScheduler" => {
            build::<D, FlowMatchEulerConfig, _>(config, FlowMatchEulerScheduler::new)
        }
        "PNDMScheduler" => build::<D, PndmConfig, _>(config, PndmScheduler::<D>::new),
        "HeunDiscreteScheduler" => build::<D, HeunConfig, _>(config, HeunScheduler::<D>::new),
        "LMSDiscreteScheduler" => build::<D, LmsConfig, _>(config, LmsScheduler::<D>::new),
        "UniPCMultistepScheduler" => build::<D, UniPcConfig, _>(config, UniPcScheduler::<D>::new),
        "DEISMultistepScheduler" => build::<D, DeisConfig, _>(config, DeisScheduler::<D>::new),
        "DPMSolverSinglestepScheduler" => {
            build::<D, DpmSolverSinglestepConfig, _>(config, DpmSolverSinglestepScheduler::<D>::new)
        }
        other => Err(SchedulerError::UnknownClass(other.to_string())),
    }
}

/// Builds the scheduler a `scheduler_config.json` names in `_class_name`.
pub fn scheduler_from_json<const D: usize>(config: &Value) -> Result<Box<dyn Scheduler<D>>> {
    let class = class_name_of(config)
        .ok_or_else(|| SchedulerError::UnknownClass("<missing _class_name>".into()))?;
    scheduler_from_config(class, config)
}
