// SPDX-License-Identifier: MIT OR Apache-2.0
//! The Sphere-norm cache of a `Gpu`: bounded, and never evicting what the current call needs.
//! A binary of its own with a single test: each check needs a fresh device (the cache is per
//! device), and wgpu's GL backend cannot drive two devices from different threads at once.

mod common;

use common::assert_close;
use zograd::kernels::accumulate;
use zograd::{Distribution, Gpu, Params};

#[test]
fn the_sphere_norm_cache_never_drops_a_norm_in_use() {
    eviction_keeps_what_the_call_needs();
    two_sphere_estimators_sharing_a_gpu_run_past_the_cache_size();
}

/// Defect: the Sphere-norm cache was cleared whole when full, then every requested sample was
/// looked up in it, so a sample cached before the clear panicked. Here 4096 norms fill the
/// cache of a fresh `Gpu` (the cache is per device), then an accumulate asks for one cached
/// sample and one new one, and must succeed with the Sphere factors of both, checked against
/// the CPU Gaussian values times √n/‖z‖ recomputed in f64.
fn eviction_keeps_what_the_call_needs() {
    let g = Gpu::new().unwrap();
    let n = 96u64;
    for step in 0..4096u32 {
        zograd::kernels::sphere_norm(&g, 0, step, 0, n).unwrap();
    }
    // Sample 0 of step 4095 is cached; sample 1 is not, so the cache must make room.
    let mut x = Params::from_slices(&g, &[&vec![0.0f32; n as usize][..]]).unwrap();
    let (c0, c1) = (0.5f32, -0.25f32);
    accumulate(&mut x, Distribution::Sphere, 0, 4095, &[(0, c0), (1, c1)]).unwrap();
    let got = x.to_vec().unwrap();
    let z = |s: u32, i: u64| {
        let norm = zograd::rng::sphere_norm(0, 4095, s, n);
        f64::from(zograd::rng::perturbation(
            Distribution::Gaussian,
            0,
            4095,
            s,
            i,
        )) * (n as f64).sqrt()
            / norm
    };
    let want: Vec<f32> = (0..n)
        .map(|i| (f64::from(c0) * z(0, i) + f64::from(c1) * z(1, i)) as f32)
        .collect();
    assert_close(
        &got,
        &want,
        1e-6,
        1e-5,
        "sphere accumulate after a full cache",
    );
}

/// Defect: two Sphere MeZO optimisers sharing a `Gpu`, S = 1 and S = 3, stepped in lockstep,
/// filled the shared norm cache at step 1366 and the next lookup panicked.
fn two_sphere_estimators_sharing_a_gpu_run_past_the_cache_size() {
    use zograd::approx::MeZo;
    use zograd::optim::{Lr, Optimizer};
    let g = Gpu::new().unwrap();
    let mut x = Params::from_slices(&g, &[&[0.5f32, -1.0, 2.0][..]]).unwrap();
    let sphere = |s: u32| {
        Optimizer::new(
            &g,
            &x,
            MeZo::new()
                .distribution(Distribution::Sphere)
                .n_samples(s)
                .seed(0),
        )
        .unwrap()
        .then(Lr::new(1e-4))
    };
    let (mut one, mut three) = (sphere(1), sphere(3));
    let mut f = |p: &Params| -> f32 { p.to_vec().unwrap().iter().map(|v| v * v).sum() };
    for step in 0..1400 {
        for opt in [&mut one, &mut three] {
            let r = opt.step(&mut x, &mut f);
            assert!(r.is_ok(), "step {step}: {r:?}");
        }
    }
}
