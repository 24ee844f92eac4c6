// SPDX-License-Identifier: MIT OR Apache-2.0
//! Host overhead at the floor (README, "Performance"): after the first steps, an optimiser step creates
//! no buffer, bind group, layout, shader module or pipeline, maps one staging buffer and waits
//! for the GPU once per loss evaluation (once per batch with `loss_batch`), and nowhere else.
//!
//! The calls are counted from wgpu-core's own API log records (`Device::create_buffer`,
//! `Buffer::map_async`, `Device::poll Wait…`, …), on the test's thread only.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;

use zograd::approx::{MeZo, Spsa};
use zograd::kernels::dot;
use zograd::optim::{Lr, Optimizer};
use zograd::wgpu;
use zograd::{BatchObjective, Binding, Objective, Params, ShaderObjective, Workgroups};

thread_local! {
    static COUNTS: RefCell<Option<BTreeMap<&'static str, u32>>> = const { RefCell::new(None) };
}

struct Counter;

/// The wgpu-core API calls counted, by the prefix of their log message.
const CALLS: [(&str, &str); 11] = [
    ("Device::create_buffer(", "create_buffer"),
    ("Device::create_bind_group ", "create_bind_group"),
    (
        "Device::create_bind_group_layout ",
        "create_bind_group_layout",
    ),
    ("Device::create_pipeline_layout", "create_pipeline_layout"),
    (
        "Device::create_compute_pipeline ",
        "create_compute_pipeline",
    ),
    ("Device::create_shader_module ", "create_shader_module"),
    ("Device::create_command_encoder ", "create_command_encoder"),
    ("Queue::submit", "submit"),
    ("Queue::write_buffer", "write_buffer"),
    ("Buffer::map_async ", "map_async"),
    ("Device::poll ", "poll"),
];

impl log::Log for Counter {
    fn enabled(&self, meta: &log::Metadata<'_>) -> bool {
        meta.target().starts_with("wgpu_core")
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        COUNTS.with(|c| {
            let mut c = c.borrow_mut();
            let Some(map) = c.as_mut() else { return };
            let msg = record.args().to_string();
            for (prefix, name) in CALLS {
                if msg.starts_with(prefix) && !msg.starts_with("Queue::submit returned") {
                    let name = if name == "poll" && msg.contains("Wait") {
                        "poll_wait"
                    } else {
                        name
                    };
                    *map.entry(name).or_default() += 1;
                }
            }
        });
    }

    fn flush(&self) {}
}

fn install() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Counter).expect("no other logger in this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// The tests of this binary share one `Gpu` (`common::gpu`), and with it its staging-buffer
/// pool and bind-group cache: a readback on another test's thread can hold the staging buffer
/// this thread would reuse, which makes this thread create one. The counts are per thread but
/// those pools are not, so the tests take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the turn of the calling test until it returns (a failed test's poisoned turn is
/// still handed on).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// The wgpu calls `f` makes on this thread.
fn count(f: impl FnOnce()) -> BTreeMap<&'static str, u32> {
    install();
    COUNTS.with(|c| *c.borrow_mut() = Some(BTreeMap::new()));
    f();
    COUNTS.with(|c| c.borrow_mut().take().expect("counting"))
}

fn get(m: &BTreeMap<&str, u32>, k: &str) -> u32 {
    m.get(k).copied().unwrap_or(0)
}

fn assert_nothing_created(m: &BTreeMap<&str, u32>, what: &str) {
    for k in [
        "create_buffer",
        "create_bind_group",
        "create_bind_group_layout",
        "create_pipeline_layout",
        "create_compute_pipeline",
        "create_shader_module",
    ] {
        assert_eq!(get(m, k), 0, "{what}: {k} after the first steps ({m:?})");
    }
}

