//! Batch norm's passes over one run of a channel (the `plane` values of one image), written
//! once over `simd`'s vectors, for a following ReLU or no activation: the moments of the
//! statistics pass, the normalised output, and backward's two passes (the sums, then `dx`).
//!
//! The layer's maps are larger than the caches, yet at the baseline target's 128 bits, without
//! FMA, these loops' arithmetic cost time of its own. Every path gives the plain loops' bits
//! (`reference` in the tests): the same operations in the same order, no fused multiply-add,
//! and the sums kept in `reduce`'s 16 lanes (one, two or four vectors) and combined as it does.
//!
//! May use: `simd`, `isa`, `reduce`.

use super::isa::{self, Isa};
use super::reduce;
use super::simd::{Kernel, Vector, run_on};

/// The normalising map of one channel, `z = g·((x − mean)·inv_std) + b`, and whether a ReLU
/// follows it. The kernels take it by reference, built once per channel: copied into every
/// run's call, its fields' fresh stores met the callee's wider loads of the copy, which cannot
/// be forwarded, and stalled each call.
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    pub g: f32,
    pub b: f32,
    pub mean: f32,
    pub inv_std: f32,
    pub relu: bool,
}

/// (Σ (x − c), Σ (x − c)²) over `x`, in [`reduce::sum_and_dot`]'s order.
pub fn moments(x: &[f32], c: f32) -> (f32, f32) {
    moments_on(isa::active(), x, c)
}

/// `out = act(z(x))`. Shapes: `x` and `out` of equal length.
pub fn normalise(a: &Affine, x: &[f32], out: &mut [f32]) {
    normalise_on(isa::active(), a, x, out)
}

/// (Σ dz, Σ dz·x̂) with `x̂ = (x − mean)·inv_std` and `dz` the gradient reaching `z` (`dy`, or
/// through the ReLU `dy` where `z > 0`), in [`reduce::sum_and_dot`]'s order. Shapes: `dy` and
/// `x` of equal length.
pub fn grad_sums(a: &Affine, dy: &[f32], x: &[f32]) -> (f32, f32) {
    grad_sums_on(isa::active(), a, dy, x)
}

/// `dx = k·dz + shift + slope·x̂`, with `dz` and `x̂` as in [`grad_sums`] and `(k, shift,
/// slope)` = `line`. Shapes: `dy`, `x` and `dx` of equal length.
pub fn grad_apply(a: &Affine, line: &(f32, f32, f32), dy: &[f32], x: &[f32], dx: &mut [f32]) {
    grad_apply_on(isa::active(), a, line, Some(dy), x, dx)
}

/// [`grad_apply`] with `dy` read from `dx` itself, which it overwrites.
pub fn grad_apply_in_place(a: &Affine, line: &(f32, f32, f32), x: &[f32], dy_dx: &mut [f32]) {
    grad_apply_on(isa::active(), a, line, None, x, dy_dx)
}

/// [`moments`] on the path `isa`.
pub fn moments_on(isa: Isa, x: &[f32], c: f32) -> (f32, f32) {
    run_on(isa, Moments { x, c })
}

/// [`normalise`] on the path `isa`.
pub fn normalise_on(isa: Isa, a: &Affine, x: &[f32], out: &mut [f32]) {
    assert_eq!(x.len(), out.len());
    run_on(isa, Normalise { a, x, out })
}

/// [`grad_sums`] on the path `isa`.
pub fn grad_sums_on(isa: Isa, a: &Affine, dy: &[f32], x: &[f32]) -> (f32, f32) {
    assert_eq!(dy.len(), x.len());
    run_on(isa, GradSums { a, dy, x })
}

/// [`grad_apply`] on the path `isa`; without `dy`, [`grad_apply_in_place`].
pub fn grad_apply_on(
    isa: Isa,
    a: &Affine,
    line: &(f32, f32, f32),
    dy: Option<&[f32]>,
    x: &[f32],
    dx: &mut [f32],
) {
    assert!(dy.is_none_or(|dy| dy.len() == x.len()) && x.len() == dx.len());
    run_on(isa, GradApply { a, line, dy, x, dx })
}

impl Affine {
    /// `x̂` of one value, as the vector code computes it.
    #[inline(always)]
    fn xhat(self, v: f32) -> f32 {
        (v - self.mean) * self.inv_std
    }

    /// `dz` of one value from its `dy` and `x̂`.
    #[inline(always)]
    fn dz(self, d: f32, xh: f32) -> f32 {
        if !self.relu || self.g * xh + self.b > 0.0 {
            d
        } else {
            0.0
        }
    }
}

