// SPDX-License-Identifier: MIT OR Apache-2.0
//! The convergence suite, modelled on torchzero's tests/test_opts.py: Booth's function from
//! (0, −8) and a sphere model Σp² over 16 buffers of odd shapes, with the loss computed by a
//! WGSL reduction on the parameter buffers.
//!
//! torchzero's thresholds were set on one seed of torch's generator. Here every random case runs
//! on 20 Philox seeds (10 for the sphere model) and asserts a bound that every seed meets; the
//! spread measured on lavapipe is written beside each bound (`--nocapture` prints it again).

mod common;

use common::shader_loss::{Function, ShaderLoss};
use common::{data, gpu, split};
use zograd::approx::{
    Fdm, Formula, ForwardGradient, GaussianSmoothing, Jvp, MeZo, RandomizedFdm, Spsa,
};
use zograd::optim::{Adam, Backtracking, HeavyBall, Hvp, Lr, NewtonCg, Optimizer, Sign};
use zograd::{Gpu, Params};

const BOOTH_X0: [f32; 2] = [0.0, -8.0];
const SPHERE_LENS: [usize; 16] = [1, 2, 3, 5, 7, 11, 13, 1, 2, 3, 5, 7, 11, 13, 9, 7];

type Build<'a> = &'a dyn Fn(&Gpu, &Params, u64) -> Optimizer;

/// Runs `steps` steps from `pieces` and returns the final loss (asserting every loss on the way
/// is finite).
fn run(pieces: &[&[f32]], func: Function, steps: usize, seed: u64, build: Build<'_>) -> f32 {
    let g = gpu();
    let mut x = Params::from_slices(&g, pieces).unwrap();
    let mut shader = ShaderLoss::new(&g, func, x.len());
    let mut opt = build(&g, &x, seed);
    let mut loss = |p: &Params| shader.eval(p);
    for k in 0..steps {
        let r = opt.step(&mut x, &mut loss).unwrap();
        if let Some(l) = r.loss_approx {
            assert!(l.is_finite(), "seed {seed}, step {k}: loss {l}");
        }
    }
    let f = loss(&x);
    assert!(f.is_finite(), "seed {seed}: final loss {f}");
    f
}

/// The final losses over `seeds`, asserted below `bound`; prints the spread.
fn over_seeds(name: &str, seeds: u64, func: Function, bound: f32, build: Build<'_>) {
    let x0;
    let pieces: Vec<&[f32]> = match func {
        Function::Booth => vec![&BOOTH_X0[..]],
        _ => {
            x0 = data(3, SPHERE_LENS.iter().sum());
            split(&x0, &SPHERE_LENS)
        }
    };
    let mut finals: Vec<f32> = (0..seeds)
        .map(|s| run(&pieces, func, 50, s, build))
        .collect();
    finals.sort_by(f32::total_cmp);
    eprintln!(
        "{name}: final loss over {seeds} seeds: min {:.3e}, median {:.3e}, max {:.3e} (bound {bound:e})",
        finals[0],
        finals[finals.len() / 2],
        finals[finals.len() - 1]
    );
    assert!(
        finals[finals.len() - 1] <= bound,
        "{name}: worst seed {:e} > {bound:e}",
        finals[finals.len() - 1]
    );
}

#[test]
fn booth_fdm_every_formula_with_lr() {
    for f in [
        "forward",
        "backward",
        "central",
        "forward3",
        "backward3",
        "central4",
        "forward4",
        "forward5",
    ] {
        let formula: Formula = f.parse().unwrap();
        // Measured: 1.4e-7 for the second- and higher-order formulas, 6.8e-7 for backward,
        // 2.4e-6 for forward, whose O(h) bias moves the fixed point by ~h·H/2.
        let bound = if formula == Formula::Forward {
            1e-5
        } else {
            1e-6
        };
        over_seeds(
            &format!("Fdm {f} + Lr(0.1)"),
            1,
            Function::Booth,
            bound,
            &|g, x, _| {
                Optimizer::new(g, x, Fdm::new().formula(formula))
                    .unwrap()
                    .then(Lr::new(0.1))
            },
        );
    }
}

