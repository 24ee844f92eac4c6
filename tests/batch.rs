// SPDX-License-Identifier: MIT OR Apache-2.0
//! `BatchObjective`: virtual evaluation of whole batches of perturbed points in one dispatch.
//! The batched losses must equal the sequential perturb–evaluate–restore losses, and the
//! estimators must give the same estimate with and without batching.

mod common;

use zograd::approx::{GradApproximator, MeZo, Spsa};
use zograd::kernels::{perturb, Direction};
use zograd::{BatchObjective, Binding, Distribution, Error, Gpu, Objective, Params, Workgroups};

/// Elements per workgroup of the test loss (one per thread).
const WG: u32 = 64;

/// f(x) = Σ_i a_i·v_i² + 0.1·v_i³ with v = x + dz, over two parameter buffers (x0: elements
/// 0..n0, x1: n0..n0+n1 in global order), with a data buffer a. Pass 1: a partial sum per
/// workgroup and point; pass 2: one workgroup per point adds the partials in order.
const LOSS: &str = r#"
struct Dims { n0: u32, n1: u32, groups: u32, pad: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x0: array<f32>;
@group(0) @binding(2) var<storage, read> x1: array<f32>;
@group(0) @binding(3) var<storage, read> a: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
var<workgroup> sums: array<f32, 64>;

@compute @workgroup_size(64)
fn partials(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let p = wg.z;
    let i = wg.x * 64u + lid;
    var t = 0.0;
    if (i < dims.n0 + dims.n1) {
        var x = 0.0;
        if (i < dims.n0) { x = x0[i]; } else { x = x1[i - dims.n0]; }
        let v = x + zograd_dz(p, vec2<u32>(i, 0u));
        t = a[i] * v * v + 0.1 * v * v * v;
    }
    sums[lid] = t;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
        if (lid < s) { sums[lid] = sums[lid] + sums[lid + s]; }
        workgroupBarrier();
    }
    if (lid == 0u) { partial[p * dims.groups + wg.x] = sums[0]; }
}

@compute @workgroup_size(1)
fn finish(@builtin(workgroup_id) wg: vec3<u32>) {
    let p = wg.z;
    var t = 0.0;
    for (var g = 0u; g < dims.groups; g = g + 1u) {
        t = t + partial[p * dims.groups + g];
    }
    zograd_set_loss(p, t);
}
"#;

struct Fixture {
    x: Params,
    x0: Vec<f32>,
    a: Vec<f32>,
    objective: BatchObjective,
}

fn fixture(gpu: &Gpu, n0: usize, n1: usize, max_points: u32) -> Fixture {
    use wgpu::util::DeviceExt;
    let n = n0 + n1;
    let x0: Vec<f32> = common::data(1, n);
    let a: Vec<f32> = common::data(2, n).iter().map(|v| 1.0 + 0.5 * v).collect();
    let x = Params::from_slices(gpu, &[&x0[..n0], &x0[n0..]]).unwrap();
    let groups = (n as u32).div_ceil(WG);
    let d = gpu.device();
    let dims = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("dims"),
        contents: bytemuck::cast_slice(&[n0 as u32, n1 as u32, groups, 0]),
        usage: wgpu::BufferUsages::UNIFORM,
    });
    let abuf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("a"),
        contents: bytemuck::cast_slice(&a),
        usage: wgpu::BufferUsages::STORAGE,
    });
    let partial = d.create_buffer(&wgpu::BufferDescriptor {
        label: Some("partials"),
        size: 4 * u64::from(groups) * u64::from(max_points),
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let objective = BatchObjective::new(
        gpu,
        LOSS,
        &[
            Binding::Uniform(&dims),
            Binding::Read(&x.buffers()[0]),
            Binding::Read(&x.buffers()[1]),
            Binding::Read(&abuf),
            Binding::ReadWrite(&partial),
        ],
        &[
            ("partials", Workgroups::PerPoint([groups, 1])),
            ("finish", Workgroups::PerPoint([1, 1])),
        ],
        max_points,
    )
    .unwrap();
    Fixture {
        x,
        x0,
        a,
        objective,
    }
}

/// The loss on the CPU, in f64.
fn cpu_loss(x: &[f32], a: &[f32]) -> f64 {
    x.iter()
        .zip(a)
        .map(|(x, a)| {
            let v = f64::from(*x);
            f64::from(*a) * v * v + 0.1 * v * v * v
        })
        .sum()
}

/// Hides `loss_batch`: the estimators then perturb x in place, one point at a time.
struct OneAtATime<'a>(&'a mut BatchObjective);

