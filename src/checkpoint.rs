// SPDX-License-Identifier: MIT OR Apache-2.0
//! Checkpoints: the state of an [`Optimizer`](crate::optim::Optimizer) or of [`Params`] in one
//! [safetensors](https://huggingface.co/docs/safetensors) file, readable from Python
//! (`safetensors.numpy.load_file`).
//!
//! A file holds 1-D `F32` tensors and two metadata entries: `zograd` (a JSON document: the
//! format version [`FORMAT_VERSION`], what the file holds, and for an optimiser the chain with
//! every hyper-parameter, the seeds, the step and call counters, the line-search state and the
//! parameter layout) and `zograd.checksum` (FNV-1a 64 over the JSON text and every tensor's
//! name and bytes, so a corrupted file is refused rather than loaded).
//!
//! [`Checkpoint::write`] is atomic: it writes a temporary file next to the target, flushes it to
//! disk and renames it over the target, so a crash during a save leaves the previous file whole.
//!
//! The user-facing entry points are [`Optimizer::save`](crate::optim::Optimizer::save) /
//! [`Optimizer::load`](crate::optim::Optimizer::load) and [`Params::save`] / [`Params::load`];
//! [`State`] is what a module or an approximator exports for them
//! ([`Transform::save_state`](crate::optim::Transform::save_state),
//! [`GradApproximator::save_state`](crate::approx::GradApproximator::save_state)).

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::{Error, Gpu, Params, Result};

/// The version of the checkpoint format this build writes and reads.
pub const FORMAT_VERSION: u64 = 1;

/// What one module of a chain, or an approximator, exports into a checkpoint.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    /// The type's name (e.g. `"Adam"`, `"MeZo"`); loading requires the same name.
    pub name: String,
    /// The hyper-parameters, a JSON object; loading requires equal values, key by key.
    pub config: Value,
    /// The state that changes during a run (counters, seeds, line-search scale), a JSON object;
    /// loading replaces the current values by these.
    pub counters: Value,
    /// The GPU state buffers, each flattened to the parameters' n elements in global order,
    /// by name. A buffer not yet created (before the first step) is absent.
    pub tensors: Vec<(String, Vec<f32>)>,
}

impl State {
    /// A state with `name` and `config` and nothing else.
    #[must_use]
    pub fn new(name: &str, config: Value) -> Self {
        Self {
            name: name.to_owned(),
            config,
            counters: Value::Null,
            tensors: Vec::new(),
        }
    }

    /// The tensor `name`, if present.
    #[must_use]
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_slice())
    }

    /// The counter `key` as a u64.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is missing or not an unsigned integer.
    pub fn counter_u64(&self, key: &str) -> Result<u64> {
        self.counters
            .get(key)
            .and_then(Value::as_u64)
            .ok_or_else(|| self.bad_counter(key))
    }

    /// The counter `key` as an f64 (`null` for `None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is missing or neither a number nor `null`.
    pub fn counter_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.counters.get(key) {
            Some(Value::Null) => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.bad_counter(key)),
            None => Err(self.bad_counter(key)),
        }
    }

    fn bad_counter(&self, key: &str) -> Error {
        Error::invalid(format!(
            "checkpoint: {}'s counter `{key}` is missing or malformed (got {})",
            self.name,
            self.counters.get(key).unwrap_or(&Value::Null)
        ))
    }
}

/// A GPU state buffer, flattened, for [`State::tensors`]: `None` when not created yet.
///
/// # Errors
/// Device errors.
pub(crate) fn flat(p: &Option<Params>) -> Result<Option<Vec<f32>>> {
    p.as_ref().map(Params::to_vec).transpose()
}

/// Parameters with buffer lengths `shape` on `gpu` holding `data` (n elements, global order).
///
/// # Errors
/// [`Error::InvalidArgument`] when `data` is not `shape`'s total length; device errors.
pub(crate) fn unflat(gpu: &Gpu, shape: &[u64], data: &[f32], what: &str) -> Result<Params> {
    let n: u64 = shape.iter().sum();
    if data.len() as u64 != n {
        return Err(Error::invalid(format!(
            "checkpoint: tensor `{what}` has {} elements, the parameters have {n}",
            data.len()
        )));
    }
    let mut slices = Vec::with_capacity(shape.len());
    let mut at = 0usize;
    for &len in shape {
        slices.push(&data[at..at + len as usize]);
        at += len as usize;
    }
    Params::from_slices(gpu, &slices)
}

