// SPDX-License-Identifier: MIT OR Apache-2.0
//! Losses computed by WGSL on the parameter buffers, the way users compute them: the buffers
//! are gathered on the GPU into one scratch array (one dispatch per buffer, any number of
//! buffers), a single-workgroup shader evaluates the function, one f32 is read back.

use std::collections::HashMap;

use zograd::{Gpu, Params};

/// Test functions, in f32, on the flat parameter vector x.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Function {
    /// Σ x_i²
    Sphere,
    /// (x0 + 2x1 − 7)² + (2x0 + x1 − 5)², minimum 0 at (1, 3).
    Booth,
    /// Σ 100 (x_{i+1} − x_i²)² + (1 − x_i)², minimum 0 at (1, …, 1).
    Rosenbrock,
}

const SHADER: &str = r#"
struct Meta { offset: u32, len: u32, func: u32, n: u32 }
@group(0) @binding(0) var<uniform> info: Meta;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> scratch: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
var<workgroup> sums: array<f32, 64>;

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) id: vec3<u32>) {
    for (var i = id.x; i < info.len; i = i + 64u * 64u) {
        scratch[info.offset + i] = src[i];
    }
}

fn term(i: u32) -> f32 {
    let x = scratch[i];
    if (info.func == 0u) {
        return x * x;
    }
    if (info.func == 1u) {
        if (i > 0u) { return 0.0; }
        let a = scratch[0] + 2.0 * scratch[1] - 7.0;
        let b = 2.0 * scratch[0] + scratch[1] - 5.0;
        return a * a + b * b;
    }
    if (i + 1u >= info.n) { return 0.0; }
    let d = scratch[i + 1u] - x * x;
    return 100.0 * d * d + (1.0 - x) * (1.0 - x);
}

@compute @workgroup_size(64)
fn loss(@builtin(local_invocation_index) lid: u32) {
    var s = 0.0;
    for (var i = lid; i < info.n; i = i + 64u) {
        s = s + term(i);
    }
    sums[lid] = s;
    workgroupBarrier();
    if (lid == 0u) {
        var t = 0.0;
        for (var k = 0u; k < 64u; k = k + 1u) {
            t = t + sums[k];
        }
        out[0] = t;
    }
}
"#;

/// A loss evaluated on the GPU; implements `FnMut(&Params) -> f32` through [`ShaderLoss::eval`].
pub struct ShaderLoss {
    gpu: Gpu,
    func: Function,
    n: u64,
    layout: wgpu::BindGroupLayout,
    gather: wgpu::ComputePipeline,
    loss: wgpu::ComputePipeline,
    scratch: wgpu::Buffer,
    out: wgpu::Buffer,
    groups: HashMap<wgpu::Buffer, (wgpu::Buffer, wgpu::BindGroup)>,
    loss_group: wgpu::BindGroup,
    /// Evaluations so far.
    pub calls: u32,
}

fn entry(binding: u32, ty: wgpu::BufferBindingType) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

impl ShaderLoss {
    pub fn new(gpu: &Gpu, func: Function, n: u64) -> Self {
        let d = gpu.device();
        let layout = d.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("test loss"),
            entries: &[
                entry(0, wgpu::BufferBindingType::Uniform),
                entry(1, wgpu::BufferBindingType::Storage { read_only: true }),
                entry(2, wgpu::BufferBindingType::Storage { read_only: false }),
                entry(3, wgpu::BufferBindingType::Storage { read_only: false }),
            ],
        });
        let pl = d.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: None,
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("test loss"),
            source: wgpu::ShaderSource::Wgsl(SHADER.into()),
        });
        let pipe = |entry: &str| {
            d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: Some(&pl),
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let storage = |size: u64, extra: wgpu::BufferUsages| {
            d.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::STORAGE | extra,
                mapped_at_creation: false,
            })
        };
        let scratch = storage(n.max(2) * 4, wgpu::BufferUsages::empty());
        let out = storage(16, wgpu::BufferUsages::COPY_SRC);
        let meta = Self::meta(gpu, 0, 0, func, n);
        // The loss pass binds the scratch as `src` too; it only reads `scratch`.
        let dummy = storage(16, wgpu::BufferUsages::empty());
        let loss_group = Self::group(gpu, &layout, &meta, &dummy, &scratch, &out);
        Self {
            gpu: gpu.clone(),
            func,
            n,
            gather: pipe("gather"),
            loss: pipe("loss"),
            layout,
            scratch,
            out,
            groups: HashMap::new(),
            loss_group,
            calls: 0,
        }
    }

    fn meta(gpu: &Gpu, offset: u64, len: u64, func: Function, n: u64) -> wgpu::Buffer {
        let f = match func {
            Function::Sphere => 0u32,
            Function::Booth => 1,
            Function::Rosenbrock => 2,
        };
        let b = gpu.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let words = [offset as u32, len as u32, f, n as u32];
        gpu.queue()
            .write_buffer(&b, 0, bytemuck::cast_slice(&words));
        b
    }

    fn group(
        gpu: &Gpu,
        layout: &wgpu::BindGroupLayout,
        meta: &wgpu::Buffer,
        src: &wgpu::Buffer,
        scratch: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> wgpu::BindGroup {
        gpu.device().create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: meta.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: src.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: scratch.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: out.as_entire_binding(),
                },
            ],
        })
    }

    /// f(params), computed on the GPU; one f32 read back.
    pub fn eval(&mut self, params: &Params) -> f32 {
        assert_eq!(
            params.len(),
            self.n,
            "the loss was built for {} elements",
            self.n
        );
        self.calls += 1;
        let mut encoder = self
            .gpu
            .device()
            .create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.gather);
            for (k, b) in params.buffers().iter().enumerate() {
                if !self.groups.contains_key(b) {
                    let meta = Self::meta(
                        &self.gpu,
                        params.offsets()[k],
                        params.buffer_lens()[k],
                        self.func,
                        self.n,
                    );
                    let g =
                        Self::group(&self.gpu, &self.layout, &meta, b, &self.scratch, &self.out);
                    self.groups.insert(b.clone(), (meta, g));
                }
                pass.set_bind_group(0, &self.groups[b].1, &[]);
                pass.dispatch_workgroups(64, 1, 1);
            }
            pass.set_pipeline(&self.loss);
            pass.set_bind_group(0, &self.loss_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        self.gpu.queue().submit([encoder.finish()]);
        self.gpu.read_f32s(&self.out, 0, 1).expect("read the loss")[0]
    }
}
