// SPDX-License-Identifier: MIT OR Apache-2.0
//! Embedding zograd in an application that owns its wgpu device, buffers and pipelines: a loss
//! made of the application's own ping-pong simulation (`ShaderObjective::from_steps`), closures
//! that record into an encoder zograd submits with the readback (`Gpu::read_f32_after`), the
//! application's own validation errors inside a loss on an adopted device, and the opt-in
//! device-lost handling. The simulation is checked against an f64 recomputation on the host.
//!
//! Every test adopts a device of its own (`Gpu::from_wgpu`); wgpu's GL backend cannot drive two
//! devices from different threads at once, so the tests run one at a time.

mod common;

use std::sync::Mutex;

use common::invalid_naming;
use zograd::approx::{Fdm, GradApproximator, MeZo};
use zograd::optim::{Lr, Optimizer};
use zograd::wgpu;
use zograd::wgpu::util::DeviceExt;
use zograd::{Error, Gpu, Objective, Params, ShaderObjective, Step};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A device created the way an application creates it, with wgpu's default (panicking) error
/// handler left in place.
fn app_device() -> (wgpu::Device, wgpu::Queue) {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let limits = adapter.limits();
    pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device")
}

/// Particles on a ring; a frame diffuses and damps: s'ᵢ = sᵢ + a·(sᵢ₋₁ + sᵢ₊₁ − 2sᵢ) − b·sᵢ.
/// The parameter block is a uniform in the application's shader (zograd's kernels bind the same
/// buffer as storage).
const FRAME_WGSL: &str = "
struct Params { a: f32, b: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64) fn frame(@builtin(global_invocation_id) id: vec3<u32>) {
    let n = arrayLength(&src);
    let i = id.x;
    if (i >= n) { return; }
    let left = src[(i + n - 1u) % n];
    let right = src[(i + 1u) % n];
    dst[i] = src[i] + p.a * (left + right - 2.0 * src[i]) - p.b * src[i];
}";

/// Σ (sᵢ − goalᵢ)², one thread.
const REDUCE_WGSL: &str = "
@group(0) @binding(0) var<storage, read> s: array<f32>;
@group(0) @binding(1) var<storage, read> goal: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(1) fn reduce() {
    var acc = 0.0;
    for (var i = 0u; i < arrayLength(&s); i++) {
        let d = s[i] - goal[i];
        acc += d * d;
    }
    out[0] = acc;
}";

const N: usize = 100;
const FRAMES: usize = 7;
const TRUE_PARAMS: [f32; 2] = [0.25, 0.03];
const START_PARAMS: [f32; 2] = [0.2, 0.05];

fn initial_state() -> Vec<f32> {
    (0..N)
        .map(|i| (i as f32 * 0.37).sin() + if i == 10 { 2.0 } else { 0.0 })
        .collect()
}

/// The simulation on the host in f64: the state after `FRAMES` frames.
fn simulate_f64(p: [f64; 2], s0: &[f32]) -> Vec<f64> {
    let mut s: Vec<f64> = s0.iter().map(|&v| f64::from(v)).collect();
    for _ in 0..FRAMES {
        let n = s.len();
        s = (0..n)
            .map(|i| {
                let (l, r) = (s[(i + n - 1) % n], s[(i + 1) % n]);
                s[i] + p[0] * (l + r - 2.0 * s[i]) - p[1] * s[i]
            })
            .collect();
    }
    s
}

fn loss_f64(p: [f64; 2], s0: &[f32], goal: &[f32]) -> f64 {
    simulate_f64(p, s0)
        .iter()
        .zip(goal)
        .map(|(s, g)| (s - f64::from(*g)).powi(2))
        .sum()
}

