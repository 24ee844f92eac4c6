// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Shard`]: every rank evaluates every point on its own data; the mean over ranks.

use std::fmt;

use mpi::traits::Communicator;

use super::split::checked_len;
use super::{caught, replay, Exchange, Failure};
use crate::kernels::Direction;
use crate::{Coordinate, Evaluation, Objective, Params, Result};

/// An [`Objective`] adapter for data parallelism: every rank evaluates **every** point with its
/// own objective (the same model on this rank's shard of the data), and the loss is the mean
/// of the ranks' values, `(Σ_r f_r) / P`, summed in f64 in rank order after an all-gather and
/// rounded once to f32, so every rank gets bit-identical values (not a floating-point
/// all-reduce, whose order of summation may differ between ranks and runs).
///
/// For the mean over ranks to be the mean over all data, give every rank a shard of the same
/// size and let each rank's objective return the mean over its shard (or weight it yourself:
/// P·m_r/m times the shard mean for shards of m_r of m samples).
///
/// [`has_batch`](Objective::has_batch) is true: a batch is evaluated with the wrapped
/// objective's own batch methods when it has them, otherwise by moving the parameters in place
/// through the points exactly as the estimators' in-place path does, so the values and the
/// parameters equal those of one process running the objective alone. One exchange per batch:
/// an `MPI_Allgatherv` leaving 4·P·(N + 1) bytes on every rank for N points.
///
/// Faults are handled as for [`Split`](super::Split): every rank returns the same error naming
/// the failing rank, a panicking rank re-raises after the exchange.
pub struct Shard<O> {
    inner: O,
    ex: Exchange,
    evaluations: u64,
}

impl<O> fmt::Debug for Shard<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shard")
            .field("exchange", &self.ex)
            .field("evaluations", &self.evaluations)
            .finish_non_exhaustive()
    }
}

impl<O: Objective> Shard<O> {
    /// Wraps `inner` (this rank's loss on its shard) for the ranks of `comm` (duplicated).
    /// Collective: every rank of `comm` must call it. Drop the adapter before
    /// the MPI `Universe` (it frees its communicator when dropped).
    pub fn new<C: Communicator>(inner: O, comm: &C) -> Self {
        Self {
            inner,
            ex: Exchange::new(comm),
            evaluations: 0,
        }
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

    /// Evaluations of the wrapped objective made on this rank so far.
    #[must_use]
    pub fn evaluations(&self) -> u64 {
        self.evaluations
    }

    /// Bytes of the collective buffers this rank held after each exchange so far.
    #[must_use]
    pub fn bytes_exchanged(&self) -> u64 {
        self.ex.bytes
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

    /// Gathers every rank's `values` and returns their means over ranks.
    fn combine(&mut self, values: &[f32], failure: Option<Failure>) -> Result<Vec<f32>> {
        let counts = vec![values.len(); self.ex.size as usize];
        let all = self.ex.gather_values(values, failure, &counts)?;
        let p = f64::from(self.ex.size);
        Ok((0..values.len())
            .map(|i| {
                let sum: f64 = all.iter().map(|rank| f64::from(rank[i])).sum();
                (sum / p) as f32
            })
            .collect())
    }

    fn single(&mut self, eval: impl FnOnce(&mut O) -> Result<f32>) -> Result<f32> {
        self.evaluations += 1;
        let inner = &mut self.inner;
        let (value, failure) = match caught(|| eval(inner)) {
            Ok(v) => (v, None),
            Err(f) => (0.0, Some(f)),
        };
        Ok(self.combine(&[value], failure)?[0])
    }
}

impl<O: Objective> Shard<O> {
    /// `loss_batch` (`at` = None) or `loss_batch_at`: every point here, then the means.
    fn batch(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: Option<&[Evaluation]>,
    ) -> Result<Vec<f32>> {
        let (values, failure) = if self.inner.has_batch() {
            self.evaluations += points.len() as u64;
            let inner = &mut self.inner;
            match caught(|| {
                let values = match at {
                    Some(at) => inner.loss_batch_at(params, points, at),
                    None => inner.loss_batch(params, points),
                };
                checked_len(values, points.len())
            }) {
                Ok(v) => (v, None),
                Err(f) => (vec![0.0; points.len()], Some(f)),
            }
        } else {
            replay(
                &mut self.inner,
                params,
                points,
                at,
                0..points.len(),
                None,
                &mut self.evaluations,
            )
        };
        self.combine(&values, failure)
    }

    /// `loss_batch_coords` (`at` = None) or `loss_batch_coords_at`.
    fn coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: Option<&[Evaluation]>,
    ) -> Result<Vec<f32>> {
        self.evaluations += points.len() as u64;
        let inner = &mut self.inner;
        let (values, failure) = match caught(|| {
            let values = match at {
                Some(at) => inner.loss_batch_coords_at(params, points, at),
                None => inner.loss_batch_coords(params, points),
            };
            checked_len(values, points.len())
        }) {
            Ok(v) => (v, None),
            Err(f) => (vec![0.0; points.len()], Some(f)),
        };
        self.combine(&values, failure)
    }
}

impl<O: Objective> Objective for Shard<O> {
    /// The mean over ranks of the ranks' f(params).
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.single(|inner| inner.loss(params))
    }

    /// The mean over ranks of the ranks' `loss_at` (each rank's own noise, same identity).
    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        self.single(|inner| inner.loss_at(params, at))
    }

    /// True: one exchange per batch.
    fn has_batch(&self) -> bool {
        true
    }

    /// Every point on this rank, then the means over ranks.
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        self.batch(params, points, None)
    }

    /// As [`loss_batch`](Objective::loss_batch), with the points' identities.
    fn loss_batch_at(
        &mut self,
        params: &mut Params,
        points: &[(Direction, f32)],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.batch(params, points, Some(at))
    }

    /// Every point on this rank (each element written and written back), then the means over
    /// ranks.
    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        self.coords(params, points, None)
    }

    /// As [`loss_batch_coords`](Objective::loss_batch_coords), with the points' identities.
    fn loss_batch_coords_at(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
        at: &[Evaluation],
    ) -> Result<Vec<f32>> {
        self.coords(params, points, Some(at))
    }

    /// The mean over ranks of the ranks' JVPs (the JVP of the mean loss).
    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        self.single(|inner| inner.jvp(params, dir))
    }
}
