// SPDX-License-Identifier: MIT OR Apache-2.0
//! Populations of perturbations evaluated in one dispatch: SPSA with S = 16 … 256 samples on a
//! shader loss, batched ([`BatchObjective`], all 2S points in one pass over x and one readback)
//! vs one at a time (x perturbed in place, the loss shader run and read back per point).
//!
//! ```text
//! cargo run --release --example population                 # n = 10⁶, S = 16 … 256
//! cargo run --release --example population -- 4000000 64   # other n, other S
//! ```
//!
//! The loss is the quadratic f(x) = Σᵢ xᵢ² written in WGSL (`examples/support/sphere_loss.rs`).
//! Both paths run the same shader code in the same summation order, and the data are dyadic
//! (multiples of 2⁻⁸, h = 2⁻⁷), so every perturbed point is exact in f32 and the two estimates
//! agree bit for bit; the table prints their relative difference anyway. How the batched pass
//! works is described in that file.

#[path = "support/sphere_loss.rs"]
mod sphere_loss;

use std::time::Instant;

use sphere_loss::SphereLoss;
use zograd::approx::{GradApproximator, Spsa};
use zograd::kernels::{perturb, Direction};
use zograd::{Gpu, Objective, Params, ShaderObjective};

/// The finite-difference step: a power of two, so x ± h is exact for the dyadic data.
const H: f32 = 1.0 / 128.0;

/// `OneAtATime(objective)`: an objective without `loss_batch`, so the estimator perturbs x in
/// place and evaluates one point at a time.
struct OneAtATime<'a>(&'a mut ShaderObjective);

impl Objective for OneAtATime<'_> {
    fn loss(&mut self, params: &Params) -> zograd::Result<f32> {
        self.0.loss(params)
    }
}

/// Seconds per call: the best of `reps` calls after one warm-up call.
fn best_of(reps: u32, mut f: impl FnMut() -> zograd::Result<()>) -> zograd::Result<f64> {
    f()?;
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> zograd::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("arguments: n, then sample counts"))
        .collect();
    let n = args.first().copied().unwrap_or(1_000_000) as usize;
    let sizes: Vec<u32> = if args.len() > 1 {
        args[1..].iter().map(|s| *s as u32).collect()
    } else {
        vec![16, 32, 64, 128, 256]
    };
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}, driver {:?}); n = {n}",
        info.name, info.backend, info.driver
    );

    // Dyadic data: x a multiple of 2⁻⁸ in [-2, 2].
    let dyadic = |seed: u64, i: usize| {
        let u = zograd::rng::perturbation(zograd::Distribution::Uniform, seed, 0, 0, i as u64);
        (u / 1.732_050_8 * 512.0).round() / 256.0
    };
    let x0: Vec<f32> = (0..n).map(|i| dyadic(1, i)).collect();
    let mut x = Params::from_slices(&gpu, &[&x0[..]])?;
    let max_points = 2 * sizes.iter().copied().max().unwrap_or(1);
    let SphereLoss {
        mut batched,
        mut plain,
    } = SphereLoss::new(&gpu, &x, max_points)?;
    let f0 = plain.evaluate()?;
    let f0_batched = batched.evaluate()?;
    assert_eq!(f0, f0_batched, "the two loss paths agree at x");
    println!("f(x) = {f0}\n");

    let mut g_batched = x.zeros_like()?;
    let mut g_seq = x.zeros_like()?;
    println!(
        "| S | points | one at a time: evaluations | one at a time: estimate | batched: evaluations | \
         batched: estimate | speed-up (evaluations) | speed-up (estimate) | ‖g_b − g_s‖/‖g_s‖ |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &s in &sizes {
        let spsa = || Spsa::new().n_samples(s).h(H).seed(2024);
        let dirs = spsa().next_directions();
        let points: Vec<(Direction, f32)> = dirs
            .iter()
            .flat_map(|d| {
                let mut d = *d;
                d.step = 1;
                [(d, H), (d, -H)]
            })
            .collect();
        // Repetitions: fewer for the slow path at large S.
        let reps_seq = if s >= 128 { 1 } else { 2 };
        let reps_b = 3;

        // Evaluations only: what the estimator's evaluation loop does in each mode.
        let t_eval_b = best_of(reps_b, || {
            batched.loss_batch(&mut x, &points)?;
            Ok(())
        })?;
        let t_eval_s = best_of(reps_seq, || {
            for pair in points.chunks(2) {
                let (d, h) = pair[0];
                perturb(&mut x, &d, h)?;
                plain.evaluate()?;
                perturb(&mut x, &d, -2.0 * h)?;
                plain.evaluate()?;
                perturb(&mut x, &d, h)?;
            }
            Ok(())
        })?;
        x.write(&x0)?;

        // Whole estimates (evaluations + the gradient's accumulate pass), step 1 each time.
        let t_est_b = best_of(reps_b, || {
            let mut e = spsa();
            e.pre_step();
            e.approximate(&gpu, &mut x, &mut batched, &mut g_batched)?;
            Ok(())
        })?;
        let t_est_s = best_of(reps_seq, || {
            let mut e = spsa();
            e.pre_step();
            e.approximate(&gpu, &mut x, &mut OneAtATime(&mut plain), &mut g_seq)?;
            Ok(())
        })?;
        assert_eq!(x.to_vec()?, x0, "x restored exactly (dyadic data)");
        let (gb, gs) = (g_batched.to_vec()?, g_seq.to_vec()?);
        let diff = gb
            .iter()
            .zip(&gs)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = gs.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
        println!(
            "| {s} | {} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.1}× | {:.1}× | {:.1e} |",
            points.len(),
            t_eval_s * 1e3,
            t_est_s * 1e3,
            t_eval_b * 1e3,
            t_est_b * 1e3,
            t_eval_s / t_eval_b,
            t_est_s / t_est_b,
            diff / norm
        );
    }
    println!(
        "\n(evaluations: the 2S loss values only; estimate: Spsa::approximate, which adds one \
         accumulate pass g = Σ c_s z_s over all S samples, the same in both modes)"
    );
    Ok(())
}
