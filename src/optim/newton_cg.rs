// SPDX-License-Identifier: MIT OR Apache-2.0
//! Newton-CG with finite-difference Hessian-vector products through the approximator.

use std::str::FromStr;

use super::{ensure_like, Context, Transform};
use crate::checkpoint::State;
use crate::kernels::{axpy, copy, dot, fill, norm, scale};
use crate::{Error, Gpu, Params, Result};

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

/// Newton's method with the linear system `(H + reg·I) d = b` solved by conjugate gradients
/// (torchzero's `NewtonCG`), where b is the update flowing into the module (the gradient
/// estimate, or what earlier modules such as [`HeavyBall`](super::HeavyBall) made of it):
/// `update ← d`. Hessian-vector products are finite differences of the approximator's gradient
/// estimates at shifted points, `Hv ≈ (g(x + εv) − g(x))/ε` with `ε = h/‖v‖` (a shift of length
/// h), with the same random directions within a step (`pre_generate`), so `Hv` is the derivative
/// of one fixed estimator; g(x) is the approximator's estimate of the step.
///
/// CG as torchzero's (defaults: tol = 1e-8, reg = 1e-8, min_iter = 1, max_iter = the number of
/// parameters):
///
/// - the residual test `‖r‖ < tol` (absolute) is made from iteration `min_iter` on, so at least
///   `min_iter + 1` iterations run (when max_iter allows);
/// - curvature `pᵀ(H + reg)p ≤ 2·f32::MIN_POSITIVE` at the first iteration returns
///   `b·(bᵀb/|bᵀ(H + reg)b|)` (the gradient step scaled by the inverse Rayleigh quotient); at a
///   later iteration CG goes on through negative curvature (torchzero's default
///   `npc_terminate = false`), or stops and returns the current iterate with
///   [`npc_terminate(true)`](NewtonCg::npc_terminate).
///
/// With a noisy random estimator (Gaussian smoothing, SPSA-type) going on through negative
/// curvature often ends in a direction along which f does not decrease; `npc_terminate(true)`
/// then works better (examples/newton_cg.rs has the measurement).
///
/// Follow it with [`Backtracking`](super::Backtracking) as torchzero's examples do. Four n-sized
/// state buffers (five with [`Hvp::Central`]); each iteration costs one (Forward) or two
/// (Central) gradient estimates and a few dot products read back. The parameters are shifted in
/// place for each estimate and shifted back, also when the objective fails or panics: by copy,
/// bit-exactly, when the approximator restores exactly
/// ([`Context::saved`](super::Context::saved)), otherwise by the opposite move (drift of f32
/// rounding).
///
/// # Differences from torchzero
///
/// - torchzero shifts the parameters in place by `+h·v/‖v‖` and back by `−h·v/‖v‖`, which in
///   f32 does not restore them exactly (and a non-finite shift writes NaN into them); zograd
///   restores by copy when the approximator restores exactly, and the shift is `ε·v`,
///   `ε = h/‖v‖` computed in f64 (the same point up to rounding).
/// - torchzero's FDM/SPSA-style approximators evaluate f(x) again at every Hessian-vector
///   point (its closure target); zograd evaluates only what the estimate needs.
/// - Where torchzero's arithmetic produces a non-finite direction, zograd does not: a zero
///   right-hand side (b = 0) returns 0 (torchzero: `0·(0/0)`, NaN); a first-iteration scale
///   `bᵀb/|bᵀAb|` that is not finite in f32 (bᵀAb = 0) returns b unscaled; a later iteration
///   whose step `rᵀr/pᵀAp` is not finite in f32, or whose curvature is NaN or infinite, stops
///   with the current iterate (torchzero would go on with NaN or ∞).
/// - The scalars of CG (dot products, α, β) are f64 from f32 vectors; torchzero computes them in
///   the parameters' dtype.
/// - Only the `cg` solver with forward or central finite-difference products is offered
///   (torchzero also has `minres`, autograd products, `warm_start` and `inner`).
#[derive(Debug)]
pub struct NewtonCg {
    max_iter: Option<u32>,
    min_iter: u32,
    tol: f32,
    reg: f32,
    npc_terminate: bool,
    hvp: Hvp,
    h: f32,
    bufs: [Option<Params>; 4],
    backward: Option<Params>,
}

