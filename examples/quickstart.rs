// SPDX-License-Identifier: MIT OR Apache-2.0
//! zograd's first contact: open the GPU, put a million parameters on it, perturb them along
//! random Philox directions and restore them in place, and print what that cost and how far the
//! parameters drifted.
//!
//! `cargo run --release --example quickstart` (pick a backend with `WGPU_BACKEND=vulkan|gl|...`)

use std::time::Instant;

use zograd::kernels::{perturb, Direction};
use zograd::{Distribution, Gpu, Params};

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}, {:?})",
        info.name, info.backend, info.device_type
    );

    let n = 1 << 20;
    let x0: Vec<f32> = (0..n)
        .map(|i| ((i % 1000) as f32 - 500.0) / 500.0)
        .collect();
    // Two buffers, as a model's weights and biases would be.
    let mut x = Params::from_slices(&gpu, &[&x0[..n - 1000], &x0[n - 1000..]])?;
    println!(
        "parameters: {} elements in {} buffers",
        x.len(),
        x.buffers().len()
    );

    let h = 1e-3;
    let cycles = 100u32;
    println!(
        "\n| distribution | perturb + restore | max drift after {cycles} cycles |\n|---|---|---|"
    );
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
        Distribution::Sphere,
    ] {
        x.write(&x0)?;
        let start = Instant::now();
        for step in 0..cycles {
            let dir = Direction {
                distribution: dist,
                seed: 42,
                step,
                sample: 0,
            };
            perturb(&mut x, &dir, h)?; // x + h z   (z regenerated from (seed, step, sample, i))
            perturb(&mut x, &dir, -h)?; // x         (up to f32 rounding)
        }
        gpu.wait()?;
        let per_cycle = start.elapsed().as_secs_f64() / f64::from(cycles);
        let drift = x
            .to_vec()?
            .iter()
            .zip(&x0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        println!("| {dist} | {:.2} ms | {drift:.2e} |", per_cycle * 1e3);
    }
    Ok(())
}
