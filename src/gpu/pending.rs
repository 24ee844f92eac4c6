// SPDX-License-Identifier: MIT OR Apache-2.0
//! The pending command encoder: zograd's kernel launches recorded but not yet submitted, so that
//! they reach the GPU in the same submission as the next evaluation of one of zograd's own
//! objectives (or the next readback) instead of one submission each.
//!
//! What may be pending: the launches made while [`defer`] runs (the restore guard's moves and
//! the fused MeZO update), and their host writes of launch uniforms and terms. Everything else
//! submits at once, together with whatever is pending. Every other sync point flushes first:
//! a readback ([`Gpu::read_f32s`], `Params::to_vec`, the reductions, the objectives'
//! readbacks: the pending work goes in their submission), a host write into a buffer pending
//! work may use (`Params::write`/`write_at`: `queue.write_buffer` lands before *every* command
//! of the next submission), [`Gpu::wait`], a call into an objective that is not zograd's own (it
//! may submit its own work), the drop of `Params` and of an armed restore guard, and the public
//! [`Gpu::flush`].
//!
//! Uniforms: `queue.write_buffer` lands before every command of the next submission, so two
//! pending launches must not share a uniform slot. [`Pending::written`] lists the byte offsets
//! of the internal buffers written since the last submission; a launch takes a bank of its
//! uniform ring that is not among them, and a write into a slot already written flushes first.
//!
//! A refused submission: wgpu drops the whole submission when any command buffer in it fails
//! validation (the user's passes of a `ShaderObjective` with a bind group that does not fit its
//! pipeline, say), and with it zograd's pending launches. The restore guard counts on those
//! having run, so they are kept in a log and submitted again alone before the error is
//! returned: the parameters are where the host believes them to be.

use std::cell::Cell;
use std::sync::MutexGuard;

use super::context::{lock, Gpu};
use crate::Result;

thread_local! {
    /// How many [`defer`] calls are running on this thread.
    static DEFER: Cell<u32> = const { Cell::new(0) };
}

/// Runs `f` with the kernel launches it makes on this thread left pending (recorded into the
/// [`Gpu`]'s pending encoder, submitted by the next sync point) instead of submitted at once.
/// Nested calls are fine; a panic in `f` ends the deferral too.
pub(crate) fn defer<T>(f: impl FnOnce() -> T) -> T {
    struct Depth;
    impl Drop for Depth {
        fn drop(&mut self) {
            DEFER.with(|d| d.set(d.get() - 1));
        }
    }
    DEFER.with(|d| d.set(d.get() + 1));
    let _depth = Depth;
    f()
}

/// Whether launches on this thread stay pending.
pub(crate) fn deferring() -> bool {
    DEFER.with(|d| d.get() > 0)
}

/// One recorded operation, kept to submit again after a refused submission.
#[derive(Debug)]
enum Op {
    /// `queue.write_buffer(buffer, offset, bytes)`.
    Write {
        buffer: wgpu::Buffer,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// A compute pass of `pipeline` with one dispatch per (bind group, dynamic offset, grid).
    Pass {
        label: &'static str,
        pipeline: wgpu::ComputePipeline,
        dispatches: Vec<(wgpu::BindGroup, u32, (u32, u32))>,
    },
}

/// The pending encoder of a [`Gpu`] and what it holds (behind the `Gpu`'s mutex).
#[derive(Debug, Default)]
pub(crate) struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// (buffer, byte offset) of the internal buffers written since the last submission.
    written: Vec<(wgpu::Buffer, u64)>,
    log: Vec<Op>,
}

impl Pending {
    /// Whether the internal buffer `buffer` was written at byte `offset` since the last
    /// submission (a launch recorded since may still read what was written there).
    pub(crate) fn is_written(&self, buffer: &wgpu::Buffer, offset: u64) -> bool {
        self.written
            .iter()
            .any(|(b, o)| *o == offset && b == buffer)
    }

    /// Whether launches are recorded and not yet submitted.
    pub(crate) fn has_work(&self) -> bool {
        self.encoder.is_some()
    }
}

