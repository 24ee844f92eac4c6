// SPDX-License-Identifier: MIT OR Apache-2.0
//! Newton-CG with finite-difference Hessian-vector products through the approximator.

use std::str::FromStr;

use super::{ensure_like, Context, Transform};
use crate::kernels::{axpy, copy, dot, fill, norm, scale};
use crate::{Error, Params, Result};

/// How Newton-CG forms Hessian-vector products from gradient estimates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Hvp {
    /// `Hv ≈ (g(x + ε v) − g(x)) / ε`: one gradient estimate per product.
    #[default]
    Forward,
    /// `Hv ≈ (g(x + ε v) − g(x − ε v)) / 2ε`: two per product.
    Central,
}

impl FromStr for Hvp {
    type Err = Error;

    /// `forward` / `fd_forward` and `central` / `fd_central` (torchzero 0.4.4 accepts only the
    /// `fd_` names although its documentation uses `forward`; both work here).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "forward" | "fd_forward" => Ok(Self::Forward),
            "central" | "fd_central" => Ok(Self::Central),
            _ => Err(Error::invalid(format!(
                "hvp_method: unknown name {s:?} (expected forward, fd_forward, central or fd_central)"
            ))),
        }
    }
}

/// Newton's method with the linear system `H d = g` solved by conjugate gradients
/// (torchzero's `NewtonCG`): `update ← d`. Hessian-vector products are finite differences of
/// the approximator's gradient estimates at shifted points, `ε = h / ‖v‖`, with the same random
/// directions within a step (`pre_generate`), so `Hv` is the derivative of one fixed estimator.
///
/// CG stops after `max_iter` iterations (default: the number of parameters), when
/// `‖r‖ ≤ tol`, or at non-positive curvature (the first iteration then falls back to the
/// gradient). Follow it with [`Backtracking`](super::Backtracking) as torchzero's examples do.
/// Four n-sized state buffers (five with [`Hvp::Central`]); each iteration costs one (Forward) or two (Central) gradient
/// estimates and a few dot products read back. The parameters are shifted in place for each
/// estimate and shifted back, also when the objective fails or panics: by copy, bit-exactly,
/// when the approximator restores exactly ([`Context::saved`](super::Context::saved)),
/// otherwise by the opposite move (drift of f32 rounding).
#[derive(Debug)]
pub struct NewtonCg {
    max_iter: Option<u32>,
    tol: f32,
    hvp: Hvp,
    h: f32,
    bufs: [Option<Params>; 4],
    backward: Option<Params>,
}

impl NewtonCg {
    /// tol = 1e-4, hvp = Forward, h = 1e-3, max_iter = the number of parameters.
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_iter: None,
            tol: 1e-4,
            hvp: Hvp::Forward,
            h: 1e-3,
            bufs: Default::default(),
            backward: None,
        }
    }

    /// At most this many CG iterations (≥ 1).
    #[must_use]
    pub fn max_iter(mut self, max_iter: u32) -> Self {
        self.max_iter = Some(max_iter);
        self
    }

    /// Stop when the residual's norm is at most `tol` (≥ 0).
    #[must_use]
    pub fn tol(mut self, tol: f32) -> Self {
        self.tol = tol;
        self
    }

    /// The finite-difference scheme of the Hessian-vector products.
    #[must_use]
    pub fn hvp(mut self, hvp: Hvp) -> Self {
        self.hvp = hvp;
        self
    }

    /// The finite-difference step of the Hessian-vector products (> 0).
    #[must_use]
    pub fn h(mut self, h: f32) -> Self {
        self.h = h;
        self
    }
}

impl Default for NewtonCg {
    fn default() -> Self {
        Self::new()
    }
}

/// `out ← g(x + t·v)` with x restored afterwards (also on error); returns the evaluations.
fn grad_shifted(ctx: &mut Context<'_>, t: f32, v: &Params, out: &mut Params) -> Result<u32> {
    let oracle = ctx.approximator.as_deref_mut().ok_or_else(|| {
        Error::invalid("target: NewtonCg needs the approximator's Target::Closure")
    })?;
    let mut shifted = super::shifted(ctx.params, t, v, ctx.saved)?;
    let est = oracle.approximate(ctx.gpu, shifted.params(), ctx.objective, out);
    shifted.finish()?;
    Ok(est?.evaluations)
}

impl Transform for NewtonCg {
    fn name(&self) -> &'static str {
        "NewtonCg"
    }

    fn validate(&self) -> Result<()> {
        if !(self.tol.is_finite() && self.tol >= 0.0) {
            return Err(Error::invalid(format!(
                "tol: must be finite and non-negative, got {}",
                self.tol
            )));
        }
        if !(self.h.is_finite() && self.h > 0.0) {
            return Err(Error::invalid(format!(
                "h: must be finite and positive, got {}",
                self.h
            )));
        }
        if self.max_iter == Some(0) {
            return Err(Error::invalid("max_iter: must be at least 1, got 0"));
        }
        Ok(())
    }

    fn needs_grad(&self) -> bool {
        true
    }

    fn needs_oracle(&self) -> bool {
        true
    }

    fn evaluates(&self) -> bool {
        true
    }

    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        for b in &mut self.bufs {
            ensure_like(b, ctx.update)?;
        }
        let [Some(d), Some(r), Some(p), Some(hp)] = &mut self.bufs else {
            unreachable!("the buffers were just created");
        };
        let g0 = ctx.grad.ok_or_else(|| {
            Error::invalid("grad: NewtonCg needs the gradient, and Context::grad is None")
        })?;
        let max_iter = self.max_iter.map_or(ctx.params.len(), u64::from);
        fill(d, 0.0)?;
        copy(r, g0)?;
        copy(p, g0)?;
        let mut rs = dot(r, r)?;
        let tol = f64::from(self.tol);
        let mut k = 0;
        while k < max_iter && rs.sqrt() > tol {
            let pn = norm(p)?;
            let eps = (f64::from(self.h) / pn) as f32;
            // hp ← (g(x + εp) − g(x)) / ε, or the central difference.
            let evals = match self.hvp {
                Hvp::Forward => {
                    let e = grad_shifted(ctx, eps, p, hp)?;
                    axpy(hp, -1.0, g0)?;
                    scale(hp, 1.0 / eps)?;
                    e
                }
                Hvp::Central => {
                    let back = ensure_like(&mut self.backward, ctx.update)?;
                    let e1 = grad_shifted(ctx, eps, p, hp)?;
                    let e2 = grad_shifted(ctx, -eps, p, back)?;
                    axpy(hp, -1.0, back)?;
                    scale(hp, 0.5 / eps)?;
                    e1 + e2
                }
            };
            ctx.evaluations += evals;
            let php = dot(p, hp)?;
            if php.is_nan() || php <= 0.0 || php.is_infinite() {
                if k == 0 {
                    copy(d, g0)?;
                }
                break;
            }
            let alpha = rs / php;
            axpy(d, alpha as f32, p)?;
            axpy(r, -(alpha as f32), hp)?;
            let rs_new = dot(r, r)?;
            scale(p, (rs_new / rs) as f32)?;
            axpy(p, 1.0, r)?;
            rs = rs_new;
            k += 1;
        }
        copy(ctx.update, d)
    }

    fn state_bytes(&self) -> u64 {
        self.bufs
            .iter()
            .chain(std::iter::once(&self.backward))
            .flatten()
            .map(Params::owned_bytes)
            .sum()
    }
}
