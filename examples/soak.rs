// SPDX-License-Identifier: MIT OR Apache-2.0
//! Soak run: many fused MeZO steps on one set of parameters, printing the GPU memory zograd holds
//! (`Gpu::allocated_bytes`) and the process's resident set size (from `/proc/self/statm`)
//! before and after, to show that a long run does not leak.
//!
//! ```sh
//! cargo run --release --example soak                 # 100 000 steps, n = 10 000
//! cargo run --release --example soak -- 2000 100000  # steps, n
//! ```
//!
//! `tests/reliability.rs` runs a short version (2 000 steps) and asserts no growth.

use std::time::Instant;

use zograd::approx::MeZo;
use zograd::optim::{Lr, Optimizer, WeightDecay};
use zograd::{Gpu, Params, Result};

/// Resident set size in bytes: `/proc/self/statm`'s second field times the page size (from the
/// auxiliary vector, `AT_PAGESZ`). `None` where /proc is missing.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    const AT_PAGESZ: u64 = 6;
    let auxv = std::fs::read("/proc/self/auxv").unwrap_or_default();
    auxv.chunks_exact(16)
        .map(|e| {
            let word = |b: &[u8]| u64::from_ne_bytes(b.try_into().expect("8 bytes"));
            (word(&e[..8]), word(&e[8..]))
        })
        .find(|(key, _)| *key == AT_PAGESZ)
        .map_or(4096, |(_, value)| value)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn report(label: &str, gpu: &Gpu) {
    let rss = rss_bytes().map_or("n/a".into(), |b| format!("{:.2} MiB", mib(b)));
    println!(
        "{label:>8}: GPU allocations {} bytes, host RSS {rss}",
        gpu.allocated_bytes()
    );
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let steps: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info();
    println!(
        "{} ({:?}): {steps} fused MeZo steps, n = {n}",
        info.name, info.backend
    );
    let x0: Vec<f32> = (0..n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let mut x = Params::from_slices(&gpu, &[&x0[..n / 2], &x0[n / 2..]])?;
    // The loss is one GPU reduction and one scalar read back, as a user's shader loss would be.
    let mut loss = |p: &Params| -> Result<f32> { Ok(zograd::kernels::norm(p)?.powi(2) as f32) };
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1))?
        .then(WeightDecay::new(1e-4))
        .then(Lr::new(2e-5));
    // Warm-up: pipelines, uniforms, staging buffers and wgpu's own pools are created here.
    for _ in 0..100.min(steps) {
        opt.step(&mut x, &mut loss)?;
    }
    gpu.wait()?;
    report("before", &gpu);
    let (gpu0, rss0) = (gpu.allocated_bytes(), rss_bytes());
    let started = Instant::now();
    let every = (steps / 10).max(1);
    let mut last = None;
    for s in 1..=steps {
        last = Some(opt.step(&mut x, &mut loss)?);
        if s % every == 0 {
            report(&format!("{s}"), &gpu);
        }
    }
    gpu.wait()?;
    let secs = started.elapsed().as_secs_f64();
    report("after", &gpu);
    println!(
        "{steps} steps in {secs:.1} s ({:.0} µs per step); loss {:.4e} -> {:.4e}",
        secs * 1e6 / steps as f64,
        x0.iter().map(|v| f64::from(v * v)).sum::<f64>(),
        last.and_then(|r| r.loss_approx).unwrap_or(f32::NAN)
    );
    let growth_gpu = gpu.allocated_bytes() as i64 - gpu0 as i64;
    match (rss0, rss_bytes()) {
        (Some(a), Some(b)) => println!(
            "growth: GPU allocations {growth_gpu} bytes, host RSS {:+.2} MiB",
            (b as f64 - a as f64) / (1 << 20) as f64
        ),
        _ => println!("growth: GPU allocations {growth_gpu} bytes, host RSS n/a"),
    }
    Ok(())
}
