// SPDX-License-Identifier: MIT OR Apache-2.0
//! Schedules: a value per optimiser step, for the learning rate
//! ([`Lr::scheduled`](crate::optim::Lr::scheduled)) and for the estimators' finite-difference
//! step h ([`Sampler::h_schedule`](crate::approx::Sampler::h_schedule)). This module sits below
//! both `approx` and `optim`; the calibrations that need an estimator or a loss live in
//! `optim/schedule.rs`.

use crate::{Error, Result};

/// A value per optimiser step k = 1, 2, … (the value of step k uses the index i = k − 1).
///
/// | schedule | value at index i = k − 1 |
/// |---|---|
/// | `Constant(v)` | v |
/// | `Spall { a, big_a, alpha }` | a / (i + 1 + A)^α (Spall's SPSA gains: a_k with α = 0.602 standard, c_k with A = 0 and γ = 0.101) |
/// | `StepDecay { initial, factor, every }` | initial · factor^⌊i / every⌋ |
/// | `Cosine { initial, last, steps }` | last + (initial − last)·(1 + cos(π·min(i, steps)/steps))/2 |
///
/// References: J. C. Spall, "Implementation of the simultaneous perturbation algorithm for
/// stochastic optimization", IEEE Trans. Aerosp. Electron. Syst. 34 (1998) (the gains, α = 0.602,
/// γ = 0.101, A ≈ 10 % of the planned iterations); I. Loshchilov, F. Hutter, "SGDR: stochastic
/// gradient descent with warm restarts", ICLR 2017 (cosine).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// The same value at every step.
    Constant(f32),
    /// Spall's gain sequence a / (k + A)^α, k = i + 1.
    Spall {
        /// a > 0.
        a: f64,
        /// The stability constant A ≥ 0 (≈ 10 % of the planned steps).
        big_a: f64,
        /// The decay exponent α > 0 (0.602 standard, 1 asymptotically optimal).
        alpha: f64,
    },
    /// `initial` multiplied by `factor` every `every` steps.
    StepDecay {
        /// The value of the first step (> 0).
        initial: f32,
        /// The factor in (0, 1].
        factor: f32,
        /// Steps between decays (≥ 1).
        every: u64,
    },
    /// Cosine annealing from `initial` to `last` over `steps` steps, `last` afterwards.
    Cosine {
        /// The value of the first step (> 0).
        initial: f32,
        /// The value from step `steps` on (≥ 0).
        last: f32,
        /// The length of the annealing (≥ 1).
        steps: u64,
    },
}

impl Schedule {
    /// Spall's standard SPSA step-size gains for a run of `planned_steps` steps:
    /// a / (k + A)^0.602 with A = 10 % of `planned_steps`.
    #[must_use]
    pub fn spall(a: f64, planned_steps: u64) -> Self {
        Self::Spall {
            a,
            big_a: 0.1 * planned_steps as f64,
            alpha: 0.602,
        }
    }

    /// Spall's standard perturbation sizes for the estimators' h: c / k^0.101 (A = 0, γ = 0.101),
    /// with c about the standard deviation of the loss's noise (Spall 1998), e.g. from
    /// [`Schedule::calibrate_spall_h`].
    #[must_use]
    pub fn spall_h(c: f64) -> Self {
        Self::Spall {
            a: c,
            big_a: 0.0,
            alpha: 0.101,
        }
    }

    /// The value at step `step` (from 1; 0 is taken as 1), in f64.
    #[must_use]
    pub fn value(&self, step: u64) -> f64 {
        let i = step.max(1) - 1;
        match *self {
            Self::Constant(v) => f64::from(v),
            Self::Spall { a, big_a, alpha } => a / (i as f64 + 1.0 + big_a).powf(alpha),
            Self::StepDecay {
                initial,
                factor,
                every,
            } => {
                let n = i / every.max(1);
                f64::from(initial) * f64::from(factor).powf(n as f64)
            }
            Self::Cosine {
                initial,
                last,
                steps,
            } => {
                let t = i.min(steps) as f64 / steps.max(1) as f64;
                let (a, b) = (f64::from(initial), f64::from(last));
                b + (a - b) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the parameter and its value.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &str, v: String, range: &str| {
            Err(Error::invalid(format!("{name}: must be {range}, got {v}")))
        };
        match *self {
            Self::Constant(v) if !(v.is_finite() && v > 0.0) => {
                bad("lr", v.to_string(), "finite and positive")
            }
            Self::Spall { a, .. } if !(a.is_finite() && a > 0.0) => {
                bad("a", a.to_string(), "finite and positive")
            }
            Self::Spall { big_a, .. } if !(big_a.is_finite() && big_a >= 0.0) => {
                bad("big_a", big_a.to_string(), "finite and non-negative")
            }
            Self::Spall { alpha, .. } if !(alpha.is_finite() && alpha > 0.0) => {
                bad("alpha", alpha.to_string(), "finite and positive")
            }
            Self::StepDecay { initial, .. } | Self::Cosine { initial, .. }
                if !(initial.is_finite() && initial > 0.0) =>
            {
                bad("initial", initial.to_string(), "finite and positive")
            }
            Self::StepDecay { factor, .. } if !(factor > 0.0 && factor <= 1.0) => {
                bad("factor", factor.to_string(), "in (0, 1]")
            }
            Self::StepDecay { every: 0, .. } => bad("every", "0".into(), "at least 1"),
            Self::Cosine { last, .. } if !(last.is_finite() && last >= 0.0) => {
                bad("last", last.to_string(), "finite and non-negative")
            }
            Self::Cosine { steps: 0, .. } => bad("steps", "0".into(), "at least 1"),
            _ => Ok(()),
        }
    }
}
