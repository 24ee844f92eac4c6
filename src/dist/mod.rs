// SPDX-License-Identifier: MIT OR Apache-2.0
//! Scale-out over MPI (cargo feature `mpi`): ranks that share seeds exchange only loss values.
//!
//! zograd's directions are regenerated from (seed, step, sample) wherever they are needed, so
//! ranks that hold identical parameters and run identically configured estimators never need
//! to send a direction or a gradient: only the loss values. This module provides
//!
//! - [`Split`]: an [`Objective`] adapter that evaluates only this rank's share of every batch of
//!   points ([`share`]) and all-gathers the values, so every rank holds every value, computes the
//!   same coefficients and applies the same update. Single evaluations (f(x), line-search
//!   trials, JVPs) run on rank 0 and are broadcast.
//! - [`Shard`]: data parallelism: every rank evaluates every point on its own data shard and
//!   the loss is the mean over ranks, summed in rank order (bit-identical on every rank).
//! - [`broadcast`] and [`check_replicas`]: identical replicas at the start, and a checksum
//!   comparison callable every k steps.
//! - [`gpu_for_rank`]: one adapter per rank on a node with several.
//!
//! # Identical replicas
//! With `Split` or `Shard`, the parameters after every step are **bit-identical on every rank
//! and for every number of ranks P** (1 included), given the same seeds (set the seed of every
//! estimator explicitly: an estimator built without one draws it from the OS, which differs
//! between ranks) and the same adapter type on every rank. Every rank moves its parameters
//! through the same sequence of in-place perturbations, whichever points it evaluates, so even
//! the f32 drift of in-place restoration is the same everywhere. Replicas can differ only if
//! ranks run different adapters: Gaussian (and Sphere) directions agree across adapters to
//! about 1e-6 relative, Rademacher and uniform ones bit for bit. [`check_replicas`] detects it
//! (cost: one download of the parameters, an FNV-1a hash on the host and an all-gather of 12
//! bytes per rank); [`broadcast`] from one rank makes them identical again.
//!
//! Through a `Split` with one rank, every estimator and chain gives the same parameters as the
//! objective alone, with one exception: the fused MeZO step (an
//! [`Optimizer`](crate::optim::Optimizer) whose chain is only `Lr`/`WeightDecay`). Alone, it
//! leaves the parameters at the last sample's last point and folds the restore into the update;
//! through a `Split` the estimator takes its batched path, which restores first. The two
//! differ by the f32 rounding of that one restore (at most a few ulp per element); P = 1, 2, 3,
//! … through a `Split` all agree bit for bit. With the estimator's `exact_restore(true)` and
//! [`Split::exact_restore`]`(true)`, the fused step too gives exactly what the objective alone
//! gives.
//!
//! # Faults
//! A rank whose objective returns an error or panics does not leave the others waiting: the
//! status travels in the gathered message, and every rank returns the same
//! [`Error::Objective`] wrapping a [`RankError`] that names the failing rank (the lowest, when
//! several fail) and its message, with the parameters restored as after any failed evaluation;
//! the next step proceeds normally. A rank that panicked re-raises its panic after the
//! collective (and after restoring its parameters). One gap: with an estimator's
//! `exact_restore(true)` but an in-place `Split`, the ranks that return the error restore by
//! the estimator's copy, but the panic unwinds past that copy on the panicking rank, so its
//! replica keeps the in-place drift (a few ulp). [`Split::exact_restore`]`(true)` restores by
//! its own copy before re-raising and closes the gap; otherwise call [`check_replicas`] /
//! [`broadcast`] after catching a panic. A NaN or infinite loss is a value, not a
//! failure: it is gathered like any other, and every rank's estimator reports the same
//! [`Error::NonFiniteLoss`] (or, in a line search, rejects the same trial).
//!
//! A rank that dies (killed, segfault, lost node) is MPI's to report: zograd cannot return an
//! error from a collective that a dead rank never joins. Open MPI's `mpirun` notices the exit,
//! kills the other ranks (which were waiting in the collective) and exits with a non-zero
//! status, printing (Open MPI 4.1, rank 1 killed with `kill -9` during a step):
//!
//! ```text
//! mpirun noticed that process rank 1 with PID 0 on node vm exited on signal 9 (Killed).
//! ```
//!
//! # Example
//! ```no_run
//! use zograd::approx::MeZo;
//! use zograd::dist::{self, mpi::traits::*, Split};
//! use zograd::optim::{Lr, Optimizer};
//! use zograd::Params;
//! # fn main() -> zograd::Result<()> {
//! let universe = dist::mpi::initialize().expect("MPI initialised once");
//! let world = universe.world();
//! let gpu = dist::gpu_for_rank(&world)?;
//! let mut x = Params::from_slices(&gpu, &[&[0.5f32; 1024][..]])?;
//! dist::broadcast(&world, &mut x, 0)?;
//! let loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().map(|v| v * v).sum()) };
//! let mut loss = Split::new(loss, &world);
//! // The seed must be the same on every rank.
//! let mut opt = Optimizer::new(&gpu, &x, MeZo::new().n_samples(16).seed(7))?.then(Lr::new(1e-3));
//! for _ in 0..100 {
//!     opt.step(&mut x, &mut loss)?; // 32 points per step, 32/P evaluated on this rank
//! }
//! dist::check_replicas(&world, &x)?;
//! # Ok(()) }
//! ```

