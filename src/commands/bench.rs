//! `cnn bench`: training and inference throughput on synthetic data, with a per-layer profile.
//!
//! Protocol (as the PyTorch reference, ../shared/bench/NETWORKS.md): SGD with momentum 0.9 and
//! lr 0.01; warm-up steps, then timed steps of forward + cross-entropy + backward + update,
//! repeated; the median repetition is reported. FLOP counts: training = MACs × 2 × 3 (forward,
//! input gradient, weight gradient), inference = MACs × 2.

use super::{load_arch, with_threads};
use crate::commands::cli::BenchArgs;
use crate::layers::Mode;
use crate::net::graph::Network;
use crate::net::loss::{Loss, LossKind};
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::optim::{Optimizer, OptimizerConfig, OptimizerKind};
use anyhow::Result;
use serde::Serialize;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Serialize)]
struct BenchReport {
    arch: String,
    /// The hand-written kernels' instruction set (`CNN_ISA` caps it).
    isa: &'static str,
    threads: usize,
    batch_size: usize,
    infer_batch_size: usize,
    macs_per_image: u64,
    train_images_per_sec: f64,
    train_gflops: f64,
    train_reps_images_per_sec: Vec<f64>,
    infer_images_per_sec: f64,
    infer_gflops: f64,
    infer_reps_images_per_sec: Vec<f64>,
    peak_rss_mb: f64,
    /// Best of several large square products on all threads: the machine's practical peak.
    sgemm_peak_gflops: f64,
    /// Convolution layers in training (forward, and backward's one or two products).
    conv_train_gflops: f64,
    conv_share_of_sgemm_peak: f64,
    layers: Vec<LayerTime>,
    /// Per training step, outside the layers: gradient zeroing, loss (forward and gradient),
    /// optimizer update; and the whole step (at the median repetition's rate).
    zero_grad_ms: f64,
    loss_ms: f64,
    update_ms: f64,
    step_ms: f64,
}

