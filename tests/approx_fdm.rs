// SPDX-License-Identifier: MIT OR Apache-2.0
//! Fdm against torchzero's own numbers, its order of accuracy, evaluation counts, batching and
//! restoration.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use zograd::approx::{Coordinate, Estimate, Fdm, Formula, GradApproximator, Objective};
use zograd::{Error, Params, Result};

/// torchzero's test functions (tests/data/README: reference/README.md), in f32, summed in
/// index order as a Python loop over a float32 tensor would.
fn quad(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for (i, v) in x.iter().enumerate() {
        s += (2 * i + 1) as f32 * v * v;
    }
    s + x[0] * x[1]
}

fn rosenbrock(x: &[f32]) -> f32 {
    let mut s = 0.0f32;
    for i in 0..x.len() - 1 {
        let a = x[i + 1] - x[i] * x[i];
        let b = 1.0 - x[i];
        s += 100.0 * a * a + b * b;
    }
    s
}

fn booth(x: &[f32]) -> f32 {
    let a = x[0] + 2.0 * x[1] - 7.0;
    let b = 2.0 * x[0] + x[1] - 5.0;
    a * a + b * b
}

/// Σ of the absolute values of the terms the function adds: the scale of its f32 rounding.
fn magnitude(name: &str, x: &[f32]) -> f64 {
    let x: Vec<f64> = x.iter().map(|v| f64::from(*v)).collect();
    match name {
        "quad" => {
            x.iter()
                .enumerate()
                .map(|(i, v)| (2 * i + 1) as f64 * v * v)
                .sum::<f64>()
                + (x[0] * x[1]).abs()
        }
        "rosenbrock" => (0..x.len() - 1)
            .map(|i| {
                100.0 * (x[i + 1] - x[i] * x[i]).powi(2)
                    + (1.0 - x[i]).powi(2)
                    + 100.0 * x[i + 1].abs()
            })
            .sum(),
        "booth" => (x[0] + 2.0 * x[1] - 7.0).powi(2) + (2.0 * x[0] + x[1] - 5.0).powi(2) + 7.0,
        other => panic!("unknown function {other}"),
    }
}

fn function(name: &str) -> fn(&[f32]) -> f32 {
    match name {
        "quad" => quad,
        "rosenbrock" => rosenbrock,
        "booth" => booth,
        other => panic!("unknown function {other}"),
    }
}

