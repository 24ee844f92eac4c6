// SPDX-License-Identifier: MIT OR Apache-2.0
//! Everything that touches wgpu: the device context, shader assembly, the kernel table,
//! pipelines, launches and their bind groups, users' programs, buffers and readback.
//!
//! The arrows point into this module only: `Params`, the kernels, `ShaderObjective` and
//! `BatchObjective` call in with plain descriptions (an [`bind::Operand`]: buffers and chunks;
//! a [`program::Binding`] list), and nothing here names them.

pub(crate) mod bind;
pub(crate) mod buffers;
pub(crate) mod context;
pub(crate) mod kernel;
pub(crate) mod launch;
pub(crate) mod magnitude;
pub(crate) mod pending;
pub(crate) mod pipelines;
pub(crate) mod program;
pub(crate) mod readback;
pub(crate) mod shaders;
pub(crate) mod sphere;
