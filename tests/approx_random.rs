// SPDX-License-Identifier: MIT OR Apache-2.0
//! The random estimators against an f64 CPU recomputation with `zograd::rng::perturbation`,
//! their evaluation counts, direction bookkeeping (pre_generate, pre_step, beta), MeZO's
//! memory and reproducibility, and restoration after errors.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use zograd::approx::{
    Distribution, Estimate, Formula, ForwardGradient, GaussianSmoothing, GradApproximator, Jvp,
    MeZo, Objective, RandomizedFdm, Rdsa, Spsa,
};
use zograd::kernels::Direction;
use zograd::rng::{perturbation, sphere_norm};
use zograd::{Error, Params, Result};

const DISTRIBUTIONS: [Distribution; 4] = [
    Distribution::Rademacher,
    Distribution::Gaussian,
    Distribution::Uniform,
    Distribution::Sphere,
];

/// A smooth non-quadratic test loss, in f64 from the f32 parameters: Σ a_i (x_i − c_i)² +
/// 0.1 Σ x_i³, a_i = 1 + i mod 5, c_i = 0.1·(i mod 7).
fn loss_f64(x: &[f32]) -> f64 {
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let v = f64::from(*v);
            let a = 1.0 + (i % 5) as f64;
            let c = 0.1 * (i % 7) as f64;
            a * (v - c).powi(2) + 0.1 * v.powi(3)
        })
        .sum()
}

fn grad_f64(x: &[f32]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| {
            let v = f64::from(*v);
            let a = 1.0 + (i % 5) as f64;
            let c = 0.1 * (i % 7) as f64;
            2.0 * a * (v - c) + 0.3 * v * v
        })
        .collect()
}

fn loss32(x: &[f32]) -> f32 {
    loss_f64(x) as f32
}

/// Element i of direction `dir` over n elements, in f64 (Sphere rescaled by √n/‖z‖).
fn z(dir: &Direction, i: u64, n: u64) -> f64 {
    let v = f64::from(perturbation(
        dir.distribution,
        dir.seed,
        dir.step,
        dir.sample,
        i,
    ));
    if dir.distribution == Distribution::Sphere {
        v * (n as f64).sqrt() / sphere_norm(dir.seed, dir.step, dir.sample, n)
    } else {
        v
    }
}

/// The offsets of each formula in evaluation order, written out independently of the crate.
fn offsets(f: Formula) -> &'static [i32] {
    match f {
        Formula::Forward => &[1],
        Formula::Backward => &[-1],
        Formula::Central => &[1, -1],
        Formula::Forward3 => &[1, 2],
        Formula::Backward3 => &[-1, -2],
        Formula::Central4 => &[1, 2, -1, -2],
        Formula::Forward4 => &[1, 2, 3],
        Formula::Forward5 => &[1, 2, 3, 4],
        other => panic!("unexpected formula {other:?}"),
    }
}

/// The textbook formulas (ARCHITECTURE.md, "Formula table"), from f0 and the values at `offsets(f)`.
fn textbook(f: Formula, f0: f64, v: &[f64], h: f64) -> f64 {
    match f {
        Formula::Forward => (v[0] - f0) / h,
        Formula::Backward => (f0 - v[0]) / h,
        Formula::Central => (v[0] - v[1]) / (2.0 * h),
        Formula::Forward3 => (-3.0 * f0 + 4.0 * v[0] - v[1]) / (2.0 * h),
        Formula::Backward3 => (v[1] - 4.0 * v[0] + 3.0 * f0) / (2.0 * h),
        Formula::Central4 => (v[3] - 8.0 * v[2] + 8.0 * v[0] - v[1]) / (12.0 * h),
        Formula::Forward4 => (2.0 * v[2] - 9.0 * v[1] + 18.0 * v[0] - 11.0 * f0) / (6.0 * h),
        Formula::Forward5 => {
            (-3.0 * v[3] + 16.0 * v[2] - 36.0 * v[1] + 48.0 * v[0] - 25.0 * f0) / (12.0 * h)
        }
        other => panic!("unexpected formula {other:?}"),
    }
}