use std::any::Any;
use std::fmt;
use std::ops::Range;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use mpi::datatype::PartitionMut;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;

use crate::kernels::{copy, perturb, Direction};
use crate::{Error, Evaluation, Gpu, Objective, Params, Result};

/// The MPI binding zograd is built against (rsmpi), re-exported so that a program needs no
/// second dependency to initialise MPI: `zograd::dist::mpi::initialize()`.
pub use mpi;

mod shard;
mod split;

pub use shard::Shard;
pub use split::Split;

/// The failure of an objective on one rank, as every rank reports it (inside
/// [`Error::Objective`]; downcast the source to read the fields).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankError {
    /// The failing rank (the lowest, when several failed in the same exchange).
    pub rank: i32,
    /// Every rank that failed in this exchange, ascending.
    pub failed: Vec<i32>,
    /// Whether `rank` panicked (it re-raises the panic after the exchange) rather than
    /// returning an error.
    pub panicked: bool,
    /// The error's `Display` text, or the panic's message, on `rank`.
    pub message: String,
}

impl fmt::Display for RankError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.panicked { "panicked" } else { "failed" };
        write!(f, "rank {} {what}: {}", self.rank, self.message)?;
        if self.failed.len() > 1 {
            write!(f, " (failed ranks: {:?})", self.failed)?;
        }
        Ok(())
    }
}

impl std::error::Error for RankError {}

/// The points `share(total, size, rank)` that rank `rank` of `size` evaluates out of `total`:
/// contiguous blocks in rank order, the first `total % size` ranks one point more (S = 5
/// central-difference samples, 10 points, on 3 ranks: 0..4, 4..7, 7..10).
///
/// # Panics
/// Never for `size ≥ 1` and `rank < size`; `size = 0` is treated as 1.
#[must_use]
pub fn share(total: usize, size: usize, rank: usize) -> Range<usize> {
    let size = size.max(1);
    let base = total / size;
    let extra = total % size;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start.min(total)..(start + len).min(total)
}

/// The FNV-1a 64-bit hash of `bytes` (offset basis 0xcbf29ce484222325, prime 0x100000001b3).
#[must_use]
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// [`fnv1a64`] of the little-endian bytes of all parameter buffers in order (one download).
///
/// # Errors
/// As [`Params::to_vec`].
pub fn params_hash(params: &Params) -> Result<u64> {
    let values = params.to_vec()?;
    let mut bytes = Vec::with_capacity(values.len() * 4);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(fnv1a64(&bytes))
}

