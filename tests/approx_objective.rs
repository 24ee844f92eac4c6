// SPDX-License-Identifier: MIT OR Apache-2.0
//! The `Objective` trait: closure impls, error mapping, the default batch methods and the
//! estimators' use of them.

mod common;

use zograd::approx::{
    Distribution, Formula, GradApproximator, MeZo, Objective, RandomizedFdm, Spsa,
};
use zograd::kernels::Direction;
use zograd::{Coordinate, Error, Params, Result};

fn sumsq(p: &Params) -> Result<f32> {
    Ok(p.to_vec()?
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>() as f32)
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
fn closures_are_objectives_and_errors_map() {
    let gpu = common::gpu();
    let x = Params::from_slices(&gpu, &[&[1.0f32, 2.0][..]]).unwrap();
    let mut plain = |p: &Params| -> f32 { p.len() as f32 };
    assert_eq!(plain.loss(&x).unwrap(), 2.0);
    let mut fallible = |_: &Params| -> std::result::Result<f32, Boom> { Err(Boom) };
    let err = fallible.loss(&x).unwrap_err();
    assert!(
        matches!(&err, Error::Objective(e) if e.to_string() == "boom"),
        "{err}"
    );
    // A zograd error raised inside the closure keeps its variant.
    let mut inner =
        |_: &Params| -> Result<f32> { Err(Error::InvalidArgument("inner: test".into())) };
    let err = inner.loss(&x).unwrap_err();
    assert!(
        matches!(&err, Error::InvalidArgument(m) if m == "inner: test"),
        "{err}"
    );
    assert!(!plain.has_batch());
    let dir = Direction {
        distribution: Distribution::Rademacher,
        seed: 1,
        step: 0,
        sample: 0,
    };
    assert!(matches!(plain.jvp(&x, &dir), Err(Error::Unsupported(_))));
}

#[test]
fn default_batch_methods_perturb_evaluate_and_restore() {
    let gpu = common::gpu();
    let x0 = common::data(40, 300);
    let mut x = Params::from_slices(&gpu, &[&x0[..100], &x0[100..]]).unwrap();
    let mut loss = sumsq;
    let dir = Direction {
        distribution: Distribution::Rademacher,
        seed: 5,
        step: 1,
        sample: 3,
    };
    let values = loss
        .loss_batch(&mut x, &[(dir, 0.5), (dir, -0.25)])
        .unwrap();
    for (v, scale) in values.iter().zip([0.5f32, -0.25]) {
        let mut y = x0.clone();
        zograd::cpu::perturb(&mut y, 0, &dir, scale, 300);
        let want = y.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() as f32;
        assert!((v - want).abs() <= 1e-5 * want, "{v} vs {want}");
    }
    let after = x.to_vec().unwrap();
    for (a, b) in after.iter().zip(&x0) {
        assert!((a - b).abs() <= 2.0 * (b.abs() + 0.5) * f32::EPSILON);
    }
    x.write(&x0).unwrap();
    let pts = [Coordinate {
        index: 150,
        value: 3.0,
        original: x0[150],
    }];
    let v = loss.loss_batch_coords(&mut x, &pts).unwrap();
    let mut y = x0.clone();
    y[150] = 3.0;
    assert_eq!(
        v[0],
        y.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() as f32
    );
    assert_eq!(x.to_vec().unwrap(), x0);
    // A failing loss inside the default batch: restored before the error returns.
    let mut calls = 0;
    let mut failing = |p: &Params| -> std::result::Result<f32, Boom> {
        calls += 1;
        if calls == 2 {
            Err(Boom)
        } else {
            Ok(p.len() as f32)
        }
    };
    assert!(failing
        .loss_batch(&mut x, &[(dir, 0.5), (dir, 0.5)])
        .is_err());
    let err = failing.loss_batch_coords(&mut x, &pts);
    assert!(err.is_ok(), "third call succeeds");
    let after = x.to_vec().unwrap();
    for (a, b) in after.iter().zip(&x0) {
        assert!((a - b).abs() <= 2.0 * (b.abs() + 0.5) * f32::EPSILON);
    }
}

/// Says it batches but keeps the default `loss_batch`.
struct DefaultBatch(usize);

impl Objective for DefaultBatch {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.0 += 1;
        sumsq(params)
    }
    fn has_batch(&self) -> bool {
        true
    }
}

/// Batches on the host and counts its calls.
struct HostBatch {
    batch_calls: usize,
    points: usize,
    fail: bool,
}

impl Objective for HostBatch {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        sumsq(params)
    }
    fn has_batch(&self) -> bool {
        true
    }
    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        self.batch_calls += 1;
        self.points += points.len();
        if self.fail {
            return Ok(vec![f32::INFINITY; points.len()]);
        }
        let x = params.to_vec()?;
        let n = x.len() as u64;
        Ok(points
            .iter()
            .map(|(dir, scale)| {
                let mut y = x.clone();
                zograd::cpu::perturb(&mut y, 0, dir, *scale, n);
                y.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() as f32
            })
            .collect())
    }
}

