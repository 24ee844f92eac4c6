// SPDX-License-Identifier: MIT OR Apache-2.0
//! Frozen buffers and sparse directions (`kernels::Mask`, the estimators' `freeze` and
//! `density`): the GPU mask equals its CPU twin bit for bit, frozen buffers are never written by
//! any estimator or by the fused MeZO step (bytes compared, NaN payloads included), the
//! gradient is exactly 0 there, Sphere directions are normalised over the unfrozen elements,
//! the fraction of perturbed elements is p and the sparse estimate is unbiased (checked against
//! textbook formulas), and bad settings are refused by name.

mod common;

use common::{data, gpu, invalid_naming};
use zograd::approx::{
    Fdm, ForwardGradient, GaussianSmoothing, GradApproximator, Jvp, MeZo, Rdsa, Spsa,
};
use zograd::kernels::{self, Direction, Mask};
use zograd::optim::{Lr, Optimizer, WeightDecay};
use zograd::{cpu, rng, Distribution, Params, Result};

/// Bit patterns a frozen buffer holds: NaN payloads (quiet and signalling), ±0, ±∞, subnormals.
const ODD_BITS: [u32; 8] = [
    0x7fa0_0001, // signalling NaN with a payload
    0xffc1_2345, // negative quiet NaN with a payload
    0x8000_0000, // -0.0
    0x0000_0000,
    0x7f80_0000, // +inf
    0x0000_0001, // smallest subnormal
    0x8040_0000, // negative subnormal
    0x3f80_0001,
];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Three buffers: data, the odd bit patterns (repeated), data; buffer 1 is the one to freeze.
fn three_buffers(n0: usize, n1: usize, n2: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let odd: Vec<f32> = (0..n1)
        .map(|i| f32::from_bits(ODD_BITS[i % ODD_BITS.len()]))
        .collect();
    let mut a = data(11, n0);
    // Some -0.0 among the data: an element the sparse mask drops must keep its sign bit.
    for v in a.iter_mut().step_by(7) {
        *v = -0.0;
    }
    (a, odd, data(12, n2))
}

/// f = Σ w_i (x_i − t_i)² over buffers 0 and 2 (buffer 1 is ignored), in f64 on the host.
fn quadratic(n0: usize, n1: usize) -> impl FnMut(&Params) -> Result<f32> {
    move |p: &Params| {
        let x = p.to_vec()?;
        let f: f64 = x
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < n0 || *i >= n0 + n1)
            .map(|(i, &v)| {
                let t = 0.2 * (i as f64).cos();
                (1.0 + (i % 3) as f64) * (f64::from(v) - t).powi(2)
            })
            .sum();
        Ok(f as f32)
    }
}

/// The GPU's masked perturbation and accumulation equal the CPU twins (`cpu::perturb_masked`,
/// `cpu::scale_accumulate_masked`): bit for bit for Rademacher, to float tolerance for the
/// transcendental distributions; a lowered chunk length makes launches start inside Philox
/// blocks and mask blocks. Frozen bytes are untouched on both.
#[test]
fn masked_kernels_match_the_cpu_twin() {
    let gpu = gpu();
    let (a, odd, c) = three_buffers(10_001, 4_099, 20_003);
    let n = (a.len() + odd.len() + c.len()) as u64;
    let host: Vec<f32> = a.iter().chain(&odd).chain(&c).copied().collect();
    for dist in common::DISTS {
        let mut x = Params::from_slices(&gpu, &[&a, &odd, &c]).unwrap();
        x.set_max_chunk_len(4096).unwrap();
        let mask = Mask::new(&x, &[1], 0.3).unwrap();
        let dir = Direction {
            distribution: dist,
            ..common::dir(dist)
        };
        kernels::perturb_masked(&mut x, &dir, 0.5, &mask).unwrap();
        let terms = [(3u32, 0.25f32), (5, -1.5), (8, 2.0)];
        kernels::scale_accumulate_masked(&mut x, 0.75, dist, dir.seed, dir.step, &terms, &mask)
            .unwrap();
        let mut want = host.clone();
        cpu::perturb_masked(&mut want, 0, &dir, 0.5, n, &mask);
        cpu::scale_accumulate_masked(
            &mut want, 0.75, 0, dist, dir.seed, dir.step, &terms, n, &mask,
        );
        let got = x.to_vec().unwrap();
        let frozen = a.len()..a.len() + odd.len();
        assert_eq!(
            bits(&got[frozen.clone()]),
            bits(&odd),
            "{dist}: frozen bytes"
        );
        if dist == Distribution::Rademacher {
            assert_eq!(bits(&got), bits(&want), "{dist}: GPU vs CPU twin");
        } else {
            let (g, w): (Vec<f32>, Vec<f32>) = got
                .iter()
                .zip(&want)
                .enumerate()
                .filter(|(i, _)| !frozen.contains(i))
                .map(|(_, (g, w))| (*g, *w))
                .unzip();
            common::assert_close(&g, &w, 2e-5, 2e-5, dist.name());
        }
    }
}

