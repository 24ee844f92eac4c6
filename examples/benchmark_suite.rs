// SPDX-License-Identifier: MIT OR Apache-2.0
//! The shader benchmark suite: zeroth-order methods × test functions (`zograd::testfns`) × n ×
//! seeds, each run with a budget of objective evaluations, the losses written to a CSV file and
//! drawn as SVG plots.
//!
//! ```text
//! cargo run --release --example benchmark_suite                       # the default grid
//! cargo run --release --example benchmark_suite -- --methods mezo,spsa4,rdsa \
//!     --functions sphere,rosenbrock --n 1000,100000 --seeds 5 --budget 2000
//! ```
//!
//! Options (comma-separated lists):
//! - `--methods`: `mezo` (MeZo, one Rademacher sample, central), `spsa` / `spsa4` (Spsa with 1 /
//!   4 samples, central), `rdsa` (Rdsa, Gaussian, 1 sample), `gaussian` (GaussianSmoothing,
//!   forward, 1 sample); default `mezo,spsa4,rdsa`.
//! - `--functions`: any of `zograd::testfns::Function::name` or `all`; default
//!   `sphere,ellipsoid,rosenbrock,rastrigin,ackley,levy`.
//! - `--n`: dimensions, default `100,1000`. `--seeds`: runs per cell (seed s = 1 … S: the
//!   problem instance — shift and permutation — and the estimator's directions), default 3.
//! - `--budget`: objective evaluations per run (the estimator's, as counted by
//!   `StepReport::evaluations`), default 2000.
//! - `--update`: `adam` (default: estimate → Adam → Lr(lr)) or `sgd` (estimate → Lr(lr/n));
//!   `--lr`: the learning rate, default 0.05 for Adam, 0.5 for SGD (divided by n).
//! - `--h`: the finite-difference step, default 1e-3. `--out`: the output folder, default
//!   `target/benchmark_suite`.
//! - `--rotate`: `yes` (default) or `no`: the block-diagonal rotation of `Problem::rotated`.
//!
//! Every problem is shifted, permuted and (by default) block-rotated with the seed
//! (`Problem::shifted(s).permuted(s).rotated(s)`: x_opt uniform in [−4, 4)ⁿ, so separable
//! shortcuts do not flatter a method) and every run starts at x₀ = 0. The losses are evaluated as a `BatchObjective`
//! (all points of a step in one dispatch); the recorded loss is f(x) from the problem's
//! `ShaderObjective`, at evaluation counts spaced by factors of ~1.2 (not counted in the
//! budget, not timed).
//!
//! Output in `--out`:
//! - `results.csv`: `function,n,method,seed,evaluations,loss,precision,time` — loss = f(x),
//!   precision = f(x) − f_min, time = seconds spent in optimiser steps so far.
//! - `loss_<function>_n<n>.svg`: precision f − f_min against evaluations, the median over seeds
//!   and the band between the quartiles, per method.
//! - `ecdf.svg`: COCO's runtime ECDF (data profile) per method: the fraction of
//!   (function, n, seed, target) tuples whose target is reached within the evaluations on the
//!   x-axis. Targets are relative to the start: f − f_min ≤ 10^{−k/2}·(f(x₀) − f_min),
//!   k = 1 … 16 (10^{−0.5} … 10^{−8}); a run "reaches" a target at the first recorded
//!   evaluation count where it holds (recordings are ~1.2× apart, so the runtimes are rounded up
//!   by at most that factor).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use plotters::prelude::*;
use zograd::approx::{GaussianSmoothing, MeZo, Rdsa, Spsa};
use zograd::optim::{Adam, Lr, Optimizer};
use zograd::testfns::{Function, Problem};
use zograd::{Distribution, Gpu, Params};

/// The command line.
#[derive(Debug)]
struct Config {
    methods: Vec<String>,
    functions: Vec<Function>,
    ns: Vec<u64>,
    seeds: u64,
    budget: u64,
    adam: bool,
    lr: f32,
    h: f32,
    rotate: bool,
    out: PathBuf,
}

