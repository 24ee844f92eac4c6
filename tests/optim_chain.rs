// SPDX-License-Identifier: MIT OR Apache-2.0
//! The optimiser chain: each module against its CPU twin, the line search and Newton-CG on
//! exact gradients, the fused MeZO step against the unfused chain, and bad hyper-parameters.

mod common;

use common::{assert_close, data, gpu, split};
use zograd::approx::{Estimate, Fdm, GradApproximator, MeZo, Target};
use zograd::kernels::{adam, heavy_ball, sign};
use zograd::optim::{
    Adam, Backtracking, ClipNorm, HeavyBall, Hvp, Lr, NewtonCg, Optimizer, Sign, WeightDecay,
};
use zograd::{cpu, Error, Gpu, Objective, Params, Result};

/// A quadratic f(x) = ½ Σ a_i x_i² with a_i = 1 + i % 5, its gradient exact.
fn quad(x: &[f32]) -> f32 {
    x.iter()
        .enumerate()
        .map(|(i, v)| 0.5 * (1.0 + (i % 5) as f32) * v * v)
        .sum()
}

fn quad_grad(x: &[f32]) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, v)| (1.0 + (i % 5) as f32) * v)
        .collect()
}

/// An approximator that returns the exact gradient of [`quad`] (downloads x, uploads g): the
/// modules' arithmetic can then be checked exactly.
#[derive(Debug, Default)]
struct Exact {
    calls: u32,
}

