//! The built-in architectures, each with where it comes from. `cnn summary --arch NAME` shows
//! any of them layer by layer.

pub const PRESETS: &[(&str, &str, &str)] = &[
    (
        "mnist-ref",
        "the network of PyTorch's MNIST example (pytorch/examples mnist/main.py)",
        MNIST_REF,
    ),
    (
        "lenet5",
        "LeNet-5 (LeCun et al. 1998) with ReLU and max pooling, for 28×28 input",
        LENET5,
    ),
    (
        "cifar-ref",
        "VGG-style: three blocks of two 3×3 conv + batch norm + ReLU, for 32×32 RGB",
        CIFAR_REF,
    ),
    (
        "mnist-fast",
        "batch-normalised VGG-style net for digits: 99.5%+ on MNIST in minutes",
        MNIST_FAST,
    ),
    (
        "cifar-fast",
        "airbench94's net (Jordan 2024) with its own recipe: 94% on CIFAR-10 in 10 epochs",
        CIFAR_FAST,
    ),
    (
        "cifar-fast-wide",
        "airbench95's net (Jordan 2024), cifar-fast widened, with its recipe: 95% in 15 epochs",
        CIFAR_FAST_WIDE,
    ),
];

const MNIST_REF: &str = "\
# The network of PyTorch's MNIST example (pytorch/examples, mnist/main.py): 1,199,882 parameters.
input 1 28 28
conv 32 3
relu
conv 64 3
relu
maxpool 2
dropout 0.25
flatten
dense 128
relu
dropout 0.5
dense classes
";

const LENET5: &str = "\
# LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) as usually written today: ReLU for the sigmoids,
# max pooling for the trainable subsampling, a dense layer for the last conv (C5) on 28×28 input.
input 1 28 28
conv 6 5 pad=2
relu
maxpool 2
conv 16 5
relu
maxpool 2
flatten
dense 120
relu
dense 84
relu
dense classes
";

const CIFAR_REF: &str = "\
# VGG-style network for CIFAR-10: 551,018 parameters. Convs before batch norm have no bias
# (batch norm's shift makes it redundant).
input 3 32 32
conv 32 3 pad=1 bias=no
batchnorm
relu
conv 32 3 pad=1 bias=no
batchnorm
relu
maxpool 2
conv 64 3 pad=1 bias=no
batchnorm
relu
conv 64 3 pad=1 bias=no
batchnorm
relu
maxpool 2
conv 128 3 pad=1 bias=no
batchnorm
relu
conv 128 3 pad=1 bias=no
batchnorm
relu
maxpool 2
flatten
dense 128
relu
dense classes
";

/// airbench's network (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU", 2024)
/// with its three blocks' widths: a 2×2 whitening convolution fitted to the data, three blocks of
/// conv → pool → batch norm → GELU → conv → batch norm → GELU (identity-initialised), a global
/// max pool and a bias-free head scaled by 1/9. Batch norm keeps γ = 1 and learns its shift 64×
/// faster.
macro_rules! airbench {
    ($w1:literal, $w2:literal, $w3:literal) => {
        concat!(
            "input 3 32 32\nwhiten 2 bias_epochs=3\ngelu\n",
            airbench!(@block $w1),
            airbench!(@block $w2),
            airbench!(@block $w3),
            "maxpool 3\nflatten\ndense classes bias=no init=uniform\nscale 1/9\n"
        )
    };
    (@block $w:literal) => {
        concat!(
            "conv ", $w, " 3 pad=1 bias=no init=dirac\nmaxpool 2\n",
            "batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=64\ngelu\n",
            "conv ", $w, " 3 pad=1 bias=no init=dirac\n",
            "batchnorm momentum=0.4 eps=1e-12 scale=no lr_scale=64\ngelu\n"
        )
    };
}

const CIFAR_FAST: &str = concat!(
    "# airbench94's network (Keller Jordan, \"94% on CIFAR-10 in 3.29 Seconds on a Single\n",
    "# GPU\", 2024; legacy/airbench94.py of KellerJordan/cifar10-airbench): 64, 256, 256 channels.\n",
    airbench!(64, 256, 256)
);

const CIFAR_FAST_WIDE: &str = concat!(
    "# airbench95's network (Jordan 2024, legacy/airbench95.py of KellerJordan/cifar10-airbench):\n",
    "# cifar-fast with its blocks widened to 128, 384 and 384 channels, 2.5× the multiply-adds.\n",
    airbench!(128, 384, 384)
);

const MNIST_FAST: &str = "\
# Batch-normalised VGG-style network for 28×28 digits.
input 1 28 28
conv 32 3 pad=1 bias=no
batchnorm
relu
conv 32 3 pad=1 bias=no
batchnorm
relu
maxpool 2
conv 64 3 pad=1 bias=no
batchnorm
relu
conv 64 3 pad=1 bias=no
batchnorm
relu
maxpool 2
flatten
dense 256 bias=no
batchnorm
relu
dropout 0.3
dense classes
";

/// The text of a preset, if `name` is one.
pub fn preset(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|p| p.0 == name).map(|p| p.2)
}