/// The CPU recomputation: the same in-place point sequence on a host copy of x (with
/// `zograd::cpu::perturb`, itself `perturbation`), the same loss, D_s in f64, and
/// g = (1/S) Σ D_s·post_s·u_s in f64. Returns g, a bound on the f32 noise of each element and
/// the first value of the last sample (loss_approx).
///
/// The noise bound: where GPU and CPU directions differ in the last bits (Gaussian, Sphere),
/// the points differ in the last bits and the f32 losses may round apart by an ulp each; D then
/// differs by up to 2·ε·|f|·Σ|w|/(denominator·h).
fn cpu_estimate(
    x0: &[f32],
    dirs: &[Direction],
    formula: Formula,
    h: f32,
    norms: Option<&[f64]>,
    exact: bool,
) -> (Vec<f64>, Vec<f64>, f64) {
    let n = x0.len() as u64;
    let mut x = x0.to_vec();
    let f0 = loss_f64(x0) as f32;
    let mut g = vec![0.0f64; x0.len()];
    let mut noise = vec![0.0f64; x0.len()];
    let gain = f64::from(
        formula.weights().iter().map(|w| w.abs()).sum::<i32>() + formula.f0_weight().abs(),
    ) / (f64::from(formula.denominator()) * f64::from(h));
    let mut last_first = 0.0;
    for (s, dir) in dirs.iter().enumerate() {
        let (unit, post) = match norms {
            Some(nu) => ((f64::from(h) / nu[s]) as f32, nu[s]),
            None => (h, 1.0),
        };
        let mut at = 0;
        let mut values = Vec::new();
        for &k in offsets(formula) {
            zograd::cpu::perturb(&mut x, 0, dir, (k - at) as f32 * unit, n);
            at = k;
            values.push(f64::from(loss32(&x)));
        }
        if exact {
            x = x0.to_vec();
        } else {
            zograd::cpu::perturb(&mut x, 0, dir, -at as f32 * unit, n);
        }
        last_first = values[0];
        let d = textbook(formula, f64::from(f0), &values, f64::from(h)) * post;
        let fmax = values
            .iter()
            .fold(f64::from(f0).abs(), |m, v| m.max(v.abs()));
        let dd = 2.0 * f64::from(f32::EPSILON) * fmax * gain * post;
        for (i, gi) in g.iter_mut().enumerate() {
            let zi = z(dir, i as u64, n);
            *gi += d / dirs.len() as f64 * zi;
            noise[i] += dd / dirs.len() as f64 * zi.abs();
        }
    }
    (g, noise, last_first)
}

fn assert_matches_cpu(gpu_g: &[f32], cpu_g: &[f64], noise: &[f64], what: &str) {
    let scale = cpu_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    assert!(scale > 0.1, "{what}: degenerate estimate");
    for (i, (a, b)) in gpu_g.iter().zip(cpu_g).enumerate() {
        let tol = 2e-5 * scale + 1e-5 * b.abs() + noise[i];
        assert!(
            (f64::from(*a) - b).abs() <= tol,
            "{what}: g[{i}] gpu {a} vs cpu {b} (tol {tol:e})"
        );
    }
}

fn setup(n: usize, seed: u64) -> (zograd::Gpu, Vec<f32>, Params, Params) {
    let gpu = common::gpu();
    let x0 = common::data(seed, n);
    let x = Params::from_slices(&gpu, &common::split(&x0, &[n / 3, n / 3])).unwrap();
    let g = x.zeros_like().unwrap();
    (gpu, x0, x, g)
}

fn host_loss() -> impl FnMut(&Params) -> Result<f32> {
    |p: &Params| Ok(loss32(&p.to_vec()?))
}

