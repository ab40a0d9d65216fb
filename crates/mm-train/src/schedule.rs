//! Learning-rate schedules as pure functions of the step, so a resumed run needs nothing but
//! the step count.

/// Linear warm-up from 0 to `peak` over `warmup` steps, then a half cosine down to `min` at
/// `total` steps (diffusers' `get_cosine_schedule_with_warmup` with a floor); `min` after.
///
/// ```
/// use mm_train::schedule::WarmupCosine;
/// let s = WarmupCosine::new(1e-3, 10, 110);
/// assert_eq!(s.lr(0), 1e-4);
/// assert_eq!(s.lr(9), 1e-3);
/// assert!((s.lr(60) - 5e-4).abs() < 1e-12);
/// assert_eq!(s.lr(500), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WarmupCosine {
    /// The rate at the end of the warm-up.
    pub peak: f64,
    /// The floor the cosine ends at.
    pub min: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// Steps until the floor.
    pub total: usize,
}

impl WarmupCosine {
    /// Warm-up to `peak` over `warmup` steps, cosine to 0 at `total`.
    pub fn new(peak: f64, warmup: usize, total: usize) -> Self {
        Self {
            peak,
            min: 0.0,
            warmup,
            total,
        }
    }

    /// The same with a floor of `min`.
    pub fn with_min(self, min: f64) -> Self {
        Self { min, ..self }
    }

    /// The rate of step `step` (counted from 0).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup {
            return self.peak * (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1);
        let progress = ((step - self.warmup) as f64 / span as f64).min(1.0);
        self.min + (self.peak - self.min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}
