// SPDX-License-Identifier: MIT OR Apache-2.0
//! Every estimator once: evaluations per `approximate` and its time, with a loss that is one GPU
//! reduction (f(x) = x·w + 1, a dot product read back), on the current adapter.
//!
//! `cargo run --release --example estimators [n]` (default n = 1 048 576; Fdm is timed on
//! 1024 elements, since it costs 2n evaluations)

use std::time::Instant;

use zograd::approx::{
    Fdm, ForwardGradient, GaussianSmoothing, GradApproximator, Jvp, MeZo, RandomizedFdm, Rdsa, Spsa,
};
use zograd::{kernels, Distribution, Gpu, Params};

fn time(gpu: &Gpu, n: usize, est: &mut dyn GradApproximator) -> zograd::Result<(u32, f64)> {
    let x0: Vec<f32> = (0..n as u64)
        .map(|i| zograd::rng::perturbation(Distribution::Uniform, 1, 0, 0, i))
        .collect();
    let w = Params::from_slices(gpu, &[&x0])?;
    let mut x = Params::from_slices(gpu, &[&x0])?;
    let mut g = x.zeros_like()?;
    let mut loss = |p: &Params| -> zograd::Result<f32> { Ok(kernels::dot(p, &w)? as f32 + 1.0) };
    // One call to warm up (pipelines, staging buffers), then the best of three.
    est.pre_step();
    est.approximate(gpu, &mut x, &mut loss, &mut g)?;
    let mut best = f64::INFINITY;
    let mut evaluations = 0;
    for _ in 0..3 {
        est.pre_step();
        let start = Instant::now();
        evaluations = est.approximate(gpu, &mut x, &mut loss, &mut g)?.evaluations;
        gpu.wait()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok((evaluations, best))
}

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1 << 20, |a| a.parse().expect("n"));
    println!(
        "adapter: {} ({:?}); loss: one dot-product reduction",
        gpu.adapter_info().name,
        gpu.adapter_info().backend
    );
    println!("\n| estimator | n | evaluations per call | time per call | per evaluation |\n|---|---|---|---|---|");
    let mut rows: Vec<(&str, usize, Box<dyn GradApproximator>)> = vec![
        ("Fdm (central)", 1024, Box::new(Fdm::new())),
        (
            "Fdm (forward)",
            1024,
            Box::new(Fdm::new().formula("forward".parse()?)),
        ),
        ("RandomizedFdm", n, Box::new(RandomizedFdm::new().seed(1))),
        ("Spsa", n, Box::new(Spsa::new().seed(1))),
        ("Spsa, S = 8", n, Box::new(Spsa::new().n_samples(8).seed(1))),
        ("Rdsa (Gaussian)", n, Box::new(Rdsa::new().seed(1))),
        (
            "GaussianSmoothing (S = 100, forward)",
            n,
            Box::new(GaussianSmoothing::new().seed(1)),
        ),
        ("MeZo", n, Box::new(MeZo::new().seed(1))),
        (
            "MeZo, exact_restore",
            n,
            Box::new(MeZo::new().seed(1).exact_restore(true)),
        ),
        (
            "ForwardGradient (central)",
            n,
            Box::new(ForwardGradient::new().jvp(Jvp::Central).seed(1)),
        ),
        (
            "ForwardGradient (forward)",
            n,
            Box::new(ForwardGradient::new().jvp(Jvp::Forward).seed(1)),
        ),
    ];
    for (name, size, est) in &mut rows {
        let (evals, t) = time(&gpu, *size, est.as_mut())?;
        println!(
            "| {name} | {size} | {evals} | {:.2} ms | {:.0} µs |",
            t * 1e3,
            t * 1e6 / f64::from(evals)
        );
    }
    Ok(())
}