#[test]
fn randomized_fdm_equals_the_cpu_recomputation_for_every_formula_and_distribution() {
    let (gpu, x0, mut x, mut g) = setup(70, 1);
    let mut loss = host_loss();
    for dist in DISTRIBUTIONS {
        for formula in Formula::ALL {
            assert_eq!(formula.offsets(), offsets(formula), "{formula}: offsets");
            let what = format!("RandomizedFdm {formula} {dist}");
            let mut est = RandomizedFdm::new()
                .h(0.05)
                .n_samples(3)
                .formula(formula)
                .distribution(dist)
                .seed(0x1234_5678_9abc)
                .exact_restore(true);
            est.pre_step();
            est.pre_step();
            let dirs = est.next_directions();
            assert_eq!(
                dirs.iter().map(|d| (d.step, d.sample)).collect::<Vec<_>>(),
                [(2, 0), (2, 1), (2, 2)]
            );
            let e = est.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
            let (cpu_g, noise, first) = cpu_estimate(&x0, &dirs, formula, 0.05, None, true);
            assert_matches_cpu(&g.to_vec().unwrap(), &cpu_g, &noise, &what);
            assert_eq!(x.to_vec().unwrap(), x0, "{what}: exact restore");
            assert_eq!(
                e.evaluations,
                3 * offsets(formula).len() as u32 + u32::from(formula.uses_f0()),
                "{what}"
            );
            if formula.uses_f0() {
                assert_eq!(e.loss, Some(loss32(&x0)), "{what}");
                assert_eq!(e.loss_approx, e.loss, "{what}");
            } else {
                assert_eq!(e.loss, None, "{what}");
                let la = e.loss_approx.expect("loss_approx") as f64;
                assert!(
                    (la - first).abs() <= 1e-5 * first.abs(),
                    "{what}: loss_approx {la} vs f(x + h u_last) {first}"
                );
            }
        }
    }
}

#[test]
fn presets_and_mezo_equal_the_cpu_recomputation() {
    let (gpu, x0, mut x, mut g) = setup(64, 2);
    let mut loss = host_loss();
    // In place (no exact restore): the CPU twin replays the same in-place sequence.
    let mut spsa = Spsa::new().h(0.05).n_samples(2).seed(11);
    spsa.pre_step();
    let dirs = spsa.next_directions();
    assert!(dirs
        .iter()
        .all(|d| d.distribution == Distribution::Rademacher));
    let e = spsa.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
    assert_eq!(e.evaluations, 4);
    let (cpu_g, noise, _) = cpu_estimate(&x0, &dirs, Formula::Central, 0.05, None, false);
    assert_matches_cpu(&g.to_vec().unwrap(), &cpu_g, &noise, "Spsa");
    x.write(&x0).unwrap();

    let mut rdsa = Rdsa::new()
        .h(0.05)
        .n_samples(2)
        .seed(12)
        .exact_restore(true);
    rdsa.pre_step();
    let dirs = rdsa.next_directions();
    assert!(dirs
        .iter()
        .all(|d| d.distribution == Distribution::Gaussian));
    rdsa.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
    let (cpu_g, noise, _) = cpu_estimate(&x0, &dirs, Formula::Central, 0.05, None, true);
    assert_matches_cpu(&g.to_vec().unwrap(), &cpu_g, &noise, "Rdsa");

    let mut gs = GaussianSmoothing::new().seed(13).exact_restore(true);
    gs.pre_step();
    let dirs = gs.next_directions();
    assert_eq!(dirs.len(), 100);
    let e = gs.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
    assert_eq!(e.evaluations, 101);
    let (cpu_g, noise, _) = cpu_estimate(&x0, &dirs, Formula::Forward, 1e-2, None, true);
    assert_matches_cpu(&g.to_vec().unwrap(), &cpu_g, &noise, "GaussianSmoothing");

    for dist in DISTRIBUTIONS {
        let mut mezo = MeZo::new()
            .h(0.05)
            .n_samples(3)
            .distribution(dist)
            .seed(42)
            .exact_restore(true);
        mezo.pre_step();
        let dirs: Vec<Direction> = (0..3).map(|s| mezo.direction(s)).collect();
        assert!(dirs.iter().all(|d| d.seed == 42 && d.step == 1));
        mezo.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
        let (cpu_g, noise, _) = cpu_estimate(&x0, &dirs, Formula::Central, 0.05, None, true);
        assert_matches_cpu(
            &g.to_vec().unwrap(),
            &cpu_g,
            &noise,
            &format!("MeZo {dist}"),
        );
    }
}