/// A checkpoint in memory: the metadata document and the tensors, as in the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    /// The `zograd` metadata: `{"format_version": …, "kind": …, …}`.
    pub meta: Value,
    /// The tensors by name, 1-D f32, sorted by name.
    pub tensors: Vec<(String, Vec<f32>)>,
}

/// FNV-1a, 64 bits.
fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for b in bytes {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
}

fn checksum(meta_text: &str, tensors: &[(String, Vec<f32>)]) -> String {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv1a(&mut h, meta_text.as_bytes());
    for (name, t) in tensors {
        fnv1a(&mut h, name.as_bytes());
        fnv1a(&mut h, &(t.len() as u64).to_le_bytes());
        fnv1a(&mut h, bytemuck::cast_slice(t));
    }
    format!("{h:016x}")
}

fn corrupt(why: impl std::fmt::Display) -> Error {
    Error::invalid(format!(
        "checkpoint: not a readable zograd checkpoint ({why})"
    ))
}

impl Checkpoint {
    /// A checkpoint of `kind` (`"optimizer"`, `"params"`) with `meta`'s entries (an object)
    /// and the format version added.
    #[must_use]
    pub fn new(kind: &str, mut meta: Value, mut tensors: Vec<(String, Vec<f32>)>) -> Self {
        if let Value::Object(m) = &mut meta {
            m.insert("format_version".into(), json!(FORMAT_VERSION));
            m.insert("kind".into(), json!(kind));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Self { meta, tensors }
    }

    /// The tensor `name`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when it is absent.
    pub fn tensor(&self, name: &str) -> Result<&[f32]> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_slice())
            .ok_or_else(|| corrupt(format!("tensor `{name}` is missing")))
    }

    /// Fails unless the format version is this build's and the kind is `kind`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the version or kind found.
    pub fn check_kind(&self, kind: &str) -> Result<()> {
        let version = self.meta.get("format_version").and_then(Value::as_u64);
        if version != Some(FORMAT_VERSION) {
            return Err(Error::invalid(format!(
                "format_version: the checkpoint's is {}, this build reads {FORMAT_VERSION}",
                self.meta.get("format_version").unwrap_or(&Value::Null)
            )));
        }
        let found = self.meta.get("kind").and_then(Value::as_str);
        if found != Some(kind) {
            return Err(Error::invalid(format!(
                "kind: the checkpoint holds {}, expected \"{kind}\"",
                self.meta.get("kind").unwrap_or(&Value::Null)
            )));
        }
        Ok(())
    }

    /// The safetensors bytes.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when safetensors refuses the data (a header over its limit).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let text = self.meta.to_string();
        let mut info = HashMap::new();
        info.insert("zograd.checksum".to_owned(), checksum(&text, &self.tensors));
        info.insert("zograd".to_owned(), text);
        let views = self
            .tensors
            .iter()
            .map(|(name, t)| {
                let view = safetensors::tensor::TensorView::new(
                    safetensors::Dtype::F32,
                    vec![t.len()],
                    bytemuck::cast_slice(t),
                )
                .map_err(|e| Error::invalid(format!("checkpoint: tensor `{name}`: {e}")))?;
                Ok((name.as_str(), view))
            })
            .collect::<Result<Vec<_>>>()?;
        safetensors::serialize(views, Some(info))
            .map_err(|e| Error::invalid(format!("checkpoint: cannot serialise: {e}")))
    }

    /// Parses safetensors bytes written by [`to_bytes`](Checkpoint::to_bytes).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a truncated or corrupted file (bad header, checksum
    /// mismatch, a tensor that is not 1-D f32, no zograd metadata).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(corrupt)?;
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(corrupt)?;
        let info = header
            .metadata()
            .as_ref()
            .ok_or_else(|| corrupt("no metadata"))?;
        let text = info
            .get("zograd")
            .ok_or_else(|| corrupt("no `zograd` metadata"))?;
        let meta: Value = serde_json::from_str(text).map_err(corrupt)?;
        let mut tensors = Vec::new();
        for (name, view) in st.tensors() {
            if view.dtype() != safetensors::Dtype::F32 || view.shape().len() != 1 {
                return Err(corrupt(format!(
                    "tensor `{name}` is {:?} of shape {:?}, expected 1-D F32",
                    view.dtype(),
                    view.shape()
                )));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            tensors.push((name, data));
        }
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let expected = checksum(text, &tensors);
        match info.get("zograd.checksum") {
            Some(sum) if *sum == expected => Ok(Self { meta, tensors }),
            Some(sum) => Err(corrupt(format!(
                "checksum {sum} in the file, {expected} computed: the file is corrupted"
            ))),
            None => Err(corrupt("no `zograd.checksum` metadata")),
        }
    }

    /// Writes the file atomically: a temporary file in the same directory, flushed to disk,
    /// then renamed over `path` (a crash leaves either the old file or the new one).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] starting with `path:` when the file cannot be written.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |what: &str, e: std::io::Error| {
            Error::invalid(format!("path: cannot {what} {}: {e}", path.display()))
        };
        let tmp = temp_path(path);
        let result = (|| {
            let mut f = fs::File::create(&tmp).map_err(|e| io("create a temporary file for", e))?;
            f.write_all(&bytes).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("flush", e))?;
            drop(f);
            fs::rename(&tmp, path).map_err(|e| io("rename the temporary file to", e))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        // Make the rename itself durable (best effort: not every platform opens directories).
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Reads and checks a file written by [`write`](Checkpoint::write).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] starting with `path:` when the file cannot be read, or as
    /// [`from_bytes`](Checkpoint::from_bytes).
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = fs::read(path)
            .map_err(|e| Error::invalid(format!("path: cannot read {}: {e}", path.display())))?;
        Self::from_bytes(&bytes)
    }
}

