// SPDX-License-Identifier: MIT OR Apache-2.0
//! Conservative (blocking) steps: `Optimizer::blocking`.

mod common;

use common::gpu;
use zograd::approx::{MeZo, Spsa};
use zograd::optim::{Adam, Blocking, HeavyBall, Lr, Optimizer, StepReport};
use zograd::testfns::Noisy;
use zograd::{Error, Params, Result};

/// Σ x² on the host, in f64.
fn sphere(p: &Params) -> Result<f32> {
    Ok(p.to_vec()?
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>() as f32)
}

fn bits(p: &Params) -> Vec<u32> {
    p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

/// The modules' part of a checkpoint: their metadata (counters such as Adam's t) and tensors
/// (velocity, moments).
fn module_state(opt: &Optimizer) -> (String, Vec<(String, Vec<u32>)>) {
    let ck = opt.to_checkpoint().unwrap();
    let tensors = ck
        .tensors
        .iter()
        .filter(|(n, _)| n.starts_with("module."))
        .map(|(n, t)| (n.clone(), t.iter().map(|v| v.to_bits()).collect()))
        .collect();
    (ck.meta["modules"].to_string(), tensors)
}

/// On a noisy sphere with a learning rate that often overshoots, blocking keeps the sequence
/// of accepted losses from rising by more than the tolerance (each accepted f(x_new) is at most
/// the previous accepted one plus the tolerance), rejected steps leave x bit-identical, and
/// every evaluation is counted. Without blocking the same run rises by more than the
/// tolerance (so the check can fail).
#[test]
fn accepted_losses_never_rise_by_more_than_the_tolerance() {
    let gpu = gpu();
    let x0 = [0.3f32; 16];
    let tol = 0.02f32;
    let run = |blocking: bool| -> (Vec<StepReport>, Vec<f32>) {
        let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
        let mut loss = Noisy::new(sphere, 0.02, 0.0, 3).unwrap();
        let mut opt = Optimizer::new(&gpu, &x, Spsa::new().h(0.01).seed(11))
            .unwrap()
            .then(Lr::new(0.02));
        if blocking {
            opt = opt.blocking(Blocking::tolerance(tol));
        }
        let mut reports = Vec::new();
        let mut after = Vec::new();
        for _ in 0..60 {
            let before = bits(&x);
            let r = opt.step(&mut x, &mut loss).unwrap();
            if !r.accepted {
                assert_eq!(bits(&x), before, "step {}: rejected but x moved", r.step);
            } else if blocking {
                assert_ne!(
                    bits(&x),
                    before,
                    "step {}: accepted but x unchanged",
                    r.step
                );
            }
            after.push(sphere(&x).unwrap());
            reports.push(r);
        }
        (reports, after)
    };
    let (reports, _) = run(true);
    // Step 1 measures f(x₀) (the reference) and hands it to the estimator: 1 + 2 + 1.
    assert_eq!(reports[0].evaluations, 4);
    assert!(reports[0].loss.is_some());
    assert!(reports[1..]
        .iter()
        .all(|r| r.evaluations == 3 && r.loss.is_none()));
    let mut reference = reports[0].loss.unwrap();
    let (mut accepted, mut rejected) = (0, 0);
    for r in &reports {
        let proposed = r.loss_proposed.expect("blocking evaluates f(x_new)");
        assert_eq!(r.accepted, proposed <= reference + tol, "step {}", r.step);
        if r.accepted {
            assert!(proposed <= reference + tol);
            reference = proposed;
            accepted += 1;
        } else {
            rejected += 1;
        }
    }
    assert!(
        accepted >= 5 && rejected >= 5,
        "{accepted} accepted, {rejected} rejected"
    );

    // The same run without blocking: some step raises the (noise-free) loss by more than the
    // tolerance, which blocking prevented.
    let (plain, after) = run(false);
    assert!(plain
        .iter()
        .all(|r| r.accepted && r.loss_proposed.is_none()));
    let mut prev = sphere(&Params::from_slices(&gpu, &[&x0[..]]).unwrap()).unwrap();
    let mut worst = f32::MIN;
    for f in after {
        worst = worst.max(f - prev);
        prev = f;
    }
    assert!(worst > tol, "without blocking the largest rise is {worst}");
}

/// A rejected step leaves x bit-identical (even with an in-place estimator, whose restore
/// drifts) and rolls back the modules' state (HeavyBall's velocity; Adam's moments and step
/// count); an accepted one advances them. The fused MeZO path rejects bit-exactly too.
#[test]
fn a_rejected_step_restores_x_and_the_modules_bit_exactly() {
    let gpu = gpu();
    let x0 = [0.3f32; 16];
    // A noisy sphere: with tolerance 0 about half the steps are rejected.
    for chain in ["heavyball", "adam", "fused"] {
        let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
        let mut loss = Noisy::new(sphere, 0.02, 0.0, 3).unwrap();
        let spsa = || Spsa::new().h(0.01).seed(2);
        let mut opt = match chain {
            "heavyball" => Optimizer::new(&gpu, &x, spsa())
                .unwrap()
                .then(HeavyBall::new(0.9))
                .then(Lr::new(0.01)),
            "adam" => Optimizer::new(&gpu, &x, spsa())
                .unwrap()
                .then(Adam::new())
                .then(Lr::new(0.02)),
            _ => Optimizer::new(&gpu, &x, MeZo::new().h(0.01).seed(2))
                .unwrap()
                .then(Lr::new(0.02)),
        }
        .blocking(Blocking::tolerance(0.0));
        let (mut accepted, mut rejected) = (0, 0);
        for _ in 0..30 {
            let (x_before, m_before) = (bits(&x), module_state(&opt));
            let r = opt.step(&mut x, &mut loss).unwrap();
            let m_after = module_state(&opt);
            if r.accepted {
                accepted += 1;
                assert_ne!(bits(&x), x_before, "{chain}: accepted step left x");
                if chain != "fused" {
                    assert_ne!(m_after, m_before, "{chain}: accepted step left the state");
                }
            } else {
                rejected += 1;
                assert_eq!(bits(&x), x_before, "{chain} step {}: x moved", r.step);
                assert_eq!(
                    m_after, m_before,
                    "{chain} step {}: module state moved",
                    r.step
                );
            }
        }
        assert!(
            accepted >= 3 && rejected >= 3,
            "{chain}: {accepted} accepted, {rejected} rejected"
        );
        assert_eq!(opt.steps(), 30);
        // The fused path keeps no gradient buffer: only the copy of x (n floats).
        if chain == "fused" {
            assert_eq!(opt.state_bytes(), 16 * 4);
        }
    }
}

/// calibrate(k): the tolerance is twice the sample standard deviation (divisor k − 1) of k
/// evaluations at x₀ on the first step — within sampling error of 2σ for noise of known σ
/// (the sample standard deviation of k normals has standard error σ/√(2(k − 1))), and equal
/// to the f64 recomputation from the k noisy values. The first step counts the k evaluations.
#[test]
fn calibrate_estimates_twice_the_noise_sigma() {
    let gpu = gpu();
    let (k, sigma) = (400u32, 0.1f64);
    let mut x = Params::from_slices(&gpu, &[&[0.5f32; 8][..]]).unwrap();
    let constant = |_: &Params| -> Result<f32> { Ok(2.0) };
    let mut loss = Noisy::new(constant, sigma, 0.0, 21).unwrap();
    let mut opt = Optimizer::new(&gpu, &x, Spsa::new().seed(1))
        .unwrap()
        .then(Lr::new(1e-3))
        .blocking(Blocking::calibrate(k));
    assert_eq!(opt.blocking_tolerance(), None);
    let r = opt.step(&mut x, &mut loss).unwrap();
    // k calibration evaluations, 2 for the estimate, 1 at x_new; f(x₀) is the calibration's mean.
    assert_eq!(r.evaluations, k + 3);
    let tol = f64::from(opt.blocking_tolerance().unwrap());
    let se = sigma / (2.0 * f64::from(k - 1)).sqrt();
    assert!(
        (tol / 2.0 - sigma).abs() < 4.0 * se,
        "2σ estimate {tol}, σ = {sigma}"
    );
    // The same statistic from the noisy values themselves (the first k of the noise stream).
    let values: Vec<f64> = (0..u64::from(k))
        .map(|i| f64::from(loss.apply(i, 2.0)))
        .collect();
    let mean = values.iter().sum::<f64>() / f64::from(k);
    let s = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / f64::from(k - 1)).sqrt();
    assert!((tol - 2.0 * s).abs() < 1e-6 * tol, "{tol} vs {}", 2.0 * s);
    // Later steps calibrate nothing.
    let r2 = opt.step(&mut x, &mut loss).unwrap();
    assert_eq!(r2.evaluations, 3);
    assert_eq!(f64::from(opt.blocking_tolerance().unwrap()), tol);
}