/// The application: its device, its buffers (a 2-float uniform parameter block, the initial state, two
/// state buffers, the goal, the loss) and its pipelines and bind groups, written as a wgpu
/// application writes them; zograd adopts the device and the parameter buffer.
struct App {
    gpu: Gpu,
    param_buf: wgpu::Buffer,
    initial: wgpu::Buffer,
    state: [wgpu::Buffer; 2],
    out: wgpu::Buffer,
    frame: wgpu::ComputePipeline,
    reduce: wgpu::ComputePipeline,
    /// Frame bind groups: [a → b, b → a].
    frame_groups: [wgpu::BindGroup; 2],
    /// The reduction of the final state (b after an odd number of frames).
    reduce_group: wgpu::BindGroup,
    s0: Vec<f32>,
    goal: Vec<f32>,
}

impl App {
    /// The application and the parameters zograd adopted from its parameter buffer.
    fn new() -> (Self, Params) {
        let (device, queue) = app_device();
        let init = |label: &str, data: &[f32], usage: wgpu::BufferUsages| {
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage,
            })
        };
        use wgpu::BufferUsages as U;
        let s0 = initial_state();
        let goal: Vec<f32> = simulate_f64(TRUE_PARAMS.map(f64::from), &s0)
            .iter()
            .map(|&v| v as f32)
            .collect();
        // A uniform parameter block, with the usages zograd needs added: STORAGE for its
        // kernels, COPY_SRC to read it, COPY_DST for writes (Fdm).
        let param_buf = init(
            "params",
            &START_PARAMS,
            U::UNIFORM | U::STORAGE | U::COPY_SRC | U::COPY_DST,
        );
        let initial = init("initial", &s0, U::STORAGE | U::COPY_SRC);
        let zeros = vec![0.0f32; N];
        let state = [
            init("state a", &zeros, U::STORAGE | U::COPY_SRC | U::COPY_DST),
            init("state b", &zeros, U::STORAGE | U::COPY_SRC | U::COPY_DST),
        ];
        let goal_buf = init("goal", &goal, U::STORAGE);
        let out = init("loss", &[0.0], U::STORAGE | U::COPY_SRC);
        let pipeline = |src: &str, entry: &str| {
            let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(entry),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let frame = pipeline(FRAME_WGSL, "frame");
        let reduce = pipeline(REDUCE_WGSL, "reduce");
        let group = |pipeline: &wgpu::ComputePipeline, bufs: [&wgpu::Buffer; 3]| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &pipeline.get_bind_group_layout(0),
                entries: &[0, 1, 2].map(|k| wgpu::BindGroupEntry {
                    binding: k,
                    resource: bufs[k as usize].as_entire_binding(),
                }),
            })
        };
        let frame_groups = [
            group(&frame, [&param_buf, &state[0], &state[1]]),
            group(&frame, [&param_buf, &state[1], &state[0]]),
        ];
        let reduce_group = group(&reduce, [&state[1], &goal_buf, &out]);
        // zograd adopts the application's device and its parameter buffer (no copy).
        let gpu = Gpu::from_wgpu(device, queue).unwrap();
        let params = Params::from_buffers(&gpu, vec![param_buf.clone()]).unwrap();
        let app = Self {
            gpu,
            param_buf,
            initial,
            state,
            out,
            frame,
            reduce,
            frame_groups,
            reduce_group,
            s0,
            goal,
        };
        (app, params)
    }

    fn workgroups(&self) -> [u32; 3] {
        [N.div_ceil(64) as u32, 1, 1]
    }

    /// Reset, `FRAMES` ping-pong frames, reduce.
    fn steps(&self) -> Vec<Step> {
        let mut steps = vec![Step::copy(&self.initial, &self.state[0])];
        for f in 0..FRAMES {
            steps.push(Step::dispatch(
                &self.frame,
                &[&self.frame_groups[f % 2]],
                self.workgroups(),
            ));
        }
        steps.push(Step::dispatch(
            &self.reduce,
            &[&self.reduce_group],
            [1, 1, 1],
        ));
        steps
    }

    /// The same work recorded by hand into an encoder (a closure loss), with `frame_group`
    /// replacing the first frame's bind group when given.
    fn record(&self, first_group: Option<&wgpu::BindGroup>) -> wgpu::CommandEncoder {
        let device = self.gpu.device();
        let mut encoder = device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&self.initial, 0, &self.state[0], 0, None);
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.frame);
            for f in 0..FRAMES {
                let group = match (f, first_group) {
                    (0, Some(g)) => g,
                    _ => &self.frame_groups[f % 2],
                };
                pass.set_bind_group(0, group, &[]);
                let [x, y, z] = self.workgroups();
                pass.dispatch_workgroups(x, y, z);
            }
            pass.set_pipeline(&self.reduce);
            pass.set_bind_group(0, &self.reduce_group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        encoder
    }

    /// A frame bind group that wgpu refuses to create: its destination lacks STORAGE (created
    /// outside an error scope, on the adopted device, wgpu's default handler would panic).
    fn unusable_group(&self) -> wgpu::BindGroup {
        let device = self.gpu.device();
        let not_storage = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("not storage"),
            size: 4 * N as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.group_with(&self.frame, &not_storage)
    }

    /// A valid bind group of the reduce pipeline's layout over the frame's buffers: binding it
    /// to the frame pipeline is an error of the recorded commands, reported when the encoder
    /// is finished (each automatic layout belongs to its pipeline only).
    fn mismatched_group(&self) -> wgpu::BindGroup {
        self.group_with(&self.reduce, &self.state[1])
    }

    fn group_with(&self, layout_of: &wgpu::ComputePipeline, dst: &wgpu::Buffer) -> wgpu::BindGroup {
        self.gpu
            .device()
            .create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("bad"),
                layout: &layout_of.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: self.param_buf.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: self.state[0].as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: dst.as_entire_binding(),
                    },
                ],
            })
    }
}

