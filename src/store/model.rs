//! The typed model: what a model file's metadata means (architecture, classes, normalisation,
//! temperature, provenance), the checks that make a loaded model usable, and the network it
//! describes.

use super::container::{Container, Kind, NamedTensor, read, write_borrowed};
use super::params::{load_params, network_params};
use crate::kernels::reduce::first_non_finite;
use crate::net::graph::{BuildLimits, BuildOptions, Network};
use crate::tensor::fmt_shape;
use anyhow::{Result, anyhow, bail};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// Where a model came from. Every field defaults, so fields may be added without a format bump.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Provenance {
    /// The dataset it was trained on (a name or a path).
    pub dataset: String,
    pub epochs: u64,
    pub seed: u64,
    /// Final figures (`test_accuracy`, `test_loss`). JSON has no NaN: a non-finite value is
    /// written as `null` and read back as NaN.
    #[serde(deserialize_with = "nan_for_null")]
    pub metrics: BTreeMap<String, f64>,
    /// The version of cnn that wrote the file.
    pub cnn_version: String,
    /// When the file was written, in seconds since 1970-01-01 UTC.
    pub created_unix: u64,
    /// Anything else worth recording (command line, host).
    pub extra: BTreeMap<String, String>,
}

impl Provenance {
    /// Provenance stamped with this cnn's version and the current time.
    pub fn new(dataset: impl Into<String>, epochs: u64, seed: u64) -> Self {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Provenance {
            dataset: dataset.into(),
            epochs,
            seed,
            cnn_version: env!("CARGO_PKG_VERSION").to_string(),
            created_unix,
            ..Default::default()
        }
    }
}

fn nan_for_null<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let m = BTreeMap::<String, Option<f64>>::deserialize(d)?;
    Ok(m.into_iter()
        .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
        .collect())
}

/// A trained classifier: the architecture, the class names, the input normalisation and every
/// parameter and buffer by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    /// The architecture in canonical text form (`ArchSpec`'s `Display`).
    pub arch: String,
    /// `C×H×W` of one input image.
    pub input: [usize; 3],
    /// Class names, in the order of the logits.
    pub classes: Vec<String>,
    /// Per-channel normalisation applied to images scaled to [0, 1]: `(x − mean) / std`.
    pub norm_mean: Vec<f32>,
    pub norm_std: Vec<f32>,
    /// Softmax temperature (logits are divided by it); 1.0 until calibrated.
    pub temperature: f32,
    pub provenance: Provenance,
    /// Every parameter and buffer, in the network's visit order.
    pub params: Vec<NamedTensor>,
}

/// A model file's metadata as JSON, one field per `__metadata__` entry (see [`TEXT_KEYS`]).
/// `norm` has the shape of `data::Normalization`. The `f32` settings travel as `f64` (see
/// [`readable`]).
#[derive(Serialize, Deserialize)]
struct ModelMeta {
    arch: String,
    input: [usize; 3],
    classes: Vec<String>,
    norm: NormMeta,
    #[serde(default = "one")]
    temperature: f64,
    #[serde(default)]
    provenance: Provenance,
}

#[derive(Serialize, Deserialize)]
struct NormMeta {
    mean: Vec<f64>,
    std: Vec<f64>,
}

fn one() -> f64 {
    1.0
}

/// The fields of a model's metadata stored as plain text; every other field is stored as JSON
/// text (`input` `[1,28,28]`, `classes` `["0","1",...]`, ...), since safetensors metadata
/// values are strings.
pub const TEXT_KEYS: [&str; 1] = ["arch"];
/// Every field a model's metadata has (a checkpoint adds its own beside them).
const MODEL_KEYS: [&str; 6] = [
    "arch",
    "input",
    "classes",
    "norm",
    "temperature",
    "provenance",
];

