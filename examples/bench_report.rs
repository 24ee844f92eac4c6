// SPDX-License-Identifier: MIT OR Apache-2.0
//! zograd's benchmark report: every figure measured in one process on the current adapter, as
//! times and as ratios to the copy kernel measured in the same run (on a shared or noisy machine
//! the ratios are what compare across runs).
//!
//! ```text
//! cargo run --release --example bench_report                    # the full report, a few minutes on lavapipe
//! cargo run --release --example bench_report -- --quick         # n up to 10⁶ only
//! WGPU_BACKEND=gl cargo run --release --example bench_report    # another backend
//! cargo run --release --example bench_report -- --host-overhead # section 4 only, printed
//! ```
//!
//! It prints markdown tables and writes them, a CSV of the step times (`steps.csv`, read by
//! `benches/compare_torchzero.sh`) and an SVG plot of time per step vs n (`steps.svg`) to
//! `target/bench_report/`. Sections:
//!
//! 1. **Kernel bandwidth**: copy, perturb and accumulate at n = 10⁶ and 1.6·10⁷, in GB/s (8
//!    bytes per element) and as a ratio to copy.
//! 2. **Step time vs n** (10³ … 1.6·10⁷) on the quadratic f(x) = Σ xᵢ²: MeZo (fused step, learning
//!    rate) and Spsa with S = 1 and S = 16 (unfused: estimate, then x ← x − lr·g) with a plain
//!    closure objective whose loss is one GPU reduction (`zograd::kernels::dot(x, x)`, one
//!    readback); and MeZo with a virtual objective ([`zograd::BatchObjective`]) that computes
//!    f(x + hz) and f(x − hz) in one pass over x, next to its memory-traffic floor: x read once
//!    for both losses plus one fused read-modify-write of x, at the copy kernel's bandwidth
//!    (1.5 × the copy time of n elements).
//! 3. **Populations**: Spsa with S = 16 and 64 at n = 10⁶, batched vs one point at a time.
//! 4. **Host overhead**: MeZo steps per second at n = 1000 with a closure, a
//!    [`zograd::ShaderObjective`] and a [`zograd::BatchObjective`] loss, microseconds per
//!    evaluation, per kernel launch (one submission), per `queue.write_buffer` and per one-f32
//!    readback, and (Linux) the CPU time per step of the calling thread against the process's
//!    other threads (a software adapter's queue and worker threads).

#[path = "support/sphere_loss.rs"]
mod sphere_loss;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use plotters::prelude::*;
use sphere_loss::SphereLoss;
use zograd::approx::{GradApproximator, MeZo, Spsa};
use zograd::kernels::{accumulate, copy, dot, perturb, Direction};
use zograd::optim::{Lr, Optimizer};
use zograd::{Distribution, Gpu, Objective, Params, Result, ShaderObjective};

/// Seconds per call of `f` (which must wait for its own results, or be followed by a wait):
/// after one warm-up call, the best of up to three rounds, each running calls for at least
/// `budget` (at least one call). Slow calls (over 1 s) get one round.
fn time(gpu: &Gpu, budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    let warm = Instant::now();
    f()?;
    gpu.wait()?;
    let rounds = if warm.elapsed() > Duration::from_secs(1) {
        1
    } else {
        3
    };
    let mut best = f64::INFINITY;
    for _ in 0..rounds {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < budget {
            f()?;
            gpu.wait()?;
            calls += 1;
        }
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    Ok(best)
}

/// Seconds per `Optimizer::step` of `approximator → Lr(1e-3)` (timed as by [`time`]) and the
/// loss evaluations one step makes (read from its `StepReport`).
fn time_steps(
    gpu: &Gpu,
    budget: Duration,
    x: &mut Params,
    loss: &mut dyn Objective,
    approximator: impl GradApproximator + Send + 'static,
) -> Result<(f64, u32)> {
    let mut opt = Optimizer::new(gpu, x, approximator)?.then(Lr::new(1e-3));
    let evaluations = opt.step(x, loss)?.evaluations;
    let t = time(gpu, budget, || opt.step(x, loss).map(|_| ()))?;
    Ok((t, evaluations))
}

/// The loss of the closure objective: one reduction on the GPU, one readback.
fn sumsq(p: &Params) -> Result<f32> {
    Ok(dot(p, p)? as f32)
}

/// Hides `loss_batch`, so the estimator perturbs x in place and evaluates one point at a time.
struct OneAtATime<'a>(&'a mut ShaderObjective);