/// The analytic JVP, for Jvp::User.
struct WithJvp {
    jvps: u32,
}

impl Objective for WithJvp {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        Ok(loss32(&params.to_vec()?))
    }

    fn jvp(&mut self, params: &Params, dir: &Direction) -> Result<f32> {
        self.jvps += 1;
        let x = params.to_vec()?;
        let n = x.len() as u64;
        Ok(grad_f64(&x)
            .iter()
            .enumerate()
            .map(|(i, g)| g * z(dir, i as u64, n))
            .sum::<f64>() as f32)
    }
}

#[test]
fn forward_gradient_equals_the_cpu_recomputation() {
    let (gpu, x0, mut x, mut g) = setup(66, 3);
    let n = x0.len() as u64;
    let mut loss = host_loss();
    for dist in DISTRIBUTIONS {
        for jvp in [Jvp::Central, Jvp::Forward] {
            let what = format!("ForwardGradient {jvp} {dist}");
            let mut fg = ForwardGradient::new()
                .h(0.05)
                .n_samples(3)
                .distribution(dist)
                .jvp(jvp)
                .seed(77)
                .exact_restore(true);
            fg.pre_step();
            let dirs = fg.next_directions();
            let e = fg.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
            let norms: Vec<f64> = dirs
                .iter()
                .map(|d| (0..n).map(|i| z(d, i, n).powi(2)).sum::<f64>().sqrt())
                .collect();
            if matches!(dist, Distribution::Rademacher | Distribution::Sphere) {
                assert!(norms.iter().all(|v| (v - (n as f64).sqrt()).abs() < 1e-9));
            }
            let formula = if jvp == Jvp::Central {
                Formula::Central
            } else {
                Formula::Forward
            };
            let (cpu_g, noise, _) = cpu_estimate(&x0, &dirs, formula, 0.05, Some(&norms), true);
            assert_matches_cpu(&g.to_vec().unwrap(), &cpu_g, &noise, &what);
            assert_eq!(
                e.evaluations,
                if jvp == Jvp::Central { 6 } else { 4 },
                "{what}"
            );
            assert_eq!(e.loss.is_some(), jvp == Jvp::Forward, "{what}");
            assert_eq!(x.to_vec().unwrap(), x0, "{what}");
        }
        // User: g = (1/S) Σ (∇f·u_s) u_s exactly.
        let mut obj = WithJvp { jvps: 0 };
        let mut fg = ForwardGradient::new()
            .n_samples(3)
            .distribution(dist)
            .jvp(Jvp::User)
            .seed(78);
        fg.pre_step();
        let dirs = fg.next_directions();
        let e = fg.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
        assert_eq!(
            (e.evaluations, obj.jvps, e.loss, e.loss_approx),
            (3, 3, None, None)
        );
        let grad = grad_f64(&x0);
        let mut cpu_g = vec![0.0f64; x0.len()];
        for d in &dirs {
            let dd = grad
                .iter()
                .enumerate()
                .map(|(i, gi)| gi * z(d, i as u64, n))
                .sum::<f64>();
            for (i, gi) in cpu_g.iter_mut().enumerate() {
                *gi += dd / 3.0 * z(d, i as u64, n);
            }
        }
        assert_matches_cpu(
            &g.to_vec().unwrap(),
            &cpu_g,
            &vec![0.0; x0.len()],
            &format!("ForwardGradient user {dist}"),
        );
        assert_eq!(x.to_vec().unwrap(), x0);
    }
    // A closure has no JVP: Unsupported.
    let err = ForwardGradient::new()
        .jvp(Jvp::User)
        .approximate(&gpu, &mut x, &mut loss, &mut g)
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err}");
}

