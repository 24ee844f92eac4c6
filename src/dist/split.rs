// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Split`]: the points of every batch split across ranks, the values all-gathered.

use std::fmt;

use mpi::traits::Communicator;

use super::{caught, replay, share, Exchange};
use crate::kernels::{copy, Direction};
use crate::{Coordinate, Evaluation, Objective, Params, Result};

/// An [`Objective`] adapter that spreads every batch of points over the ranks of a
/// communicator: each rank evaluates only its [`share`] of the points of a
/// [`loss_batch`](Objective::loss_batch) or [`loss_batch_coords`](Objective::loss_batch_coords)
/// call (contiguous blocks in rank order; uneven counts give the first ranks one point more)
/// and one all-gather gives every rank every value, so every estimator computes the same
/// coefficients and applies the same update on every rank. Single evaluations —
/// [`loss`](Objective::loss) (f(x), line-search trials) and [`jvp`](Objective::jvp) — run on
/// rank 0 and are broadcast, so no scalar that feeds an update differs between ranks.
///
/// [`has_batch`](Objective::has_batch) is true, so the random estimators hand all m·S points
/// of a call to one `loss_batch` and [`Fdm`](crate::approx::Fdm) hands its coordinates in
/// batches of `batch_size`. With the wrapped objective's own batch methods (when its
/// `has_batch()` is true, e.g. a [`BatchObjective`](crate::BatchObjective)) a rank evaluates
/// its share in one call; otherwise it moves the parameters in place through **every** point,
/// in the order and by the steps the estimators' in-place path uses, and evaluates the wrapped
/// [`loss`](Objective::loss) at its own points only. The moves cost about three perturbation
/// passes per sample on every rank (cheap next to a loss worth distributing) and keep the
/// replicas bit-identical, in-place drift included; with many samples per step and a loss not
/// much dearer than a pass over the parameters, [`exact_restore`](Split::exact_restore) visits
/// only the own samples and restores by copy instead. Estimators whose directions are stored rather
/// than regenerated ([`RandomizedFdm`](crate::approx::RandomizedFdm) with direction momentum)
/// and [`ForwardGradient`](crate::approx::ForwardGradient) with user JVPs evaluate point by
/// point: correct on every rank, but on rank 0 only.
///
/// Every rank must call the same methods in the same order (run the same program with the
/// same seeds); see the [module documentation](crate::dist) for identical replicas and faults.
/// The wrapped objective must be local to its rank: one that runs MPI collectives itself
/// would wait forever when only rank 0 evaluates (wrap such a loss in
/// [`Shard`](super::Shard), which calls it on every rank for every point).
///
/// Traffic per `loss_batch` of N points on P ranks: one `MPI_Allgatherv` that leaves
/// 4·(N + P) bytes on every rank (the values and one status word per rank), plus a broadcast
/// of the failing rank's message when one fails. A single evaluation is one `MPI_Bcast` of 8
/// bytes.
pub struct Split<O> {
    inner: O,
    ex: Exchange,
    evaluations: u64,
    exact_restore: bool,
    saved: Option<Params>,
}

impl<O> fmt::Debug for Split<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("exchange", &self.ex)
            .field("evaluations", &self.evaluations)
            .finish_non_exhaustive()
    }
}

impl<O: Objective> Split<O> {
    /// Wraps `inner` for the ranks of `comm` (duplicated: zograd's collectives never match the
    /// program's own messages). Collective: every rank of `comm` must call it. Drop the adapter
    /// before the MPI `Universe` (it frees its communicator when dropped).
    pub fn new<C: Communicator>(inner: O, comm: &C) -> Self {
        Self {
            inner,
            ex: Exchange::new(comm),
            evaluations: 0,
            exact_restore: false,
            saved: None,
        }
    }