impl Objective for OneAtATime<'_> {
    fn loss(&mut self, params: &Params) -> Result<f32> {
        self.0.loss(params)
    }
}

/// Today's date (UTC) as YYYY-MM-DD, from the system clock.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Days since 1970-01-01 to a civil date (H. Hinnant's algorithm).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

fn out_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    target.join("bench_report")
}

fn ms(s: f64) -> String {
    if s >= 0.1 {
        format!("{:.0} ms", s * 1e3)
    } else if s >= 1e-3 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.0} µs", s * 1e6)
    }
}

/// One row of the step-time table: seconds per step, and loss evaluations per step (`evals`, in
/// the order mezo, spsa1, spsa16, virtual_mezo).
struct Steps {
    n: u64,
    copy: f64,
    mezo: f64,
    spsa1: f64,
    spsa16: f64,
    virtual_mezo: f64,
    evals: [u32; 4],
}

impl Steps {
    /// x read once (half a copy's traffic) + one fused read-modify-write of x (one copy).
    fn floor(&self) -> f64 {
        1.5 * self.copy
    }
}

fn bandwidth(gpu: &Gpu, report: &mut String, sizes: &[usize]) -> Result<()> {
    writeln!(
        report,
        "\n## Kernel bandwidth\n\n| n | kernel | time per call | GB/s (8 B/element) | ratio to copy |\n|---|---|---|---|---|"
    )
    .unwrap();
    for &n in sizes {
        let src = Params::from_slices(gpu, &[&vec![0.5f32; n][..]])?;
        let mut x = src.zeros_like()?;
        let budget = Duration::from_millis(300);
        let dir = |distribution| Direction {
            distribution,
            seed: 1 << 33,
            step: 1,
            sample: 0,
        };
        let t_copy = time(gpu, budget, || copy(&mut x, &src))?;
        let mut rows = vec![("copy".to_string(), t_copy)];
        for dist in [
            Distribution::Rademacher,
            Distribution::Gaussian,
            Distribution::Uniform,
        ] {
            let mut sign = 1.0;
            let t = time(gpu, budget, || {
                sign = -sign;
                perturb(&mut x, &dir(dist), sign * 1e-3)
            })?;
            rows.push((format!("perturb {dist}"), t));
        }
        for (dist, k) in [
            (Distribution::Rademacher, 1u32),
            (Distribution::Rademacher, 8),
            (Distribution::Rademacher, 64),
            (Distribution::Gaussian, 1),
            (Distribution::Gaussian, 8),
        ] {
            let terms: Vec<(u32, f32)> = (0..k).map(|s| (s, 1e-3)).collect();
            let t = time(gpu, budget, || accumulate(&mut x, dist, 7, 0, &terms))?;
            let name = if k == 1 {
                format!("accumulate {dist}, 1 term (runs the perturb kernel)")
            } else {
                format!("accumulate {dist}, {k} terms")
            };
            rows.push((name, t));
        }
        for (name, t) in rows {
            writeln!(
                report,
                "| {n} | {name} | {} | {:.2} | {:.2} |",
                ms(t),
                8.0 * n as f64 / t / 1e9,
                t_copy / t
            )
            .unwrap();
        }
    }
    Ok(())
}

fn step_times(gpu: &Gpu, sizes: &[u64]) -> Result<Vec<Steps>> {
    let mut rows = Vec::new();
    for &n in sizes {
        let budget = Duration::from_millis(if n <= 100_000 { 300 } else { 100 });
        let data: Vec<f32> = (0..n)
            .map(|i| zograd::rng::perturbation(Distribution::Uniform, 3, 0, 0, i))
            .collect();
        let mut x = Params::from_slices(gpu, &[&data[..]])?;
        let mut scratch = x.zeros_like()?;
        let t_copy = time(gpu, budget, || copy(&mut scratch, &x))?;
        drop(scratch);
        let mut loss = sumsq;
        let (t_mezo, e_mezo) = time_steps(gpu, budget, &mut x, &mut loss, MeZo::new().seed(1))?;
        let (t_spsa1, e_spsa1) = time_steps(gpu, budget, &mut x, &mut loss, Spsa::new().seed(1))?;
        let (t_spsa16, e_spsa16) = time_steps(
            gpu,
            budget,
            &mut x,
            &mut loss,
            Spsa::new().n_samples(16).seed(1),
        )?;
        let mut virt = SphereLoss::new(gpu, &x, 2)?.batched;
        let (t_virtual, e_virtual) =
            time_steps(gpu, budget, &mut x, &mut virt, MeZo::new().seed(1))?;
        eprintln!(
            "n = {n}: copy {}, MeZo {}, Spsa S=1 {}, S=16 {}, virtual MeZo {}",
            ms(t_copy),
            ms(t_mezo),
            ms(t_spsa1),
            ms(t_spsa16),
            ms(t_virtual)
        );
        rows.push(Steps {
            n,
            copy: t_copy,
            mezo: t_mezo,
            spsa1: t_spsa1,
            spsa16: t_spsa16,
            virtual_mezo: t_virtual,
            evals: [e_mezo, e_spsa1, e_spsa16, e_virtual],
        });
    }
    Ok(rows)
}

