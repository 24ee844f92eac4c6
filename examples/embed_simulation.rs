// SPDX-License-Identifier: MIT OR Apache-2.0
//! Embedding zograd in an existing wgpu simulation.
//!
//! The first part is a small, self-contained particle simulation written the way wgpu's own
//! examples are (its own instance, device, buffers, WGSL and pipelines; ping-pong particle
//! buffers, one dispatch per frame, like wgpu's boids): 256 particles hang on springs under
//! gravity and air drag. Its parameter block is one 16-byte buffer, `SimParams { dt, gravity,
//! drag, stiffness }`, read by the simulation as a uniform.
//!
//! The second part fits gravity, drag and stiffness (magnitudes 0.8 … 250) from an observed
//! trajectory (two snapshots of every particle, recorded from the true parameters), without
//! changing the simulation: zograd adopts the device (`Gpu::from_wgpu`) and elements 1..4 of the
//! parameter block (`Params::from_buffer_ranges`; the time step `dt`, element 0, is never
//! touched), gives each parameter its own scale (`Params::set_scales`) so that one h and one
//! learning rate fit all three, and runs `Fdm → Adam → Lr`. The loss is a
//! `ShaderObjective::from_steps` over the simulation's own pipelines and ping-pong bind groups
//! (reset, frames, comparison, reduction): one submission and one f32 read per evaluation.
//!
//! Glue (lines that exist only because of zograd), counted: 2 for the extra usage flags on the
//! parameter block (`STORAGE`, `COPY_SRC`), 1 `Gpu::from_wgpu`, 2 `Params::from_buffer_ranges`
//! and `set_scales`, 1 `ShaderObjective::from_steps` plus the 14-line `loss_steps` that lists the
//! simulation's own dispatches, 3 for the optimiser and 1 `opt.step`: 24 lines, against about
//! 230 lines of the simulation's own wgpu set-up, WGSL and comparison shader.
//!
//! `cargo run --release --example embed_simulation`

use zograd::approx::Fdm;
use zograd::optim::{Adam, Lr, Optimizer};
use zograd::wgpu::{self, util::DeviceExt}; // the wgpu zograd is built against
use zograd::{Gpu, Objective, Params, Scales, ShaderObjective, Step};

const N: u32 = 256;
const FRAMES: u32 = 120;
const TRUE: [f32; 3] = [9.81, 0.8, 250.0]; // gravity (m/s²), drag (1/s), stiffness (1/s²)
const GUESS: [f32; 3] = [7.0, 1.1, 180.0];
const DT: f32 = 0.005;

const SIMULATION_WGSL: &str = "
struct SimParams { dt: f32, gravity: f32, drag: f32, stiffness: f32 }
struct Particle { pos: vec2<f32>, vel: vec2<f32> }

@group(0) @binding(0) var<uniform> params: SimParams;
@group(0) @binding(1) var<storage, read> src: array<Particle>;
@group(0) @binding(2) var<storage, read_write> dst: array<Particle>;

// One frame: spring towards the anchor at the origin, drag, gravity; semi-implicit Euler.
@compute @workgroup_size(64)
fn frame(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    if (i >= arrayLength(&src)) { return; }
    var p = src[i];
    let a = -params.stiffness * p.pos - params.drag * p.vel + vec2<f32>(0.0, -params.gravity);
    p.vel = p.vel + params.dt * a;
    p.pos = p.pos + params.dt * p.vel;
    dst[i] = p;
}
";

const LOSS_WGSL: &str = "
@group(0) @binding(0) var<storage, read> state: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> observed: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> err: array<f32>;

// err[i] = (first snapshot: 0, else err[i]) + |state - observed|², positions and velocities
// (velocities weighted 1/100: they are ~10x larger).
fn miss(i: u32) -> f32 {
    let d = (state[i] - observed[i]) * vec4<f32>(1.0, 1.0, 0.1, 0.1);
    return dot(d, d);
}
@compute @workgroup_size(64)
fn compare_first(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&state)) { err[id.x + 1u] = miss(id.x); }
}
@compute @workgroup_size(64)
fn compare_add(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < arrayLength(&state)) { err[id.x + 1u] = err[id.x + 1u] + miss(id.x); }
}