impl Objective for OneAtATime<'_> {
    fn loss(&mut self, params: &Params) -> zograd::Result<f32> {
        self.0.loss(params)
    }
}

fn dir(distribution: Distribution, sample: u32) -> Direction {
    Direction {
        distribution,
        seed: 0x1234_5678_9abc,
        step: 3,
        sample,
    }
}

#[test]
fn unperturbed_loss_matches_the_cpu() {
    let gpu = common::gpu();
    let mut f = fixture(&gpu, 700, 1301, 4);
    let want = cpu_loss(&f.x0, &f.a);
    let got = f64::from(f.objective.loss(&f.x).unwrap());
    assert!((got - want).abs() <= 1e-5 * want.abs(), "{got} vs {want}");
    assert_eq!((f.objective.evaluations(), f.objective.readbacks()), (1, 1));
}

#[test]
fn batched_losses_equal_sequential_perturb_evaluate_restore() {
    let gpu = common::gpu();
    let mut f = fixture(&gpu, 1000, 2333, 16);
    let n = f.x.len();
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
        Distribution::Sphere,
    ] {
        let points: Vec<(Direction, f32)> = (0..6)
            .flat_map(|s| [(dir(dist, s), 0.01), (dir(dist, s), -0.01)])
            .chain([(dir(dist, 9), 0.0), (dir(dist, 2), 0.25)])
            .collect();
        let before = f.objective.readbacks();
        let batched = f.objective.loss_batch(&mut f.x, &points).unwrap();
        assert_eq!(f.objective.readbacks() - before, 1, "{dist}: one readback");
        assert_eq!(f.x.to_vec().unwrap(), f.x0, "{dist}: x never written");
        for (k, (d, scale)) in points.iter().enumerate() {
            perturb(&mut f.x, d, *scale).unwrap();
            let seq = f.objective.loss(&f.x).unwrap();
            f.x.write(&f.x0).unwrap();
            let tol = 2e-6 * seq.abs().max(1.0);
            assert!(
                (batched[k] - seq).abs() <= tol,
                "{dist}, point {k}: batched {} vs sequential {seq}",
                batched[k]
            );
            // And against the CPU twin of the perturbation.
            let mut y = f.x0.clone();
            zograd::cpu::perturb(&mut y, 0, d, *scale, n);
            let want = cpu_loss(&y, &f.a);
            assert!(
                (f64::from(batched[k]) - want).abs() <= 1e-5 * want.abs(),
                "{dist}, point {k}: batched {} vs cpu {want}",
                batched[k]
            );
        }
    }
}

#[test]
fn mixed_and_oversized_batches_run_as_several_dispatches_with_one_readback() {
    let gpu = common::gpu();
    let mut f = fixture(&gpu, 300, 211, 3);
    let mut points = Vec::new();
    for (k, dist) in [
        Distribution::Gaussian,
        Distribution::Rademacher,
        Distribution::Uniform,
    ]
    .into_iter()
    .enumerate()
    {
        for s in 0..(2 + k as u32 * 2) {
            let mut d = dir(dist, s);
            d.seed += k as u64;
            points.push((d, 0.05 * (s as f32 + 1.0)));
        }
    }
    let batched = f.objective.loss_batch(&mut f.x, &points).unwrap();
    assert_eq!(f.objective.readbacks(), 1);
    for (k, p) in points.iter().enumerate() {
        let one = f.objective.loss_batch(&mut f.x, &[*p]).unwrap()[0];
        assert_eq!(batched[k], one, "point {k}");
    }
    assert!(f.objective.loss_batch(&mut f.x, &[]).unwrap().is_empty());
    let err = f
        .objective
        .loss_batch(&mut f.x, &[(dir(Distribution::Rademacher, 0), f32::NAN)])
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.contains("points[0]")),
        "{err}"
    );
}