/// f(x) = Σ xᵢ² as a one-thread batch shader (enough for counting calls).
fn batch_loss(gpu: &zograd::Gpu, x: &Params) -> BatchObjective {
    let n = x.len();
    let src = format!(
        "@group(0) @binding(0) var<storage, read> x: array<f32>;
        @compute @workgroup_size(1) fn main(@builtin(workgroup_id) wg: vec3<u32>) {{
            var s = 0.0;
            for (var i = 0u; i < {n}u; i++) {{
                let v = x[i] + zograd_dz(wg.z, vec2<u32>(i, 0u));
                s += v * v;
            }}
            zograd_set_loss(wg.z, s);
        }}"
    );
    BatchObjective::new(
        gpu,
        &src,
        &[Binding::Read(&x.buffers()[0])],
        &[("main", Workgroups::PerPoint([1, 1]))],
        16,
    )
    .unwrap()
}

#[test]
fn optimiser_steps_create_nothing_and_wait_once_per_readback() {
    let _turn = serial();
    let gpu = common::gpu();
    let data = common::data(3, 1000);
    let mut x = Params::from_slices(&gpu, &[&data[..]]).unwrap();
    let mut closure = |p: &Params| -> zograd::Result<f32> { Ok(dot(p, p)? as f32) };
    // The counter sees creations: building the objective compiles its pipeline.
    let mut slot = None;
    let made = count(|| slot = Some(batch_loss(&gpu, &x)));
    assert!(get(&made, "create_compute_pipeline") >= 1, "{made:?}");
    assert!(get(&made, "create_buffer") >= 3, "{made:?}");
    let mut batched = slot.expect("built");
    let steps = 5u32;
    let mut report = Vec::new();

    // (name, optimiser, batched objective?, loss evaluations per step, readbacks per step,
    // submissions per step at most: a closure's own work one each, the pending perturbation
    // submitted before each closure call, the update at the end of the step (the caller may
    // evaluate the closure next), every other kernel one; a BatchObjective's dispatch, its
    // readback and the pending launches together one)
    let cases: Vec<(&str, Optimizer, bool, u32, u32, u32)> = vec![
        (
            "MeZo fused, closure",
            Optimizer::new(&gpu, &x, MeZo::new().seed(1))
                .unwrap()
                .then(Lr::new(1e-3)),
            false,
            2,
            2,
            5,
        ),
        (
            "MeZo fused, BatchObjective",
            Optimizer::new(&gpu, &x, MeZo::new().seed(1))
                .unwrap()
                .then(Lr::new(1e-3)),
            true,
            2,
            1,
            1,
        ),
        (
            "Spsa S=4, closure",
            Optimizer::new(&gpu, &x, Spsa::new().n_samples(4).seed(1))
                .unwrap()
                .then(Lr::new(1e-3)),
            false,
            8,
            8,
            24,
        ),
        (
            "Spsa S=4, BatchObjective",
            Optimizer::new(&gpu, &x, Spsa::new().n_samples(4).seed(1))
                .unwrap()
                .then(Lr::new(1e-3)),
            true,
            8,
            1,
            5,
        ),
    ];
    for (name, mut opt, use_batch, evals, readbacks, submits) in cases {
        let objective: &mut dyn Objective = if use_batch {
            &mut batched
        } else {
            &mut closure
        };
        // Warm-up: the first steps compile pipelines and create the cached state.
        for _ in 0..2 {
            opt.step(&mut x, objective).unwrap();
        }
        let m = count(|| {
            for _ in 0..steps {
                let r = opt.step(&mut x, objective).unwrap();
                assert_eq!(r.evaluations, evals, "{name}");
            }
        });
        assert_nothing_created(&m, name);
        assert_eq!(
            get(&m, "map_async"),
            readbacks * steps,
            "{name}: one map per readback ({m:?})"
        );
        assert_eq!(
            get(&m, "poll_wait"),
            readbacks * steps,
            "{name}: one blocking poll per readback ({m:?})"
        );
        assert!(
            get(&m, "submit") <= submits * steps,
            "{name}: at most {submits} submissions per step ({m:?})"
        );
        if name == "MeZo fused, BatchObjective" {
            // Issue 16 §3: ONE submission per step: the dispatch of both points, the readback
            // of their losses and the previous step's fused update, which was left pending.
            assert_eq!(get(&m, "submit"), steps, "{name}: {m:?}");
        }
        report.push(format!(
            "{name}: per step {} submits, {} write_buffer, {} encoders, {} maps, {} waits, {} non-blocking polls",
            f64::from(get(&m, "submit")) / f64::from(steps),
            f64::from(get(&m, "write_buffer")) / f64::from(steps),
            f64::from(get(&m, "create_command_encoder")) / f64::from(steps),
            f64::from(get(&m, "map_async")) / f64::from(steps),
            f64::from(get(&m, "poll_wait")) / f64::from(steps),
            f64::from(get(&m, "poll")) / f64::from(steps),
        ));
    }
    // `cargo test --test host_overhead -- --nocapture` shows the per-step call counts.
    for line in report {
        println!("{line}");
    }
}