fn populations(gpu: &Gpu, report: &mut String, n: usize) -> Result<()> {
    writeln!(
        report,
        "\n## Populations (Spsa, n = {n}, f(x) = Σ xᵢ² as a WGSL loss)\n\n\
         | S | points | one at a time | batched (`BatchObjective`) | speed-up | readbacks per estimate (batched) |\n|---|---|---|---|---|---|"
    )
    .unwrap();
    // Dyadic data and h = 2⁻⁷: every point is exact in f32, so both modes agree bit for bit.
    let data: Vec<f32> = (0..n as u64)
        .map(|i| {
            let u = zograd::rng::perturbation(Distribution::Uniform, 1, 0, 0, i);
            (u / 1.732_050_8 * 512.0).round() / 256.0
        })
        .collect();
    let mut x = Params::from_slices(gpu, &[&data[..]])?;
    let SphereLoss {
        mut batched,
        mut plain,
    } = SphereLoss::new(gpu, &x, 128)?;
    let mut gb = x.zeros_like()?;
    let mut gs = x.zeros_like()?;
    let h = 1.0 / 128.0;
    for s in [16u32, 64] {
        let spsa = || {
            let mut e = Spsa::new().n_samples(s).h(h).seed(2024);
            e.pre_step();
            e
        };
        let budget = Duration::from_millis(200);
        let t_b = time(gpu, budget, || {
            spsa()
                .approximate(gpu, &mut x, &mut batched, &mut gb)
                .map(|_| ())
        })?;
        let before = batched.readbacks();
        spsa().approximate(gpu, &mut x, &mut batched, &mut gb)?;
        let readbacks = batched.readbacks() - before;
        let t_s = time(gpu, budget, || {
            spsa()
                .approximate(gpu, &mut x, &mut OneAtATime(&mut plain), &mut gs)
                .map(|_| ())
        })?;
        assert_eq!(
            gb.to_vec()?,
            gs.to_vec()?,
            "batched and one-at-a-time estimates agree bit for bit"
        );
        writeln!(
            report,
            "| {s} | {} | {} | {} | {:.1}× | {} |",
            2 * s,
            ms(t_s),
            ms(t_b),
            t_s / t_b,
            readbacks
        )
        .unwrap();
    }
    writeln!(
        report,
        "\nBoth modes include the estimate's one accumulate pass g = Σ c_s·z_s over the S samples; \
         the estimates agree bit for bit (checked)."
    )
    .unwrap();
    Ok(())
}

/// Seconds per call of `f` run back to back, with ONE wait per round (after one warm-up call):
/// the throughput of calls that wait for their own results anyway (an optimiser step waits
/// for its loss values), without the wait [`time`] adds after every call, which would also
/// submit the step's update on its own instead of with the next step's first evaluation. The
/// best of three rounds of at least `budget` each.
fn time_chained(gpu: &Gpu, budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    gpu.wait()?;
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        let mut calls = 0u32;
        while calls == 0 || start.elapsed() < budget {
            f()?;
            calls += 1;
        }
        gpu.wait()?;
        best = best.min(start.elapsed().as_secs_f64() / f64::from(calls));
    }
    Ok(best)
}