/// The affine map's constants splatted into vectors.
#[derive(Clone, Copy)]
struct Splat<V> {
    g: V,
    b: V,
    mean: V,
    inv_std: V,
    relu: bool,
}

impl<V: Vector> Splat<V> {
    /// # Safety
    /// `V`'s instruction set is enabled (`simd`'s module doc); likewise below.
    #[inline(always)]
    unsafe fn new(a: Affine) -> Self {
        unsafe {
            Splat {
                g: V::splat(a.g),
                b: V::splat(a.b),
                mean: V::splat(a.mean),
                inv_std: V::splat(a.inv_std),
                relu: a.relu,
            }
        }
    }

    #[inline(always)]
    unsafe fn xhat(self, v: V) -> V {
        unsafe { v.sub(self.mean).mul(self.inv_std) }
    }

    #[inline(always)]
    unsafe fn z(self, xh: V) -> V {
        unsafe { self.g.mul(xh).add(self.b) }
    }

    /// [`Affine::dz`] of a vector.
    #[inline(always)]
    unsafe fn dz(self, d: V, xh: V) -> V {
        if self.relu {
            unsafe { self.z(xh).where_positive(d) }
        } else {
            d
        }
    }
}

/// Runs `(u, v) = f(a[i], b[i])` over 16-value blocks of `a` and `b` and returns (Σ u, Σ u·v)
/// exactly as [`reduce::sum_and_dot_map`] does with the scalar `f1`.
///
/// # Safety
/// `V`'s instruction set is enabled; `a` and `b` have equal lengths.
#[inline(always)]
unsafe fn sum_and_dot<V: Vector>(
    a: &[f32],
    b: &[f32],
    f: impl Fn(V, V) -> (V, V),
    f1: impl Fn(f32, f32) -> (f32, f32),
) -> (f32, f32) {
    const L: usize = reduce::LANES;
    let per = L / V::LANES;
    let blocks = a.len() / L;
    let (mut tail_sum, mut tail_dot) = (0.0f32, 0.0f32);
    for (&x, &y) in a[blocks * L..].iter().zip(&b[blocks * L..]) {
        let (u, v) = f1(x, y);
        tail_sum += u;
        tail_dot += u * v;
    }
    // SAFETY: every load reads 16 values of a block inside both slices.
    unsafe {
        let full = V::mask(V::LANES);
        let (mut s, mut d) = ([V::zero(); 4], [V::zero(); 4]);
        for blk in 0..blocks {
            for j in 0..per {
                let at = blk * L + j * V::LANES;
                let x = V::load(full, a.as_ptr().add(at));
                let y = V::load(full, b.as_ptr().add(at));
                let (u, v) = f(x, y);
                s[j] = s[j].add(u);
                d[j] = d[j].add(u.mul(v));
            }
        }
        let (mut ls, mut ld) = ([0.0f32; L], [0.0f32; L]);
        for j in 0..per {
            s[j].store(full, ls.as_mut_ptr().add(j * V::LANES));
            d[j].store(full, ld.as_mut_ptr().add(j * V::LANES));
        }
        (reduce::combine(ls, tail_sum), reduce::combine(ld, tail_dot))
    }
}

/// Runs `$body` for each vector of `$len` values with `$m` its mask and `$i` its start: whole
/// vectors with a mask the compiler sees is full, so that their loads and stores are plain ones
/// (masked stores are slow on AMD's cores), then the partial last one. (A macro: a closure
/// would be compiled apart, without the caller's instruction set.)
macro_rules! vectors {
    ($v:ty, $len:expr, |$m:ident, $i:ident| $body:block) => {{
        let len = $len;
        let whole = len / <$v>::LANES * <$v>::LANES;
        for $i in (0..whole).step_by(<$v>::LANES) {
            let $m = <$v>::mask(<$v>::LANES);
            $body
        }
        if whole < len {
            let ($m, $i) = (<$v>::mask(len - whole), whole);
            $body
        }
    }};
}

struct Moments<'a> {
    x: &'a [f32],
    c: f32,
}

impl Kernel for Moments<'_> {
    type Out = (f32, f32);
    #[inline(always)]
    unsafe fn run<V: Vector>(self) -> (f32, f32) {
        let c = self.c;
        unsafe {
            let cv = V::splat(c);
            sum_and_dot::<V>(
                self.x,
                self.x,
                |v, _| {
                    let dev = v.sub(cv);
                    (dev, dev)
                },
                |v, _| (v - c, v - c),
            )
        }
    }
}

struct Normalise<'a> {
    a: &'a Affine,
    x: &'a [f32],
    out: &'a mut [f32],
}

