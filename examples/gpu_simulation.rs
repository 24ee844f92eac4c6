// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fitting the parameters of a GPU-resident simulation that has no derivatives.
//!
//! 64 particles are launched with unknown initial velocities through air with an unknown drag
//! coefficient; a compute shader integrates them for 100 steps (semi-implicit Euler) and measures
//! how far they are from where they were observed, half-way and at the end (two sightings per
//! particle make the shared drag identifiable: one alone could be matched by any drag). The velocities (one
//! buffer) and the drag (another buffer) are fitted with SPSA + Adam, all on the GPU: the
//! simulation reads the parameter buffers directly, zograd perturbs them in place, and only the
//! loss crosses to the host.
//!
//! `cargo run --release --example gpu_simulation`

use std::time::Instant;

use wgpu::util::DeviceExt;
use zograd::approx::Spsa;
use zograd::optim::{Adam, Lr, Optimizer};
use zograd::{Binding, Gpu, Params, ShaderObjective};

const N: usize = 64;
const STEPS: u32 = 100;
const DT: f32 = 0.02;

const SIMULATION_WGSL: &str = "
struct Sim { n: u32, steps: u32, dt: f32, gravity: f32 }
@group(0) @binding(0) var<uniform> sim: Sim;
@group(0) @binding(1) var<storage, read> velocity0: array<vec2<f32>>; // parameters, buffer 0
@group(0) @binding(2) var<storage, read> drag: array<f32>;            // parameters, buffer 1
@group(0) @binding(3) var<storage, read> observed: array<vec4<f32>>;  // (half-way, end)
@group(0) @binding(4) var<storage, read_write> err: array<f32>;       // err[0] = loss, err[1..] per particle
var<workgroup> sums: array<f32, 64>;

// Each thread flies one particle: a = g - k v, semi-implicit Euler.
@compute @workgroup_size(64)
fn simulate(@builtin(global_invocation_id) id: vec3<u32>, @builtin(local_invocation_index) lid: u32,
            @builtin(workgroup_id) wid: vec3<u32>) {
    var e = 0.0;
    if (id.x < sim.n) {
        var p = vec2<f32>(0.0, 0.0);
        var v = velocity0[id.x];
        let k = drag[0];
        var half = p;
        for (var s = 0u; s < sim.steps; s = s + 1u) {
            v = v + sim.dt * (vec2<f32>(0.0, -sim.gravity) - k * v);
            p = p + sim.dt * v;
            if (s + 1u == sim.steps / 2u) { half = p; }
        }
        let d = vec4<f32>(half, p) - observed[id.x];
        e = dot(d, d);
    }
    sums[lid] = e;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (lid < s) { sums[lid] = sums[lid] + sums[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { err[1u + wid.x] = sums[0]; }
}

@compute @workgroup_size(1)
fn total() {
    var t = 0.0;
    for (var g = 0u; g < (sim.n + 63u) / 64u; g = g + 1u) { t = t + err[1u + g]; }
    err[0] = t / f32(sim.n);
}";

/// The same simulation on the CPU, to make the observations from the true parameters:
/// the positions half-way and at the end.
fn fly(v0: [f32; 2], k: f32) -> [f32; 4] {
    let (mut p, mut v) = ([0.0f32; 2], v0);
    let mut half = p;
    for s in 0..STEPS {
        v = [v[0] + DT * (-k * v[0]), v[1] + DT * (-9.81 - k * v[1])];
        p = [p[0] + DT * v[0], p[1] + DT * v[1]];
        if s + 1 == STEPS / 2 {
            half = p;
        }
    }
    [half[0], half[1], p[0], p[1]]
}

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    println!(
        "adapter: {} ({:?})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );

    // The truth: launch angles and speeds from zograd's generator, drag 0.3.
    let u = |seed, i| {
        0.5 + zograd::rng::perturbation(zograd::Distribution::Uniform, seed, 0, 0, i as u64) / 3.464
    };
    let true_v: Vec<[f32; 2]> = (0..N)
        .map(|i| {
            let (speed, angle) = (8.0 + 6.0 * u(1, i), 0.3 + 0.9 * u(2, i));
            [speed * angle.cos(), speed * angle.sin()]
        })
        .collect();
    let true_drag = 0.3f32;
    let targets: Vec<[f32; 4]> = true_v.iter().map(|v| fly(*v, true_drag)).collect();

    // The parameters to fit: every particle launched at (5, 5), drag guessed at 0.05.
    let v_guess = vec![5.0f32; 2 * N];
    let mut x = Params::from_slices(&gpu, &[&v_guess[..], &[0.05f32][..]])?;

    let d = gpu.device();
    let sim = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("sim"),
        contents: bytemuck::cast_slice(&[N as u32, STEPS, DT.to_bits(), 9.81f32.to_bits()]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let target = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("targets"),
        contents: bytemuck::cast_slice(&targets),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let groups = N.div_ceil(64) as u32;
    let err = ShaderObjective::loss_buffer(&gpu, 1 + u64::from(groups))?;
    let mut loss = ShaderObjective::new(
        &gpu,
        SIMULATION_WGSL,
        &[
            Binding::Uniform(&sim),
            Binding::Read(&x.buffers()[0]),
            Binding::Read(&x.buffers()[1]),
            Binding::Read(&target),
            Binding::ReadWrite(&err),
        ],
        &[("simulate", [groups, 1, 1]), ("total", [1, 1, 1])],
        (&err, 0),
    )?;

    let mut opt = Optimizer::new(&gpu, &x, Spsa::new().n_samples(8).h(1e-2).seed(7))?
        .then(Adam::new())
        .then(Lr::new(0.05));
    println!("\n| step | mean squared miss over both sightings (m²) | drag |\n|---|---|---|");
    let drag_now =
        |x: &Params| -> zograd::Result<f32> { Ok(gpu.read_f32s(&x.buffers()[1], 0, 1)?[0]) };
    println!("| 0 | {:.4} | {:.4} |", loss.evaluate()?, drag_now(&x)?);
    let start = Instant::now();
    let steps = 4000;
    for step in 1..=steps {
        opt.step(&mut x, &mut loss)?;
        if step % 500 == 0 {
            println!(
                "| {step} | {:.4} | {:.4} |",
                loss.evaluate()?,
                drag_now(&x)?
            );
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let fitted = x.to_vec()?;
    let v_err = (0..N)
        .map(|i| {
            ((fitted[2 * i] - true_v[i][0]).powi(2) + (fitted[2 * i + 1] - true_v[i][1]).powi(2))
                .sqrt()
        })
        .sum::<f32>()
        / N as f32;
    println!(
        "\nfitted drag {:.4} (true {true_drag}); mean launch-velocity error {v_err:.3} m/s (started at {:.3})",
        fitted[2 * N],
        (0..N)
            .map(|i| ((5.0 - true_v[i][0]).powi(2) + (5.0 - true_v[i][1]).powi(2)).sqrt())
            .sum::<f32>()
            / N as f32
    );
    println!(
        "{steps} steps, {} simulations of {N} particles × {STEPS} steps in {elapsed:.1} s",
        loss.evaluations()
    );
    Ok(())
}