/// The string metadata of a model's JSON fields: a text field's string as it is, any other
/// value as JSON text.
pub fn metadata_from_json(fields: &Value) -> BTreeMap<String, String> {
    let Value::Object(fields) = fields else {
        return BTreeMap::new();
    };
    fields
        .iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) if TEXT_KEYS.contains(&k.as_str()) => s.clone(),
                v => v.to_string(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// The inverse of [`metadata_from_json`] for a model's own fields; other keys (a checkpoint's)
/// are left out. Errors name the field.
fn json_from_metadata(meta: &BTreeMap<String, String>) -> Result<Value> {
    let mut fields = serde_json::Map::new();
    for k in MODEL_KEYS {
        let Some(text) = meta.get(k) else { continue };
        let v = if TEXT_KEYS.contains(&k) {
            Value::String(text.clone())
        } else {
            serde_json::from_str(text)
                .map_err(|e| anyhow!("model metadata: `{k}` is not JSON: {e}"))?
        };
        fields.insert(k.to_string(), v);
    }
    Ok(Value::Object(fields))
}

/// An `f64` that reads back as exactly `x` and prints as `x`'s shortest form (0.1307 rather
/// than 0.1307000070810318, the exact value of the nearest `f32`). The shortest decimal is
/// rounded to `f64` and then to `f32` on reading; should that double rounding ever miss `x`,
/// the exact widening is stored instead.
fn readable(x: f32) -> f64 {
    match x.to_string().parse::<f64>() {
        Ok(d) if d as f32 == x => d,
        _ => f64::from(x),
    }
}

impl Model {
    /// Captures a network's architecture and every parameter and buffer, by full name.
    /// `classes` must have one name per logit; [`Model::save`] checks it.
    pub fn from_network(
        net: &mut Network,
        classes: Vec<String>,
        norm_mean: Vec<f32>,
        norm_std: Vec<f32>,
        provenance: Provenance,
    ) -> Model {
        Model {
            arch: net.spec.to_string(),
            input: net.spec.input,
            classes,
            norm_mean,
            norm_std,
            temperature: 1.0,
            provenance,
            params: network_params(net),
        }
    }

    /// Builds the network the model describes and loads every parameter into it. Errors name
    /// the missing, extra or misshapen parameter (the caller adds the file).
    pub fn build_network(&self, opts: &BuildOptions) -> Result<Network> {
        let mut net = self.empty_network(opts)?;
        load_params(&mut net, self.params.clone())?;
        Ok(net)
    }

    /// The network of this model's architecture, its weights not yet allocated.
    fn empty_network(&self, opts: &BuildOptions) -> Result<Network> {
        let spec = crate::net::spec::parse(&self.arch).map_err(|e| anyhow!("architecture {e}"))?;
        if spec.input != self.input {
            bail!(
                "the architecture's input {} differs from the recorded input {}",
                fmt_shape(&spec.input),
                fmt_shape(&self.input)
            );
        }
        // The parameters must all be in the file, so the file's own values bound what building
        // may allocate: a damaged or hostile architecture cannot ask for much more than the
        // file holds. The floor of 2^20 (8 MB with gradients) lets a small mismatch through to
        // `load_params`, which names the parameter and both shapes.
        let stored: u64 = self.params.iter().map(|t| t.data.len() as u64).sum();
        let opts = BuildOptions {
            limits: BuildLimits {
                max_params: stored.max(1 << 20).min(opts.limits.max_params),
                ..opts.limits
            },
            ..*opts
        };
        Network::build(&spec, self.classes.len(), None, &opts)
            .map_err(|e| anyhow!("architecture: {e}"))
    }

    /// The metadata of this model's file, which a checkpoint embeds beside its own.
    pub fn meta(&self) -> BTreeMap<String, String> {
        let meta = ModelMeta {
            arch: self.arch.clone(),
            input: self.input,
            classes: self.classes.clone(),
            norm: NormMeta {
                mean: self.norm_mean.iter().map(|&x| readable(x)).collect(),
                std: self.norm_std.iter().map(|&x| readable(x)).collect(),
            },
            temperature: readable(self.temperature),
            provenance: self.provenance.clone(),
        };
        // Plain strings, numbers and string-keyed maps: serialising to a `Value` cannot fail.
        metadata_from_json(&serde_json::to_value(meta).unwrap_or(Value::Null))
    }

    /// The inverse of [`Model::meta`] plus the parameters: checks everything listed on
    /// [`Model::validate`]. Errors do not name a file; the caller adds it.
    pub fn from_parts(meta: BTreeMap<String, String>, params: Vec<NamedTensor>) -> Result<Model> {
        let model = Model::from_parts_unchecked(meta, params)?;
        model.validate()?;
        Ok(model)
    }

    /// [`Model::from_parts`] without [`Model::validate`]'s checks (the caller makes them).
    fn from_parts_unchecked(
        meta: BTreeMap<String, String>,
        params: Vec<NamedTensor>,
    ) -> Result<Model> {
        let meta: ModelMeta = serde_json::from_value(json_from_metadata(&meta)?)
            .map_err(|e| anyhow!("model metadata: {e}"))?;
        let model = Model {
            arch: meta.arch,
            input: meta.input,
            classes: meta.classes,
            norm_mean: meta.norm.mean.iter().map(|&x| x as f32).collect(),
            norm_std: meta.norm.std.iter().map(|&x| x as f32).collect(),
            temperature: meta.temperature as f32,
            provenance: meta.provenance,
            params,
        };
        Ok(model)
    }

    /// This model as a [`Container`] of kind [`Kind::Model`] (copies the parameters).
    pub fn to_container(&self) -> Container {
        Container {
            kind: Kind::Model,
            meta: self.meta(),
            tensors: self.params.clone(),
        }
    }

    /// A model from a container's `meta` and tensors; see [`Model::from_parts`].
    pub fn from_container(container: Container) -> Result<Model> {
        Model::from_parts(container.meta, container.tensors)
    }

    /// Checks that the model can be used: at least 2 distinct, non-empty class names; one
    /// normalisation mean and std per input channel, finite, std > 0; temperature positive and
    /// finite; every parameter finite; the architecture parses and builds for these classes; and
    /// the parameters match it exactly by name and shape.
    pub fn validate(&self) -> Result<()> {
        self.check_fields()?;
        self.build_network(&BuildOptions::default()).map(|_| ())
    }

    /// Every check of [`Model::validate`] but building the network.
    fn check_fields(&self) -> Result<()> {
        if self.classes.len() < 2 {
            bail!(
                "classes: a classifier needs at least 2 classes, got {}",
                self.classes.len()
            );
        }
        let mut seen = HashSet::new();
        for (i, c) in self.classes.iter().enumerate() {
            if c.is_empty() {
                bail!("classes: class {i} has an empty name");
            }
            if !seen.insert(c.as_str()) {
                bail!("classes: `{}` appears twice", c.escape_debug());
            }
        }
        let channels = self.input[0];
        for (what, v) in [("mean", &self.norm_mean), ("std", &self.norm_std)] {
            if v.len() != channels {
                bail!(
                    "normalisation: {what} has {} values but the input has {channels} channels",
                    v.len()
                );
            }
            if let Some((i, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                bail!("normalisation: {what}[{i}] is {x}, not a finite number");
            }
        }
        if let Some((i, s)) = self.norm_std.iter().enumerate().find(|(_, s)| **s <= 0.0) {
            bail!("normalisation: std[{i}] is {s}; every std must be positive");
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            bail!(
                "temperature must be positive and finite, got {}",
                self.temperature
            );
        }
        for t in &self.params {
            if let Some(i) = first_non_finite(&t.data) {
                bail!(
                    "parameter `{}` holds {} at index {i}; every weight must be finite",
                    t.name.escape_debug(),
                    t.data[i]
                );
            }
        }
        Ok(())
    }

    /// Saves the model atomically after [`Model::validate`], so that a file that cannot be
    /// loaded is never written.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.validate()
            .map_err(|e| anyhow!("{}: cannot save the model: {e:#}", path.display()))?;
        let params: Vec<&NamedTensor> = self.params.iter().collect();
        write_borrowed(path, Kind::Model, &self.meta(), &params)
    }

    /// Loads and validates a model file; every error names the file.
    pub fn load(path: &Path) -> Result<Model> {
        let container = read(path, Kind::Model)?;
        Model::from_container(container).map_err(|e| anyhow!("{}: {e:#}", path.display()))
    }

    /// The input normalisation that training applied, for eval and predict to apply again.
    pub fn normalization(&self) -> crate::data::Normalization {
        crate::data::Normalization {
            mean: self.norm_mean.clone(),
            std: self.norm_std.clone(),
        }
    }

    /// Refuses a dataset whose classes are not the model's, in the same order (`path` is the
    /// model file, for the message).
    pub fn check_classes(&self, path: &Path, dataset_classes: &[String]) -> Result<()> {
        if dataset_classes != self.classes.as_slice() {
            bail!(
                "{}: the model's classes ({}) differ from the dataset's ({})",
                path.display(),
                self.classes.join(", "),
                dataset_classes.join(", ")
            );
        }
        Ok(())
    }

    /// [`Model::load`] and [`Model::build_network`] in one step, building the network once
    /// (building it is also the last of the load checks). The weights move into the network:
    /// the returned model's `params` is empty.
    pub fn load_with_network(path: &Path, opts: &BuildOptions) -> Result<(Model, Network)> {
        let container = read(path, Kind::Model)?;
        Model::with_network(container, &path.display().to_string(), opts)
    }

    /// [`Model::load_with_network`] on the bytes of a model file built into the binary (see
    /// [`super::container::read_embedded`]), `name` standing for the file in errors.
    pub fn embedded_with_network(
        bytes: &'static [u8],
        name: &str,
        opts: &BuildOptions,
    ) -> Result<(Model, Network)> {
        let container = super::container::read_embedded(bytes, name, Kind::Model)?;
        Model::with_network(container, name, opts)
    }

    fn with_network(
        container: Container,
        name: &str,
        opts: &BuildOptions,
    ) -> Result<(Model, Network)> {
        let named = |e: anyhow::Error| anyhow!("{name}: {e:#}");
        let mut model =
            Model::from_parts_unchecked(container.meta, container.tensors).map_err(named)?;
        model.check_fields().map_err(named)?;
        let mut net = model.empty_network(opts).map_err(named)?;
        load_params(&mut net, std::mem::take(&mut model.params)).map_err(named)?;
        Ok((model, net))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_keys_are_every_field_of_the_metadata() {
        let model = Model {
            arch: "input 1 1 2\nflatten\ndense classes\n".into(),
            input: [1, 1, 2],
            classes: vec!["a".into(), "b".into()],
            norm_mean: vec![0.5],
            norm_std: vec![0.25],
            temperature: 1.5,
            provenance: Provenance::default(),
            params: vec![],
        };
        let meta = model.meta();
        assert_eq!(
            meta.keys().collect::<HashSet<_>>(),
            MODEL_KEYS
                .iter()
                .map(|k| k.to_string())
                .collect::<HashSet<_>>()
                .iter()
                .collect()
        );
        assert_eq!(meta["arch"], model.arch);
        assert_eq!(meta["temperature"], "1.5");
        assert_eq!(meta["norm"], r#"{"mean":[0.5],"std":[0.25]}"#);
        let back = Model::from_parts_unchecked(meta, vec![]).unwrap();
        assert_eq!(back, model);
    }

    #[test]
    fn readable_values_read_back_exactly() {
        for x in [
            0.1307f32,
            0.3081,
            1.0,
            1e-30,
            3.4e38,
            f32::MIN_POSITIVE,
            1e-45,
            0.1 + 0.2,
        ] {
            let d = readable(x);
            assert_eq!((d as f32).to_bits(), x.to_bits(), "{x}");
        }
        assert_eq!(serde_json::to_string(&readable(0.1307)).unwrap(), "0.1307");
        // Exhaustively over a band of mantissas: every one round-trips.
        for bits in (0x3e00_0000u32..0x3e10_0000).step_by(7) {
            let x = f32::from_bits(bits);
            assert_eq!((readable(x) as f32).to_bits(), bits);
        }
    }
}
