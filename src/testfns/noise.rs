// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Noisy`]: additive and multiplicative Gaussian noise on any objective's values.

use crate::kernels::Direction;
use crate::objective::{Coordinate, Evaluation};
use crate::rng::{perturbation, Distribution};
use crate::{Error, Objective, Params, Result};

/// An objective whose values carry seedable Gaussian noise:
/// f̃ = f·(1 + σ_m·ξ₁) + σ_a·ξ₂, with ξ₁, ξ₂ independent standard Gaussians (the noise model of
/// BBOB's noisy suite with Gaussian noise in its multiplicative form, plus an additive term).
///
/// Evaluation k (counted from 0 over every point this wrapper returns, single or batched) takes
/// ξ₁, ξ₂ from zograd's Philox Gaussian stream (key `seed`, step 0, sample 0, elements 2k and
/// 2k+1; [`crate::rng::perturbation`]), so a run is reproducible from the seed and every
/// evaluation gets fresh noise, including the two points of a central difference. The noise is
/// added on the host in f64 to the values the inner objective returns, so the wrapper keeps the
/// inner objective's batching ([`has_batch`](Objective::has_batch) passes through) and costs no
/// GPU work. [`jvp`](Objective::jvp) passes through without noise.
///
/// **Common random numbers.** With
/// [`common_random_numbers(true)`](Noisy::common_random_numbers), a point an estimator
/// evaluates through [`Objective::loss_at`] (or the batch forms) takes ξ₁, ξ₂ from the
/// evaluation's [`crn_seed`](Evaluation::crn_seed) instead
/// ([`apply_crn`](Noisy::apply_crn)): the points of one sample get the same noise, so the
/// additive part cancels exactly in their difference and the multiplicative part scales the
/// difference by (1 + σ_m·ξ₁) instead of adding σ_m·(f₊ξ₁ − f₋ξ₁'). Plain
/// [`loss`](Objective::loss) calls (a measured loss, a line search) keep the counter stream.
/// The wrapped objective's `loss_at` is called either way, so an inner objective with noise of
/// its own sees the identities too.
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
    crn: bool,
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
            crn: false,
        })
    }

    /// Draw the noise of the estimators' points from their evaluation's
    /// [`crn_seed`](Evaluation::crn_seed) (common random numbers, `true`) or from the
    /// evaluation counter (`false`, the default). See the type's documentation.
    #[must_use]
    pub fn common_random_numbers(mut self, on: bool) -> Self {
        self.crn = on;
        self
    }

    /// Whether the common-random-numbers mode is on.
    #[must_use]
    pub fn uses_common_random_numbers(&self) -> bool {
        self.crn
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
        self.mix(value, xi(0), xi(1))
    }

    /// The noise of common-random-numbers seed `crn_seed` applied to `value`: ξ₁, ξ₂ are
    /// elements 0 and 1 of the Philox Gaussian stream with key `seed`, step = the low and
    /// sample = the high 32 bits of `crn_seed` ([`crate::rng::perturbation`]).
    #[must_use]
    pub fn apply_crn(&self, crn_seed: u64, value: f32) -> f32 {
        let xi = |e: u64| {
            f64::from(perturbation(
                Distribution::Gaussian,
                self.seed,
                crn_seed as u32,
                (crn_seed >> 32) as u32,
                e,
            ))
        };
        self.mix(value, xi(0), xi(1))
    }

    /// f·(1 + σ_m·ξ₁) + σ_a·ξ₂ in f64, rounded once.
    fn mix(&self, value: f32, xi1: f64, xi2: f64) -> f32 {
        let f = f64::from(value);
        (f * (1.0 + self.multiplicative * xi1) + self.additive * xi2) as f32
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

    /// The noise of each value: from its evaluation's seed in CRN mode, else the counter.
    fn noisy_at(&mut self, values: Vec<f32>, at: &[Evaluation]) -> Result<Vec<f32>> {
        if !self.crn {
            return Ok(self.noisy(values));
        }
        if at.len() != values.len() {
            return Err(Error::invalid(format!(
                "at: {} evaluations for {} points",
                at.len(),
                values.len()
            )));
        }
        self.evaluations += values.len() as u64;
        Ok(values
            .into_iter()
            .zip(at)
            .map(|(v, e)| self.apply_crn(e.crn_seed, v))
            .collect())
    }
}

impl<O: Objective> Objective for Noisy<O> {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        let v = self.inner.loss(params)?;
        Ok(self.noisy(vec![v])[0])
    }

    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        let v = self.inner.loss_at(params, at)?;
        Ok(self.noisy_at(vec![v], std::slice::from_ref(at))?[0])
    }

    fn has_batch(&self) -> bool {
        self.inner.has_batch()
    }

    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let v = self.inner.loss_batch_at(params, points, at)?;
        self.noisy_at(v, at)
    }

    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let v = self.inner.loss_batch_coords_at(params, points, at)?;
        self.noisy_at(v, at)
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
