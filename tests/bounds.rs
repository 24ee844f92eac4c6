// SPDX-License-Identifier: MIT OR Apache-2.0
//! Box bounds (`Params::set_bounds`): validation, the projection kernel against its CPU twin, the
//! `Project` module (fused and unfused), `Fdm`'s one-sided formulas at the bounds and the random
//! estimators' feasible points, each checked by an objective that records every point outside
//! the box it is evaluated at.

mod common;

use zograd::approx::{
    Distribution, Fdm, Formula, ForwardGradient, GaussianSmoothing, GradApproximator, MeZo,
    Objective, RandomizedFdm, Rdsa, Spsa,
};
use zograd::optim::{Lr, Optimizer, Project};
use zograd::{cpu, kernels, Bounds, Error, Params, Result};

/// f(x) = Σ aᵢxᵢ + cᵢxᵢ² (f64, rounded once), recording every evaluation at a point outside
/// [lo, hi]; `batch` makes it claim batching (the default batch methods then move x and call
/// `loss`, so the recorded points are the ones the batch path asks for).
struct Checked {
    lo: Vec<f32>,
    hi: Vec<f32>,
    a: Vec<f64>,
    c: Vec<f64>,
    batch: bool,
    calls: u32,
    outside: Vec<String>,
}

impl Checked {
    fn new(lo: &[f32], hi: &[f32], a: &[f64], c: &[f64], batch: bool) -> Self {
        Self {
            lo: lo.to_vec(),
            hi: hi.to_vec(),
            a: a.to_vec(),
            c: c.to_vec(),
            batch,
            calls: 0,
            outside: Vec::new(),
        }
    }
    fn gradient(&self, x: &[f32]) -> Vec<f64> {
        (0..x.len())
            .map(|i| self.a[i] + 2.0 * self.c[i] * f64::from(x[i]))
            .collect()
    }
}

impl Objective for Checked {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.calls += 1;
        let x = params.to_vec()?;
        let mut f = 0.0f64;
        for (i, v) in x.iter().enumerate() {
            if !(*v >= self.lo[i] && *v <= self.hi[i]) {
                self.outside.push(format!(
                    "call {}: x[{i}] = {v} outside [{}, {}]",
                    self.calls, self.lo[i], self.hi[i]
                ));
            }
            let v = f64::from(*v);
            f += self.a[i] * v + self.c[i] * v * v;
        }
        Ok(f as f32)
    }
    fn has_batch(&self) -> bool {
        self.batch
    }
}

