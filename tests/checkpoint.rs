// SPDX-License-Identifier: MIT OR Apache-2.0
//! Checkpoints: a run of N steps saved, loaded in a fresh process and run M more steps equals
//! N + M uninterrupted steps bit for bit (parameters and every reported loss), for every
//! estimator and module, fused and unfused, with random seeds; bad checkpoints are refused by
//! name and change nothing; a save killed mid-way (SIGKILL) leaves the previous file loadable.
//!
//! The fresh processes are this test binary run again with `ZOGRAD_CHECKPOINT_CHILD` set: the
//! test `child_process` then plays the child's part (and does nothing in a normal run).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{data, gpu, split};
use zograd::approx::{
    Fdm, Formula, ForwardGradient, GradApproximator, Jvp, MeZo, RandomizedFdm, Spsa,
};
use zograd::checkpoint::Checkpoint;
use zograd::optim::{
    Adam, Backtracking, ClipNorm, Context, EmaInit, HeavyBall, Lr, NewtonCg, Optimizer, Sign,
    Transform, WeightDecay,
};
use zograd::{Distribution, Error, Gpu, Params, Result};

const CHILD: &str = "ZOGRAD_CHECKPOINT_CHILD";
const LAYOUT: [usize; 2] = [30, 20];
const N_STEPS: usize = 6;
const M_STEPS: usize = 5;

/// f(x) = Σ (1 + i % 4)(x_i − t_i)² + 0.1 Σ x_i⁴ with t_i = 0.3·sin(i), in f64: not a
/// quadratic, so a line search's adaptive scale and Newton-CG have work to do.
fn loss_of(x: &[f32]) -> f32 {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let (v, t) = (f64::from(v), 0.3 * (i as f64).sin());
            (1.0 + (i % 4) as f64) * (v - t).powi(2) + 0.1 * v.powi(4)
        })
        .sum::<f64>() as f32
}

fn loss(p: &Params) -> Result<f32> {
    Ok(loss_of(&p.to_vec()?))
}

fn x0(gpu: &Gpu) -> Params {
    let v = data(11, LAYOUT.iter().sum());
    Params::from_slices(gpu, &split(&v, &LAYOUT)).unwrap()
}

/// The chains under test; every estimator, every module, fused and not, random seeds.
const CHAINS: usize = 11;

fn chain(k: usize, gpu: &Gpu, x: &Params) -> Optimizer {
    fn o<A: GradApproximator + Send + 'static>(gpu: &Gpu, x: &Params, a: A) -> Optimizer {
        Optimizer::new(gpu, x, a).unwrap()
    }
    match k {
        // The fused MeZO step (Lr, WeightDecay), explicit and default seed.
        0 => o(gpu, x, MeZo::new().seed(7).h(1e-2))
            .then(Lr::new(1e-2))
            .average_from(3),
        1 => o(gpu, x, MeZo::new().h(1e-2).n_samples(2))
            .then(WeightDecay::new(1e-2))
            .then(Lr::new(1e-2)),
        // The same chain unfused.
        2 => o(gpu, x, MeZo::new().seed(3).h(1e-2))
            .fuse(false)
            .then(WeightDecay::new(1e-2))
            .then(Lr::new(1e-2)),
        // Random (OS entropy) seeds from here on unless set.
        // (Learning rates small enough that no seed can diverge in 11 steps.)
        3 => o(gpu, x, Spsa::new().h(1e-2))
            .then(HeavyBall::new(0.9))
            .then(Lr::new(1e-3)),
        4 => o(
            gpu,
            x,
            RandomizedFdm::new()
                .beta(0.5)
                .n_samples(2)
                .distribution(Distribution::Gaussian)
                .h(1e-2),
        )
        .then(Adam::new())
        .then(Lr::new(1e-2))
        .average_from(1),
        5 => o(
            gpu,
            x,
            RandomizedFdm::new()
                .formula(Formula::Forward)
                .distribution(Distribution::Uniform)
                .h(1e-2),
        )
        .then(Sign::new())
        .then(Lr::new(1e-3)),
        6 => o(
            gpu,
            x,
            ForwardGradient::new()
                .distribution(Distribution::Uniform)
                .n_samples(3),
        )
        .then(ClipNorm::new(1.0))
        .then(Lr::new(1e-2)),
        7 => o(
            gpu,
            x,
            ForwardGradient::new()
                .jvp(Jvp::Forward)
                .distribution(Distribution::Sphere),
        )
        .then(HeavyBall::new(0.5).ema_init(EmaInit::Zeros))
        .then(Lr::new(1e-3)),
        // Line search with an adaptive scale that carries over steps; Fdm.
        8 => o(gpu, x, Fdm::new().h(1e-2)).then(Backtracking::new().init(4.0)),
        9 => o(
            gpu,
            x,
            Spsa::new().h(1e-2).exact_restore(true).pre_generate(false),
        )
        .then(Adam::new())
        .then(Backtracking::new().init(0.5)),
        10 => o(gpu, x, MeZo::new().seed(5).h(1e-2).exact_restore(true))
            .then(NewtonCg::new().max_iter(3))
            .then(Lr::new(0.5)),
        _ => unreachable!(),
    }
}

