// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Project`]: keeps the parameters inside their box bounds after every update.

use serde_json::json;

use super::checkpoint::check_module;
use super::{Context, Fusion, Transform};
use crate::checkpoint::State;
use crate::{Error, Gpu, Params, Result};

/// Projection onto the box bounds of the parameters ([`Params::set_bounds`]): after every
/// update, `x ← clamp(x, lo, hi)` in one GPU pass (projected gradient descent).
///
/// The projection acts on x after the optimiser's `x ← x − update`, wherever the module sits in
/// the chain (put it last, for clarity); it leaves the update itself alone. It composes with the
/// fused MeZO step (`MeZo → [WeightDecay] → Lr → Project` stays fused and keeps no gradient
/// buffer: the projection runs right after the fused update kernel), with every estimator and
/// with every module. The estimators themselves keep their points inside the box (see
/// [`Params::set_bounds`]); MeZO then keeps one saved copy of x while elements sit on a bound. Trial points of [`Backtracking`](super::Backtracking) and the shifted
/// points of [`NewtonCg`](super::NewtonCg) are not projected.
///
/// # Errors
/// A step fails with [`Error::InvalidArgument`] (before anything is evaluated) when the
/// parameters have no bounds.
///
/// # Example
/// ```
/// use zograd::approx::MeZo;
/// use zograd::optim::{Lr, Optimizer, Project};
/// use zograd::{Bounds, Params};
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[0.5f32; 64][..]])?;
/// x.set_bounds(Bounds::scalar(0.0, 1.0))?;
/// // Minimise Σ (x − 3)²: the minimiser in the box is x = 1.
/// let mut loss = |p: &Params| -> zograd::Result<f32> {
///     Ok(p.to_vec()?.iter().map(|v| (v - 3.0) * (v - 3.0)).sum())
/// };
/// let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))?
///     .then(Lr::new(0.05))
///     .then(Project::new());
/// for _ in 0..200 {
///     opt.step(&mut x, &mut loss)?;
/// }
/// assert!(x.to_vec()?.iter().all(|v| (0.0..=1.0).contains(v)));
/// // Still the fused MeZO step: no update buffer, at most MeZO's saved copy of x (made while
/// // elements sit on a bound and its points are projected).
/// assert!(opt.state_bytes() <= 64 * 4);
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Project;

impl Project {
    /// The projection onto the bounds attached to the parameters.
    #[must_use]
    pub fn new() -> Self {
        Self
    }
}

impl Transform for Project {
    fn name(&self) -> &'static str {
        "Project"
    }

    fn check_params(&self, params: &Params) -> Result<()> {
        if params.has_bounds() {
            Ok(())
        } else {
            Err(Error::invalid(
                "params: Project needs bounds on the parameters (Params::set_bounds), these \
                 have none",
            ))
        }
    }

    /// Nothing: the update is left as it is; the projection happens in
    /// [`after_update`](Transform::after_update).
    fn apply(&mut self, ctx: &mut Context<'_>) -> Result<()> {
        let _ = ctx;
        Ok(())
    }

    fn after_update(&mut self, params: &mut Params) -> Result<()> {
        crate::kernels::project(params)
    }

    /// The identity on the update (the projection follows the fused update).
    fn fusion(&self) -> Option<Fusion> {
        Some(Fusion::Scale(1.0))
    }

    fn save_state(&self) -> Result<Option<State>> {
        Ok(Some(State::new("Project", json!({}))))
    }

    fn load_state(&mut self, _gpu: &Gpu, _shape: &[u64], state: &State) -> Result<()> {
        check_module("Project", &json!({}), state)
    }
}