fn message(e: &Error) -> String {
    match e {
        Error::InvalidArgument(m) => m.clone(),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn bad_bounds_are_refused_naming_the_argument() -> Result<()> {
    let gpu = common::gpu();
    let mut x = Params::from_slices(&gpu, &[&[0.5f32, 0.5][..], &[1.0f32][..]])?;
    let cases = [
        (
            Bounds::scalar(1.0, 0.0),
            "bounds: element 0 has lo = 1 > hi = 0",
        ),
        (
            Bounds::scalar(f32::NAN, 1.0),
            "bounds: element 0 has a NaN bound",
        ),
        (
            Bounds::PerBuffer(vec![(0.0, 1.0); 3]),
            "bounds: 3 per-buffer pairs for 2 buffers",
        ),
        (
            Bounds::per_element(&[0.0; 2], &[1.0; 3]),
            "bounds: 2 values in lo for 3 elements",
        ),
        (
            Bounds::per_element(&[0.0, 0.0, 2.0], &[1.0, 1.0, f32::INFINITY - f32::INFINITY]),
            "bounds: element 2 has a NaN bound",
        ),
    ];
    for (bounds, want) in cases {
        let e = x.set_bounds(bounds).unwrap_err();
        assert!(message(&e).starts_with(want), "{e} (want {want})");
        assert!(!x.has_bounds());
    }
    // ±∞ and lo = hi are fine.
    x.set_bounds(Bounds::PerBuffer(vec![
        (f32::NEG_INFINITY, 0.25),
        (1.0, 1.0),
    ]))?;
    assert_eq!(
        x.bounds().map(|b| b.1.to_vec()),
        Some(vec![0.25, 0.25, 1.0])
    );
    // Bounds from GPU buffers of another shape.
    let lo = Params::from_slices(&gpu, &[&[0.0f32; 3][..]])?;
    let hi = Params::from_slices(&gpu, &[&[1.0f32; 2][..], &[1.0f32][..]])?;
    let e = Bounds::from_params(&lo, &hi).unwrap_err();
    assert!(message(&e).starts_with("hi:"), "{e}");
    // Projection without bounds.
    let mut y = Params::from_slices(&gpu, &[&[2.0f32][..]])?;
    let e = kernels::project(&mut y).unwrap_err();
    assert!(message(&e).starts_with("x: has no bounds"), "{e}");
    Ok(())
}

/// The projection kernel equals `cpu::project` bit for bit over three buffers chunked by 64
/// elements (bounds per element, some infinite), and bounds read back from GPU buffers.
#[test]
fn project_matches_the_cpu_twin_across_chunks() -> Result<()> {
    let gpu = common::gpu();
    let lens = [700usize, 300, 1];
    let n: usize = lens.iter().sum();
    let data: Vec<f32> = common::data(1, n).iter().map(|v| 3.0 * v).collect();
    let lo: Vec<f32> = common::data(2, n)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 7 == 0 {
                f32::NEG_INFINITY
            } else {
                v - 1.0
            }
        })
        .collect();
    let hi: Vec<f32> = common::data(3, n)
        .iter()
        .enumerate()
        .map(|(i, v)| {
            if i % 5 == 0 {
                f32::INFINITY
            } else {
                v.abs() + lo[i].max(-1.0) + 0.1
            }
        })
        .collect();
    let mut x = Params::from_slices(&gpu, &common::split(&data, &lens))?;
    x.set_max_chunk_len(64)?;
    let lo_p = Params::from_slices(&gpu, &common::split(&lo, &lens))?;
    let hi_p = Params::from_slices(&gpu, &common::split(&hi, &lens))?;
    x.set_bounds(Bounds::from_params(&lo_p, &hi_p)?)?;
    kernels::project(&mut x)?;
    let mut want = data.clone();
    cpu::project(&mut want, &lo, &hi);
    assert_eq!(x.to_vec()?, want);
    assert!(want.iter().zip(&data).filter(|(a, b)| a != b).count() > n / 4);
    // The bounds' two buffers are the parameters' own.
    assert_eq!(x.owned_bytes(), 3 * 4 * n as u64);
    Ok(())
}

