// SPDX-License-Identifier: MIT OR Apache-2.0
//! Kernel throughput against the copy kernel on the same adapter (criterion).
//!
//! `cargo bench --bench kernels` (set `WGPU_BACKEND` to pick the backend). Every kernel moves 8
//! bytes per element, so the reported throughputs compare directly with `copy`;
//! `cargo run --release --example bandwidth` prints the same comparison as a table of ratios.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use zograd::kernels::{accumulate, copy, perturb, Direction};
use zograd::{Distribution, Gpu, Params};

fn kernels(c: &mut Criterion) {
    let gpu = Gpu::new().expect("a GPU adapter");
    let info = gpu.adapter_info();
    eprintln!("adapter: {} ({:?})", info.name, info.backend);
    let mut group = c.benchmark_group("kernels");
    group.sample_size(10);
    // Not powers of two (see examples/bandwidth.rs: cache aliasing slows the copy at 2^24).
    for n in [1_000_000usize, 16_000_000] {
        let src = Params::from_slices(&gpu, &[&vec![0.5f32; n][..]]).expect("upload");
        let mut x = src.zeros_like().expect("zeros");
        group.throughput(Throughput::Bytes(8 * n as u64));
        group.bench_with_input(BenchmarkId::new("copy", n), &n, |b, _| {
            b.iter(|| {
                copy(&mut x, &src).expect("copy");
                gpu.wait().expect("wait");
            });
        });
        for dist in [
            Distribution::Rademacher,
            Distribution::Gaussian,
            Distribution::Uniform,
        ] {
            let dir = Direction {
                distribution: dist,
                seed: 1,
                step: 0,
                sample: 0,
            };
            group.bench_with_input(
                BenchmarkId::new(format!("perturb_{dist}"), n),
                &n,
                |b, _| {
                    let mut sign = 1.0;
                    b.iter(|| {
                        perturb(&mut x, &dir, sign * 1e-3).expect("perturb");
                        sign = -sign;
                        gpu.wait().expect("wait");
                    });
                },
            );
        }
        for dist in [Distribution::Rademacher, Distribution::Gaussian] {
            for k in [1u32, 8] {
                let terms: Vec<(u32, f32)> = (0..k).map(|s| (s, 1e-3)).collect();
                let id = BenchmarkId::new(format!("accumulate_{dist}_{k}"), n);
                group.bench_with_input(id, &n, |b, _| {
                    b.iter(|| {
                        accumulate(&mut x, dist, 7, 0, &terms).expect("accumulate");
                        gpu.wait().expect("wait");
                    });
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
