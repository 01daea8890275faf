//! Winograd's transforms and products against the direct convolution and the definition of
//! the weight gradient, on awkward sizes.

use super::*;
use crate::kernels::isa::Isa;
use crate::kernels::reference::{self, Window};
use crate::kernels::simd::Lanes;

fn seeded(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = crate::rng::Rng::new(seed);
    (0..len).map(|_| rng.uniform() * 2.0 - 1.0).collect()
}

/// (images, C, H, W, O, pad): one image and several, odd and even and non-square outputs,
/// padding 0, 1 and 2, widths past one 16-lane run, exactly one run (4×14 → 2×8 tiles,
/// counting the unused column), odd widths with every padding, 1 channel, and channel counts
/// past the products' register blocks (17 in, 19 out), rows wider than the input split's
/// staged segment (300).
const CASES: &[(usize, usize, usize, usize, usize, usize)] = &[
    (1, 1, 3, 3, 1, 0),
    (1, 2, 5, 7, 3, 0),
    (2, 3, 6, 9, 4, 1),
    (3, 4, 7, 4, 5, 1),
    (1, 2, 4, 37, 2, 1),
    (2, 5, 9, 8, 3, 2),
    (1, 3, 35, 34, 2, 1),
    (1, 1, 1, 1, 2, 1),
    (2, 2, 4, 14, 3, 1),
    (1, 2, 5, 7, 2, 2),
    (2, 17, 8, 6, 19, 1),
    (1, 2, 3, 300, 2, 1),
];

/// Both tiles, F(2×2) first.
const TILES: [Tile; 2] = [Tile::F2, Tile::F4];

/// Against the definition, on the awkward sizes of `CASES`, with both tiles. F(4×4)'s kernel
/// transform divides by 6 and 24 and its data transforms scale by up to 8 before cancelling:
/// its worst error here is 20 times F(2×2)'s (5.4e-7 against 2.6e-8 of the bound's scale),
/// and each bound is about 7 times the worst seen.
#[test]
fn winograd_matches_the_direct_convolution() {
    for (tile, &(g, c, h, w, o, pad)) in TILES
        .iter()
        .flat_map(|&t| CASES.iter().map(move |k| (t, k)))
    {
        let plan = Winograd::with_tile((c, h, w), o, pad, tile).unwrap();
        let tol = match tile {
            Tile::F2 => 2e-7,
            Tile::F4 => 4e-6,
        };
        let x = seeded(g * c * h * w, 3);
        let weight = seeded(o * c * 9, 4);
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let mut want = vec![0.0; g * o * oh * ow];
        let win = Window {
            kh: 3,
            kw: 3,
            stride: 1,
            pad,
        };
        for (xi, yi) in x.chunks(c * h * w).zip(want.chunks_mut(o * oh * ow)) {
            reference::conv2d(xi, (c, h, w), &weight, None, o, win, yi);
        }
        let mut u = vec![0.0; plan.weights_len()];
        plan.transform_weights(&weight, &mut u);
        let mut scratch = vec![f32::NAN; plan.scratch_len(g)];
        let mut y = vec![f32::NAN; want.len()];
        plan.forward(&x, &u, &mut scratch, &mut y);
        for (i, (a, b)) in y.iter().zip(&want).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()) * (c * 9) as f32,
                "{tile:?} g={g} c={c} h={h} w={w} o={o} pad={pad} at {i}: {a} vs {b}"
            );
        }
    }
}