/// x on each bound, next to it (less room than h), inside, fixed (lo = hi) and in a box
/// narrower than 2h, for every formula, point by point and batched: no evaluation outside the
/// box, x restored bit-exactly, and the gradient of the quadratic as the formula's error allows.
#[test]
fn fdm_never_evaluates_outside_the_box() -> Result<()> {
    let gpu = common::gpu();
    let x0 = [0.0f32, 1.0, 1e-4, 1.0 - 5e-4, 0.5, 0.3, 0.2, 0.7];
    let mut lo = [0.0f32; 8];
    let mut hi = [1.0f32; 8];
    (lo[5], hi[5]) = (0.3, 0.3);
    (lo[6], hi[6]) = (0.2, 0.2005);
    (lo[7], hi[7]) = (0.6, f32::INFINITY);
    let a = [1.0, -2.0, 0.5, 1.5, -1.0, 3.0, 2.0, -0.5];
    let c = [0.5, 1.0, -0.75, 0.25, 2.0, 1.0, -1.0, 0.5];
    for formula in Formula::ALL {
        for batch in [false, true] {
            let what = format!("{formula}, batch {batch}");
            let mut x = Params::from_slices(&gpu, &[&x0[..5], &x0[5..]])?;
            x.set_bounds(Bounds::per_element(&lo, &hi))?;
            let mut g = x.zeros_like()?;
            let mut f = Checked::new(&lo, &hi, &a, &c, batch);
            let e = Fdm::new()
                .formula(formula)
                .approximate(&gpu, &mut x, &mut f, &mut g)?;
            assert!(f.outside.is_empty(), "{what}: {:?}", f.outside);
            assert_eq!(e.evaluations, f.calls, "{what}: evaluations counted");
            assert_eq!(x.to_vec()?, x0, "{what}: x restored");
            let g = g.to_vec()?;
            let exact = f.gradient(&x0);
            // Order 1: error h·|f''|/2·(largest offset); every other formula is exact on a
            // quadratic; plus the loss's rounding over the (possibly shrunk, 2.5e-4) step.
            let trunc = if formula.order() == 1 {
                2e-3 * 2.0
            } else {
                0.0
            };
            for i in 0..8 {
                if i == 5 {
                    assert_eq!(g[i], 0.0, "{what}: a fixed element's gradient is 0");
                    continue;
                }
                let err = (f64::from(g[i]) - exact[i]).abs();
                assert!(
                    err <= trunc + 5e-3,
                    "{what}: element {i}: g = {}, f' = {}",
                    g[i],
                    exact[i]
                );
            }
        }
    }
    // x outside its box: refused, x untouched.
    let mut x = Params::from_slices(&gpu, &[&[1.5f32][..]])?;
    x.set_bounds(Bounds::scalar(0.0, 1.0))?;
    let mut g = x.zeros_like()?;
    let mut f = Checked::new(&[0.0], &[1.0], &[1.0], &[0.0], false);
    let e = Fdm::new()
        .approximate(&gpu, &mut x, &mut f, &mut g)
        .unwrap_err();
    assert!(
        message(&e).starts_with("params: element 0 = 1.5 lies outside its bounds [0, 1]"),
        "{e}"
    );
    assert_eq!((f.calls, x.to_vec()?), (0, vec![1.5]));
    Ok(())
}

fn estimators() -> Vec<(&'static str, Box<dyn GradApproximator>)> {
    vec![
        ("Spsa", Box::new(Spsa::new().seed(1).n_samples(3))),
        ("Rdsa", Box::new(Rdsa::new().seed(2).n_samples(3))),
        (
            "RandomizedFdm uniform central4",
            Box::new(
                RandomizedFdm::new()
                    .seed(3)
                    .distribution(Distribution::Uniform)
                    .formula(Formula::Central4)
                    .n_samples(2),
            ),
        ),
        (
            "RandomizedFdm sphere forward",
            Box::new(
                RandomizedFdm::new()
                    .seed(4)
                    .distribution(Distribution::Sphere)
                    .formula(Formula::Forward),
            ),
        ),
        (
            "RandomizedFdm beta",
            Box::new(RandomizedFdm::new().seed(5).beta(0.5).n_samples(2)),
        ),
        ("MeZo", Box::new(MeZo::new().seed(6).n_samples(2))),
        ("ForwardGradient", Box::new(ForwardGradient::new().seed(7))),
        (
            "GaussianSmoothing",
            Box::new(GaussianSmoothing::new().seed(8).n_samples(10)),
        ),
        // Sparse directions move the kept elements by h/√p: with h = 3e-3 and p = 0.3 that is
        // 5.5e-3, more than the 4e-3 of room of the "near" case, though h itself fits.
        (
            "Spsa sparse",
            Box::new(Spsa::new().seed(9).n_samples(2).h(3e-3).density(0.3)),
        ),
        (
            "Rdsa sparse, a frozen buffer",
            Box::new(Rdsa::new().seed(10).h(3e-3).density(0.3).freeze(&[1])),
        ),
        (
            "MeZo magnitude mask",
            Box::new(MeZo::new().seed(11).magnitude_mask(0.5, 1)),
        ),
    ]
}