impl GradApproximator for Exact {
    fn approximate(
        &mut self,
        _: &Gpu,
        params: &mut Params,
        _: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate> {
        self.calls += 1;
        grad.write(&quad_grad(&params.to_vec()?))?;
        Ok(Estimate::default())
    }
}

fn host_loss(p: &Params) -> Result<f32> {
    Ok(quad(&p.to_vec()?))
}

#[test]
fn module_kernels_match_their_cpu_twins() {
    let g = gpu();
    let u0 = data(1, 3001);
    let v0 = data(2, 3001);
    let w0: Vec<f32> = data(3, 3001).iter().map(|v| v.abs()).collect();
    let lens = [1000, 1];
    let mut u = Params::from_slices(&g, &split(&u0, &lens)).unwrap();
    let mut v = Params::from_slices(&g, &split(&v0, &lens)).unwrap();
    let (mut cu, mut cv) = (u0.clone(), v0.clone());
    heavy_ball(&mut u, &mut v, 0.9).unwrap();
    cpu::heavy_ball(&mut cu, &mut cv, 0.9);
    assert_close(&u.to_vec().unwrap(), &cu, 0.0, 0.0, "heavy ball: update");
    assert_close(&v.to_vec().unwrap(), &cv, 0.0, 0.0, "heavy ball: velocity");

    let mut m = Params::from_slices(&g, &split(&v0, &lens)).unwrap();
    let mut s = Params::from_slices(&g, &split(&w0, &lens)).unwrap();
    let (mut cm, mut cs) = (v0.clone(), w0.clone());
    for t in 1..=3 {
        adam(&mut u, &mut m, &mut s, (0.9, 0.999, 1e-8), t).unwrap();
        cpu::adam(&mut cu, &mut cm, &mut cs, (0.9, 0.999, 1e-8), t);
    }
    assert_close(&u.to_vec().unwrap(), &cu, 1e-6, 1e-5, "adam: update");
    assert_close(&m.to_vec().unwrap(), &cm, 1e-7, 1e-6, "adam: m");
    assert_close(&s.to_vec().unwrap(), &cs, 1e-7, 1e-6, "adam: v");

    let mut z0 = u0.clone();
    z0[5] = 0.0;
    let mut z = Params::from_slices(&g, &split(&z0, &lens)).unwrap();
    sign(&mut z).unwrap();
    cpu::sign(&mut z0);
    assert_eq!(z.to_vec().unwrap(), z0, "sign");
    assert_eq!(z0[5], 0.0);
}

/// With exact gradients, each chain's step equals the same arithmetic on the CPU.
#[test]
fn chains_apply_their_modules_in_order() {
    let g = gpu();
    let x0 = data(4, 777);
    let steps = 4;
    type Chain = fn(Optimizer) -> Optimizer;
    let chains: [(&str, Chain); 5] = [
        ("Lr", |o| o.then(Lr::new(0.1))),
        ("HeavyBall + Lr", |o| {
            o.then(HeavyBall::new(0.8)).then(Lr::new(0.1))
        }),
        ("Adam + Lr", |o| o.then(Adam::new()).then(Lr::new(0.01))),
        ("WeightDecay + Sign + Lr", |o| {
            o.then(WeightDecay::new(0.5))
                .then(Sign::new())
                .then(Lr::new(0.01))
        }),
        ("ClipNorm + Lr", |o| {
            o.then(ClipNorm::new(1.0)).then(Lr::new(0.1))
        }),
    ];
    for (name, chain) in chains {
        let mut x = Params::from_slices(&g, &split(&x0, &[300])).unwrap();
        let mut opt = chain(Optimizer::new(&g, &x, Exact::default()).unwrap());
        let mut loss = host_loss;
        // The CPU twin of the chain.
        let mut cx = x0.clone();
        let (mut vel, mut m, mut v) = (vec![0.0; 777], vec![0.0; 777], vec![0.0; 777]);
        for t in 1..=steps {
            opt.step(&mut x, &mut loss).unwrap();
            let mut u = quad_grad(&cx);
            match name {
                "Lr" => cpu::scale(&mut u, 0.1),
                "HeavyBall + Lr" => {
                    // The velocity starts at the first update (torchzero's ema_init="update").
                    if t == 1 {
                        vel.copy_from_slice(&u);
                    }
                    cpu::heavy_ball(&mut u, &mut vel, 0.8);
                    cpu::scale(&mut u, 0.1);
                }
                "Adam + Lr" => {
                    cpu::adam(&mut u, &mut m, &mut v, (0.9, 0.999, 1e-8), t);
                    cpu::scale(&mut u, 0.01);
                }
                "WeightDecay + Sign + Lr" => {
                    cpu::axpy(&mut u, 0.5, &cx);
                    cpu::sign(&mut u);
                    cpu::scale(&mut u, 0.01);
                }
                _ => {
                    let n = cpu::dot(&u, &u).sqrt();
                    if n > 1.0 {
                        cpu::scale(&mut u, (1.0 / n) as f32);
                    }
                    cpu::scale(&mut u, 0.1);
                }
            }
            cpu::axpy(&mut cx, -1.0, &u);
        }
        assert_close(&x.to_vec().unwrap(), &cx, 1e-6, 1e-5, name);
        assert_eq!(opt.steps(), steps);
    }
}

/// Armijo backtracking on exact gradients: a too-long first step is halved until the sufficient
/// decrease holds, and f decreases at every step.
#[test]
fn backtracking_finds_an_armijo_step() {
    let g = gpu();
    let x0 = vec![1.0f32; 10];
    let mut x = Params::from_slices(&g, &[&x0]).unwrap();
    let mut calls = 0u32;
    let mut loss = |p: &Params| -> Result<f32> {
        calls += 1;
        host_loss(p)
    };
    // Lr(1) with the steepest a_i = 5 overshoots: f(x − g) > f(x); the search must shrink.
    let mut opt = Optimizer::new(&g, &x, Exact::default())
        .unwrap()
        .then(Backtracking::new());
    let mut prev = quad(&x0);
    for _ in 0..5 {
        let r = opt.step(&mut x, &mut loss).unwrap();
        assert_eq!(r.loss, Some(prev), "f(x) evaluated once by the search");
        let now = quad(&x.to_vec().unwrap());
        assert!(now < prev, "f went from {prev} to {now}");
        prev = now;
    }
    assert!(calls >= 10, "evaluations: {calls}");
}

/// Newton-CG with exact gradients solves a quadratic in one step.
#[test]
fn newton_cg_solves_a_quadratic_in_one_step() {
    let g = gpu();
    let x0 = data(5, 40);
    for hvp in [Hvp::Forward, Hvp::Central] {
        let mut x = Params::from_slices(&g, &split(&x0, &[13])).unwrap();
        let mut opt = Optimizer::new(&g, &x, Exact::default())
            .unwrap()
            .then(NewtonCg::new().hvp(hvp).h(1e-2));
        opt.step(&mut x, &mut host_loss).unwrap();
        let after = x.to_vec().unwrap();
        let worst = after.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            worst < 2e-3,
            "{hvp:?}: |x| up to {worst} after one Newton step"
        );
        assert!(
            opt.state_bytes() >= 4 * 40 * 4,
            "NewtonCg keeps its CG vectors"
        );
    }
    assert_eq!("fd_forward".parse::<Hvp>().unwrap(), Hvp::Forward);
    assert_eq!("forward".parse::<Hvp>().unwrap(), Hvp::Forward);
    assert_eq!("fd_central".parse::<Hvp>().unwrap(), Hvp::Central);
    assert!(matches!(
        "newton".parse::<Hvp>(),
        Err(Error::InvalidArgument(_))
    ));
}