/// f(x) = Σ xᵢ² as a `ShaderObjective` (one pass, one thread: enough for counting calls).
fn shader_loss(gpu: &zograd::Gpu, x: &Params) -> ShaderObjective {
    let out = ShaderObjective::loss_buffer(gpu, 1).unwrap();
    let n = x.len();
    let src = format!(
        "@group(0) @binding(0) var<storage, read> x: array<f32>;
        @group(0) @binding(1) var<storage, read_write> out: array<f32>;
        @compute @workgroup_size(1) fn main() {{
            var s = 0.0;
            for (var i = 0u; i < {n}u; i++) {{
                s += x[i] * x[i];
            }}
            out[0] = s;
        }}"
    );
    ShaderObjective::new(
        gpu,
        &src,
        &[Binding::Read(&x.buffers()[0]), Binding::ReadWrite(&out)],
        &[("main", [1, 1, 1])],
        (&out, 0),
    )
    .unwrap()
}

/// Issue 16 §3: a fused MeZO step with a `ShaderObjective` loss (x perturbed in place) makes
/// TWO submissions, one per evaluation: the perturbation +h with f₊'s pass and readback, the
/// perturbation −2h with f₋'s; the fused restore-and-update is left pending and joins the next
/// step's first submission (five submissions per step before). One map and one wait per
/// evaluation. The loss is checked against Σ xᵢ² in f64, the steps against the same steps
/// submitted kernel by kernel.
#[test]
fn shader_objective_mezo_step_submissions() {
    let _turn = serial();
    let gpu = common::gpu();
    let data = common::data(5, 1000);
    let mut x = Params::from_slices(&gpu, &[&data[..]]).unwrap();
    let mut loss = shader_loss(&gpu, &x);
    let want: f64 = data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let got = f64::from(loss.loss(&x).unwrap());
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))
        .unwrap()
        .then(Lr::new(1e-3));
    for _ in 0..2 {
        opt.step(&mut x, &mut loss).unwrap();
    }
    let steps = 4u32;
    let m = count(|| {
        for _ in 0..steps {
            assert_eq!(opt.step(&mut x, &mut loss).unwrap().evaluations, 2);
        }
    });
    assert_nothing_created(&m, "MeZo fused, ShaderObjective");
    assert_eq!(get(&m, "map_async"), 2 * steps, "{m:?}");
    assert_eq!(get(&m, "poll_wait"), 2 * steps, "{m:?}");
    assert_eq!(get(&m, "submit"), 2 * steps, "{m:?}");
    println!(
        "MeZo fused, ShaderObjective: per step {} submits, {} write_buffer",
        f64::from(get(&m, "submit")) / f64::from(steps),
        f64::from(get(&m, "write_buffer")) / f64::from(steps)
    );

    // The same 6 steps from the same start, the same shader loss behind an objective of the
    // user's (so every launch is submitted before each call, one submission per kernel as
    // before): bit for bit the same parameters. A launch that ran out of order, or read the
    // uniforms of another launch recorded into the same submission, would not be.
    let mut y = Params::from_slices(&gpu, &[&data[..]]).unwrap();
    let mut twin_loss = shader_loss(&gpu, &y);
    let mut twin = Optimizer::new(&gpu, &y, MeZo::new().seed(1))
        .unwrap()
        .then(Lr::new(1e-3));
    let m = count(|| {
        for _ in 0..2 + steps {
            twin.step(&mut y, &mut Foreign(&mut twin_loss)).unwrap();
        }
    });
    assert!(get(&m, "submit") >= 4 * (2 + steps), "{m:?}");
    let (xs, ys) = (x.to_vec().unwrap(), y.to_vec().unwrap());
    assert_ne!(xs, data, "the steps moved x");
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&xs), bits(&ys), "recorded vs submitted one by one");

    // With exact_restore: the saved copy of x and the restore by copy are recorded too.
    let mut exact = Optimizer::new(&gpu, &x, MeZo::new().seed(2).exact_restore(true))
        .unwrap()
        .then(Lr::new(1e-3));
    for _ in 0..2 {
        exact.step(&mut x, &mut loss).unwrap();
    }
    let m = count(|| {
        for _ in 0..steps {
            exact.step(&mut x, &mut loss).unwrap();
        }
    });
    assert_nothing_created(&m, "MeZo fused exact, ShaderObjective");
    assert_eq!(get(&m, "submit"), 2 * steps, "exact_restore: {m:?}");
}