fn params_f64(x: &Params) -> [f64; 2] {
    let v = x.to_vec().unwrap();
    [f64::from(v[0]), f64::from(v[1])]
}

/// The application's own ping-pong pipelines as a loss: the loss, the final state and Fdm's
/// gradient (which perturbs the adopted parameter buffer the pipelines read) against the f64
/// recomputation of the same simulation.
#[test]
fn ping_pong_steps_match_an_f64_simulation() {
    let _s = serial();
    let (app, mut x) = App::new();
    let mut loss = ShaderObjective::from_steps(&app.gpu, app.steps(), (&app.out, 0)).unwrap();
    let p = params_f64(&x);
    let want = loss_f64(p, &app.s0, &app.goal);
    let got = f64::from(loss.loss(&x).unwrap());
    assert!(want > 1e-3, "the start point is off the goal ({want})");
    assert!(
        (got - want).abs() <= 1e-5 * want,
        "loss {got} vs f64 {want}"
    );
    // The final state is in b (an odd number of frames): ping-pong happened frame by frame.
    let final_state = app.gpu.read_f32s(&app.state[1], 0, N as u64).unwrap();
    let want_state = simulate_f64(p, &app.s0);
    for (i, (g, w)) in final_state.iter().zip(&want_state).enumerate() {
        assert!((f64::from(*g) - w).abs() < 1e-5, "state[{i}]: {g} vs {w}");
    }
    // A second evaluation starts again from the reset state.
    assert_eq!(f64::from(loss.loss(&x).unwrap()), got);
    assert_eq!(loss.evaluations(), 2);
    // A step whose bind group does not fit its pipeline: an error when evaluated (on the
    // adopted device, whose default handler would panic), and the device works on.
    let mut steps = app.steps();
    steps[1] = Step::dispatch(&app.frame, &[&app.mismatched_group()], app.workgroups());
    let mut broken = ShaderObjective::from_steps(&app.gpu, steps, (&app.out, 0)).unwrap();
    match broken.loss(&x) {
        Err(Error::Validation(_)) => {}
        other => panic!("a mismatched bind group gave {other:?}"),
    }
    assert_eq!(f64::from(loss.loss(&x).unwrap()), got);

    // Fdm through the user's pipelines vs the f64 central difference.
    let mut g = x.zeros_like().unwrap();
    Fdm::new()
        .h(1e-3)
        .approximate(&app.gpu, &mut x, &mut loss, &mut g)
        .unwrap();
    let g = g.to_vec().unwrap();
    let h = 1e-6;
    for k in 0..2 {
        let (mut hi, mut lo) = (p, p);
        hi[k] += h;
        lo[k] -= h;
        let d = (loss_f64(hi, &app.s0, &app.goal) - loss_f64(lo, &app.s0, &app.goal)) / (2.0 * h);
        assert!(
            (f64::from(g[k]) - d).abs() <= 2e-2 * d.abs(),
            "d/dp{k}: Fdm {} vs f64 {d}",
            g[k]
        );
    }
    assert_eq!(params_f64(&x), p, "Fdm wrote every element back");
}

