// SPDX-License-Identifier: MIT OR Apache-2.0
//! Counter-based random perturbations: Philox4x32-10 and the distributions built on it.
//!
//! This module is the CPU reference twin of `shaders/philox.wgsl` ([`crate::wgsl::PHILOX`]). A
//! perturbation is never stored: element `i` of the direction (seed, step, sample) is recomputed
//! from those four numbers wherever it is needed, on the GPU or here. The mapping
//! (ARCHITECTURE.md, "The random-number contract"):
//!
//! | distribution | Philox block of element `i` | value |
//! |---|---|---|
//! | Rademacher | `i / 128` | ±1 from bit `i % 32` of word `(i % 128) / 32` |
//! | Gaussian | `i / 4` | Box–Muller on words `2·(lane/2)`, `2·(lane/2)+1`, lane = `i % 4` |
//! | Uniform | `i / 4` | `√3·(2u − 1)`, `u = (word[i % 4] >> 8)·2⁻²⁴` |
//! | Sphere | — | the Gaussian rescaled by `√n / ‖z‖` over all `n` elements |
//!
//! The counter is `[block lo, block hi, sample, step]` and the key `[seed lo, seed hi]`, so the
//! values depend only on (seed, step, sample, i): not on how parameters are split into buffers,
//! on workgroup sizes or on the adapter.
//!
//! Sparse directions ([`crate::kernels::Mask`]) multiply element `i` by a keep bit drawn from
//! the same stream ([`kept`]) and by `1/√p`; frozen buffers are 0.

mod distribution;
mod mask;
mod philox;

pub use distribution::{perturbation, sphere_norm, sphere_norm_over, Distribution};
pub use mask::{kept, DENSE_THRESHOLD};
pub use philox::{block, philox4x32_10};
