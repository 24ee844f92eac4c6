// SPDX-License-Identifier: MIT OR Apache-2.0
//! The bind-group layouts and pipeline layouts the kernels of [`super::kernel`] share.

use super::kernel::LayoutKind;

/// The bind-group layouts and their pipeline layouts, created once per device.
#[derive(Debug)]
pub(crate) struct Layouts {
    bind: [wgpu::BindGroupLayout; 5],
    pipeline: [wgpu::PipelineLayout; 5],
}

/// A compute-stage storage-buffer layout entry.
pub(crate) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl Layouts {
    pub(crate) fn new(device: &wgpu::Device) -> Self {
        let uniform = wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: wgpu::BufferSize::new(super::launch::LAUNCH_BYTES),
            },
            count: None,
        };
        let bind = LayoutKind::ALL.map(|kind| {
            let mut entries = vec![uniform, storage_entry(1, false)];
            entries
                .extend((0..kind.extra()).map(|k| storage_entry(2 + k as u32, kind.read_only())));
            device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some("zograd::layout"),
                entries: &entries,
            })
        });
        let pipeline = std::array::from_fn(|k| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some("zograd::pipeline_layout"),
                bind_group_layouts: &[Some(&bind[k])],
                immediate_size: 0,
            })
        });
        Self { bind, pipeline }
    }

    pub(crate) fn bind_group_layout(&self, kind: LayoutKind) -> &wgpu::BindGroupLayout {
        &self.bind[kind.index()]
    }

    pub(crate) fn pipeline_layout(&self, kind: LayoutKind) -> &wgpu::PipelineLayout {
        &self.pipeline[kind.index()]
    }
}
