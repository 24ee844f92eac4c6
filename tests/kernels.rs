// SPDX-License-Identifier: MIT OR Apache-2.0
//! GPU kernels against their CPU twins, on a real adapter (lavapipe or llvmpipe-GL in CI).

mod common;

use common::{assert_close, data, dir, gpu, split, DISTS};
use zograd::kernels::{accumulate, axpy, copy, dot, fill, norm, perturb, scale, Direction};
use zograd::{cpu, Distribution, Params};

/// GPU vs CPU: bit-exact for Rademacher (its values are ±1 and one f32 add), 1e-6 absolute +
/// 1e-5 relative for the transcendental distributions (README, "Random-number contract").
fn compare(dist: Distribution, got: &[f32], want: &[f32], what: &str) {
    if dist == Distribution::Rademacher || dist == Distribution::Uniform {
        for (i, (a, b)) in got.iter().zip(want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{what}: element {i}: gpu {a} vs cpu {b}"
            );
        }
    } else {
        assert_close(got, want, 1e-6, 1e-5, what);
    }
}

#[test]
fn perturbation_matches_the_cpu_twin_on_all_lengths() {
    let g = gpu();
    for dist in DISTS {
        for n in [1usize, 127, 128, 129, 1_000_003] {
            let x0 = vec![0.0f32; n];
            let mut x = Params::from_slices(&g, &[&x0]).unwrap();
            perturb(&mut x, &dir(dist), 1.0).unwrap();
            let mut want = x0.clone();
            cpu::perturb(&mut want, 0, &dir(dist), 1.0, n as u64);
            compare(
                dist,
                &x.to_vec().unwrap(),
                &want,
                &format!("{dist} z, n = {n}"),
            );
        }
    }
}

#[test]
fn perturbation_matches_the_cpu_twin_on_several_buffers() {
    let g = gpu();
    let x0 = data(1, 100_003);
    let pieces = split(&x0, &[1, 127, 4097, 333, 50_000]);
    for dist in DISTS {
        let mut x = Params::from_slices(&g, &pieces).unwrap();
        perturb(&mut x, &dir(dist), 0.37).unwrap();
        let mut want = x0.clone();
        cpu::perturb(&mut want, 0, &dir(dist), 0.37, x0.len() as u64);
        compare(
            dist,
            &x.to_vec().unwrap(),
            &want,
            &format!("{dist} x + 0.37 z"),
        );
    }
}

#[test]
fn directions_do_not_depend_on_the_buffer_layout() {
    let g = gpu();
    let n = 70_001;
    let zeros = vec![0.0f32; n];
    for dist in DISTS {
        let mut one = Params::from_slices(&g, &[&zeros]).unwrap();
        let mut many =
            Params::from_slices(&g, &split(&zeros, &[3, 125, 131, 9999, 1, 4096])).unwrap();
        perturb(&mut one, &dir(dist), 1.0).unwrap();
        perturb(&mut many, &dir(dist), 1.0).unwrap();
        let (a, b) = (one.to_vec().unwrap(), many.to_vec().unwrap());
        assert!(
            a.iter().zip(&b).all(|(u, v)| u.to_bits() == v.to_bits()),
            "{dist}: layouts differ"
        );
    }
}

#[test]
fn accumulate_matches_the_cpu_sum() {
    let g = gpu();
    let x0 = data(2, 20_011);
    let pieces = split(&x0, &[5000, 7, 129]);
    for dist in DISTS {
        for n_terms in [1u32, 8, 21] {
            let terms: Vec<(u32, f32)> = (0..n_terms)
                .map(|s| (3 * s + 1, 0.25 - 0.1 * s as f32))
                .collect();
            let mut acc = Params::from_slices(&g, &pieces).unwrap();
            accumulate(&mut acc, dist, 99 + (1 << 34), 5, &terms).unwrap();
            let mut want = x0.clone();
            cpu::accumulate(
                &mut want,
                0,
                dist,
                99 + (1 << 34),
                5,
                &terms,
                x0.len() as u64,
            );
            let what = format!("{dist} accumulate, {n_terms} terms");
            if dist == Distribution::Rademacher {
                compare(dist, &acc.to_vec().unwrap(), &want, &what);
            } else {
                // A sum of n_terms products: allow each its rounding.
                assert_close(
                    &acc.to_vec().unwrap(),
                    &want,
                    2e-6 * n_terms as f32,
                    1e-5,
                    &what,
                );
            }
        }
    }
}