#[test]
fn evaluation_counts_match_the_spec_for_every_estimator_and_formula() {
    let (gpu, _x0, mut x, mut g) = setup(32, 4);
    let calls = AtomicU32::new(0);
    let mut loss = |p: &Params| -> Result<f32> {
        calls.fetch_add(1, Ordering::Relaxed);
        Ok(loss32(&p.to_vec()?))
    };
    let mut check = |name: &str, est: &mut dyn GradApproximator, expected: u32| {
        calls.store(0, Ordering::Relaxed);
        est.pre_step();
        let e = est.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
        assert_eq!(e.evaluations, expected, "{name}: reported");
        assert_eq!(
            calls.load(Ordering::Relaxed),
            expected,
            "{name}: calls into the objective"
        );
    };
    for formula in Formula::ALL {
        let m = offsets(formula).len() as u32;
        let f0 = u32::from(formula.uses_f0());
        check(
            &format!("RandomizedFdm {formula}"),
            &mut RandomizedFdm::new().formula(formula).n_samples(5),
            5 * m + f0,
        );
        check(
            &format!("MeZo {formula}"),
            &mut MeZo::new().formula(formula).n_samples(2),
            2 * m + f0,
        );
        check(
            &format!("Spsa {formula}"),
            &mut Spsa::new().formula(formula),
            m + f0,
        );
    }
    check("Spsa default", &mut Spsa::new(), 2);
    check("Rdsa default", &mut Rdsa::new(), 2);
    check("RandomizedFdm default", &mut RandomizedFdm::new(), 2);
    check(
        "GaussianSmoothing default",
        &mut GaussianSmoothing::new(),
        101,
    );
    check("MeZo default", &mut MeZo::new(), 2);
    check("ForwardGradient default", &mut ForwardGradient::new(), 2);
    check(
        "ForwardGradient central S=4",
        &mut ForwardGradient::new().n_samples(4),
        8,
    );
    check(
        "ForwardGradient forward S=4",
        &mut ForwardGradient::new().jvp(Jvp::Forward).n_samples(4),
        5,
    );
    check(
        "RandomizedFdm beta",
        &mut RandomizedFdm::new().beta(0.9).n_samples(3),
        6,
    );
}

#[test]
fn pre_generate_reuses_directions_within_a_step_and_pre_step_moves_on() {
    let (gpu, x0, mut x, mut g) = setup(40, 5);
    let mut loss = host_loss();
    let mut run = |est: &mut dyn GradApproximator, x: &mut Params| -> Vec<f32> {
        est.approximate(&gpu, x, &mut loss, &mut g).unwrap();
        g.to_vec().unwrap()
    };
    let mut est = RandomizedFdm::new()
        .n_samples(2)
        .seed(9)
        .exact_restore(true);
    est.pre_step();
    let a = run(&mut est, &mut x);
    assert_eq!(
        est.next_directions()[0].sample,
        0,
        "pre_generate: same counter every call"
    );
    let b = run(&mut est, &mut x);
    assert_eq!(
        a, b,
        "pre_generate = true: same directions on repeated calls within a step"
    );
    est.pre_step();
    let c = run(&mut est, &mut x);
    assert_ne!(a, c, "pre_step moves to new directions");

    let mut est = RandomizedFdm::new()
        .n_samples(2)
        .seed(9)
        .pre_generate(false)
        .exact_restore(true);
    est.pre_step();
    let first = est.next_directions();
    let a2 = run(&mut est, &mut x);
    assert_eq!(
        a2, a,
        "the first call of a step draws the same samples either way"
    );
    let second = est.next_directions();
    assert_eq!(
        second.iter().map(|d| d.sample).collect::<Vec<_>>(),
        [2, 3],
        "call 1 uses samples S..2S"
    );
    let b2 = run(&mut est, &mut x);
    assert_ne!(a2, b2, "pre_generate = false: new directions each call");
    let (cpu_g, noise, _) = cpu_estimate(&x0, &second, Formula::Central, 1e-3, None, true);
    assert_matches_cpu(&b2, &cpu_g, &noise, "second call without pre_generate");
    est.pre_step();
    assert_eq!(
        est.next_directions(),
        first
            .iter()
            .map(|d| Direction { step: 2, ..*d })
            .collect::<Vec<_>>()
    );

    // ForwardGradient follows the same counters; MeZo always reuses the step's directions.
    let mut fg = ForwardGradient::new().seed(4).pre_generate(false);
    fg.pre_step();
    let a = run(&mut fg, &mut x);
    let b = run(&mut fg, &mut x);
    assert_ne!(a, b);
    let mut mezo = MeZo::new().seed(4).exact_restore(true);
    mezo.pre_step();
    let a = run(&mut mezo, &mut x);
    let b = run(&mut mezo, &mut x);
    assert_eq!(a, b);
    mezo.pre_step();
    assert_ne!(a, run(&mut mezo, &mut x));
}