#[test]
fn fdm_matches_torchzero_reference_cases() {
    let gpu = common::gpu();
    let cases = common::reference_cases("torchzero_fdm.json");
    assert_eq!(cases.len(), 36, "the reference file has 36 cases");
    let mut worst = 0.0f64;
    for case in &cases {
        let name = case["function"].as_str().unwrap();
        let formula: Formula = case["formula"].as_str().unwrap().parse().unwrap();
        let h = case["h"].as_f64().unwrap() as f32;
        let x0 = common::floats(&case["x0"]);
        let want = common::floats(&case["grad"]);
        let f = function(name);
        // Split into two buffers: Fdm works in global order across buffers.
        let mut x = Params::from_slices(&gpu, &common::split(&x0, &[1])).unwrap();
        let mut g = x.zeros_like().unwrap();
        let mut loss = |p: &Params| -> Result<f32> { Ok(f(&p.to_vec()?)) };
        let e = Fdm::new()
            .h(h)
            .formula(formula)
            .approximate(&gpu, &mut x, &mut loss, &mut g)
            .unwrap();
        let what = format!("{name} {formula} h={h}");
        assert_eq!(
            u64::from(e.evaluations),
            case["evaluations"].as_u64().unwrap(),
            "{what}: evaluations"
        );
        assert_eq!(
            e.loss.is_some(),
            !case["loss"].is_null(),
            "{what}: loss presence"
        );
        assert_eq!(
            e.loss_approx.is_some(),
            !case["loss_approx"].is_null(),
            "{what}: loss_approx presence"
        );
        for (ours, theirs) in [
            (e.loss, &case["loss"]),
            (e.loss_approx, &case["loss_approx"]),
        ] {
            if let (Some(a), Some(b)) = (ours, theirs.as_f64()) {
                // f(x), or f(x + h e_last) for Central: the same function at the same point,
                // summed in another order — a few ε of the terms' magnitude apart.
                let mut xl = x0.clone();
                *xl.last_mut().unwrap() += h;
                let tol =
                    4.0 * f64::from(f32::EPSILON) * magnitude(name, &xl).max(magnitude(name, &x0));
                assert!(
                    (f64::from(a) - b).abs() <= tol,
                    "{what}: loss {a} vs torchzero {b}"
                );
            }
        }
        let got = g.to_vec().unwrap();
        // The f32 noise of D: the loss's rounding (scale of its terms times a few ε) and the
        // representation of the points x_i + k·h (one ulp of x_i times |∂f/∂x_i|), each
        // multiplied by the formula's Σ|w|/(denominator·h).
        let gain = (formula.weights().iter().map(|w| w.abs()).sum::<i32>()
            + formula.f0_weight().abs()) as f64
            / (f64::from(formula.denominator()) * f64::from(h));
        for i in 0..x0.len() {
            let mut xi = x0.clone();
            xi[i] += 2.0 * h;
            let scale = magnitude(name, &x0).max(magnitude(name, &xi));
            let ulp = f64::from(x0[i].abs() + 2.0 * h) * f64::from(f32::EPSILON);
            let noise = gain
                * (4.0 * f64::from(f32::EPSILON) * scale + 2.0 * ulp * f64::from(want[i].abs()));
            let diff = f64::from((got[i] - want[i]).abs());
            worst = worst.max(diff / noise);
            assert!(
                diff <= noise,
                "{what}: grad[{i}] = {} vs torchzero {} (noise bound {noise:e})",
                got[i],
                want[i]
            );
        }
        // Fdm restores exactly (torchzero drifts; x_after records that).
        assert_eq!(
            x.to_vec().unwrap(),
            x0,
            "{what}: parameters restored bit-exactly"
        );
    }
    eprintln!("largest |zograd - torchzero| / noise bound: {worst:.3}");
}

fn smooth(x: &[f32]) -> f32 {
    (x.iter().map(|v| f64::from(*v).sin()).sum::<f64>() - 1.25) as f32
}

#[test]
fn halving_h_shrinks_the_error_by_two_to_the_order() {
    let gpu = common::gpu();
    let x0 = [0.3f32, 0.7, 1.1, -0.5];
    let truth: Vec<f64> = x0.iter().map(|v| f64::from(*v).cos()).collect();
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(smooth(&p.to_vec()?)) };
    for formula in Formula::ALL {
        let mut err = [0.0f64; 2];
        for (j, h) in [0.2f32, 0.1].into_iter().enumerate() {
            Fdm::new()
                .h(h)
                .formula(formula)
                .approximate(&gpu, &mut x, &mut loss, &mut g)
                .unwrap();
            let got = g.to_vec().unwrap();
            err[j] = got
                .iter()
                .zip(&truth)
                .map(|(a, b)| (f64::from(*a) - b).powi(2))
                .sum::<f64>()
                .sqrt();
        }
        let ratio = err[0] / err[1];
        let expect = 2f64.powi(formula.order() as i32);
        eprintln!(
            "{formula}: error {:.3e} -> {:.3e}, ratio {ratio:.2} (2^{})",
            err[0],
            err[1],
            formula.order()
        );
        if formula.order() >= 4 {
            assert!(
                ratio > 10.0,
                "{formula}: halving h shrank the error only {ratio:.2}x"
            );
        } else {
            assert!(
                ratio > 0.8 * expect && ratio < 1.25 * expect,
                "{formula}: halving h shrank the error {ratio:.2}x, expected about {expect}"
            );
        }
    }
    // Central4 and Forward5 beat Central at the same h.
    let errs: Vec<f64> = [Formula::Central, Formula::Central4, Formula::Forward5]
        .iter()
        .map(|f| {
            Fdm::new()
                .h(0.1)
                .formula(*f)
                .approximate(&gpu, &mut x, &mut loss, &mut g)
                .unwrap();
            let got = g.to_vec().unwrap();
            got.iter()
                .zip(&truth)
                .map(|(a, b)| (f64::from(*a) - b).abs())
                .fold(0.0, f64::max)
        })
        .collect();
    assert!(
        errs[1] < errs[0] / 10.0 && errs[2] < errs[0] / 10.0,
        "{errs:?}"
    );
}

