// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Objective`]: the black-box loss the estimators query.

use crate::kernels::{Direction, Mask};
use crate::restore::{Move, Restore};
use crate::{Error, Params, Result};

/// A scalar loss of parameters that live on the GPU.
///
/// Every closure `FnMut(&Params) -> f32` and `FnMut(&Params) -> Result<f32, E>` (with `E` any
/// `std::error::Error + Send + Sync + 'static`) is an `Objective`; a user error becomes
/// [`Error::Objective`] after the estimator has restored the parameters. Implement the trait on
/// your own type to offer the optional methods:
///
/// - [`loss_batch`](Objective::loss_batch) / [`loss_batch_coords`](Objective::loss_batch_coords):
///   evaluate many perturbed points in one call (e.g. one shader dispatch that regenerates
///   `x + scale·z` on the fly from [`crate::wgsl::PHILOX`] without writing x). The estimators call
///   them only when [`has_batch`](Objective::has_batch) returns true.
/// - [`jvp`](Objective::jvp): the exact directional derivative ∇f(x)·z, for
///   [`ForwardGradient`](crate::approx::ForwardGradient) with [`Jvp::User`](crate::approx::Jvp).
/// - [`loss_at`](Objective::loss_at), [`loss_batch_at`](Objective::loss_batch_at) and
///   [`loss_batch_coords_at`](Objective::loss_batch_coords_at): the same evaluations with their
///   identity ([`Evaluation`]: step, sample, point and a per-sample seed), for **common random
///   numbers**: a noisy objective that draws its noise from [`Evaluation::crn_seed`] gives the
///   points of one sample (x + h·u and x − h·u) the same noise, so the noise cancels in their
///   difference. The estimators call these; their defaults call the methods above.
///
/// zograd records its moves of the parameters and submits them with the next evaluation of its
/// own objectives ([`ShaderObjective`](crate::ShaderObjective),
/// [`BatchObjective`](crate::BatchObjective)); before calling any other objective it submits
/// them ([`Gpu::flush`](crate::Gpu::flush)), so the work an objective of yours submits sees the
/// parameters where the estimator put them.
///
/// # Example
/// ```
/// use zograd::{approx::{GradApproximator, Spsa}, Objective, Params};
/// # fn main() -> zograd::Result<()> {
/// let gpu = zograd::Gpu::new()?;
/// let mut x = Params::from_slices(&gpu, &[&[1.0f32, 2.0][..]])?;
/// let mut g = x.zeros_like()?;
/// // A closure: here the loss is computed on the host after a download; a real objective runs
/// // its own shaders on `p.buffers()` and reads back one scalar.
/// let mut loss = |p: &Params| -> zograd::Result<f32> {
///     Ok(p.to_vec()?.iter().map(|v| v * v).sum())
/// };
/// assert!(loss.loss(&x)? > 0.0);
/// Spsa::new().seed(1).approximate(&gpu, &mut x, &mut loss, &mut g)?;
/// # Ok(()) }
/// ```
pub trait Objective {
    /// f(params). Called with the parameters perturbed in place by the estimator.
    ///
    /// # Errors
    /// Whatever the objective reports; closures' errors arrive as [`Error::Objective`].
    fn loss(&mut self, params: &Params) -> Result<f32>;

    /// Whether [`loss_batch`](Objective::loss_batch) and
    /// [`loss_batch_coords`](Objective::loss_batch_coords) are implemented efficiently; the
    /// estimators use them only then (default false).
    fn has_batch(&self) -> bool {
        false
    }