/// With a step that knows f(x) (measure_loss), that value is the reference.
#[test]
fn the_step_s_own_loss_is_the_reference_when_known() {
    let gpu = gpu();
    let mut x = Params::from_slices(&gpu, &[&[0.3f32; 16][..]]).unwrap();
    let mut loss = Noisy::new(sphere, 0.02, 0.0, 8).unwrap();
    let tol = 0.01f32;
    let mut opt = Optimizer::new(&gpu, &x, Spsa::new().h(0.01).seed(4))
        .unwrap()
        .then(Lr::new(0.02))
        .measure_loss(true)
        .blocking(Blocking::tolerance(tol));
    let mut rejected = 0;
    for _ in 0..30 {
        let r = opt.step(&mut x, &mut loss).unwrap();
        let (f, p) = (r.loss.unwrap(), r.loss_proposed.unwrap());
        assert_eq!(r.accepted, p <= f + tol, "step {}", r.step);
        assert_eq!(r.evaluations, 4);
        rejected += u32::from(!r.accepted);
    }
    assert!(rejected >= 1);
}

/// Bad settings are InvalidArgument naming the argument, before anything is evaluated.
#[test]
fn bad_blocking_settings_are_rejected_before_evaluating() {
    let gpu = gpu();
    for (b, name) in [
        (Blocking::tolerance(-1.0), "tolerance: "),
        (Blocking::tolerance(f32::NAN), "tolerance: "),
        (Blocking::tolerance(f32::INFINITY), "tolerance: "),
        (Blocking::calibrate(1), "calibrate: "),
        (Blocking::calibrate(0), "calibrate: "),
    ] {
        let mut x = Params::from_slices(&gpu, &[&[1.0f32, 2.0][..]]).unwrap();
        let mut calls = 0;
        let mut loss = |p: &Params| -> Result<f32> {
            calls += 1;
            sphere(p)
        };
        let mut opt = Optimizer::new(&gpu, &x, Spsa::new())
            .unwrap()
            .then(Lr::new(0.1))
            .blocking(b);
        match opt.step(&mut x, &mut loss) {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with(name), "{m}"),
            other => panic!("{b:?}: {other:?}"),
        }
        assert_eq!(calls, 0);
        assert_eq!(opt.steps(), 0);
        assert_eq!(x.to_vec().unwrap(), vec![1.0, 2.0]);
    }
}