/// The elements a masked perturbation moves are exactly those the CPU twin's keep bits name
/// (bit for bit, every distribution), and their fraction is p within 5 binomial standard errors.
#[test]
fn the_mask_is_the_twins_and_keeps_a_fraction_p() {
    let gpu = gpu();
    let n = 200_003usize;
    for (dist, p) in [
        (Distribution::Rademacher, 0.1f32),
        (Distribution::Gaussian, 0.5),
        (Distribution::Uniform, 0.9),
    ] {
        let mut x =
            Params::from_slices(&gpu, &[&vec![0.0f32; 70_001], &vec![0.0f32; n - 70_001]]).unwrap();
        x.set_max_chunk_len(8192 + 64).unwrap();
        let mask = Mask::new(&x, &[], p).unwrap();
        let dir = common::dir(dist);
        kernels::perturb_masked(&mut x, &dir, 1.0, &mask).unwrap();
        let got = x.to_vec().unwrap();
        let mut moved = 0u64;
        for (i, v) in got.iter().enumerate() {
            let keep = rng::kept(dir.seed, dir.step, dir.sample, i as u64, mask.threshold());
            assert_eq!(
                *v != 0.0,
                keep,
                "{dist}: element {i}: GPU {v}, twin keeps {keep}"
            );
            if !keep {
                assert_eq!(v.to_bits(), 0, "{dist}: a dropped element changed bits");
            }
            moved += u64::from(keep);
        }
        let (nf, pf) = (n as f64, mask.density());
        let se = (nf * pf * (1.0 - pf)).sqrt();
        assert!(
            (moved as f64 - nf * pf).abs() < 5.0 * se,
            "{dist}: {moved} of {n} moved, expected {} ± {se}",
            nf * pf
        );
        // A kept Rademacher element is ±1/√p exactly as f32 rounds it.
        if dist == Distribution::Rademacher {
            let s = (1.0 / pf.sqrt()) as f32;
            assert!(got.iter().all(|v| *v == 0.0 || v.abs() == s));
        }
    }
}

/// A Sphere direction with a frozen buffer lives in the unfrozen subspace: ‖u‖² = n_free over
/// the unfrozen elements (textbook property of the normalisation), u is 0 on the frozen buffer,
/// and u equals z·√n_free/‖z_free‖ recomputed in f64 on the host.
#[test]
fn sphere_norm_runs_over_the_unfrozen_elements() {
    let gpu = gpu();
    let lens = [3_001usize, 5_003, 2_002];
    let zeros: Vec<Vec<f32>> = lens.iter().map(|&l| vec![0.0f32; l]).collect();
    let slices: Vec<&[f32]> = zeros.iter().map(|v| &v[..]).collect();
    let mut x = Params::from_slices(&gpu, &slices).unwrap();
    let mask = Mask::new(&x, &[1], 1.0).unwrap();
    let dir = common::dir(Distribution::Sphere);
    kernels::perturb_masked(&mut x, &dir, 1.0, &mask).unwrap();
    let u = x.to_vec().unwrap();
    let n = u.len() as u64;
    let free = mask.free_ranges(n);
    assert_eq!(free, vec![0..3_001, 8_004..10_006]);
    let n_free = mask.free_len(n) as f64;
    let sumsq: f64 = free
        .iter()
        .flat_map(|r| r.clone())
        .map(|i| f64::from(u[i as usize]).powi(2))
        .sum();
    assert!(
        (sumsq / n_free - 1.0).abs() < 1e-5,
        "‖u‖² = {sumsq}, n_free = {n_free}"
    );
    assert!(u[3_001..8_004].iter().all(|v| v.to_bits() == 0));
    let norm = rng::sphere_norm_over(dir.seed, dir.step, dir.sample, &free);
    for r in &free {
        for i in r.clone() {
            let z = f64::from(rng::perturbation(
                Distribution::Gaussian,
                dir.seed,
                dir.step,
                dir.sample,
                i,
            ));
            let want = z * n_free.sqrt() / norm;
            let got = f64::from(u[i as usize]);
            assert!(
                (got - want).abs() < 2e-5 * (1.0 + want.abs()),
                "element {i}: {got} vs {want}"
            );
        }
    }
}