/// The weight gradient against its definition, `dW[o][c][i][j] = Σ dy[o][y][x] ·
/// x_padded[c][y + i][x + j]`, on `CASES` with both tiles, accumulated over two calls, on every
/// path the CPU has.
#[test]
fn winograd_weight_gradient_matches_the_definition() {
    for (tile, &(g, c, h, w, o, pad)) in TILES
        .iter()
        .flat_map(|&t| CASES.iter().map(move |k| (t, k)))
    {
        let plan = Winograd::with_tile((c, h, w), o, pad, tile).unwrap();
        // The worst errors seen, on the bound's scale: 1.4e-8 (F(2×2)), 4.0e-8 (F(4×4)).
        let tol = match tile {
            Tile::F2 => 1e-7,
            Tile::F4 => 3e-7,
        };
        let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
        let x = seeded(2 * g * c * h * w, 5);
        let dy = seeded(2 * g * o * oh * ow, 6);
        let mut want = vec![0.0f64; o * c * 9];
        for (xi, di) in x.chunks(c * h * w).zip(dy.chunks(o * oh * ow)) {
            for oc in 0..o {
                for ic in 0..c {
                    for k in 0..9 {
                        let (i, j) = (k / 3, k % 3);
                        for yy in 0..oh {
                            for xx in 0..ow {
                                let (sy, sx) = (yy + i, xx + j);
                                if sy < pad || sx < pad || sy - pad >= h || sx - pad >= w {
                                    continue;
                                }
                                want[(oc * c + ic) * 9 + k] += di[(oc * oh + yy) * ow + xx] as f64
                                    * xi[(ic * h + sy - pad) * w + sx - pad] as f64;
                            }
                        }
                    }
                }
            }
        }
        for isa in Isa::available() {
            let mut scratch = vec![f32::NAN; plan.grad_scratch_len(g)];
            let mut s = vec![f32::NAN; plan.grad_len()];
            let (x_item, dy_item) = (g * c * h * w, g * o * oh * ow);
            for half in 0..2 {
                plan.accumulate_weight_grad_on(
                    isa,
                    &x[half * x_item..][..x_item],
                    &dy[half * dy_item..][..dy_item],
                    &mut scratch,
                    &mut s,
                    half > 0,
                );
            }
            let mut dw = vec![1.0; o * c * 9];
            plan.weight_grad(&s, &mut dw);
            let terms = (2 * g * oh * ow) as f32;
            for (i, (a, b)) in dw.iter().zip(&want).enumerate() {
                let b = *b as f32 + 1.0;
                assert!(
                    (a - b).abs() <= tol * (1.0 + b.abs()) * terms,
                    "{isa:?} {tile:?} g={g} c={c} h={h} w={w} o={o} pad={pad} at {i}: {a} vs {b}"
                );
            }
        }
    }
}

/// Every path's transforms (see `kernels::isa`) against the portable ones, bit for bit, on
/// `CASES` with both tiles, and F(4×4)'s at 16 plain lanes too, so that a CPU without AVX-512
/// checks the runs' handling at that width: all paths do the same arithmetic in the same order. Inputs include zeros, so a −0
/// turned into +0 would show, and full mantissas, so would a change in the order of a sum. (On a
/// CPU with only the portable path this compares it with itself, which still checks that every
/// element is written.)
#[test]
fn every_paths_transforms_match_the_portable_ones_exactly() {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    // Full 24-bit mantissas (`seeded` values have fewer, and sums of those are exact in
    // any order, which would hide a change of order).
    let full = |len, seed| -> Vec<f32> { seeded(len, seed).iter().map(|v| v / 3.0).collect() };
    let paths = Isa::available();
    eprintln!("paths: {paths:?}");
    for (tile, &(g, c, h, w, o, pad)) in TILES
        .iter()
        .flat_map(|&t| CASES.iter().map(move |k| (t, k)))
    {
        let plan = Winograd::with_tile((c, h, w), o, pad, tile).unwrap();
        let (nt, planes) = (g * plan.tiles(), tile.planes());
        let mut x = full(g * c * h * w, 7);
        x.iter_mut().step_by(5).for_each(|v| *v = 0.0);
        let mut m = full(planes * plan.plane_stride(o, g), 8);
        m.iter_mut().step_by(3).for_each(|v| *v = -0.0);
        let mut dy = full(g * plan.output_len(), 9);
        dy.iter_mut().step_by(4).for_each(|v| *v = 0.0);
        // The rows of each plane (`rows×NT`), without the padding between planes.
        let rows = |v: &[f32], rows: usize, stride: usize| -> Vec<f32> {
            v.chunks(stride)
                .flat_map(|p| &p[..rows * nt])
                .copied()
                .collect()
        };
        // The three transforms' outputs on one path (`None`: F(4×4)'s kernels at 16 plain
        // lanes, AVX-512's width, which any CPU runs).
        let run = |isa: Option<Isa>| {
            let mut prepared = vec![0.0; g * plan.prepared_len()];
            for (img, buf) in x
                .chunks(c * h * w)
                .zip(prepared.chunks_mut(plan.prepared_len()))
            {
                plan.prepare(isa.unwrap_or(Isa::Portable), img, buf);
            }
            let mut v = vec![f32::NAN; planes * plan.plane_stride(c, g)];
            let mut phases = vec![0.0; plan.phases() * plan.phase_stride(g)];
            let mut y = vec![f32::NAN; g * plan.output_len()];
            let mut z = vec![f32::NAN; planes * plan.plane_stride(o, g)];
            if let Some(isa) = isa {
                plan.transform_input(isa, &prepared, g, &mut v);
                plan.transform_output(isa, &m, g, &mut phases, &mut y);
                plan.transform_grad(isa, &dy, g, &mut phases, &mut z);
            } else {
                // SAFETY: plain lanes need no instruction set.
                unsafe {
                    plan.transform_input_body::<Lanes<16>>(&prepared, g, &mut v);
                    plan.transform_output_body::<Lanes<16>>(&m, g, &mut phases, &mut y);
                    plan.transform_grad_body::<Lanes<16>>(&dy, g, &mut phases, &mut z);
                }
            }
            let (v, z) = (
                rows(&v, c, plan.plane_stride(c, g)),
                rows(&z, o, plan.plane_stride(o, g)),
            );
            [bits(&prepared), bits(&v), bits(&y), bits(&z)]
        };
        let want = run(Some(Isa::Portable));
        for what in &want {
            assert!(what.iter().all(|&b| !f32::from_bits(b).is_nan()));
        }
        let emulated = (tile == Tile::F4).then_some(None);
        for isa in paths.iter().map(|&i| Some(i)).chain(emulated) {
            let got = run(isa);
            let path = isa.map_or("16 plain lanes".to_string(), |i| format!("{i:?}"));
            for (what, (a, b)) in ["prepare", "input", "output", "gradient"]
                .iter()
                .zip(want.iter().zip(&got))
            {
                let case = (g, c, h, w, o, pad);
                assert!(
                    a == b,
                    "{path} {tile:?}: {what} transform differs, case {case:?}"
                );
            }
        }
    }
}