impl Kernel for Normalise<'_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<V: Vector>(self) {
        let len = self.x.len();
        unsafe {
            let sp = Splat::<V>::new(*self.a);
            let zero = V::zero();
            // SAFETY: the mask keeps lanes inside both slices (of equal length).
            vectors!(V, len, |k, i| {
                let z = sp.z(sp.xhat(V::load(k, self.x.as_ptr().add(i))));
                let y = if self.a.relu { z.max(zero) } else { z };
                y.store(k, self.out.as_mut_ptr().add(i));
            });
        }
    }
}

struct GradSums<'a> {
    a: &'a Affine,
    dy: &'a [f32],
    x: &'a [f32],
}

impl Kernel for GradSums<'_> {
    type Out = (f32, f32);
    #[inline(always)]
    unsafe fn run<V: Vector>(self) -> (f32, f32) {
        let a = *self.a;
        unsafe {
            let sp = Splat::<V>::new(a);
            sum_and_dot::<V>(
                self.dy,
                self.x,
                |d, v| {
                    let xh = sp.xhat(v);
                    (sp.dz(d, xh), xh)
                },
                |d, v| {
                    let xh = a.xhat(v);
                    (a.dz(d, xh), xh)
                },
            )
        }
    }
}

struct GradApply<'a> {
    a: &'a Affine,
    line: &'a (f32, f32, f32),
    /// `None`: read from `dx`.
    dy: Option<&'a [f32]>,
    x: &'a [f32],
    dx: &'a mut [f32],
}

