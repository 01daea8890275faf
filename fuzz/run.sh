#!/usr/bin/env bash
# Builds one fuzz target with coverage instrumentation and runs libFuzzer on it, on one core.
#
#   fuzz/run.sh TARGET [SECONDS]     TARGET: idx, cifar, model_file or arch; SECONDS: default 60
#   fuzz/run.sh --build-only         builds every target, instrumented
#   fuzz/run.sh --check              type-checks every target (what CI does, so they cannot rot)
#
# Works on the stable toolchain: the instrumentation cargo-fuzz would ask nightly for is given
# by stable codegen flags (LLVM's sanitizer-coverage pass, as libFuzzer expects it), and
# libfuzzer-sys compiles libFuzzer itself from source with the system C++ compiler. No address
# sanitizer: the code under test is safe Rust, so panics, overflows and allocation limits are
# what is looked for.
#
# The committed seeds in corpus/TARGET are read, never written: inputs the fuzzer finds go to
# a scratch corpus (FUZZ_WORK, default a fresh temporary folder), crashes to artifacts/TARGET/.
# Extra arguments after SECONDS go to libFuzzer.
set -euo pipefail
cd "$(dirname "$0")"

TARGETS=(idx cifar model_file arch)
host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing"
# fuzz/Cargo.lock pins the fuzz crate's own dependencies; cnn's come from the root Cargo.toml and
# are resolved against it (not --locked, so a dependency added to cnn does not break this build).
# At most one core for the build as for the run.
jobs=${FUZZ_BUILD_JOBS:-1}

if [ "${1:-}" = "--check" ]; then
    # No instrumentation needed to type-check; a target dir of its own keeps the flags apart.
    RUSTFLAGS= cargo check -j "$jobs" --bins --target-dir target/check
    exit 0
fi
if [ "${1:-}" = "--build-only" ]; then
    cargo build --release --target "$host" -j "$jobs" --bins
    exit 0
fi

target=${1:?usage: fuzz/run.sh TARGET [SECONDS] [libFuzzer flags...] | --build-only | --check}
seconds=${2:-60}
shift $(( $# >= 2 ? 2 : 1 ))
if [[ ! " ${TARGETS[*]} " == *" $target "* ]]; then
    echo "unknown target '$target'; known: ${TARGETS[*]}" >&2
    exit 2
fi
cargo build --release --target "$host" -j "$jobs" --bin "$target"
work=${FUZZ_WORK:-$(mktemp -d)}
mkdir -p "$work" "artifacts/$target"
dict=()
if [ -f "$target.dict" ]; then dict=(-dict="$target.dict"); fi
# -rss_limit_mb: any input that makes a reader allocate past 2 GB is a finding.
exec "target/$host/release/$target" \
    -max_total_time="$seconds" \
    -rss_limit_mb=2048 \
    -max_len=65536 \
    -timeout=10 \
    -print_final_stats=1 \
    -artifact_prefix="artifacts/$target/" \
    "${dict[@]}" \
    "$@" \
    "$work" "corpus/$target"