/// A closure records the same work into an encoder and reads the loss with
/// `Gpu::read_f32_after`: the value is the f64 simulation's; bad offsets and buffers are
/// `InvalidArgument`s.
#[test]
fn closures_record_and_read_in_one_submission() {
    let _s = serial();
    let (app, x) = App::new();
    let want = loss_f64(params_f64(&x), &app.s0, &app.goal);
    let got = app
        .gpu
        .read_f32_after(app.record(None), &app.out, 0)
        .unwrap();
    assert!(
        (f64::from(got) - want).abs() <= 1e-5 * want,
        "loss {got} vs f64 {want}"
    );
    let mut closure = |_p: &Params| -> zograd::Result<f32> {
        app.gpu.read_f32_after(app.record(None), &app.out, 0)
    };
    assert_eq!(closure.loss(&x).unwrap(), got);

    invalid_naming(
        app.gpu.read_f32_after(app.record(None), &app.out, 2),
        &["offset", "2"],
    );
    invalid_naming(
        app.gpu.read_f32_after(app.record(None), &app.out, 4),
        &["offset", "4"],
    );
    let no_copy_src = app.gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 16,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    invalid_naming(
        app.gpu.read_f32_after(app.record(None), &no_copy_src, 0),
        &["buffer", "COPY_SRC"],
    );
    // A mistake in the recorded work, outside any zograd call, on the adopted device (whose
    // default handler would panic): an error.
    match app
        .gpu
        .read_f32_after(app.record(Some(&app.mismatched_group())), &app.out, 0)
    {
        Err(Error::Validation(_)) => {}
        other => panic!("an invalid bind group gave {other:?}"),
    }
    // The device is fine afterwards.
    assert_eq!(
        app.gpu
            .read_f32_after(app.record(None), &app.out, 0)
            .unwrap(),
        got
    );
}

/// `from_steps` checks its steps and output.
#[test]
fn bad_steps_are_invalid_arguments() {
    let _s = serial();
    let (app, _x) = App::new();
    let gpu = &app.gpu;
    invalid_naming(
        ShaderObjective::from_steps(gpu, vec![], (&app.out, 0)),
        &["steps"],
    );
    let mut steps = app.steps();
    let max = gpu.limits().max_compute_workgroups_per_dimension;
    steps.push(Step::dispatch(
        &app.frame,
        &[&app.frame_groups[0]],
        [max + 1, 1, 1],
    ));
    invalid_naming(
        ShaderObjective::from_steps(gpu, steps, (&app.out, 0)),
        &["steps", "step 9", &(max + 1).to_string()],
    );
    let misaligned = Step::Copy {
        from: app.initial.clone(),
        from_offset: 2,
        to: app.state[0].clone(),
        to_offset: 0,
        bytes: 8,
    };
    invalid_naming(
        ShaderObjective::from_steps(gpu, vec![misaligned], (&app.out, 0)),
        &["steps", "step 0", "multiples of 4"],
    );
    let past_end = Step::Copy {
        from: app.initial.clone(),
        from_offset: 0,
        to: app.state[0].clone(),
        to_offset: 4,
        bytes: 4 * N as u64,
    };
    invalid_naming(
        ShaderObjective::from_steps(gpu, vec![past_end], (&app.out, 0)),
        &["steps", "step 0", "inside"],
    );
    // `initial` has no COPY_DST.
    let into_initial = Step::copy(&app.state[0], &app.initial);
    invalid_naming(
        ShaderObjective::from_steps(gpu, vec![into_initial], (&app.out, 0)),
        &["steps", "COPY_DST"],
    );
    invalid_naming(
        ShaderObjective::from_steps(gpu, app.steps(), (&app.out, 4)),
        &["offset", "4"],
    );
}