impl Gpu {
    /// The pending encoder, locked. Never held while user code runs.
    pub(crate) fn pending(&self) -> MutexGuard<'_, Pending> {
        lock(&self.inner.pending)
    }

    /// Writes `bytes` at byte `offset` of zograd's internal buffer `buffer` (launch uniforms,
    /// terms, batch points), in order with the pending launches: when a pending launch may read
    /// that place (it was written since the last submission), the pending work is submitted
    /// first. Call inside an error scope.
    pub(crate) fn stage_write(
        &self,
        p: &mut Pending,
        buffer: &wgpu::Buffer,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<()> {
        if p.is_written(buffer, offset) {
            self.submit_pending(p, None)?;
        }
        self.queue().write_buffer(buffer, offset, &bytes);
        p.written.push((buffer.clone(), offset));
        p.log.push(Op::Write {
            buffer: buffer.clone(),
            offset,
            bytes,
        });
        Ok(())
    }

    /// Records one compute pass of `pipeline` into the pending encoder: one dispatch per
    /// (bind group, dynamic offset of binding 0, grid). Call inside an error scope.
    pub(crate) fn record_pass(
        &self,
        p: &mut Pending,
        label: &'static str,
        pipeline: &wgpu::ComputePipeline,
        dispatches: Vec<(wgpu::BindGroup, u32, (u32, u32))>,
    ) {
        let encoder = p.encoder.get_or_insert_with(|| {
            self.device()
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("zograd::pending"),
                })
        });
        encode_pass(encoder, label, pipeline, &dispatches);
        p.log.push(Op::Pass {
            label,
            pipeline: pipeline.clone(),
            dispatches,
        });
    }

    /// Submits the pending launches and then `work` (recorded by the caller: an objective's
    /// passes, a readback's copy) in ONE submission. When wgpu refuses it and launches were
    /// pending, those are submitted again alone and the refusal is returned as
    /// [`Error::Validation`](crate::Error::Validation): the launches have run either way. Call
    /// inside an error scope.
    pub(crate) fn submit_pending(
        &self,
        p: &mut Pending,
        work: Option<wgpu::CommandEncoder>,
    ) -> Result<()> {
        let pending = p.encoder.take();
        p.written.clear();
        let result = match (pending, work) {
            (None, None) => Ok(()),
            (Some(one), None) | (None, Some(one)) => {
                self.queue().submit([one.finish()]);
                Ok(())
            }
            (Some(pending), Some(work)) => {
                let scope = self
                    .device()
                    .push_error_scope(wgpu::ErrorFilter::Validation);
                self.queue().submit([pending.finish(), work.finish()]);
                match pollster::block_on(scope.pop()) {
                    None => Ok(()),
                    Some(e) => {
                        self.replay(&p.log);
                        Err(e.into())
                    }
                }
            }
        };
        p.log.clear();
        result
    }

    /// Submits the logged launches (and their writes) again, alone.
    fn replay(&self, log: &[Op]) {
        let mut encoder = self
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("zograd::pending (again)"),
            });
        for op in log {
            match op {
                Op::Write {
                    buffer,
                    offset,
                    bytes,
                } => self.queue().write_buffer(buffer, *offset, bytes),
                Op::Pass {
                    label,
                    pipeline,
                    dispatches,
                } => encode_pass(&mut encoder, label, pipeline, dispatches),
            }
        }
        self.queue().submit([encoder.finish()]);
    }

    /// Submits the kernel launches zograd has recorded but not yet submitted (nothing when there
    /// are none).
    ///
    /// Within an optimiser step zograd records its parameter moves (the perturbations, the
    /// restores and the fused MeZO update) and submits them together with the next evaluation
    /// of one of its own objectives ([`ShaderObjective`](crate::ShaderObjective),
    /// [`BatchObjective`](crate::BatchObjective)) or the next readback: one submission per
    /// evaluation. Everything zograd offers flushes by itself where the order matters: its
    /// readbacks ([`Gpu::read_f32s`], [`Gpu::read_f32_after`], [`Params::to_vec`](crate::Params::to_vec)),
    /// host writes ([`Params::write`](crate::Params::write)), [`Gpu::wait`], the public kernels
    /// of [`crate::kernels`], and every call into an objective that is not zograd's own (a
    /// closure may submit its own work). Call `flush` yourself only before submitting your own
    /// work (or writing with `queue.write_buffer`) that reads or writes zograd's buffers
    /// ([`Params::buffers`](crate::Params::buffers)) *outside* an objective call, e.g. after
    /// [`Optimizer::step`](crate::optim::Optimizer::step) with one of zograd's own objectives
    /// returned, whose last update may still be pending. (With any other objective — a
    /// closure, a type of yours — nothing stays pending when a step or an estimate returns.)
    ///
    /// # Errors
    /// [`Error::Validation`](crate::Error::Validation) when wgpu refuses the pending work (a
    /// parameter buffer destroyed under zograd), [`Error::DeviceLost`](crate::Error::DeviceLost).
    ///
    /// # Example
    /// ```no_run
    /// # fn main() -> zograd::Result<()> {
    /// use zograd::{approx::MeZo, optim::{Lr, Optimizer}, Gpu, Params};
    /// let gpu = Gpu::new()?;
    /// let mut x = Params::from_slices(&gpu, &[&[1.0f32; 8][..]])?;
    /// let mut opt = Optimizer::new(&gpu, &x, MeZo::new())?.then(Lr::new(0.1));
    /// let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(p.to_vec()?.iter().sum()) };
    /// opt.step(&mut x, &mut loss)?;
    /// gpu.flush()?; // the step's update is submitted: own work on x.buffers() sees it
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<()> {
        if !self.pending().has_work() {
            return Ok(());
        }
        self.scoped(|| {
            let mut p = self.pending();
            self.submit_pending(&mut p, None)
        })
    }
}

impl Gpu {
    /// [`Gpu::flush`] for a caller already inside an error scope (the objective-call helpers):
    /// no second device poll, one validation scope around the submission only, so that a
    /// refusal is returned here, before the caller goes on (an objective whose parameters'
    /// pending perturbation failed is not called).
    pub(crate) fn flush_in_scope(&self) -> Result<()> {
        let mut p = self.pending();
        if !p.has_work() {
            return Ok(());
        }
        let scope = self
            .device()
            .push_error_scope(wgpu::ErrorFilter::Validation);
        let submitted = self.submit_pending(&mut p, None);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(e.into());
        }
        submitted
    }
}

/// Records one compute pass: `pipeline`, then per dispatch its bind group at group 0 with the
/// dynamic offset, and the grid.
fn encode_pass(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    pipeline: &wgpu::ComputePipeline,
    dispatches: &[(wgpu::BindGroup, u32, (u32, u32))],
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    pass.set_pipeline(pipeline);
    for (group, offset, (x, y)) in dispatches {
        pass.set_bind_group(0, group, &[*offset]);
        pass.dispatch_workgroups(*x, *y, 1);
    }
}
