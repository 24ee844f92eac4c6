// SPDX-License-Identifier: MIT OR Apache-2.0
//! [`Optimizer::save`] and [`Optimizer::load`]: the whole state of an optimiser in one
//! safetensors file (see [`crate::checkpoint`] for the format).
//!
//! The metadata document of an optimiser checkpoint:
//!
//! ```text
//! { "format_version": 1, "kind": "optimizer",
//!   "layout": [buffer lengths],
//!   "optimizer": { "step": …, "fuse": …, "checkpoints": … },
//!   "average": null or { "from": …, "count": … },
//!   "blocking": null or { "config": {"tolerance": t} or {"calibrate": k},
//!                         "tolerance_bits": …, "last_bits": … },
//!   "approximator": { "name": …, "config": {…}, "counters": {…} },
//!   "modules": [ { "name": …, "config": {…}, "counters": {…} }, … ] }
//! ```
//!
//! and the tensors `approximator.<name>`, `module.<k>.<name>` (k the position in the chain) and
//! `average` (the mean of the iterates),
//! each of the parameters' n elements. The parameters themselves are saved separately
//! ([`Params::save`](crate::Params::save)).

use std::path::Path;

use serde_json::{json, Value};

use super::blocking::BlockingState;
use super::Optimizer;
use crate::checkpoint::{difference, unflat, Checkpoint, State};
use crate::{Error, Result};

/// Fails unless `state` is a state of the module `name` with hyper-parameters `config`.
pub(crate) fn check_module(name: &str, config: &Value, state: &State) -> Result<()> {
    if state.name != name {
        return Err(Error::invalid(format!(
            "module: the checkpoint's is {}, this one is {name}",
            state.name
        )));
    }
    match difference(config, &state.config) {
        Some(diff) => Err(Error::invalid(format!("{name}: {diff}"))),
        None => Ok(()),
    }
}

/// The metadata entry of one state (its tensors go separately, under `prefix`).
fn entry(state: &State, prefix: &str, tensors: &mut Vec<(String, Vec<f32>)>) -> Value {
    for (name, t) in &state.tensors {
        tensors.push((format!("{prefix}{name}"), t.clone()));
    }
    json!({ "name": state.name, "config": state.config, "counters": state.counters })
}

/// A state from its metadata entry and the checkpoint's tensors under `prefix`.
fn state_of(entry: &Value, prefix: &str, ck: &Checkpoint, what: &str) -> Result<State> {
    let name = entry
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::invalid(format!("checkpoint: {what} has no name")))?;
    let tensors = ck
        .tensors
        .iter()
        .filter_map(|(n, t)| n.strip_prefix(prefix).map(|n| (n.to_owned(), t.clone())))
        .collect();
    Ok(State {
        name: name.to_owned(),
        config: entry.get("config").cloned().unwrap_or(Value::Null),
        counters: entry.get("counters").cloned().unwrap_or(Value::Null),
        tensors,
    })
}

