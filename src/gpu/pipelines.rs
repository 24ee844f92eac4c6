// SPDX-License-Identifier: MIT OR Apache-2.0
//! The kernels, their entry points and the bind-group layouts they share.

use super::shaders::Family;

/// Every compute kernel zograd launches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Kernel {
    PerturbRademacher,
    PerturbQuad,
    AccumulateRademacher,
    AccumulateQuad,
    /// `x ← a·x + Σ c z`: the accumulate kernels built with `ZOGRAD_SCALED = true`.
    ScaleAccumulateRademacher,
    ScaleAccumulateQuad,
    Copy,
    Axpy,
    Scale,
    Fill,
    Sign,
    HeavyBall,
    Adam,
    SphereSumsq,
    Dot,
}

/// The binding shapes: a dynamic-offset uniform at binding 0, then one read-write storage
/// buffer and zero, one or two read-only ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum LayoutKind {
    /// uniform, rw
    One,
    /// uniform, rw, ro
    Two,
    /// uniform, rw, ro, ro
    Three,
    /// uniform, rw, rw
    TwoRw,
    /// uniform, rw, rw, rw
    ThreeRw,
}

impl LayoutKind {
    /// Whether the bindings after binding 1 are read-only.
    pub(crate) fn read_only(self) -> bool {
        !matches!(self, LayoutKind::TwoRw | LayoutKind::ThreeRw)
    }

    /// The number of storage bindings after binding 1.
    pub(crate) fn extra(self) -> usize {
        match self {
            LayoutKind::One => 0,
            LayoutKind::Two | LayoutKind::TwoRw => 1,
            LayoutKind::Three | LayoutKind::ThreeRw => 2,
        }
    }

    const ALL: [LayoutKind; 5] = [
        LayoutKind::One,
        LayoutKind::Two,
        LayoutKind::Three,
        LayoutKind::TwoRw,
        LayoutKind::ThreeRw,
    ];
}

impl Kernel {
    pub(crate) fn family(self) -> Family {
        match self {
            Kernel::PerturbRademacher | Kernel::PerturbQuad => Family::Perturb,
            Kernel::AccumulateRademacher
            | Kernel::AccumulateQuad
            | Kernel::ScaleAccumulateRademacher
            | Kernel::ScaleAccumulateQuad => Family::Accumulate,
            Kernel::Copy | Kernel::Axpy | Kernel::Scale | Kernel::Fill | Kernel::Sign => {
                Family::Elementwise
            }
            Kernel::HeavyBall | Kernel::Adam => Family::Optim,
            Kernel::SphereSumsq | Kernel::Dot => Family::Reduce,
        }
    }

    pub(crate) fn entry(self) -> &'static str {
        match self {
            Kernel::PerturbRademacher => "perturb_rademacher",
            Kernel::PerturbQuad => "perturb_quad",
            Kernel::AccumulateRademacher | Kernel::ScaleAccumulateRademacher => {
                "accumulate_rademacher"
            }
            Kernel::AccumulateQuad | Kernel::ScaleAccumulateQuad => "accumulate_quad",
            Kernel::Copy => "copy",
            Kernel::Axpy => "axpy",
            Kernel::Scale => "scale",
            Kernel::Fill => "fill",
            Kernel::Sign => "sign_update",
            Kernel::HeavyBall => "heavy_ball",
            Kernel::Adam => "adam",
            Kernel::SphereSumsq => "sphere_sumsq",
            Kernel::Dot => "dot_product",
        }
    }

    /// The pipeline-overridable constants the kernel is built with.
    pub(crate) fn constants(self) -> &'static [(&'static str, f64)] {
        match self {
            Kernel::ScaleAccumulateRademacher | Kernel::ScaleAccumulateQuad => {
                &[("ZOGRAD_SCALED", 1.0)]
            }
            _ => &[],
        }
    }

    pub(crate) fn layout(self) -> LayoutKind {
        match self {
            Kernel::PerturbRademacher
            | Kernel::PerturbQuad
            | Kernel::Scale
            | Kernel::Fill
            | Kernel::Sign
            | Kernel::SphereSumsq => LayoutKind::One,
            Kernel::AccumulateRademacher
            | Kernel::AccumulateQuad
            | Kernel::ScaleAccumulateRademacher
            | Kernel::ScaleAccumulateQuad
            | Kernel::Copy
            | Kernel::Axpy => LayoutKind::Two,
            Kernel::Dot => LayoutKind::Three,
            Kernel::HeavyBall => LayoutKind::TwoRw,
            Kernel::Adam => LayoutKind::ThreeRw,
        }
    }

    /// Elements one workgroup covers, which fixes the grid: the Rademacher perturb owns a tile
    /// of 4096 elements, the Rademacher accumulate 256 Philox words of 32, the dot product 256
    /// threads of 64 elements (`DOT_PER_THREAD` in `shaders/reduce.wgsl`), quad kernels 256
    /// blocks of 4, elementwise kernels and the sphere norms 1024 elements.
    pub(crate) fn elements_per_group(self) -> u64 {
        match self {
            Kernel::PerturbRademacher => 32768,
            Kernel::AccumulateRademacher | Kernel::ScaleAccumulateRademacher | Kernel::Dot => 16384,
            _ => 1024,
        }
    }

    /// How many elements before the chunk's start the kernel's first thread begins, given the
    /// chunk's global start: kernels whose threads own aligned Philox words or blocks start at
    /// the boundary before it.
    pub(crate) fn lead(self, gbase: u64) -> u64 {
        match self {
            Kernel::AccumulateRademacher | Kernel::ScaleAccumulateRademacher => gbase % 64,
            Kernel::PerturbRademacher => gbase % 128,
            Kernel::PerturbQuad
            | Kernel::AccumulateQuad
            | Kernel::ScaleAccumulateQuad
            | Kernel::SphereSumsq => gbase % 4,
            _ => 0,
        }
    }
}

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

    fn index(kind: LayoutKind) -> usize {
        LayoutKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL")
    }

    pub(crate) fn bind_group_layout(&self, kind: LayoutKind) -> &wgpu::BindGroupLayout {
        &self.bind[Self::index(kind)]
    }

    pub(crate) fn pipeline_layout(&self, kind: LayoutKind) -> &wgpu::PipelineLayout {
        &self.pipeline[Self::index(kind)]
    }
}