fn host_overhead(gpu: &Gpu, report: &mut String) -> Result<()> {
    let n = 1000usize;
    let data = vec![0.5f32; n];
    let mut x = Params::from_slices(gpu, &[&data[..]])?;
    let mut loss = sumsq;
    let budget = Duration::from_millis(700);
    let mut mezo = Optimizer::new(gpu, &x, MeZo::new().seed(1))?.then(Lr::new(1e-3));
    let t = time_chained(gpu, budget, || mezo.step(&mut x, &mut loss).map(|_| ()))?;
    let SphereLoss {
        batched: mut virt,
        mut plain,
    } = SphereLoss::new(gpu, &x, 2)?;
    let mut mezo_v = Optimizer::new(gpu, &x, MeZo::new().seed(1))?.then(Lr::new(1e-3));
    let tv = time_chained(gpu, budget, || mezo_v.step(&mut x, &mut virt).map(|_| ()))?;
    // The ShaderObjective itself: zograd records the perturbation into the evaluation's
    // submission (one submission per evaluation).
    let mut mezo_s = Optimizer::new(gpu, &x, MeZo::new().seed(1))?.then(Lr::new(1e-3));
    let ts = time_chained(gpu, budget, || mezo_s.step(&mut x, &mut plain).map(|_| ()))?;
    // The same loss behind an objective of the user's: zograd submits its pending launches
    // before each call and at the end of the step (one submission per kernel, as before
    // issue 16 §3).
    let mut mezo_f = Optimizer::new(gpu, &x, MeZo::new().seed(1))?.then(Lr::new(1e-3));
    let tf = time_chained(gpu, budget, || {
        mezo_f.step(&mut x, &mut OneAtATime(&mut plain)).map(|_| ())
    })?;
    // With a wait after every step (how steps were timed before): the update then goes alone.
    let ts_wait = time(gpu, budget, || mezo_s.step(&mut x, &mut plain).map(|_| ()))?;
    let tv_wait = time(gpu, budget, || mezo_v.step(&mut x, &mut virt).map(|_| ()))?;
    // One kernel launch (a perturbation of the n = 1000 parameters): one uniform write and one
    // submission, nothing waits; the timer's final wait is shared by all calls of a round.
    let dir = Direction {
        seed: 7,
        step: 0,
        sample: 0,
        distribution: Distribution::Rademacher,
    };
    let t_submit = time(gpu, budget, || perturb(&mut x, &dir, 0.0))?;
    // One empty submission (an encoder with nothing recorded): the queue's own cost.
    let t_empty = time(gpu, budget, || {
        let encoder = gpu.device().create_command_encoder(&Default::default());
        gpu.queue().submit([encoder.finish()]);
        Ok(())
    })?;
    // One readback of one f32 (copy, map, one blocking poll) in a submission of its own.
    let buffer = x.buffers()[0].clone();
    let t_read = time(gpu, budget, || gpu.read_f32s(&buffer, 0, 1).map(|_| ()))?;
    // One `queue.write_buffer` of a launch uniform's 112 bytes with an empty submission: wgpu
    // stages every write in a buffer of its own, copied at the start of the submission.
    gpu.flush()?;
    let t_write = time(gpu, budget, || {
        gpu.queue().write_buffer(&buffer, 0, &[0u8; 112]);
        let encoder = gpu.device().create_command_encoder(&Default::default());
        gpu.queue().submit([encoder.finish()]);
        Ok(())
    })?;
    // Where a step's time goes: CPU time of the calling thread (zograd, wgpu-core, the driver's
    // submission path) and of the process's other threads (a software adapter's queue and
    // worker threads), per step.
    let split_s = cpu_split(gpu, || mezo_s.step(&mut x, &mut plain).map(|_| ()))?;
    let split_v = cpu_split(gpu, || mezo_v.step(&mut x, &mut virt).map(|_| ()))?;
    writeln!(
        report,
        "\n## Host overhead (n = 1000)\n\nSteps run back to back, one wait per timing round.\n\n\
         | objective | MeZo steps per second | submissions per step | readbacks per step | µs per step |\n|---|---|---|---|---|\n\
         | closure (`dot`, one reduction) | {:.0} | 5 | 2 | {:.0} |\n\
         | `ShaderObjective` (one pass, x perturbed in place) | {:.0} | 2 | 2 | {:.0} |\n\
         | the same behind a user `Objective` (submitted before each call) | {:.0} | 5 | 2 | {:.0} |\n\
         | virtual (`BatchObjective`, both points in one pass) | {:.0} | 1 | 1 | {:.0} |\n\n\
         With a wait after every step (the update then goes in a submission of its own): \
         `ShaderObjective` {:.0} µs, `BatchObjective` {:.0} µs per step.\n\n\
         One kernel launch (uniform write + submission, no wait): {:.1} µs; one empty submission: \
         {:.1} µs; one 112-byte `queue.write_buffer` with an empty submission: {:.1} µs. One \
         readback of one f32 (copy, map, blocking poll): {:.1} µs.\n\n\
         CPU time per step (back to back, Linux only): `ShaderObjective` {}; `BatchObjective` {}.",
        1.0 / t,
        t * 1e6,
        1.0 / ts,
        ts * 1e6,
        1.0 / tf,
        tf * 1e6,
        1.0 / tv,
        tv * 1e6,
        ts_wait * 1e6,
        tv_wait * 1e6,
        t_submit * 1e6,
        t_empty * 1e6,
        t_write * 1e6,
        t_read * 1e6,
        split_s,
        split_v,
    )
    .unwrap();
    Ok(())
}