/// One term, with and without a = 1: `accumulate` with one term runs the perturb kernel and
/// `scale_accumulate` with a ≠ 1 the accumulate kernel, so both paths are checked against the
/// CPU values x + c·z(i) recomputed in f64 from `rng::perturbation` (Sphere: the Gaussian
/// values times √n/‖z‖ with the CPU norm), independently of each other.
#[test]
fn accumulate_with_one_term_equals_perturb() {
    let g = gpu();
    let n = 9_999usize;
    let x0 = data(3, n);
    for dist in DISTS {
        let d = dir(dist);
        let (c, a) = (-0.5f32, 0.75f32);
        let z = |i: u64| -> f64 {
            if dist == Distribution::Sphere {
                f64::from(zograd::rng::perturbation(
                    Distribution::Gaussian,
                    d.seed,
                    d.step,
                    d.sample,
                    i,
                )) * (n as f64).sqrt()
                    / zograd::rng::sphere_norm(d.seed, d.step, d.sample, n as u64)
            } else {
                f64::from(zograd::rng::perturbation(dist, d.seed, d.step, d.sample, i))
            }
        };
        let want = |a: f64| -> Vec<f32> {
            (0..n)
                .map(|i| (a * f64::from(x0[i]) + f64::from(c) * z(i as u64)) as f32)
                .collect()
        };
        let mut one = Params::from_slices(&g, &[&x0]).unwrap();
        accumulate(&mut one, dist, d.seed, d.step, &[(d.sample, c)]).unwrap();
        let what = format!("{dist}: one term (perturb path)");
        assert_close(&one.to_vec().unwrap(), &want(1.0), 2e-6, 1e-5, &what);
        let mut scaled = Params::from_slices(&g, &[&x0]).unwrap();
        zograd::kernels::scale_accumulate(&mut scaled, a, dist, d.seed, d.step, &[(d.sample, c)])
            .unwrap();
        let what = format!("{dist}: one term, a = {a} (accumulate path)");
        assert_close(
            &scaled.to_vec().unwrap(),
            &want(f64::from(a)),
            2e-6,
            1e-5,
            &what,
        );
    }
}

/// A 160 MiB buffer exceeds the 128 MiB storage-binding limit of lavapipe and llvmpipe: the
/// kernels bind it in chunks. On adapters with a larger limit the chunk is lowered to 2^25
/// elements (128 MiB) so that the buffer is still cut. Checked against the CPU twin around every
/// chunk boundary.
#[test]
fn a_buffer_larger_than_the_binding_limit_is_perturbed_across_chunks() {
    let g = gpu();
    let n: usize = 40 << 20;
    let limit = g.limits().max_storage_buffer_binding_size / 4;
    let x0 = vec![0.5f32; n];
    let mut x = Params::from_slices(&g, &[&x0[..7], &x0[7..]]).unwrap();
    if x.chunk_len() > 1 << 25 {
        x.set_max_chunk_len(1 << 25).unwrap();
    }
    let chunk = x.chunk_len();
    assert!(
        chunk <= limit && (n as u64) > chunk,
        "chunk {chunk}, limit {limit}"
    );
    for dist in [Distribution::Rademacher, Distribution::Gaussian] {
        let d = dir(dist);
        perturb(&mut x, &d, 0.25).unwrap();
        let got = x.to_vec().unwrap();
        // Boundaries in global indices: the buffer split at 7, then chunks of the second buffer.
        let mut spots: Vec<u64> = vec![0, 7, n as u64 - 1];
        let mut b = 7 + chunk;
        while b < n as u64 {
            spots.push(b);
            b += chunk;
        }
        for s in spots {
            for i in s.saturating_sub(130)..(s + 130).min(n as u64) {
                let want =
                    0.5 + 0.25 * zograd::rng::perturbation(dist, d.seed, d.step, d.sample, i);
                let have = got[i as usize];
                if dist == Distribution::Rademacher {
                    assert_eq!(have, want, "{dist} element {i}");
                } else {
                    assert!(
                        (have - want).abs() <= 2e-6,
                        "{dist} element {i}: {have} vs {want}"
                    );
                }
            }
        }
        perturb(&mut x, &d, -0.25).unwrap();
    }
    assert!(x.to_vec().unwrap().iter().all(|v| (v - 0.5).abs() < 1e-6));
}