#[test]
fn booth_randomized_fdm_every_formula_with_lr() {
    for f in ["forward", "backward", "central", "forward3", "central4"] {
        let formula: Formula = f.parse().unwrap();
        // Measured (central and forward): 4.3 … 9.8 over 20 seeds; torchzero's bound is 10.
        over_seeds(
            &format!("RandomizedFdm {f} + Lr(0.01)"),
            20,
            Function::Booth,
            10.0,
            &|g, x, s| {
                Optimizer::new(g, x, RandomizedFdm::new().formula(formula).seed(s))
                    .unwrap()
                    .then(Lr::new(0.01))
            },
        );
    }
}

#[test]
fn booth_randomized_fdm_four_samples() {
    // Measured with Lr(0.07): 1.0e-6 … 1.3e-4 over 20 seeds. torchzero's 1e-5 held for its one
    // seed; with Lr(0.1) most seeds reach 1e-9 but one in 20 ends at 50.
    over_seeds(
        "RandomizedFdm S=4 + Lr(0.07)",
        20,
        Function::Booth,
        2e-4,
        &|g, x, s| {
            Optimizer::new(g, x, RandomizedFdm::new().n_samples(4).seed(s))
                .unwrap()
                .then(Lr::new(0.07))
        },
    );
}

#[test]
fn booth_mezo() {
    // Measured: 4.3 … 9.8 over 20 seeds (torchzero's one seed: ≤ 5).
    over_seeds("MeZo + Lr(0.01)", 20, Function::Booth, 10.0, &|g, x, s| {
        Optimizer::new(g, x, MeZo::new().seed(s))
            .unwrap()
            .then(Lr::new(0.01))
    });
    // Measured: 0.46 … 1.6 over 20 seeds (torchzero's one seed: ≤ 1).
    over_seeds(
        "MeZo S=4 + Lr(0.02)",
        20,
        Function::Booth,
        2.0,
        &|g, x, s| {
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(s))
                .unwrap()
                .then(Lr::new(0.02))
        },
    );
}

#[test]
fn booth_forward_gradient() {
    for jvp in [Jvp::Central, Jvp::Forward] {
        // Measured: 0.022 … 19.5 over 20 seeds (torchzero: ≤ 40).
        over_seeds(
            &format!("ForwardGradient {jvp:?} + Lr(0.01)"),
            20,
            Function::Booth,
            40.0,
            &|g, x, s| {
                Optimizer::new(g, x, ForwardGradient::new().jvp(jvp).seed(s))
                    .unwrap()
                    .then(Lr::new(0.01))
            },
        );
    }
}

#[test]
fn booth_spsa_chains() {
    // Measured: 0.082 … 21.0 over 20 seeds, with the velocity started at the first update as
    // torchzero's (0.12 … 21 when it started at 0); regression pin. Lr(0.01) with momentum 0.9
    // diverges on some seeds.
    over_seeds(
        "Spsa + HeavyBall(0.9) + Lr(0.002)",
        20,
        Function::Booth,
        25.0,
        &|g, x, s| {
            Optimizer::new(g, x, Spsa::new().seed(s))
                .unwrap()
                .then(HeavyBall::new(0.9))
                .then(Lr::new(0.002))
        },
    );
    // Measured: 0.012 … 8.8 over 20 seeds.
    over_seeds(
        "Spsa + Adam + Lr(1)",
        20,
        Function::Booth,
        10.0,
        &|g, x, s| {
            Optimizer::new(g, x, Spsa::new().seed(s))
                .unwrap()
                .then(Adam::new())
                .then(Lr::new(1.0))
        },
    );
    // Measured: 0.02 … 1.64 over 20 seeds.
    over_seeds(
        "Spsa + Sign + Lr(0.3)",
        20,
        Function::Booth,
        2.0,
        &|g, x, s| {
            Optimizer::new(g, x, Spsa::new().seed(s))
                .unwrap()
                .then(Sign::new())
                .then(Lr::new(0.3))
        },
    );
}

