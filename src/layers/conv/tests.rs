//! The convolution's tests: gradient checks on awkward sizes, a hand-worked case, and each
//! fast path against the plain one.

use super::*;
use crate::layers::gradcheck::{check_layer, seeded};
use crate::layers::{Activation, initialise};
use crate::rng::Rng;

/// Backward needs a training-mode forward; convolution itself has no random choices.
const TRAIN: Mode = Mode::Train { seed: 0 };

fn conv(
    input: &[usize],
    o: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
    bias: bool,
) -> Conv2d {
    conv_by(input, o, k, stride, pad, bias, true)
}

/// As [`conv`], on the im2col path whatever the kernel unless `winograd`.
fn conv_by(
    input: &[usize],
    o: usize,
    k: (usize, usize),
    stride: usize,
    pad: usize,
    bias: bool,
    winograd: bool,
) -> Conv2d {
    let cfg = Conv2dConfig {
        out_channels: o,
        kernel: k,
        stride,
        pad,
        bias,
        ..Conv2dConfig::default()
    };
    let mut c = Conv2d::new(input, cfg, winograd).unwrap();
    initialise(&mut c, &mut Rng::new(1));
    // Non-zero biases so their effect is visible to the check.
    c.visit_params(&mut |p| {
        if p.name == "bias" {
            p.value
                .to_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 0.1 * i as f32 - 0.2);
        }
    });
    c
}

/// Evaluation shares one column buffer per thread; it must give what training gives.
#[test]
fn conv_eval_forward_matches_training_forward() {
    let x = seeded(&[7, 3, 9, 8], 5);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        let mut c = conv(&[3, 9, 8], 5, (3, 3), 1, 1, true);
        let train = c.forward(&x, TRAIN).clone();
        assert_eq!(c.forward(&x, Mode::Eval), &train);
    });
}

#[test]
fn conv_grad_batch1_odd_nonsquare() {
    check_layer(
        &mut conv(&[2, 5, 7], 3, (3, 3), 1, 0, true),
        &[1, 2, 5, 7],
        TRAIN,
    );
}

#[test]
fn conv_grad_batch3_stride2_padding() {
    check_layer(
        &mut conv(&[3, 7, 6], 4, (3, 3), 2, 1, true),
        &[3, 3, 7, 6],
        TRAIN,
    );
}

#[test]
fn conv_grad_nonsquare_kernel_no_bias_many_groups() {
    // Batch 9 spans three BATCH_CHUNK groups of the weight-gradient reduction.
    check_layer(
        &mut conv(&[2, 6, 5], 2, (2, 3), 1, 2, false),
        &[9, 2, 6, 5],
        TRAIN,
    );
}

/// Hand-worked: a 3×3 input 1..9, a 2×2 kernel [[1,0],[0,-1]], bias 0.5, stride 1, no pad.
/// y[i][j] = x[i][j] - x[i+1][j+1] + 0.5 = -4 + 0.5 everywhere.
/// With padding 1 and stride 2 the output is 2×2: corners see only one of the two taps:
/// y[0][0] = -x[0][0] + .5 = -0.5, y[0][1] = -x[0][2]... see the table below.
#[test]
fn conv_hand_worked() {
    let x = Tensor::from_shape_vec(vec![1, 1, 3, 3], (1..=9).map(|v| v as f32).collect()).unwrap();
    let mut c = conv(&[1, 3, 3], 1, (2, 2), 1, 0, true);
    c.visit_params(&mut |p| match p.name {
        "weight" => p.value = vec![1., 0., 0., -1.].into(),
        _ => p.value.to_mut().fill(0.5),
    });
    assert_eq!(data(c.forward(&x, TRAIN)), &[-3.5; 4]);

    let mut c = conv(&[1, 3, 3], 1, (2, 2), 2, 1, true);
    c.visit_params(&mut |p| match p.name {
        "weight" => p.value = vec![1., 0., 0., -1.].into(),
        _ => p.value.to_mut().fill(0.5),
    });
    // Padded input is 5×5 with x in the centre; windows start at (0,0), (0,2), (2,0), (2,2):
    // tap (0,0) reads padded(r,c), tap (1,1) reads padded(r+1,c+1) = x[r][c].
    // (0,0): 0 - x00 = -1; (0,2): 0 - x01... padded(1,3) = x[0][2] = 3 → -3;
    // (2,0): 0 - x[2][0] = -7; (2,2): x[1][1] - x[2][2] = 5 - 9 = -4.
    assert_eq!(data(c.forward(&x, TRAIN)), &[-0.5, -2.5, -6.5, -3.5]);
}