/// Copies `params` from rank `root` to every rank of `comm` (collective: every rank calls it).
/// Use it after creating the parameters, so that every replica starts identical, or to
/// re-synchronise replicas that [`check_replicas`] found different.
///
/// Cost: one download on `root`, one upload elsewhere, a broadcast of 4·n bytes.
///
/// # Errors
/// [`Error::InvalidArgument`] when `root` is not a rank of `comm` or when a rank's parameters
/// have another number of elements than root's (every rank returns it, naming the ranks);
/// [`Error::Objective`] with a [`RankError`] when the download on root failed (on every rank);
/// a failing upload is reported by the rank it happened on.
pub fn broadcast<C: Communicator>(comm: &C, params: &mut Params, root: i32) -> Result<()> {
    let size = comm.size();
    if !(0..size).contains(&root) {
        return Err(Error::invalid(format!(
            "root: must be a rank of the communicator (0..{size}), got {root}"
        )));
    }
    let rank = comm.rank();
    let mut ex = Exchange::new(comm);
    let (data, failure) = if rank == root {
        match caught(|| params.to_vec()) {
            Ok(d) => (d, None),
            Err(f) => (Vec::new(), Some(f)),
        }
    } else {
        (Vec::new(), None)
    };
    let len = data.len() as u64;
    let mut header = [
        failure.as_ref().map_or(OK, Failure::code),
        len as u32,
        (len >> 32) as u32,
    ];
    ex.broadcast(&mut header, root);
    let mut statuses = vec![OK; size as usize];
    statuses[root as usize] = header[0];
    ex.settle(&statuses, failure)?;
    let len = u64::from(header[1]) | (u64::from(header[2]) << 32);
    let mine = [u32::from(params.len() == len)];
    let all = ex.all_gather(&mine, &vec![1; size as usize]).0;
    let wrong: Vec<usize> = (0..size as usize).filter(|q| all[*q] == 0).collect();
    if !wrong.is_empty() {
        return Err(Error::invalid(format!(
            "params: ranks {wrong:?} hold another number of elements than root {root} ({len})"
        )));
    }
    let mut data = if rank == root {
        data
    } else {
        vec![0.0f32; len as usize]
    };
    for chunk in data.chunks_mut(1 << 26) {
        ex.broadcast(chunk, root);
    }
    if rank != root {
        params.write(&data)?;
    }
    Ok(())
}

/// Compares a checksum of the parameters across the ranks of `comm` (collective) and returns it
/// when every rank holds the same bytes. Cheap enough to call every k steps: one download of
/// the parameters (n floats), an FNV-1a hash of their bytes on the host ([`params_hash`]), an
/// `MPI_Comm_dup` of `comm` (zograd's messages never mix with the program's) and an all-gather
/// of 12 bytes per rank.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the ranks whose parameters differ from rank 0's (every
/// rank returns the same error; [`broadcast`] re-synchronises them); [`Error::Objective`] with
/// a [`RankError`] when a rank's download failed.
pub fn check_replicas<C: Communicator>(comm: &C, params: &Params) -> Result<u64> {
    let mut ex = Exchange::new(comm);
    let size = ex.size as usize;
    let (hash, failure) = match caught(|| params_hash(params)) {
        Ok(h) => (h, None),
        Err(f) => (0, Some(f)),
    };
    let mine = [
        failure.as_ref().map_or(OK, Failure::code),
        hash as u32,
        (hash >> 32) as u32,
    ];
    let all = ex.all_gather(&mine, &vec![3; size]).0;
    let statuses: Vec<u32> = (0..size).map(|q| all[3 * q]).collect();
    ex.settle(&statuses, failure)?;
    let hashes: Vec<u64> = (0..size)
        .map(|q| u64::from(all[3 * q + 1]) | (u64::from(all[3 * q + 2]) << 32))
        .collect();
    let differ: Vec<String> = (1..size)
        .filter(|q| hashes[*q] != hashes[0])
        .map(|q| format!("rank {q}: {:016x}", hashes[q]))
        .collect();
    if differ.is_empty() {
        Ok(hashes[0])
    } else {
        Err(Error::invalid(format!(
            "params: the replicas differ from rank 0's (hash {:016x}) on {}",
            hashes[0],
            differ.join(", ")
        )))
    }
}

/// This process's rank among the ranks of `comm` on the same node (from a shared-memory split
/// of `comm`, `MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)`; collective).
pub fn local_rank<C: Communicator>(comm: &C) -> i32 {
    comm.split_shared(comm.rank()).rank()
}

