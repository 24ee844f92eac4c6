// SPDX-License-Identifier: MIT OR Apache-2.0
//! Shared test helpers: one device per test binary, test data from Philox.
#![allow(dead_code, reason = "each test binary uses a different subset")]

pub mod shader_loss;

use std::sync::OnceLock;

use zograd::Gpu;

/// The device of this test binary, from `WGPU_BACKEND` / `WGPU_ADAPTER_NAME`. A test never
/// passes by skipping: without an adapter it fails with the reason.
pub fn gpu() -> Gpu {
    static GPU: OnceLock<Gpu> = OnceLock::new();
    GPU.get_or_init(|| match Gpu::new() {
        Ok(g) => {
            let i = g.adapter_info();
            eprintln!("zograd tests on {} ({:?}, {})", i.name, i.backend, i.driver);
            g
        }
        Err(e) => panic!("no GPU adapter for the tests: {e}"),
    })
    .clone()
}

/// Deterministic test data in [-1, 1) from Philox (no extra dependency).
pub fn data(seed: u64, n: usize) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            zograd::rng::perturbation(zograd::Distribution::Uniform, seed, 99, 7, i) / 1.732_050_8
        })
        .collect()
}

/// Splits `v` into consecutive pieces of the given lengths (the last takes the rest).
pub fn split<'a>(v: &'a [f32], lens: &[usize]) -> Vec<&'a [f32]> {
    let mut out = Vec::new();
    let mut at = 0;
    for &l in lens {
        out.push(&v[at..at + l]);
        at += l;
    }
    if at < v.len() {
        out.push(&v[at..]);
    }
    out
}

/// numpy-style closeness: |a - b| <= atol + rtol·|b|.
pub fn assert_close(gpu: &[f32], cpu: &[f32], atol: f32, rtol: f32, what: &str) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let mut worst = (0usize, 0.0f32);
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        let excess = (a - b).abs() - (atol + rtol * b.abs());
        if excess > worst.1 || !a.is_finite() {
            worst = (i, excess.max(f32::MIN_POSITIVE));
            if !a.is_finite() {
                break;
            }
        }
    }
    if worst.1 > 0.0 {
        let i = worst.0;
        panic!(
            "{what}: element {i}: gpu {} vs cpu {} (atol {atol}, rtol {rtol})",
            gpu[i], cpu[i]
        );
    }
}

/// Every distribution.
pub const DISTS: [zograd::Distribution; 4] = [
    zograd::Distribution::Rademacher,
    zograd::Distribution::Gaussian,
    zograd::Distribution::Uniform,
    zograd::Distribution::Sphere,
];

/// A direction with a seed past 2³², step and sample not 0.
pub fn dir(distribution: zograd::Distribution) -> zograd::kernels::Direction {
    zograd::kernels::Direction {
        distribution,
        seed: (1 << 32) + 12345,
        step: 7,
        sample: 3,
    }
}

/// Asserts an `Error::InvalidArgument` whose message contains every word of `words`.
pub fn invalid_naming<T: std::fmt::Debug>(r: zograd::Result<T>, words: &[&str]) {
    match r {
        Err(zograd::Error::InvalidArgument(msg)) => {
            for w in words {
                assert!(msg.contains(w), "message {msg:?} should name {w:?}");
            }
        }
        other => panic!("expected InvalidArgument naming {words:?}, got {other:?}"),
    }
}

/// The `cases` of a JSON file of reference output in `tests/data/` (written by the scripts
/// there from torchzero's own runs).
pub fn reference_cases(file: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/tests/data/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    v["cases"].as_array().expect("cases").clone()
}

/// A JSON array of numbers as f32.
pub fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}
