// SPDX-License-Identifier: MIT OR Apache-2.0
//! Everything that touches wgpu: the device context, shader assembly, pipelines, launches and
//! readback.

pub(crate) mod bind;
pub(crate) mod buffers;
pub(crate) mod context;
pub(crate) mod kernel;
pub(crate) mod launch;
pub(crate) mod pipelines;
pub(crate) mod readback;
pub(crate) mod shaders;
pub(crate) mod sphere;