// err[0] = mean of err[1..], one workgroup.
var<workgroup> sums: array<f32, 256>;
@compute @workgroup_size(256)
fn total(@builtin(local_invocation_index) lid: u32) {
    let n = arrayLength(&state);
    var s = 0.0;
    for (var i = lid; i < n; i = i + 256u) { s = s + err[i + 1u]; }
    sums[lid] = s;
    workgroupBarrier();
    for (var k = 128u; k > 0u; k = k >> 1u) {
        if (lid < k) { sums[lid] = sums[lid] + sums[lid + k]; }
        workgroupBarrier();
    }
    if (lid == 0u) { err[0] = sums[0] / f32(n); }
}
";

/// The simulation as its authors wrote it: device, buffers, pipelines, bind groups.
struct Simulation {
    device: wgpu::Device,
    queue: wgpu::Queue,
    params: wgpu::Buffer,
    initial: wgpu::Buffer,
    particles: [wgpu::Buffer; 2],
    frame: wgpu::ComputePipeline,
    frame_groups: [wgpu::BindGroup; 2],
    observed: [wgpu::Buffer; 2],
    err: wgpu::Buffer,
    compare: [wgpu::ComputePipeline; 2],
    compare_groups: [wgpu::BindGroup; 2],
    total: wgpu::ComputePipeline,
    total_group: wgpu::BindGroup,
}

impl Simulation {
    fn new() -> Self {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter =
            pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
                .ok()
                .or_else(|| {
                    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()))
                        .into_iter()
                        .next()
                })
                .expect("an adapter");
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("simulation"),
            required_limits: adapter.limits(),
            ..Default::default()
        }))
        .expect("a device");
        // The parameter block, read by the simulation as a uniform. For zograd it also needs
        // STORAGE (its kernels write the fitted elements) and COPY_SRC / COPY_DST (to read and
        // write it from the host).
        let params = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("sim params"),
            contents: bytemuck::cast_slice(&[DT, GUESS[0], GUESS[1], GUESS[2]]),
            usage: wgpu::BufferUsages::UNIFORM
                | wgpu::BufferUsages::STORAGE // zograd
                | wgpu::BufferUsages::COPY_SRC // zograd
                | wgpu::BufferUsages::COPY_DST,
        });
        // Initial state: particles on a ring of radii 0.05 … 0.3 m, at rest.
        let init: Vec<[f32; 4]> = (0..N)
            .map(|i| {
                let a = i as f32 * 2.399_963; // golden angle
                let r = 0.05 + 0.25 * (i as f32 / N as f32);
                [r * a.cos(), r * a.sin(), 0.0, 0.0]
            })
            .collect();
        let initial = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("initial state"),
            contents: bytemuck::cast_slice(&init),
            usage: wgpu::BufferUsages::COPY_SRC,
        });
        let bytes = u64::from(N) * 16;
        let particles = [0, 1].map(|k| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(["particles A", "particles B"][k]),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_DST
                    | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            })
        });
        let observed = [0, 1].map(|k| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(["observed, half-way", "observed, end"][k]),
                size: bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        });
        let err = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("err"),
            size: 4 * (1 + u64::from(N)),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let module = |source: &str| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: None,
                source: wgpu::ShaderSource::Wgsl(source.into()),
            })
        };
        let (simulation, comparison) = (module(SIMULATION_WGSL), module(LOSS_WGSL));
        let pipeline = |module: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let frame = pipeline(&simulation, "frame");
        let compare = [
            pipeline(&comparison, "compare_first"),
            pipeline(&comparison, "compare_add"),
        ];
        let total = pipeline(&comparison, "total");
        let group = |pipeline: &wgpu::ComputePipeline, entries: &[(u32, &wgpu::Buffer)]| {
            let entries: Vec<wgpu::BindGroupEntry<'_>> = entries
                .iter()
                .map(|(binding, buffer)| wgpu::BindGroupEntry {
                    binding: *binding,
                    resource: buffer.as_entire_binding(),
                })
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &entries,
            })
        };
        // Ping-pong: frame k reads particles[k % 2] and writes the other.
        let frame_groups = [0, 1].map(|k| {
            group(
                &frame,
                &[(0, &params), (1, &particles[k]), (2, &particles[1 - k])],
            )
        });
        // Frames per snapshot are even: both snapshots are in particles A.
        let compare_groups = [0, 1].map(|k| {
            group(
                &compare[k],
                &[(0, &particles[0]), (1, &observed[k]), (2, &err)],
            )
        });
        let total_group = group(&total, &[(0, &particles[0]), (2, &err)]);
        Self {
            device,
            queue,
            params,
            initial,
            particles,
            frame,
            frame_groups,
            observed,
            err,
            compare,
            compare_groups,
            total,
            total_group,
        }
    }

    /// The simulation's own run, recorded: reset the particles and run the frames, copying the
    /// state at the two snapshots into `observed` (used once, with the true parameters, to make
    /// the observations).
    fn observe(&self) {
        let bytes = u64::from(N) * 16;
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.initial, 0, &self.particles[0], 0, bytes);
        for observed in &self.observed {
            {
                let mut pass = encoder.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.frame);
                for f in 0..FRAMES / 2 {
                    pass.set_bind_group(0, &self.frame_groups[(f % 2) as usize], &[]);
                    pass.dispatch_workgroups(N.div_ceil(64), 1, 1);
                }
            }
            encoder.copy_buffer_to_buffer(&self.particles[0], 0, observed, 0, bytes);
        }
        self.queue.submit([encoder.finish()]);
    }

    /// The same run as a loss, in the simulation's own pipelines and bind groups: reset, the
    /// frames (ping-pong: one bind group per direction), a comparison pass at each snapshot,
    /// the reduction into err[0].
    fn loss_steps(&self) -> Vec<Step> {
        let groups = [N.div_ceil(64), 1, 1];
        let mut steps = vec![Step::copy(&self.initial, &self.particles[0])];
        for half in 0..2 {
            for f in 0..FRAMES / 2 {
                let group = &self.frame_groups[(f % 2) as usize];
                steps.push(Step::dispatch(&self.frame, &[group], groups));
            }
            let group = &self.compare_groups[half];
            steps.push(Step::dispatch(&self.compare[half], &[group], groups));
        }
        steps.push(Step::dispatch(&self.total, &[&self.total_group], [1, 1, 1]));
        steps
    }
}