/// Small chunks (set_max_chunk_len) put many chunk boundaries inside Philox blocks, for every
/// kernel.
#[test]
fn every_kernel_is_correct_across_small_chunks() {
    let g = gpu();
    let x0 = data(4, 30_000);
    let y0 = data(5, 30_000);
    let pieces = [&x0[..10_001], &x0[10_001..]];
    let ypieces = [&y0[..10_001], &y0[10_001..]];
    let terms = [(0u32, 0.5f32), (9, -1.25), (4, 2.0)];
    for dist in DISTS {
        let mut x = Params::from_slices(&g, &pieces).unwrap();
        x.set_max_chunk_len(1000).unwrap();
        assert!(x.chunk_len() <= 1000);
        perturb(&mut x, &dir(dist), 0.1).unwrap();
        accumulate(&mut x, dist, 3, 1, &terms).unwrap();
        let mut want = x0.clone();
        cpu::perturb(&mut want, 0, &dir(dist), 0.1, 30_000);
        cpu::accumulate(&mut want, 0, dist, 3, 1, &terms, 30_000);
        assert_close(
            &x.to_vec().unwrap(),
            &want,
            1e-5,
            1e-5,
            &format!("{dist} small chunks"),
        );
    }
    let mut y = Params::from_slices(&g, &ypieces).unwrap();
    let mut x = Params::from_slices(&g, &pieces).unwrap();
    y.set_max_chunk_len(1000).unwrap();
    x.set_max_chunk_len(1000).unwrap();
    axpy(&mut y, -0.5, &x).unwrap();
    let mut want = y0.clone();
    cpu::axpy(&mut want, -0.5, &x0);
    compare(
        Distribution::Rademacher,
        &y.to_vec().unwrap(),
        &want,
        "axpy small chunks",
    );
    let d = dot(&x, &y).unwrap();
    assert!((d - cpu::dot(&x0, &want)).abs() < 1e-3, "dot small chunks");
}

#[test]
fn elementwise_kernels_match_the_cpu() {
    let g = gpu();
    let x0 = data(6, 5003);
    let y0 = data(7, 5003);
    let mut x = Params::from_slices(&g, &split(&x0, &[17, 2000])).unwrap();
    let mut y = Params::from_slices(&g, &split(&y0, &[17, 2000])).unwrap();

    axpy(&mut y, 0.75, &x).unwrap();
    let mut want = y0.clone();
    cpu::axpy(&mut want, 0.75, &x0);
    compare(
        Distribution::Rademacher,
        &y.to_vec().unwrap(),
        &want,
        "axpy",
    );

    scale(&mut y, -3.0).unwrap();
    cpu::scale(&mut want, -3.0);
    compare(
        Distribution::Rademacher,
        &y.to_vec().unwrap(),
        &want,
        "scale",
    );

    let d = dot(&x, &y).unwrap();
    let dw = cpu::dot(&x0, &want);
    assert!(
        (d - dw).abs() <= 1e-5 * dw.abs().max(1.0),
        "dot {d} vs {dw}"
    );
    let nx = norm(&x).unwrap();
    let nw = cpu::dot(&x0, &x0).sqrt();
    assert!((nx - nw).abs() <= 1e-5 * nw, "norm {nx} vs {nw}");

    copy(&mut x, &y).unwrap();
    assert_eq!(x.to_vec().unwrap(), want, "copy");
    fill(&mut x, 2.5).unwrap();
    assert!(x.to_vec().unwrap().iter().all(|v| *v == 2.5), "fill");
}

#[test]
fn sphere_directions_have_norm_sqrt_n() {
    let g = gpu();
    let n = 12_345usize;
    let mut x = Params::from_slices(&g, &[&vec![0.0f32; n][..]]).unwrap();
    perturb(&mut x, &dir(Distribution::Sphere), 1.0).unwrap();
    let z = x.to_vec().unwrap();
    let nz = z.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
    assert!((nz - (n as f64).sqrt()).abs() < 1e-4 * nz, "‖z‖ = {nz}");
    let gpu_norm = zograd::kernels::sphere_norm(&g, 5, 6, 7, n as u64).unwrap();
    let cpu_norm = zograd::rng::sphere_norm(5, 6, 7, n as u64);
    assert!(
        (gpu_norm - cpu_norm).abs() < 1e-5 * cpu_norm,
        "{gpu_norm} vs {cpu_norm}"
    );
}