/// A [`Gpu`] for this rank (collective: calls [`local_rank`]). When `WGPU_ADAPTER_NAME` is set
/// it decides, exactly as for [`Gpu::new`]. Otherwise, when the node has several adapters
/// (of the backends `WGPU_BACKEND` allows), rank r uses adapter (local rank mod count) in
/// wgpu's enumeration order, counting only hardware adapters when there is one (a CPU adapter
/// such as lavapipe is used only on a node without a GPU); with one adapter this is
/// [`Gpu::new`].
///
/// A device opened on a chosen adapter is adopted as by [`Gpu::from_wgpu`]: zograd installs no
/// device-lost handler on it (errors inside zograd's calls are still caught and returned).
///
/// # Errors
/// As [`Gpu::new`].
pub fn gpu_for_rank<C: Communicator>(comm: &C) -> Result<Gpu> {
    let local = local_rank(comm);
    if std::env::var_os("WGPU_ADAPTER_NAME").is_some() {
        return Gpu::new();
    }
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let hardware: Vec<&wgpu::Adapter> = all
        .iter()
        .filter(|a| a.get_info().device_type != wgpu::DeviceType::Cpu)
        .collect();
    let candidates: Vec<&wgpu::Adapter> = if hardware.is_empty() {
        all.iter().collect()
    } else {
        hardware
    };
    if candidates.len() <= 1 {
        return Gpu::new();
    }
    let adapter = candidates[local as usize % candidates.len()];
    if !adapter
        .get_downlevel_capabilities()
        .flags
        .contains(wgpu::DownlevelFlags::COMPUTE_SHADERS)
    {
        return Err(Error::Unsupported(format!(
            "adapter {:?} has no compute shaders",
            adapter.get_info().name
        )));
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("zograd"),
        required_features: wgpu::Features::empty(),
        required_limits: adapter.limits(),
        experimental_features: wgpu::ExperimentalFeatures::disabled(),
        memory_hints: wgpu::MemoryHints::Performance,
        trace: wgpu::Trace::Off,
    }))?;
    Gpu::from_wgpu(device, queue)
}

/// Status words of a gathered message.
const OK: u32 = 0;
const FAILED: u32 = 1;
const PANICKED: u32 = 2;

/// What went wrong on this rank during an evaluation.
pub(crate) enum Failure {
    /// The objective (or a kernel) returned an error; its `Display` text.
    Error(String),
    /// The objective panicked: the payload, re-raised after the exchange, and its message.
    Panic(Box<dyn Any + Send>, String),
}

impl Failure {
    fn code(&self) -> u32 {
        match self {
            Failure::Error(_) => FAILED,
            Failure::Panic(..) => PANICKED,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Error(m) | Failure::Panic(_, m) => m,
        }
    }
}

/// Runs `f`, turning its error or panic into a [`Failure`].
pub(crate) fn caught<T>(f: impl FnOnce() -> Result<T>) -> std::result::Result<T, Failure> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failure::Error(e.to_string())),
        Err(payload) => {
            let message = if let Some(s) = payload.downcast_ref::<&str>() {
                (*s).to_string()
            } else if let Some(s) = payload.downcast_ref::<String>() {
                s.clone()
            } else {
                "a panic with a non-string payload".to_string()
            };
            Err(Failure::Panic(payload, message))
        }
    }
}

/// A duplicate of the user's communicator (so zograd's collectives never match the user's own
/// messages) and the traffic counters.
pub(crate) struct Exchange {
    comm: SimpleCommunicator,
    pub(crate) rank: i32,
    pub(crate) size: i32,
    /// Bytes of the buffers this rank held after each collective.
    pub(crate) bytes: u64,
    /// Collectives this rank took part in.
    pub(crate) collectives: u64,
}

impl fmt::Debug for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exchange")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("bytes", &self.bytes)
            .field("collectives", &self.collectives)
            .finish_non_exhaustive()
    }
}

impl Exchange {
    pub(crate) fn new<C: Communicator>(comm: &C) -> Self {
        let comm = comm.duplicate();
        Self {
            rank: comm.rank(),
            size: comm.size(),
            comm,
            bytes: 0,
            collectives: 0,
        }
    }

    /// All-gathers messages of `counts[q]` words from every rank q (`mine` has
    /// `counts[rank]`); returns the concatenation in rank order and each rank's offset.
    pub(crate) fn all_gather(&mut self, mine: &[u32], counts: &[i32]) -> (Vec<u32>, Vec<usize>) {
        let mut displs = Vec::with_capacity(counts.len());
        let mut total = 0i32;
        for c in counts {
            displs.push(total);
            total += c;
        }
        let mut all = vec![0u32; total as usize];
        {
            let mut partition = PartitionMut::new(&mut all[..], counts, &displs[..]);
            self.comm.all_gather_varcount_into(mine, &mut partition);
        }
        self.bytes += 4 * total as u64;
        self.collectives += 1;
        (all, displs.iter().map(|d| *d as usize).collect())
    }