/// An objective of the user's that evaluates zograd's `ShaderObjective` (zograd submits its
/// pending launches before every call, as for any objective not its own).
struct Foreign<'a>(&'a mut ShaderObjective);

impl Objective for Foreign<'_> {
    fn loss(&mut self, params: &Params) -> zograd::Result<f32> {
        self.0.loss(params)
    }
}

/// A closure that records its pass into an encoder and reads the loss with
/// `Gpu::read_f32_after` costs ONE submission and one wait per evaluation (the same closure
/// submitting its own work and then calling `read_f32s` costs two submissions), also inside an
/// optimiser step, where each evaluation runs inside zograd's error scopes.
#[test]
fn recording_closures_submit_once_per_evaluation() {
    let _turn = serial();
    let gpu = common::gpu();
    let data = common::data(5, 257);
    let mut x = Params::from_slices(&gpu, &[&data[..]]).unwrap();
    let out = zograd::ShaderObjective::loss_buffer(&gpu, 1).unwrap();
    let device = gpu.device();
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("sum of squares"),
        source: wgpu::ShaderSource::Wgsl(
            "@group(0) @binding(0) var<storage, read> x: array<f32>;
            @group(0) @binding(1) var<storage, read_write> out: array<f32>;
            @compute @workgroup_size(1) fn main() {
                var s = 0.0;
                for (var i = 0u; i < arrayLength(&x); i++) { s += x[i] * x[i]; }
                out[0] = s;
            }"
            .into(),
        ),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("sum of squares"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
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
    });
    let record = || {
        let mut encoder = gpu.device().create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &group, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        encoder
    };
    let mut one = |_p: &Params| -> zograd::Result<f32> { gpu.read_f32_after(record(), &out, 0) };
    let mut two = |_p: &Params| -> zograd::Result<f32> {
        gpu.queue().submit([record().finish()]);
        Ok(gpu.read_f32s(&out, 0, 1)?[0])
    };
    // The value: Σ x² in f64.
    let want: f64 = data.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let got = f64::from(one.loss(&x).unwrap());
    assert!((got - want).abs() <= 1e-5 * want, "{got} vs {want}");
    assert_eq!(two.loss(&x).unwrap(), one.loss(&x).unwrap());
    let evals = 6u32;
    for (name, objective, per_eval) in [
        ("read_f32_after", &mut one as &mut dyn Objective, 1),
        ("submit + read_f32s", &mut two as &mut dyn Objective, 2),
    ] {
        let m = count(|| {
            for _ in 0..evals {
                objective.loss(&x).unwrap();
            }
        });
        assert_nothing_created(&m, name);
        assert_eq!(get(&m, "submit"), per_eval * evals, "{name}: {m:?}");
        assert_eq!(get(&m, "poll_wait"), evals, "{name}: {m:?}");
    }
    // In a fused MeZO step (perturb, f₊, perturb, f₋, update): the two evaluations are one
    // submission each, the pending perturbation is submitted before each closure call (the
    // closure may submit its own work, which must see it) and the update at the end of the
    // step (the caller may evaluate the closure next): five submissions.
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))
        .unwrap()
        .then(Lr::new(1e-3));
    for _ in 0..2 {
        opt.step(&mut x, &mut one).unwrap();
    }
    let steps = 4u32;
    let m = count(|| {
        for _ in 0..steps {
            assert_eq!(opt.step(&mut x, &mut one).unwrap().evaluations, 2);
        }
    });
    assert_nothing_created(&m, "MeZo fused, recording closure");
    assert_eq!(get(&m, "submit"), 5 * steps, "{m:?}");
    assert_eq!(get(&m, "poll_wait"), 2 * steps, "{m:?}");
}

