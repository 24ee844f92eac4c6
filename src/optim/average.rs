// SPDX-License-Identifier: MIT OR Apache-2.0
//! Polyak–Ruppert iterate averaging: the running mean of x after each step from a chosen step
//! on, in one n-sized GPU buffer updated by one [`lerp`] kernel per step.
//!
//! References: B. T. Polyak, A. B. Juditsky, "Acceleration of stochastic approximation by
//! averaging", SIAM J. Control Optim. 30 (1992); D. Ruppert, "Efficient estimations from a
//! slowly convergent Robbins–Monro process", Cornell ORIE TR 781 (1988).

use super::{ensure_like, Optimizer};
use crate::kernels::{copy, lerp};
use crate::{Params, Result};

/// The averaging state of an [`Optimizer`].
#[derive(Debug)]
pub(super) struct Averaging {
    /// The first step whose result is averaged (≥ 1).
    pub(super) from: u64,
    /// Iterates in the mean so far.
    pub(super) count: u64,
    /// The mean, once a first iterate is in.
    pub(super) mean: Option<Params>,
}

impl Optimizer {
    /// Averages the iterates from step `step` on (Polyak–Ruppert): after every step t ≥ `step`
    /// the mean x̄ of x after steps `step`, …, t is updated on the GPU
    /// (x̄ ← x̄ + (x − x̄)/m, one n-sized buffer, one kernel per step, also with the fused MeZO
    /// step). Read it with [`averaged`](Optimizer::averaged); it is part of the checkpoint.
    /// `step` 0 is taken as 1 (from the first step on). With a constant step size and noisy
    /// gradients the mean is much closer to a minimiser than the last iterate, which keeps
    /// fluctuating; start after a burn-in so that the early, far-off iterates do not weigh on it.
    #[must_use]
    pub fn average_from(mut self, step: u64) -> Self {
        self.averaging = Some(Averaging {
            from: step.max(1),
            count: 0,
            mean: None,
        });
        self
    }

    /// The mean of the iterates so far ([`average_from`](Optimizer::average_from)); `None`
    /// without averaging or before its first step.
    #[must_use]
    pub fn averaged(&self) -> Option<&Params> {
        self.averaging.as_ref()?.mean.as_ref()
    }

    /// The number of iterates in [`averaged`](Optimizer::averaged).
    #[must_use]
    pub fn averaged_count(&self) -> u64 {
        self.averaging.as_ref().map_or(0, |a| a.count)
    }

    /// Folds x after step `step` into the mean.
    pub(super) fn fold_average(&mut self, params: &Params, step: u64) -> Result<()> {
        let Some(avg) = self.averaging.as_mut() else {
            return Ok(());
        };
        if step < avg.from {
            return Ok(());
        }
        let fresh = avg.mean.is_none() || avg.count == 0;
        let mean = ensure_like(&mut avg.mean, params)?;
        if fresh {
            copy(mean, params)?;
            avg.count = 1;
        } else {
            let m = avg.count + 1;
            lerp(mean, (1.0 / m as f64) as f32, params)?;
            avg.count = m;
        }
        Ok(())
    }
}