#[test]
fn direction_momentum_follows_the_recurrence_with_one_buffer_per_sample() {
    let (gpu, x0, mut x, mut g) = setup(48, 6);
    let n = x0.len() as u64;
    // A linear loss c·x: Central differences are exact, D_s = c·v_s.
    let c: Vec<f64> = (0..n).map(|i| 0.5 + (i % 3) as f64).collect();
    let cc = c.clone();
    let mut loss = move |p: &Params| -> Result<f32> {
        Ok(p.to_vec()?
            .iter()
            .zip(&cc)
            .map(|(a, b)| f64::from(*a) * b)
            .sum::<f64>() as f32)
    };
    let beta = 0.75f32;
    let mut est = RandomizedFdm::new()
        .h(0.05)
        .n_samples(2)
        .beta(beta)
        .seed(21)
        .exact_restore(true);
    let mut v: Vec<Vec<f64>> = Vec::new();
    for step in 1..=3u32 {
        est.pre_step();
        let dirs = est.next_directions();
        for (s, d) in dirs.iter().enumerate() {
            let u: Vec<f64> = (0..n).map(|i| z(d, i, n)).collect();
            if step == 1 {
                v.push(u);
            } else {
                for (vi, ui) in v[s].iter_mut().zip(&u) {
                    *vi = f64::from(beta) * *vi + (1.0 - f64::from(beta)) * ui;
                }
            }
        }
        for call in 0..2 {
            est.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
            let mut cpu_g = vec![0.0f64; n as usize];
            for vs in &v {
                let d: f64 = vs.iter().zip(&c).map(|(a, b)| a * b).sum();
                for (gi, vi) in cpu_g.iter_mut().zip(vs) {
                    *gi += d / 2.0 * vi;
                }
            }
            let got = g.to_vec().unwrap();
            let scale = cpu_g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (a, b)) in got.iter().zip(&cpu_g).enumerate() {
                assert!(
                    (f64::from(*a) - b).abs() < 2e-4 * scale,
                    "step {step} call {call}: g[{i}] {a} vs {b}"
                );
            }
        }
    }
    // Two stored directions plus the saved copy for exact_restore.
    assert_eq!(est.state_bytes(), 3 * n * 4);
    assert_eq!(x.to_vec().unwrap(), x0);
}

#[test]
fn mezo_stores_no_direction_and_reruns_bit_identically() {
    let gpu = common::gpu();
    let n = 4096usize;
    let x0 = common::data(7, n);
    // The loss is one GPU reduction (x·w), so no n-sized staging buffer enters the count.
    let wv = common::data(8, n);
    let w = Params::from_slices(&gpu, &[&wv[..1000], &wv[1000..]]).unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(zograd::kernels::dot(p, &w)? as f32 + 1.0) };
    // (Allocation growth per step is checked in tests/memory.rs, where no other test allocates
    // on the same device at the same time.)
    let run = |loss: &mut dyn Objective, exact: bool| -> (Vec<f32>, Vec<f32>, u64) {
        let mut x = Params::from_slices(&gpu, &[&x0[..1000], &x0[1000..]]).unwrap();
        let mut g = x.zeros_like().unwrap();
        let mut mezo = MeZo::new().seed(42).n_samples(2).exact_restore(exact);
        for _ in 0..3 {
            mezo.pre_step();
            mezo.approximate(&gpu, &mut x, loss, &mut g).unwrap();
            zograd::kernels::axpy(&mut x, -1e-2, &g).unwrap();
        }
        (x.to_vec().unwrap(), g.to_vec().unwrap(), mezo.state_bytes())
    };
    let (xa, ga, bytes) = run(&mut loss, false);
    assert_eq!(bytes, 0, "MeZo owns no buffer");
    let (xb, gb, _) = run(&mut loss, false);
    assert_eq!(xa, xb, "same seed: bit-identical parameters");
    assert_eq!(ga, gb, "same seed: bit-identical estimates");
    assert_ne!(xa, x0);
    // The byte count does see an n-buffer: exact_restore allocates one copy.
    let (_, _, bytes) = run(&mut loss, true);
    assert_eq!(bytes, n as u64 * 4);
}

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