/// Mean and variance of 10⁶ GPU values within 5 standard errors of (0, 1).
#[test]
fn gpu_distributions_have_zero_mean_and_unit_variance() {
    let g = gpu();
    let n = 1_000_000usize;
    for (dist, fourth) in [
        (Distribution::Rademacher, 1.0),
        (Distribution::Gaussian, 3.0),
        (Distribution::Uniform, 1.8),
    ] {
        let mut x = Params::from_slices(&g, &[&vec![0.0f32; n][..]]).unwrap();
        perturb(&mut x, &dir(dist), 1.0).unwrap();
        let z = x.to_vec().unwrap();
        let nf = n as f64;
        let mean = z.iter().map(|v| f64::from(*v)).sum::<f64>() / nf;
        let var = z.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / nf;
        assert!(mean.abs() < 5.0 * (1.0 / nf).sqrt(), "{dist}: mean {mean}");
        let se_var = ((fourth - 1.0) / nf).sqrt();
        assert!((var - 1.0).abs() <= 5.0 * se_var, "{dist}: variance {var}");
    }
}

/// In-place restoration drifts by f32 rounding. Each cycle does two adds, each rounding by at
/// most half an ulp of a value below 2 (|x| < 1, |h z| < 0.01): ≤ 2 · 2⁻²⁴ per cycle, so after
/// 1000 cycles the drift is at most 1000 · 2⁻²³ ≈ 1.2e-4 in the worst case. Measured on
/// lavapipe: see the printed figure (about 1e-7 to 1e-6: rounding errors mostly cancel).
#[test]
fn perturb_restore_drift_stays_within_the_f32_bound() {
    let g = gpu();
    let x0 = data(8, 10_000);
    let h = 1e-3f32;
    let cycles = 1000u32;
    let bound = cycles as f32 * 2.0 * f32::EPSILON / 2.0;
    for dist in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
    ] {
        let mut x = Params::from_slices(&g, &[&x0]).unwrap();
        for step in 0..cycles {
            let d = Direction {
                distribution: dist,
                seed: 11,
                step,
                sample: 0,
            };
            perturb(&mut x, &d, h).unwrap();
            perturb(&mut x, &d, -h).unwrap();
        }
        let drift = x
            .to_vec()
            .unwrap()
            .iter()
            .zip(&x0)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("drift after {cycles} cycles of ±{h} {dist}: max |x - x0| = {drift:e} (bound {bound:e})");
        assert!(drift <= bound, "{dist}: drift {drift} > {bound}");
    }
}

#[test]
fn adopted_buffers_are_used_in_place() {
    let g = gpu();
    let x0 = data(10, 3000);
    let buf = wgpu::util::DeviceExt::create_buffer_init(
        g.device(),
        &wgpu::util::BufferInitDescriptor {
            label: Some("user buffer"),
            contents: bytemuck::cast_slice(&x0),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        },
    );
    let mut x = Params::from_buffers(&g, vec![buf.clone()]).unwrap();
    assert_eq!(x.len(), 3000);
    perturb(&mut x, &dir(Distribution::Rademacher), 1.0).unwrap();
    let mut want = x0.clone();
    cpu::perturb(&mut want, 0, &dir(Distribution::Rademacher), 1.0, 3000);
    // Read the user's own buffer handle: the same memory was perturbed.
    let again = Params::from_buffers(&g, vec![buf])
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(again, want);
}

