// SPDX-License-Identifier: MIT OR Apache-2.0
//! A long run with a budget, a checkpoint every 100 steps, and a resume: run it, interrupt it
//! (Ctrl-C) and run it again; it continues from the last checkpoint, bit for bit as if it had
//! never stopped. `cargo run --release --example long_run` (delete `long_run.*.safetensors` in
//! the temporary directory to start over). `-- --seed N` fixes the directions' seed (without it
//! a fresh run draws one from the OS; either way it is saved in the checkpoint), so that an
//! interrupted and resumed run can be compared with an uninterrupted one.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use zograd::approx::Spsa;
use zograd::optim::{Adam, Control, Lr, Optimizer};
use zograd::{Gpu, Params};

fn main() -> zograd::Result<()> {
    let gpu = Gpu::new()?;
    let dir = std::env::temp_dir();
    let (opt_file, x_file) = (
        dir.join("long_run.opt.safetensors"),
        dir.join("long_run.x.safetensors"),
    );
    // f(x) = Σ (x_i − 1)², n = 1000.
    let mut loss = |p: &Params| -> zograd::Result<f32> {
        Ok(p.to_vec()?.iter().map(|v| (v - 1.0) * (v - 1.0)).sum())
    };
    let resume = opt_file.exists() && x_file.exists();
    let mut x = if resume {
        Params::load(&gpu, &x_file)?
    } else {
        Params::from_slices(&gpu, &[&[0.0f32; 1000][..]])?
    };
    let args: Vec<String> = std::env::args().collect();
    let seed = match args.iter().position(|a| a == "--seed") {
        Some(i) => Some(
            args.get(i + 1)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    zograd::Error::InvalidArgument(format!(
                        "--seed: needs a number, got {:?}",
                        args.get(i + 1)
                    ))
                })?,
        ),
        None => None,
    };
    let spsa = Spsa::new().h(1e-3).n_samples(4);
    let spsa = match seed {
        Some(seed) => spsa.seed(seed),
        None => spsa,
    };
    let mut opt = Optimizer::new(&gpu, &x, spsa)?
        .then(Adam::new())
        .then(Lr::new(1e-2));
    if resume {
        opt.load(&opt_file)?;
        println!("resumed at step {}", opt.steps());
    }
    // A progress bar over the planned steps, with the current loss (a checkpoint every 100).
    let max_steps = 2_000u64;
    let bar = ProgressBar::new(max_steps).with_position(opt.steps());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:40}] step {pos}/{len}, {msg}")
            .map_err(|e| zograd::Error::InvalidArgument(format!("progress template: {e}")))?,
    );
    let summary = opt
        .run()
        .max_steps(max_steps)
        .max_evaluations(20_000)
        .time_limit(Duration::from_secs(600))
        .patience(200, 1e-3)
        .checkpoint_every(100, &opt_file, &x_file)
        .observe(|r| {
            bar.set_position(r.step);
            if let Some(f) = r.loss_approx {
                bar.set_message(format!("f ≈ {f:.4}"));
            }
            Control::Continue
        })
        .until_done(&mut x, &mut loss)?;
    bar.finish();
    println!(
        "stopped: {:?} after {} steps, {} evaluations, {:.1?}; best {:?}",
        summary.stop, summary.steps, summary.evaluations, summary.elapsed, summary.best
    );
    Ok(())
}
