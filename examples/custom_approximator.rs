// SPDX-License-Identifier: MIT OR Apache-2.0
//! A gradient estimator written by a user against zograd's public trait and kernels only:
//! Spall's one-measurement SPSA, as torchzero's `SPSA1`.
//!
//! ```text
//! g = (1/S) Σ_s u_s · (f(x + h u_s) + eps)          (torchzero's SPSA1)
//! g = (1/S) Σ_s u_s · (f(x + h u_s) + eps) / h      (Spall 1997, with Rademacher u: 1/u = u)
//! ```
//!
//! Since E[u] = 0 and E[u uᵀ] = I, E[u·f(x + h u)] = h·∇f(x) + O(h³): torchzero's form estimates
//! h·∇f (the factor is absorbed by the learning rate) and Spall's form ∇f itself. One
//! evaluation per sample instead of two, at the price of a large variance — the f(x)·u/h term
//! averages out only slowly — which is why Spall recommends it for objectives that change
//! between evaluations (feedback control) rather than for static ones. The program shows both:
//! how the averaged estimate approaches the gradient as S grows, compared with the
//! two-measurement `Spsa` on the same number of evaluations, and a short descent.
//!
//! Reference: J. C. Spall, "A one-measurement form of simultaneous perturbation stochastic
//! approximation", Automatica 33(1), 1997.
//!
//! Run: `cargo run --release --example custom_approximator`

use zograd::approx::{Estimate, GradApproximator, Objective, Spsa};
use zograd::kernels::{accumulate, axpy, copy, dot, fill, perturb, Direction};
use zograd::{Distribution, Error, Gpu, Params, Result};

/// One-measurement SPSA with Rademacher directions regenerated from (seed, step, sample).
#[derive(Debug)]
struct Spsa1 {
    h: f32,
    n_samples: u32,
    eps: f32,
    seed: u64,
    step: u32,
    /// true: Spall's estimate of ∇f; false: torchzero's estimate of h·∇f.
    divide_by_h: bool,
}

impl GradApproximator for Spsa1 {
    fn pre_step(&mut self) {
        self.step = self.step.wrapping_add(1);
    }

    fn approximate(
        &mut self,
        _gpu: &Gpu,
        params: &mut Params,
        objective: &mut dyn Objective,
        grad: &mut Params,
    ) -> Result<Estimate> {
        if !(self.h.is_finite() && self.h > 0.0) {
            return Err(Error::InvalidArgument(format!(
                "h: must be finite and positive, got {}",
                self.h
            )));
        }
        if self.n_samples == 0 {
            return Err(Error::InvalidArgument(
                "n_samples: must be at least 1".into(),
            ));
        }
        if !grad.same_shape(params) {
            return Err(Error::InvalidArgument(
                "grad: shape differs from params".into(),
            ));
        }
        let scale = if self.divide_by_h {
            f64::from(self.h)
        } else {
            1.0
        };
        let mut terms = Vec::with_capacity(self.n_samples as usize);
        for s in 0..self.n_samples {
            let dir = Direction {
                distribution: Distribution::Rademacher,
                seed: self.seed,
                step: self.step,
                sample: s,
            };
            perturb(params, &dir, self.h)?; // x + h u, in place
            let value = objective.loss(params);
            perturb(params, &dir, -self.h)?; // restore before looking at the result
            let value = value?;
            if !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    value,
                    context: format!("f(x + h u) of sample {s}"),
                });
            }
            let c = (f64::from(value) + f64::from(self.eps)) / scale / f64::from(self.n_samples);
            terms.push((s, c as f32));
        }
        // g = Σ_s c_s u_s in one pass over g.
        fill(grad, 0.0)?;
        accumulate(grad, Distribution::Rademacher, self.seed, self.step, &terms)?;
        Ok(Estimate {
            loss: None,
            loss_approx: None,
            evaluations: self.n_samples,
        })
    }
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let ab: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let aa: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    let bb: f64 = b.iter().map(|y| y * y).sum();
    ab / (aa * bb).sqrt()
}

