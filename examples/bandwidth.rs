// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernel throughput on the current adapter, as GB/s and as a ratio to the copy kernel measured
//! in the same run (these machines are noisy; ratios are what compare across runs).
//!
//! ```text
//! cargo run --release --example bandwidth            # n = 10⁶ and 1.6·10⁷
//! cargo run --release --example bandwidth -- 4000000 # other sizes
//! WGPU_BACKEND=gl cargo run --release --example bandwidth
//! ```
//!
//! Every kernel reads and writes each element once (8 bytes per element), so the copy kernel is
//! the yardstick: a ratio of 1.0 means the kernel runs at memory speed.

use std::time::{Duration, Instant};

use zograd::kernels::{accumulate, copy, perturb, Direction};
use zograd::{Distribution, Gpu, Params};

/// Seconds per call of `f`, each call followed by a wait for the GPU; the best of a few rounds,
/// each round at least `budget` long.
fn time(gpu: &Gpu, budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    gpu.wait().expect("wait");
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u32;
        while start.elapsed() < budget || calls < 2 {
            f();
            calls += 1;
            gpu.wait().expect("wait");
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    best
}

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}, driver {:?})",
        info.name, info.backend, info.driver
    );
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("sizes are element counts"))
        .collect();
    // Not powers of two: at n = 2^24 the copy kernel's source and destination alias in the CPU
    // caches of a software adapter and the copy runs 1.4x slower (41 vs 29 ms on lavapipe),
    // which would flatter every ratio.
    let sizes = if sizes.is_empty() {
        vec![1_000_000, 16_000_000]
    } else {
        sizes
    };
    let budget = Duration::from_millis(300);

    println!(
        "\n| n | kernel | time per call | GB/s (8 B/element) | ratio to copy |\n|---|---|---|---|---|"
    );
    for n in sizes {
        let src = Params::from_slices(&gpu, &[&vec![0.5f32; n][..]])?;
        let mut x = src.zeros_like()?;
        let bytes = 8.0 * n as f64;
        let dir = |distribution| Direction {
            distribution,
            seed: 1 << 33,
            step: 1,
            sample: 0,
        };
        let terms = |k: u32| -> Vec<(u32, f32)> { (0..k).map(|s| (s, 1e-3)).collect() };
        let t_copy = time(&gpu, budget, || copy(&mut x, &src).expect("copy"));
        let mut rows = vec![("copy".to_string(), t_copy)];
        for dist in [
            Distribution::Rademacher,
            Distribution::Gaussian,
            Distribution::Uniform,
        ] {
            let mut sign = 1.0;
            let t = time(&gpu, budget, || {
                perturb(&mut x, &dir(dist), sign * 1e-3).expect("perturb");
                sign = -sign;
            });
            rows.push((format!("perturb {dist}"), t));
        }
        for dist in [Distribution::Rademacher, Distribution::Gaussian] {
            for k in [1, 8] {
                let t = time(&gpu, budget, || {
                    accumulate(&mut x, dist, 7, 0, &terms(k)).expect("accumulate");
                });
                rows.push((format!("accumulate {dist}, {k} terms"), t));
            }
        }
        for (name, t) in rows {
            println!(
                "| {n} | {name} | {:.3} ms | {:.2} | {:.2} |",
                t * 1e3,
                bytes / t / 1e9,
                t_copy / t
            );
        }
    }
    Ok(())
}
