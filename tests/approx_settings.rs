// SPDX-License-Identifier: MIT OR Apache-2.0
//! Settings shared by the estimators: the presets are `RandomizedFdm`s with the textbook
//! settings of SPSA, RDSA and Gaussian smoothing for every `GradApproximator` method, the
//! opt-in `allow_non_finite` (default: `Error::NonFiniteLoss`), and `Formula::combine`'s
//! named errors.

mod common;

use zograd::approx::{
    Distribution, Fdm, Formula, ForwardGradient, GaussianSmoothing, GradApproximator, Jvp, MeZo,
    Objective, RandomizedFdm, Rdsa, Spsa, Target,
};
use zograd::kernels::Direction;
use zograd::optim::{Lr, Optimizer};
use zograd::{Error, Gpu, Params, Result};

fn quad(x: &[f32]) -> f32 {
    x.iter().map(|v| v * v).sum()
}

/// Calls every `GradApproximator` method on `est` and records what each returned (gradients
/// bit for bit). Two estimators with equal traces behave the same for every trait method.
fn trace(est: &mut dyn GradApproximator, gpu: &Gpu, x0: &[f32]) -> Vec<String> {
    let mut x = Params::from_slices(gpu, &[x0]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
    let mut out = vec![
        format!("target {:?}", est.current_target()),
        format!("exact {}", est.restores_exactly()),
        format!("fuse {}", est.can_fuse()),
    ];
    let bits =
        |g: &Params| -> Vec<u32> { g.to_vec().unwrap().iter().map(|v| v.to_bits()).collect() };
    est.pre_step();
    let e = est.approximate(gpu, &mut x, &mut loss, &mut g).unwrap();
    out.push(format!("approximate {e:?} {:?}", bits(&g)));
    let e = est
        .approximate_with_loss(gpu, &mut x, &mut loss, &mut g, 7.0)
        .unwrap();
    out.push(format!("with_loss {e:?} {:?}", bits(&g)));
    est.pre_step();
    est.abort_step();
    let e = est.approximate(gpu, &mut x, &mut loss, &mut g).unwrap();
    out.push(format!("after abort {e:?} {:?}", bits(&g)));
    out.push(format!("bytes {}", est.state_bytes()));
    let fused = est.fused_step(gpu, &mut x, &mut loss, 1.0, 0.1);
    out.push(format!("fused {:?}", fused.map_err(|e| e.to_string())));
    out.push(format!("x {:?}", x.to_vec().unwrap()));
    out
}

#[test]
fn presets_equal_randomized_fdm_with_the_textbook_settings_for_every_trait_method() {
    let gpu = common::gpu();
    let x0 = common::data(5, 48);
    // The textbook settings, spelled out (torchzero's defaults for each method): SPSA is
    // central differences along Rademacher directions, RDSA along Gaussian ones, Gaussian
    // smoothing forward differences along 100 Gaussian directions with h = 1e-2.
    let textbook = |h: f32, s: u32, formula: Formula, d: Distribution| {
        RandomizedFdm::new()
            .h(h)
            .n_samples(s)
            .formula(formula)
            .distribution(d)
            .pre_generate(true)
            .beta(0.0)
            .seed(21)
            .target(Target::Closure)
    };
    let cases: [(&str, RandomizedFdm, RandomizedFdm, u32); 3] = [
        (
            "Spsa",
            Spsa::new().seed(21),
            textbook(1e-3, 1, Formula::Central, Distribution::Rademacher),
            2,
        ),
        (
            "Rdsa",
            Rdsa::new().seed(21),
            textbook(1e-3, 1, Formula::Central, Distribution::Gaussian),
            2,
        ),
        (
            "GaussianSmoothing",
            GaussianSmoothing::new().seed(21),
            textbook(1e-2, 100, Formula::Forward, Distribution::Gaussian),
            101,
        ),
    ];
    for (name, mut preset, mut reference, evaluations) in cases {
        let a = trace(&mut preset, &gpu, &x0);
        let b = trace(&mut reference, &gpu, &x0);
        assert_eq!(a, b, "{name}");
        assert!(
            a[3].contains(&format!("evaluations: {evaluations} ")),
            "{name}: {}",
            a[3]
        );
    }
    // A preset takes every RandomizedFdm setting (and old code's `into_inner` still compiles).
    let mut exact = Spsa::new().seed(3).exact_restore(true).into_inner();
    assert!(exact.restores_exactly());
    assert_eq!(exact.current_seed(), 3);
    exact.pre_step();
    assert_eq!(exact.current_step(), 1);
    // The presets differ where the textbook says they do.
    let first = |e: RandomizedFdm| -> Direction { e.next_directions()[0] };
    assert_eq!(first(Spsa::new()).distribution, Distribution::Rademacher);
    assert_eq!(first(Rdsa::new()).distribution, Distribution::Gaussian);
    assert_eq!(GaussianSmoothing::new().next_directions().len(), 100);
}

/// f(x) = Σ x², except NaN (or `bad`) at evaluation number `at` (1-based), counted in `calls`.
struct BadAt {
    at: u32,
    bad: f32,
    calls: u32,
}

impl Objective for BadAt {
    fn loss(&mut self, p: &Params) -> Result<f32> {
        self.calls += 1;
        Ok(if self.calls == self.at {
            self.bad
        } else {
            quad(&p.to_vec()?)
        })
    }

    /// A JVP of 1 along every direction, except `bad` at call number `at`.
    fn jvp(&mut self, p: &Params, dir: &Direction) -> Result<f32> {
        let _ = (p, dir);
        self.calls += 1;
        Ok(if self.calls == self.at { self.bad } else { 1.0 })
    }
}

/// Runs `est` with a loss that is `bad` at evaluation `at`; returns the result and the
/// gradient, and checks that x came back bit-identical either way.
fn run_bad(
    est: &mut dyn GradApproximator,
    gpu: &Gpu,
    x0: &[f32],
    at: u32,
    bad: f32,
) -> (Result<zograd::approx::Estimate>, Vec<f32>) {
    let mut x = Params::from_slices(gpu, &[x0]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut obj = BadAt { at, bad, calls: 0 };
    est.pre_step();
    let r = est.approximate(gpu, &mut x, &mut obj, &mut g);
    assert_eq!(x.to_vec().unwrap(), x0, "x restored");
    (r, g.to_vec().unwrap())
}

#[test]
fn non_finite_losses_fail_by_default_and_propagate_when_allowed() {
    let gpu = common::gpu();
    let x0 = common::data(9, 32);
    type Make = fn(bool) -> Box<dyn GradApproximator>;
    let estimators: [(&str, Make); 6] = [
        ("RandomizedFdm", |allow| {
            Box::new(
                RandomizedFdm::new()
                    .n_samples(2)
                    .seed(1)
                    .exact_restore(true)
                    .allow_non_finite(allow),
            )
        }),
        ("RandomizedFdm(beta)", |allow| {
            Box::new(
                RandomizedFdm::new()
                    .n_samples(2)
                    .beta(0.5)
                    .seed(1)
                    .exact_restore(true)
                    .allow_non_finite(allow),
            )
        }),
        ("Spsa", |allow| {
            Box::new(
                Spsa::new()
                    .seed(1)
                    .exact_restore(true)
                    .allow_non_finite(allow),
            )
        }),
        ("MeZo", |allow| {
            Box::new(
                MeZo::new()
                    .seed(1)
                    .exact_restore(true)
                    .allow_non_finite(allow),
            )
        }),
        ("ForwardGradient", |allow| {
            Box::new(
                ForwardGradient::new()
                    .seed(1)
                    .exact_restore(true)
                    .allow_non_finite(allow),
            )
        }),
        ("ForwardGradient(User)", |allow| {
            Box::new(
                ForwardGradient::new()
                    .jvp(Jvp::User)
                    .n_samples(2)
                    .seed(1)
                    .allow_non_finite(allow),
            )
        }),
    ];
    for (name, make) in estimators {
        for bad in [f32::NAN, f32::INFINITY] {
            // The default: the error names the value, x is restored.
            let (r, _) = run_bad(make(false).as_mut(), &gpu, &x0, 2, bad);
            match r {
                Err(Error::NonFiniteLoss { value, .. }) => {
                    assert_eq!(value.to_bits(), bad.to_bits(), "{name}");
                }
                other => panic!("{name}: expected NonFiniteLoss, got {other:?}"),
            }
            // Opted in: Ok, and the bad value reaches every element of the estimate (every
            // direction element is non-zero, so D·u is NaN or ±∞ everywhere).
            let (r, g) = run_bad(make(true).as_mut(), &gpu, &x0, 2, bad);
            let e = r.unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(e.evaluations >= 2, "{name}");
            if bad.is_nan() {
                assert!(g.iter().all(|v| v.is_nan()), "{name}: {g:?}");
            } else {
                assert!(g.iter().all(|v| v.is_infinite()), "{name}: {g:?}");
            }
        }
    }

    // Fdm: only the element whose point was NaN gets a NaN derivative; the others are the
    // textbook central difference of Σ x² (2·x_i up to f32 rounding of the loss).
    let mut fdm = Fdm::new().allow_non_finite(true);
    // Element 3's first point is evaluation 7 (two per element).
    let (r, g) = run_bad(&mut fdm, &gpu, &x0, 7, f32::NAN);
    assert_eq!(r.unwrap().evaluations, 64);
    for (i, (gi, xi)) in g.iter().zip(&x0).enumerate() {
        if i == 3 {
            assert!(gi.is_nan());
        } else {
            assert!(
                (gi - 2.0 * xi).abs() < 5e-3,
                "element {i}: {gi} vs {}",
                2.0 * xi
            );
        }
    }
    let (r, _) = run_bad(&mut Fdm::new(), &gpu, &x0, 7, f32::NAN);
    assert!(matches!(r, Err(Error::NonFiniteLoss { .. })), "{r:?}");

    // The fused MeZO step: by default the error, x bit-identical; opted in, the NaN reaches x.
    for allow in [false, true] {
        let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
        let mezo = MeZo::new()
            .seed(2)
            .exact_restore(true)
            .allow_non_finite(allow);
        let mut opt = Optimizer::new(&gpu, &x, mezo).unwrap().then(Lr::new(0.1));
        let mut obj = BadAt {
            at: 2,
            bad: f32::NAN,
            calls: 0,
        };
        let r = opt.step(&mut x, &mut obj);
        let after = x.to_vec().unwrap();
        if allow {
            r.unwrap();
            assert!(after.iter().all(|v| v.is_nan()), "{after:?}");
        } else {
            assert!(matches!(r, Err(Error::NonFiniteLoss { .. })), "{r:?}");
            assert_eq!(after, x0);
        }
    }

    // A NaN loss handed in by the caller: the Forward formula uses it as f₀.
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
    let mut est = RandomizedFdm::new()
        .formula(Formula::Forward)
        .seed(4)
        .allow_non_finite(true);
    est.pre_step();
    let e = est
        .approximate_with_loss(&gpu, &mut x, &mut loss, &mut g, f32::NAN)
        .unwrap();
    assert!(e.loss.unwrap().is_nan());
    assert!(g.to_vec().unwrap().iter().all(|v| v.is_nan()));
    let err = RandomizedFdm::new()
        .formula(Formula::Forward)
        .approximate_with_loss(&gpu, &mut x, &mut loss, &mut g, f32::NAN)
        .unwrap_err();
    assert!(matches!(err, Error::NonFiniteLoss { .. }), "{err}");
}

#[test]
fn formula_combine_names_bad_arguments() {
    // Textbook: central difference (f(x+h) − f(x−h))/(2h), forward (f(x+h) − f(x))/h.
    let c = Formula::Central.combine(None, &[3.0, 1.0], 0.5).unwrap();
    assert_eq!(c, 2.0);
    let f = Formula::Forward.combine(Some(1.0), &[2.0], 0.25).unwrap();
    assert_eq!(f, 4.0);
    common::invalid_naming(
        Formula::Central.combine(None, &[1.0], 0.1),
        &["values", "central", "2", "got 1"],
    );
    common::invalid_naming(
        Formula::Forward.combine(None, &[1.0], 0.1),
        &["f0", "forward"],
    );
    for h in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let r = Formula::Central.combine(None, &[1.0, 0.0], h);
        match r {
            Err(Error::InvalidArgument(m)) => assert!(m.starts_with("h:"), "{m}"),
            other => panic!("h = {h}: {other:?}"),
        }
    }
}

#[test]
fn mezo_takes_pre_generate_from_the_shared_core() {
    let gpu = common::gpu();
    let x0 = common::data(12, 40);
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
    let samples = |m: &MeZo| -> Vec<u32> { m.next_directions().iter().map(|d| d.sample).collect() };
    // Default: every call of a step draws samples 0 … S − 1.
    let mut same = MeZo::new().n_samples(2).seed(3);
    same.pre_step();
    same.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
    assert_eq!(samples(&same), [0, 1]);
    // pre_generate(false): the second call of the step draws samples 2 and 3, and its gradient
    // is the one of those directions (the textbook SPSA term D_s·u_s with D_s ≈ ∇f·u_s = 2x·u_s
    // up to O(h²)).
    let mut fresh = MeZo::new().n_samples(2).seed(3).pre_generate(false);
    fresh.pre_step();
    fresh.approximate(&gpu, &mut x, &mut loss, &mut g).unwrap();
    assert_eq!(samples(&fresh), [2, 3]);
    let (_, terms) = fresh.estimate_terms(&gpu, &mut x, &mut loss, None).unwrap();
    assert_eq!(terms.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 3]);
    for (s, c) in terms {
        let u: Vec<f32> = (0..40)
            .map(|i| zograd::rng::perturbation(Distribution::Rademacher, 3, 1, s, i))
            .collect();
        let d: f32 = x0.iter().zip(&u).map(|(x, u)| 2.0 * x * u).sum();
        assert!(
            (2.0 * c - d).abs() < 1e-2 * (1.0 + d.abs()),
            "sample {s}: {c} vs {d}/2"
        );
    }
}