/// A validation error in the application's own work inside a loss, on an adopted device:
/// `Error::Validation` from the step, the parameters restored (bit-exactly by Fdm, within f32
/// rounding by MeZO's in-place restore), the step not counted, and the next step works.
#[test]
fn a_validation_error_inside_a_loss_on_an_adopted_device_is_an_error() {
    let _s = serial();
    let (app, mut x) = App::new();
    let gpu = app.gpu.clone();
    let fdm = Optimizer::new(&gpu, &x, Fdm::new().h(1e-3))
        .unwrap()
        .then(Lr::new(1e-3));
    let mezo = Optimizer::new(&gpu, &x, MeZo::new().h(1e-3).seed(3))
        .unwrap()
        .then(Lr::new(1e-3));
    for (name, mut opt, exact) in [("Fdm", fdm, true), ("MeZo fused", mezo, false)] {
        let before = x.to_vec().unwrap();
        let mut calls = 0u32;
        let mut loss = |_p: &Params| -> zograd::Result<f32> {
            calls += 1;
            // The second evaluation of the step creates a bind group wgpu refuses.
            let bad = (calls == 2).then(|| app.unusable_group());
            app.gpu
                .read_f32_after(app.record(bad.as_ref()), &app.out, 0)
        };
        match opt.step(&mut x, &mut loss) {
            Err(Error::Validation(msg)) => assert!(!msg.is_empty(), "{name}"),
            other => panic!("{name}: a bad bind group inside the loss gave {other:?}"),
        }
        let after = x.to_vec().unwrap();
        for (a, b) in after.iter().zip(&before) {
            if exact {
                assert_eq!(a.to_bits(), b.to_bits(), "{name}: restored bit-exactly");
            } else {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{name}: {a} vs {b}"
                );
            }
        }
        assert_eq!(opt.steps(), 0, "{name}: the failed step is not counted");
        // The next step works and moves x.
        let r = opt.step(&mut x, &mut loss).unwrap();
        assert_eq!(r.step, 1, "{name}");
        assert_ne!(x.to_vec().unwrap(), before, "{name}: the step moved x");
    }
}

/// With the opt-in, a lost adopted device is reported as `Error::DeviceLost` by the step whose
/// loss destroyed it and by every later call.
#[test]
fn watch_device_loss_reports_a_lost_adopted_device() {
    let _s = serial();
    let (device, queue) = app_device();
    let gpu = Gpu::from_wgpu(device, queue).unwrap().watch_device_loss();
    let mut x = Params::from_slices(&gpu, &[&[1.0f32, 2.0, 3.0][..]]).unwrap();
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))
        .unwrap()
        .then(Lr::new(0.01));
    let mut calls = 0u32;
    let mut loss = |p: &Params| -> zograd::Result<f32> {
        calls += 1;
        if calls == 4 {
            p.gpu().device().destroy();
        }
        Ok(p.to_vec()?.iter().map(|v| v * v).sum())
    };
    opt.step(&mut x, &mut loss).unwrap();
    let lost = |r: zograd::Result<()>, what: &str| match r {
        Err(Error::DeviceLost(_)) => {}
        other => panic!("{what} gave {other:?}"),
    };
    lost(
        opt.step(&mut x, &mut loss).map(drop),
        "the step whose loss destroyed the device",
    );
    assert_eq!(opt.steps(), 1);
    lost(x.to_vec().map(drop), "to_vec");
    lost(opt.step(&mut x, &mut loss).map(drop), "the next step");
    lost(gpu.wait(), "wait");
}