/// Parameters that are a sub-range of a user's buffer (starting off the storage alignment) and
/// carry scales: after the first steps, the scaled kernels' bind groups are cached like the
/// plain ones (nothing created), the fused MeZO step with a closure costs at most five
/// submissions, and every evaluation one map and one wait.
#[test]
fn scaled_sub_range_steps_create_nothing() {
    let _turn = serial();
    let gpu = common::gpu();
    let block = gpu.device().create_buffer(&wgpu::BufferDescriptor {
        label: Some("user block"),
        size: 1100 * 4,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_SRC
            | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut x = Params::from_buffer_ranges(&gpu, vec![(block, 3..1003)]).unwrap();
    x.write(&common::data(3, 1000)).unwrap();
    let scales: Vec<f32> = (0..1000).map(|i| 1.0 + (i % 5) as f32).collect();
    x.set_scales(zograd::Scales::PerElement(scales)).unwrap();
    let mut closure = |p: &Params| -> zograd::Result<f32> { Ok(dot(p, p)? as f32) };
    let cases: Vec<(&str, Optimizer, u32, u32)> = vec![
        (
            "MeZo fused, scaled sub-range",
            Optimizer::new(&gpu, &x, MeZo::new().seed(1))
                .unwrap()
                .then(Lr::new(1e-3)),
            2,
            5,
        ),
        (
            "Spsa S=4 → Adam → Lr, scaled sub-range",
            Optimizer::new(&gpu, &x, Spsa::new().n_samples(4).seed(1))
                .unwrap()
                .then(zograd::optim::Adam::new())
                .then(Lr::new(1e-3)),
            8,
            25,
        ),
    ];
    let steps = 4u32;
    for (name, mut opt, evals, submits) in cases {
        for _ in 0..2 {
            opt.step(&mut x, &mut closure).unwrap();
        }
        let m = count(|| {
            for _ in 0..steps {
                assert_eq!(opt.step(&mut x, &mut closure).unwrap().evaluations, evals);
            }
        });
        assert_nothing_created(&m, name);
        assert_eq!(get(&m, "map_async"), evals * steps, "{name}: {m:?}");
        assert_eq!(get(&m, "poll_wait"), evals * steps, "{name}: {m:?}");
        assert!(get(&m, "submit") <= submits * steps, "{name}: {m:?}");
        println!(
            "{name}: per step {} submits",
            f64::from(get(&m, "submit")) / f64::from(steps)
        );
    }
}