    /// Broadcasts `buf` from `root`.
    pub(crate) fn broadcast<T: Equivalence>(&mut self, buf: &mut [T], root: i32) {
        self.comm.process_at_rank(root).broadcast_into(buf);
        self.bytes += std::mem::size_of_val(buf) as u64;
        self.collectives += 1;
    }

    /// Turns the gathered `statuses` (one per rank, the same on every rank) into the same
    /// result on every rank: `Ok` when all are OK, else the lowest failing rank's message
    /// (broadcast from it) as a [`RankError`]. A rank whose own `local` failure is a panic
    /// re-raises it here, after the exchange.
    pub(crate) fn settle(&mut self, statuses: &[u32], local: Option<Failure>) -> Result<()> {
        let failed: Vec<i32> = (0..statuses.len())
            .filter(|q| statuses[*q] != OK)
            .map(|q| q as i32)
            .collect();
        let Some(&first) = failed.first() else {
            return Ok(());
        };
        let own = if self.rank == first {
            local
                .as_ref()
                .map_or("", Failure::message)
                .as_bytes()
                .to_vec()
        } else {
            Vec::new()
        };
        let mut len = [own.len() as u64];
        self.broadcast(&mut len, first);
        let mut text = if self.rank == first {
            own
        } else {
            vec![0u8; len[0] as usize]
        };
        if !text.is_empty() {
            self.broadcast(&mut text[..], first);
        }
        let error = RankError {
            rank: first,
            panicked: statuses[first as usize] == PANICKED,
            failed,
            message: String::from_utf8_lossy(&text).into_owned(),
        };
        if let Some(Failure::Panic(payload, _)) = local {
            resume_unwind(payload);
        }
        Err(Error::Objective(Box::new(error)))
    }

    /// Evaluates `eval` on `root` only and broadcasts its value (or its failure) to every rank.
    pub(crate) fn on_root(&mut self, root: i32, eval: impl FnOnce() -> Result<f32>) -> Result<f32> {
        let (value, failure) = if self.rank == root {
            match caught(eval) {
                Ok(v) => (v, None),
                Err(f) => (0.0, Some(f)),
            }
        } else {
            (0.0, None)
        };
        let mut msg = [failure.as_ref().map_or(OK, Failure::code), value.to_bits()];
        self.broadcast(&mut msg, root);
        let mut statuses = vec![OK; self.size as usize];
        statuses[root as usize] = msg[0];
        self.settle(&statuses, failure)?;
        Ok(f32::from_bits(msg[1]))
    }

    /// All-gathers each rank's status and values (`counts[q]` values from rank q); returns the
    /// values of every rank, in rank order, once every status is OK.
    pub(crate) fn gather_values(
        &mut self,
        values: &[f32],
        failure: Option<Failure>,
        counts: &[usize],
    ) -> Result<Vec<Vec<f32>>> {
        let mut mine = Vec::with_capacity(1 + values.len());
        mine.push(failure.as_ref().map_or(OK, Failure::code));
        mine.extend(values.iter().map(|v| v.to_bits()));
        let words: Vec<i32> = counts.iter().map(|c| 1 + *c as i32).collect();
        let (all, displs) = self.all_gather(&mine, &words);
        let statuses: Vec<u32> = displs.iter().map(|d| all[*d]).collect();
        self.settle(&statuses, failure)?;
        Ok(displs
            .iter()
            .zip(counts)
            .map(|(d, c)| {
                all[d + 1..d + 1 + c]
                    .iter()
                    .map(|b| f32::from_bits(*b))
                    .collect()
            })
            .collect())
    }
}