/// `Optimizer::measure_loss(true)`: `StepReport::loss` and `loss_approx` are f(x) at the step's
/// start point (checked against Σ (xᵢ − cᵢ)² in f64 of the x read before the step), counted as
/// one evaluation; a forward formula takes the measured value as its f₀ (no extra evaluation);
/// off by default, where a central estimate reports a perturbed value.
#[test]
fn measure_loss_reports_f_at_the_start_point() {
    use zograd::approx::{Formula, Spsa};
    let _s = serial();
    let gpu = common::gpu();
    let c = common::data(21, 64);
    let x0: Vec<f32> = common::data(22, 64).iter().map(|v| v * 3.0).collect();
    let f64_loss = |x: &[f32]| -> f64 {
        x.iter()
            .zip(&c)
            .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
            .sum()
    };
    let loss = |p: &Params| -> zograd::Result<f32> {
        Ok(p.to_vec()?
            .iter()
            .zip(&c)
            .map(|(a, b)| (a - b) * (a - b))
            .sum())
    };
    let build = |case: usize, x: &Params, measure: bool| match case {
        0 => opt_of(&gpu, x, MeZo::new().h(0.5).seed(1), true, measure),
        1 => opt_of(&gpu, x, Spsa::new().h(0.5).seed(1), false, measure),
        _ => {
            let forward = Spsa::new().h(0.5).formula(Formula::Forward).seed(1);
            opt_of(&gpu, x, forward, false, measure)
        }
    };
    // (name, evaluations per step without / with measure_loss)
    let cases = [
        ("MeZo fused, central", 2, 3),
        ("Spsa unfused, central", 2, 3),
        ("Spsa unfused, forward (f₀ reused)", 2, 2),
    ];
    for (case, (name, plain_evals, measured_evals)) in cases.into_iter().enumerate() {
        for measure in [false, true] {
            let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
            let mut opt = build(case, &x, measure);
            let mut l = loss;
            for k in 0..3 {
                let start = x.to_vec().unwrap();
                let want = f64_loss(&start);
                let r = opt.step(&mut x, &mut l).unwrap();
                let what = format!("{name}, measure_loss({measure}), step {k}");
                if measure {
                    assert_eq!(r.evaluations, measured_evals, "{what}");
                    let got = f64::from(r.loss.expect("measured"));
                    assert!((got - want).abs() <= 1e-5 * want, "{what}: {got} vs {want}");
                    assert_eq!(r.loss_approx, r.loss, "{what}");
                } else {
                    assert_eq!(r.evaluations, plain_evals, "{what}");
                    if name.contains("central") {
                        assert_eq!(r.loss, None, "{what}: a central estimate never sees f(x)");
                        // ... and its loss_approx is a perturbed value, here far from f(x).
                        let approx = f64::from(r.loss_approx.expect("a perturbed value"));
                        assert!(
                            (approx - want).abs() > 1e-2 * want,
                            "{what}: {approx} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

fn opt_of<A: zograd::approx::GradApproximator + Send + 'static>(
    gpu: &Gpu,
    x: &Params,
    approximator: A,
    fuse: bool,
    measure: bool,
) -> Optimizer {
    Optimizer::new(gpu, x, approximator)
        .unwrap()
        .fuse(fuse)
        .measure_loss(measure)
        .then(Lr::new(1e-3))
}