fn main() -> zograd::Result<()> {
    let sim = Simulation::new();
    // Record the "observed" trajectory from the true parameters, then go back to the guess.
    let write_params = |p: [f32; 3]| {
        sim.queue
            .write_buffer(&sim.params, 4, bytemuck::cast_slice(&p));
    };
    write_params(TRUE);
    sim.observe();
    write_params(GUESS);

    // --- zograd: adopt the device and elements 1..4 of the parameter block, with scales. ---
    let gpu = Gpu::from_wgpu(sim.device.clone(), sim.queue.clone())?;
    let mut x = Params::from_buffer_ranges(&gpu, vec![(sim.params.clone(), 1..4)])?;
    x.set_scales(Scales::PerElement(GUESS.to_vec()))?;
    let mut loss = ShaderObjective::from_steps(&gpu, sim.loss_steps(), (&sim.err, 0))?;
    let mut opt = Optimizer::new(&gpu, &x, Fdm::new().h(1e-3))?
        .then(Adam::new())
        .then(Lr::new(0.02));

    let rel_error = |x: &Params| -> zograd::Result<Vec<f32>> {
        Ok(x.to_vec()?
            .iter()
            .zip(TRUE)
            .map(|(v, t)| (v - t).abs() / t)
            .collect())
    };
    let before = rel_error(&x)?;
    let f0 = loss.loss(&x)?;
    let start = std::time::Instant::now();
    let steps = 300;
    for _ in 0..steps {
        opt.step(&mut x, &mut loss)?;
    }
    let fitted = x.to_vec()?;
    let after = rel_error(&x)?;
    let block = gpu.read_f32s(&sim.params, 0, 4)?;
    println!(
        "loss {f0:.3e} -> {:.3e} in {steps} steps ({:.1} s)",
        loss.loss(&x)?,
        start.elapsed().as_secs_f64()
    );
    println!("| parameter | true | guess | fitted | error before | error after |");
    println!("|---|---|---|---|---|---|");
    for (k, name) in ["gravity", "drag", "stiffness"].iter().enumerate() {
        println!(
            "| {name} | {} | {} | {:.4} | {:.1} % | {:.1e} % |",
            TRUE[k],
            GUESS[k],
            fitted[k],
            100.0 * before[k],
            100.0 * after[k]
        );
    }
    assert_eq!(block[0], DT, "dt, outside the fitted range, is untouched");
    println!(
        "dt (element 0 of the block, not fitted) is still {}",
        block[0]
    );
    Ok(())
}