/// Every random estimator, point by point and batched, with x next to its bounds (less room
/// than h: shrunk steps) and on them (projected points): every point evaluated is inside the
/// box, and x comes back (bit-exactly when projected, which restores by copy).
#[test]
fn random_estimators_evaluate_only_feasible_points() -> Result<()> {
    let gpu = common::gpu();
    let n = 300;
    let lo: Vec<f32> = (0..n)
        .map(|i| if i % 3 == 0 { -1.0 } else { 0.0 })
        .collect();
    let hi: Vec<f32> = (0..n)
        .map(|i| if i % 3 == 2 { f32::INFINITY } else { 1.0 })
        .collect();
    let a: Vec<f64> = common::data(4, n).iter().map(|v| f64::from(*v)).collect();
    let c: Vec<f64> = common::data(5, n).iter().map(|v| f64::from(*v)).collect();
    let near: Vec<f32> = (0..n)
        .map(|i| match i % 4 {
            0 => lo[i] + 4e-3,
            1 => 1.0 - 4e-3,
            _ => 0.5,
        })
        .collect();
    let on: Vec<f32> = (0..n)
        .map(|i| match i % 4 {
            0 => lo[i],
            1 => 1.0,
            _ => 0.5,
        })
        .collect();
    for (case, x0) in [("near", &near), ("on", &on)] {
        for batch in [false, true] {
            for (name, mut est) in estimators() {
                // GaussianSmoothing's h = 1e-2: the "near" room is less than its step too.
                let what = format!("{name}, x {case} the bounds, batch {batch}");
                let mut x = Params::from_slices(&gpu, &[&x0[..100], &x0[100..]])?;
                x.set_bounds(Bounds::per_element(&lo, &hi))?;
                let mut g = x.zeros_like()?;
                let mut f = Checked::new(&lo, &hi, &a, &c, batch);
                est.pre_step();
                let e = est.approximate(&gpu, &mut x, &mut f, &mut g)?;
                assert!(f.outside.is_empty(), "{what}: {:?}", &f.outside[..1]);
                assert!(e.evaluations > 0 && g.to_vec()?.iter().all(|v| v.is_finite()));
                let back = x.to_vec()?;
                let drift = back
                    .iter()
                    .zip(x0.iter())
                    .map(|(p, q)| (p - q).abs())
                    .fold(0.0f32, f32::max);
                assert!(drift <= 1e-6, "{what}: x drifted by {drift}");
                if case == "on" {
                    assert_eq!(&back, x0, "{what}: projected points restore by copy");
                }
            }
        }
    }
    Ok(())
}