    /// f at every point `params + scale·z(dir)` of `points`, in order. An implementation must
    /// leave `params` as it found them (the default perturbs in place and restores by the
    /// opposite perturbation, also when the loss fails or panics, so it drifts by f32 rounding).
    ///
    /// # Errors
    /// The first error of [`loss`](Objective::loss) or of a kernel.
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        in_place(self, params, points, &[], None)
    }

    /// Whether [`loss_batch_masked`](Objective::loss_batch_masked) evaluates the directions of
    /// `mask` ([`Mask`]: frozen buffers, sparse directions, a magnitude mask) efficiently; the
    /// estimators batch masked directions only then, and otherwise perturb x in place. The
    /// default: only the mask that moves every element (where `loss_batch` serves).
    /// [`BatchObjective`](crate::BatchObjective) answers true for sparse directions when its
    /// shader declares it handles them.
    fn batches_mask(&self, mask: &Mask) -> bool {
        mask.is_all()
    }

    /// f at every point `params + scale·u(dir, mask)` of `points`, in order: the masked
    /// directions of [`Mask`], with the identity of each point (`at[k]` is point `k`, as in
    /// [`loss_batch_at`](Objective::loss_batch_at)). An implementation must leave `params` as
    /// it found them. The default calls [`loss_batch_at`](Objective::loss_batch_at) for a mask
    /// that moves every element, and otherwise perturbs in place along the masked directions,
    /// calls [`loss_at`](Objective::loss_at) and restores by the opposite perturbation (also
    /// when the loss fails or panics).
    ///
    /// # Errors
    /// The first error of [`loss`](Objective::loss) or of a kernel.
    fn loss_batch_masked(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
        mask: &Mask,
    ) -> Result<Vec<f32>> {
        if mask.is_all() {
            return self.loss_batch_at(params, points, at);
        }
        in_place(self, params, points, at, Some(mask))
    }

    /// f at every point "`params` with element `index` set to `value`" of `points`, in order
    /// (the points of [`Fdm`](crate::approx::Fdm)). An implementation must leave `params` as it
    /// found them; the default writes each element with [`Params::write_at`] and writes
    /// `original` back, also when the loss fails or panics.
    ///
    /// # Errors
    /// The first error of [`loss`](Objective::loss) or of a write.
    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(points.len());
        for p in points {
            let by = Move::Write(p.index, p.value);
            let mut guard = Restore::moved(params, by, Move::Write(p.index, p.original))?;
            let value = self.loss(guard.params());
            guard.finish()?;
            out.push(value?);
        }
        Ok(out)
    }

    /// f(params) at the estimator's point `at` (its step, sample, point and seeds, see
    /// [`Evaluation`]). Every estimator of this crate evaluates its points through this method;
    /// the default ignores `at` and calls [`loss`](Objective::loss). Implement it for common
    /// random numbers: draw the evaluation's noise from [`Evaluation::crn_seed`], which is the
    /// same for the points of one sample and differs between samples and steps.
    ///
    /// # Errors
    /// As [`loss`](Objective::loss).
    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        let _ = at;
        self.loss(params)
    }

    /// [`loss_batch`](Objective::loss_batch) with the identity of each point (`at[k]` is point
    /// `k`; `at.len() == points.len()`). The estimators call this one when the objective
    /// batches; the default ignores `at` and calls [`loss_batch`](Objective::loss_batch).
    ///
    /// # Errors
    /// As [`loss_batch`](Objective::loss_batch).
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let _ = at;
        self.loss_batch(params, points)
    }

    /// [`loss_batch_coords`](Objective::loss_batch_coords) with the identity of each point
    /// (`at[k]` is point `k`). [`Fdm`](crate::approx::Fdm) calls this one when the objective
    /// batches; the default ignores `at` and calls
    /// [`loss_batch_coords`](Objective::loss_batch_coords).
    ///
    /// # Errors
    /// As [`loss_batch_coords`](Objective::loss_batch_coords).
    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let _ = at;
        self.loss_batch_coords(params, points)
    }

    /// The directional derivative ∇f(params)·z(dir) (a Jacobian-vector product, e.g. from a
    /// forward-mode shader), for [`Jvp::User`](crate::approx::Jvp::User). For
    /// [`Distribution::Sphere`](crate::Distribution::Sphere) the direction is the Gaussian one
    /// times `√n / ‖z‖` ([`crate::kernels::sphere_norm`]).
    ///
    /// # Errors
    /// The default returns [`Error::Unsupported`]: the objective computes no JVP.
    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        let _ = (params, dir);
        Err(Error::Unsupported(
            "this Objective does not implement jvp (needed by ForwardGradient with Jvp::User)"
                .into(),
        ))
    }

    /// Whether this is one of zograd's own objectives ([`ShaderObjective`](crate::ShaderObjective),
    /// [`BatchObjective`](crate::BatchObjective)), whose GPU work is submitted together with
    /// zograd's pending kernel launches, in order; any other objective may submit its own work,
    /// so zograd submits what it has pending before calling it ([`Gpu::flush`](crate::Gpu::flush)).
    /// Internal: the argument's type cannot be named outside zograd, so the method can be
    /// neither called nor overridden there.
    #[doc(hidden)]
    fn zograd_own(&self, _: sealed::Own) -> bool {
        false
    }
}

