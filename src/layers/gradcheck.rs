//! Finite-difference gradient checks shared by the layer tests.
//!
//! The scalar under test is `L = Σ y ⊙ R` for a fixed random `R`, so `dL/dy = R` and the
//! analytic gradients are what `backward(R)` returns (input) and accumulates (parameters).
//! Numeric gradients are central differences `(L(v+ε) − L(v−ε)) / 2ε`, with `L` summed in f64.
//! Tolerance: the layers compute in f32, whose rounding (≈1e-7 relative, summed over hundreds of
//! terms, divided by 2ε = 2e-2) gives errors near 1e-4; curvature adds O(ε²). We accept
//! `|analytic − numeric| ≤ 2e-3 · max(1, |analytic|, |numeric|)`, which still fails loudly on a
//! wrong stride, padding, transposition or scale factor (those give errors of order 1).

use super::{Layer, Mode, ParamKind};
use crate::rng::Rng;
use crate::tensor::{Tensor, data};

pub const EPS: f32 = 1e-2;
const TOL: f64 = 2e-3;
const MAX_PROBES: usize = 80;

/// `layer` with its parameters drawn from `seed`.
pub fn initialised<L: Layer>(mut layer: L, seed: u64) -> L {
    super::initialise(&mut layer, &mut Rng::new(seed));
    layer
}

/// A tensor of N(0,1) values from a fixed seed.
pub fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let mut r = Rng::new(seed);
    Tensor::from_shape_fn(shape, |_| r.normal())
}

/// Distinct values at least 0.05 apart (5·[`EPS`]), shuffled from a fixed seed, so that no ±ε
/// probe changes which input wins a pooling window.
pub fn no_ties(shape: &[usize]) -> Tensor {
    let len: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..len)
        .map(|i| i as f32 * 0.05 - len as f32 * 0.025)
        .collect();
    Rng::new(9).shuffle(&mut v);
    Tensor::from_shape_vec(shape, v).unwrap()
}

fn loss(layer: &mut dyn Layer, x: &Tensor, r: &Tensor, mode: Mode) -> f64 {
    let y = layer.forward(x, mode);
    data(y)
        .iter()
        .zip(data(r))
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

/// Probe indices: all of them when few, else a seeded sample.
fn probes(len: usize, seed: u64) -> Vec<usize> {
    if len <= MAX_PROBES {
        return (0..len).collect();
    }
    let mut r = Rng::new(seed);
    (0..MAX_PROBES).map(|_| r.below(len)).collect()
}

fn assert_close(what: &str, i: usize, analytic: f64, numeric: f64) {
    let scale = 1f64.max(analytic.abs()).max(numeric.abs());
    assert!(
        (analytic - numeric).abs() <= TOL * scale,
        "{what}[{i}]: analytic {analytic:.6} vs numeric {numeric:.6}"
    );
}

/// Checks input and parameter gradients of `layer` on a seeded input of shape `x_shape`.
pub fn check_layer(layer: &mut dyn Layer, x_shape: &[usize], mode: Mode) {
    check_layer_on(layer, &seeded(x_shape, 11), mode);
}

/// As [`check_layer`] with a given input (e.g. one without near-ties for max pooling).
pub fn check_layer_on(layer: &mut dyn Layer, x: &Tensor, mode: Mode) {
    let y_shape = layer.forward(x, mode).shape().to_vec();
    let r = seeded(&y_shape, 12);
    layer.visit_params(&mut |p| {
        if p.kind == ParamKind::Trainable {
            p.grad.fill(0.0)
        }
    });
    let dx = layer.backward(x, &r).clone();
    assert_eq!(dx.shape(), x.shape(), "input gradient shape");

    let mut xp = x.clone();
    for i in probes(x.len(), 1) {
        let v = data(&xp)[i];
        xp.as_slice_mut().unwrap()[i] = v + EPS;
        let up = loss(layer, &xp, &r, mode);
        xp.as_slice_mut().unwrap()[i] = v - EPS;
        let down = loss(layer, &xp, &r, mode);
        xp.as_slice_mut().unwrap()[i] = v;
        assert_close(
            "dx",
            i,
            data(&dx)[i] as f64,
            (up - down) / (2.0 * EPS as f64),
        );
    }

    let mut grads = Vec::new();
    layer.visit_params(&mut |p| grads.push((p.name, p.kind, p.grad.clone())));
    for (pi, (name, kind, grad)) in grads.into_iter().enumerate() {
        if kind != ParamKind::Trainable {
            continue;
        }
        for i in probes(grad.len(), 2 + pi as u64) {
            let nudge = |layer: &mut dyn Layer, delta: f32| {
                let mut k = 0;
                layer.visit_params(&mut |p| {
                    if k == pi {
                        p.value.to_mut()[i] += delta;
                    }
                    k += 1;
                });
            };
            nudge(layer, EPS);
            let up = loss(layer, x, &r, mode);
            nudge(layer, -2.0 * EPS);
            let down = loss(layer, x, &r, mode);
            nudge(layer, EPS);
            assert_close(
                name,
                i,
                data(&grad)[i] as f64,
                (up - down) / (2.0 * EPS as f64),
            );
        }
    }
}
