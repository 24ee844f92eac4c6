// SPDX-License-Identifier: MIT OR Apache-2.0
//! The CPU generator: Random123 known-answer vectors and the distributions' contract.

use zograd::rng::{block, perturbation, philox4x32_10, sphere_norm};
use zograd::Distribution;

fn hex(s: &str) -> u32 {
    u32::from_str_radix(s, 16).expect("hex word")
}

/// The three Random123 known-answer vectors, read from tests/data (copied from Random123's
/// kat_vectors).
#[test]
fn philox_matches_random123_known_answers() {
    let text = include_str!("data/philox4x32_10_kat.txt");
    let mut checked = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (input, output) = line.split_once("->").expect("'->' in a vector line");
        let inw: Vec<u32> = input.split_whitespace().map(hex).collect();
        let outw: Vec<u32> = output.split_whitespace().map(hex).collect();
        assert_eq!((inw.len(), outw.len()), (6, 4), "line {line:?}");
        let got = philox4x32_10([inw[0], inw[1], inw[2], inw[3]], [inw[4], inw[5]]);
        assert_eq!(got.to_vec(), outw, "vector {line:?}");
        checked += 1;
    }
    assert_eq!(checked, 3, "all three vectors");
}

/// The counter layout of the random-number contract (README, "Random-number contract"): [block lo, block hi, sample, step], key [seed lo, seed hi].
#[test]
fn block_uses_the_documented_counter_layout() {
    let seed = 0x1234_5678_9ABC_DEF0u64;
    let b = (5u64 << 32) | 77;
    assert_eq!(
        block(seed, 11, 3, b),
        philox4x32_10([77, 5, 3, 11], [0x9ABC_DEF0, 0x1234_5678])
    );
}

#[test]
fn rademacher_takes_bit_i_mod_32_of_word_i_mod_128_over_32() {
    let (seed, step, sample) = (1u64 << 40, 2, 9);
    for i in [0u64, 1, 31, 32, 127, 128, 300, (1 << 33) + 5] {
        let out = block(seed, step, sample, i / 128);
        let bit = (out[((i % 128) / 32) as usize] >> (i % 32)) & 1;
        let want = if bit == 1 { 1.0 } else { -1.0 };
        assert_eq!(
            perturbation(Distribution::Rademacher, seed, step, sample, i),
            want,
            "i = {i}"
        );
    }
}

#[test]
fn uniform_follows_the_contract_bit_for_bit() {
    let (seed, step, sample) = (42u64, 1, 0);
    for i in 0..64u64 {
        let out = block(seed, step, sample, i / 4);
        let u = (out[(i % 4) as usize] >> 8) as f32 * (1.0 / 16_777_216.0);
        let want = 1.732_050_8_f32 * (2.0 * u - 1.0);
        let got = perturbation(Distribution::Uniform, seed, step, sample, i);
        assert_eq!(got.to_bits(), want.to_bits(), "i = {i}");
        assert!((-1.732_051..1.732_051).contains(&got));
    }
}

#[test]
fn gaussian_follows_box_muller_on_the_block_words() {
    let (seed, step, sample) = (3u64, 4, 5);
    for i in 0..64u64 {
        let out = block(seed, step, sample, i / 4);
        let pair = ((i % 4) / 2) as usize;
        let u1 = f64::from((out[2 * pair] >> 8) + 1) / 16_777_216.0;
        let u2 = f64::from(out[2 * pair + 1] >> 8) / 16_777_216.0;
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        let want = if i % 2 == 0 { r * a.cos() } else { r * a.sin() } as f32;
        assert_eq!(
            perturbation(Distribution::Gaussian, seed, step, sample, i),
            want,
            "i = {i}"
        );
    }
}

/// Mean and variance over n values within `k` standard errors of (mean, var).
fn check_moments(values: &[f32], mean: f64, var: f64, fourth: f64, k: f64, what: &str) {
    let n = values.len() as f64;
    let m = values.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
    let v = values
        .iter()
        .map(|x| (f64::from(*x) - mean).powi(2))
        .sum::<f64>()
        / n;
    let se_mean = (var / n).sqrt();
    let se_var = ((fourth - var * var) / n).sqrt();
    assert!(
        (m - mean).abs() < k * se_mean,
        "{what}: mean {m} vs {mean} (se {se_mean})"
    );
    assert!(
        (v - var).abs() <= k * se_var,
        "{what}: variance {v} vs {var} (se {se_var})"
    );
}

#[test]
fn distributions_have_unit_variance_on_the_cpu() {
    let n = 200_000u64;
    for (dist, fourth) in [
        (Distribution::Rademacher, 1.0),
        (Distribution::Gaussian, 3.0),
        (Distribution::Uniform, 1.8),
    ] {
        let v: Vec<f32> = (0..n).map(|i| perturbation(dist, 17, 1, 2, i)).collect();
        check_moments(&v, 0.0, 1.0, fourth, 5.0, dist.name());
    }
}

#[test]
fn streams_differ_by_seed_step_and_sample() {
    let base: Vec<f32> = (0..256)
        .map(|i| perturbation(Distribution::Rademacher, 1, 0, 0, i))
        .collect();
    for (seed, step, sample) in [
        (2u64, 0u32, 0u32),
        (1, 1, 0),
        (1, 0, 1),
        (1 << 32 | 1, 0, 0),
    ] {
        let other: Vec<f32> = (0..256)
            .map(|i| perturbation(Distribution::Rademacher, seed, step, sample, i))
            .collect();
        let same = base.iter().zip(&other).filter(|(a, b)| a == b).count();
        assert!(
            (80..176).contains(&same),
            "({seed}, {step}, {sample}): {same}/256 equal"
        );
    }
}

/// ‖z‖ against an identity that needs neither sin nor cos: a Box–Muller pair (r cos θ, r sin θ)
/// has squared length r² = −2 ln u₁, so over whole pairs ‖z‖² = Σ −2 ln u₁, with u₁ taken from
/// the Philox words directly (word 0 of a block for lanes 0–1, word 2 for lanes 2–3, u₁ =
/// ((w >> 8) + 1)·2⁻²⁴; the generator itself is checked against Random123's known answers
/// above). The f32 rounding of each z is the only difference.
#[test]
fn sphere_norm_is_the_gaussian_norm() {
    let n = 1002u64; // whole pairs: 250 blocks and one pair
    let (seed, step, sample) = (8u64, 2u32, 1u32);
    let mut sumsq = 0.0f64;
    for pair in 0..n / 2 {
        let words = philox4x32_10(
            [(pair / 2) as u32, 0, sample, step],
            [seed as u32, (seed >> 32) as u32],
        );
        let w = words[2 * (pair % 2) as usize];
        let u1 = f64::from((w >> 8) + 1) / 16_777_216.0;
        sumsq += -2.0 * u1.ln();
    }
    let want = sumsq.sqrt();
    let got = sphere_norm(seed, step, sample, n);
    assert!(
        (got - want).abs() <= 1e-6 * want,
        "sphere_norm {got} vs Σ −2 ln u₁ {want}"
    );
    // ‖z‖² / n ≈ 1 (a χ²_n / n within 5 standard deviations √(2/n)).
    assert!((want * want / n as f64 - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt());
}

#[test]
fn distribution_names_parse() {
    for d in [
        Distribution::Rademacher,
        Distribution::Gaussian,
        Distribution::Uniform,
        Distribution::Sphere,
    ] {
        assert_eq!(d.name().parse::<Distribution>().unwrap(), d);
    }
    let err = "cauchy".parse::<Distribution>().unwrap_err();
    assert!(err.to_string().contains("cauchy"), "{err}");
}