#[test]
fn booth_newton_cg_with_backtracking() {
    // Booth is quadratic: one Newton step lands on the minimum (measured: 0 exactly; 1.1e-12
    // with zograd's CG settings before torchzero's were adopted).
    for hvp in [Hvp::Forward, Hvp::Central] {
        over_seeds(
            &format!("Fdm + NewtonCg({hvp:?}) + Backtracking"),
            1,
            Function::Booth,
            1e-6,
            &|g, x, _| {
                Optimizer::new(g, x, Fdm::new())
                    .unwrap()
                    .then(NewtonCg::new().hvp(hvp))
                    .then(Backtracking::new())
            },
        );
    }
    // Rosenbrock from (-1.2, 1): a curved valley; Newton-CG with the line search still gets
    // close to (1, 1) (measured: 3.9e-8 after 50 steps; regression pin 1e-4).
    let g = gpu();
    let mut x = Params::from_slices(&g, &[&[-1.2f32, 1.0][..]]).unwrap();
    let mut shader = ShaderLoss::new(&g, Function::Rosenbrock, 2);
    let mut opt = Optimizer::new(&g, &x, Fdm::new())
        .unwrap()
        .then(NewtonCg::new())
        .then(Backtracking::new());
    let mut loss = |p: &Params| shader.eval(p);
    for _ in 0..50 {
        opt.step(&mut x, &mut loss).unwrap();
    }
    let f = loss(&x);
    eprintln!(
        "Fdm + NewtonCg + Backtracking on Rosenbrock: {f:e} at {:?}",
        x.to_vec().unwrap()
    );
    assert!(f < 1e-4, "Rosenbrock: {f}");
}

#[test]
fn sphere_model_over_sixteen_buffers() {
    // 100 parameters in 16 buffers of 1 … 13 elements, starting at Σp² = 34.2.
    // Measured: 7.0e-9.
    over_seeds(
        "sphere: Fdm + Lr(0.1)",
        1,
        Function::Sphere,
        1e-6,
        &|g, x, _| Optimizer::new(g, x, Fdm::new()).unwrap().then(Lr::new(0.1)),
    );
    // Measured: 5.8 … 8.1 over 10 seeds (in 100 dimensions, SPSA-type estimates need a small
    // step: Lr(0.05) diverges).
    over_seeds(
        "sphere: MeZo S=4 + Lr(0.01)",
        10,
        Function::Sphere,
        10.0,
        &|g, x, s| {
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(s))
                .unwrap()
                .then(Lr::new(0.01))
        },
    );
    // Measured: 0.52 … 0.95 over 10 seeds.
    over_seeds(
        "sphere: GaussianSmoothing S=10 + Lr(0.05)",
        10,
        Function::Sphere,
        1.5,
        &|g, x, s| {
            Optimizer::new(g, x, GaussianSmoothing::new().n_samples(10).seed(s))
                .unwrap()
                .then(Lr::new(0.05))
        },
    );
    // Measured: 28.6 … 30.0 over 10 seeds: Adam's per-coordinate normalisation of a
    // one-sample SPSA estimate in 100 dimensions moves every coordinate by about lr per step in
    // a mostly random direction, so progress is slow but steady (Booth shows Adam converging).
    over_seeds(
        "sphere: Spsa + Adam + Lr(0.01)",
        10,
        Function::Sphere,
        31.0,
        &|g, x, s| {
            Optimizer::new(g, x, Spsa::new().seed(s))
                .unwrap()
                .then(Adam::new())
                .then(Lr::new(0.01))
        },
    );
}

/// The same run with the parameters as one buffer or as two gives bit-identical loss
/// sequences: directions depend on global indices only.
#[test]
fn merging_buffers_changes_nothing() {
    let g = gpu();
    let builds: [(&str, Build<'_>); 3] = [
        ("MeZo S=4", &|g, x, s| {
            Optimizer::new(g, x, MeZo::new().n_samples(4).seed(s))
                .unwrap()
                .then(Lr::new(0.02))
        }),
        ("Spsa + Adam", &|g, x, s| {
            Optimizer::new(g, x, Spsa::new().seed(s))
                .unwrap()
                .then(Adam::new())
                .then(Lr::new(0.5))
        }),
        ("Fdm", &|g, x, _| {
            Optimizer::new(g, x, Fdm::new()).unwrap().then(Lr::new(0.1))
        }),
    ];
    for (name, build) in builds {
        let mut sequences = Vec::new();
        for pieces in [vec![&BOOTH_X0[..]], vec![&BOOTH_X0[..1], &BOOTH_X0[1..]]] {
            let mut x = Params::from_slices(&g, &pieces).unwrap();
            let mut shader = ShaderLoss::new(&g, Function::Booth, 2);
            let mut opt = build(&g, &x, 7);
            let mut loss = |p: &Params| shader.eval(p);
            let seq: Vec<u32> = (0..20)
                .map(|_| {
                    opt.step(&mut x, &mut loss).unwrap();
                    loss(&x).to_bits()
                })
                .collect();
            sequences.push(seq);
        }
        assert_eq!(sequences[0], sequences[1], "{name}: one buffer vs two");
    }
}
