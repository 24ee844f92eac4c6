// SPDX-License-Identifier: MIT OR Apache-2.0
//! Unbiasedness: over 10⁴ samples the mean randomized estimate of a quadratic's gradient lies
//! within 4 standard errors of the true gradient, for every distribution. The 2·10⁴ points go
//! through `Objective::loss_batch` (evaluated on the host from one download), so the test also
//! covers the batched path and a 10⁴-term single-pass accumulate.

mod common;

use zograd::approx::{Distribution, Formula, GradApproximator, Objective, RandomizedFdm};
use zograd::kernels::Direction;
use zograd::rng::{perturbation, sphere_norm};
use zograd::{Params, Result};

const N: usize = 8;
const SAMPLES: u32 = 10_000;

/// f(x) = ½ Σ a_i x_i² + Σ b_i x_i, in f64.
fn quadratic(x: &[f64]) -> f64 {
    x.iter()
        .enumerate()
        .map(|(i, v)| 0.5 * (1.0 + i as f64) * v * v + (0.25 * i as f64 - 0.5) * v)
        .sum()
}

fn true_grad(x: &[f64]) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, v)| (1.0 + i as f64) * v + (0.25 * i as f64 - 0.5))
        .collect()
}

fn direction(dir: &Direction) -> Vec<f64> {
    let n = N as u64;
    let factor = if dir.distribution == Distribution::Sphere {
        (n as f64).sqrt() / sphere_norm(dir.seed, dir.step, dir.sample, n)
    } else {
        1.0
    };
    (0..n)
        .map(|i| {
            f64::from(perturbation(
                dir.distribution,
                dir.seed,
                dir.step,
                dir.sample,
                i,
            )) * factor
        })
        .collect()
}

/// Evaluates every point x + scale·u on the host in f64 and records (direction, value).
struct HostBatch {
    points: Vec<(Direction, f32, f64)>,
}

impl Objective for HostBatch {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        let x: Vec<f64> = params.to_vec()?.iter().map(|v| f64::from(*v)).collect();
        Ok(quadratic(&x) as f32)
    }

    fn has_batch(&self) -> bool {
        true
    }

    fn loss_batch(&mut self, params: &mut Params, points: &[(Direction, f32)]) -> Result<Vec<f32>> {
        let x: Vec<f64> = params.to_vec()?.iter().map(|v| f64::from(*v)).collect();
        Ok(points
            .iter()
            .map(|(dir, scale)| {
                let u = direction(dir);
                let y: Vec<f64> = x
                    .iter()
                    .zip(&u)
                    .map(|(a, b)| a + f64::from(*scale) * b)
                    .collect();
                let v = quadratic(&y);
                self.points.push((*dir, *scale, v));
                v as f32
            })
            .collect())
    }
}

#[test]
fn mean_estimate_is_within_four_standard_errors_for_every_distribution() {
    let gpu = common::gpu();
    let x0: Vec<f32> = common::data(31, N);
    let x64: Vec<f64> = x0.iter().map(|v| f64::from(*v)).collect();
    let truth = true_grad(&x64);
    let h = 0.01f32;
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
        Distribution::Sphere,
    ] {
        let mut x = Params::from_slices(&gpu, &[&x0[..3], &x0[3..]]).unwrap();
        let mut g = x.zeros_like().unwrap();
        let mut obj = HostBatch { points: Vec::new() };
        let mut est = RandomizedFdm::new()
            .h(h)
            .n_samples(SAMPLES)
            .distribution(dist)
            .formula(Formula::Central)
            .seed(2024);
        est.pre_step();
        let e = est.approximate(&gpu, &mut x, &mut obj, &mut g).unwrap();
        assert_eq!(e.evaluations, 2 * SAMPLES);
        assert_eq!(
            obj.points.len(),
            2 * SAMPLES as usize,
            "all points in one loss_batch call"
        );
        assert_eq!(x.to_vec().unwrap(), x0, "loss_batch never writes x");
        let mean = g.to_vec().unwrap();

        // Per-sample contributions c_s = D_s·u_s on the host, for the standard error.
        let mut sum = [0.0f64; N];
        let mut sumsq = [0.0f64; N];
        for pair in obj.points.chunks(2) {
            let (dir, scale, f_plus) = pair[0];
            let (dir2, scale2, f_minus) = pair[1];
            assert_eq!(
                (dir, scale),
                (dir2, -scale2),
                "points come as (+h u, −h u) per sample"
            );
            let u = direction(&dir);
            let d = (f64::from(f_plus as f32) - f64::from(f_minus as f32)) / (2.0 * f64::from(h));
            for i in 0..N {
                let c = d * u[i];
                sum[i] += c;
                sumsq[i] += c * c;
            }
        }
        let s = f64::from(SAMPLES);
        for i in 0..N {
            let host_mean = sum[i] / s;
            let var = (sumsq[i] - s * host_mean * host_mean) / (s - 1.0);
            let se = (var / s).sqrt();
            let z = (f64::from(mean[i]) - truth[i]) / se;
            eprintln!(
                "{dist} g[{i}]: mean {:.4} true {:.4} (se {se:.4}, z = {z:+.2})",
                mean[i], truth[i]
            );
            assert!(
                (f64::from(mean[i]) - host_mean).abs() <= 1e-4 * (host_mean.abs() + se),
                "{dist}: GPU accumulate {} vs host mean {host_mean}",
                mean[i]
            );
            assert!(
                z.abs() < 4.0,
                "{dist}: g[{i}] mean {} vs true {} is {z:.2} standard errors off",
                mean[i],
                truth[i]
            );
        }
    }
}