/// Where h is not shrunk (bounds far away) the estimate is bit-identical to the one without
/// bounds; where it is shrunk, the estimate of a linear function stays unbiased (mean within 5
/// standard errors of a, SE from the Rademacher variance Σ_{j≠i} aⱼ²/S); where points are
/// projected (an element on its bound) that element's component is halved in expectation, the
/// documented bias, and the others stay unbiased.
#[test]
fn linear_estimates_are_unbiased_unless_projected() -> Result<()> {
    let gpu = common::gpu();
    let n = 16;
    let a: Vec<f64> = common::data(9, n)
        .iter()
        .map(|v| 1.0 + f64::from(*v))
        .collect();
    let zero = vec![0.0; n];
    let lo = vec![0.0f32; n];
    let hi = vec![1.0f32; n];
    let run = |x0: &[f32], bounds: bool, samples: u32| -> Result<Vec<f32>> {
        let mut x = Params::from_slices(&gpu, &[x0])?;
        if bounds {
            x.set_bounds(Bounds::per_element(&lo, &hi))?;
        }
        let mut g = x.zeros_like()?;
        let mut f = Checked::new(&lo, &hi, &a, &zero, false);
        let mut est = Spsa::new().seed(12).n_samples(samples);
        est.pre_step();
        est.approximate(&gpu, &mut x, &mut f, &mut g)?;
        assert!(f.outside.is_empty(), "{:?}", &f.outside[..1]);
        g.to_vec()
    };
    // Far from the bounds: nothing changes.
    let mid = vec![0.5f32; n];
    assert_eq!(run(&mid, true, 4)?, run(&mid, false, 4)?);
    let s = 4000u32;
    let sum_sq: f64 = a.iter().map(|v| v * v).sum();
    let se = |i: usize| ((sum_sq - a[i] * a[i]) / f64::from(s)).sqrt();
    // Room 4e-4 < h = 1e-3 on every element: every sample shrunk (r ≈ 0.4).
    let near = vec![1.0 - 4e-4f32; n];
    let g = run(&near, true, s)?;
    for i in 0..n {
        let dev = (f64::from(g[i]) - a[i]).abs();
        assert!(
            dev <= 5.0 * se(i),
            "shrunk: element {i}: {} vs {} (SE {})",
            g[i],
            a[i],
            se(i)
        );
    }
    // Element 0 on its lower bound: projected points; E[g₀] = a₀/2.
    let mut on = mid.clone();
    on[0] = 0.0;
    let g = run(&on, true, s)?;
    // The variance of (a·c⊙z) z₀ with c₀ = 1/2: Σ_{j≠0} aⱼ².
    let dev0 = (f64::from(g[0]) - a[0] / 2.0).abs();
    assert!(
        dev0 <= 5.0 * se(0),
        "projected: g₀ = {} vs a₀/2 = {}",
        g[0],
        a[0] / 2.0
    );
    for i in 1..n {
        let var = sum_sq - a[i] * a[i] - 0.75 * a[0] * a[0];
        let se = (var / f64::from(s)).sqrt();
        let dev = (f64::from(g[i]) - a[i]).abs();
        assert!(
            dev <= 5.0 * se,
            "projected: element {i}: {} vs {}",
            g[i],
            a[i]
        );
    }
    Ok(())
}

/// Projected gradient descent on Σ (x − t)² over [0, 1] with targets inside and outside the box:
/// Fdm + Lr + Project reaches the box-constrained minimiser (clip(t, 0, 1)); the MeZO chain with
/// Project stays fused and agrees with the same chain unfused; x stays in the box after every
/// step and no point outside it is ever evaluated.
#[test]
fn project_keeps_chains_in_the_box_fused_and_unfused() -> Result<()> {
    let gpu = common::gpu();
    let n = 64;
    let t: Vec<f64> = common::data(21, n)
        .iter()
        .map(|v| 0.5 + 1.5 * f64::from(*v))
        .collect();
    let a: Vec<f64> = t.iter().map(|t| -2.0 * t).collect();
    let c = vec![1.0; n];
    let (lo, hi) = (vec![0.0f32; n], vec![1.0f32; n]);
    let start = vec![0.5f32; n];
    let new_x = || -> Result<Params> {
        let mut x = Params::from_slices(&gpu, &[&start[..]])?;
        x.set_bounds(Bounds::scalar(0.0, 1.0))?;
        Ok(x)
    };
    // Fdm: exact gradients, so projected gradient descent with lr 0.25 converges.
    let mut x = new_x()?;
    let mut f = Checked::new(&lo, &hi, &a, &c, false);
    let mut opt = Optimizer::new(&gpu, &x, Fdm::new())?
        .then(Lr::new(0.25))
        .then(Project::new());
    for _ in 0..40 {
        opt.step(&mut x, &mut f)?;
    }
    assert!(f.outside.is_empty(), "{:?}", &f.outside[..1]);
    for (i, v) in x.to_vec()?.iter().enumerate() {
        let want = t[i].clamp(0.0, 1.0);
        assert!(
            (f64::from(*v) - want).abs() < 1e-3,
            "element {i}: {v} vs {want}"
        );
    }
    // MeZO fused and unfused, same seed: the same iterates (up to the fused kernel's rounding).
    let mut runs = Vec::new();
    for fuse in [true, false] {
        let mut x = new_x()?;
        let mut f = Checked::new(&lo, &hi, &a, &c, false);
        let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(3))?
            .then(Lr::new(0.01))
            .then(Project::new())
            .fuse(fuse);
        for _ in 0..30 {
            opt.step(&mut x, &mut f)?;
            let v = x.to_vec()?;
            assert!(
                v.iter().all(|v| (0.0..=1.0).contains(v)),
                "fuse {fuse}: x left the box"
            );
        }
        assert!(f.outside.is_empty(), "fuse {fuse}: {:?}", &f.outside[..1]);
        // Fused: no update buffer (only the estimator's saved copy while points are projected).
        let bytes = opt.state_bytes();
        if fuse {
            assert!(bytes <= 4 * n as u64, "fused state {bytes}");
        } else {
            assert!(bytes >= 4 * n as u64, "unfused state {bytes}");
        }
        runs.push(x.to_vec()?);
    }
    let diff = runs[0]
        .iter()
        .zip(&runs[1])
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(diff < 1e-4, "fused vs unfused: {diff}");
    // Some elements reached a bound.
    assert!(runs[0].iter().any(|v| *v == 0.0 || *v == 1.0));
    Ok(())
}