/// CPU time (user + system) per thread of this process, in clock ticks, keyed by thread id;
/// empty where `/proc/self/task` cannot be read (not Linux).
fn thread_ticks() -> Vec<(String, u64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let tick = |k: usize| fields.get(k).and_then(|f| f.parse::<u64>().ok());
        if let (Some(user), Some(system)) = (tick(11), tick(12)) {
            out.push((
                task.file_name().to_string_lossy().into_owned(),
                user + system,
            ));
        }
    }
    out
}

/// Runs `f` back to back for 2000 calls (after 100 warm-up calls) and returns the CPU time per
/// call of the calling thread and of all other threads of the process, as text, or "not
/// measured" where per-thread CPU times are not available. Clock ticks are 10 ms (`USER_HZ`
/// = 100 on Linux), so 2000 calls resolve 5 µs per call.
fn cpu_split(gpu: &Gpu, mut f: impl FnMut() -> Result<()>) -> Result<String> {
    let calls = 2000u32;
    for _ in 0..100 {
        f()?;
    }
    gpu.wait()?;
    let before = thread_ticks();
    let start = Instant::now();
    for _ in 0..calls {
        f()?;
    }
    gpu.wait()?;
    let wall = start.elapsed().as_secs_f64();
    let after = thread_ticks();
    let main = format!("{}", std::process::id());
    if after.iter().all(|(tid, _)| *tid != main) {
        return Ok("not measured".into());
    }
    let (mut own, mut others) = (0u64, 0u64);
    for (tid, t) in &after {
        let was = before.iter().find(|(k, _)| k == tid).map_or(0, |(_, v)| *v);
        if *tid == main {
            own += t - was;
        } else {
            others += t - was;
        }
    }
    let per_call = |ticks: u64| ticks as f64 * 1e4 / f64::from(calls);
    Ok(format!(
        "{:.0} µs wall, {:.0} µs CPU in the calling thread, {:.0} µs CPU in the others",
        wall * 1e6 / f64::from(calls),
        per_call(own),
        per_call(others)
    ))
}