/// Each error case, for one estimator: returns the parameters after the failing call.
fn failures(
    name: &str,
    make: &dyn Fn() -> Box<dyn GradApproximator>,
    x: &mut Params,
    g: &mut Params,
) -> Vec<Vec<f32>> {
    let gpu = common::gpu();
    let mut after = Vec::new();
    for fail_at in [1u32, 2] {
        // NaN loss at the fail_at-th evaluation.
        let mut count = 0;
        let mut nan = |p: &Params| -> Result<f32> {
            count += 1;
            Ok(if count == fail_at {
                f32::NAN
            } else {
                loss32(&p.to_vec()?)
            })
        };
        let mut est = make();
        est.pre_step();
        let err = est.approximate(&gpu, x, &mut nan, g).unwrap_err();
        assert!(
            matches!(err, Error::NonFiniteLoss { value, .. } if value.is_nan()),
            "{name}: {err}"
        );
        after.push(x.to_vec().unwrap());
        // A closure error.
        let mut count = 0;
        let mut failing = |p: &Params| -> std::result::Result<f32, Boom> {
            count += 1;
            if count == fail_at {
                Err(Boom)
            } else {
                Ok(loss32(&p.to_vec().unwrap()))
            }
        };
        let err = est.approximate(&gpu, x, &mut failing, g).unwrap_err();
        assert!(
            matches!(&err, Error::Objective(e) if e.to_string() == "boom"),
            "{name}: {err}"
        );
        after.push(x.to_vec().unwrap());
        // A panic.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut count = 0;
            let mut panicking = |p: &Params| -> f32 {
                count += 1;
                assert!(count != fail_at, "objective panics");
                loss32(&p.to_vec().unwrap())
            };
            let _ = est.approximate(&gpu, x, &mut panicking, g);
        }));
        assert!(caught.is_err(), "{name}");
        after.push(x.to_vec().unwrap());
    }
    after
}

