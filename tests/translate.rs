// SPDX-License-Identifier: MIT OR Apache-2.0
//! Every shader zograd ships, translated to the shading languages of wgpu's backends with naga
//! (the translators wgpu itself uses): SPIR-V (Vulkan), MSL (Metal), HLSL (DX12) and GLSL ES 3.1
//! (GL). The software adapters the other tests run on are Vulkan and GL only; this is the
//! always-on check that the kernels also translate for Metal and DX12. No adapter is needed.
//!
//! The kernels come from the crate's own kernel table (`src/gpu/kernel.rs`, included here as
//! a module): every row — entry point and `override` constants as zograd builds its pipeline —
//! is translated. The exported `wgsl::PHILOX` and `wgsl::BATCH` helpers are translated inside a
//! small user-style shader.

#[allow(dead_code, reason = "the test uses the sources, not every helper")]
#[path = "../src/gpu/shaders.rs"]
mod shaders;

#[allow(dead_code, reason = "the test uses the table, not every accessor")]
#[path = "../src/gpu/kernel.rs"]
mod kernel;

use naga::back::{glsl, hlsl, msl, spv, PipelineConstants};
use naga::valid::{Capabilities, ValidationFlags, Validator};
use naga::ShaderStage;

/// Parses and validates `src`.
fn module(src: &str, what: &str) -> (naga::Module, naga::valid::ModuleInfo) {
    let module = naga::front::wgsl::parse_str(src)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    let info = Validator::new(ValidationFlags::all(), Capabilities::default())
        .validate(&module)
        .unwrap_or_else(|e| panic!("{what}: {}", e.emit_to_string(src)));
    (module, info)
}

/// Translates compute entry point `entry` of `src`, with the override values `constants`, to
/// the four languages; panics with the first translation error.
fn translate(src: &str, entry: &str, constants: &[(&str, f64)], what: &str) {
    let (module, info) = module(src, what);
    let mut values = PipelineConstants::default();
    for (name, value) in constants {
        values.insert((*name).to_string(), *value);
    }
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((ShaderStage::Compute, entry)),
        &values,
    )
    .unwrap_or_else(|e| panic!("{what}: overrides {constants:?}: {e}"));
    let (module, info) = (module.as_ref(), info.as_ref());

    let spv_pipeline = spv::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
    };
    let words = spv::write_vec(module, info, &spv::Options::default(), Some(&spv_pipeline))
        .unwrap_or_else(|e| panic!("{what}: SPIR-V: {e}"));
    assert_eq!(
        words.first(),
        Some(&0x0723_0203),
        "{what}: SPIR-V magic number"
    );

    let msl_options = msl::Options {
        lang_version: (2, 0),
        ..msl::Options::default()
    };
    let msl_pipeline = msl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
        ..msl::PipelineOptions::default()
    };
    let (metal, _) = msl::write_string(module, info, &msl_options, &msl_pipeline)
        .unwrap_or_else(|e| panic!("{what}: MSL: {e}"));
    assert!(metal.contains("kernel void"), "{what}: no MSL kernel");

    let mut hlsl_out = String::new();
    let hlsl_options = hlsl::Options::default(); // shader model 5.1, the lowest wgpu's DX12 uses
    let hlsl_pipeline = hlsl::PipelineOptions {
        entry_point: Some((ShaderStage::Compute, entry.to_string())),
    };
    hlsl::Writer::new(&mut hlsl_out, &hlsl_options, &hlsl_pipeline)
        .write(module, info, None)
        .unwrap_or_else(|e| panic!("{what}: HLSL: {e}"));
    assert!(hlsl_out.contains("[numthreads("), "{what}: no HLSL kernel");

    let mut glsl_out = String::new();
    let glsl_options = glsl::Options {
        version: glsl::Version::new_gles(310),
        ..glsl::Options::default()
    };
    let glsl_pipeline = glsl::PipelineOptions {
        shader_stage: ShaderStage::Compute,
        entry_point: entry.to_string(),
        multiview: None,
    };
    glsl::Writer::new(
        &mut glsl_out,
        module,
        info,
        &glsl_options,
        &glsl_pipeline,
        naga::proc::BoundsCheckPolicies::default(),
    )
    .and_then(|mut w| w.write().map(|_| ()))
    .unwrap_or_else(|e| panic!("{what}: GLSL ES 3.1: {e}"));
    assert!(glsl_out.contains("#version 310 es"), "{what}: GLSL version");
}