/// The two input-gradient paths agree (to rounding) wherever the faster one applies.
#[test]
fn conv_input_gradient_paths_agree() {
    for &(c, h, w, o, k, pad) in &[
        (3, 7, 5, 4, 3, 1),
        (2, 6, 9, 5, 3, 0),
        (1, 5, 5, 2, 5, 2),
        (4, 8, 8, 3, 3, 2),
        (2, 4, 3, 3, 1, 0),
    ] {
        let x = seeded(&[3, c, h, w], 7);
        let grads = |force: bool| {
            let mut l = conv(&[c, h, w], o, (k, k), 1, pad, true);
            let Path::Im2col(p) = &mut l.path else {
                panic!("expected the im2col path")
            };
            assert!(p.transposed_conv_applies(&l.geom));
            p.force_col2im = force;
            let y = l.forward(&x, TRAIN).clone();
            l.backward(&x, &y).clone()
        };
        let (a, b) = (grads(false), grads(true));
        for (u, v) in a.iter().zip(b.iter()) {
            assert!(
                (u - v).abs() <= 1e-4 * (1.0 + v.abs()),
                "c={c} h={h} w={w} k={k} pad={pad}: {u} vs {v}"
            );
        }
    }
}

#[test]
fn conv_grad_winograd_path() {
    let mut l = conv(&[8, 4, 5], 2, (3, 3), 1, 1, true);
    assert!(matches!(l.path, Path::Winograd(_)));
    check_layer(&mut l, &[2, 8, 4, 5], TRAIN);
    // A first layer (fewer than 8 channels) keeps im2col + GEMM.
    let first = conv(&[3, 8, 8], 4, (3, 3), 1, 1, true);
    assert!(matches!(first.path, Path::Im2col(_)));
}

/// The Winograd path gives what im2col + GEMM gives, to rounding: output, input gradient,
/// weight and bias gradients; batch 1, odd and non-square sizes, padding 0–2, and batches
/// that fill one group of images, several, and a partial last one.
#[test]
fn conv_winograd_matches_im2col() {
    // (N, C, H, W, O, pad): the last three with several chunks of images for the weight
    // gradient, the second of them with different group sizes for the two plans (8 and 5),
    // the last in chunks of several groups of one image, and a last chunk of one.
    for &(n, c, h, w, o, pad) in &[
        (1, 8, 3, 3, 1, 0),
        (3, 8, 5, 7, 3, 1),
        (5, 9, 9, 6, 4, 2),
        (2, 8, 8, 8, 2, 0),
        (2, 8, 34, 33, 2, 1),
        (70, 8, 4, 4, 2, 1),
        (13, 8, 5, 7, 3, 0),
        (9, 8, 18, 18, 2, 1),
    ] {
        let x = seeded(&[n, c, h, w], 11);
        // With and without a bias and a fused ReLU, and against the im2col layer's input
        // gradient by col2im instead of the transposed convolution.
        for (bias, relu, col2im) in [
            (true, false, false),
            (true, true, false),
            (false, true, false),
            (false, false, true),
        ] {
            let layer = |winograd| {
                let mut l = conv_by(&[c, h, w], o, (3, 3), 1, pad, bias, winograd);
                if relu {
                    assert!(l.fuse_activation(Activation::Relu));
                }
                l
            };
            let run = |mut l: Conv2d, x: &Tensor, abs: bool| {
                let y = l.forward(x, TRAIN).clone();
                let mut dy = seeded(y.shape(), 12);
                if abs {
                    dy.mapv_inplace(f32::abs);
                }
                let dx = l.backward(x, &dy).clone();
                let mut grads = Vec::new();
                l.visit_params(&mut |p| grads.push(p.grad.clone()));
                (y, dx, grads)
            };
            let fast = layer(true);
            assert!(matches!(fast.path, Path::Winograd(_)));
            let mut plain = layer(false);
            let Path::Im2col(p) = &mut plain.path else {
                panic!("expected the im2col path")
            };
            p.force_col2im = col2im;
            let (a, b) = (run(fast, &x, false), run(plain, &x, false));
            // A parameter gradient sums N·OH·OW products that cancel; its rounding error scales
            // with the sum of their magnitudes, not with the result (and F(4×4)'s transforms
            // amplify it, up to 20× F(2×2)'s), so its tolerance takes that sum: the gradients
            // of a plain layer without ReLU on |x| and |dy|, each term's bound.
            let scale = run(
                conv_by(&[c, h, w], o, (3, 3), 1, pad, bias, false),
                &x.mapv(f32::abs),
                true,
            );
            let close = |u: &Tensor, v: &Tensor, s: Option<&Tensor>, what: &str| {
                assert_eq!(u.shape(), v.shape());
                for (i, (p, q)) in u.iter().zip(v.iter()).enumerate() {
                    let sum = s.map_or(0.0, |s| s.as_slice().unwrap()[i]);
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()) + 1e-6 * sum,
                        "{what}, n={n} c={c} h={h} w={w} o={o} pad={pad} bias={bias} \
                         relu={relu} col2im={col2im}: {p} vs {q}, terms' sum {sum}"
                    );
                }
            };
            close(&a.0, &b.0, None, "output");
            close(&a.1, &b.1, None, "input gradient");
            assert_eq!(a.2.len(), b.2.len());
            for ((ga, gb), gs) in a.2.iter().zip(&b.2).zip(&scale.2) {
                close(ga, gb, Some(gs), "parameter gradient");
            }
        }
    }
}