#[test]
fn bad_inputs_return_named_errors_and_params_are_restored() {
    let (gpu, x0, mut x, mut g) = setup(50, 9);
    let mut loss = host_loss();
    let expect = |r: Result<Estimate>, arg: &str| {
        let err = r.unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.starts_with(&format!("{arg}:"))),
            "{arg}: {err}"
        );
    };
    for h in [0.0f32, -1.0, f32::NAN, f32::INFINITY] {
        expect(
            RandomizedFdm::new()
                .h(h)
                .approximate(&gpu, &mut x, &mut loss, &mut g),
            "h",
        );
        expect(
            Spsa::new()
                .h(h)
                .approximate(&gpu, &mut x, &mut loss, &mut g),
            "h",
        );
        expect(
            MeZo::new()
                .h(h)
                .approximate(&gpu, &mut x, &mut loss, &mut g),
            "h",
        );
        expect(
            ForwardGradient::new()
                .h(h)
                .approximate(&gpu, &mut x, &mut loss, &mut g),
            "h",
        );
    }
    expect(
        RandomizedFdm::new()
            .n_samples(0)
            .approximate(&gpu, &mut x, &mut loss, &mut g),
        "n_samples",
    );
    expect(
        GaussianSmoothing::new()
            .n_samples(0)
            .approximate(&gpu, &mut x, &mut loss, &mut g),
        "n_samples",
    );
    expect(
        MeZo::new()
            .n_samples(0)
            .approximate(&gpu, &mut x, &mut loss, &mut g),
        "n_samples",
    );
    expect(
        ForwardGradient::new()
            .n_samples(0)
            .approximate(&gpu, &mut x, &mut loss, &mut g),
        "n_samples",
    );
    expect(
        RandomizedFdm::new()
            .beta(1.5)
            .approximate(&gpu, &mut x, &mut loss, &mut g),
        "beta",
    );
    let mut wrong = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    expect(
        Rdsa::new().approximate(&gpu, &mut x, &mut loss, &mut wrong),
        "grad",
    );
    expect(
        MeZo::new().approximate(&gpu, &mut x, &mut loss, &mut wrong),
        "grad",
    );
    // params or grad on another Gpu: tests/approx_devices.rs (GL cannot drive two devices from
    // two test threads at once).
    assert_eq!(x.to_vec().unwrap(), x0, "validation touches nothing");

    // Objective failures: bit-identical with exact_restore ...
    type Make = Box<dyn Fn() -> Box<dyn GradApproximator>>;
    let exact: Vec<(&str, Make)> = vec![
        (
            "RandomizedFdm",
            Box::new(|| {
                Box::new(
                    RandomizedFdm::new()
                        .formula(Formula::Central4)
                        .n_samples(2)
                        .exact_restore(true),
                )
            }),
        ),
        (
            "GaussianSmoothing",
            Box::new(|| Box::new(GaussianSmoothing::new().n_samples(3).exact_restore(true))),
        ),
        (
            "MeZo",
            Box::new(|| {
                Box::new(
                    MeZo::new()
                        .distribution(Distribution::Sphere)
                        .exact_restore(true),
                )
            }),
        ),
        (
            "ForwardGradient",
            Box::new(|| {
                Box::new(
                    ForwardGradient::new()
                        .distribution(Distribution::Uniform)
                        .exact_restore(true),
                )
            }),
        ),
        (
            "RandomizedFdm beta",
            Box::new(|| Box::new(RandomizedFdm::new().beta(0.5).exact_restore(true))),
        ),
    ];
    for (name, make) in &exact {
        for after in failures(name, make.as_ref(), &mut x, &mut g) {
            assert_eq!(after, x0, "{name}: exact restore after an error");
        }
    }
    // ... and within the documented in-place drift without it.
    let in_place: Vec<(&str, Make)> = vec![
        (
            "Spsa",
            Box::new(|| Box::new(Spsa::new().h(0.01).formula(Formula::Central4))),
        ),
        ("Rdsa", Box::new(|| Box::new(Rdsa::new().h(0.01)))),
        (
            "MeZo",
            Box::new(|| Box::new(MeZo::new().h(0.01).distribution(Distribution::Uniform))),
        ),
    ];
    for (name, make) in &in_place {
        for after in failures(name, make.as_ref(), &mut x, &mut g) {
            for (i, (a, b)) in after.iter().zip(&x0).enumerate() {
                // Σ|steps| ≤ 6 roundings of numbers below |x| + 2h·|u|max (|u| < 6).
                let bound = 6.0 * (b.abs() + 2.0 * 0.01 * 6.0) * f32::EPSILON;
                assert!((a - b).abs() <= bound, "{name}: x[{i}] drifted {a} vs {b}");
            }
            x.write(&x0).unwrap();
        }
    }
}

#[test]
fn in_place_restore_drift_stays_within_the_documented_bound() {
    let (gpu, x0, mut x, mut g) = setup(4000, 10);
    let mut loss = |p: &Params| -> Result<f32> { Ok(zograd::kernels::norm(p)? as f32) };
    let h = 1e-3f32;
    for dist in DISTRIBUTIONS {
        x.write(&x0).unwrap();
        let mut est = Spsa::new().h(h).distribution(dist).n_samples(4).seed(3);
        est.pre_step();
        est.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
        let after = x.to_vec().unwrap();
        let mut worst_ulps = 0.0f32;
        for (a, b) in after.iter().zip(&x0) {
            let ulp = (b.abs() + 2.0 * h * 6.0) * f32::EPSILON;
            // 4 samples × (+1, −2, +1): at most 16 roundings of half an ulp.
            assert!((a - b).abs() <= 8.0 * ulp, "{dist}: {a} vs {b}");
            worst_ulps =
                worst_ulps.max((a - b).abs() / (b.abs() * f32::EPSILON).max(f32::MIN_POSITIVE));
        }
        eprintln!("{dist}: worst in-place drift after 4 central samples: {worst_ulps:.1} ulp");
    }
}