#[test]
fn fdm_evaluation_counts_and_loss_fields_follow_the_formula() {
    let gpu = common::gpu();
    let x0 = common::data(3, 5);
    let mut x = Params::from_slices(&gpu, &[&x0[..2], &x0[2..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let calls = AtomicUsize::new(0);
    let mut loss = |p: &Params| -> Result<f32> {
        calls.fetch_add(1, Ordering::Relaxed);
        Ok(quad(&p.to_vec()?))
    };
    let n = 5u32;
    for (formula, expected) in [
        (Formula::Forward, n + 1),
        (Formula::Backward, n + 1),
        (Formula::Central, 2 * n),
        (Formula::Forward3, 2 * n + 1),
        (Formula::Backward3, 2 * n + 1),
        (Formula::Central4, 4 * n),
        (Formula::Forward4, 3 * n + 1),
        (Formula::Forward5, 4 * n + 1),
    ] {
        calls.store(0, Ordering::Relaxed);
        let e = Fdm::new()
            .formula(formula)
            .approximate(&gpu, &mut x, &mut loss, &mut g)
            .unwrap();
        assert_eq!(e.evaluations, expected, "{formula}");
        assert_eq!(
            calls.load(Ordering::Relaxed) as u32,
            expected,
            "{formula}: calls into the objective"
        );
        assert_eq!(
            formula.evaluations(u64::from(n)),
            expected,
            "{formula}: Formula::evaluations"
        );
        let f0 = quad(&x0);
        if formula.uses_f0() {
            assert_eq!(e.loss, Some(f0), "{formula}");
            assert_eq!(e.loss_approx, Some(f0), "{formula}");
        } else {
            assert_eq!(e.loss, None, "{formula}");
            // f(x + h e_last): the first point of the last element.
            let mut last = x0.clone();
            last[4] = (f64::from(last[4]) + f64::from(1e-3f32)) as f32;
            assert_eq!(e.loss_approx, Some(quad(&last)), "{formula}");
        }
        // A known loss saves the f0 evaluation.
        calls.store(0, Ordering::Relaxed);
        let e = Fdm::new()
            .formula(formula)
            .approximate_with_loss(&gpu, &mut x, &mut loss, &mut g, f0)
            .unwrap();
        let saved = u32::from(formula.uses_f0());
        assert_eq!(e.evaluations, expected - saved, "{formula} with known loss");
        assert_eq!(calls.load(Ordering::Relaxed) as u32, expected - saved);
        assert_eq!(x.to_vec().unwrap(), x0);
    }
}

/// A batching objective: evaluates the coordinate points on the host from one download.
struct Batched {
    calls: usize,
    batches: Vec<usize>,
}

impl Objective for Batched {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.calls += 1;
        Ok(quad(&params.to_vec()?))
    }

    fn has_batch(&self) -> bool {
        true
    }

    fn loss_batch_coords(
        &mut self,
        params: &mut Params,
        points: &[Coordinate],
    ) -> Result<Vec<f32>> {
        self.batches.push(points.len());
        let x = params.to_vec()?;
        Ok(points
            .iter()
            .map(|p| {
                assert_eq!(
                    x[p.index as usize], p.original,
                    "original value handed over"
                );
                let mut y = x.clone();
                y[p.index as usize] = p.value;
                quad(&y)
            })
            .collect())
    }
}

#[test]
fn fdm_hands_points_to_loss_batch_coords_in_batches() {
    let gpu = common::gpu();
    let x0 = common::data(5, 7);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g_batched = x.zeros_like().unwrap();
    let mut g_plain = x.zeros_like().unwrap();
    let mut obj = Batched {
        calls: 0,
        batches: Vec::new(),
    };
    let e = Fdm::new()
        .formula(Formula::Forward3)
        .batch_size(5)
        .approximate(&gpu, &mut x, &mut obj, &mut g_batched)
        .unwrap();
    assert_eq!(obj.batches, vec![5, 5, 4], "14 points in batches of 5");
    assert_eq!(obj.calls, 1, "only f0 through loss()");
    assert_eq!(e.evaluations, 15);
    let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
    let e2 = Fdm::new()
        .formula(Formula::Forward3)
        .approximate(&gpu, &mut x, &mut loss, &mut g_plain)
        .unwrap();
    assert_eq!(e, e2);
    assert_eq!(
        g_batched.to_vec().unwrap(),
        g_plain.to_vec().unwrap(),
        "same points, same gradient"
    );
    assert_eq!(x.to_vec().unwrap(), x0);
    // The default loss_batch_coords (for objectives that only say has_batch) writes and restores.
    struct Defaulted;
    impl Objective for Defaulted {
        fn loss(&mut self, params: &Params) -> Result<f32> {
            Ok(quad(&params.to_vec()?))
        }
        fn has_batch(&self) -> bool {
            true
        }
    }
    let e3 = Fdm::new()
        .formula(Formula::Forward3)
        .approximate(&gpu, &mut x, &mut Defaulted, &mut g_batched)
        .unwrap();
    assert_eq!(e3, e2);
    assert_eq!(g_batched.to_vec().unwrap(), g_plain.to_vec().unwrap());
    assert_eq!(x.to_vec().unwrap(), x0);
}

#[derive(Debug)]
struct Boom;
impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}
impl std::error::Error for Boom {}

#[test]
fn fdm_bad_inputs_and_failures_leave_params_bit_identical() {
    let gpu = common::gpu();
    let x0 = common::data(8, 6);
    let mut x = Params::from_slices(&gpu, &[&x0[..4], &x0[4..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
    for h in [0.0f32, -1e-3, f32::NAN, f32::INFINITY] {
        let err = Fdm::new()
            .h(h)
            .approximate(&gpu, &mut x, &mut loss, &mut g)
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidArgument(m) if m.starts_with("h:")),
            "h = {h}: {err}"
        );
    }
    let err = Fdm::new()
        .batch_size(0)
        .approximate(&gpu, &mut x, &mut loss, &mut g)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.starts_with("batch_size:")),
        "{err}"
    );
    let mut wrong = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let err = Fdm::new()
        .approximate(&gpu, &mut x, &mut loss, &mut wrong)
        .unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m.starts_with("grad:")),
        "{err}"
    );
    assert_eq!(x.to_vec().unwrap(), x0);

    // NaN at the 8th evaluation (element 3): NonFiniteLoss, element written back.
    let mut count = 0;
    let mut nan_loss = |p: &Params| -> Result<f32> {
        count += 1;
        Ok(if count == 8 {
            f32::NAN
        } else {
            quad(&p.to_vec()?)
        })
    };
    let err = Fdm::new()
        .approximate(&gpu, &mut x, &mut nan_loss, &mut g)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NonFiniteLoss { value, context } if value.is_nan() && context.contains("element 3")),
        "{err}"
    );
    assert_eq!(x.to_vec().unwrap(), x0);

    // A closure error becomes Error::Objective, after restoring.
    let mut count = 0;
    let mut failing = |p: &Params| -> std::result::Result<f32, Boom> {
        count += 1;
        if count == 5 {
            return Err(Boom);
        }
        Ok(quad(&p.to_vec().unwrap()))
    };
    let err = Fdm::new()
        .approximate(&gpu, &mut x, &mut failing, &mut g)
        .unwrap_err();
    assert!(
        matches!(&err, Error::Objective(e) if e.to_string() == "boom"),
        "{err}"
    );
    assert_eq!(x.to_vec().unwrap(), x0);

    // A panicking objective: the drop guard writes the element back during unwinding.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut count = 0;
        let mut panicking = |p: &Params| -> f32 {
            count += 1;
            assert!(count != 4, "objective panics");
            quad(&p.to_vec().unwrap())
        };
        let _ = Fdm::new().approximate(&gpu, &mut x, &mut panicking, &mut g);
    }));
    assert!(caught.is_err());
    assert_eq!(x.to_vec().unwrap(), x0);
    let _: Estimate = Fdm::new()
        .approximate(&gpu, &mut x, &mut loss, &mut g)
        .unwrap();
}