/// `<dir>/.<name>.<pid>.tmp`: in the target's directory, so the rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// The first key of the JSON objects `a` (here) and `b` (the checkpoint) whose values differ,
/// as `key: the checkpoint has B, here A`.
pub(crate) fn difference(here: &Value, file: &Value) -> Option<String> {
    match (here, file) {
        (Value::Object(h), Value::Object(f)) => {
            let mut keys: Vec<&String> = h.keys().chain(f.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let (a, b) = (
                    h.get(k).unwrap_or(&Value::Null),
                    f.get(k).unwrap_or(&Value::Null),
                );
                (a != b).then(|| format!("{k}: the checkpoint has {b}, this one has {a}"))
            })
        }
        _ => (here != file).then(|| format!("the checkpoint has {file}, this one has {here}")),
    }
}

impl Params {
    /// Saves the parameters (every element, and the buffer lengths) to a safetensors file,
    /// atomically: tensor `params.k` is buffer k; see [`crate::checkpoint`].
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] starting with `path:` when the file cannot be written; device
    /// errors.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        self.to_checkpoint()?.write(path)
    }

    /// The parameters as an in-memory [`Checkpoint`] (what [`save`](Params::save) writes).
    ///
    /// # Errors
    /// Device errors.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let data = self.to_vec()?;
        let mut tensors = Vec::with_capacity(self.buffer_lens().len());
        for (k, (&off, &len)) in self.offsets().iter().zip(self.buffer_lens()).enumerate() {
            tensors.push((
                format!("params.{k}"),
                data[off as usize..(off + len) as usize].to_vec(),
            ));
        }
        Ok(Checkpoint::new(
            "params",
            json!({ "buffer_lens": self.buffer_lens() }),
            tensors,
        ))
    }

    /// Loads parameters saved by [`save`](Params::save) into new buffers on `gpu`, bit for bit.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an unreadable, truncated or corrupted file, another
    /// format version or a checkpoint that is not of parameters; device errors.
    pub fn load(gpu: &Gpu, path: impl AsRef<Path>) -> Result<Params> {
        Self::from_checkpoint(gpu, &Checkpoint::read(path)?)
    }

    /// Parameters from an in-memory [`Checkpoint`] of parameters.
    ///
    /// # Errors
    /// As [`load`](Params::load).
    pub fn from_checkpoint(gpu: &Gpu, ck: &Checkpoint) -> Result<Params> {
        ck.check_kind("params")?;
        let lens: Vec<u64> = ck
            .meta
            .get("buffer_lens")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| corrupt("no `buffer_lens`"))?;
        let mut slices = Vec::with_capacity(lens.len());
        for (k, &len) in lens.iter().enumerate() {
            let t = ck.tensor(&format!("params.{k}"))?;
            if t.len() as u64 != len {
                return Err(corrupt(format!(
                    "tensor `params.{k}` has {} elements, buffer_lens says {len}",
                    t.len()
                )));
            }
            slices.push(t);
        }
        if ck.tensors.len() != lens.len() {
            return Err(corrupt(format!(
                "{} tensors for {} buffers",
                ck.tensors.len(),
                lens.len()
            )));
        }
        Params::from_slices(gpu, &slices)
    }
}