/// Defect: operands chunked differently (equal chunk counts, different boundaries) were paired
/// chunk by chunk: wrong elements were combined, or a shorter binding read past its end. Now
/// every kernel family with a second operand (copy, axpy, heavy ball, Adam; dot) works on any
/// pair of chunkings, checked against f64 recomputations on the host.
#[test]
fn operands_chunked_differently_are_combined_element_by_element() {
    let g = gpu();
    // Two buffers of 2560 and 1900 elements. Chunks of 1024 cut them 3 + 2, of 1216 also 3 + 2
    // (the same count, other boundaries), of 1536 2 + 2.
    let n0 = 2560usize;
    let a0 = data(21, n0 + 1900);
    let b0 = data(22, n0 + 1900);
    let parts = |v: &[f32]| -> Params { Params::from_slices(&g, &split(v, &[n0])).unwrap() };
    let (mut a, mut b, mut c) = (parts(&a0), parts(&b0), parts(&b0));
    a.set_max_chunk_len(1024).unwrap();
    b.set_max_chunk_len(1536).unwrap();
    c.set_max_chunk_len(1216).unwrap();
    assert_eq!(
        (a.chunk_len(), b.chunk_len(), c.chunk_len()),
        (1024, 1536, 1216)
    );

    // dot against f64
    let want: f64 = a0
        .iter()
        .zip(&b0)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    for (y, name) in [(&b, "b"), (&c, "c")] {
        let got = dot(&a, y).unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "dot(a, {name}) = {got}, f64 {want}"
        );
        let got = dot(y, &a).unwrap();
        assert!(
            (got - want).abs() < 1e-4,
            "dot({name}, a) = {got}, f64 {want}"
        );
    }
    // axpy: a += 0.5 c, element by element
    axpy(&mut a, 0.5, &c).unwrap();
    let want: Vec<f32> = a0.iter().zip(&b0).map(|(x, y)| x + 0.5 * y).collect();
    assert_eq!(a.to_vec().unwrap(), want, "axpy across chunkings");
    // copy: a = c
    copy(&mut a, &c).unwrap();
    assert_eq!(a.to_vec().unwrap(), b0, "copy across chunkings");
    // heavy ball: v = 0.9 v + u; u = v, with v chunked differently from u
    let mut u = parts(&a0);
    u.set_max_chunk_len(1216).unwrap();
    let mut v = parts(&b0);
    v.set_max_chunk_len(1024).unwrap();
    zograd::kernels::heavy_ball(&mut u, &mut v, 0.9).unwrap();
    let want: Vec<f32> = a0.iter().zip(&b0).map(|(u, v)| 0.9 * v + u).collect();
    assert_eq!(u.to_vec().unwrap(), want, "heavy_ball u");
    assert_eq!(v.to_vec().unwrap(), want, "heavy_ball v");
    // Adam, step 1: m = (1-β1) u, v = (1-β2) u², u = m̂ / (√v̂ + ε) = u / (|u| + ε)
    let mut u = parts(&a0);
    let mut m = parts(&vec![0.0; a0.len()]);
    let mut s = parts(&vec![0.0; a0.len()]);
    m.set_max_chunk_len(1216).unwrap();
    s.set_max_chunk_len(1536).unwrap();
    zograd::kernels::adam(&mut u, &mut m, &mut s, (0.9, 0.999, 1e-8), 1).unwrap();
    let want: Vec<f32> = a0
        .iter()
        .map(|x| (f64::from(*x) / (f64::from(*x).abs() + 1e-8)) as f32)
        .collect();
    assert_close(&u.to_vec().unwrap(), &want, 1e-5, 1e-5, "adam u");
    let want_m: Vec<f32> = a0.iter().map(|x| (0.1 * f64::from(*x)) as f32).collect();
    assert_close(&m.to_vec().unwrap(), &want_m, 1e-7, 1e-5, "adam m");
}

