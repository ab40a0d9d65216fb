//! Diffusion schedulers and guidance for mm, numerically matching diffusers.
#![deny(missing_docs)]

pub mod common;
pub mod config;
pub mod ddim;
pub mod ddpm;
pub mod dpm_multistep;
pub mod error;
pub mod flow_match_euler;
pub mod guidance;
pub mod heun;
pub mod lcm;
pub mod euler;
pub mod euler_ancestral;
pub mod noise;
pub mod pndm;
pub mod registry;
pub mod scheduler;
pub mod sigmas;

pub use common::{BetaSchedule, FinalSigmasType, PredictionType, TimestepSpacing};
pub use config::SchedulerConfig;
pub use ddim::{DdimConfig, DdimScheduler};
pub use euler::{EulerConfig, EulerScheduler, TimestepType};
pub use euler_ancestral::{EulerAncestralConfig, EulerAncestralScheduler};
pub use dpm_multistep::{DpmAlgorithm, DpmSolverMultistepConfig, DpmSolverMultistepScheduler, DpmSolverType};
pub use ddpm::{DdpmConfig, DdpmScheduler, DdpmVarianceType};
pub use error::{Result, SchedulerError};
pub use flow_match_euler::{FlowMatchEulerConfig, FlowMatchEulerScheduler, TimeShiftType};
pub use guidance::{Guidance, GuidanceTerm, ScaleSchedule, rescale_noise_cfg};
pub use heun::{HeunConfig, HeunScheduler};
pub use lcm::{LcmConfig, LcmScheduler};
pub use noise::{NoNoise, NoiseSource, QueuedNoise, SeededNoise};
pub use pndm::{PndmConfig, PndmScheduler};
pub use registry::{SUPPORTED_CLASSES, scheduler_from_config, scheduler_from_json};
pub use scheduler::{Scheduler, StepOutput, TimestepRequest};