/// An estimator with the given frozen buffers.
type Make = Box<dyn Fn(&[usize]) -> Box<dyn GradApproximator>>;

/// Every estimator with buffer 1 frozen: the frozen bytes (NaN payloads, -0.0, subnormals) are
/// unchanged, the gradient is exactly +0.0 there, the evaluation count is the unfrozen run's
/// (the random estimators) and x comes back.
#[test]
fn frozen_buffers_are_never_written_by_any_estimator() {
    let gpu = gpu();
    let (a, odd, c) = three_buffers(300, 200, 100);
    let estimators: Vec<(&str, Make)> = vec![
        (
            "Spsa",
            Box::new(|f| Box::new(Spsa::new().seed(3).n_samples(3).freeze(f))),
        ),
        (
            "Rdsa",
            Box::new(|f| Box::new(Rdsa::new().seed(3).freeze(f).density(0.5))),
        ),
        (
            "GaussianSmoothing(Sphere)",
            Box::new(|f| {
                Box::new(
                    GaussianSmoothing::new()
                        .n_samples(4)
                        .seed(3)
                        .distribution(Distribution::Sphere)
                        .freeze(f),
                )
            }),
        ),
        (
            "MeZo",
            Box::new(|f| Box::new(MeZo::new().n_samples(2).freeze(f).density(0.3))),
        ),
        (
            "MeZo exact_restore",
            Box::new(|f| Box::new(MeZo::new().exact_restore(true).freeze(f))),
        ),
        (
            "ForwardGradient",
            Box::new(|f| Box::new(ForwardGradient::new().seed(3).n_samples(2).freeze(f))),
        ),
        ("Fdm", Box::new(|f| Box::new(Fdm::new().freeze(f)))),
    ];
    for (name, make) in &estimators {
        let mut evals = Vec::new();
        for freeze in [&[][..], &[1][..]] {
            let mut x = Params::from_slices(&gpu, &[&a, &odd, &c]).unwrap();
            let mut g = x.zeros_like().unwrap();
            let before = x.to_vec().unwrap();
            let mut est = make(freeze);
            est.pre_step();
            let mut f = quadratic(a.len(), odd.len());
            let e = est.approximate(&gpu, &mut x, &mut f, &mut g).unwrap();
            evals.push(e.evaluations);
            let after = x.to_vec().unwrap();
            let grad = g.to_vec().unwrap();
            let frozen = a.len()..a.len() + odd.len();
            if freeze.is_empty() {
                continue;
            }
            assert_eq!(
                bits(&after[frozen.clone()]),
                bits(&odd),
                "{name}: frozen bytes"
            );
            assert!(
                grad[frozen.clone()].iter().all(|v| v.to_bits() == 0),
                "{name}: gradient on the frozen buffer"
            );
            assert!(
                grad.iter().any(|v| *v != 0.0),
                "{name}: no gradient on the unfrozen buffers"
            );
            // x comes back (in place: within the drift of one sample).
            for (i, (p, q)) in before.iter().zip(&after).enumerate() {
                if !frozen.contains(&i) {
                    assert!((p - q).abs() <= 1e-6, "{name}: element {i}: {p} → {q}");
                }
            }
        }
        if *name != "Fdm" {
            assert_eq!(
                evals[0], evals[1],
                "{name}: evaluations with and without freeze"
            );
        } else {
            // Fdm evaluates the unfrozen elements only (central: 2 per element).
            assert_eq!(evals[1], 2 * (a.len() + c.len()) as u32, "{name}");
        }
    }
}