/// The token of [`Objective::zograd_own`]: a public type in a private module, so that only
/// zograd names it.
pub(crate) mod sealed {
    /// Proof that the caller is zograd.
    #[derive(Clone, Copy, Debug)]
    pub struct Own;
}

/// The default batch of [`Objective::loss_batch`] and [`Objective::loss_batch_masked`]: for
/// each point x is moved by scale·z(dir) (masked by `mask`), f evaluated (with the point's
/// identity `at[k]` when given) and x moved back, also when the loss fails or panics. For an
/// objective that is not zograd's own every move is submitted before the call, so the
/// objective's own GPU work sees it, and the last one before returning.
fn in_place<O: Objective + ?Sized>(
    objective: &mut O,
    params: &mut Params,
    points: &[(Direction, f32)],
    at: &[Evaluation],
    mask: Option<&Mask>,
) -> Result<Vec<f32>> {
    let own = objective.zograd_own(sealed::Own);
    let mut out = Vec::with_capacity(points.len());
    for (k, (dir, scale)) in points.iter().enumerate() {
        let (by, back) = match mask {
            Some(m) => (
                Move::PerturbMasked(*dir, *scale, m),
                Move::PerturbMasked(*dir, -*scale, m),
            ),
            None => (Move::Perturb(*dir, *scale), Move::Perturb(*dir, -*scale)),
        };
        let mut guard = Restore::moved(params, by, back)?;
        if !own {
            guard.params().gpu().flush()?;
        }
        let value = match at.get(k) {
            Some(at) => objective.loss_at(guard.params(), at),
            None => objective.loss(guard.params()),
        };
        guard.finish()?;
        out.push(value?);
    }
    if !own {
        params.gpu().flush()?;
    }
    Ok(out)
}

/// The one way zograd calls an objective: each call runs inside validation and out-of-memory
/// error scopes on the parameters' device ([`Gpu::scoped`](crate::Gpu::scoped)), so that an error in the user's own
/// GPU work inside the loss comes back as [`Error::Validation`] / [`Error::OutOfMemory`] (the
/// caller's restore guard then puts x back) instead of reaching wgpu's default handler, which
/// panics on a device adopted with [`Gpu::from_wgpu`](crate::Gpu::from_wgpu). Scopes are per thread in wgpu: work the
/// objective submits from another thread is not covered. An error the scopes caught wins over
/// the call's own result (the value of a loss whose GPU work failed means nothing).
///
/// Before calling an objective that is not zograd's own ([`Objective::zograd_own`]), the helpers
/// submit zograd's pending kernel launches ([`Gpu::flush`](crate::Gpu::flush)): the objective
/// may submit its own work, which must run after them. zograd's own objectives record theirs
/// into the same submission, in order.
impl dyn Objective + '_ {
    /// Submits the pending launches unless the objective is zograd's own.
    fn before_call(&self, params: &Params) -> Result<()> {
        if self.zograd_own(sealed::Own) {
            Ok(())
        } else {
            params.gpu().flush_in_scope()
        }
    }

    /// [`Objective::loss`] inside error scopes.
    pub(crate) fn scoped_loss(&mut self, params: &Params) -> Result<f32> {
        params.gpu().scoped(|| {
            self.before_call(params)?;
            self.loss(params)
        })
    }

    /// [`Objective::loss_at`] inside error scopes.
    pub(crate) fn scoped_loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        params.gpu().scoped(|| {
            self.before_call(params)?;
            self.loss_at(params, at)
        })
    }

    /// [`Objective::loss_batch_at`] inside error scopes.
    pub(crate) fn scoped_loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let gpu = params.gpu().clone();
        gpu.scoped(|| {
            self.before_call(params)?;
            self.loss_batch_at(params, points, at)
        })
    }

    /// [`Objective::loss_batch_masked`] inside error scopes.
    pub(crate) fn scoped_loss_batch_masked(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
        mask: &Mask,
    ) -> Result<Vec<f32>> {
        let gpu = params.gpu().clone();
        gpu.scoped(|| {
            self.before_call(params)?;
            self.loss_batch_masked(params, points, at, mask)
        })
    }

    /// [`Objective::loss_batch_coords_at`] inside error scopes.
    pub(crate) fn scoped_loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        let gpu = params.gpu().clone();
        gpu.scoped(|| {
            self.before_call(params)?;
            self.loss_batch_coords_at(params, points, at)
        })
    }

    /// [`Objective::jvp`] inside error scopes.
    pub(crate) fn scoped_jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        params.gpu().scoped(|| {
            self.before_call(params)?;
            self.jvp(params, dir)
        })
    }
}