/// The fused MeZO step equals the unfused chain to f32 rounding, step by step (both start each
/// step from the same x: over several steps the trajectories would separate, since a 1-ulp change
/// of x changes the f32 loss differences), and owns no n-sized buffer (allocations are counted
/// in tests/memory.rs).
#[test]
fn fused_mezo_step_matches_the_unfused_chain() {
    let g = gpu();
    let n = 50_000;
    let x0 = data(6, n);
    type Chain = fn(Optimizer) -> Optimizer;
    let chains: [(&str, u32, Chain); 3] = [
        ("MeZo + Lr", 1, |o| o.then(Lr::new(1e-3))),
        ("MeZo S=4 + Lr", 4, |o| o.then(Lr::new(1e-3))),
        ("MeZo + WeightDecay + Lr", 1, |o| {
            o.then(WeightDecay::new(0.1)).then(Lr::new(1e-3))
        }),
    ];
    for (name, samples, chain) in chains {
        let build = |fuse: bool, x: &Params| {
            chain(Optimizer::new(&g, x, MeZo::new().n_samples(samples).seed(9)).unwrap()).fuse(fuse)
        };
        let mut xf = Params::from_slices(&g, &split(&x0, &[12_345])).unwrap();
        let mut xu = Params::from_slices(&g, &split(&x0, &[12_345])).unwrap();
        let (mut fused, mut unfused) = (build(true, &xf), build(false, &xu));
        let mut loss = |p: &Params| -> Result<f32> { Ok(quad(&p.to_vec()?)) };
        let mut current = x0.clone();
        for step in 0..5 {
            xu.write(&current).unwrap();
            fused.step(&mut xf, &mut loss).unwrap();
            unfused.step(&mut xu, &mut loss).unwrap();
            let (a, b) = (xf.to_vec().unwrap(), xu.to_vec().unwrap());
            // Each element: a few roundings of values below 1 (x, h·z, lr·ĝ).
            assert_close(&a, &b, 1e-6, 1e-6, &format!("{name}, step {step}"));
            assert!(a != current, "{name}: the step moved x");
            current = a;
        }
        assert_eq!(fused.state_bytes(), 0, "{name}: fused state");
        assert!(
            unfused.state_bytes() >= n as u64 * 4,
            "{name}: unfused keeps the update buffer"
        );
    }
}

