// SPDX-License-Identifier: MIT OR Apache-2.0
//! Bad input to the GPU core returns a named `Error`, never a panic.

mod common;

use common::{gpu, invalid_naming};
use zograd::kernels::{accumulate, copy, perturb, Direction};
use zograd::{Distribution, Error, Params};

#[test]
fn empty_parameter_sets_are_rejected() {
    let g = gpu();
    invalid_naming(Params::from_slices(&g, &[]), &["slices"]);
    invalid_naming(
        Params::from_slices(&g, &[&[1.0], &[]]),
        &["slices[1]", "empty"],
    );
    invalid_naming(Params::from_buffers(&g, vec![]), &["buffers"]);
}

#[test]
fn adopted_buffers_must_be_f32_storage() {
    let g = gpu();
    let uniform = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    invalid_naming(
        Params::from_buffers(&g, vec![uniform]),
        &["buffers[0]", "STORAGE"],
    );
    let odd = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 6,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    invalid_naming(
        Params::from_buffers(&g, vec![odd]),
        &["buffers[0]", "multiple of 4"],
    );
    let no_copy = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    let p = Params::from_buffers(&g, vec![no_copy]).unwrap();
    invalid_naming(p.to_vec(), &["buffers[0]", "COPY_SRC"]);
}

#[test]
fn mismatched_shapes_and_bad_scalars_are_rejected() {
    let g = gpu();
    let mut a = Params::from_slices(&g, &[&[1.0; 16], &[2.0; 4]]).unwrap();
    let b = Params::from_slices(&g, &[&[1.0; 20]]).unwrap();
    invalid_naming(copy(&mut a, &b), &["src", "lengths"]);
    let d = Direction {
        distribution: Distribution::Gaussian,
        seed: 0,
        step: 0,
        sample: 0,
    };
    invalid_naming(perturb(&mut a, &d, f32::NAN), &["scale", "NaN"]);
    invalid_naming(perturb(&mut a, &d, f32::INFINITY), &["scale", "inf"]);
    invalid_naming(
        accumulate(
            &mut a,
            Distribution::Rademacher,
            0,
            0,
            &[(0, 1.0), (1, f32::NAN)],
        ),
        &["terms[1]"],
    );
    invalid_naming(a.write(&[0.0; 3]), &["data", "3"]);
    invalid_naming(a.write_at(18, &[0.0; 3]), &["index", "18"]);
    // Nothing was changed by the rejected calls.
    assert_eq!(a.to_vec().unwrap(), [vec![1.0; 16], vec![2.0; 4]].concat());
}

#[test]
fn wgpu_validation_errors_come_back_as_errors() {
    let g = gpu();
    // A device-level mistake inside zograd's error scope (a bind group whose buffer lacks the
    // usage) is returned, not panicked: adopt a STORAGE buffer, then destroy it under zograd.
    let buf = g.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4096,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let mut p = Params::from_buffers(&g, vec![buf.clone()]).unwrap();
    buf.destroy();
    let d = Direction {
        distribution: Distribution::Rademacher,
        seed: 1,
        step: 0,
        sample: 0,
    };
    match perturb(&mut p, &d, 1.0) {
        Err(Error::Validation(msg)) => assert!(!msg.is_empty()),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

/// `Gpu::read_f32s` with a count whose byte length overflows u64 (it used to overflow, then
/// allocate), and `ShaderObjective::loss_buffer` with a size whose bytes overflow: named errors.
#[test]
fn readback_and_loss_buffer_sizes_that_overflow_are_rejected() {
    let g = gpu();
    let x = Params::from_slices(&g, &[&[1.5f32, 2.5][..]]).unwrap();
    let buffer = &x.buffers()[0];
    invalid_naming(
        g.read_f32s(buffer, 4, u64::MAX / 2),
        &["offset", "9223372036854775807"],
    );
    invalid_naming(
        g.read_f32s(buffer, u64::MAX - 3, 1),
        &["offset", "18446744073709551612"],
    );
    invalid_naming(g.read_f32s(buffer, 4, 2), &["offset", "8 bytes"]);
    assert_eq!(g.read_f32s(buffer, 4, 1).unwrap(), vec![2.5]);
    invalid_naming(
        zograd::ShaderObjective::loss_buffer(&g, u64::MAX / 2),
        &["floats", "9223372036854775807"],
    );
    let past = g.limits().max_buffer_size / 4 + 1;
    assert!(
        matches!(
            zograd::ShaderObjective::loss_buffer(&g, past),
            Err(Error::TooLarge(_))
        ),
        "a loss buffer past max_buffer_size"
    );
    let out = zograd::ShaderObjective::loss_buffer(&g, 3).unwrap();
    assert_eq!(out.size(), 12);
}