/// A plotted series: its name, colour and value per row.
type Series = (&'static str, RGBColor, fn(&Steps) -> f64);

fn plot(rows: &[Steps], path: &std::path::Path, title: &str) -> std::result::Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::new(path, (960, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let xs = (rows[0].n as f64 * 0.8)..(rows[rows.len() - 1].n as f64 * 1.25);
    let all = rows
        .iter()
        .flat_map(|r| [r.mezo, r.spsa1, r.spsa16, r.virtual_mezo, r.floor()]);
    let lo = all.clone().fold(f64::INFINITY, f64::min) * 0.7;
    let hi = all.fold(0.0f64, f64::max) * 1.5;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(xs.log_scale(), (lo..hi).log_scale())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("n (parameters)")
        .y_desc("seconds per step")
        .x_label_formatter(&|v| format!("{v:.0e}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(|e| err(&e))?;
    let series: [Series; 5] = [
        ("MeZo (closure loss)", RGBColor(31, 119, 180), |r| r.mezo),
        ("Spsa S=1 (closure loss)", RGBColor(255, 127, 14), |r| {
            r.spsa1
        }),
        ("Spsa S=16 (closure loss)", RGBColor(44, 160, 44), |r| {
            r.spsa16
        }),
        ("MeZo (virtual loss_batch)", RGBColor(214, 39, 40), |r| {
            r.virtual_mezo
        }),
        ("memory floor (1.5 x copy)", RGBColor(127, 127, 127), |r| {
            r.floor()
        }),
    ];
    for (name, color, f) in series {
        chart
            .draw_series(LineSeries::new(
                rows.iter().map(|r| (r.n as f64, f(r))),
                color.stroke_width(2),
            ))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let started = Instant::now();
    let gpu = Gpu::new()?;
    let info = gpu.adapter_info().clone();
    let adapter = format!(
        "{} ({:?}, driver {:?} {:?})",
        info.name, info.backend, info.driver, info.driver_info
    );
    let mut report = format!(
        "# zograd benchmark report\n\n- adapter: {adapter}\n- date: {}\n- CPU threads: {}\n- reproduce: `cargo run --release --example bench_report`\n",
        today(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    eprintln!("adapter: {adapter}");
    if std::env::args().any(|a| a == "--host-overhead") {
        host_overhead(&gpu, &mut report)?;
        print!("{report}");
        return Ok(());
    }

    let big = if quick { 1_000_000 } else { 16_000_000 };
    let mut bw_sizes = vec![1_000_000, big];
    bw_sizes.dedup();
    bandwidth(&gpu, &mut report, &bw_sizes)?;
    print!("{report}");
    let mark = report.len();

    let sizes: Vec<u64> = [1_000u64, 10_000, 100_000, 1_000_000, 16_000_000]
        .into_iter()
        .filter(|n| *n <= big as u64)
        .collect();
    let rows = step_times(&gpu, &sizes)?;
    writeln!(
        report,
        "\n## Time per step on f(x) = Σ xᵢ²\n\n\
         Closure objective: `dot(x, x)`, one reduction and one readback per evaluation. Virtual: a \
         `BatchObjective` that evaluates f(x + hz) and f(x − hz) in one pass over x (one readback per step). \
         Floor: x read once + one fused read-modify-write of x at copy bandwidth = 1.5 × copy time.\n\n\
         Evaluations per step: MeZo {}, Spsa S=1 {}, Spsa S=16 {}, MeZo virtual {} (points of one batch).\n\n\
         | n | MeZo | Spsa S=1 | Spsa S=16 | MeZo, virtual | floor | virtual / floor | copy |\n|---|---|---|---|---|---|---|---|",
        rows[0].evals[0],
        rows[0].evals[1],
        rows[0].evals[2],
        rows[0].evals[3],
    )
    .unwrap();
    let mut csv = String::from("n,method,seconds_per_step,evaluations_per_step\n");
    for r in &rows {
        writeln!(
            report,
            "| {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            r.n,
            ms(r.mezo),
            ms(r.spsa1),
            ms(r.spsa16),
            ms(r.virtual_mezo),
            ms(r.floor()),
            r.virtual_mezo / r.floor(),
            ms(r.copy)
        )
        .unwrap();
        let [e_mezo, e_spsa1, e_spsa16, e_virtual] = r.evals;
        for (m, v, e) in [
            ("copy", r.copy, 0),
            ("mezo", r.mezo, e_mezo),
            ("spsa1", r.spsa1, e_spsa1),
            ("spsa16", r.spsa16, e_spsa16),
            ("mezo_virtual", r.virtual_mezo, e_virtual),
            ("floor", r.floor(), 0),
        ] {
            writeln!(csv, "{},{m},{v:.9},{e}", r.n).unwrap();
        }
    }

    populations(&gpu, &mut report, 1_000_000)?;
    host_overhead(&gpu, &mut report)?;
    writeln!(
        report,
        "\nTimes are the best of up to three rounds of repeated calls, each followed by a wait for the \
         GPU. Total run time: {:.0} s.",
        started.elapsed().as_secs_f64()
    )
    .unwrap();
    print!("{}", &report[mark..]);

    let dir = out_dir();
    std::fs::create_dir_all(&dir).map_err(|e| zograd::Error::InvalidArgument(e.to_string()))?;
    let io = |e: std::io::Error| zograd::Error::InvalidArgument(format!("writing the report: {e}"));
    std::fs::write(dir.join("report.md"), &report).map_err(io)?;
    std::fs::write(dir.join("steps.csv"), &csv).map_err(io)?;
    let svg = dir.join("steps.svg");
    plot(
        &rows,
        &svg,
        &format!("zograd time per step, f(x) = sum x^2 — {}", info.name),
    )
    .map_err(|e| zograd::Error::InvalidArgument(format!("drawing the plot: {e}")))?;
    println!(
        "\nwrote {}, {} and {}",
        dir.join("report.md").display(),
        dir.join("steps.csv").display(),
        svg.display()
    );
    Ok(())
}
