// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Objective`]: the black-box loss the estimators query.

use crate::kernels::Direction;
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
        let mut out = Vec::with_capacity(points.len());
        for (dir, scale) in points {
            let by = Move::Perturb(*dir, *scale);
            let mut guard = Restore::moved(params, by, Move::Perturb(*dir, -*scale))?;
            if !self.zograd_own(sealed::Own) {
                // The perturbation may be pending: submitted before the user's own work.
                guard.params().gpu().flush()?;
            }
            let value = self.loss(guard.params());
            guard.finish()?;
            out.push(value?);
        }
        if !self.zograd_own(sealed::Own) {
            // The last restore, before the caller's own work.
            params.gpu().flush()?;
        }
        Ok(out)
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

    /// [`Objective::loss_batch`] inside error scopes.
    pub(crate) fn scoped_loss_batch(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
    ) -> Result<Vec<f32>> {
        let gpu = params.gpu().clone();
        gpu.scoped(|| {
            self.before_call(params)?;
            self.loss_batch(params, points)
        })
    }

    /// [`Objective::loss_batch_coords`] inside error scopes.
    pub(crate) fn scoped_loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        let gpu = params.gpu().clone();
        gpu.scoped(|| {
            self.before_call(params)?;
            self.loss_batch_coords(params, points)
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
