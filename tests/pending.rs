// SPDX-License-Identifier: MIT OR Apache-2.0
//! The pending encoder (ARCHITECTURE.md, "The GPU layer"): zograd's parameter moves are
//! recorded and submitted with the next evaluation of its own objectives. What that must not
//! change: a submission wgpu refuses still leaves x where the host believes it (the restore
//! guard brings it home), host writes land after the pending launches, and the user's own work
//! after `Gpu::flush` sees them.

mod common;

use zograd::approx::MeZo;
use zograd::optim::{Lr, Optimizer};
use zograd::wgpu;
use zograd::{Error, Gpu, Objective, Params, ShaderObjective, Step};

/// f(x) = Σ xᵢ² of one buffer into out[0], one thread.
const SUMSQ: &str = "
    @group(0) @binding(0) var<storage, read> x: array<f32>;
    @group(0) @binding(1) var<storage, read_write> out: array<f32>;
    @compute @workgroup_size(1) fn main() {
        var s = 0.0;
        for (var i = 0u; i < arrayLength(&x); i++) { s += x[i] * x[i]; }
        out[0] = s;
    }";

/// The user's own Σ xᵢ² pipeline over `x`: its pipeline, a bind group that fits it, and one of
/// another pipeline's automatic layout (binding it is an error of the recorded work, reported
/// when the encoder is finished).
struct Sumsq {
    pipeline: wgpu::ComputePipeline,
    good: wgpu::BindGroup,
    mismatched: wgpu::BindGroup,
    out: wgpu::Buffer,
}

impl Sumsq {
    fn new(gpu: &Gpu, x: &Params) -> Self {
        let device = gpu.device();
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("sumsq"),
            source: wgpu::ShaderSource::Wgsl(SUMSQ.into()),
        });
        let make = || {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some("sumsq"),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (pipeline, other) = (make(), make());
        let out = ShaderObjective::loss_buffer(gpu, 1).unwrap();
        let group = |of: &wgpu::ComputePipeline| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("sumsq"),
                layout: &of.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: x.buffers()[0].as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: out.as_entire_binding(),
                    },
                ],
            })
        };
        Self {
            good: group(&pipeline),
            mismatched: group(&other),
            pipeline,
            out,
        }
    }

    fn objective(&self, gpu: &Gpu, group: &wgpu::BindGroup) -> ShaderObjective {
        let steps = vec![Step::dispatch(&self.pipeline, &[group], [1, 1, 1])];
        ShaderObjective::from_steps(gpu, steps, (&self.out, 0)).unwrap()
    }
}

/// In-place restoration drifts by a few roundings (the bound of tests/reliability.rs).
fn in_place_bound(x0: f32) -> f32 {
    16.0 * (x0.abs() + 0.1) * f32::EPSILON
}

/// A `ShaderObjective` whose recorded work wgpu refuses, inside a fused MeZO step: its
/// submission also carried the pending perturbation x + h·z, and wgpu drops a refused
/// submission whole. The step fails with `Error::Validation`, x is back within the in-place
/// drift (had the perturbation not been submitted again, the guard's move back would leave x
/// at x − h·z, 1e-2 away here), the failed step is not counted, and the next steps work.
#[test]
fn a_refused_evaluation_leaves_x_where_it_was() {
    let gpu = common::gpu();
    let x0 = common::data(3, 300);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let user = Sumsq::new(&gpu, &x);
    let mut broken = user.objective(&gpu, &user.mismatched);
    let mut good = user.objective(&gpu, &user.good);
    let want: f64 = x0.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let got = f64::from(good.loss(&x).unwrap());
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().h(1e-2).seed(4))
        .unwrap()
        .then(Lr::new(1e-3));
    // Twice: the second time the previous attempt's restore is what was pending.
    for attempt in 0..2 {
        match opt.step(&mut x, &mut broken) {
            Err(Error::Validation(msg)) => assert!(!msg.is_empty()),
            other => panic!("attempt {attempt}: a mismatched bind group gave {other:?}"),
        }
        let after = x.to_vec().unwrap();
        for (i, (a, b)) in after.iter().zip(&x0).enumerate() {
            assert!(
                (a - b).abs() <= in_place_bound(*b),
                "attempt {attempt}: x[{i}] = {a}, was {b}"
            );
        }
        assert_eq!(opt.steps(), 0, "attempt {attempt}");
    }
    // The device and the optimiser work on: the loss falls.
    let before = good.loss(&x).unwrap();
    for _ in 0..5 {
        opt.step(&mut x, &mut good).unwrap();
    }
    assert_eq!(opt.steps(), 5);
    let f = good.loss(&x).unwrap();
    assert!(f < before, "{f} after 5 steps, {before} before");
}

