// SPDX-License-Identifier: MIT OR Apache-2.0
//! `WGPU_ADAPTER_NAME` that matches nothing is an error naming the adapters, not a panic.
//! (Its own test binary: it changes the process environment.)

#[test]
fn an_unknown_adapter_name_is_an_error() {
    std::env::set_var("WGPU_ADAPTER_NAME", "no such adapter 9f3c");
    match zograd::Gpu::new() {
        Err(zograd::Error::NoAdapter(msg)) => {
            assert!(msg.contains("no such adapter 9f3c"), "{msg}")
        }
        other => panic!("expected NoAdapter, got {other:?}"),
    }
}