/// A layer without an input gradient (a first layer) masks and sums its incoming gradient
/// inside the weight-gradient loop: the same parameter gradients as the separate pass.
#[test]
fn conv_without_input_gradient_matches_the_separate_mask_pass() {
    // (N, C, H, W, O, kernel, stride, pad): a batch that is no multiple of BATCH_CHUNK,
    // non-square, strided.
    for &(n, c, h, w, o, k, stride, pad) in
        &[(5, 1, 7, 6, 3, (3, 3), 1, 0), (3, 2, 9, 8, 4, (3, 2), 2, 1)]
    {
        for (bias, relu) in [(true, true), (true, false), (false, true), (false, false)] {
            let x = seeded(&[n, c, h, w], 21);
            let grads = |needs_dx: bool| {
                let mut l = conv(&[c, h, w], o, k, stride, pad, bias);
                assert!(matches!(l.path, Path::Im2col(_)));
                if relu {
                    assert!(l.fuse_activation(Activation::Relu));
                }
                l.set_needs_input_grad(needs_dx);
                let y = l.forward(&x, TRAIN).clone();
                l.backward(&x, &seeded(y.shape(), 22));
                let mut g = Vec::new();
                l.visit_params(&mut |p| g.push(p.grad.clone()));
                g
            };
            assert_eq!(
                grads(false),
                grads(true),
                "n={n} c={c} bias={bias} relu={relu}"
            );
        }
    }
}

#[test]
fn conv_grad_same_padding_uses_the_transposed_convolution() {
    let mut l = conv(&[2, 6, 5], 3, (3, 3), 1, 1, true);
    let Path::Im2col(p) = &l.path else {
        panic!("expected the im2col path")
    };
    assert!(p.transposed_conv_applies(&l.geom));
    check_layer(&mut l, &[3, 2, 6, 5], TRAIN);
}

#[test]
fn conv_rejects_a_kernel_larger_than_the_input() {
    let cfg = Conv2dConfig {
        out_channels: 1,
        kernel: (5, 5),
        ..Default::default()
    };
    let err = Conv2d::new(&[1, 3, 3], cfg, true).err().unwrap();
    assert!(err.contains("5×5") && err.contains("3×3"), "{err}");
}

/// im2col (3 channels) and Winograd (8 channels) paths, with fewer groups of images than
/// threads (where per-thread scratch once collided).
#[test]
fn conv_results_do_not_depend_on_thread_count() {
    for channels in [3, 8] {
        let x = seeded(&[7, channels, 9, 8], 5);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut c = conv(&[channels, 9, 8], 5, (3, 3), 1, 1, true);
                let y = c.forward(&x, TRAIN).clone();
                let dx = c.backward(&x, &y).clone();
                let mut grads = Vec::new();
                c.visit_params(&mut |p| grads.push(p.grad.clone()));
                (y, dx, grads)
            })
        };
        let one = run(1);
        for threads in [3, 4] {
            let many = run(threads);
            assert_eq!(one.0, many.0, "{channels} channels, {threads} threads");
            assert_eq!(one.1, many.1, "{channels} channels, {threads} threads");
            assert_eq!(one.2, many.2, "{channels} channels, {threads} threads");
        }
    }
}

