// SPDX-License-Identifier: MIT OR Apache-2.0
//! `zograd::testfns`: every GPU test function (as a `ShaderObjective` and as a `BatchObjective`)
//! against its CPU f64 twin at n = 1, 7 and 10⁶; the twin against the textbook formulas written
//! again here term by term; the value at the minimiser; batched points against the
//! `ShaderObjective` at the perturbed point; the noise wrapper's mean and variance; bad
//! arguments.
//!
//! Tolerances are derived, not fitted: for f(x) = F(S₁, S₂), Sₖ = Σᵢ tₖ(zᵢ), the GPU's f32
//! error is bounded by
//! - the sums: the shader adds 128 terms sequentially per thread, then trees of 64 threads and of
//!   the partials, so |δSₖ| ≤ u·(128 + 6 + ⌈log₂ groups⌉ + 2)·Σ|tₖ| (u = 2⁻²⁴, standard
//!   recursive-summation bound);
//! - each term: its evaluation (a few roundings, exp2/log2 of up to 3 ulp on Vulkan-conformant
//!   adapters: 64u·|t| covers it), the rounding of zᵢ = z* + ((x + dz) − c) (≤ 2u·(|x| + |dz| +
//!   |c| + |z*| + |z|), propagated by |∂t/∂z|), and sin/cos evaluated with an absolute error of
//!   at most 2⁻²⁰ (Vulkan's bound for |arg| ≤ π is 2⁻¹¹ in the worst case, but the shader
//!   reduces arguments to |arg| < 2.6 where llvmpipe's polynomials reach ~1e-7; 2⁻²⁰ ≈ 9.5e-7),
//!   times the trigonometric coefficient;
//! - the outer function F: the largest change of F over the corners S ± δS, plus 8u of its
//!   terms' magnitude.
//!
//! The bound grows with n through Σ|t| (linearly, a worst case); a factor-of-2 error in any
//! term or a wrong coordinate exceeds it by orders of magnitude (checked by
//! `tolerance_catches_a_wrong_term`).

mod common;

use common::{data, gpu, invalid_naming};
use zograd::approx::{GradApproximator, MeZo};
use zograd::kernels::{perturb, Direction};
use zograd::testfns::{Function, Noisy, Problem};
use zograd::{Distribution, Objective, Params};

const U: f64 = 1.0 / 16_777_216.0;
const TRIG_ERR: f64 = 1.0 / 1_048_576.0;

/// The textbook per-coordinate terms (Hansen et al. 2009; Surjanovic & Bingham), written
/// independently of the crate: the contributions of coordinate i (value z, next coordinate zn) to
/// the two sums, and the coefficient of the sines/cosines in them.
fn terms(f: Function, i: usize, n: usize, z: f64, zn: f64) -> ([f64; 2], f64) {
    let r = if n > 1 {
        i as f64 / (n - 1) as f64
    } else {
        0.0
    };
    let tau = 2.0 * std::f64::consts::PI;
    let pi = std::f64::consts::PI;
    match f {
        Function::Sphere => ([z * z, 0.0], 0.0),
        Function::Ellipsoid => ([1e6f64.powf(r) * z * z, 0.0], 0.0),
        Function::Rosenbrock => {
            if i + 1 < n {
                ([100.0 * (z * z - zn).powi(2) + (1.0 - z).powi(2), 0.0], 0.0)
            } else {
                ([0.0, 0.0], 0.0)
            }
        }
        Function::Rastrigin => ([z * z - 10.0 * (tau * z).cos() + 10.0, 0.0], 10.0),
        Function::Ackley => ([z * z, (tau * z).cos()], 1.0),
        Function::StyblinskiTang => ([(z.powi(4) - 16.0 * z * z + 5.0 * z) / 2.0, 0.0], 0.0),
        Function::DifferentPowers => ([z.abs().powf(2.0 + 4.0 * r), 0.0], 0.0),
        Function::Levy => {
            let w = 1.0 + (z - 1.0) / 4.0;
            let mut t = if i == 0 { (pi * w).sin().powi(2) } else { 0.0 };
            let d = (w - 1.0).powi(2);
            if i + 1 < n {
                t += d * (1.0 + 10.0 * (pi * w + 1.0).sin().powi(2));
            } else {
                t += d * (1.0 + (tau * w).sin().powi(2));
            }
            ([t, 0.0], 2.0 + 22.0 * d)
        }
    }
}

