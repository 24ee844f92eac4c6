// SPDX-License-Identifier: MIT OR Apache-2.0
//! Recording and submitting kernel launches: the launch uniform, grid shapes past 65 535
//! workgroups, and uniform slots selected by dynamic offsets.

use bytemuck::{Pod, Zeroable};

use super::context::{Gpu, TrackedBuffer};
use super::kernel::Kernel;
use super::pending::{deferring, Pending};
use crate::{Error, Result};

/// Bytes of [`Launch`] (the WGSL `Launch` struct in `shaders/common.wgsl`).
pub(crate) const LAUNCH_BYTES: u64 = 112;

/// The per-chunk launch uniform; mirrors `struct Launch` in `shaders/common.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct Launch {
    pub gbase: [u32; 2],
    pub seed: [u32; 2],
    pub len: u32,
    pub groups_x: u32,
    pub n_groups: u32,
    /// The distribution's code (`Distribution::code`), for the kernels that draw directions.
    pub dist: u32,
    pub step: u32,
    pub sample: u32,
    /// `dot_product`: 1 when the second operand is the first (a squared norm: each element is
    /// loaded once).
    pub y_is_x: u32,
    /// Reductions: the first partial-sum slot of this launch.
    pub out_offset: u32,
    /// The kernel's scalars; `coef[0]` is the scale of perturb, axpy, scale and fill, and the
    /// multiplier of the accumulated buffer in accumulate.
    pub coef: [f32; 4],
    pub coef2: [f32; 4],
    /// Per storage binding (binding 1 + k), the element its range starts at inside the bound
    /// range: a range that starts at an element the adapter's storage offset alignment does not
    /// allow is bound from the aligned offset below it and the kernel adds the shift.
    pub shift: [u32; 4],
    /// Sparse directions: `mask[0]` is the density threshold T of the masked direction kernels
    /// (an element is kept when its 16-bit mask lane is below T; `zograd_keep4` in
    /// `shaders/philox.wgsl`); the other words are 0.
    pub mask: [u32; 4],
}

const _: () = assert!(std::mem::size_of::<Launch>() as u64 == LAUNCH_BYTES);

/// Splits a u64 into (lo, hi).
pub(crate) fn split64(v: u64) -> [u32; 2] {
    [v as u32, (v >> 32) as u32]
}

/// Elements one dispatch can cover on this adapter: a 2-D grid of
/// `max_compute_workgroups_per_dimension`² workgroups of at least 1024 elements each, less one
/// workgroup for launches that start inside a Philox word or block.
pub(crate) fn grid_capacity(gpu: &Gpu) -> u64 {
    let dim = u64::from(gpu.limits().max_compute_workgroups_per_dimension);
    (dim * dim).saturating_sub(1) * 1024
}

impl Launch {
    /// A launch of `kernel` over `len` elements whose first has global index `gbase`, with the
    /// grid fields filled in.
    pub(crate) fn new(gpu: &Gpu, kernel: Kernel, len: u64, gbase: u64) -> Result<Self> {
        let per = kernel.elements_per_group();
        let covered = len + kernel.lead(gbase);
        let n_groups = covered.div_ceil(per).max(1);
        let max_dim = u64::from(gpu.limits().max_compute_workgroups_per_dimension);
        let groups_x = n_groups.min(max_dim);
        if n_groups.div_ceil(groups_x) > max_dim || len > u64::from(u32::MAX) / 2 {
            return Err(Error::TooLarge(format!(
                "a chunk of {len} elements needs {n_groups} workgroups, past the adapter's grid"
            )));
        }
        Ok(Launch {
            gbase: split64(gbase),
            len: len as u32,
            groups_x: groups_x as u32,
            n_groups: n_groups as u32,
            coef: [1.0, 0.0, 0.0, 0.0],
            ..Launch::default()
        })
    }

    /// The grid to dispatch: (x, y) workgroups covering `n_groups`.
    pub(crate) fn grid(&self) -> (u32, u32) {
        (self.groups_x, self.n_groups.div_ceil(self.groups_x))
    }
}

/// Whether any of `launches` binds a range off the storage alignment (a non-zero shift): those
/// run the kernel's shifted pipeline, all others the plain one.
fn shifted(launches: &[(Launch, &wgpu::BindGroup)]) -> bool {
    launches.iter().any(|(l, _)| l.shift != [0; 4])
}

/// Banks of launch uniforms per set of bind groups: how many launches of the same kernel over
/// the same operands can be pending at once (a fused MeZO step leaves its update pending and
/// the next step's perturbation joins it) before a further one submits them.
pub(crate) const LAUNCH_BANKS: usize = 4;

/// A uniform buffer of `banks` banks of `capacity` slots of `slot_bytes` each, every slot
/// aligned for dynamic offsets: the launch uniforms of the kernels, and the batch uniforms of a
/// `BatchObjective`. The only place that knows the slot stride. A write takes the first bank
/// no pending launch reads (`gpu/pending.rs`), so launches recorded into one submission keep
/// their own uniforms.
#[derive(Debug)]
pub(crate) struct Slots {
    buffer: TrackedBuffer,
    stride: u64,
    slot_bytes: u64,
    capacity: usize,
    banks: usize,
}