/// A max pooling fused into the Winograd path gives bit for bit what the separate pooling
/// layer gives after it: output (training and evaluation), input gradient, weight and bias
/// gradients, whatever the thread count. 2×2 windows on odd maps (the last row and column
/// dropped) and overlapping 3×3 windows moved by 2, with and without the fused ReLU (whose
/// zeros tie in every window), batches of one group, several and a partial last one, F(2×2)
/// and F(4×4) plans, and a frozen weight without an input gradient (only the bias learns).
#[test]
fn conv_fused_max_pool_matches_the_separate_layers() {
    use crate::layers::MaxPool2d;
    // (N, C, H, W, O, pad, k, stride)
    for &(n, c, h, w, o, pad, k, stride) in &[
        (1, 8, 5, 7, 3, 1, 2, 2),
        (13, 8, 9, 7, 3, 0, 3, 2),
        (70, 8, 4, 4, 2, 1, 2, 2),
        (3, 8, 17, 19, 2, 1, 2, 2),
        (5, 9, 15, 13, 4, 1, 3, 2),
    ] {
        let x = seeded(&[n, c, h, w], 31);
        for (bias, relu, frozen) in [
            (true, true, false),
            (true, false, false),
            (false, true, false),
            (true, true, true),
        ] {
            let layer = || {
                let mut l = conv(&[c, h, w], o, (3, 3), 1, pad, bias);
                assert!(matches!(l.path, Path::Winograd(_)));
                if relu {
                    assert!(l.fuse_activation(Activation::Relu));
                }
                if frozen {
                    l.freeze_weight();
                    l.set_needs_input_grad(false);
                }
                l
            };
            let (oh, ow) = (h + 2 * pad - 2, w + 2 * pad - 2);
            let grads = |l: &mut Conv2d| {
                let mut g = Vec::new();
                l.visit_params(&mut |p| g.push(p.grad.clone()));
                g
            };
            let mut l = layer();
            let mut p = MaxPool2d::new(&[o, oh, ow], k, stride).unwrap();
            let eval = p.forward(l.forward(&x, Mode::Eval), Mode::Eval).clone();
            let y = p.forward(l.forward(&x, TRAIN), TRAIN).clone();
            let dy = seeded(y.shape(), 32);
            let dz = p.backward(l.output(), &dy).clone();
            let dx = l.backward(&x, &dz).clone();
            let want = (eval, y, dx, grads(&mut l));
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let got = pool.install(|| {
                    let mut l = layer();
                    assert!(l.fuse_max_pool(k, stride));
                    assert!(!l.fuse_max_pool(k, stride), "a second pooling");
                    assert_eq!(l.out_shape(), p.out_shape());
                    let eval = l.forward(&x, Mode::Eval).clone();
                    let y = l.forward(&x, TRAIN).clone();
                    let dx = l.backward(&x, &dy).clone();
                    (eval, y, dx, grads(&mut l))
                });
                let what = format!(
                    "n={n} c={c} h={h} w={w} o={o} pad={pad} k={k} stride={stride} \
                     bias={bias} relu={relu} frozen={frozen} threads={threads}"
                );
                assert!(got == want, "{what}");
            }
        }
    }
    // im2col keeps its output whole.
    assert!(!conv(&[3, 8, 8], 4, (3, 3), 1, 1, true).fuse_max_pool(2, 2));
}

/// The gradient through a fused pooling, without the ReLU (whose kink a probe could cross),
/// on inputs without near-ties. Nothing guarantees that the convolution's outputs keep their
/// winners under a probe; with these inputs and weights they do (a changed winner would fail
/// the check), and the bit-exact test above covers the rest.
#[test]
fn conv_grad_with_fused_max_pool() {
    for (k, stride) in [(2, 2), (3, 2)] {
        let mut l = conv(&[8, 5, 7], 2, (3, 3), 1, 1, true);
        assert!(l.fuse_max_pool(k, stride));
        let x = crate::layers::gradcheck::no_ties(&[2, 8, 5, 7]);
        crate::layers::gradcheck::check_layer_on(&mut l, &x, TRAIN);
    }
}
