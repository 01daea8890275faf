#!/usr/bin/env bash
# Downloads datasets into data/<name>/ and verifies their checksums.
#
#   scripts/fetch-data.sh [--from DIR] [--dest DIR] NAME...     NAME: mnist fashion-mnist cifar10
#
# Every file is fetched under a temporary name and renamed only once its checksum matches, so a
# final name never holds a partial or corrupt file. Files already present and valid are left
# alone. With --from DIR, files are copied from a local directory instead of the network (DIR or
# DIR/<name>/ holding the same file names; for cifar10 also a cifar10-jpg.tar.gz image-folder copy,
# see below). --dest changes where data/ is (default: the project's data/ folder).
set -euo pipefail

usage() {
    cat >&2 <<'EOF'
usage: scripts/fetch-data.sh [--from DIR] [--dest DIR] NAME...

NAME is one of:
  mnist          MNIST digits (4 IDX .gz files, 11 MB) into DEST/mnist/
  fashion-mnist  Fashion-MNIST (4 IDX .gz files, 30 MB) into DEST/fashion-mnist/
  cifar10        CIFAR-10 binary version (163 MB) into DEST/cifar10/cifar-10-batches-bin/

options:
  --from DIR   copy from a local directory instead of downloading (DIR/<name>/ or DIR itself)
  --dest DIR   where the datasets go (default: the project's data/ folder)

examples:
  scripts/fetch-data.sh mnist
  scripts/fetch-data.sh --from ../shared/data mnist cifar10
EOF
    exit 2
}

die() { echo "fetch-data: $*" >&2; exit 1; }
say() { echo "fetch-data: $*" >&2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
dest="$here/../data"
from=""
names=()
while [ $# -gt 0 ]; do
    case "$1" in
        --from) [ $# -ge 2 ] || usage; from="$2"; shift 2 ;;
        --dest) [ $# -ge 2 ] || usage; dest="$2"; shift 2 ;;
        -h|--help) usage ;;
        mnist|fashion-mnist|cifar10) names+=("$1"); shift ;;
        *) echo "fetch-data: unknown dataset or option '$1'" >&2; usage ;;
    esac
done
[ ${#names[@]} -gt 0 ] || usage
[ -z "$from" ] || [ -d "$from" ] || die "--from $from: not a directory"

# digest ALGO FILE: prints the hex digest (ALGO is sha256 or md5).
digest() {
    case "$1" in
        sha256) if command -v sha256sum >/dev/null; then sha256sum "$2"; else shasum -a 256 "$2"; fi ;;
        md5) if command -v md5sum >/dev/null; then md5sum "$2"; else md5 -r "$2"; fi ;;
    esac | cut -d' ' -f1
}

# verify ALGO SUM FILE: true when FILE exists and has checksum SUM.
verify() { [ -f "$3" ] && [ "$(digest "$1" "$3")" = "$2" ]; }

# download URL OUT
download() {
    if command -v curl >/dev/null; then
        curl -fL --retry 3 --connect-timeout 20 -o "$2" "$1"
    elif command -v wget >/dev/null; then
        wget -q -O "$2" "$1"
    else
        die "neither curl nor wget is installed"
    fi
}

# source_of NAME FILE: the local copy of FILE under --from (DIR/NAME/FILE or DIR/FILE), or "".
source_of() {
    local f
    for f in "$from/$1/$2" "$from/$2"; do
        if [ -f "$f" ]; then echo "$f"; return; fi
    done
}

# fetch NAME URL_BASE FILE ALGO SUM OUT_DIR: puts a verified FILE into OUT_DIR.
fetch() {
    local name=$1 base=$2 file=$3 algo=$4 sum=$5 out=$6
    local final="$out/$file" tmp="$out/.$file.part.$$"
    if verify "$algo" "$sum" "$final"; then
        say "$final: already there"
        return
    fi
    mkdir -p "$out"
    trap 'rm -f "$tmp"' EXIT
    if [ -n "$from" ]; then
        local src
        src=$(source_of "$name" "$file")
        [ -n "$src" ] || die "$file: not found in $from/$name/ or $from/"
        say "copying $src"
        cp "$src" "$tmp"
    else
        say "downloading $base$file"
        download "$base$file" "$tmp" || { rm -f "$tmp"; die "$base$file: download failed"; }
    fi
    local got
    got=$(digest "$algo" "$tmp")
    if [ "$got" != "$sum" ]; then
        rm -f "$tmp"
        die "$file: $algo checksum $got does not match the published $sum; nothing was written"
    fi
    mv -f "$tmp" "$final"
    trap - EXIT
    say "$final: ok ($algo verified)"
}

# MNIST: SHA-256 of the official files (the same files as the project's shared mirror lists).
fetch_mnist() {
    local base=https://ossci-datasets.s3.amazonaws.com/mnist/ out="$dest/mnist"
    fetch mnist $base train-images-idx3-ubyte.gz sha256 0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971 "$out"
    fetch mnist $base train-labels-idx1-ubyte.gz sha256 1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203 "$out"
    fetch mnist $base t10k-images-idx3-ubyte.gz  sha256 1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be "$out"
    fetch mnist $base t10k-labels-idx1-ubyte.gz  sha256 b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b "$out"
}