impl Slots {
    pub(crate) fn new(gpu: &Gpu, label: &str, capacity: usize, slot_bytes: u64) -> Result<Self> {
        Self::with_banks(gpu, label, capacity, slot_bytes, 1)
    }

    fn with_banks(
        gpu: &Gpu,
        label: &str,
        capacity: usize,
        slot_bytes: u64,
        banks: usize,
    ) -> Result<Self> {
        let align = u64::from(gpu.limits().min_uniform_buffer_offset_alignment).max(1);
        let stride = slot_bytes.div_ceil(align) * align;
        let capacity = capacity.max(1);
        let buffer = gpu.create_buffer(
            label,
            stride * (capacity * banks) as u64,
            wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        )?;
        Ok(Self {
            buffer,
            stride,
            slot_bytes,
            capacity,
            banks,
        })
    }

    /// Launch uniforms: [`LAUNCH_BANKS`] banks of `capacity` slots of [`LAUNCH_BYTES`].
    pub(crate) fn for_launches(gpu: &Gpu, label: &str, capacity: usize) -> Result<Self> {
        Self::with_banks(gpu, label, capacity, LAUNCH_BYTES, LAUNCH_BANKS)
    }

    /// Slots per bank.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// The dynamic offset of slot `k` (of all banks, bank after bank).
    pub(crate) fn offset(&self, k: usize) -> u32 {
        (k as u64 * self.stride) as u32
    }

    /// Writes `values` into slots 0, 1, … of the first bank no pending launch reads (submitting
    /// the pending work first when every bank is taken) and returns the slot of `values[0]`.
    /// Call inside an error scope.
    pub(crate) fn stage<T: Pod>(&self, gpu: &Gpu, p: &mut Pending, values: &[T]) -> Result<usize> {
        assert!(
            values.len() <= self.capacity,
            "more values than uniform slots"
        );
        let size = std::mem::size_of::<T>();
        assert_eq!(size as u64, self.slot_bytes, "a value is one slot");
        let mut bytes = vec![0u8; self.stride as usize * values.len()];
        for (k, v) in values.iter().enumerate() {
            let at = k * self.stride as usize;
            bytes[at..at + size].copy_from_slice(bytemuck::bytes_of(v));
        }
        let bank_offset = |b: usize| u64::from(self.offset(b * self.capacity));
        let bank = (0..self.banks)
            .find(|&b| !p.is_written(&self.buffer, bank_offset(b)))
            .unwrap_or(0);
        gpu.stage_write(p, &self.buffer, bank_offset(bank), bytes)?;
        Ok(bank * self.capacity)
    }

    /// Records one compute pass that dispatches `kernel` once per launch with its bind group
    /// (its uniforms written to their own slots) into the pending encoder; unless the launch is
    /// deferred ([`defer`](super::pending::defer)), submits it with the pending work at once.
    /// Nothing waits for the GPU.
    pub(crate) fn submit(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        launches: &[(Launch, &wgpu::BindGroup)],
    ) -> Result<()> {
        let pipeline = gpu.pipeline_variant(kernel, shifted(launches))?;
        gpu.scoped(|| {
            let mut p = gpu.pending();
            let uniforms: Vec<Launch> = launches.iter().map(|(l, _)| *l).collect();
            let first = self.stage(gpu, &mut p, &uniforms)?;
            // A piece with len = 0 is one the caller skips (a frozen buffer, `kernels::Mask`).
            let dispatches = launches
                .iter()
                .enumerate()
                .filter(|(_, (l, _))| l.len != 0)
                .map(|(k, (l, g))| ((*g).clone(), self.offset(first + k), l.grid()))
                .collect();
            gpu.record_pass(&mut p, kernel.entry(), &pipeline, dispatches);
            if !deferring() {
                gpu.submit_pending(&mut p, None)?;
            }
            Ok(())
        })
    }

    /// The pass of [`submit`](Slots::submit) in an encoder of its own, returned unsubmitted so
    /// that a readback can follow in the same submission (which also carries the pending
    /// launches).
    pub(crate) fn encode(
        &self,
        gpu: &Gpu,
        kernel: Kernel,
        launches: &[(Launch, &wgpu::BindGroup)],
    ) -> Result<wgpu::CommandEncoder> {
        let pipeline = gpu.pipeline_variant(kernel, shifted(launches))?;
        gpu.scoped(|| {
            let uniforms: Vec<Launch> = launches.iter().map(|(l, _)| *l).collect();
            let first = self.stage(gpu, &mut gpu.pending(), &uniforms)?;
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some(kernel.entry()),
                    });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some(kernel.entry()),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&pipeline);
                for (k, (launch, group)) in launches.iter().enumerate() {
                    if launch.len == 0 {
                        // A piece the caller skips (a frozen buffer, `kernels::Mask`): no work.
                        continue;
                    }
                    pass.set_bind_group(0, *group, &[self.offset(first + k)]);
                    let (x, y) = launch.grid();
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
            Ok(encoder)
        })
    }

    /// A bind-group entry for the uniform at `binding` (one slot wide; the dynamic offset moves
    /// it).
    pub(crate) fn entry(&self, binding: u32) -> wgpu::BindGroupEntry<'_> {
        wgpu::BindGroupEntry {
            binding,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.buffer,
                offset: 0,
                size: wgpu::BufferSize::new(self.slot_bytes),
            }),
        }
    }
}