#[test]
fn winograd_declines_what_a_3x3_kernel_does_not_fit() {
    assert!(Winograd::new((1, 2, 5), 1, 0).is_none());
    assert!(Winograd::new((1, 1, 1), 1, 1).is_some());
    assert_eq!(Winograd::new((3, 32, 32), 8, 1).unwrap().group(), 1);
    assert_eq!(Winograd::new((3, 8, 8), 8, 1).unwrap().group(), 4);
    assert!(Winograd::with_tile((1, 2, 5), 1, 0, Tile::F4).is_none());
}

/// F(4×4) where it multiplies less on long enough runs of tiles: mnist-ref's second conv
/// (26×26 → 24×24: 42 tiles × 36 against 156 × 16) and its input gradient (24×24 → 26×26,
/// 56 × 36 against 182 × 16), cifar-ref's 16×16 maps (20 × 36 against 72 × 16); F(2×2) on 8×8
/// maps (6 × 36 against 20 × 16, too few tiles) and a 2×2 map (2 × 36 against 2 × 16).
#[test]
fn the_fastest_plan_counts_multiplications() {
    let tile = |chw, pad| Winograd::fastest(chw, 8, pad).unwrap().tile();
    assert_eq!(tile((32, 26, 26), 0), Tile::F4);
    assert_eq!(tile((64, 24, 24), 2), Tile::F4);
    assert_eq!(tile((64, 16, 16), 1), Tile::F4);
    assert_eq!(tile((64, 8, 8), 1), Tile::F2);
    assert_eq!(tile((64, 2, 2), 1), Tile::F2);
}

/// With more kernels than one task takes (and a count that halves unevenly), the kernel
/// transforms split into parallel ranges give bit for bit what one range over every kernel
/// gives: forward's `G g Gᵀ` and the weight gradient's `Gᵀ S G`, both tiles.
#[test]
fn kernel_transforms_split_across_tasks_change_nothing() {
    let (o, c) = (37, 29);
    let kernels = o * c;
    assert!(kernels > 2 * KERNELS_PER_TASK);
    let weight = seeded(kernels * 9, 21);
    for tile in TILES {
        let plan = Winograd::with_tile((c, 6, 6), o, 1, tile).unwrap();
        let n = tile.planes();
        let mut split = vec![0.0; plan.weights_len()];
        plan.transform_weights(&weight, &mut split);
        let mut whole = vec![0.0; plan.weights_len()];
        match tile {
            Tile::F4 => tiles4::transform_weights(&weight, planes(&mut whole, kernels)),
            Tile::F2 => transform_weights_f2(&weight, planes(&mut whole, kernels)),
        }
        assert_eq!(split, whole, "{tile:?}");
        let s = seeded(n * kernels, 22);
        let start = seeded(kernels * 9, 23);
        let (mut split, mut whole) = (start.clone(), start);
        plan.weight_grad(&s, &mut split);
        match tile {
            Tile::F4 => tiles4::weight_grad(0, kernels, &s, &mut whole),
            Tile::F2 => weight_grad_f2(0, kernels, &s, &mut whole),
        }
        assert_eq!(split, whole, "{tile:?}");
    }
}