#[test]
fn random_estimators_batch_all_points_in_one_call() {
    let gpu = common::gpu();
    let x0 = common::data(41, 256);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g_seq = x.zeros_like().unwrap();
    let mut g_batch = x.zeros_like().unwrap();
    for formula in [Formula::Central, Formula::Forward5] {
        let make = || {
            RandomizedFdm::new()
                .h(0.05)
                .formula(formula)
                .n_samples(6)
                .seed(8)
                .exact_restore(true)
        };
        let mut seq = make();
        seq.pre_step();
        let e1 = seq
            .approximate(&gpu, &mut x, &mut sumsq, &mut g_seq)
            .unwrap();
        let mut host = HostBatch {
            batch_calls: 0,
            points: 0,
            fail: false,
        };
        let mut bat = make();
        bat.pre_step();
        let e2 = bat
            .approximate(&gpu, &mut x, &mut host, &mut g_batch)
            .unwrap();
        let m = formula.offsets().len();
        assert_eq!(
            (host.batch_calls, host.points),
            (1, 6 * m),
            "{formula}: one loss_batch call"
        );
        assert_eq!(e1.evaluations, e2.evaluations);
        let (a, b) = (g_seq.to_vec().unwrap(), g_batch.to_vec().unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (u, v) in a.iter().zip(&b) {
            assert!(
                (u - v).abs() <= 1e-3 * scale,
                "{formula}: in place {u} vs batched {v}"
            );
        }
        assert_eq!(x.to_vec().unwrap(), x0);
        // The default loss_batch behind has_batch gives the same estimate.
        let mut dflt = DefaultBatch(0);
        let mut est = make();
        est.pre_step();
        est.approximate(&gpu, &mut x, &mut dflt, &mut g_batch)
            .unwrap();
        assert_eq!(dflt.0 as u32, e1.evaluations);
        let c = g_batch.to_vec().unwrap();
        for (u, v) in a.iter().zip(&c) {
            assert!(
                (u - v).abs() <= 1e-3 * scale,
                "{formula}: in place {u} vs default batch {v}"
            );
        }
        assert_eq!(
            x.to_vec().unwrap(),
            x0,
            "exact restore after the default loss_batch"
        );
    }
    // Non-finite batched values: NonFiniteLoss, nothing written.
    let mut host = HostBatch {
        batch_calls: 0,
        points: 0,
        fail: true,
    };
    let err = Spsa::new()
        .approximate(&gpu, &mut x, &mut host, &mut g_batch)
        .unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteLoss { value, .. } if value.is_infinite()),
        "{err}"
    );
    assert_eq!(x.to_vec().unwrap(), x0);
}

#[test]
fn a_known_loss_saves_the_f0_evaluation() {
    let gpu = common::gpu();
    let x0 = common::data(42, 64);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let f0 = sumsq(&x).unwrap();
    let mut est = MeZo::new().formula(Formula::Forward).n_samples(3);
    est.pre_step();
    let e = est.approximate(&gpu, &mut x, &mut sumsq, &mut g).unwrap();
    assert_eq!((e.evaluations, e.loss), (4, Some(f0)));
    let e = est
        .approximate_with_loss(&gpu, &mut x, &mut sumsq, &mut g, f0)
        .unwrap();
    assert_eq!(
        (e.evaluations, e.loss, e.loss_approx),
        (3, Some(f0), Some(f0))
    );
    let err = est
        .approximate_with_loss(&gpu, &mut x, &mut sumsq, &mut g, f32::NAN)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err}");
}

#[test]
fn default_batch_methods_put_x_back_when_the_loss_panics() {
    let gpu = common::gpu();
    // Multiples of 1/8 in [-4, 4): x ± 0.25 is exact in f32, so the opposite move restores
    // bit for bit and any missed restore shows.
    let x0: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let dir = Direction {
        distribution: Distribution::Rademacher,
        seed: 2,
        step: 1,
        sample: 0,
    };
    let coords = [
        Coordinate {
            index: 5,
            value: 9.0,
            original: x0[5],
        },
        Coordinate {
            index: 6,
            value: -9.0,
            original: x0[6],
        },
    ];
    for coordinates in [false, true] {
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut calls = 0;
            let mut panicking = |p: &Params| -> f32 {
                calls += 1;
                assert!(calls != 2, "the loss panics at its second point");
                p.len() as f32
            };
            if coordinates {
                let _ = panicking.loss_batch_coords(&mut x, &coords);
            } else {
                let _ = panicking.loss_batch(&mut x, &[(dir, 0.25), (dir, -0.25)]);
            }
        }));
        assert!(caught.is_err());
        assert_eq!(x.to_vec().unwrap(), x0, "coordinates: {coordinates}");
    }
}