/// Defect: `dot` and `norm` summed f32 squares, so ‖x‖ was ∞ once elements passed ~1.8e19 and 0
/// for elements below ~1e-23. Elements of 1e25 and 1e-25, alone and mixed, against f64.
#[test]
fn dot_and_norm_neither_overflow_nor_underflow() {
    let g = gpu();
    let n = 40_000usize;
    let pattern = |k: usize| (k % 7) as f64 - 3.0; // -3 … 3, mixed signs
    for (what, scale_of) in [
        ("1e25", (|_| 1e25) as fn(usize) -> f64),
        ("1e-25", |_| 1e-25),
        ("mixed", |k| if k % 3 == 0 { 1e25 } else { 1e-25 }),
    ] {
        let x64: Vec<f64> = (0..n).map(|k| pattern(k) * scale_of(k)).collect();
        let y64: Vec<f64> = (0..n).map(|k| pattern(k + 2) * scale_of(k)).collect();
        let x32: Vec<f32> = x64.iter().map(|v| *v as f32).collect();
        let y32: Vec<f32> = y64.iter().map(|v| *v as f32).collect();
        let x = Params::from_slices(&g, &split(&x32, &[1000])).unwrap();
        let y = Params::from_slices(&g, &split(&y32, &[1000])).unwrap();
        // f64 of the f32 inputs
        let nrm: f64 = x32
            .iter()
            .map(|v| f64::from(*v).powi(2))
            .sum::<f64>()
            .sqrt();
        let d: f64 = x32
            .iter()
            .zip(&y32)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let scale: f64 = x32
            .iter()
            .zip(&y32)
            .map(|(a, b)| (f64::from(*a) * f64::from(*b)).abs())
            .sum();
        let got_n = norm(&x).unwrap();
        assert!(nrm.is_finite() && nrm > 0.0);
        assert!(
            (got_n - nrm).abs() <= 1e-6 * nrm,
            "{what}: norm {got_n} vs f64 {nrm}"
        );
        let got_d = dot(&x, &y).unwrap();
        assert!(
            (got_d - d).abs() <= 1e-6 * scale,
            "{what}: dot {got_d} vs f64 {d}"
        );
    }
    // Tiny terms are not lost beside large ones: [1e20, 1e-20 × 1000] has ‖·‖² = 1e40 + 1e-37.
    let mut v = vec![1e-20f32; 1000];
    v[0] = 1e20;
    let x = Params::from_slices(&g, &[&v]).unwrap();
    let want = (1e40f64 + 999.0 * f64::from(1e-20f32).powi(2)).sqrt();
    assert!((norm(&x).unwrap() - want).abs() <= 1e-6 * want);
    let small = Params::from_slices(&g, &[&vec![1e-30f32; 1000]]).unwrap();
    let want = (1000.0 * f64::from(1e-30f32).powi(2)).sqrt();
    let got = norm(&small).unwrap();
    assert!((got - want).abs() <= 1e-6 * want, "1e-30: {got} vs {want}");
}

/// The bind groups a `Params` caches for a second operand follow that operand's chunking: after
/// the source is re-chunked, a copy still pairs element i with element i (checked against the
/// host data).
#[test]
fn cached_bind_groups_follow_a_rechunked_operand() {
    let g = gpu();
    let n = 5000usize;
    let (a0, b0) = (data(31, n), data(32, n));
    let mut dst = Params::from_slices(&g, &[&vec![0.0f32; n]]).unwrap();
    let mut src = Params::from_slices(&g, &[&a0]).unwrap();
    dst.set_max_chunk_len(1024).unwrap();
    copy(&mut dst, &src).unwrap();
    assert_eq!(dst.to_vec().unwrap(), a0);
    src.set_max_chunk_len(1216).unwrap();
    src.write(&b0).unwrap();
    copy(&mut dst, &src).unwrap();
    assert_eq!(
        dst.to_vec().unwrap(),
        b0,
        "copy after re-chunking the source"
    );
    let want: f64 = b0.iter().map(|v| f64::from(*v).powi(2)).sum();
    let got = dot(&dst, &src).unwrap();
    assert!((got - want).abs() < 1e-4 * want, "dot {got} vs f64 {want}");
}

/// `lerp` (the running mean of iterate averaging) against f64 arithmetic, across chunk
/// boundaries (the operands chunked at different lengths).
#[test]
fn lerp_matches_f64_across_chunks() {
    let g = gpu();
    let x0 = data(21, 5003);
    let y0 = data(22, 5003);
    let mut y = Params::from_slices(&g, &split(&y0, &[17, 2000])).unwrap();
    let mut x = Params::from_slices(&g, &split(&x0, &[17, 2000])).unwrap();
    y.set_max_chunk_len(1000).unwrap();
    x.set_max_chunk_len(700).unwrap();
    zograd::kernels::lerp(&mut y, 0.25, &x).unwrap();
    let want: Vec<f32> = y0
        .iter()
        .zip(&x0)
        .map(|(&a, &b)| (f64::from(a) + 0.25 * (f64::from(b) - f64::from(a))) as f32)
        .collect();
    assert_close(&y.to_vec().unwrap(), &want, 1e-7, 1e-6, "lerp");
    let mut twin = y0.clone();
    cpu::lerp(&mut twin, 0.25, &x0);
    assert_close(&twin, &want, 1e-7, 1e-6, "cpu::lerp");
    assert!(zograd::kernels::lerp(&mut y, f32::NAN, &x).is_err());
}