/// After a step whose update was left pending: `Params::write` lands after it (a
/// `queue.write_buffer` would otherwise land first and the update on top of it), and the
/// user's own submission after `Gpu::flush` reads the updated parameters.
#[test]
fn writes_and_the_users_own_work_come_after_the_pending_update() {
    let gpu = common::gpu();
    let x0 = common::data(8, 256);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let user = Sumsq::new(&gpu, &x);
    let mut loss = user.objective(&gpu, &user.good);
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(2))
        .unwrap()
        .then(Lr::new(1e-2));

    opt.step(&mut x, &mut loss).unwrap();
    let fresh: Vec<f32> = (0..256).map(|i| i as f32 * 0.25).collect();
    x.write(&fresh).unwrap();
    assert_eq!(
        x.to_vec().unwrap(),
        fresh,
        "the write came before the update"
    );

    // The user's own copy of x, submitted after flush, sees the step's update.
    opt.step(&mut x, &mut loss).unwrap();
    gpu.flush().unwrap();
    let copy = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("user copy"),
        size: 256 * 4,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut encoder = gpu.device().create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(&x.buffers()[0], 0, &copy, 0, 256 * 4);
    gpu.queue().submit([encoder.finish()]);
    let seen = gpu.read_f32s(&copy, 0, 256).unwrap();
    let now = x.to_vec().unwrap();
    assert_ne!(now, fresh, "the second step moved x");
    assert_eq!(seen, now, "the user's copy after flush");
    // Nothing pending: flush is free and fine.
    gpu.flush().unwrap();
}

/// With an objective that is not zograd's own (a closure), nothing stays pending when a call
/// returns: the caller may evaluate the closure itself next, and its own submissions must see
/// the parameters as zograd left them — after `Optimizer::step` (the fused update) and after
/// `MeZo::estimate_terms` (the restore), without `Gpu::flush`.
#[test]
fn nothing_stays_pending_after_a_call_with_a_closure() {
    let gpu = common::gpu();
    let x0 = common::data(9, 256);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let user = Sumsq::new(&gpu, &x);
    // The user's own copy of x, submitted by the user.
    let copy = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("user copy"),
        size: 256 * 4,
        usage: wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let own_copy = |x: &Params| {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&x.buffers()[0], 0, &copy, 0, 256 * 4);
        gpu.queue().submit([encoder.finish()]);
        gpu.read_f32s(&copy, 0, 256).unwrap()
    };
    let mut closure = |_p: &Params| -> zograd::Result<f32> {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&user.pipeline);
            pass.set_bind_group(0, &user.good, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        gpu.read_f32_after(encoder, &user.out, 0)
    };
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(6))
        .unwrap()
        .then(Lr::new(1e-2));
    opt.step(&mut x, &mut closure).unwrap();
    let seen = own_copy(&x);
    assert_ne!(seen, x0, "the step moved x");
    assert_eq!(seen, x.to_vec().unwrap(), "after Optimizer::step");

    let before = x.to_vec().unwrap();
    let mut mezo = MeZo::new().h(1e-2).seed(6);
    zograd::approx::GradApproximator::pre_step(&mut mezo);
    mezo.estimate_terms(&gpu, &mut x, &mut closure, None)
        .unwrap();
    let seen = own_copy(&x);
    for (i, (a, b)) in seen.iter().zip(&before).enumerate() {
        assert!(
            (a - b).abs() <= in_place_bound(*b),
            "after estimate_terms: x[{i}] = {a}, was {b}"
        );
    }
}

/// The default in-place batches (`Objective::loss_batch`, `loss_batch_masked`) of an objective
/// that is not zograd's own submit each recorded perturbation before calling it: a closure that
/// submits its own Σ xᵢ² pass with `queue.submit` (then reads with `read_f32s`) sees every
/// point, checked against an f64 recomputation of the points (CPU twins of the directions;
/// without the flush the pass sees x unmoved). x comes back within the in-place drift.
#[test]
fn default_batches_submit_each_move_before_a_users_own_work() {
    use zograd::kernels::{Direction, Mask};
    let gpu = common::gpu();
    let n = 256u64;
    let x0 = common::data(11, n as usize);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let user = Sumsq::new(&gpu, &x);
    let mut closure = |_p: &Params| -> zograd::Result<f32> {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&user.pipeline);
            pass.set_bind_group(0, &user.good, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        gpu.queue().submit([encoder.finish()]);
        Ok(gpu.read_f32s(&user.out, 0, 1)?[0])
    };
    let dir = |sample| Direction {
        distribution: zograd::Distribution::Rademacher,
        seed: 3,
        step: 1,
        sample,
    };
    let points = [(dir(0), 0.05f32), (dir(0), -0.05), (dir(1), 0.05)];
    let sparse = Mask::new(&x, &[], 0.5).unwrap();
    for (what, mask) in [("dense", Mask::all()), ("sparse", sparse)] {
        let got = if mask.is_all() {
            closure.loss_batch(&mut x, &points).unwrap()
        } else {
            closure
                .loss_batch_masked(&mut x, &points, &[], &mask)
                .unwrap()
        };
        for ((d, s), v) in points.iter().zip(&got) {
            let mut y = x0.clone();
            zograd::cpu::perturb_masked(&mut y, 0, d, *s, n, &mask);
            let want: f64 = y.iter().map(|v| f64::from(*v).powi(2)).sum();
            assert!(
                (f64::from(*v) - want).abs() <= 1e-5 * want,
                "{what}, sample {} scale {s}: the user's pass saw {v}, the point is {want}",
                d.sample
            );
        }
        for (i, (a, b)) in x.to_vec().unwrap().iter().zip(&x0).enumerate() {
            assert!(
                (a - b).abs() <= in_place_bound(*b),
                "{what}: x[{i}] = {a}, was {b}"
            );
        }
    }
}