/// Project without bounds on the parameters: the step fails before evaluating anything.
#[test]
fn project_without_bounds_fails_the_step() -> Result<()> {
    let gpu = common::gpu();
    let mut x = Params::from_slices(&gpu, &[&[2.0f32; 4][..]])?;
    let mut f = Checked::new(&[0.0; 4], &[1.0; 4], &[1.0; 4], &[0.0; 4], false);
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new())?
        .then(Lr::new(0.1))
        .then(Project::new());
    let e = opt.step(&mut x, &mut f).unwrap_err();
    assert!(
        message(&e).starts_with("params: Project needs bounds"),
        "{e}"
    );
    assert_eq!((f.calls, opt.steps(), x.to_vec()?), (0, 0, vec![2.0; 4]));
    Ok(())
}

/// One MeZO step with every element closer to a bound than h (every sample's step shrunk, points
/// evaluated in place): the fused step (whose kernel also undoes the last perturbation, by the
/// shrunk step) lands where the unfused chain does, and the evaluated points moved by less than
/// h.
#[test]
fn fused_mezo_restores_by_the_shrunk_step() -> Result<()> {
    let gpu = common::gpu();
    let n = 64;
    let (lo, hi) = (vec![0.0f32; n], vec![1.0f32; n]);
    let x0: Vec<f32> = (0..n)
        .map(|i| if i % 2 == 0 { 4e-4 } else { 1.0 - 4e-4 })
        .collect();
    let a: Vec<f64> = common::data(31, n).iter().map(|v| f64::from(*v)).collect();
    let c = vec![1.0; n];
    let mut out = Vec::new();
    for fuse in [true, false] {
        let mut x = Params::from_slices(&gpu, &[&x0[..]])?;
        x.set_bounds(Bounds::per_element(&lo, &hi))?;
        let mut moved = 0.0f32;
        let mut f = Checked::new(&lo, &hi, &a, &c, false);
        let mut loss = |p: &Params| -> Result<f32> {
            let v = p.to_vec()?;
            for (p, q) in v.iter().zip(&x0) {
                moved = moved.max((p - q).abs());
            }
            f.loss(p)
        };
        let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(9))?
            .then(Lr::new(1e-4))
            .fuse(fuse);
        opt.step(&mut x, &mut loss)?;
        assert!(f.outside.is_empty(), "fuse {fuse}: {:?}", &f.outside[..1]);
        assert!(
            moved > 1e-4 && moved < 4e-4,
            "fuse {fuse}: points moved by {moved} (shrunk below the room 4e-4)"
        );
        if fuse {
            assert_eq!(
                opt.state_bytes(),
                0,
                "in place: no saved copy, no update buffer"
            );
        }
        out.push(x.to_vec()?);
    }
    let diff = out[0]
        .iter()
        .zip(&out[1])
        .map(|(p, q)| (p - q).abs())
        .fold(0.0f32, f32::max);
    assert!(
        diff < 1e-6,
        "fused vs unfused after one shrunk step: {diff}"
    );
    Ok(())
}