/// Every reported loss of `steps` steps, as bits (loss, loss_approx; u32::MAX for None).
fn run(opt: &mut Optimizer, x: &mut Params, steps: usize) -> Vec<[u32; 2]> {
    let bits = |v: Option<f32>| v.map_or(u32::MAX, f32::to_bits);
    (0..steps)
        .map(|_| {
            let r = opt.step(x, &mut loss).unwrap();
            [bits(r.loss), bits(r.loss_approx)]
        })
        .collect()
}

fn bits(p: &Params) -> Vec<u32> {
    p.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("zograd-ck-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn_child(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "child_process",
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD, role);
    cmd
}

/// The child's part: `resume:<dir>` loads every chain's checkpoint into a freshly built
/// optimiser, runs M steps and writes the parameters and losses; `saver:<file>` saves two
/// alternating large checkpoints to one file until killed.
#[test]
fn child_process() {
    let Ok(role) = std::env::var(CHILD) else {
        return;
    };
    let gpu = gpu();
    if let Some(dir) = role.strip_prefix("resume:") {
        let dir = Path::new(dir);
        for k in 0..CHAINS {
            let mut x = Params::load(&gpu, dir.join(format!("x{k}.safetensors"))).unwrap();
            let mut opt = chain(k, &gpu, &x);
            opt.load(dir.join(format!("opt{k}.safetensors"))).unwrap();
            assert_eq!(opt.steps(), N_STEPS as u64);
            let losses = run(&mut opt, &mut x, M_STEPS);
            x.save(dir.join(format!("out{k}.safetensors"))).unwrap();
            if let Some(mean) = opt.averaged() {
                mean.save(dir.join(format!("mean{k}.safetensors"))).unwrap();
            }
            let text = serde_json::to_string(&losses).unwrap();
            std::fs::write(dir.join(format!("losses{k}.json")), text).unwrap();
        }
    } else if let Some(file) = role.strip_prefix("saver:") {
        let big: Vec<f32> = (0..1 << 22).map(|i| i as f32).collect();
        let a = Params::from_slices(&gpu, &[&big])
            .unwrap()
            .to_checkpoint()
            .unwrap();
        let b = Params::from_slices(&gpu, &[&big[..1 << 21]])
            .unwrap()
            .to_checkpoint()
            .unwrap();
        a.write(file).unwrap();
        std::fs::write(format!("{file}.ready"), b"").unwrap();
        loop {
            b.write(file).unwrap();
            a.write(file).unwrap();
        }
    } else {
        panic!("{CHILD}: unknown role {role}");
    }
}