impl NewtonCg {
    /// torchzero's defaults: tol = 1e-8, reg = 1e-8, min_iter = 1, no stop at negative
    /// curvature, hvp = Forward, h = 1e-3, max_iter = the number of parameters.
    #[must_use]
    pub fn new() -> Self {
        Self {
            max_iter: None,
            min_iter: 1,
            tol: 1e-8,
            reg: 1e-8,
            npc_terminate: false,
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

    /// The residual test is made from this iteration on (counted from 0; default 1, as
    /// torchzero's `miniter`): at least `min_iter + 1` iterations run when `max_iter` allows.
    #[must_use]
    pub fn min_iter(mut self, min_iter: u32) -> Self {
        self.min_iter = min_iter;
        self
    }

    /// Stop when the residual's norm is below `tol` (≥ 0; absolute, as torchzero's code).
    #[must_use]
    pub fn tol(mut self, tol: f32) -> Self {
        self.tol = tol;
        self
    }

    /// The regularisation added to the Hessian's diagonal (≥ 0; default 1e-8).
    #[must_use]
    pub fn reg(mut self, reg: f32) -> Self {
        self.reg = reg;
        self
    }

    /// Whether CG stops at non-positive curvature after the first iteration, returning the
    /// current iterate (default false: CG goes on, as torchzero's default).
    #[must_use]
    pub fn npc_terminate(mut self, stop: bool) -> Self {
        self.npc_terminate = stop;
        self
    }

    /// The finite-difference scheme of the Hessian-vector products.
    #[must_use]
    pub fn hvp(mut self, hvp: Hvp) -> Self {
        self.hvp = hvp;
        self
    }

    /// The finite-difference step of the Hessian-vector products (> 0): the length of the shift
    /// of x.
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

impl NewtonCg {
    fn config(&self) -> serde_json::Value {
        serde_json::json!({
            "max_iter": self.max_iter,
            "min_iter": self.min_iter,
            "tol": self.tol,
            "reg": self.reg,
            "npc_terminate": self.npc_terminate,
            "hvp": format!("{:?}", self.hvp),
            "h": self.h,
        })
    }
}

impl Transform for NewtonCg {
    /// The settings; Newton-CG keeps no state across steps (its buffers are scratch).
    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new("NewtonCg", self.config())))
    }
    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        super::checkpoint::check_module("NewtonCg", &self.config(), state)
    }
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
        if !(self.reg.is_finite() && self.reg >= 0.0) {
            return Err(Error::invalid(format!(
                "reg: must be finite and non-negative, got {}",
                self.reg
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
        // CG on (H + reg)·d = b, b the current update, from d = 0 (r = p = b until the first
        // iteration's end).
        fill(d, 0.0)?;
        copy(r, ctx.update)?;
        copy(p, ctx.update)?;
        let mut rs = dot(r, r)?;
        let tiny = 2.0 * f64::from(f32::MIN_POSITIVE);
        let representable = |v: f64| v.is_finite() && v.abs() <= f64::from(f32::MAX);
        let mut k = 0u64;
        while k < max_iter {
            let eps = f64::from(self.h) / norm(p)?;
            if !representable(eps) {
                // p = 0 (or so small that the shift's scale overflows f32): Hp = 0, as
                // torchzero's products return for a zero vector. Then pᵀAp = 0: b = 0 gives
                // d = 0 below, and a later iteration stops.
                fill(hp, 0.0)?;
            } else {
                let eps = eps as f32;
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
            }
            if self.reg > 0.0 {
                axpy(hp, self.reg, p)?;
            }
            let php = dot(p, hp)?;
            if !php.is_finite() {
                if k == 0 {
                    copy(d, r)?;
                }
                break;
            }
            if php <= tiny {
                if k == 0 {
                    // Negative curvature along b: the gradient step scaled by the inverse
                    // Rayleigh quotient, b·(bᵀb/|bᵀAb|) (b unscaled when that is not finite).
                    let s = rs / php.abs();
                    copy(d, r)?;
                    if representable(s) && s > 0.0 {
                        scale(d, s as f32)?;
                    }
                    break;
                }
                if self.npc_terminate {
                    break;
                }
            }
            let alpha = rs / php;
            if !representable(alpha) {
                break;
            }
            axpy(d, alpha as f32, p)?;
            axpy(r, -(alpha as f32), hp)?;
            let rs_new = dot(r, r)?;
            if k >= u64::from(self.min_iter) && rs_new.sqrt() < f64::from(self.tol) {
                break;
            }
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