#[test]
fn spsa_estimate_is_the_same_batched_and_one_at_a_time() {
    let gpu = common::gpu();
    let mut f = fixture(&gpu, 1500, 1500, 16);
    let mut g_batched = f.x.zeros_like().unwrap();
    let mut g_seq = f.x.zeros_like().unwrap();
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
    ] {
        let est = || Spsa::new().n_samples(8).h(1e-2).distribution(dist).seed(77);
        let before = f.objective.readbacks();
        let mut batched = est();
        batched.pre_step();
        let eb = batched
            .approximate(&gpu, &mut f.x, &mut f.objective, &mut g_batched)
            .unwrap();
        assert_eq!(eb.evaluations, 16);
        assert_eq!(
            f.objective.readbacks() - before,
            1,
            "{dist}: all 16 points in one readback"
        );
        assert_eq!(f.x.to_vec().unwrap(), f.x0, "{dist}: x never written");
        let mut seq = est();
        seq.pre_step();
        let es = seq
            .approximate(
                &gpu,
                &mut f.x,
                &mut OneAtATime(&mut f.objective),
                &mut g_seq,
            )
            .unwrap();
        assert_eq!(es.evaluations, 16);
        f.x.write(&f.x0).unwrap();
        let (b, s) = (g_batched.to_vec().unwrap(), g_seq.to_vec().unwrap());
        let diff = b
            .iter()
            .zip(&s)
            .map(|(b, s)| f64::from(b - s).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = s.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        // The directional derivatives are differences of f32 losses of ~3e3 divided by 2h:
        // their rounding (a few 1e-4) shows at the 1e-5 level relative to ‖g‖.
        assert!(
            diff <= 1e-4 * norm,
            "{dist}: ‖g_batched − g_seq‖ = {diff} vs ‖g‖ = {norm}"
        );
    }
}

#[test]
fn fused_mezo_steps_are_the_same_batched_and_in_place() {
    let gpu = common::gpu();
    let mut f = fixture(&gpu, 512, 512, 4);
    let optimizer = |x: &Params| {
        zograd::optim::Optimizer::new(&gpu, x, MeZo::new().seed(5).h(1e-2))
            .unwrap()
            .then(zograd::optim::Lr::new(1e-4))
    };
    let mut batched = optimizer(&f.x);
    let mut losses = Vec::new();
    for _ in 0..3 {
        let r = batched.step(&mut f.x, &mut f.objective).unwrap();
        assert_eq!(r.evaluations, 2);
        losses.push(r.loss_approx.unwrap());
    }
    assert_eq!(f.objective.readbacks(), 3, "one readback per batched step");
    let after_batched = f.x.to_vec().unwrap();
    f.x.write(&f.x0).unwrap();
    let mut seq = optimizer(&f.x);
    for want in losses {
        let r = seq
            .step(&mut f.x, &mut OneAtATime(&mut f.objective))
            .unwrap();
        let got = r.loss_approx.unwrap();
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "f(x + hz): {got} vs {want}"
        );
    }
    common::assert_close(
        &after_batched,
        &f.x.to_vec().unwrap(),
        1e-5,
        1e-5,
        "x after 3 fused MeZO steps, batched vs in place",
    );
}

#[test]
fn constructor_checks_arguments() {
    let gpu = common::gpu();
    let x = Params::from_slices(&gpu, &[&[1.0f32; 4][..]]).unwrap();
    let src = "@group(0) @binding(0) var<storage, read> x: array<f32>;
        @compute @workgroup_size(1) fn main() { zograd_set_loss(0u, x[0]); }";
    let bind = [Binding::Read(&x.buffers()[0])];
    let pass = [("main", Workgroups::Fixed([1, 1, 1]))];
    assert!(matches!(
        BatchObjective::new(&gpu, src, &bind, &[], 4),
        Err(Error::InvalidArgument(m)) if m.starts_with("passes")
    ));
    assert!(matches!(
        BatchObjective::new(&gpu, src, &bind, &pass, 0),
        Err(Error::InvalidArgument(m)) if m.starts_with("max_points")
    ));
    assert!(matches!(
        BatchObjective::new(&gpu, "fn broken(", &bind, &pass, 4),
        Err(Error::Validation(_))
    ));
    let mut ok = BatchObjective::new(&gpu, src, &bind, &pass, 4).unwrap();
    assert_eq!(ok.evaluate().unwrap(), 1.0);
    assert!(ok.has_batch());
}