/// Every row of the kernel table: its family's module, its entry point, its constants.
#[test]
fn every_kernel_translates_to_spirv_msl_hlsl_and_glsl() {
    for spec in &kernel::KERNELS {
        let src = spec.family.source();
        let what = format!("{:?} ({})", spec.kernel, spec.entry);
        translate(&src, spec.entry, spec.constants, &what);
    }
}

/// The table covers every entry point of every shader module (nothing shipped goes
/// untranslated), and each override zograd sets exists in the module it is set on.
#[test]
fn the_kernel_table_covers_every_entry_point() {
    for family in shaders::Family::ALL {
        let (module, _) = module(&family.source(), family.label());
        for ep in &module.entry_points {
            assert!(
                kernel::KERNELS
                    .iter()
                    .any(|k| k.family == family && k.entry == ep.name),
                "{}: entry point {} is not in the kernel table",
                family.label(),
                ep.name
            );
        }
    }
    for spec in &kernel::KERNELS {
        let (module, _) = module(&spec.family.source(), spec.entry);
        for (name, _) in spec.constants {
            assert!(
                module
                    .overrides
                    .iter()
                    .any(|(_, o)| o.name.as_deref() == Some(*name)),
                "{:?}: override {name} is not declared",
                spec.kernel
            );
        }
    }
}

/// A user's shaders: one that regenerates directions with the exported Philox source, and a
/// `BatchObjective` shader that uses every batch helper, as `BatchObjective::new` assembles it
/// (`PHILOX + BATCH + source`).
#[test]
fn the_exported_helpers_translate_inside_user_shaders() {
    let philox_user = format!(
        "{}\n@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
         @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) {{\n\
             let b = zograd_block(vec2<u32>(1u, 2u), 3u, 4u, vec2<u32>(id.x, 0u));\n\
             out[id.x] = zograd_z(ZOGRAD_GAUSSIAN, vec2<u32>(1u, 2u), 3u, 4u, vec2<u32>(id.x, 0u))\n\
                 + zograd_gaussian4(b).x + zograd_uniform4(b).y;\n\
         }}",
        zograd::wgsl::PHILOX
    );
    translate(&philox_user, "main", &[], "PHILOX in a user shader");

    let batch_user = format!(
        "{}\n{}\n@group(0) @binding(0) var<storage, read> x: array<f32>;\n\
         @compute @workgroup_size(64) fn main(@builtin(workgroup_id) wg: vec3<u32>, \
                                              @builtin(local_invocation_index) lid: u32) {{\n\
             let p = wg.z;\n\
             if (p >= zograd_point_count()) {{ return; }}\n\
             let point = zograd_point(p);\n\
             let b = zograd_point_block(p, vec2<u32>(lid, 0u));\n\
             let v = x[lid] + zograd_dz(p, vec2<u32>(lid, 0u)) + zograd_rademacher(b, lid % 128u)\n\
                 + zograd_quad(b).x * point.scale;\n\
             if (lid == 0u) {{ zograd_set_loss(p, v); }}\n\
         }}",
        zograd::wgsl::PHILOX,
        zograd::wgsl::BATCH
    );
    translate(&batch_user, "main", &[], "BATCH in a user shader");
}

/// `zograd::testfns`'s passes (`shaders/testfns.wgsl`), as its `BatchObjective` and
/// `ShaderObjective` compile them (`PHILOX + BATCH + TESTFNS`): every entry point.
#[test]
fn the_test_functions_translate() {
    let src = format!(
        "{}\n{}\n{}",
        shaders::PHILOX,
        shaders::BATCH,
        shaders::TESTFNS
    );
    for entry in [
        "tf_batch_partials",
        "tf_batch_finish",
        "tf_plain_partials",
        "tf_plain_finish",
    ] {
        translate(&src, entry, &[], &format!("testfns {entry}"));
    }
}