impl Optimizer {
    /// Saves the optimiser's whole state to a safetensors file, atomically (a temporary file
    /// renamed over `path`): the chain with every hyper-parameter, the approximator's seed and
    /// counters, the step counter, every module's counters and GPU state buffers, and the
    /// parameter layout. Save the parameters with [`Params::save`](crate::Params::save).
    ///
    /// An optimiser built with the same chain, [`load`](Optimizer::load)ed from this file (in
    /// this process or another), with the parameters loaded from their file, continues the run
    /// bit for bit as if it had never stopped.
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the approximator or a module is a user type without
    /// [`save_state`](crate::optim::Transform::save_state); [`Error::InvalidArgument`] starting
    /// with `path:` when the file cannot be written; device errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_checkpoint()?.write(path)
    }

    /// The optimiser's state as an in-memory [`Checkpoint`] (what [`save`](Optimizer::save)
    /// writes).
    ///
    /// # Errors
    /// As [`save`](Optimizer::save), without the file errors.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let mut tensors = Vec::new();
        let approx = self.approximator.save_state()?.ok_or_else(|| {
            Error::Unsupported(
                "approximator: this approximator cannot be checkpointed (save_state returns None)"
                    .into(),
            )
        })?;
        let approximator = entry(&approx, "approximator.", &mut tensors);
        let mut modules = Vec::with_capacity(self.modules.len());
        for (k, m) in self.modules.iter().enumerate() {
            let st = m.save_state()?.ok_or_else(|| {
                Error::Unsupported(format!(
                    "modules[{k}]: {} cannot be checkpointed (save_state returns None)",
                    m.name()
                ))
            })?;
            modules.push(entry(&st, &format!("module.{k}."), &mut tensors));
        }
        let average = self
            .averaging
            .as_ref()
            .map(|a| json!({ "from": a.from, "count": a.count }));
        if let Some(mean) = self.averaged() {
            tensors.push(("average".into(), mean.to_vec()?));
        }
        let blocking = self.blocking.as_ref().map(BlockingState::save);
        let meta = json!({
            "layout": self.shape,
            "average": average,
            "blocking": blocking,
            "optimizer": {
                "step": self.step,
                "fuse": self.fuse,
                "checkpoints": self.checkpoints,
            },
            "approximator": approximator,
            "modules": modules,
        });
        Ok(Checkpoint::new("optimizer", meta, tensors))
    }

    /// Restores a state saved by [`save`](Optimizer::save) into this optimiser, which must have
    /// been built with the same chain (approximator and modules of the same types, in the same
    /// order, with the same hyper-parameters) for parameters of the same buffer lengths. The
    /// seed is taken from the file, so an approximator built with a default (random) seed
    /// continues the saved run's directions.
    ///
    /// All or nothing: on any error the optimiser is unchanged.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming what differs — `layout`, `approximator`, `modules`,
    /// a hyper-parameter by name, `format_version` — or saying the file is truncated or
    /// corrupted, or starting with `path:` when it cannot be read; [`Error::Unsupported`] for a
    /// chain holding a type that cannot be checkpointed; device errors.
    pub fn load(&mut self, path: impl AsRef<Path>) -> Result<()> {
        self.load_checkpoint(&Checkpoint::read(path)?)
    }

    /// [`load`](Optimizer::load) from an in-memory [`Checkpoint`].
    ///
    /// # Errors
    /// As [`load`](Optimizer::load).
    pub fn load_checkpoint(&mut self, ck: &Checkpoint) -> Result<()> {
        ck.check_kind("optimizer")?;
        let meta = &ck.meta;
        let layout: Vec<u64> = meta
            .get("layout")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| Error::invalid("checkpoint: no `layout`"))?;
        if layout != self.shape {
            return Err(Error::invalid(format!(
                "layout: the checkpoint's parameter buffer lengths are {layout:?}, this \
                 optimiser's {:?}",
                self.shape
            )));
        }
        let opt = meta
            .get("optimizer")
            .ok_or_else(|| Error::invalid("checkpoint: no `optimizer` entry"))?;
        let step = opt
            .get("step")
            .and_then(Value::as_u64)
            .ok_or_else(|| Error::invalid("checkpoint: no `optimizer.step`"))?;
        for (key, here) in [("fuse", self.fuse), ("checkpoints", self.checkpoints)] {
            let file = opt.get(key).and_then(Value::as_bool);
            if file != Some(here) {
                return Err(Error::invalid(format!(
                    "{key}: the checkpoint has {}, this optimiser has {here}",
                    opt.get(key).unwrap_or(&Value::Null)
                )));
            }
        }
        let approx_file = state_of(
            meta.get("approximator").unwrap_or(&Value::Null),
            "approximator.",
            ck,
            "the approximator",
        )?;
        let entries = meta
            .get("modules")
            .and_then(Value::as_array)
            .ok_or_else(|| Error::invalid("checkpoint: no `modules` list"))?;
        let names = |v: &mut dyn Iterator<Item = String>| v.collect::<Vec<_>>().join(" → ");
        let here_names = names(&mut self.modules.iter().map(|m| m.name().to_owned()));
        let file_names = names(&mut entries.iter().map(|e| {
            e.get("name")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned()
        }));
        if here_names != file_names {
            return Err(Error::invalid(format!(
                "modules: the checkpoint's chain is [{file_names}], this one is [{here_names}]"
            )));
        }
        let mut files = Vec::with_capacity(entries.len());
        for (k, e) in entries.iter().enumerate() {
            files.push(state_of(e, &format!("module.{k}."), ck, "a module")?);
        }
        let n: u64 = self.shape.iter().sum();
        for st in std::iter::once(&approx_file).chain(&files) {
            if let Some((name, t)) = st.tensors.iter().find(|(_, t)| t.len() as u64 != n) {
                return Err(Error::invalid(format!(
                    "checkpoint: {}'s tensor `{name}` has {} elements, the parameters have {n}",
                    st.name,
                    t.len()
                )));
            }
        }
        // Iterate averaging: the same first step; the count and the mean are state.
        let average = meta.get("average").unwrap_or(&Value::Null);
        let from_file = average.get("from").and_then(Value::as_u64);
        let from_here = self.averaging.as_ref().map(|a| a.from);
        if from_file != from_here {
            return Err(Error::invalid(format!(
                "average_from: the checkpoint has {}, this optimiser has {}",
                from_file.map_or("no averaging".into(), |k| k.to_string()),
                from_here.map_or("no averaging".into(), |k| k.to_string())
            )));
        }
        // Blocking: the same setting; the tolerance and the reference are state.
        let blocking_file = meta.get("blocking").unwrap_or(&Value::Null);
        let blocking = match (&self.blocking, blocking_file.is_null()) {
            (None, true) => None,
            (Some(here), false) => Some(BlockingState::load(here.setting, blocking_file)?),
            (here, _) => {
                return Err(Error::invalid(format!(
                    "blocking: the checkpoint has {}, this optimiser has {}",
                    if blocking_file.is_null() {
                        "none".to_owned()
                    } else {
                        blocking_file
                            .get("config")
                            .map_or("?".to_owned(), ToString::to_string)
                    },
                    here.as_ref()
                        .map_or("none".to_owned(), |b| format!("{:?}", b.setting))
                )))
            }
        };
        let count = average.get("count").and_then(Value::as_u64).unwrap_or(0);
        let mean = match ck.tensors.iter().find(|(name, _)| name == "average") {
            Some((_, t)) => Some(unflat(&self.gpu, &self.shape, t, "average")?),
            None => None,
        };
        if from_here.is_some() && (count > 0) != mean.is_some() {
            return Err(Error::invalid(
                "checkpoint: the averaging count and the `average` tensor disagree",
            ));
        }
        // The current states, to put back if a later part fails (all or nothing).
        let approx_now = self.approximator.save_state()?.ok_or_else(|| {
            Error::Unsupported(
                "approximator: this approximator cannot be checkpointed (save_state returns None)"
                    .into(),
            )
        })?;
        let mut now = Vec::with_capacity(self.modules.len());
        for (k, m) in self.modules.iter().enumerate() {
            now.push(m.save_state()?.ok_or_else(|| {
                Error::Unsupported(format!(
                    "modules[{k}]: {} cannot be checkpointed (save_state returns None)",
                    m.name()
                ))
            })?);
        }
        // Check every hyper-parameter before changing anything.
        if let Some(diff) = difference(&approx_now.config, &approx_file.config) {
            return Err(Error::invalid(format!(
                "approximator ({}): {diff}",
                approx_now.name
            )));
        }
        for (k, (here, file)) in now.iter().zip(&files).enumerate() {
            if let Some(diff) = difference(&here.config, &file.config) {
                return Err(Error::invalid(format!(
                    "modules[{k}] ({}): {diff}",
                    here.name
                )));
            }
        }
        let result = (|| {
            self.approximator
                .load_state(&self.gpu, &self.shape, &approx_file)?;
            for (k, (m, file)) in self.modules.iter_mut().zip(&files).enumerate() {
                m.load_state(&self.gpu, &self.shape, file)
                    .map_err(|e| match e {
                        Error::InvalidArgument(msg) => {
                            Error::InvalidArgument(format!("modules[{k}]: {msg}"))
                        }
                        other => other,
                    })?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            // Best effort: the states just read back load unless the device itself failed.
            let _ = self
                .approximator
                .load_state(&self.gpu, &self.shape, &approx_now);
            for (m, st) in self.modules.iter_mut().zip(&now) {
                let _ = m.load_state(&self.gpu, &self.shape, st);
            }
            return Err(e);
        }
        if let Some(a) = self.averaging.as_mut() {
            a.count = count;
            a.mean = mean;
        }
        self.blocking = blocking;
        self.step = step;
        self.pre_stepped = false;
        self.checkpointed.clear();
        Ok(())
    }
}