impl Kernel for GradApply<'_> {
    type Out = ();
    #[inline(always)]
    unsafe fn run<V: Vector>(self) {
        let len = self.x.len();
        unsafe {
            let sp = Splat::<V>::new(*self.a);
            let (k, shift, slope) = *self.line;
            let (k, shift, slope) = (V::splat(k), V::splat(shift), V::splat(slope));
            // In place, `dy` is `dx`'s own pointer: each vector is read before the same lanes
            // are written.
            let dx = self.dx.as_mut_ptr();
            let dy = self.dy.map_or(dx.cast_const(), |dy| dy.as_ptr());
            // SAFETY: the mask keeps lanes inside the three slices (of equal length).
            vectors!(V, len, |m, i| {
                let d = V::load(m, dy.add(i));
                let xh = sp.xhat(V::load(m, self.x.as_ptr().add(i)));
                let out = k.mul(sp.dz(d, xh)).add(shift).add(slope.mul(xh));
                out.store(m, dx.add(i));
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::Lanes;

    /// The plain loops every path must reproduce bit for bit.
    mod reference {
        use super::super::Affine;
        use crate::kernels::reduce;

        pub fn moments(x: &[f32], c: f32) -> (f32, f32) {
            reduce::sum_and_dot_map(x, x, |v, _| (v - c, v - c))
        }

        pub fn normalise(a: &Affine, x: &[f32], out: &mut [f32]) {
            for (y, &v) in out.iter_mut().zip(x) {
                let z = a.g * ((v - a.mean) * a.inv_std) + a.b;
                *y = if a.relu { z.max(0.0) } else { z };
            }
        }

        pub fn grad_sums(a: &Affine, dy: &[f32], x: &[f32]) -> (f32, f32) {
            reduce::sum_and_dot_map(dy, x, |d, v| {
                let xh = (v - a.mean) * a.inv_std;
                let z = a.g * xh + a.b;
                (if !a.relu || z > 0.0 { d } else { 0.0 }, xh)
            })
        }

        pub fn grad_apply(
            a: &Affine,
            &(k, shift, slope): &(f32, f32, f32),
            dy: &[f32],
            x: &[f32],
            dx: &mut [f32],
        ) {
            for ((dx, &d), &v) in dx.iter_mut().zip(dy).zip(x) {
                let xh = (v - a.mean) * a.inv_std;
                let z = a.g * xh + a.b;
                let dz = if !a.relu || z > 0.0 { d } else { 0.0 };
                *dx = k * dz + shift + slope * xh;
            }
        }
    }

    fn seeded(len: usize, seed: u64, scale: f32, offset: f32) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..len)
            .map(|_| (rng.uniform() * 2.0 - 1.0) * scale + offset)
            .collect()
    }

    /// Every path the CPU has, and 16 plain lanes (AVX-512's width on any CPU), against the
    /// plain loops on lengths of none, one, part of a block, a block and one past it, odd
    /// lengths and a 32×32 plane with a tail; values around a mean far from zero, with exact
    /// zeros of `z` (where the ReLU's gradient switches) and a NaN.
    #[test]
    fn every_path_gives_the_plain_loops_bits() {
        for &len in &[0, 1, 5, 15, 16, 17, 33, 64, 1024 + 7] {
            let mut x = seeded(len, len as u64 + 1, 3.0, 10.0);
            let dy = seeded(len, len as u64 + 100, 1.0, 0.0);
            // z = 0 exactly where x = mean (g·0 + b with b = 0 below), and a NaN input.
            if len > 3 {
                x[2] = 10.0;
                x[len - 1] = f32::NAN;
            }
            for relu in [false, true] {
                let a = &Affine {
                    g: 1.3,
                    b: if len % 2 == 0 { 0.0 } else { -0.2 },
                    mean: 10.0,
                    inv_std: 0.37,
                    relu,
                };
                let line = &(0.7, -0.01, 0.003);
                let same =
                    |p: &[f32], q: &[f32]| p.iter().zip(q).all(|(p, q)| p.to_bits() == q.to_bits());
                let pair = |p: (f32, f32), q: (f32, f32)| same(&[p.0, p.1], &[q.0, q.1]);
                let mut want_y = vec![0.0; len];
                reference::normalise(a, &x, &mut want_y);
                let mut want_dx = vec![0.0; len];
                reference::grad_apply(a, line, &dy, &x, &mut want_dx);
                let want_m = reference::moments(&x, 9.5);
                let want_s = reference::grad_sums(a, &dy, &x);

                let check = |name: &str, m, y: &[f32], s, dx: &[f32]| {
                    assert!(pair(m, want_m), "{name} len {len}: moments");
                    assert!(same(y, &want_y), "{name} len {len} relu {relu}: normalise");
                    assert!(pair(s, want_s), "{name} len {len} relu {relu}: sums");
                    assert!(same(dx, &want_dx), "{name} len {len} relu {relu}: dx");
                };
                for isa in Isa::available() {
                    let (mut y, mut dx) = (vec![0.0; len], vec![0.0; len]);
                    normalise_on(isa, a, &x, &mut y);
                    grad_apply_on(isa, a, line, Some(&dy), &x, &mut dx);
                    let (m, s) = (moments_on(isa, &x, 9.5), grad_sums_on(isa, a, &dy, &x));
                    check(isa.name(), m, &y, s, &dx);
                    let mut in_place = dy.clone();
                    grad_apply_on(isa, a, line, None, &x, &mut in_place);
                    assert!(
                        same(&in_place, &want_dx),
                        "{} len {len}: in place",
                        isa.name()
                    );
                }
                // SAFETY: plain lanes need no instruction set.
                unsafe {
                    let (mut y, mut dx) = (vec![0.0; len], vec![0.0; len]);
                    Normalise {
                        a,
                        x: &x,
                        out: &mut y,
                    }
                    .run::<Lanes<16>>();
                    let g = GradApply {
                        a,
                        line,
                        dy: Some(&dy),
                        x: &x,
                        dx: &mut dx,
                    };
                    g.run::<Lanes<16>>();
                    let m = Moments { x: &x, c: 9.5 }.run::<Lanes<16>>();
                    let s = GradSums { a, dy: &dy, x: &x }.run::<Lanes<16>>();
                    check("16 plain lanes", m, &y, s, &dx);
                }
            }
        }
    }

    /// A hand-worked case: x = [1, 2, 3, 6], mean 3, inv_std 0.5, g 2, b −1, so x̂ = [−1,
    /// −0.5, 0, 1.5] and z = [−3, −2, −1, 2]; with the ReLU only the last passes.
    #[test]
    fn a_hand_worked_channel() {
        let x = [1.0, 2.0, 3.0, 6.0];
        let dy = [1.0, 1.0, 1.0, 4.0];
        let a = &Affine {
            g: 2.0,
            b: -1.0,
            mean: 3.0,
            inv_std: 0.5,
            relu: true,
        };
        let mut y = [9.0; 4];
        normalise(a, &x, &mut y);
        assert_eq!(y, [0.0, 0.0, 0.0, 2.0]);
        assert_eq!(moments(&x, 3.0), (0.0, 4.0 + 1.0 + 0.0 + 9.0));
        // Only the last value's dz (4) survives: Σdz = 4, Σdz·x̂ = 6.
        assert_eq!(grad_sums(a, &dy, &x), (4.0, 6.0));
        let mut dx = [9.0; 4];
        grad_apply(a, &(0.5, 1.0, 2.0), &dy, &x, &mut dx);
        assert_eq!(dx, [1.0 - 2.0, 1.0 - 1.0, 1.0, 2.0 + 1.0 + 3.0]);
        let linear = &Affine { relu: false, ..*a };
        normalise(linear, &x, &mut y);
        assert_eq!(y, [-3.0, -2.0, -1.0, 2.0]);
        assert_eq!(grad_sums(linear, &dy, &x), (7.0, -1.5 + 6.0));
    }
}
