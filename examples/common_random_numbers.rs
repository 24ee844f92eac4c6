// SPDX-License-Identifier: MIT OR Apache-2.0
//! Common random numbers for a simulation whose loss is a Monte-Carlo average.
//!
//! The loss of x is the mean squared error of a linear model over 32 random scenarios
//! (a_m, b_m), b_m = a_m·x* + 0.5·ε_m, drawn from a seed: a stochastic simulation in miniature.
//! Without common random numbers every evaluation draws new scenarios, so f(x + h·u) and
//! f(x − h·u) differ by sampling noise that the SPSA difference divides by 2h. With them, the
//! objective draws the scenarios of both points from `Evaluation::crn_seed` (`loss_at`), the
//! noise cancels in the difference, and the estimate's variance drops by orders of magnitude.
//!
//! Run with `cargo run --release --example common_random_numbers`.

use zograd::approx::{GradApproximator, Spsa};
use zograd::optim::{Blocking, Lr, Optimizer};
use zograd::rng::perturbation;
use zograd::{Distribution, Evaluation, Gpu, Objective, Params, Result};

const N: usize = 8;
const SCENARIOS: u64 = 32;

/// The Monte-Carlo loss: (1/M) Σ_m (a_m·x − b_m)², scenarios from the Philox stream `stream`.
struct Simulation {
    /// Draw the scenarios of an estimator's point from its CRN seed.
    crn: bool,
    /// Plain evaluations so far (each draws new scenarios).
    draws: u64,
}

fn target(j: usize) -> f64 {
    (j as f64 - 3.5) / 4.0
}

fn simulate(x: &[f32], stream: u64, scenarios: u64) -> f32 {
    let g = |i: u64| f64::from(perturbation(Distribution::Gaussian, stream, 0, 0, i));
    let k = N as u64 + 1;
    let mut sum = 0.0;
    for m in 0..scenarios {
        let (mut model, mut truth) = (0.0, 0.0);
        for (j, xj) in x.iter().enumerate() {
            let a = g(m * k + j as u64);
            model += a * f64::from(*xj);
            truth += a * target(j);
        }
        let b = truth + 0.5 * g(m * k + N as u64);
        sum += (model - b).powi(2);
    }
    (sum / scenarios as f64) as f32
}

impl Objective for Simulation {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.draws += 1;
        Ok(simulate(
            &params.to_vec()?,
            0xD1CE_0000 + self.draws,
            SCENARIOS,
        ))
    }

    fn loss_at(&mut self, params: &Params, at: &Evaluation) -> Result<f32> {
        if self.crn {
            Ok(simulate(&params.to_vec()?, at.crn_seed, SCENARIOS))
        } else {
            self.loss(params)
        }
    }
}

fn main() -> Result<()> {
    let gpu = Gpu::new()?;
    println!("adapter: {}", gpu.adapter_info().name);
    let x0 = [0.0f32; N];

    // 1. The variance of one SPSA estimate over 400 seeds, with and without CRN.
    let mut x = Params::from_slices(&gpu, &[&x0[..]])?;
    let mut g = x.zeros_like()?;
    let mut total_variance = |crn: bool| -> Result<f64> {
        let mut sim = Simulation { crn, draws: 0 };
        let runs = 400;
        let mut rows = Vec::with_capacity(runs);
        for seed in 0..runs as u64 {
            let mut est = Spsa::new().h(0.01).seed(seed).exact_restore(true);
            est.pre_step();
            est.approximate(&gpu, &mut x, &mut sim, &mut g)?;
            rows.push(g.to_vec()?);
        }
        let mean: Vec<f64> = (0..N)
            .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / runs as f64)
            .collect();
        Ok(rows
            .iter()
            .map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(v, m)| (f64::from(*v) - m).powi(2))
                    .sum::<f64>()
            })
            .sum::<f64>()
            / (runs as f64 - 1.0))
    };
    let (with, without) = (total_variance(true)?, total_variance(false)?);
    println!(
        "SPSA estimate, total variance over 400 seeds: {without:.4e} independent, {with:.4e} \
         with CRN ({:.0}× lower)",
        without / with
    );

    // 2. Optimisation: 300 SPSA steps (h = 0.05, lr = 0.01), CRN off and on, then with
    //    conservative steps on top.
    let truth = |x: &Params| -> Result<f32> { Ok(simulate(&x.to_vec()?, 7, 20_000)) };
    for (crn, blocking) in [(false, false), (true, false), (true, true)] {
        let mut x = Params::from_slices(&gpu, &[&x0[..]])?;
        let mut sim = Simulation { crn, draws: 0 };
        let mut opt = Optimizer::new(&gpu, &x, Spsa::new().h(0.05).seed(3))?.then(Lr::new(0.01));
        if blocking {
            opt = opt.blocking(Blocking::calibrate(16));
        }
        let mut rejected = 0;
        for _ in 0..300 {
            rejected += u32::from(!opt.step(&mut x, &mut sim)?.accepted);
        }
        println!(
            "CRN {crn:5}, blocking {blocking:5}: loss after 300 steps {:.4} (minimum ≈ 0.25), \
             {rejected} steps rejected",
            truth(&x)?
        );
    }
    Ok(())
}