/// F(S₁, S₂) and the magnitude of its terms.
fn outer(f: Function, s: [f64; 2], n: usize) -> (f64, f64) {
    let nf = n as f64;
    match f {
        Function::Ackley => {
            let a = 20.0 * (-0.2 * (s[0].max(0.0) / nf).sqrt()).exp();
            let b = (s[1] / nf).exp();
            (-a - b + 20.0 + std::f64::consts::E, a + b + 23.0)
        }
        Function::DifferentPowers => (s[0].max(0.0).sqrt(), s[0].max(0.0).sqrt()),
        _ => (s[0], s[0].abs()),
    }
}

/// f at x (f32, with the per-coordinate perturbation `dz` already added on the host, used only
/// for the error bound) from the textbook terms, and the derived bound on the GPU's f32 error.
fn reference(problem: &Problem, x: &[f32], dz: &[f32]) -> (f64, f64) {
    let f = problem.function();
    let n = x.len();
    let zs = f.minimiser_coordinate();
    let c = problem.minimiser();
    let src = |i: usize| problem.permutation().map_or(i, |p| p[i] as usize);
    // z: written out here without rotation; with it, the crate's transform (its B is tested for
    // orthogonality in the crate and by rotation invariance below).
    let z: Vec<f64> = match problem.rotation_block() {
        None => (0..n)
            .map(|i| zs + (f64::from(x[src(i)]) - f64::from(c[src(i)])))
            .collect(),
        Some(_) => problem.transform(x).unwrap(),
    };
    // Rotated, zᵢ is a dot product of a row of B (unit norm) with the block's y: its f32 error
    // is at most (s + 4)·u·‖|x| + |dz| + |c|‖₂ over the block (Cauchy–Schwarz), per block.
    let block = problem.rotation_block().unwrap_or(1);
    let magnitude = |k: usize| {
        f64::from(x[src(k)]).abs() + f64::from(dz[src(k)]).abs() + f64::from(c[src(k)]).abs()
    };
    let block_norm: Vec<f64> = (0..n)
        .step_by(block)
        .map(|a| {
            (a..(a + block).min(n))
                .map(|k| magnitude(k).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .collect();
    let per_thread = if problem.rotation_block().is_some() {
        block as f64
    } else {
        128.0
    };
    let groups = (n as f64 / (64.0 * per_thread)).ceil().max(1.0);
    let depth = per_thread + 6.0 + groups.log2().ceil() + 2.0;
    let (mut s, mut abs, mut err) = ([0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
    for i in 0..n {
        let zn = if i + 1 < n { z[i + 1] } else { 0.0 };
        let (t, trig) = terms(f, i, n, z[i], zn);
        let dzi = |k: usize| {
            if problem.rotation_block().is_some() {
                2.0 * U * (zs.abs() + z[k].abs()) + (block as f64 + 4.0) * U * block_norm[k / block]
            } else {
                2.0 * U * (magnitude(k) + zs.abs() + z[k].abs())
            }
        };
        let h = 1e-6 * z[i].abs().max(1.0);
        let (tp, _) = terms(f, i, n, z[i] + h, zn);
        let (tm, _) = terms(f, i, n, z[i] - h, zn);
        let hn = 1e-6 * zn.abs().max(1.0);
        let (tnp, _) = terms(f, i, n, z[i], zn + hn);
        let (tnm, _) = terms(f, i, n, z[i], zn - hn);
        for k in 0..2 {
            s[k] += t[k];
            abs[k] += t[k].abs();
            let d = ((tp[k] - tm[k]) / (2.0 * h)).abs();
            let dn = ((tnp[k] - tnm[k]) / (2.0 * hn)).abs();
            let next = if i + 1 < n { dn * dzi(i + 1) } else { 0.0 };
            err[k] += 64.0 * U * t[k].abs() + d * dzi(i) + next;
        }
        err[usize::from(f == Function::Ackley)] += trig * TRIG_ERR;
    }
    let ds = [err[0] + depth * U * abs[0], err[1] + depth * U * abs[1]];
    let (value, magnitude) = outer(f, s, n);
    let mut spread: f64 = 0.0;
    for a in [-1.0, 1.0] {
        for b in [-1.0, 1.0] {
            let (v, _) = outer(f, [s[0] + a * ds[0], s[1] + b * ds[1]], n);
            spread = spread.max((v - value).abs());
        }
    }
    (value, spread + 8.0 * U * magnitude)
}

fn problem(f: Function, n: u64) -> Problem {
    Problem::new(f, n).unwrap().shifted(11).permuted(12)
}

/// The textbook function, shifted and permuted, and also block-rotated.
fn variants(f: Function, n: u64) -> [Problem; 3] {
    [
        Problem::new(f, n).unwrap(),
        problem(f, n),
        problem(f, n).rotated(13),
    ]
}

/// x: data in [−3, 3).
fn point(n: usize) -> Vec<f32> {
    data(5, n).iter().map(|v| 3.0 * v).collect()
}

/// The twin equals the textbook formulas, and textbook values at chosen points.
#[test]
fn twin_matches_textbook() {
    for f in Function::ALL {
        for n in [1u64, 2, 7, 100] {
            for p in variants(f, n) {
                let x = point(n as usize);
                let twin = p.value_f64(&x).unwrap();
                let (book, _) = reference(&p, &x, &vec![0.0; n as usize]);
                assert!(
                    (twin - book).abs() <= 1e-12 * (1.0 + book.abs()) * n as f64,
                    "{f:?} n = {n}: twin {twin} vs textbook {book}"
                );
            }
        }
    }
    let n = 10;
    let at = |f: Function, v: f64| f.value(&vec![v; n]);
    // Rosenbrock(0) = n − 1; Rastrigin(½) = n·(¼ + 20); Sphere(2) = 4n; Styblinski–Tang(0) = 0;
    // Ellipsoid(1) = Σ 10^{6i/(n−1)} (a geometric sum); Different Powers(1) = √n; Levy(1) = 0;
    // Ackley(1) = −20 e^{−0.2} − e + 20 + e = 20 (1 − e^{−0.2}).
    assert!((at(Function::Rosenbrock, 0.0) - 9.0).abs() < 1e-12);
    assert!((at(Function::Rastrigin, 0.5) - 202.5).abs() < 1e-9);
    assert!((at(Function::Sphere, 2.0) - 40.0).abs() < 1e-12);
    assert!(at(Function::StyblinskiTang, 0.0).abs() < 1e-12);
    let q = 10f64.powf(6.0 / 9.0);
    let geometric = (q.powi(10) - 1.0) / (q - 1.0);
    assert!((at(Function::Ellipsoid, 1.0) - geometric).abs() < 1e-6 * geometric);
    assert!((at(Function::DifferentPowers, 1.0) - 10f64.sqrt()).abs() < 1e-12);
    assert!(at(Function::Levy, 1.0).abs() < 1e-12);
    assert!((at(Function::Ackley, 1.0) - 20.0 * (1.0 - (-0.2f64).exp())).abs() < 1e-9);
    // Styblinski–Tang's minimum per coordinate (Surjanovic & Bingham: −39.16599·d, rounded).
    assert!((Function::StyblinskiTang.minimum(1) + 39.166_165_703_771_42).abs() < 1e-9);
}

/// The bound is tight enough to catch a wrong term: doubling one coordinate's contribution or
/// reading the wrong coordinate moves f far past it.
#[test]
fn tolerance_catches_a_wrong_term() {
    for f in Function::ALL {
        let n = 1000;
        let p = problem(f, n);
        let x = point(n as usize);
        let (v, tol) = reference(&p, &x, &vec![0.0; n as usize]);
        let mut y = x.clone();
        y[17] *= 2.0;
        let w = p.value_f64(&y).unwrap();
        assert!(
            (w - v).abs() > 10.0 * tol,
            "{f:?}: tolerance {tol} too loose ({v} vs {w})"
        );
    }
}

/// The rotation is orthogonal: Sphere (and the Sphere part of every function) does not change
/// under it, on the CPU and on the GPU; the transformed point does change.
#[test]
fn rotation_preserves_the_sphere() {
    let gpu = gpu();
    for n in [7u64, 100, 1_000_000] {
        let x0 = point(n as usize);
        let x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
        let plain = problem(Function::Sphere, n);
        let rotated = problem(Function::Sphere, n).rotated(9);
        let a = plain.value_f64(&x0).unwrap();
        let b = rotated.value_f64(&x0).unwrap();
        // f32 matrices are orthogonal to ~1e-7 per entry product: ‖Bᵀ B − I‖ ≤ 40·1e-7.
        assert!((a - b).abs() <= 1e-5 * a, "n = {n}: {a} vs rotated {b}");
        let (_, tol) = reference(&rotated, &x0, &vec![0.0; n as usize]);
        let v = rotated.shader_objective(&x).unwrap().evaluate().unwrap();
        check(&format!("rotated Sphere n = {n}"), v, a, tol + 1e-5 * a);
        // The rotation mixes coordinates: z moves by a fraction of its norm.
        let z0 = plain.transform(&x0).unwrap();
        let z1 = rotated.transform(&x0).unwrap();
        let moved: f64 = z0.iter().zip(&z1).map(|(a, b)| (a - b).powi(2)).sum();
        let norm: f64 = z0.iter().map(|a| a * a).sum();
        assert!(
            moved > 0.1 * norm,
            "n = {n}: rotation changed little ({moved} of {norm})"
        );
    }
}

fn check(what: &str, gpu_value: f32, twin: f64, tol: f64) {
    let err = (f64::from(gpu_value) - twin).abs();
    assert!(
        err <= tol,
        "{what}: gpu {gpu_value} vs twin {twin}: error {err:e} > tolerance {tol:e}"
    );
}

/// Every function, as a ShaderObjective and a BatchObjective (scale-0 point), at n = 1, 7, 100
/// (rotated: two blocks of 40 and one of 20), 10⁶
/// against the CPU twin.
#[test]
fn gpu_matches_twin() {
    let gpu = gpu();
    for n in [1u64, 7, 100, 1_000_000] {
        let x0 = point(n as usize);
        let x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
        for f in Function::ALL {
            for p in variants(f, n) {
                let twin = p.value_f64(&x0).unwrap();
                let (_, tol) = reference(&p, &x0, &vec![0.0; n as usize]);
                let mut plain = p.shader_objective(&x).unwrap();
                let mut batch = p.batch_objective(&x, 4).unwrap();
                let what = format!(
                    "{f:?} n = {n} shifted = {} rotated = {:?}",
                    p.is_shifted(),
                    p.rotation_block()
                );
                check(
                    &format!("{what} (shader)"),
                    plain.evaluate().unwrap(),
                    twin,
                    tol,
                );
                check(
                    &format!("{what} (batch)"),
                    batch.evaluate().unwrap(),
                    twin,
                    tol,
                );
            }
        }
    }
}

/// The value at the minimiser is the known minimum.
#[test]
fn minimum_at_minimiser() {
    let gpu = gpu();
    for n in [1u64, 7, 1000] {
        for f in Function::ALL {
            for p in variants(f, n) {
                let xs = p.minimiser().to_vec();
                let twin = p.value_f64(&xs).unwrap();
                assert!(
                    (twin - p.minimum()).abs() <= 1e-9 * (1.0 + p.minimum().abs()),
                    "{f:?} n = {n}: twin {twin} at the minimiser, minimum {}",
                    p.minimum()
                );
                let (_, tol) = reference(&p, &xs, &vec![0.0; n as usize]);
                let x = Params::from_slices(&gpu, &[&xs[..]]).unwrap();
                let v = p.shader_objective(&x).unwrap().evaluate().unwrap();
                check(&format!("{f:?} n = {n} minimum"), v, p.minimum(), tol);
                let v = p.batch_objective(&x, 1).unwrap().evaluate().unwrap();
                check(
                    &format!("{f:?} n = {n} minimum (batch)"),
                    v,
                    p.minimum(),
                    tol,
                );
            }
        }
    }
}

/// Batched points x + h·z equal the ShaderObjective at x perturbed in place (and the twin at the
/// host-perturbed point), for every distribution.
#[test]
fn batch_points_equal_shader_at_perturbed_point() {
    let gpu = gpu();
    let n = 3010u64;
    let x0 = point(n as usize);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let h = 0.01f32;
    for p in Function::ALL
        .into_iter()
        .flat_map(|f| [problem(f, n), problem(f, n).rotated(4)])
    {
        let f = p.function();
        let mut batch = p.batch_objective(&x, 8).unwrap();
        let mut plain = p.shader_objective(&x).unwrap();
        for dist in common::DISTS {
            let dirs: Vec<Direction> = (0..3)
                .map(|s| Direction {
                    distribution: dist,
                    seed: 77,
                    step: 5,
                    sample: s,
                })
                .collect();
            let points: Vec<(Direction, f32)> =
                dirs.iter().flat_map(|d| [(*d, h), (*d, -h)]).collect();
            let got = batch.evaluate_points(n, &points).unwrap();
            for ((d, s), b) in points.iter().zip(&got) {
                let mut y = x0.clone();
                zograd::cpu::perturb(&mut y, 0, d, *s, n);
                let dz: Vec<f32> = y.iter().zip(&x0).map(|(a, b)| a - b).collect();
                let twin = p.value_f64(&y).unwrap();
                let (_, tol) = reference(&p, &y, &dz);
                let what = format!(
                    "{f:?} rotated {:?} {dist:?} sample {} scale {s}",
                    p.rotation_block(),
                    d.sample
                );
                check(&format!("{what} (batch vs twin)"), *b, twin, tol);
                perturb(&mut x, d, *s).unwrap();
                let v = plain.evaluate().unwrap();
                x.write(&x0).unwrap();
                check(&format!("{what} (shader vs twin)"), v, twin, tol);
                assert!(
                    f64::from((v - b).abs()) <= 2.0 * tol,
                    "{what}: batch {b} vs shader at the perturbed point {v}"
                );
            }
        }
    }
}

/// The objectives drive an estimator: MeZO's batched and in-place estimates agree (the same
/// directions through both paths).
#[test]
fn estimators_use_both_forms() {
    let gpu = gpu();
    let n = 500u64;
    let x0 = point(n as usize);
    let p = problem(Function::Rosenbrock, n);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g_batch = x.zeros_like().unwrap();
    let mut g_plain = x.zeros_like().unwrap();
    let mut batch = p.batch_objective(&x, 2).unwrap();
    let mut plain = p.shader_objective(&x).unwrap();
    let e = MeZo::new()
        .h(1e-2)
        .seed(3)
        .approximate(&gpu, &mut x, &mut batch, &mut g_batch)
        .unwrap();
    assert_eq!(
        batch.readbacks(),
        1,
        "one dispatch, one readback for MeZO's two points"
    );
    MeZo::new()
        .h(1e-2)
        .seed(3)
        .approximate(&gpu, &mut x, &mut plain, &mut g_plain)
        .unwrap();
    assert_eq!(e.evaluations, 2);
    let a = g_batch.to_vec().unwrap();
    let b = g_plain.to_vec().unwrap();
    let scale = b.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    common::assert_close(&a, &b, 1e-3 * scale, 1e-3, "MeZO batched vs in place");
}

/// The noise wrapper: mean f and variance (σ_m f)² + σ_a² within 5 standard errors over 4000
/// evaluations in one batch; reproducible from the seed.
#[test]
fn noisy_mean_and_variance() {
    let gpu = gpu();
    let n = 7u64;
    let x0 = point(n as usize);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let p = problem(Function::Sphere, n);
    let f = p.value_f64(&x0).unwrap();
    let (sa, sm) = (0.5, 0.05);
    let m = 4000usize;
    let here = Direction {
        distribution: Distribution::Rademacher,
        seed: 1,
        step: 0,
        sample: 0,
    };
    let points = vec![(here, 0.0f32); m];
    let mut noisy = Noisy::new(p.batch_objective(&x, 64).unwrap(), sa, sm, 21).unwrap();
    assert!(noisy.has_batch());
    let v: Vec<f64> = noisy
        .loss_batch(&mut x, &points)
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    assert_eq!(noisy.evaluations(), m as u64);
    let mean = v.iter().sum::<f64>() / m as f64;
    let var = v.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (m - 1) as f64;
    let var_true = (sm * f).powi(2) + sa * sa;
    let se_mean = (var_true / m as f64).sqrt();
    let se_var = var_true * (2.0 / (m - 1) as f64).sqrt();
    assert!(
        (mean - f).abs() < 5.0 * se_mean,
        "mean {mean} vs {f} (SE {se_mean})"
    );
    assert!(
        (var - var_true).abs() < 5.0 * se_var,
        "variance {var} vs {var_true} (SE {se_var})"
    );
    // Reproducible: the same seed gives the same values, another seed others.
    let mut again = Noisy::new(p.batch_objective(&x, 64).unwrap(), sa, sm, 21).unwrap();
    let w = again.loss_batch(&mut x, &points[..10]).unwrap();
    assert_eq!(w.iter().map(|a| f64::from(*a)).collect::<Vec<_>>(), v[..10]);
    let mut other = Noisy::new(p.shader_objective(&x).unwrap(), sa, sm, 22).unwrap();
    assert_ne!(f64::from(other.loss(&x).unwrap()), v[0]);
    // Without noise the wrapper is the identity.
    let mut quiet = Noisy::new(p.shader_objective(&x).unwrap(), 0.0, 0.0, 1).unwrap();
    let exact = p.shader_objective(&x).unwrap().evaluate().unwrap();
    assert_eq!(quiet.loss(&x).unwrap(), exact);
}

#[test]
fn bad_arguments_are_named() {
    let gpu = gpu();
    invalid_naming(Problem::new(Function::Sphere, 0), &["n", "0"]);
    invalid_naming(Function::from_name("sphear"), &["name", "sphear"]);
    let p = Problem::new(Function::Sphere, 8).unwrap();
    invalid_naming(p.value_f64(&[0.0; 3]), &["x", "3"]);
    let x = Params::from_slices(&gpu, &[&[0.0f32; 4][..], &[0.0f32; 4][..]]).unwrap();
    invalid_naming(p.batch_objective(&x, 2), &["params", "2 buffer"]);
    invalid_naming(p.shader_objective(&x), &["params"]);
    let y = Params::from_slices(&gpu, &[&[0.0f32; 9][..]]).unwrap();
    invalid_naming(p.shader_objective(&y), &["params", "9"]);
    let z = Params::from_slices(&gpu, &[&[0.0f32; 8][..]]).unwrap();
    invalid_naming(p.batch_objective(&z, 0), &["max_points", "0"]);
    let obj = p.shader_objective(&z).unwrap();
    invalid_naming(Noisy::new(obj, -1.0, 0.0, 1), &["additive", "-1"]);
    let obj = p.shader_objective(&z).unwrap();
    invalid_naming(
        Noisy::new(obj, 0.0, f64::NAN, 1),
        &["multiplicative", "NaN"],
    );
}