/// One `Spsa1` estimate with `evals` samples (fresh estimator, seed 7, step 1).
fn spall(
    gpu: &Gpu,
    x: &mut Params,
    loss: &mut dyn Objective,
    g: &mut Params,
    evals: u32,
    h: f32,
    divide_by_h: bool,
) -> Result<Vec<f32>> {
    let mut est = Spsa1 {
        h,
        n_samples: evals,
        eps: 1e-8,
        seed: 7,
        step: 0,
        divide_by_h,
    };
    est.pre_step();
    let e = est.approximate(gpu, x, loss, g)?;
    assert_eq!(e.evaluations, evals);
    g.to_vec()
}

fn main() -> Result<()> {
    let gpu = Gpu::new()?;
    println!(
        "adapter: {} ({:?})",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );

    // f(x) = ‖x − t‖², computed on the GPU: copy, axpy and one reduction, one scalar read back.
    let n = 32usize;
    let target: Vec<f32> = (0..n).map(|i| ((i % 7) as f32 - 3.0) * 0.25).collect();
    let start: Vec<f32> = (0..n).map(|i| 0.2 * (i % 3) as f32).collect();
    let t = Params::from_slices(&gpu, &[&target[..]])?;
    let mut scratch = t.zeros_like()?;
    let mut loss = |p: &Params| -> Result<f32> {
        copy(&mut scratch, p)?;
        axpy(&mut scratch, -1.0, &t)?;
        Ok(dot(&scratch, &scratch)? as f32)
    };
    let mut x = Params::from_slices(&gpu, &[&start[..]])?;
    let mut g = x.zeros_like()?;
    let truth: Vec<f64> = start
        .iter()
        .zip(&target)
        .map(|(a, b)| 2.0 * (f64::from(*a) - f64::from(*b)))
        .collect();
    println!("n = {n}, f(x0) = {:.4}", loss.loss(&x)?);

    // 1. The averaged estimate against the true gradient, at equal numbers of evaluations.
    let h = 0.1;
    let truth_norm = truth.iter().map(|v| v * v).sum::<f64>().sqrt();
    println!("\nagainst the true gradient, at equal numbers of evaluations:");
    println!(
        "{:>12} {:>16} {:>14} {:>18}",
        "evaluations", "SPSA1 cosine", "‖g‖ / ‖∇f‖", "SPSA cosine"
    );
    for evals in [64u32, 512, 4096] {
        let v = spall(&gpu, &mut x, &mut loss, &mut g, evals, h, true)?;
        let norm = v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
        let (cos1, ratio) = (cosine(&v, &truth), norm / truth_norm);
        let mut spsa = Spsa::new().h(h).n_samples(evals / 2).seed(7);
        spsa.pre_step();
        spsa.approximate(&gpu, &mut x, &mut loss, &mut g)?;
        let cos2 = cosine(&g.to_vec()?, &truth);
        println!("{evals:>12} {cos1:>+16.3} {ratio:>14.3} {cos2:>+18.3}");
    }
    // torchzero's form is the same estimate times h.
    let a = spall(&gpu, &mut x, &mut loss, &mut g, 512, h, true)?;
    let b = spall(&gpu, &mut x, &mut loss, &mut g, 512, h, false)?;
    let scale = b.iter().fold(0.0f64, |m, q| m.max(f64::from(q.abs())));
    let worst = a
        .iter()
        .zip(&b)
        .map(|(p, q)| (f64::from(*p) * f64::from(h) - f64::from(*q)).abs() / scale)
        .fold(0.0, f64::max);
    println!(
        "torchzero's SPSA1 = h · Spall's estimate (largest difference {worst:.1e} of max |g|)"
    );

    // 2. A short descent with Spall's form, 16 evaluations per step: it does descend, noisily
    //    (two-measurement SPSA would need a fraction of the evaluations on a static loss).
    let mut est = Spsa1 {
        h,
        n_samples: 16,
        eps: 1e-8,
        seed: 11,
        step: 0,
        divide_by_h: true,
    };
    let lr = 1e-3;
    let f0 = loss.loss(&x)?;
    for step in 1..=200 {
        est.pre_step();
        est.approximate(&gpu, &mut x, &mut loss, &mut g)?;
        axpy(&mut x, -lr, &g)?;
        if step % 50 == 0 {
            println!(
                "SPSA1 descent, step {step:>3}: f(x) = {:.4} (from {f0:.4})",
                loss.loss(&x)?
            );
        }
    }
    Ok(())
}
