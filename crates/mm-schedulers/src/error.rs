//! The crate's single error type.

/// Errors of schedulers, their configs and guidance.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// `set_timesteps(0)` or an empty custom schedule.
    #[error("the number of inference steps must be at least 1")]
    ZeroSteps,
    /// More inference steps than the model was trained with.
    #[error("num_inference_steps ({steps}) cannot be larger than num_train_timesteps ({train})")]
    TooManySteps {
        /// Requested steps.
        steps: usize,
        /// `num_train_timesteps` of the config.
        train: usize,
    },
    /// img2img strength outside `[0, 1]`.
    #[error("strength must be in [0, 1], got {0}")]
    InvalidStrength(f64),
    /// `step` or `scale_model_input` called before `set_timesteps`.
    #[error("set_timesteps must be called before {0}")]
    NotInitialized(&'static str),
    /// A timestep that is not in the current schedule.
    #[error("timestep {0} is not in the scheduler's timesteps")]
    UnknownTimestep(f64),
    /// A config value this scheduler does not accept (wrong combination, bad value).
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    /// A prediction type this scheduler cannot handle.
    #[error("prediction type `{0}` is not supported by {1}")]
    UnsupportedPredictionType(String, &'static str),
    /// An option diffusers has that is not implemented here.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A custom timesteps / sigmas schedule that is not valid.
    #[error("invalid custom schedule: {0}")]
    InvalidSchedule(String),
    /// A config JSON that does not parse (unknown enum values, wrong types).
    #[error("cannot parse scheduler config: {0}")]
    Json(#[from] serde_json::Error),
    /// Reading a config file failed.
    #[error("cannot read scheduler config: {0}")]
    Io(#[from] std::io::Error),
    /// Scheduler class name unknown to this crate.
    #[error("unknown scheduler class `{0}`")]
    UnknownClass(String),
    /// Tensors whose shapes do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A guidance setup that does not fit the predictions given.
    #[error("guidance: {0}")]
    Guidance(String),
    /// The noise source could not provide noise (e.g. an exhausted queue).
    #[error("noise source: {0}")]
    Noise(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, SchedulerError>;