/// A point of [`Objective::loss_batch_coords`]: the parameters with element `index` (global
/// order) set to `value`; `original` is the element's current value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Coordinate {
    /// Global index of the changed element.
    pub index: u64,
    /// Its value at this point.
    pub value: f32,
    /// Its value in the unperturbed parameters.
    pub original: f32,
}

/// The identity of one point an estimator evaluates, passed to [`Objective::loss_at`] (and
/// per point to [`Objective::loss_batch_at`] / [`Objective::loss_batch_coords_at`]).
///
/// The point is x + `offset`·h·u for the direction u of (`seed`, `step`, `sample`) — or, for
/// [`Fdm`](crate::approx::Fdm), x + `offset`·h·e_i with i = `sample` the element's global
/// index. `offset == 0` is x itself (f₀ of the one-sided formulas).
///
/// **Common random numbers.** [`crn_seed`](Evaluation::crn_seed) is a Philox function of
/// (`seed`, `step`, `sample`) only ([`Evaluation::pair_seed`]): the SAME for every point of one
/// sample (x + h·u and x − h·u of a central difference, all four points of `Central4`, the
/// points of one element for `Fdm`) and different between samples, between steps and between
/// estimator seeds. An objective with simulated noise that draws it from `crn_seed` (as
/// [`Noisy::common_random_numbers`](crate::testfns::Noisy::common_random_numbers) does) makes
/// additive noise cancel exactly in the sample's difference (noisyopt's `paired`). Since the
/// estimator's seed and step counter are in its checkpoint, the seeds are reproducible across
/// processes and resumed runs. f₀ (`offset == 0`), shared by all samples of a call, has its own
/// seed ([`Evaluation::unperturbed`]): with a one-sided formula the noise of f₀ does not cancel
/// against the other points; an objective that wants that can derive its noise from
/// (`seed`, `step`) itself.
///
/// `step` is the estimator's step counter (the optimiser's step for an estimator driven by
/// [`Optimizer`](crate::optim::Optimizer); 0 before the first `pre_step`); `sample` counts from
/// 0 within the step (with `pre_generate(false)`, the c-th call of a step uses c·S … c·S + S − 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Evaluation {
    /// The estimator's seed.
    pub seed: u64,
    /// The estimator's step counter.
    pub step: u32,
    /// The sample (direction index); for `Fdm`, the element's global index.
    pub sample: u64,
    /// The position of this point among the sample's points, in evaluation order (the
    /// [`Formula::offsets`](crate::approx::Formula::offsets) order; 0 for f₀).
    pub point: u32,
    /// The multiple k of h·u of this point: x + k·h·u (0: x itself).
    pub offset: i32,
    /// The seed shared by the points of this sample: [`Evaluation::pair_seed`]`(seed, step,
    /// sample)`, or for f₀ that of [`Evaluation::unperturbed`].
    pub crn_seed: u64,
}