/// The fused MeZO step (MeZo → WeightDecay → Lr) with a frozen buffer and sparse directions:
/// the frozen buffer is neither perturbed nor decayed nor updated (bytes compared), and each
/// step leaves bit-identical every element its directions drop (keep bits from the CPU twin,
/// decay off), while it moves the kept ones.
#[test]
fn the_fused_mezo_step_keeps_frozen_and_dropped_elements() {
    let gpu = gpu();
    let (a, odd, c) = three_buffers(3000, 64, 1000);
    let (n0, n1) = (a.len(), odd.len());
    let frozen = n0..n0 + n1;
    // With weight decay: the frozen buffer must not decay.
    let mut x = Params::from_slices(&gpu, &[&a, &odd, &c]).unwrap();
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(5).freeze(&[1]).density(0.2))
        .unwrap()
        .then(WeightDecay::new(0.1))
        .then(Lr::new(1e-2));
    for _ in 0..3 {
        opt.step(&mut x, &mut quadratic(n0, n1)).unwrap();
    }
    let after = x.to_vec().unwrap();
    assert_eq!(
        bits(&after[frozen.clone()]),
        bits(&odd),
        "frozen bytes after decay"
    );
    // Without decay: the dropped elements of the step's direction stay bit-identical.
    let mut x = Params::from_slices(&gpu, &[&a, &odd, &c]).unwrap();
    let est = MeZo::new().seed(5).n_samples(2).freeze(&[1]).density(0.2);
    let mask = est.mask_for(&x).unwrap();
    let mut opt = Optimizer::new(&gpu, &x, est).unwrap().then(Lr::new(1e-2));
    let mut before = x.to_vec().unwrap();
    for step in 1..=3u32 {
        opt.step(&mut x, &mut quadratic(n0, n1)).unwrap();
        let now = x.to_vec().unwrap();
        let (mut kept, mut moved) = (0, 0);
        for (i, (p, q)) in before.iter().zip(&now).enumerate() {
            let i = i as u64;
            let keep = (0..2).any(|s| mask.moves(5, step, s, i));
            if keep {
                kept += 1;
                moved += u32::from(p.to_bits() != q.to_bits());
            } else {
                assert_eq!(p.to_bits(), q.to_bits(), "step {step}: element {i} moved");
            }
        }
        assert!(
            kept > 0 && moved * 10 >= kept * 9,
            "step {step}: {moved} of {kept} moved"
        );
        before = now;
    }
}

