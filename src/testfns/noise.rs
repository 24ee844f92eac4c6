// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Noisy`]: additive and multiplicative Gaussian noise on any objective's values.

use crate::kernels::Direction;
use crate::objective::Coordinate;
use crate::rng::{perturbation, Distribution};
use crate::{Error, Objective, Params, Result};

/// An objective whose values carry seedable Gaussian noise:
/// f̃ = f·(1 + σ_m·ξ₁) + σ_a·ξ₂, with ξ₁, ξ₂ independent standard Gaussians (the noise model of
/// BBOB's noisy suite with Gaussian noise in its multiplicative form, plus an additive term).
///
/// Evaluation k (counted from 0 over every point this wrapper returns, single or batched) takes
/// ξ₁, ξ₂ from zograd's Philox Gaussian stream (key `seed`, step 0, sample 0, elements 2k and
/// 2k+1; [`crate::rng::perturbation`]), so a run is reproducible from the seed and every
/// evaluation gets fresh noise, including the two points of a central difference (zograd has no
/// common-random-numbers mode to share noise between them). The noise is added on the host in
/// f64 to the values the inner objective returns, so the wrapper keeps the inner objective's
/// batching ([`has_batch`](Objective::has_batch) passes through) and costs no GPU work.
/// [`jvp`](Objective::jvp) passes through without noise.
///
/// ```no_run
/// use zograd::testfns::{Function, Noisy, Problem};
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let problem = Problem::new(Function::Sphere, 100)?;
/// let x = zograd::Params::from_slices(&gpu, &[&[1.0f32; 100][..]])?;
/// let mut loss = Noisy::new(problem.batch_objective(&x, 2)?, 0.1, 0.01, 7)?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Noisy<O> {
    inner: O,
    additive: f64,
    multiplicative: f64,
    seed: u64,
    evaluations: u64,
}

impl<O: Objective> Noisy<O> {
    /// Wraps `inner` with additive standard deviation `additive` (σ_a) and multiplicative
    /// standard deviation `multiplicative` (σ_m), noise stream `seed`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming `additive` or `multiplicative` when it is negative or
    /// not finite.
    pub fn new(inner: O, additive: f64, multiplicative: f64, seed: u64) -> Result<Self> {
        for (name, v) in [("additive", additive), ("multiplicative", multiplicative)] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(Error::invalid(format!(
                    "{name}: the noise standard deviation must be finite and >= 0, got {v}"
                )));
            }
        }
        Ok(Self {
            inner,
            additive,
            multiplicative,
            seed,
            evaluations: 0,
        })
    }

    /// The wrapped objective.
    #[must_use]
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped objective, mutably (its evaluations are noise-free).
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// Unwraps the objective.
    #[must_use]
    pub fn into_inner(self) -> O {
        self.inner
    }

    /// Noisy values returned so far (the index k of the next one).
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// The noise of evaluation k applied to `value`.
    #[must_use]
    pub fn apply(&self, k: u64, value: f32) -> f32 {
        let xi = |e: u64| {
            f64::from(perturbation(
                Distribution::Gaussian,
                self.seed,
                0,
                0,
                2 * k + e,
            ))
        };
        let f = f64::from(value);
        (f * (1.0 + self.multiplicative * xi(0)) + self.additive * xi(1)) as f32
    }

    fn noisy(&mut self, values: Vec<f32>) -> Vec<f32> {
        let first = self.evaluations;
        self.evaluations += values.len() as u64;
        values
            .into_iter()
            .enumerate()
            .map(|(i, v)| self.apply(first + i as u64, v))
            .collect()
    }
}

impl<O: Objective> Objective for Noisy<O> {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        let v = self.inner.loss(params)?;
        Ok(self.noisy(vec![v])[0])
    }

    fn has_batch(&self) -> bool {
        self.inner.has_batch()
    }

    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        let v = self.inner.loss_batch(params, points)?;
        Ok(self.noisy(v))
    }

    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        let v = self.inner.loss_batch_coords(params, points)?;
        Ok(self.noisy(v))
    }

    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        self.inner.jvp(params, dir)
    }
}