#[test]
fn resume_in_a_fresh_process_is_bit_exact() {
    let gpu = gpu();
    let dir = scratch("resume");
    let mut expected = Vec::new();
    for k in 0..CHAINS {
        // N steps, a save (which must not disturb the run), M more steps: the uninterrupted
        // run. The child resumes from the save in another process, with a freshly built chain
        // (whose random seeds differ).
        let mut x = x0(&gpu);
        let mut opt = chain(k, &gpu, &x);
        let mut losses = run(&mut opt, &mut x, N_STEPS);
        opt.save(dir.join(format!("opt{k}.safetensors"))).unwrap();
        x.save(dir.join(format!("x{k}.safetensors"))).unwrap();
        losses.extend(run(&mut opt, &mut x, M_STEPS));
        expected.push((losses, bits(&x), opt.averaged().map(bits)));
    }
    let status = spawn_child(&format!("resume:{}", dir.display()))
        .status()
        .unwrap();
    assert!(status.success(), "the child process failed: {status}");
    for (k, (losses, x, mean)) in expected.iter().enumerate() {
        let text = std::fs::read_to_string(dir.join(format!("losses{k}.json"))).unwrap();
        let resumed: Vec<[u32; 2]> = serde_json::from_str(&text).unwrap();
        assert_eq!(
            resumed,
            losses[N_STEPS..],
            "chain {k}: losses after resuming"
        );
        let out = Params::load(&gpu, dir.join(format!("out{k}.safetensors"))).unwrap();
        assert_eq!(bits(&out), *x, "chain {k}: parameters after resuming");
        if let Some(mean) = mean {
            let resumed = Params::load(&gpu, dir.join(format!("mean{k}.safetensors"))).unwrap();
            assert_eq!(
                bits(&resumed),
                *mean,
                "chain {k}: averaged iterate after resuming"
            );
        }
        assert_ne!(
            losses[0],
            losses[N_STEPS + M_STEPS - 1],
            "chain {k} did not move"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// The random-seed chains really draw another seed in another optimiser: without the seed in
/// the checkpoint the resume test could not pass.
#[test]
fn random_seeds_differ_between_optimisers() {
    let gpu = gpu();
    let x = x0(&gpu);
    let seed = |o: &Optimizer| {
        let st = o.to_checkpoint().unwrap();
        st.meta["approximator"]["counters"]["seed"]
            .as_u64()
            .unwrap()
    };
    assert_ne!(seed(&chain(3, &gpu, &x)), seed(&chain(3, &gpu, &x)));
}

#[test]
fn params_round_trip_bit_exact_and_readable_as_safetensors() {
    let gpu = gpu();
    let v = [1.5f32, -0.0, f32::MIN_POSITIVE, 3.0e38, -7.25, 1.0e-40];
    let p = Params::from_slices(&gpu, &[&v[..2], &v[2..]]).unwrap();
    let dir = scratch("params");
    let file = dir.join("p.safetensors");
    p.save(&file).unwrap();
    let q = Params::load(&gpu, &file).unwrap();
    assert_eq!(q.buffer_lens(), &[2, 4]);
    assert_eq!(bits(&q), bits(&p));
    // The file by the safetensors format itself (8-byte header length, JSON header, data):
    // tensor params.1 holds buffer 1's little-endian f32s.
    let bytes = std::fs::read(&file).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let t = &header["params.1"];
    assert_eq!(t["dtype"], "F32");
    assert_eq!(t["shape"], serde_json::json!([4]));
    let [s, e] = [0, 1].map(|i| t["data_offsets"][i].as_u64().unwrap() as usize);
    let raw: Vec<f32> = bytes[8 + n + s..8 + n + e]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(
        raw.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        bits(&p)[2..]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

fn err_text(r: Result<()>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

/// A module without `save_state`: the default says it cannot be checkpointed.
#[derive(Debug)]
struct Mine;

impl Transform for Mine {
    fn name(&self) -> &'static str {
        "Mine"
    }
    fn apply(&mut self, _: &mut Context<'_>) -> Result<()> {
        Ok(())
    }
}

#[test]
fn bad_checkpoints_are_refused_by_name() {
    let gpu = gpu();
    let dir = scratch("bad");
    let mut x = x0(&gpu);
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(1).h(1e-2))
        .unwrap()
        .then(HeavyBall::new(0.9))
        .then(Lr::new(1e-2));
    run(&mut opt, &mut x, 2);
    let file = dir.join("opt.safetensors");
    opt.save(&file).unwrap();
    let build = |a: MeZo, m: f32, lr: f32, p: &Params| {
        Optimizer::new(&gpu, p, a)
            .unwrap()
            .then(HeavyBall::new(m))
            .then(Lr::new(lr))
    };
    let same = || build(MeZo::new().seed(1).h(1e-2), 0.9, 1e-2, &x);
    // Another chain.
    let mut other = Optimizer::new(&gpu, &x, MeZo::new().h(1e-2))
        .unwrap()
        .then(Lr::new(1e-2));
    let m = err_text(other.load(&file));
    assert!(
        m.starts_with("modules:") && m.contains("HeavyBall → Lr"),
        "{m}"
    );
    let mut other = Optimizer::new(&gpu, &x, Spsa::new().h(1e-2))
        .unwrap()
        .then(HeavyBall::new(0.9))
        .then(Lr::new(1e-2));
    let m = err_text(other.load(&file));
    assert!(m.starts_with("approximator"), "{m}");
    // Other hyper-parameters: a module's, the approximator's.
    let m = err_text(build(MeZo::new().h(1e-2), 0.9, 2e-2, &x).load(&file));
    assert!(m.starts_with("modules[1] (Lr): lr:"), "{m}");
    let m = err_text(build(MeZo::new().h(1e-2), 0.8, 1e-2, &x).load(&file));
    assert!(m.starts_with("modules[0] (HeavyBall): momentum:"), "{m}");
    let m = err_text(build(MeZo::new().h(2e-2), 0.9, 1e-2, &x).load(&file));
    assert!(m.starts_with("approximator (MeZo): h:"), "{m}");
    // Other buffer lengths.
    let y = Params::from_slices(&gpu, &[&[0.0f32; 50][..]]).unwrap();
    let m = err_text(build(MeZo::new().h(1e-2), 0.9, 1e-2, &y).load(&file));
    assert!(m.starts_with("layout:") && m.contains("[30, 20]"), "{m}");
    // Another format version.
    let mut ck = Checkpoint::read(&file).unwrap();
    ck.meta["format_version"] = serde_json::json!(99);
    let f99 = dir.join("v99.safetensors");
    ck.write(&f99).unwrap();
    let m = err_text(same().load(&f99));
    assert!(m.starts_with("format_version:") && m.contains("99"), "{m}");
    // Truncated, corrupted (one bit of a tensor), empty, missing.
    let bytes = std::fs::read(&file).unwrap();
    let cut = dir.join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 7]).unwrap();
    let m = err_text(same().load(&cut));
    assert!(m.starts_with("checkpoint: not a readable"), "{m}");
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x10;
    let bad = dir.join("flip.safetensors");
    std::fs::write(&bad, &flipped).unwrap();
    let m = err_text(same().load(&bad));
    assert!(m.contains("checksum") && m.contains("corrupted"), "{m}");
    std::fs::write(&bad, b"").unwrap();
    assert!(err_text(same().load(&bad)).starts_with("checkpoint:"));
    let m = err_text(same().load(dir.join("missing")));
    assert!(m.starts_with("path: cannot read"), "{m}");
    // Parameters from an optimiser's checkpoint, and the other way round.
    let m = match Params::load(&gpu, &file) {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(m.starts_with("kind:"), "{m}");
    let px = dir.join("x.safetensors");
    x.save(&px).unwrap();
    assert!(err_text(same().load(&px)).starts_with("kind:"));
    // A module of the user's own without save_state.
    let mine = Optimizer::new(&gpu, &x, MeZo::new())
        .unwrap()
        .then(Mine)
        .then(Lr::new(1e-2));
    match mine.save(dir.join("mine.safetensors")) {
        Err(Error::Unsupported(m)) => assert!(m.starts_with("modules[0]: Mine"), "{m}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// A load that fails after the approximator and the first module could have been loaded (the
/// second module's state is malformed) leaves the optimiser as it was: its next steps are those
/// of an optimiser that never tried.
#[test]
fn a_failed_load_changes_nothing() {
    let gpu = gpu();
    let make = |x: &Params, seed| {
        Optimizer::new(&gpu, x, Spsa::new().seed(seed).h(1e-2).beta(0.5))
            .unwrap()
            .then(HeavyBall::new(0.9))
            .then(Adam::new())
            .then(Lr::new(1e-2))
    };
    // The checkpoint of another run (another seed, 4 steps), with Adam's `t` removed.
    let mut y = x0(&gpu);
    let mut other = make(&y, 99);
    run(&mut other, &mut y, 4);
    let mut ck = other.to_checkpoint().unwrap();
    ck.meta["modules"][1]["counters"] = serde_json::json!({});
    // Reference run: 3 + 3 steps; the same with a failed load between.
    let (mut xa, mut xb) = (x0(&gpu), x0(&gpu));
    let (mut a, mut b) = (make(&xa, 1), make(&xb, 1));
    let mut la = run(&mut a, &mut xa, 3);
    let mut lb = run(&mut b, &mut xb, 3);
    let m = err_text(b.load_checkpoint(&ck));
    assert!(
        m.starts_with("modules[1]: checkpoint: Adam's counter `t`"),
        "{m}"
    );
    assert_eq!(b.steps(), 3);
    la.extend(run(&mut a, &mut xa, 3));
    lb.extend(run(&mut b, &mut xb, 3));
    assert_eq!(la, lb);
    assert_eq!(bits(&xa), bits(&xb));
    // Loading the intact checkpoint does change the state: the test above can fail.
    let mut good = other.to_checkpoint().unwrap();
    good.meta["optimizer"]["step"] = serde_json::json!(4);
    b.load_checkpoint(&good).unwrap();
    assert_eq!(b.steps(), 4);
    let seed = &b.to_checkpoint().unwrap().meta["approximator"]["counters"]["seed"];
    assert_eq!(*seed, serde_json::json!(99));
}

/// SIGKILL while a child saves large checkpoints over one file again and again: every time,
/// what is left at the path loads and is one of the two whole checkpoints.
#[test]
fn a_save_killed_midway_leaves_a_whole_file() {
    let gpu = gpu();
    let dir = scratch("kill");
    let file = dir.join("big.safetensors");
    for round in 0..4u64 {
        let _ = std::fs::remove_file(format!("{}.ready", file.display()));
        let mut child = spawn_child(&format!("saver:{}", file.display()))
            .spawn()
            .unwrap();
        while !Path::new(&format!("{}.ready", file.display())).exists() {
            assert!(child.try_wait().unwrap().is_none(), "the saver exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Let it get into a few saves, at a different point each round.
        std::thread::sleep(std::time::Duration::from_millis(37 + 53 * round));
        child.kill().unwrap(); // SIGKILL on Unix
        child.wait().unwrap();
        let p = Params::load(&gpu, &file).unwrap();
        let n = p.len();
        assert!(n == 1 << 22 || n == 1 << 21, "round {round}: {n} elements");
        let v = p.to_vec().unwrap();
        assert!(
            v.iter().enumerate().all(|(i, &e)| e == i as f32),
            "round {round}"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

/// Settings changed between steps through `module_mut` / `approximator_mut` are in the
/// checkpoint: loading needs a chain built with the changed values.
#[test]
fn settings_changed_mid_run_are_checkpointed() {
    let gpu = gpu();
    let mut x = x0(&gpu);
    let mut opt = Optimizer::new(&gpu, &x, MeZo::new().seed(4).h(1e-2))
        .unwrap()
        .then(HeavyBall::new(0.9))
        .then(Lr::new(1e-2));
    run(&mut opt, &mut x, 2);
    assert!(opt.module::<Adam>(0).is_none() && opt.module::<HeavyBall>(0).is_some());
    assert!(opt.module::<Lr>(2).is_none());
    *opt.module_mut::<Lr>(1).unwrap() = Lr::new(5e-3);
    run(&mut opt, &mut x, 1);
    let ck = opt.to_checkpoint().unwrap();
    let build = |lr: f32| {
        Optimizer::new(&gpu, &x, MeZo::new().h(1e-2))
            .unwrap()
            .then(HeavyBall::new(0.9))
            .then(Lr::new(lr))
    };
    let m = err_text(build(1e-2).load_checkpoint(&ck));
    assert!(m.starts_with("modules[1] (Lr): lr:"), "{m}");
    build(5e-3).load_checkpoint(&ck).unwrap();
    assert!(opt.approximator_mut().save_state().unwrap().is_some());
}
