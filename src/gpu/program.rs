// SPDX-License-Identifier: MIT OR Apache-2.0
//! Users' WGSL programs: the compiled passes and bind groups behind a
//! [`ShaderObjective`](crate::ShaderObjective) and a [`BatchObjective`](crate::BatchObjective),
//! and the batch buffers (bind group 1) of the latter. Those types describe what to run; this
//! module records, submits and reads back.

use bytemuck::{Pod, Zeroable};

use super::context::{Gpu, TrackedBuffer};
use super::launch::Slots;
use super::pipelines::storage_entry;
use crate::{Error, Result};

/// How a buffer is bound for a [`ShaderObjective`](crate::ShaderObjective) (or a
/// [`BatchObjective`](crate::BatchObjective)), in binding order 0, 1, 2, … of group 0.
#[derive(Clone, Copy, Debug)]
pub enum Binding<'a> {
    /// `var<uniform>`.
    Uniform(&'a wgpu::Buffer),
    /// `var<storage, read>`: data, or the parameter buffers
    /// ([`Params::buffers`](crate::Params::buffers)).
    Read(&'a wgpu::Buffer),
    /// `var<storage, read_write>`: scratch and the loss output.
    ReadWrite(&'a wgpu::Buffer),
}

/// One step of a [`ShaderObjective`](crate::ShaderObjective) built from the user's own
/// pipelines ([`ShaderObjective::from_steps`](crate::ShaderObjective::from_steps)): a dispatch
/// of a compute pipeline with its bind groups, or a buffer copy (to reset a simulation's state
/// before its frames). The handles are wgpu's own (clones are cheap); the pipelines keep the
/// user's WGSL and layouts unchanged.
///
/// A ping-pong simulation of `k` frames is `[copy(initial → a), dispatch(step, [a→b]),
/// dispatch(step, [b→a]), …, dispatch(reduce)]`: each dispatch gets its own bind groups.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Step {
    /// `dispatch_workgroups(workgroups)` of `pipeline` with `bind_groups[k]` at group `k`.
    Dispatch {
        /// The user's compute pipeline.
        pipeline: wgpu::ComputePipeline,
        /// The bind groups, group 0 first.
        bind_groups: Vec<wgpu::BindGroup>,
        /// Workgroups in x, y, z.
        workgroups: [u32; 3],
    },
    /// `copy_buffer_to_buffer`: `bytes` bytes from byte `from_offset` of `from` (which needs
    /// `COPY_SRC`) to byte `to_offset` of `to` (which needs `COPY_DST`).
    Copy {
        /// The source buffer.
        from: wgpu::Buffer,
        /// Byte offset in `from` (a multiple of 4).
        from_offset: u64,
        /// The destination buffer.
        to: wgpu::Buffer,
        /// Byte offset in `to` (a multiple of 4).
        to_offset: u64,
        /// Bytes to copy (a multiple of 4).
        bytes: u64,
    },
}

impl Step {
    /// A dispatch of `pipeline` with `bind_groups[k]` bound at group `k`.
    #[must_use]
    pub fn dispatch(
        pipeline: &wgpu::ComputePipeline,
        bind_groups: &[&wgpu::BindGroup],
        workgroups: [u32; 3],
    ) -> Self {
        Self::Dispatch {
            pipeline: pipeline.clone(),
            bind_groups: bind_groups.iter().map(|g| (*g).clone()).collect(),
            workgroups,
        }
    }

    /// A copy of the whole of `from` to the start of `to` (the size of `from`).
    #[must_use]
    pub fn copy(from: &wgpu::Buffer, to: &wgpu::Buffer) -> Self {
        Self::Copy {
            from: from.clone(),
            from_offset: 0,
            to: to.clone(),
            to_offset: 0,
            bytes: from.size(),
        }
    }

    /// Fails unless the step can be recorded on a device with `limits`: workgroups within
    /// `max_compute_workgroups_per_dimension`; copies 4-aligned, inside both buffers, with
    /// `COPY_SRC` on the source and `COPY_DST` on the destination. `k` names the step.
    pub(crate) fn check(&self, k: usize, limits: &wgpu::Limits) -> Result<()> {
        match self {
            Self::Dispatch { workgroups, .. } => {
                let max = limits.max_compute_workgroups_per_dimension;
                if workgroups.iter().any(|&w| w > max) {
                    return Err(Error::invalid(format!(
                        "steps: step {k} dispatches {workgroups:?} workgroups, past the \
                         device's max_compute_workgroups_per_dimension of {max}"
                    )));
                }
            }
            Self::Copy {
                from,
                from_offset,
                to,
                to_offset,
                bytes,
            } => {
                if !from.usage().contains(wgpu::BufferUsages::COPY_SRC)
                    || !to.usage().contains(wgpu::BufferUsages::COPY_DST)
                {
                    return Err(Error::invalid(format!(
                        "steps: step {k} copies from a buffer with usage {:?} to one with usage \
                         {:?}; the source needs COPY_SRC and the destination COPY_DST",
                        from.usage(),
                        to.usage()
                    )));
                }
                let inside = |offset: u64, size: u64| {
                    offset.checked_add(*bytes).is_some_and(|end| end <= size)
                };
                if (from_offset | to_offset | bytes) % 4 != 0
                    || !inside(*from_offset, from.size())
                    || !inside(*to_offset, to.size())
                {
                    return Err(Error::invalid(format!(
                        "steps: step {k} copies {bytes} bytes from byte {from_offset} of a \
                         buffer of {} bytes to byte {to_offset} of a buffer of {} bytes; \
                         offsets and size must be multiples of 4 and inside the buffers",
                        from.size(),
                        to.size()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Records `steps` into one encoder (consecutive dispatches share one compute pass) and reads
/// the f32 at byte `offset` of `output` back in the same submission. Waits for the GPU.
pub(crate) fn run_steps_and_read(
    gpu: &Gpu,
    steps: &[Step],
    (output, offset): (&wgpu::Buffer, u64),
) -> Result<f32> {
    let encoder = gpu.scoped(|| {
        let mut encoder = gpu
            .device()
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("zograd::ShaderObjective steps"),
            });
        let mut k = 0;
        while k < steps.len() {
            if let Step::Copy {
                from,
                from_offset,
                to,
                to_offset,
                bytes,
            } = &steps[k]
            {
                encoder.copy_buffer_to_buffer(from, *from_offset, to, *to_offset, *bytes);
                k += 1;
                continue;
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("zograd::ShaderObjective steps"),
                timestamp_writes: None,
            });
            while let Some(Step::Dispatch {
                pipeline,
                bind_groups,
                workgroups,
            }) = steps.get(k)
            {
                pass.set_pipeline(pipeline);
                for (g, group) in bind_groups.iter().enumerate() {
                    pass.set_bind_group(g as u32, group, &[]);
                }
                let [x, y, z] = *workgroups;
                pass.dispatch_workgroups(x, y, z);
                k += 1;
            }
        }
        Ok(encoder)
    })?;
    let mut out = Vec::with_capacity(1);
    gpu.read_into_after(Some(encoder), output, offset, 1, &mut out)?;
    Ok(out[0])
}

/// The uniform of one batch dispatch; mirrors `struct ZogradBatch` in `shaders/batch.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct BatchUniform {
    pub seed: [u32; 2],
    pub step: u32,
    pub dist: u32,
    pub count: u32,
    pub first: u32,
    /// Sparse directions: the density threshold of `zograd_keep4` (0: dense).
    pub threshold: u32,
    pub reserved: u32,
}

/// Bytes of [`BatchUniform`].
const BATCH_UNIFORM_BYTES: u64 = 32;
const _: () = assert!(std::mem::size_of::<BatchUniform>() as u64 == BATCH_UNIFORM_BYTES);

/// A user's compiled module: one pipeline per pass (entry point, with the caller's grid
/// description `G`), the user's bind group 0, and for batch programs the layout of group 1.
#[derive(Debug)]
pub(crate) struct Program<G> {
    passes: Vec<(wgpu::ComputePipeline, G)>,
    user: wgpu::BindGroup,
    batch_layout: Option<wgpu::BindGroupLayout>,
}

impl<G: Copy> Program<G> {
    /// Compiles `source`, lays out `bindings` at group 0 (binding k = `bindings[k]`) and, when
    /// `batch`, zograd's batch buffers at group 1, and creates one pipeline per pass. wgpu's
    /// errors come back as [`Error::Validation`](crate::Error::Validation).
    pub(crate) fn new(
        gpu: &Gpu,
        label: &str,
        source: &str,
        bindings: &[Binding<'_>],
        passes: &[(&str, G)],
        batch: bool,
    ) -> Result<Self> {
        let device = gpu.device();
        gpu.scoped(|| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(source.into()),
            });
            let (user_layout, user) = user_group(device, bindings, label);
            let batch_layout = batch.then(|| {
                device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(label),
                    entries: &[
                        wgpu::BindGroupLayoutEntry {
                            binding: 0,
                            visibility: wgpu::ShaderStages::COMPUTE,
                            ty: wgpu::BindingType::Buffer {
                                ty: wgpu::BufferBindingType::Uniform,
                                has_dynamic_offset: true,
                                min_binding_size: wgpu::BufferSize::new(BATCH_UNIFORM_BYTES),
                            },
                            count: None,
                        },
                        storage_entry(1, true),
                        storage_entry(2, false),
                    ],
                })
            });
            let mut layouts = vec![Some(&user_layout)];
            if let Some(l) = &batch_layout {
                layouts.push(Some(l));
            }
            let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(label),
                bind_group_layouts: &layouts,
                immediate_size: 0,
            });
            let passes = passes
                .iter()
                .map(|(entry, grid)| {
                    let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry),
                        layout: Some(&pipeline_layout),
                        module: &module,
                        entry_point: Some(entry),
                        compilation_options: wgpu::PipelineCompilationOptions::default(),
                        cache: None,
                    });
                    (p, *grid)
                })
                .collect();
            Ok(Self {
                passes,
                user,
                batch_layout,
            })
        })
    }

    /// Runs the passes once, in one compute pass (`grid` turns a pass's description into its
    /// workgroups), and reads `count` f32 from byte `offset` of `output` back in the same
    /// submission. Waits for the GPU.
    pub(crate) fn run_and_read(
        &self,
        gpu: &Gpu,
        grid: impl Fn(G) -> [u32; 3],
        (output, offset, count): (&wgpu::Buffer, u64, u64),
    ) -> Result<Vec<f32>> {
        let encoder = gpu.scoped(|| {
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("zograd::ShaderObjective"),
                    });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("zograd::ShaderObjective"),
                    timestamp_writes: None,
                });
                pass.set_bind_group(0, &self.user, &[]);
                for (pipeline, g) in &self.passes {
                    pass.set_pipeline(pipeline);
                    let [x, y, z] = grid(*g);
                    pass.dispatch_workgroups(x, y, z);
                }
            }
            Ok(encoder)
        })?;
        let mut out = Vec::with_capacity(count as usize);
        gpu.read_into_after(Some(encoder), output, offset, count, &mut out)?;
        Ok(out)
    }

    /// Batch programs: writes `uniforms` (one per dispatch) and `points` into `buffers`, runs
    /// every pass once per dispatch (`grid` gets the pass's description and the dispatch's point
    /// count) in one compute pass, and reads the `n_points` losses back in the same submission.
    /// Waits for the GPU.
    pub(crate) fn run_batch(
        &self,
        gpu: &Gpu,
        buffers: &BatchBuffers,
        uniforms: &[BatchUniform],
        points: &[[u32; 2]],
        grid: impl Fn(G, u32) -> [u32; 3],
    ) -> Result<Vec<f32>> {
        let encoder = gpu.scoped(|| {
            let first = {
                let mut p = gpu.pending();
                let first = buffers.slots.stage(gpu, &mut p, uniforms)?;
                let bytes = bytemuck::cast_slice(points).to_vec();
                gpu.stage_write(&mut p, &buffers.points, 0, bytes)?;
                first
            };
            let mut encoder =
                gpu.device()
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                        label: Some("zograd::BatchObjective"),
                    });
            {
                let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("zograd::BatchObjective"),
                    timestamp_writes: None,
                });
                pass.set_bind_group(0, &self.user, &[]);
                for (k, u) in uniforms.iter().enumerate() {
                    pass.set_bind_group(1, &buffers.group, &[buffers.slots.offset(first + k)]);
                    for (pipeline, g) in &self.passes {
                        pass.set_pipeline(pipeline);
                        let [x, y, z] = grid(*g, u.count);
                        pass.dispatch_workgroups(x, y, z);
                    }
                }
            }
            Ok(encoder)
        })?;
        let mut out = Vec::with_capacity(points.len());
        gpu.read_into_after(
            Some(encoder),
            &buffers.losses,
            0,
            points.len() as u64,
            &mut out,
        )?;
        Ok(out)
    }

    /// The number of passes.
    pub(crate) fn passes(&self) -> usize {
        self.passes.len()
    }
}

