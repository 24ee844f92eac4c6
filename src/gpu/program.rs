// SPDX-License-Identifier: MIT OR Apache-2.0
//! Users' WGSL programs: the compiled passes and bind groups behind a
//! [`ShaderObjective`](crate::ShaderObjective) and a [`BatchObjective`](crate::BatchObjective),
//! and the batch buffers (bind group 1) of the latter. Those types describe what to run; this
//! module records, submits and reads back.

use bytemuck::{Pod, Zeroable};

use super::context::{Gpu, TrackedBuffer};
use super::launch::Slots;
use super::pipelines::storage_entry;
use crate::Result;

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

/// The uniform of one batch dispatch; mirrors `struct ZogradBatch` in `shaders/batch.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub(crate) struct BatchUniform {
    pub seed: [u32; 2],
    pub step: u32,
    pub dist: u32,
    pub count: u32,
    pub first: u32,
    pub reserved: [u32; 2],
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
        gpu.read_f32_after(Some(encoder), output, offset, count, &mut out)?;
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
            buffers.slots.write(gpu, uniforms);
            gpu.queue()
                .write_buffer(&buffers.points, 0, bytemuck::cast_slice(points));
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
                    pass.set_bind_group(1, &buffers.group, &[buffers.slots.offset(k)]);
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
        gpu.read_f32_after(
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