# Fashion-MNIST: MD5, because its README (github.com/zalandoresearch/fashion-mnist) publishes MD5
# checksums only; we know no SHA-256 from an official source.
fetch_fashion() {
    local base=http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ out="$dest/fashion-mnist"
    fetch fashion-mnist $base train-images-idx3-ubyte.gz md5 8d4fb7e6c68d591d4c3dfef9ec88bf0d "$out"
    fetch fashion-mnist $base train-labels-idx1-ubyte.gz md5 25c81989df183df01b3e8a0aad5dffbe "$out"
    fetch fashion-mnist $base t10k-images-idx3-ubyte.gz  md5 bef4ecab320f06d8554ea6380940ec79 "$out"
    fetch fashion-mnist $base t10k-labels-idx1-ubyte.gz  md5 bb300cfdad3c16e7a12a480ee83cd310 "$out"
}

# True when DIR holds the six CIFAR-10 batches (30,730,000 bytes each) and the class names.
cifar_complete() {
    local f
    for f in data_batch_1 data_batch_2 data_batch_3 data_batch_4 data_batch_5 test_batch; do
        [ -f "$1/$f.bin" ] && [ "$(wc -c <"$1/$f.bin")" -eq 30730000 ] || return 1
    done
    [ -f "$1/batches.meta.txt" ]
}

# CIFAR-10: the official tarball's MD5, as published on https://www.cs.toronto.edu/~kriz/cifar.html
# (no SHA-256 is published). With --from, a cifar10-jpg.tar.gz image-folder copy (with the
# make-cifar10-bin converter beside it) is accepted too.
fetch_cifar10() {
    local out="$dest/cifar10" bin="$dest/cifar10/cifar-10-batches-bin"
    if cifar_complete "$bin"; then
        say "$bin: already there"
        return
    fi
    mkdir -p "$out"
    local work="$out/.extract.$$"
    if [ -z "$from" ] || [ -n "$(source_of cifar10 cifar-10-binary.tar.gz)" ]; then
        fetch cifar10 https://www.cs.toronto.edu/~kriz/ cifar-10-binary.tar.gz md5 c32a1d4ab5d03f1284b67883e8d87530 "$out"
        rm -rf "$work" && mkdir -p "$work"
        trap 'rm -rf "$work"' EXIT
        tar xzf "$out/cifar-10-binary.tar.gz" -C "$work" || die "$out/cifar-10-binary.tar.gz: cannot extract"
        cifar_complete "$work/cifar-10-batches-bin" || die "$out/cifar-10-binary.tar.gz: does not hold the six batches"
        rm -rf "$bin" && mv "$work/cifar-10-batches-bin" "$bin"
        rm -rf "$work" "$out/cifar-10-binary.tar.gz"
        trap - EXIT
        say "$bin: ok"
        return
    fi
    # The project's shared mirror: a JPEG image-folder copy, checksum from its SHA256SUMS.
    local jpg_tar
    jpg_tar=$(source_of cifar10 cifar10-jpg.tar.gz)
    [ -n "$jpg_tar" ] || die "cifar10: neither cifar-10-binary.tar.gz nor cifar10-jpg.tar.gz in $from"
    local sum=4a68df219916287de0a83b8d5a76174700948b8d0978b578ad24092842b7161f got
    got=$(digest sha256 "$jpg_tar")
    [ "$got" = "$sum" ] || die "$jpg_tar: sha256 checksum $got does not match $sum; nothing was written"
    rm -rf "$work" && mkdir -p "$work"
    trap 'rm -rf "$work"' EXIT
    local conv
    conv="$(dirname "$jpg_tar")/make-cifar10-bin"
    if [ -x "$conv" ] && python3 -c 'import PIL' 2>/dev/null; then
        say "converting $jpg_tar to the binary layout with $conv (about 20 s)"
        python3 "$conv" "$work" >&2 || die "$conv failed"
        cifar_complete "$work/cifar-10-batches-bin" || die "$conv: did not write the six batches"
        rm -rf "$bin" && mv "$work/cifar-10-batches-bin" "$bin"
        say "$bin: ok"
    elif [ ! -d "$dest/cifar10-jpg/test" ]; then
        say "no python3 with Pillow (pip install pillow) to run $conv: extracting the image folder only"
        mkdir -p "$work/cifar10-jpg"
        tar xzf "$jpg_tar" -C "$work/cifar10-jpg" || die "$jpg_tar: cannot extract"
    fi
    if [ ! -d "$dest/cifar10-jpg/test" ]; then
        rm -rf "$dest/cifar10-jpg" && mv "$work/cifar10-jpg" "$dest/cifar10-jpg"
        say "$dest/cifar10-jpg: ok (an image folder: --dataset $dest/cifar10-jpg)"
    fi
    rm -rf "$work"
    trap - EXIT
    cifar_complete "$bin" || say "warning: no binary CIFAR-10; use the image folder $dest/cifar10-jpg"
}

for name in "${names[@]}"; do
    case "$name" in
        mnist) fetch_mnist ;;
        fashion-mnist) fetch_fashion ;;
        cifar10) fetch_cifar10 ;;
    esac
done