/// A failure at f(x_new) fails the step: x is copied back (bit-exact), the counters and the
/// blocking state are as before, and the retried step does what the failed one would have.
#[test]
fn a_failure_at_the_proposed_point_leaves_no_trace() {
    let gpu = gpu();
    let x0 = [0.4f32, -0.7, 0.2];
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut calls = 0u32;
    // Step 1: f(x₀), 2 estimate points, f(x_new) = call 4, which fails the first time.
    let mut failing = |p: &Params| -> Result<f32> {
        calls += 1;
        if calls == 4 {
            return Err(Error::InvalidArgument(
                "objective: simulated failure".into(),
            ));
        }
        sphere(p)
    };
    let mut opt = Optimizer::new(&gpu, &x, Spsa::new().seed(6))
        .unwrap()
        .then(HeavyBall::new(0.9))
        .then(Lr::new(0.1))
        .blocking(Blocking::tolerance(0.0));
    let before = bits(&x);
    assert!(opt.step(&mut x, &mut failing).is_err());
    assert_eq!(bits(&x), before);
    assert_eq!(opt.steps(), 0);
    assert_eq!(opt.blocking_reference(), None);
    let r = opt.step(&mut x, &mut failing).unwrap();
    // A fresh optimiser on a healthy objective does the same step.
    let mut y = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut fresh = Optimizer::new(&gpu, &y, Spsa::new().seed(6))
        .unwrap()
        .then(HeavyBall::new(0.9))
        .then(Lr::new(0.1))
        .blocking(Blocking::tolerance(0.0));
    let mut healthy = sphere;
    let q = fresh.step(&mut y, &mut healthy).unwrap();
    assert_eq!(r, q);
    assert_eq!(bits(&x), bits(&y));
}