/// The fourth Philox counter word of the per-sample seeds (a tag, "CRN\0").
const CRN_PAIR: u32 = 0x4352_4E00;
/// The fourth Philox counter word of f₀'s seed.
const CRN_CENTER: u32 = 0x4352_4E01;

/// The first two words of Philox4x32-10 at counter `[lo, hi, step, tag]`, key `seed`, as a u64.
fn crn_block(seed: u64, step: u32, value: u64, tag: u32) -> u64 {
    let out = crate::rng::philox4x32_10(
        [value as u32, (value >> 32) as u32, step, tag],
        [seed as u32, (seed >> 32) as u32],
    );
    u64::from(out[0]) | (u64::from(out[1]) << 32)
}

impl Evaluation {
    /// Point `point` (at `offset`·h·u) of sample `sample` of step `step` of an estimator with
    /// seed `seed`; [`crn_seed`](Evaluation::crn_seed) is [`pair_seed`](Evaluation::pair_seed).
    /// For a custom estimator (or a test) that calls [`Objective::loss_at`] itself.
    #[must_use]
    pub fn new(seed: u64, step: u32, sample: u64, point: u32, offset: i32) -> Self {
        Self {
            seed,
            step,
            sample,
            point,
            offset,
            crn_seed: Self::pair_seed(seed, step, sample),
        }
    }

    /// f₀, the unperturbed point of step `step` (sample 0, point 0, offset 0), with its own
    /// seed: words 0 and 1 of Philox4x32-10 at counter `[0, 0, step, 0x43524E01]`, key `seed`.
    #[must_use]
    pub fn unperturbed(seed: u64, step: u32) -> Self {
        Self {
            seed,
            step,
            sample: 0,
            point: 0,
            offset: 0,
            crn_seed: crn_block(seed, step, 0, CRN_CENTER),
        }
    }

    /// The common-random-numbers seed of sample `sample` of step `step`: words 0 (low half)
    /// and 1 (high half) of Philox4x32-10 (the generator of the directions,
    /// [`crate::rng::philox4x32_10`]) at counter `[sample lo, sample hi, step, 0x43524E00]`
    /// with key `[seed lo, seed hi]`. No direction uses that counter before step 0x43524E00
    /// (1.1·10⁹), so the seed is independent of the directions' elements.
    #[must_use]
    pub fn pair_seed(seed: u64, step: u32, sample: u64) -> u64 {
        crn_block(seed, step, sample, CRN_PAIR)
    }

    /// Whether this is x itself (`offset == 0`).
    #[must_use]
    pub fn is_unperturbed(&self) -> bool {
        self.offset == 0
    }
}

/// What a closure objective may return: `f32`, or `Result<f32, E>` for any std error `E`
/// (which becomes [`Error::Objective`]; a zograd [`Error`] itself is passed through).
pub trait LossValue {
    /// The loss, or the objective's error as a zograd [`Error`].
    ///
    /// # Errors
    /// [`Error::Objective`] wrapping the closure's error.
    fn into_loss(self) -> Result<f32>;
}

impl LossValue for f32 {
    fn into_loss(self) -> Result<f32> {
        Ok(self)
    }
}

impl<E> LossValue for std::result::Result<f32, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// A zograd [`Error`] (e.g. from a kernel the closure launched) passes through unchanged;
    /// any other error is wrapped in [`Error::Objective`].
    fn into_loss(self) -> Result<f32> {
        self.map_err(|e| {
            let boxed: Box<dyn std::error::Error + Send + Sync + 'static> = Box::new(e);
            match boxed.downcast::<Error>() {
                Ok(own) => *own,
                Err(other) => Error::Objective(other),
            }
        })
    }
}

impl<F, R> Objective for F
where
    F: FnMut(&Params) -> R,
    R: LossValue,
{
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self(params).into_loss()
    }
}
