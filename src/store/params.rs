//! A network's parameters as named tensors and back: the glue between the model file and the
//! network, through the one path that names every parameter ([`Network::visit_params`]).

use super::container::{CHUNK_VALUES, NamedTensor, hex};
use crate::net::graph::Network;
use crate::tensor::fmt_shape;
use anyhow::{Result, bail};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Every parameter and buffer of `net`, by full name, in visit order.
pub fn network_params(net: &mut Network) -> Vec<NamedTensor> {
    let mut params = Vec::new();
    net.visit_params(&mut |name, p| {
        params.push(NamedTensor {
            name: name.to_string(),
            shape: p.shape.clone(),
            data: p.value.clone(),
        })
    });
    params
}

/// Moves `params` into `net` by name. Every parameter and buffer of the network must be
/// present with the same shape, and no other may be: errors name the parameter and the shapes.
pub fn load_params(net: &mut Network, params: Vec<NamedTensor>) -> Result<()> {
    // Name → (position in the file, tensor); the position makes the "not in the architecture"
    // report name the first such tensor, whatever the map's order.
    let mut by_name: HashMap<String, (usize, NamedTensor)> = HashMap::with_capacity(params.len());
    for (i, t) in params.into_iter().enumerate() {
        if by_name.contains_key(&t.name) {
            bail!("parameter `{}` is listed twice", t.name);
        }
        by_name.insert(t.name.clone(), (i, t));
    }
    let mut problem = None;
    net.visit_params(&mut |name, p| {
        if problem.is_some() {
            return;
        }
        match by_name.remove(name) {
            None => {
                problem = Some(format!(
                    "parameter `{name}` ({}) is missing",
                    fmt_shape(&p.shape)
                ))
            }
            Some((_, t)) if t.shape != p.shape || t.data.len() as u128 != p.len() => {
                problem = Some(format!(
                    "parameter `{name}` has shape {} with {} values, but the architecture needs {}",
                    fmt_shape(&t.shape),
                    t.data.len(),
                    fmt_shape(&p.shape)
                ))
            }
            // Moved (or, from a built-in model, borrowed), not copied: a prediction touches each
            // weight page once, not twice.
            Some((_, t)) => p.value = t.data,
        }
    });
    if let Some(problem) = problem {
        bail!(problem);
    }
    if let Some((_, extra)) = by_name.values().min_by_key(|(i, _)| *i) {
        bail!(
            "parameter `{}` ({}) is not in the architecture",
            extra.name.escape_debug(),
            fmt_shape(&extra.shape)
        );
    }
    Ok(())
}

/// A 64-hex-digit SHA-256 of every parameter and buffer of `net` in visit order: for each,
/// the name's length (u64) and bytes, the rank (u64) and each dimension (u64), then the values
/// as f32; all little-endian. Two networks with equal digests hold bit-identical weights.
pub fn weights_sha256(net: &mut Network) -> String {
    let mut h = Sha256::new();
    let mut bytes = Vec::with_capacity(CHUNK_VALUES * 4);
    net.visit_params(&mut |name, p| {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((p.shape.len() as u64).to_le_bytes());
        for &d in &p.shape {
            h.update((d as u64).to_le_bytes());
        }
        for chunk in p.value.chunks(CHUNK_VALUES) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            h.update(&bytes);
        }
    });
    hex(&h.finalize())
}