/// A checkpoint carries the calibrated tolerance and the reference: a run saved after 4 steps
/// and resumed in a fresh optimiser continues bit for bit (it would recalibrate, and draw k
/// more noisy values, otherwise). A checkpoint with another blocking setting is refused.
#[test]
fn checkpoints_carry_the_blocking_state() {
    let gpu = gpu();
    let x0 = [0.3f32; 16];
    let build = |x: &Params, b: Blocking| {
        Optimizer::new(&gpu, x, Spsa::new().h(0.01).seed(9))
            .unwrap()
            .then(HeavyBall::new(0.5))
            .then(Lr::new(0.03))
            .blocking(b)
    };
    let b = Blocking::calibrate(16);
    // Uninterrupted.
    let mut xa = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut la = Noisy::new(sphere, 0.01, 0.0, 5).unwrap();
    let mut a = build(&xa, b);
    let ra: Vec<StepReport> = (0..10).map(|_| a.step(&mut xa, &mut la).unwrap()).collect();
    // Saved after 4 steps, resumed in a fresh optimiser (same noise stream, continued).
    let mut xb = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut lb = Noisy::new(sphere, 0.01, 0.0, 5).unwrap();
    let mut b1 = build(&xb, b);
    let mut rb: Vec<StepReport> = (0..4).map(|_| b1.step(&mut xb, &mut lb).unwrap()).collect();
    let ck = b1.to_checkpoint().unwrap();
    let mut b2 = build(&xb, b);
    b2.load_checkpoint(&ck).unwrap();
    assert_eq!(b2.blocking_tolerance(), b1.blocking_tolerance());
    assert_eq!(b2.blocking_reference(), b1.blocking_reference());
    rb.extend((0..6).map(|_| b2.step(&mut xb, &mut lb).unwrap()));
    assert_eq!(ra, rb);
    assert_eq!(bits(&xa), bits(&xb));
    assert!(
        ra.iter().any(|r| !r.accepted),
        "the run should reject some step"
    );

    // Another setting, or none, is refused, naming blocking.
    for other in [
        Some(Blocking::calibrate(8)),
        Some(Blocking::tolerance(0.1)),
        None,
    ] {
        let mut c = match other {
            Some(o) => build(&xb, o),
            None => Optimizer::new(&gpu, &xb, Spsa::new().h(0.01).seed(9))
                .unwrap()
                .then(HeavyBall::new(0.5))
                .then(Lr::new(0.03)),
        };
        match c.load_checkpoint(&ck) {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with("blocking: "), "{m}"),
            r => panic!("{other:?}: {r:?}"),
        }
    }
}

/// Run's summary counts the rejected steps.
#[test]
fn run_summaries_count_rejected_steps() {
    let gpu = gpu();
    let mut x = Params::from_slices(&gpu, &[&[0.3f32; 16][..]]).unwrap();
    let mut loss = Noisy::new(sphere, 0.02, 0.0, 3).unwrap();
    let mut opt = Optimizer::new(&gpu, &x, Spsa::new().h(0.01).seed(11))
        .unwrap()
        .then(Lr::new(0.02))
        .blocking(Blocking::tolerance(0.02));
    let mut seen = 0u64;
    let summary = opt
        .run()
        .max_steps(40)
        .observe(|r| {
            seen += u64::from(!r.accepted);
            zograd::optim::Control::Continue
        })
        .until_done(&mut x, &mut loss)
        .unwrap();
    assert_eq!(summary.steps, 40);
    assert_eq!(summary.rejected, seen);
    assert!(seen >= 1);
}