    /// Restore by copy (default false): each rank keeps one copy of the parameters (n floats
    /// of GPU memory), visits only the directions that hold one of its own points, and puts
    /// the parameters back by copying, bit-exactly. The perturbation passes per rank then fall
    /// from about 3·S per step (every rank visits every sample, see the type's documentation)
    /// to about 3·S/P + S/P copies, which matters when S is large and the loss is not much
    /// dearer than a pass over the parameters. The values are those of an estimator with
    /// `exact_restore(true)` (each sample starts from the exact parameters), so a run with the
    /// estimator's `exact_restore(true)` gives the same parameters as the objective alone, the
    /// fused MeZO step included; with the estimator's in-place restoration it still gives the
    /// same parameters on every rank and for every number of ranks. Only for wrapped objectives
    /// without their own batch methods (the others never move the parameters).
    #[must_use]
    pub fn exact_restore(mut self, exact_restore: bool) -> Self {
        self.exact_restore = exact_restore;
        if !exact_restore {
            self.saved = None;
        }
        self
    }

    /// Bytes of GPU memory the adapter owns: n·4 with [`exact_restore`](Split::exact_restore)
    /// once the copy exists, else 0.
    #[must_use]
    pub fn state_bytes(&self) -> u64 {
        self.saved.as_ref().map_or(0, Params::owned_bytes)
    }

    /// This process's rank.
    #[must_use]
    pub fn rank(&self) -> i32 {
        self.ex.rank
    }

    /// The number of ranks.
    #[must_use]
    pub fn size(&self) -> i32 {
        self.ex.size
    }

    /// Evaluations of the wrapped objective (loss or JVP) made on this rank so far.
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Bytes of the collective buffers this rank held after each exchange so far (gathered
    /// values, status words, broadcast values and messages): the payload MPI moved for it.
    #[must_use]
    pub fn bytes_exchanged(&self) -> u64 {
        self.ex.bytes
    }

    /// Collectives this rank took part in so far.
    #[must_use]
    pub fn exchanges(&self) -> u64 {
        self.ex.collectives
    }

    /// The wrapped objective.
    #[must_use]
    pub fn inner(&self) -> &O {
        &self.inner
    }

    /// The wrapped objective, mutably.
    pub fn inner_mut(&mut self) -> &mut O {
        &mut self.inner
    }

    /// Unwraps the objective.
    #[must_use]
    pub fn into_inner(self) -> O {
        self.inner
    }

    fn counts(&self, total: usize) -> Vec<usize> {
        let size = self.ex.size as usize;
        (0..size).map(|q| share(total, size, q).len()).collect()
    }

    /// `loss_batch` (`at` = None) or `loss_batch_at`: this rank's share, then all values.
    fn batch(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: Option<&[Evaluation]>,
    ) -> Result<Vec<f32>>
    where
        O: Objective,
    {
        let own = share(points.len(), self.ex.size as usize, self.ex.rank as usize);
        let (values, failure) = if self.inner.has_batch() {
            let mine = &points[own.clone()];
            if mine.is_empty() {
                (Vec::new(), None)
            } else {
                self.evaluations += mine.len() as u64;
                let inner = &mut self.inner;
                let ids = at.and_then(|a| a.get(own.clone()));
                match caught(|| {
                    let values = match ids {
                        Some(ids) => inner.loss_batch_at(params, mine, ids),
                        None => inner.loss_batch(params, mine),
                    };
                    checked_len(values, mine.len())
                }) {
                    Ok(v) => (v, None),
                    Err(f) => (vec![0.0; mine.len()], Some(f)),
                }
            }
        } else if self.exact_restore {
            let saved = &mut self.saved;
            match caught(|| {
                let s = crate::params::ensure_like(saved, params)?;
                copy(s, params)
            }) {
                Ok(()) => replay(
                    &mut self.inner,
                    params,
                    points,
                    at,
                    own,
                    self.saved.as_ref(),
                    &mut self.evaluations,
                ),
                Err(f) => (vec![0.0; own.len()], Some(f)),
            }
        } else {
            replay(
                &mut self.inner,
                params,
                points,
                at,
                own,
                None,
                &mut self.evaluations,
            )
        };
        let counts = self.counts(points.len());
        let all = self.ex.gather_values(&values, failure, &counts)?;
        Ok(all.concat())
    }

    /// `loss_batch_coords` (`at` = None) or `loss_batch_coords_at`.
    fn coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: Option<&[Evaluation]>,
    ) -> Result<Vec<f32>>
    where
        O: Objective,
    {
        let own = share(points.len(), self.ex.size as usize, self.ex.rank as usize);
        let ids = at.and_then(|a| a.get(own.clone()));
        let mine = &points[own];
        let inner = &mut self.inner;
        let (values, failure) = if mine.is_empty() {
            (Vec::new(), None)
        } else if inner.has_batch() {
            self.evaluations += mine.len() as u64;
            match caught(|| {
                let values = match ids {
                    Some(ids) => inner.loss_batch_coords_at(params, mine, ids),
                    None => inner.loss_batch_coords(params, mine),
                };
                checked_len(values, mine.len())
            }) {
                Ok(v) => (v, None),
                Err(f) => (vec![0.0; mine.len()], Some(f)),
            }
        } else {
            let mut values = vec![0.0f32; mine.len()];
            let mut failure = None;
            for (t, (v, p)) in values.iter_mut().zip(mine).enumerate() {
                self.evaluations += 1;
                let id = ids.and_then(|ids| ids.get(t));
                let r = caught(|| {
                    params.write_at(p.index, &[p.value])?;
                    match id {
                        Some(id) => inner.loss_at(params, id),
                        None => inner.loss(params),
                    }
                });
                // Written back whatever happened (the exact original value).
                let back = caught(|| params.write_at(p.index, &[p.original]));
                match (r, back) {
                    (Ok(x), Ok(())) => *v = x,
                    (Err(f), _) | (Ok(_), Err(f)) => {
                        failure = Some(f);
                        break;
                    }
                }
            }
            (values, failure)
        };
        let counts = self.counts(points.len());
        let all = self.ex.gather_values(&values, failure, &counts)?;
        Ok(all.concat())
    }
}