#[test]
fn bad_hyper_parameters_are_named_and_change_nothing() {
    let g = gpu();
    let x0 = data(7, 64);
    type Chain = fn(Optimizer) -> Optimizer;
    let cases: [(&str, Chain); 9] = [
        ("lr", |o| o.then(Lr::new(-1.0))),
        ("lr", |o| o.then(Lr::new(f32::NAN))),
        ("momentum", |o| o.then(HeavyBall::new(1.0))),
        ("beta1", |o| o.then(Adam::new().beta1(1.5))),
        ("eps", |o| o.then(Adam::new().eps(0.0))),
        ("weight_decay", |o| o.then(WeightDecay::new(f32::INFINITY))),
        ("max_norm", |o| o.then(ClipNorm::new(0.0))),
        ("beta", |o| o.then(Backtracking::new().beta(1.0))),
        ("h", |o| o.then(NewtonCg::new().h(0.0))),
    ];
    for (arg, chain) in cases {
        let mut x = Params::from_slices(&g, &[&x0]).unwrap();
        let mut opt = chain(Optimizer::new(&g, &x, MeZo::new()).unwrap());
        let mut calls = 0;
        let mut loss = |p: &Params| -> Result<f32> {
            calls += 1;
            host_loss(p)
        };
        match opt.step(&mut x, &mut loss) {
            Err(Error::InvalidArgument(msg)) => assert!(msg.starts_with(arg), "{arg}: {msg}"),
            other => panic!("{arg}: expected InvalidArgument, got {other:?}"),
        }
        assert_eq!(calls, 0, "{arg}: nothing evaluated");
        assert_eq!(x.to_vec().unwrap(), x0, "{arg}: parameters untouched");
        assert_eq!(opt.steps(), 0);
    }
    // Parameters of another shape.
    let x = Params::from_slices(&g, &[&x0]).unwrap();
    let mut other = Params::from_slices(&g, &[&x0[..10]]).unwrap();
    let mut opt = Optimizer::new(&g, &x, MeZo::new())
        .unwrap()
        .then(Lr::new(0.1));
    assert!(
        matches!(opt.step(&mut other, &mut host_loss), Err(Error::InvalidArgument(m)) if m.contains("params"))
    );
}

/// Targets ([`Target`]): Update keeps no gradient, Grad keeps it, Closure also lends the
/// approximator to later modules; a chain that needs more is refused before any evaluation.
#[test]
fn targets_decide_what_the_chain_may_use() {
    let g = gpu();
    let x0 = vec![1.0f32, -2.0];
    let cases: [(Target, bool, bool); 3] = [
        // (target, Backtracking allowed, NewtonCg allowed)
        (Target::Update, false, false),
        (Target::Grad, true, false),
        (Target::Closure, true, true),
    ];
    for (target, backtracking_ok, newton_ok) in cases {
        for (module, ok) in [("Backtracking", backtracking_ok), ("NewtonCg", newton_ok)] {
            let mut x = Params::from_slices(&g, &[&x0]).unwrap();
            let opt = Optimizer::new(&g, &x, Fdm::new().target(target)).unwrap();
            let mut opt = if module == "Backtracking" {
                opt.then(Backtracking::new())
            } else {
                opt.then(NewtonCg::new())
            };
            let mut calls = 0;
            let mut loss = |p: &Params| -> Result<f32> {
                calls += 1;
                host_loss(p)
            };
            let r = opt.step(&mut x, &mut loss);
            if ok {
                r.unwrap_or_else(|e| panic!("{target:?} + {module}: {e}"));
                assert!(
                    quad(&x.to_vec().unwrap()) < quad(&x0),
                    "{target:?} + {module}: no descent"
                );
            } else {
                match r {
                    Err(Error::InvalidArgument(m)) => {
                        assert!(m.starts_with("target") && m.contains(module), "{m}")
                    }
                    other => {
                        panic!("{target:?} + {module}: expected a target error, got {other:?}")
                    }
                }
                assert_eq!(calls, 0, "{target:?} + {module}: refused before evaluating");
            }
        }
    }
    // Without modules that need more, every target runs the plain chain.
    for target in [Target::Update, Target::Grad, Target::Closure] {
        let mut x = Params::from_slices(&g, &[&x0]).unwrap();
        let mut opt = Optimizer::new(&g, &x, Fdm::new().target(target))
            .unwrap()
            .then(Lr::new(0.1));
        opt.step(&mut x, &mut host_loss).unwrap();
        assert!(quad(&x.to_vec().unwrap()) < quad(&x0), "{target:?}");
    }
}
