// SPDX-License-Identifier: MIT OR Apache-2.0
//! Parameters or gradient on another device. A binary of its own with a single test: wgpu's GL
//! backend cannot drive two devices from different threads at once.

mod common;

use zograd::approx::{Fdm, ForwardGradient, GradApproximator, MeZo, RandomizedFdm, Spsa};
use zograd::{Error, Gpu, Params, Result};

fn named(r: Result<zograd::approx::Estimate>, arg: &str) {
    match r {
        Err(Error::InvalidArgument(m)) => assert!(m.starts_with(&format!("{arg}:")), "{m}"),
        other => panic!("expected InvalidArgument naming {arg}, got {other:?}"),
    }
}

#[test]
fn params_and_grad_on_another_gpu_are_rejected_untouched() {
    let gpu = common::gpu();
    let other = Gpu::new().unwrap();
    let x0 = common::data(12, 40);
    let mut x = Params::from_slices(&gpu, &[&x0[..20], &x0[20..]]).unwrap();
    let mut g = x.zeros_like().unwrap();
    let mut elsewhere = Params::from_slices(&other, &[&x0[..20], &x0[20..]]).unwrap();
    let mut loss = |p: &Params| -> Result<f32> { Ok(p.to_vec()?.iter().sum()) };
    let mut estimators: Vec<Box<dyn GradApproximator>> = vec![
        Box::new(Fdm::new()),
        Box::new(RandomizedFdm::new()),
        Box::new(Spsa::new()),
        Box::new(MeZo::new()),
        Box::new(ForwardGradient::new()),
    ];
    for est in &mut estimators {
        named(
            est.approximate(&gpu, &mut x, &mut loss, &mut elsewhere),
            "grad",
        );
        named(est.approximate(&other, &mut x, &mut loss, &mut g), "params");
    }
    assert_eq!(x.to_vec().unwrap(), x0);
}