impl<O: Objective> Objective for Split<O> {
    /// f(params) evaluated on rank 0 and broadcast.
    fn loss(&mut self, params: &Params) -> Result<f32> {
        let inner = &mut self.inner;
        if self.ex.rank == 0 {
            self.evaluations += 1;
        }
        self.ex.on_root(0, || inner.loss(params))
    }

    /// The wrapped objective's `loss_at`, evaluated on rank 0 and broadcast.
    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        let inner = &mut self.inner;
        if self.ex.rank == 0 {
            self.evaluations += 1;
        }
        self.ex.on_root(0, || inner.loss_at(params, at))
    }

    /// True: the batch methods split the points across the ranks.
    fn has_batch(&self) -> bool {
        true
    }

    /// This rank's share of `points`, then all values all-gathered.
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        self.batch(params, points, None)
    }

    /// As [`loss_batch`](Objective::loss_batch), each own point evaluated with its identity
    /// (the wrapped objective's `loss_batch_at`, or its `loss_at` point by point).
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.batch(params, points, Some(at))
    }

    /// This rank's share of `points` (each element written and written back, exactly), then
    /// all values all-gathered.
    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        self.coords(params, points, None)
    }

    /// As [`loss_batch_coords`](Objective::loss_batch_coords), each own point evaluated with
    /// its identity.
    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.coords(params, points, Some(at))
    }

    /// The wrapped objective's JVP, evaluated on rank 0 and broadcast.
    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        let inner = &mut self.inner;
        if self.ex.rank == 0 {
            self.evaluations += 1;
        }
        self.ex.on_root(0, || inner.jvp(params, dir))
    }
}

/// `values` when it holds `expected` values, else an error naming the count.
pub(crate) fn checked_len(values: Result<Vec<f32>>, expected: usize) -> Result<Vec<f32>> {
    let values = values?;
    if values.len() == expected {
        Ok(values)
    } else {
        Err(crate::Error::invalid(format!(
            "objective: the wrapped loss_batch returned {} values for {expected} points",
            values.len()
        )))
    }
}
