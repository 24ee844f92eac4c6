// SPDX-License-Identifier: MIT OR Apache-2.0
#![doc = include_str!("../README.md")]
#![warn(missing_docs, missing_debug_implementations)]

mod batch;
mod bounds;
mod error;
pub(crate) mod gpu;
mod mask;
mod objective;
mod params;
mod restore;
mod schedule;
mod shader_objective;

pub mod approx;
pub mod checkpoint;
pub mod cpu;
#[cfg(feature = "mpi")]
pub mod dist;
pub mod kernels;
pub mod optim;
pub mod rng;
pub mod testfns;
pub mod wgsl;

pub use batch::{BatchObjective, Workgroups};
pub use bounds::Bounds;
pub use error::{Error, Result};
pub use gpu::context::Gpu;
pub use objective::{Coordinate, Evaluation, LossValue, Objective};
pub use params::{Params, Scales};
pub use rng::Distribution;
pub use shader_objective::{Binding, ShaderObjective, Step};

/// The wgpu zograd is built against, re-exported so that an embedding application names the
/// same types zograd's API takes (`zograd::wgpu::Device`, `zograd::wgpu::Buffer`, …).
///
/// Version policy: each zograd minor version is built against one wgpu major version, and a
/// new wgpu major version means a new zograd minor version. zograd 0.1 ↔ wgpu 30. An
/// application that creates its device with another wgpu major version gets a type mismatch
/// at compile time (E0308: "expected `wgpu::Device`, found `wgpu::Device`" … "distinct
/// types"; see [`Gpu::from_wgpu`]); depend on the matching wgpu, or use this re-export instead
/// of a direct dependency.
pub use wgpu;

#[cfg(test)]
mod tests {
    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<crate::Gpu>();
        assert_send_sync::<crate::Params>();
        assert_send_sync::<crate::Error>();
    }
}