/// Unbiasedness of sparse SPSA on f = cᵀx: the mean of S masked central-difference samples is
/// c within 5 standard errors per element, the standard error from the textbook variance of
/// one sample, Var(ĝ_i) = c_i²(1/p − 1) + Σ_{j≠i} c_j² (Rademacher u = m⊙z/√p: E[u_i⁴] = 1/p,
/// E[u_i²u_j²] = 1). Without the 1/√p scaling the mean would be p·c, 10+ standard errors off.
#[test]
fn sparse_spsa_is_unbiased_on_a_linear_function() {
    let gpu = gpu();
    let c: Vec<f64> = vec![1.0, -2.0, 0.5, 1.5, -1.0, 0.25];
    let n = c.len();
    let frozen_len = 5;
    let mut x = Params::from_slices(&gpu, &[&vec![0.0f32; n], &vec![0.0f32; frozen_len]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let p = 0.25f32;
    let samples = 4000u32;
    let cc = c.clone();
    let mut f = move |params: &Params| -> Result<f32> {
        let v = params.to_vec()?;
        Ok(cc
            .iter()
            .zip(&v)
            .map(|(ci, xi)| ci * f64::from(*xi))
            .sum::<f64>() as f32)
    };
    let mut est = Spsa::new()
        .seed(21)
        .h(0.5)
        .n_samples(samples)
        .density(p)
        .freeze(&[1]);
    est.pre_step();
    est.approximate(&gpu, &mut x, &mut f, &mut g).unwrap();
    let got = g.to_vec().unwrap();
    let sum_c2: f64 = c.iter().map(|v| v * v).sum();
    for i in 0..n {
        let var = c[i] * c[i] * (1.0 / f64::from(p) - 1.0) + (sum_c2 - c[i] * c[i]);
        let se = (var / f64::from(samples)).sqrt();
        let err = f64::from(got[i]) - c[i];
        assert!(
            err.abs() < 5.0 * se,
            "element {i}: {} vs {} (SE {se})",
            got[i],
            c[i]
        );
    }
    assert!(got[n..].iter().all(|v| v.to_bits() == 0), "frozen gradient");
}

/// Bad settings are refused by name and leave x as it was.
#[test]
fn bad_masks_are_refused_by_name() {
    let gpu = gpu();
    let (a, odd, c) = three_buffers(30, 20, 10);
    let mut x = Params::from_slices(&gpu, &[&a, &odd, &c]).unwrap();
    let before = bits(&x.to_vec().unwrap());
    let mut g = x.zeros_like().unwrap();
    for p in [0.0f32, -0.5, 1.5, f32::NAN] {
        let r = MeZo::new()
            .density(p)
            .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
        invalid_naming(r, &["density", &format!("{p}")]);
    }
    let r = Spsa::new()
        .freeze(&[3])
        .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
    invalid_naming(r, &["freeze", "3"]);
    let r =
        Spsa::new()
            .freeze(&[0, 1, 2])
            .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
    invalid_naming(r, &["freeze", "every buffer"]);
    let r = Fdm::new()
        .freeze(&[9])
        .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
    invalid_naming(r, &["freeze", "9"]);
    let r = ForwardGradient::new()
        .jvp(Jvp::User)
        .density(0.5)
        .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
    invalid_naming(r, &["jvp", "mask"]);
    let r = ForwardGradient::new()
        .jvp(Jvp::User)
        .magnitude_mask(0.5, 1)
        .approximate(&gpu, &mut x, &mut quadratic(30, 20), &mut g);
    invalid_naming(r, &["jvp", "mask"]);
    let r = Spsa::new().beta(0.5).freeze(&[1]).approximate(
        &gpu,
        &mut x,
        &mut quadratic(30, 20),
        &mut g,
    );
    invalid_naming(r, &["freeze", "beta"]);
    for (q, every) in [(0.0f32, 1u32), (1.5, 1), (0.5, 0)] {
        let r = MeZo::new().magnitude_mask(q, every).approximate(
            &gpu,
            &mut x,
            &mut quadratic(30, 20),
            &mut g,
        );
        invalid_naming(r, &["magnitude_mask"]);
    }
    let other = Params::from_slices(&gpu, &[&a]).unwrap();
    let mask = Mask::new(&other, &[], 0.5).unwrap();
    let dir = common::dir(Distribution::Rademacher);
    invalid_naming(kernels::perturb_masked(&mut x, &dir, 1.0, &mask), &["mask"]);
    assert_eq!(bits(&x.to_vec().unwrap()), before);
}

/// A checkpoint carries the mask settings and the magnitude mask's thresholds: a run saved with
/// `freeze`, `density` and `magnitude_mask` (thresholds recomputed every 2 steps, saved after
/// step 3: the resumed step 4 uses step 3's thresholds) loads into an optimiser with the same
/// settings and continues bit for bit, and is refused by one with another density.
#[test]
fn checkpoints_carry_the_mask_settings() {
    let gpu = gpu();
    let (a, _, c) = three_buffers(40, 0, 24);
    let make = |density: f32| {
        Optimizer::new(
            &gpu,
            &Params::from_slices(&gpu, &[&a, &c]).unwrap(),
            MeZo::new()
                .seed(9)
                .freeze(&[1])
                .density(density)
                .magnitude_mask(0.5, 2),
        )
        .unwrap()
        .then(Lr::new(1e-2))
    };
    let loss =
        |p: &Params| -> Result<f32> { Ok(p.to_vec()?.iter().map(|v| (v - 0.1) * (v - 0.1)).sum()) };
    let mut x = Params::from_slices(&gpu, &[&a, &c]).unwrap();
    let mut opt = make(0.5);
    for _ in 0..3 {
        opt.step(&mut x, &mut { loss }).unwrap();
    }
    let ck = opt.to_checkpoint().unwrap();
    let mut y = Params::from_slices(&gpu, &[&a, &c]).unwrap();
    y.write(&x.to_vec().unwrap()).unwrap();
    for _ in 0..2 {
        opt.step(&mut x, &mut { loss }).unwrap();
    }
    let mut resumed = make(0.5);
    resumed.load_checkpoint(&ck).unwrap();
    for _ in 0..2 {
        resumed.step(&mut y, &mut { loss }).unwrap();
    }
    assert_eq!(bits(&x.to_vec().unwrap()), bits(&y.to_vec().unwrap()));
    let mut other = make(0.25);
    invalid_naming(other.load_checkpoint(&ck), &["density"]);
}

/// Buffers of different scales for the magnitude mask: data ×1, ×1000 and ×1e-3, some -0.0.
fn scaled_buffers() -> Vec<Vec<f32>> {
    let mut a = data(31, 5_003);
    for v in a.iter_mut().step_by(11) {
        *v = -0.0;
    }
    let b: Vec<f32> = data(32, 3_001).iter().map(|v| v * 1000.0).collect();
    let c: Vec<f32> = data(33, 2_003).iter().map(|v| v * 1e-3).collect();
    vec![a, b, c]
}

/// The exact `quantile` of |v| as the magnitude mask defines it: the ⌈q·len⌉-th smallest.
fn host_quantile(v: &[f32], quantile: f32) -> f32 {
    let mut a: Vec<f32> = v.iter().map(|x| x.abs()).collect();
    a.sort_by(f32::total_cmp);
    let rank = ((f64::from(quantile) * a.len() as f64).ceil() as usize).clamp(1, a.len());
    a[rank - 1]
}

/// Checks each buffer's threshold against the exact quantile of |x| computed on the host: above
/// it by at most one histogram bin (2⁻⁷ relative), and the bits against |x_i| < τ_k.
fn check_magnitude(mask: &Mask, x: &[f32], lens: &[usize], quantile: f32, what: &str) {
    let taus = mask.magnitude_thresholds().expect("a magnitude mask");
    let bits = mask.magnitude_bits().unwrap().expect("a magnitude mask");
    let mut at = 0;
    for (k, &len) in lens.iter().enumerate() {
        let v = &x[at..at + len];
        let q = host_quantile(v, quantile);
        let tau = taus[k];
        assert!(
            q < tau && f64::from(tau) <= f64::from(q) * (1.0 + 2f64.powi(-7)) * (1.0 + 1e-6),
            "{what}: buffer {k}: τ = {tau}, exact quantile {q}"
        );
        for (j, xv) in v.iter().enumerate() {
            let i = at + j;
            let bit = (bits[i / 32] >> (i % 32)) & 1 == 1;
            assert_eq!(
                bit,
                xv.abs() < tau,
                "{what}: element {i} (|x| = {}, τ = {tau})",
                xv.abs()
            );
        }
        at += len;
    }
}

/// The magnitude mask's thresholds (computed on the GPU from a histogram) bracket the exact
/// quantile of |x| of each buffer within one bin, its bits are |x_i| < τ_k, and the masked
/// kernels with it equal the CPU twins (bit for bit for Rademacher, with chunks that start
/// inside mask words).
#[test]
fn magnitude_thresholds_match_the_host_quantile() {
    let gpu = gpu();
    let bufs = scaled_buffers();
    let lens: Vec<usize> = bufs.iter().map(Vec::len).collect();
    let slices: Vec<&[f32]> = bufs.iter().map(|v| &v[..]).collect();
    let host: Vec<f32> = bufs.concat();
    let n = host.len() as u64;
    for quantile in [0.1f32, 0.6, 1.0] {
        let mut x = Params::from_slices(&gpu, &slices).unwrap();
        x.set_max_chunk_len(1000).unwrap();
        let mut g = x.zeros_like().unwrap();
        let mut est = MeZo::new().seed(4).magnitude_mask(quantile, 1);
        est.pre_step();
        let mut f = |p: &Params| -> Result<f32> { Ok(p.to_vec()?.iter().sum()) };
        est.approximate(&gpu, &mut x, &mut f, &mut g).unwrap();
        let mask = est.mask_for(&x).unwrap();
        check_magnitude(&mask, &host, &lens, quantile, &format!("q = {quantile}"));
        let mask = mask.with_host_bits().unwrap();
        for dist in [Distribution::Rademacher, Distribution::Gaussian] {
            let mut y = Params::from_slices(&gpu, &slices).unwrap();
            y.set_max_chunk_len(1000).unwrap();
            let dir = common::dir(dist);
            kernels::perturb_masked(&mut y, &dir, 0.5, &mask).unwrap();
            let terms = [(1u32, 0.25f32), (2, -1.0)];
            kernels::scale_accumulate_masked(&mut y, 0.5, dist, dir.seed, dir.step, &terms, &mask)
                .unwrap();
            let mut want = host.clone();
            cpu::perturb_masked(&mut want, 0, &dir, 0.5, n, &mask);
            cpu::scale_accumulate_masked(
                &mut want, 0.5, 0, dist, dir.seed, dir.step, &terms, n, &mask,
            );
            let got = y.to_vec().unwrap();
            if dist == Distribution::Rademacher {
                assert_eq!(bits(&got), bits(&want), "q = {quantile}: GPU vs CPU twin");
            } else {
                common::assert_close(&got, &want, 1e-4, 2e-5, "gaussian");
            }
        }
    }
}

/// MeZO's fused step with a magnitude mask (recomputed every 3 steps), a frozen buffer and a
/// density: each step leaves bit-identical every element the step's mask drops (its bits read
/// back, its keep bits from the CPU twin), the thresholds follow the host quantile of x at the
/// steps they are recomputed and stay in between.
#[test]
fn the_magnitude_mask_composes_with_the_fused_mezo_step() {
    let gpu = gpu();
    let bufs = scaled_buffers();
    let lens: Vec<usize> = bufs.iter().map(Vec::len).collect();
    let slices: Vec<&[f32]> = bufs.iter().map(|v| &v[..]).collect();
    let mut x = Params::from_slices(&gpu, &slices).unwrap();
    let frozen = lens[0]..lens[0] + lens[1];
    let mut est = MeZo::new()
        .seed(6)
        .n_samples(2)
        .freeze(&[1])
        .density(0.5)
        .magnitude_mask(0.7, 3);
    // The frozen buffer (values up to 1000) stays out of the loss, which f32 would swamp.
    let skip = frozen.clone();
    let mut f = move |p: &Params| -> Result<f32> {
        let x = p.to_vec()?;
        let f: f64 = x
            .iter()
            .enumerate()
            .filter(|(i, _)| !skip.contains(i))
            .map(|(_, v)| (f64::from(*v) - 0.1).powi(2))
            .sum();
        Ok(f as f32)
    };
    let mut taus: Option<Vec<f32>> = None;
    for step in 1..=5u32 {
        let before = x.to_vec().unwrap();
        est.pre_step();
        est.fused_step(&gpu, &mut x, &mut f, 1.0, 1e-2).unwrap();
        let now = x.to_vec().unwrap();
        let mask = est.mask_for(&x).unwrap().with_host_bits().unwrap();
        let t = mask.magnitude_thresholds().unwrap().to_vec();
        if (step - 1) % 3 == 0 {
            // Thresholds of the unfrozen buffers from x at this step's start.
            for k in [0usize, 2] {
                let at: usize = lens[..k].iter().sum();
                let q = host_quantile(&before[at..at + lens[k]], 0.7);
                assert!(
                    q < t[k] && t[k] <= q * (1.0 + 2f32.powi(-7)) * 1.000_001,
                    "step {step}"
                );
            }
        } else {
            assert_eq!(
                Some(&t),
                taus.as_ref(),
                "step {step}: thresholds between recomputations"
            );
        }
        taus = Some(t);
        let (mut kept, mut moved) = (0u32, 0u32);
        for (i, (p, q)) in before.iter().zip(&now).enumerate() {
            let keep = (0..2).any(|s| mask.moves(6, step, s, i as u64));
            if keep {
                kept += 1;
                moved += u32::from(p.to_bits() != q.to_bits());
            } else {
                assert_eq!(p.to_bits(), q.to_bits(), "step {step}: element {i} moved");
            }
            if frozen.contains(&i) {
                assert!(!keep);
            }
        }
        assert!(
            kept > 1000 && moved * 10 >= kept * 9,
            "step {step}: {moved} of {kept}"
        );
    }
}

/// A `BatchObjective` whose shader applies the sparse mask (the test functions' shader, through
/// `zograd_point_mask`) evaluates sparse points `x + s·u(dir, mask)` equal to the test
/// function's f64 twin at the CPU twin's perturbed point, and the estimators then batch: one
/// dispatch and one readback for all S samples. Frozen buffers are not batched (in place).
#[test]
fn batch_objectives_regenerate_the_sparse_mask() {
    use zograd::testfns::{Function, Problem};
    use zograd::Objective;
    let gpu = gpu();
    let n = 3_010u64;
    let x0: Vec<f32> = data(5, n as usize).iter().map(|v| 2.0 * v).collect();
    let mut x = Params::from_slices(&gpu, &[&x0[..]]).unwrap();
    let p = Problem::new(Function::Rastrigin, n).unwrap();
    let mask = Mask::new(&x, &[], 0.3).unwrap();
    for dist in common::DISTS {
        let mut batch = p.batch_objective(&x, 8).unwrap();
        assert!(batch.batches_mask(&mask));
        let points: Vec<(Direction, f32)> = (0..3)
            .flat_map(|s| {
                let d = Direction {
                    sample: s,
                    ..common::dir(dist)
                };
                [(d, 0.05f32), (d, -0.05)]
            })
            .collect();
        let got = batch
            .loss_batch_masked(&mut x, &points, &[], &mask)
            .unwrap();
        for ((d, s), b) in points.iter().zip(&got) {
            let mut y = x0.clone();
            cpu::perturb_masked(&mut y, 0, d, *s, n, &mask);
            let twin = p.value_f64(&y).unwrap();
            // Without the mask the point would differ in ~70 % of the coordinates by ±0.05·z.
            assert!(
                (f64::from(*b) - twin).abs() <= 1e-4 * twin.abs(),
                "{dist} sample {} scale {s}: batch {b} vs twin {twin}",
                d.sample
            );
        }
    }
    // The estimator batches sparse directions: one readback for S = 4 central samples.
    let mut batch = p.batch_objective(&x, 8).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut est = MeZo::new().n_samples(4).density(0.3);
    est.pre_step();
    let e = est.approximate(&gpu, &mut x, &mut batch, &mut g).unwrap();
    assert_eq!((e.evaluations, batch.readbacks()), (8, 1));
    // Its estimate equals the in-place one (the ShaderObjective at x perturbed in place).
    let mut plain = p.shader_objective(&x).unwrap();
    let mut g2 = x.zeros_like().unwrap();
    let mut est = MeZo::new().n_samples(4).density(0.3);
    est.pre_step();
    est.approximate(&gpu, &mut x, &mut plain, &mut g2).unwrap();
    common::assert_close(
        &g.to_vec().unwrap(),
        &g2.to_vec().unwrap(),
        0.05,
        0.02,
        "batched vs in-place sparse MeZO",
    );
    // A frozen buffer is not something the shader sees: not batched.
    let frozen = Mask::new(
        &Params::from_slices(&gpu, &[&x0[..10], &x0[10..]]).unwrap(),
        &[0],
        1.0,
    )
    .unwrap();
    assert!(!batch.batches_mask(&frozen));
}