/// Evaluates the points `own` of `points` with `inner`, moving `params` in place exactly as the
/// estimators' in-place path moves them: the points of one direction in a run (one sample of a
/// formula, scales k·unit with integer k) are visited by steps of (k − k_prev)·unit. Scales
/// that are not such multiples are visited as the trait's default `loss_batch` does (+scale,
/// then −scale).
///
/// Without `saved`, `params` go through **every** point (a direction is left by −k_last·unit),
/// whichever points this rank evaluates, so every rank leaves them with the same bits, in-place
/// drift included, and the values equal those of the estimator's in-place path. With `saved`
/// (a copy of `params` on entry) only the directions that hold an own point are visited, each
/// from the exact start, and left by copying `saved` back: `params` end bit-exact, and the
/// values equal those of an estimator with `exact_restore(true)`.
///
/// Returns the values of the own points (0 after a failure) and the first failure; after a
/// failure the moves continue (so the replicas stay identical) but nothing more is evaluated.
/// With `at` (the points' identities, one per point), point i is evaluated with
/// [`Objective::loss_at`]`(at[i])`, else with [`Objective::loss`].
pub(crate) fn replay(
    inner: &mut dyn Objective,
    params: &mut Params,
    points: &[(Direction, f32)],
    at: Option<&[Evaluation]>,
    own: Range<usize>,
    saved: Option<&Params>,
    evaluations: &mut u64,
) -> (Vec<f32>, Option<Failure>) {
    let mut values = vec![0.0f32; own.len()];
    let mut failure: Option<Failure> = None;
    let mut evaluate = |params: &mut Params, i: usize, failure: &mut Option<Failure>| {
        if own.contains(&i) && failure.is_none() {
            *evaluations += 1;
            let id = at.and_then(|a| a.get(i));
            match caught(|| match id {
                Some(id) => inner.loss_at(params, id),
                None => inner.loss(params),
            }) {
                Ok(v) => values[i - own.start] = v,
                Err(f) => *failure = Some(f),
            }
        }
    };
    let mut i = 0;
    while i < points.len() {
        let dir = points[i].0;
        let mut j = i + 1;
        while j < points.len() && points[j].0 == dir {
            j += 1;
        }
        // With a saved copy, a direction without an own point is not visited at all, and one
        // with own points only up to the last of them.
        let end = if saved.is_some() {
            (i..j).rev().find(|t| own.contains(t)).map_or(i, |t| t + 1)
        } else {
            j
        };
        let group = &points[i..end];
        let unit = points[i].1.abs();
        let multiples: Option<Vec<i32>> = group
            .iter()
            .map(|(_, s)| {
                let k = (s / unit).round();
                (unit.is_finite() && unit > 0.0 && k.abs() <= 1e6 && k * unit == *s)
                    .then_some(k as i32)
            })
            .collect();
        let mut at = 0i32;
        let mut moved = Ok(());
        match multiples {
            Some(ks) => {
                for (t, k) in ks.iter().enumerate() {
                    if *k != at {
                        moved = perturb(params, &dir, (k - at) as f32 * unit);
                        if moved.is_err() {
                            break;
                        }
                        at = *k;
                    }
                    evaluate(params, i + t, &mut failure);
                }
            }
            None => {
                for (t, (d, s)) in group.iter().enumerate() {
                    moved = perturb(params, d, *s);
                    if moved.is_err() {
                        break;
                    }
                    evaluate(params, i + t, &mut failure);
                    moved = match saved {
                        Some(saved) => copy(params, saved),
                        None => perturb(params, d, -*s),
                    };
                    if moved.is_err() {
                        break;
                    }
                }
            }
        }
        // Leave the direction: by copy, or by the opposite of the displacement.
        if at != 0 || (moved.is_err() && saved.is_some()) {
            let back = match saved {
                Some(saved) => copy(params, saved),
                None => perturb(params, &dir, (-at) as f32 * unit),
            };
            moved = moved.and(back);
        }
        if let Err(e) = moved {
            // A kernel failed: the device is in trouble; report it and stop moving.
            if failure.is_none() {
                failure = Some(Failure::Error(e.to_string()));
            }
            break;
        }
        i = j;
    }
    (values, failure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_every_point_once_in_rank_order() {
        for total in 0..40 {
            for size in 1..9 {
                let mut next = 0;
                for rank in 0..size {
                    let r = share(total, size, rank);
                    assert_eq!(r.start, next, "total {total} size {size} rank {rank}");
                    assert!(r.len() == total / size || r.len() == total / size + 1);
                    next = r.end;
                }
                assert_eq!(next, total);
            }
        }
        assert_eq!(
            (0..3).map(|r| share(10, 3, r)).collect::<Vec<_>>(),
            vec![0..4, 4..7, 7..10]
        );
    }

    #[test]
    fn fnv1a64_matches_the_published_test_vectors() {
        // From the FNV reference test suite (Fowler, Noll, Vo).
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
