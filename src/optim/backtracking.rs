// SPDX-License-Identifier: MIT OR Apache-2.0
//! Armijo backtracking line search along the update.

use super::{Context, Transform};
use crate::kernels::{dot, scale};
use crate::{Error, Result};

/// Armijo backtracking (torchzero's `Backtracking`): tries steps `t = init, init·β, init·β², …`
/// along `−update` and keeps the first with
/// `f(x − t·update) ≤ f(x) − c·t·(g·update)`, g the estimated gradient; then
/// `update ← t·update`. If no trial passes within `max_iter`, the step is 0 (the update is
/// zeroed), as torchzero does.
///
/// Costs one evaluation per trial, plus one for f(x) when the approximator did not evaluate it,
/// and one dot product read back. A trial whose loss is NaN or infinite counts as failed (the
/// search shrinks the step); a non-finite f(x) is an [`Error::NonFiniteLoss`]. The parameters
/// are moved in place for each trial and moved back, also when the objective fails or panics:
/// by copy, bit-exactly, when the approximator restores exactly
/// ([`Context::saved`](super::Context::saved)), otherwise by the opposite move (drift of f32
/// rounding, as the estimators').
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backtracking {
    init: f32,
    beta: f32,
    c: f32,
    max_iter: u32,
    last_step: Option<f32>,
}

impl Backtracking {
    /// init = 1, β = 0.5, c = 1e-4, max_iter = 10.
    #[must_use]
    pub fn new() -> Self {
        Self {
            init: 1.0,
            beta: 0.5,
            c: 1e-4,
            max_iter: 10,
            last_step: None,
        }
    }

    /// The first step size tried (> 0).
    #[must_use]
    pub fn init(mut self, init: f32) -> Self {
        self.init = init;
        self
    }

    /// The shrink factor, in (0, 1).
    #[must_use]
    pub fn beta(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// The sufficient-decrease constant, in (0, 1).
    #[must_use]
    pub fn c(mut self, c: f32) -> Self {
        self.c = c;
        self
    }

    /// The most trials per step (≥ 1).
    #[must_use]
    pub fn max_iter(mut self, max_iter: u32) -> Self {
        self.max_iter = max_iter;
        self
    }

    /// The step size accepted at the last step (0 when none passed).
    #[must_use]
    pub fn last_step(&self) -> Option<f32> {
        self.last_step
    }
}

impl Default for Backtracking {
    fn default() -> Self {
        Self::new()
    }
}

impl Transform for Backtracking {
    fn name(&self) -> &'static str {
        "Backtracking"
    }

    fn validate(&self) -> Result<()> {
        let bad = |name: &str, v: f32, range: &str| {
            Err(Error::invalid(format!("{name}: must be {range}, got {v}")))
        };
        if !(self.init.is_finite() && self.init > 0.0) {
            return bad("init", self.init, "finite and positive");
        }
        if !(self.beta > 0.0 && self.beta < 1.0) {
            return bad("beta", self.beta, "in (0, 1)");
        }
        if !(self.c > 0.0 && self.c < 1.0) {
            return bad("c", self.c, "in (0, 1)");
        }
        if self.max_iter == 0 {
            return Err(Error::invalid("max_iter: must be at least 1, got 0"));
        }
        Ok(())
    }

    fn needs_grad(&self) -> bool {
        true
    }

    fn evaluates(&self) -> bool {
        true
    }

    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let g = ctx.grad.ok_or_else(|| {
            Error::invalid("grad: Backtracking needs the gradient, and Context::grad is None")
        })?;
        let f0 = super::loss_at_x(ctx)?;
        let slope = dot(g, ctx.update)?;
        let mut t = self.init;
        let mut accepted = 0.0;
        for _ in 0..self.max_iter {
            let f = super::loss_shifted(ctx, -t)?;
            if f.is_finite()
                && f64::from(f) <= f64::from(f0) - f64::from(self.c) * f64::from(t) * slope
            {
                accepted = t;
                break;
            }
            t *= self.beta;
        }
        self.last_step = Some(accepted);
        scale(ctx.update, accepted)
    }
}