#[derive(Serialize)]
struct LayerTime {
    name: String,
    forward_ms: f64,
    backward_ms: f64,
    /// A ReLU computed inside the layer before it (its time is that layer's), or a flatten that
    /// the layer after it does without.
    fused: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn synthetic(n: usize, shape: [usize; 3], classes: usize, seed: u64) -> (Tensor, Vec<usize>) {
    let mut r = Rng::new(seed);
    let x = Tensor::from_shape_fn(vec![n, shape[0], shape[1], shape[2]], |_| r.normal());
    let labels = (0..n).map(|_| r.below(classes)).collect();
    (x, labels)
}

pub fn run(args: BenchArgs) -> Result<()> {
    with_threads(args.threads, || execute(args))
}

fn execute(args: BenchArgs) -> Result<()> {
    let spec = load_arch(&args.arch)?;
    let mut net = Network::build(&spec, args.classes, Some(1), &super::build_options())
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.arch))?;
    crate::train::memory::check(
        &mut net,
        args.batch_size.max(args.infer_batch_size),
        &args.arch,
    )?;
    let macs = net.macs();
    let input = net.input_shape();
    let (x, labels) = synthetic(args.batch_size, input, args.classes, 2);
    let mut loss = Loss::new(LossKind::CrossEntropy, 0.0);
    let mut opt = Optimizer::new(OptimizerConfig {
        kind: OptimizerKind::Sgd,
        momentum: 0.9,
        ..Default::default()
    });
    // Time outside the layers, summed over the timed steps: zeroing, loss, update.
    let mut outside = [Duration::ZERO; 3];
    let mut step = |net: &mut Network, i: u64, outside: &mut [Duration; 3]| {
        let t0 = Instant::now();
        net.zero_grad();
        let t1 = Instant::now();
        let logits = net.forward(&x, Mode::Train { seed: i });
        let t2 = Instant::now();
        loss.forward(logits, &labels);
        let dlogits = loss.backward();
        let t3 = Instant::now();
        net.backward(&x, dlogits);
        let t4 = Instant::now();
        opt.step(net, 0.01, 0);
        let t5 = Instant::now();
        outside[0] += t1 - t0;
        outside[1] += t3 - t2;
        outside[2] += t5 - t4;
    };
    for i in 0..args.warmup {
        step(&mut net, i, &mut [Duration::ZERO; 3]);
    }
    let mut train = Vec::new();
    net.start_profiling();
    for r in 0..args.reps {
        let t = Instant::now();
        for i in 0..args.iters {
            step(&mut net, 1000 + r * args.iters + i, &mut outside);
        }
        train.push((args.iters as usize * args.batch_size) as f64 / t.elapsed().as_secs_f64());
    }
    let profile = net.profile();
    let steps = (args.reps * args.iters).max(1) as f64;
    // Convolution throughput: MACs × 2 per product; forward, weight gradient, and the input
    // gradient except for the first layer (which skips it).
    let (mut conv_flops, mut conv_secs) = (0.0, 0.0);
    for (i, (row, (_, f, b))) in net.summary().iter().zip(&profile).enumerate() {
        if row.name.starts_with("conv") {
            let products = if i == 0 { 2.0 } else { 3.0 };
            conv_flops += row.macs as f64 * 2.0 * products * args.batch_size as f64;
            conv_secs += (f.as_secs_f64() + b.as_secs_f64()) / steps;
        }
    }
    let conv_gflops = if conv_secs > 0.0 {
        conv_flops / conv_secs / 1e9
    } else {
        0.0
    };
    let peak = sgemm_peak_gflops();

    let (xi, _) = synthetic(args.infer_batch_size, input, args.classes, 3);
    for _ in 0..2 {
        net.forward(&xi, Mode::Eval);
    }
    let mut infer = Vec::new();
    for _ in 0..args.reps {
        let t = Instant::now();
        let batches = args.infer_iters.max(1);
        for _ in 0..batches {
            let logits = net.forward(&xi, Mode::Eval);
            std::hint::black_box(logits);
        }
        infer.push((batches * args.infer_batch_size as u64) as f64 / t.elapsed().as_secs_f64());
    }
    let (tr, inf) = (median(&train), median(&infer));
    let report = BenchReport {
        arch: args.arch.clone(),
        isa: crate::kernels::isa::active().name(),
        threads: rayon::current_num_threads(),
        batch_size: args.batch_size,
        infer_batch_size: args.infer_batch_size,
        macs_per_image: macs,
        train_images_per_sec: tr,
        train_gflops: tr * macs as f64 * 6.0 / 1e9,
        train_reps_images_per_sec: train,
        infer_images_per_sec: inf,
        infer_gflops: inf * macs as f64 * 2.0 / 1e9,
        infer_reps_images_per_sec: infer,
        peak_rss_mb: peak_rss_mb(),
        sgemm_peak_gflops: peak,
        conv_train_gflops: conv_gflops,
        conv_share_of_sgemm_peak: conv_gflops / peak,
        layers: profile
            .into_iter()
            .zip(net.summary())
            .map(|((name, f, b), row)| LayerTime {
                name,
                forward_ms: ms(f) / steps,
                backward_ms: ms(b) / steps,
                fused: row.fused,
            })
            .collect(),
        zero_grad_ms: ms(outside[0]) / steps,
        loss_ms: ms(outside[1]) / steps,
        update_ms: ms(outside[2]) / steps,
        step_ms: 1e3 * args.batch_size as f64 / tr,
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer(&mut out, &report)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{}: {} MACs/image, {} threads, {} kernels, training batch {}, inference batch {}",
        report.arch,
        super::format::group(macs),
        report.threads,
        report.isa,
        report.batch_size,
        report.infer_batch_size
    )?;
    writeln!(
        out,
        "training:  {:>9.1} images/s  {:>7.1} GFLOP/s  (median of {})",
        tr, report.train_gflops, args.reps
    )?;
    writeln!(
        out,
        "inference: {:>9.1} images/s  {:>7.1} GFLOP/s",
        inf, report.infer_gflops
    )?;
    writeln!(out, "peak memory: {:.0} MB", report.peak_rss_mb)?;
    writeln!(
        out,
        "convolutions: {:.1} GFLOP/s in training = {:.0}% of the measured sgemm peak ({:.1} GFLOP/s)",
        conv_gflops,
        100.0 * report.conv_share_of_sgemm_peak,
        peak
    )?;
    writeln!(
        out,
        "\nper training step (ms):\n{:<10} {:>9} {:>9}",
        "layer", "forward", "backward"
    )?;
    let (mut tf, mut tb) = (0.0, 0.0);
    for l in &report.layers {
        if l.fused {
            writeln!(out, "{:<10} {:>19}", l.name, "(fused: no pass)")?;
            continue;
        }
        writeln!(
            out,
            "{:<10} {:>9.3} {:>9.3}",
            l.name, l.forward_ms, l.backward_ms
        )?;
        tf += l.forward_ms;
        tb += l.backward_ms;
    }
    writeln!(out, "{:<10} {:>9.3} {:>9.3}", "total", tf, tb)?;
    writeln!(
        out,
        "outside the layers: zero grad {:.3}, loss {:.3}, update {:.3}; whole step {:.3}",
        report.zero_grad_ms, report.loss_ms, report.update_ms, report.step_ms
    )?;
    Ok(())
}

/// The best rate of a few 1536³ products split over all threads (the same GEMM the layers use).
fn sgemm_peak_gflops() -> f64 {
    let n = 1536;
    let mut r = Rng::new(4);
    let a: Vec<f32> = (0..n * n).map(|_| r.normal()).collect();
    let b: Vec<f32> = (0..n * n).map(|_| r.normal()).collect();
    let mut c = vec![0.0f32; n * n];
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t = Instant::now();
        crate::kernels::gemm::par_sgemm(n, n, n, &a, false, &b, false, &mut c, false);
        best = best.max(2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    std::hint::black_box(&c);
    best
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Peak resident set size from /proc (Linux); 0 elsewhere.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}