/// A batch program's group-1 buffers: uniform slots, points, losses, and their bind group.
#[derive(Debug)]
pub(crate) struct BatchBuffers {
    slots: Slots,
    points: TrackedBuffer,
    losses: TrackedBuffer,
    capacity: usize,
    group: wgpu::BindGroup,
}

impl BatchBuffers {
    /// Room for `capacity` points in `dispatches` dispatches, for `program` (a batch program).
    pub(crate) fn new<G>(
        gpu: &Gpu,
        program: &Program<G>,
        capacity: usize,
        dispatches: usize,
    ) -> Result<Self> {
        let layout = program
            .batch_layout
            .as_ref()
            .expect("BatchBuffers belong to a batch program");
        let slots = Slots::new(
            gpu,
            "zograd::BatchObjective uniforms",
            dispatches,
            BATCH_UNIFORM_BYTES,
        )?;
        let points = gpu.create_buffer(
            "zograd::BatchObjective points",
            8 * capacity as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        )?;
        let losses = gpu.create_buffer(
            "zograd::BatchObjective losses",
            4 * capacity as u64,
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        )?;
        let group = gpu.scoped(|| {
            Ok(gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("zograd::BatchObjective batch"),
                layout,
                entries: &[
                    slots.entry(0),
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: points.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: losses.as_entire_binding(),
                    },
                ],
            }))
        })?;
        Ok(Self {
            slots,
            points,
            losses,
            capacity,
            group,
        })
    }

    /// Whether `points` points in `dispatches` dispatches fit.
    pub(crate) fn fits(&self, points: usize, dispatches: usize) -> bool {
        self.capacity >= points && self.slots.capacity() >= dispatches
    }

    /// Points and dispatches room, for growing.
    pub(crate) fn room(&self) -> (usize, usize) {
        (self.capacity, self.slots.capacity())
    }
}

/// The bind-group layout and bind group of the user's `bindings` (binding k = `bindings[k]`).
fn user_group(
    device: &wgpu::Device,
    bindings: &[Binding<'_>],
    label: &str,
) -> (wgpu::BindGroupLayout, wgpu::BindGroup) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
        .iter()
        .enumerate()
        .map(|(k, b)| wgpu::BindGroupLayoutEntry {
            binding: k as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: match b {
                    Binding::Uniform(_) => wgpu::BufferBindingType::Uniform,
                    Binding::Read(_) => wgpu::BufferBindingType::Storage { read_only: true },
                    Binding::ReadWrite(_) => wgpu::BufferBindingType::Storage { read_only: false },
                },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        })
        .collect();
    let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
        entries: &entries,
    });
    let group_entries: Vec<wgpu::BindGroupEntry<'_>> = bindings
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let (Binding::Uniform(buf) | Binding::Read(buf) | Binding::ReadWrite(buf)) = b;
            wgpu::BindGroupEntry {
                binding: k as u32,
                resource: buf.as_entire_binding(),
            }
        })
        .collect();
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: Some(label),
        layout: &layout,
        entries: &group_entries,
    });
    (layout, group)
}
