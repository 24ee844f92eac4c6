// SPDX-License-Identifier: MIT OR Apache-2.0
//! GPU memory that steps allocate, counted by `Gpu::allocated_bytes`. The tests of this binary
//! run one at a time, so no other test allocates on the device while one counts.

mod common;

use std::sync::{Mutex, MutexGuard, PoisonError};

use common::{data, gpu};
use zograd::approx::{GradApproximator, MeZo};
use zograd::optim::{Lr, Optimizer, WeightDecay};
use zograd::{Params, Result};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

const N: usize = 1 << 16;

/// A loss that is one GPU reduction (x·w): no n-sized staging buffer enters the count.
fn dot_loss(w: &Params) -> impl FnMut(&Params) -> Result<f32> + '_ {
    move |p: &Params| Ok(zograd::kernels::dot(p, w)? as f32 + 1.0)
}

#[test]
fn mezo_estimates_allocate_no_n_sized_buffer() {
    let _serial = serial();
    let g = gpu();
    let w = Params::from_slices(&g, &[&data(1, N)]).unwrap();
    let mut loss = dot_loss(&w);
    let mut x = Params::from_slices(&g, &[&data(2, N)[..]]).unwrap();
    let mut grad = x.zeros_like().unwrap();
    let mut mezo = MeZo::new().n_samples(2).seed(3);
    mezo.pre_step();
    mezo.approximate(&g, &mut x, &mut loss, &mut grad).unwrap();
    let before = g.allocated_bytes();
    for _ in 0..5 {
        mezo.pre_step();
        mezo.approximate(&g, &mut x, &mut loss, &mut grad).unwrap();
    }
    assert_eq!(
        g.allocated_bytes(),
        before,
        "MeZo steps allocated GPU memory"
    );
    assert_eq!(mezo.state_bytes(), 0);
}

#[test]
fn the_fused_mezo_step_allocates_nothing_n_sized() {
    let _serial = serial();
    let g = gpu();
    let w = Params::from_slices(&g, &[&data(1, N)]).unwrap();
    let mut loss = dot_loss(&w);
    let mut x = Params::from_slices(&g, &[&data(2, N)[..]]).unwrap();
    // The first step creates the small per-Params uniform and terms buffers.
    let start = g.allocated_bytes();
    let mut opt = Optimizer::new(&g, &x, MeZo::new().seed(3))
        .unwrap()
        .then(WeightDecay::new(0.01))
        .then(Lr::new(1e-3));
    opt.step(&mut x, &mut loss).unwrap();
    let first = g.allocated_bytes() - start;
    assert!(
        first < (N as u64 * 4) / 8,
        "the first fused step allocated {first} bytes"
    );
    let before = g.allocated_bytes();
    for _ in 0..10 {
        opt.step(&mut x, &mut loss).unwrap();
    }
    assert_eq!(
        g.allocated_bytes(),
        before,
        "fused steps allocated GPU memory"
    );
    assert_eq!(opt.state_bytes(), 0);
}