/// Bounds with per-element scales (x = s⊙y: a point moves by k·h·sᵢ·uᵢ; up to 3 here, so the
/// room 1e-3 is less than a step), a frozen element (s = 0) and relative Fdm steps: still no
/// point outside the box, for Fdm and the random estimators, next to the bounds and on them.
#[test]
fn bounds_with_scales_keep_points_feasible() -> Result<()> {
    let gpu = common::gpu();
    let n = 200;
    let lo = vec![-2.0f32; n];
    let hi = vec![3.0f32; n];
    let scales: Vec<f32> = common::data(41, n)
        .iter()
        .enumerate()
        .map(|(i, v)| if i == 7 { 0.0 } else { 1.6 + 1.4 * v })
        .collect();
    let a: Vec<f64> = common::data(42, n).iter().map(|v| f64::from(*v)).collect();
    let c = vec![0.5; n];
    let near: Vec<f32> = (0..n)
        .map(|i| match i % 3 {
            0 => -2.0 + 1e-3,
            1 => 3.0 - 2e-3,
            _ => 0.25,
        })
        .collect();
    let on: Vec<f32> = (0..n)
        .map(|i| match i % 3 {
            0 => -2.0,
            1 => 3.0,
            _ => 0.25,
        })
        .collect();
    for (case, x0) in [("near", &near), ("on", &on)] {
        let mut ests: Vec<(&str, Box<dyn GradApproximator>)> = estimators();
        // One buffer here (nothing to freeze); a magnitude mask refuses scales.
        ests.retain(|(name, _)| !name.contains("frozen") && !name.contains("magnitude"));
        ests.push((
            "Fdm relative auto",
            Box::new(Fdm::new().relative_step(true).auto_h()),
        ));
        ests.push((
            "Fdm central4",
            Box::new(Fdm::new().formula(Formula::Central4)),
        ));
        for (name, mut est) in ests {
            let what = format!("{name}, x {case} the bounds, with scales");
            let mut x = Params::from_slices(&gpu, &[&x0[..]])?;
            x.set_scales(zograd::Scales::PerElement(scales.clone()))?;
            x.set_bounds(Bounds::per_element(&lo, &hi))?;
            let mut g = x.zeros_like()?;
            let mut f = Checked::new(&lo, &hi, &a, &c, false);
            est.pre_step();
            est.approximate(&gpu, &mut x, &mut f, &mut g)?;
            assert!(f.outside.is_empty(), "{what}: {:?}", &f.outside[..1]);
            let g = g.to_vec()?;
            assert!(g.iter().all(|v| v.is_finite()), "{what}");
            if name.starts_with("Fdm") {
                // (The random estimators' y-unit estimate D·u is not 0 there; the update is,
                // multiplied by s = 0 when applied.)
                assert_eq!(g[7], 0.0, "{what}: the frozen element's gradient");
            }
        }
    }
    Ok(())
}

/// An optimiser with Project saves and loads (Project is stateless: its name is checked), and a
/// chain without it refuses the checkpoint.
#[test]
fn project_checkpoints() -> Result<()> {
    let gpu = common::gpu();
    let dir = std::env::temp_dir().join(format!("zograd-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("project.safetensors");
    let mut x = Params::from_slices(&gpu, &[&[0.5f32; 8][..]])?;
    x.set_bounds(Bounds::scalar(0.0, 1.0))?;
    let mut f = Checked::new(&[0.0; 8], &[1.0; 8], &[1.0; 8], &[0.0; 8], false);
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(2))?
        .then(Lr::new(0.1))
        .then(Project::new());
    opt.step(&mut x, &mut f)?;
    opt.save(&path)?;
    let mut same = Optimizer::new(&gpu, &x, MeZo::new().seed(2))?
        .then(Lr::new(0.1))
        .then(Project::new());
    same.load(&path)?;
    assert_eq!(same.steps(), 1);
    let mut other = Optimizer::new(&gpu, &x, MeZo::new().seed(2))?
        .then(Lr::new(0.1))
        .then(Lr::new(1.0));
    assert!(other.load(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