const METHODS: [&str; 5] = ["mezo", "spsa", "spsa4", "rdsa", "gaussian"];

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse() -> Result<Config, String> {
    let mut c = Config {
        methods: list("mezo,spsa4,rdsa"),
        functions: [
            "sphere",
            "ellipsoid",
            "rosenbrock",
            "rastrigin",
            "ackley",
            "levy",
        ]
        .iter()
        .map(|f| Function::from_name(f).expect("known"))
        .collect(),
        ns: vec![100, 1000],
        seeds: 3,
        budget: 2000,
        adam: true,
        lr: f32::NAN,
        h: 1e-3,
        rotate: true,
        out: PathBuf::from("target/benchmark_suite"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut k = 0;
    while k < args.len() {
        let key = args[k].as_str();
        let value = args
            .get(k + 1)
            .ok_or_else(|| format!("{key}: needs a value"))?
            .as_str();
        let num = |what: &str| -> Result<f64, String> {
            value
                .parse::<f64>()
                .map_err(|e| format!("{what}: {value:?}: {e}"))
        };
        match key {
            "--methods" => {
                c.methods = list(value);
                if let Some(m) = c.methods.iter().find(|m| !METHODS.contains(&m.as_str())) {
                    return Err(format!(
                        "--methods: unknown method {m:?} (one of {METHODS:?})"
                    ));
                }
            }
            "--functions" => {
                c.functions = if value == "all" {
                    Function::ALL.to_vec()
                } else {
                    list(value)
                        .iter()
                        .map(|f| Function::from_name(f).map_err(|e| format!("--functions: {e}")))
                        .collect::<Result<_, _>>()?
                }
            }
            "--n" => {
                c.ns = list(value)
                    .iter()
                    .map(|v| v.parse::<u64>().map_err(|e| format!("--n: {v:?}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--seeds" => c.seeds = num("--seeds")? as u64,
            "--budget" => c.budget = num("--budget")? as u64,
            "--update" => {
                c.adam = match value {
                    "adam" => true,
                    "sgd" => false,
                    _ => return Err(format!("--update: {value:?} is not adam or sgd")),
                }
            }
            "--lr" => c.lr = num("--lr")? as f32,
            "--h" => c.h = num("--h")? as f32,
            "--out" => c.out = PathBuf::from(value),
            "--rotate" => {
                c.rotate = match value {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(format!("--rotate: {value:?} is not yes or no")),
                }
            }
            _ => return Err(format!("{key}: unknown option")),
        }
        k += 2;
    }
    if c.lr.is_nan() {
        c.lr = if c.adam { 0.05 } else { 0.5 };
    }
    if c.methods.is_empty() || c.functions.is_empty() || c.ns.is_empty() || c.seeds == 0 {
        return Err("--methods, --functions, --n and --seeds must not be empty".into());
    }
    Ok(c)
}

/// The optimiser of a method: its estimator, then Adam → Lr(lr) or Lr(lr/n).
fn optimizer(
    c: &Config,
    gpu: &Gpu,
    x: &Params,
    method: &str,
    seed: u64,
) -> zograd::Result<Optimizer> {
    let opt = match method {
        "mezo" => Optimizer::new(gpu, x, MeZo::new().h(c.h).seed(seed))?,
        "spsa" => Optimizer::new(gpu, x, Spsa::new().h(c.h).seed(seed))?,
        "spsa4" => Optimizer::new(gpu, x, Spsa::new().n_samples(4).h(c.h).seed(seed))?,
        "rdsa" => Optimizer::new(
            gpu,
            x,
            Rdsa::new()
                .distribution(Distribution::Gaussian)
                .h(c.h)
                .seed(seed),
        )?,
        "gaussian" => Optimizer::new(gpu, x, GaussianSmoothing::new().h(c.h).seed(seed))?,
        _ => unreachable!("methods are checked by parse"),
    };
    Ok(if c.adam {
        opt.then(Adam::new()).then(Lr::new(c.lr))
    } else {
        opt.then(Lr::new(c.lr / x.len() as f32))
    })
}

/// One recorded point of a run.
#[derive(Clone, Copy, Debug)]
struct Record {
    evaluations: u64,
    loss: f64,
    precision: f64,
    time: f64,
}

/// A run's key: (function, n, method, seed).
type Key = (Function, u64, String, u64);

fn run(c: &Config, gpu: &Gpu, key: &Key) -> zograd::Result<Vec<Record>> {
    let (function, n, method, seed) = key;
    let mut problem = Problem::new(*function, *n)?
        .shifted(1000 + seed)
        .permuted(2000 + seed);
    if c.rotate {
        problem = problem.rotated(3000 + seed);
    }
    let mut x = Params::from_slices(gpu, &[&vec![0.0f32; *n as usize][..]])?;
    let mut loss = problem.batch_objective(&x, 16)?;
    let mut plain = problem.shader_objective(&x)?;
    let mut opt = optimizer(c, gpu, &x, method, *seed)?;
    let f_min = problem.minimum();
    let mut records = Vec::new();
    let mut record = |e: u64, t: f64, plain: &mut zograd::ShaderObjective| -> zograd::Result<()> {
        let f = f64::from(plain.evaluate()?);
        records.push(Record {
            evaluations: e,
            loss: f,
            precision: (f - f_min).max(0.0),
            time: t,
        });
        Ok(())
    };
    record(0, 0.0, &mut plain)?;
    let (mut evals, mut time, mut next) = (0u64, 0.0f64, 2u64);
    while evals < c.budget {
        let t = Instant::now();
        let report = opt.step(&mut x, &mut loss)?;
        gpu.wait()?;
        time += t.elapsed().as_secs_f64();
        evals += u64::from(report.evaluations);
        if evals >= next || evals >= c.budget {
            record(evals, time, &mut plain)?;
            while next <= evals {
                next = (next as f64 * 1.2).ceil() as u64;
            }
        }
    }
    Ok(records)
}

/// The last recorded precision at or before `e` evaluations.
fn at(records: &[Record], e: u64) -> f64 {
    records
        .iter()
        .take_while(|r| r.evaluations <= e)
        .last()
        .map_or(f64::NAN, |r| r.precision)
}

/// The q-quantile (linear interpolation) of `v`.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let p = q * (v.len() - 1) as f64;
    let (lo, hi) = (p.floor() as usize, p.ceil() as usize);
    v[lo] + (v[hi] - v[lo]) * (p - lo as f64)
}

const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
];

type Runs = BTreeMap<(String, u64, String, u64), Vec<Record>>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Precision against evaluations for one (function, n): median and quartile band per method.
fn plot_loss(c: &Config, runs: &Runs, f: Function, n: u64, path: &Path) -> Result<(), String> {
    let floor = 1e-12;
    let mut curves = Vec::new();
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for method in &c.methods {
        let seeds: Vec<&Vec<Record>> = (1..=c.seeds)
            .filter_map(|s| runs.get(&(f.name().to_string(), n, method.clone(), s)))
            .collect();
        if seeds.is_empty() {
            continue;
        }
        let mut grid: Vec<u64> = seeds
            .iter()
            .flat_map(|r| r.iter().map(|x| x.evaluations))
            .collect();
        grid.sort_unstable();
        grid.dedup();
        let pts: Vec<(f64, [f64; 3])> = grid
            .iter()
            .map(|&e| {
                let mut v: Vec<f64> = seeds.iter().map(|r| at(r, e).max(floor)).collect();
                let q = [
                    quantile(&mut v, 0.25),
                    quantile(&mut v, 0.5),
                    quantile(&mut v, 0.75),
                ];
                ((e.max(1)) as f64, q)
            })
            .collect();
        for (_, q) in &pts {
            lo = lo.min(q[0]);
            hi = hi.max(q[2]);
        }
        curves.push((method.clone(), pts));
    }
    if curves.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    // Whole decades, so the log axis labels at least two powers of ten.
    let lo = 10f64.powf(lo.max(floor).log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 100.0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "{} (n = {n}): f − f_min, median and quartiles over {} seeds",
                f.name(),
                c.seeds
            ),
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(
            (1.0..c.budget as f64 * 1.05).log_scale(),
            (lo..hi).log_scale(),
        )
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("objective evaluations")
        .y_desc("f(x) − f_min")
        .y_labels(12)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0e}"))
        .draw()
        .map_err(err)?;
    for (k, (method, pts)) in curves.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let band: Vec<(f64, f64)> = pts
            .iter()
            .map(|(e, q)| (*e, q[2]))
            .chain(pts.iter().rev().map(|(e, q)| (*e, q[0])))
            .collect();
        chart
            .draw_series(std::iter::once(Polygon::new(
                band,
                color.mix(0.18).filled(),
            )))
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new(
                pts.iter().map(|(e, q)| (*e, q[1])),
                color.stroke_width(2),
            ))
            .map_err(err)?
            .label(method.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Relative targets 10^{−k/2}, k = 1 … 16.
fn targets() -> Vec<f64> {
    (1..=16).map(|k| 10f64.powf(-f64::from(k) / 2.0)).collect()
}

/// COCO's runtime ECDF: per method, the fraction of (function, n, seed, target) reached within
/// e evaluations.
fn plot_ecdf(c: &Config, runs: &Runs, path: &Path) -> Result<(), String> {
    let root = SVGBackend::new(path, (800, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let names: Vec<&str> = c.functions.iter().map(|f| f.name()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!(
                "Runtime ECDF over {} functions × n {:?} × {} seeds × 16 targets",
                names.len(),
                c.ns,
                c.seeds
            ),
            ("sans-serif", 16),
        )
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d((1.0..c.budget as f64 * 1.05).log_scale(), 0.0..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("objective evaluations")
        .y_desc("fraction of (function, n, seed, target) reached")
        .x_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(err)?;
    for (k, method) in c.methods.iter().enumerate() {
        let mut hits: Vec<u64> = Vec::new();
        let mut total = 0usize;
        for ((_, _, m, _), records) in runs {
            if m != method {
                continue;
            }
            let start = records[0].precision;
            for t in targets() {
                total += 1;
                if let Some(r) = records.iter().find(|r| r.precision <= t * start) {
                    hits.push(r.evaluations.max(1));
                }
            }
        }
        if total == 0 {
            continue;
        }
        hits.sort_unstable();
        let mut pts = vec![(1.0, 0.0)];
        for (i, e) in hits.iter().enumerate() {
            let y = (i + 1) as f64 / total as f64;
            pts.push((*e as f64, pts.last().map_or(0.0, |p| p.1)));
            pts.push((*e as f64, y));
        }
        pts.push((c.budget as f64, pts.last().map_or(0.0, |p| p.1)));
        let color = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(err)?
            .label(method.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

fn main() -> Result<(), String> {
    let c = parse()?;
    let gpu = Gpu::new().map_err(err)?;
    let info = gpu.adapter_info();
    println!(
        "adapter: {} ({:?}); methods {:?}, functions {:?}, n {:?}, {} seeds, budget {}, update {} lr {}, rotated {}",
        info.name,
        info.backend,
        c.methods,
        c.functions.iter().map(|f| f.name()).collect::<Vec<_>>(),
        c.ns,
        c.seeds,
        c.budget,
        if c.adam { "adam" } else { "sgd" },
        c.lr,
        c.rotate
    );
    let mut keys: Vec<Key> = Vec::new();
    for &f in &c.functions {
        for &n in &c.ns {
            for m in &c.methods {
                for s in 1..=c.seeds {
                    keys.push((f, n, m.clone(), s));
                }
            }
        }
    }
    let bar = ProgressBar::new(keys.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} runs, eta {eta} {msg}",
        )
        .map_err(err)?
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut runs: Runs = BTreeMap::new();
    for key in &keys {
        bar.set_message(format!(
            "{} n={} {} seed {}",
            key.0.name(),
            key.1,
            key.2,
            key.3
        ));
        let records = run(&c, &gpu, key).map_err(|e| format!("{key:?}: {e}"))?;
        runs.insert(
            (key.0.name().to_string(), key.1, key.2.clone(), key.3),
            records,
        );
        bar.inc(1);
    }
    bar.finish_with_message(format!("{:.1} s", started.elapsed().as_secs_f64()));

    std::fs::create_dir_all(&c.out).map_err(err)?;
    let mut csv = String::from("function,n,method,seed,evaluations,loss,precision,time\n");
    for ((f, n, m, s), records) in &runs {
        for r in records {
            writeln!(
                csv,
                "{f},{n},{m},{s},{},{:e},{:e},{:.6}",
                r.evaluations, r.loss, r.precision, r.time
            )
            .expect("writing to a String");
        }
    }
    let csv_path = c.out.join("results.csv");
    std::fs::write(&csv_path, csv).map_err(err)?;
    println!("wrote {}", csv_path.display());
    for &f in &c.functions {
        for &n in &c.ns {
            let path = c.out.join(format!("loss_{}_n{n}.svg", f.name()));
            plot_loss(&c, &runs, f, n, &path)?;
            println!("wrote {}", path.display());
        }
    }
    let path = c.out.join("ecdf.svg");
    plot_ecdf(&c, &runs, &path)?;
    println!("wrote {}", path.display());

    // The final precision: median over seeds, as a Markdown table.
    println!(
        "\nmedian f − f_min after {} evaluations (start: median f(x₀) − f_min)\n",
        c.budget
    );
    let mut header = String::from("| function | n | start |");
    let mut rule = String::from("|---|---|---|");
    for m in &c.methods {
        header.push_str(&format!(" {m} |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    for &f in &c.functions {
        for &n in &c.ns {
            let seeds = |m: &str| -> Vec<&Vec<Record>> {
                (1..=c.seeds)
                    .filter_map(|s| runs.get(&(f.name().to_string(), n, m.to_string(), s)))
                    .collect()
            };
            let mut start: Vec<f64> = seeds(&c.methods[0])
                .iter()
                .map(|r| r[0].precision)
                .collect();
            let mut line = format!("| {} | {n} | {:.3e} |", f.name(), quantile(&mut start, 0.5));
            for m in &c.methods {
                let mut last: Vec<f64> = seeds(m)
                    .iter()
                    .map(|r| r.last().expect("a run records its start").precision)
                    .collect();
                line.push_str(&format!(" {:.3e} |", quantile(&mut last, 0.5)));
            }
            println!("{line}");
        }
    }
    Ok(())
}
