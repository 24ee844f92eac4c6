// SPDX-License-Identifier: MIT OR Apache-2.0
//! Tests that open a second device. wgpu's GL backend cannot drive two devices from different
//! threads at once (EGL `make_current` fails with BadAccess), so these run one at a time.

mod common;

use std::sync::Mutex;

use common::{assert_close, data, dir, gpu, invalid_naming, DISTS};
use zograd::kernels::{accumulate, axpy, norm, perturb, scale};
use zograd::{cpu, Error, Gpu, Params};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A second device on the same adapter with some limits lowered.
fn device_with(f: impl FnOnce(&mut wgpu::Limits)) -> Gpu {
    let instance =
        wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("an adapter");
    let mut limits = adapter.limits();
    f(&mut limits);
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: limits,
        ..Default::default()
    }))
    .expect("a device");
    Gpu::from_wgpu(device, queue).unwrap()
}

#[test]
fn buffers_of_another_device_are_rejected() {
    let _serial = serial();
    let g = gpu();
    let other = Gpu::new().unwrap();
    let foreign = other.device().create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 64,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: false,
    });
    invalid_naming(
        Params::from_buffers(&g, vec![foreign]),
        &["buffers", "device"],
    );
    let mut a = Params::from_slices(&g, &[&[1.0; 16]]).unwrap();
    let b = Params::from_slices(&other, &[&[1.0; 16]]).unwrap();
    invalid_naming(axpy(&mut a, 1.0, &b), &["x", "another Gpu"]);
}
/// A device with a 1 MiB buffer limit: a 2 MiB parameter buffer is an error, not a panic.
#[test]
fn buffers_past_the_adapters_limit_are_an_error() {
    let _serial = serial();
    let small = device_with(|l| l.max_buffer_size = 1 << 20);
    let big = vec![0.0f32; 1 << 19];
    match Params::from_slices(&small, &[&big]) {
        Err(Error::TooLarge(msg)) => assert!(msg.contains("max_buffer_size"), "{msg}"),
        other => panic!("expected TooLarge, got {other:?}"),
    }
}
/// A device whose grid is limited to 5 workgroups per dimension forces 2-D dispatches.
#[test]
fn dispatches_past_the_grid_limit_use_a_second_dimension() {
    let _serial = serial();
    let small = device_with(|l| l.max_compute_workgroups_per_dimension = 5);
    assert_eq!(small.limits().max_compute_workgroups_per_dimension, 5);
    // 25 groups fit a 5×5 grid: 100 000 elements need several chunks, each a 2-D grid.
    let x0 = data(9, 100_000);
    let terms = [(1u32, 0.5f32), (2, -0.25)];
    for dist in DISTS {
        let mut x = Params::from_slices(&small, &[&x0]).unwrap();
        perturb(&mut x, &dir(dist), 0.2).unwrap();
        accumulate(&mut x, dist, 1, 2, &terms).unwrap();
        let mut want = x0.clone();
        cpu::perturb(&mut want, 0, &dir(dist), 0.2, x0.len() as u64);
        cpu::accumulate(&mut want, 0, dist, 1, 2, &terms, x0.len() as u64);
        assert_close(
            &x.to_vec().unwrap(),
            &want,
            1e-5,
            1e-5,
            &format!("{dist} on a 5-wide grid"),
        );
    }
    let mut y = Params::from_slices(&small, &[&x0]).unwrap();
    scale(&mut y, 2.0).unwrap();
    assert!(y
        .to_vec()
        .unwrap()
        .iter()
        .zip(&x0)
        .all(|(a, b)| *a == 2.0 * b));
    assert!((norm(&y).unwrap() - 2.0 * cpu::dot(&x0, &x0).sqrt()).abs() < 1e-3);
}

/// On an adopted device (no zograd error handler: wgpu's default one panics), a loss buffer past
/// the device's `max_buffer_size` is an error, not a panic.
#[test]
fn loss_buffers_past_an_adopted_devices_limit_are_an_error() {
    let _serial = serial();
    let small = device_with(|l| l.max_buffer_size = 1 << 20);
    let r = zograd::ShaderObjective::loss_buffer(&small, 1 << 19);
    assert!(matches!(r, Err(Error::TooLarge(_))), "{r:?}");
    assert_eq!(
        zograd::ShaderObjective::loss_buffer(&small, 1 << 18)
            .unwrap()
            .size(),
        1 << 20
    );
}
