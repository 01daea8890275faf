//! Data loading: every reader on tiny fixtures written here, every kind of bad file refused with
//! one line naming it, determinism of shuffles and augmentation, and the shipped MNIST-mini.
//!
//! The opt-in timing test at the bottom measures the real datasets; see its comment.

use cnn::data::augment::Placement;
use cnn::data::{self, Augment, Dataset, DatasetKind, LoadOptions, Normalization, idx};
use cnn::error::UsageError;
use flate2::Compression;
use flate2::write::GzEncoder;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// A global allocator that remembers the largest single allocation made by each thread, so a test
// can show a lying header does not make the reader allocate what it promises.

struct PeakAlloc;

thread_local! {
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for PeakAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = PEAK.try_with(|p| p.set(p.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

/// Runs `f` and returns its result with the largest single allocation this thread made in it.
fn peak_alloc<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let out = f();
    (out, PEAK.with(|p| p.get()))
}

// ---------------------------------------------------------------------------------------------
// Fixture writers.

fn write(path: &Path, bytes: &[u8], gz: bool) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    if gz {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(bytes).unwrap();
        std::fs::write(path, e.finish().unwrap()).unwrap();
    } else {
        std::fs::write(path, bytes).unwrap();
    }
}

fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 3];
    for d in [n, rows, cols] {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(pixels);
    v
}

fn idx_labels(labels: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, 1];
    v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    v.extend_from_slice(labels);
    v
}

/// Pixel bytes of `n` 2×3 images, distinct per image.
fn pixels(n: usize) -> Vec<u8> {
    (0..n * 6).map(|i| (i * 7 % 256) as u8).collect()
}

/// A tiny MNIST-like folder of 2×3 images: 5 train, 3 test.
fn write_tiny_mnist(dir: &Path, gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    let f = |name: &str| dir.join(format!("{name}{ext}"));
    write(
        &f("train-images-idx3-ubyte"),
        &idx_images(5, 2, 3, &pixels(5)),
        gz,
    );
    write(
        &f("train-labels-idx1-ubyte"),
        &idx_labels(&[0, 1, 2, 9, 4]),
        gz,
    );
    write(
        &f("t10k-images-idx3-ubyte"),
        &idx_images(3, 2, 3, &pixels(3)),
        gz,
    );
    write(&f("t10k-labels-idx1-ubyte"), &idx_labels(&[7, 8, 9]), gz);
}

fn opts() -> LoadOptions {
    LoadOptions::default()
}

fn load_err(dataset: &str, dir: Option<&Path>, input: [usize; 3], o: &LoadOptions) -> String {
    match data::load(dataset, dir, input, o) {
        Ok(_) => panic!("loading {dataset} from {dir:?} should fail"),
        Err(e) => format!("{e:#}"),
    }
}

/// Asserts an error is one line naming `file`, and mentions `what`.
fn assert_names(err: &str, file: &Path, what: &str) {
    assert!(!err.contains('\n'), "error is not one line: {err}");
    let name = file.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&*name),
        "error does not name {}: {err}",
        file.display()
    );
    assert!(err.contains(what), "error does not say '{what}': {err}");
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

// ---------------------------------------------------------------------------------------------
// IDX.

#[test]
fn idx_raw_and_gzip_load_the_same() {
    let (raw, gz) = (tmp(), tmp());
    write_tiny_mnist(raw.path(), false);
    write_tiny_mnist(gz.path(), true);
    let a = data::load("mnist", Some(raw.path()), [1, 2, 3], &opts()).unwrap();
    let b = data::load("mnist", Some(gz.path()), [1, 2, 3], &opts()).unwrap();
    for s in [&a, &b] {
        assert_eq!(s.train.images, pixels(5));
        assert_eq!(s.train.labels, [0, 1, 2, 9, 4]);
        assert_eq!(s.train.shape, [1, 2, 3]);
        let test = s.test.as_ref().unwrap();
        assert_eq!(test.images, pixels(3));
        assert_eq!(test.labels, [7, 8, 9]);
        assert_eq!(
            s.train.classes,
            (0..10).map(|d| d.to_string()).collect::<Vec<_>>()
        );
        assert!(s.val.is_none());
    }
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let d = tmp();
    // Gzip data under the raw name, raw data under the .gz name.
    write(&d.path().join("x"), &idx_labels(&[1, 2, 3]), true);
    write(&d.path().join("y.gz"), &idx_labels(&[4, 5]), false);
    assert_eq!(
        idx::read_labels(&d.path().join("x"), 10).unwrap(),
        [1, 2, 3]
    );
    assert_eq!(
        idx::read_labels(&d.path().join("y.gz"), 10).unwrap(),
        [4, 5]
    );
}

#[test]
fn fashion_mnist_has_its_class_names() {
    let d = tmp();
    write_tiny_mnist(d.path(), true);
    let s = data::load("fashion-mnist", Some(d.path()), [1, 2, 3], &opts()).unwrap();
    assert_eq!(s.train.classes[0], "T-shirt/top");
    assert_eq!(s.train.classes[9], "Ankle boot");
    assert_eq!(s.train.kind, DatasetKind::FashionMnist);
}

#[test]
fn idx_wrong_magic_is_refused() {
    for gz in [false, true] {
        let d = tmp();
        let p = d.path().join("imgs");
        let mut bytes = idx_images(1, 2, 3, &pixels(1));
        bytes[3] = 1; // a label file's magic
        write(&p, &bytes, gz);
        let e = format!("{:#}", idx::read_images(&p).unwrap_err());
        assert_names(&e, &p, "magic number 0x00000801");
        let q = d.path().join("labels");
        write(&q, &idx_images(1, 2, 3, &pixels(1)), gz);
        let e = format!("{:#}", idx::read_labels(&q, 10).unwrap_err());
        assert_names(&e, &q, "magic number 0x00000803");
    }
}

#[test]
fn idx_truncated_files_are_refused() {
    for gz in [false, true] {
        let d = tmp();
        let p = d.path().join("train-images-idx3-ubyte");
        let full = idx_images(4, 2, 3, &pixels(4));
        write(&p, &full[..full.len() - 5], gz);
        let e = format!("{:#}", idx::read_images(&p).unwrap_err());
        assert_names(&e, &p, "header promises 4 images of 2×3 (40 bytes)");
        assert!(e.contains("35 bytes"), "{e}");
        // Shorter than the header itself.
        write(&p, &full[..10], gz);
        let e = format!("{:#}", idx::read_images(&p).unwrap_err());
        assert_names(&e, &p, "truncated");
        // Extra bytes after the promised ones are refused too.
        let mut long = full.clone();
        long.push(0);
        write(&p, &long, gz);
        let e = format!("{:#}", idx::read_images(&p).unwrap_err());
        assert_names(&e, &p, "header promises");
    }
}

#[test]
fn idx_oversized_headers_fail_fast_without_allocating() {
    for gz in [false, true] {
        let d = tmp();
        let p = d.path().join("t10k-images-idx3-ubyte.gz");
        // Four billion 28×28 images promised by a 100-byte file.
        let mut bytes = idx_images(4_000_000_000, 28, 28, &[]);
        bytes.resize(100, 0);
        write(&p, &bytes, gz);
        let start = Instant::now();
        let (r, peak) = peak_alloc(|| idx::read_images(&p));
        let e = format!("{:#}", r.unwrap_err());
        assert_names(&e, &p, "header promises 4000000000 images of 28×28");
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(
            peak < 1 << 20,
            "allocated {peak} bytes for a {}-byte file",
            bytes.len()
        );
        // Absurd dimensions.
        let bytes = idx_images(1, u32::MAX, u32::MAX, &[0; 84]);
        write(&p, &bytes, gz);
        let (r, peak) = peak_alloc(|| idx::read_images(&p));
        let e = format!("{:#}", r.unwrap_err());
        assert_names(&e, &p, "4294967295×4294967295");
        assert!(peak < 1 << 20);
        // Labels: four billion in a short file.
        let q = d.path().join("labels");
        let mut bytes = vec![0, 0, 8, 1];
        bytes.extend_from_slice(&4_000_000_000u32.to_be_bytes());
        bytes.resize(100, 0);
        write(&q, &bytes, gz);
        let (r, peak) = peak_alloc(|| idx::read_labels(&q, 10));
        let e = format!("{:#}", r.unwrap_err());
        assert_names(&e, &q, "header promises 4000000000 labels");
        assert!(peak < 1 << 20);
    }
}

#[test]
fn idx_gzip_bomb_is_bounded_by_the_header() {
    // A gzip file that really decompresses to far more than its header promises: the reader
    // stops one byte past the promise.
    let d = tmp();
    let p = d.path().join("labels.gz");
    let mut bytes = idx_labels(&[1, 2]);
    bytes.resize(50_000_000, 0);
    write(&p, &bytes, true);
    let (r, peak) = peak_alloc(|| idx::read_labels(&p, 10));
    let e = format!("{:#}", r.unwrap_err());
    assert_names(&e, &p, "decompresses to more");
    assert!(peak < 1 << 20, "allocated {peak}");
}

#[test]
fn idx_count_mismatch_is_refused() {
    let d = tmp();
    write_tiny_mnist(d.path(), false);
    let labels = d.path().join("train-labels-idx1-ubyte");
    write(&labels, &idx_labels(&[0, 1, 2, 3]), false);
    let e = load_err("mnist", Some(d.path()), [1, 2, 3], &opts());
    assert_names(&e, &labels, "holds 5 images but");
    assert!(e.contains("train-images-idx3-ubyte"));
}

#[test]
fn idx_label_out_of_range_is_refused() {
    let d = tmp();
    write_tiny_mnist(d.path(), true);
    let labels = d.path().join("t10k-labels-idx1-ubyte.gz");
    write(&labels, &idx_labels(&[1, 10, 3]), true);
    let e = load_err("mnist", Some(d.path()), [1, 2, 3], &opts());
    assert_names(
        &e,
        &labels,
        "label 10 at index 1 is not below the class count 10",
    );
}

#[test]
fn idx_corrupt_gzip_is_refused() {
    let d = tmp();
    let p = d.path().join("train-images-idx3-ubyte.gz");
    // A gzip header followed by garbage.
    let mut bytes = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    bytes.extend((0..200u32).map(|i| (i * 37 % 251) as u8));
    std::fs::write(&p, &bytes).unwrap();
    let e = format!("{:#}", idx::read_images(&p).unwrap_err());
    assert_names(&e, &p, "");
    // A valid stream cut short.
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(&idx_images(50, 2, 3, &pixels(50))).unwrap();
    let gz = e.finish().unwrap();
    std::fs::write(&p, &gz[..gz.len() / 2]).unwrap();
    let e = format!("{:#}", idx::read_images(&p).unwrap_err());
    assert_names(&e, &p, "");
}

#[test]
fn missing_files_are_named() {
    let d = tmp();
    let e = load_err("mnist", Some(d.path()), [1, 28, 28], &opts());
    assert_names(
        &e,
        &d.path().join("train-images-idx3-ubyte.gz"),
        "fetch-data.sh mnist",
    );
    let e = load_err("cifar10", Some(d.path()), [3, 32, 32], &opts());
    assert!(e.contains("fetch-data.sh cifar10"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// CIFAR-10.

const CIFAR_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// A synthetic 3×32×32 image, different for every `seed`.
fn rgb_planes(seed: usize) -> Vec<u8> {
    (0..3072)
        .map(|i| ((i * 31 + seed * 101 + (i / 1024) * 57) % 256) as u8)
        .collect()
}

fn record(label: u8, planes: &[u8]) -> Vec<u8> {
    let mut r = vec![label];
    r.extend_from_slice(planes);
    r
}

/// Writes CIFAR binary batches: 2 records in each training file, 10 in the test file, image
/// `k` of a split has label `k % 10` and pixels `rgb_planes(k)` (test: `rgb_planes(100 + k)`).
fn write_tiny_cifar(bin: &Path) {
    std::fs::create_dir_all(bin).unwrap();
    for f in 0..5 {
        let mut bytes = Vec::new();
        for k in 2 * f..2 * f + 2 {
            bytes.extend(record((k % 10) as u8, &rgb_planes(k)));
        }
        std::fs::write(bin.join(format!("data_batch_{}.bin", f + 1)), bytes).unwrap();
    }
    let mut bytes = Vec::new();
    for k in 0..10 {
        bytes.extend(record(k as u8, &rgb_planes(100 + k)));
    }
    std::fs::write(bin.join("test_batch.bin"), bytes).unwrap();
    std::fs::write(
        bin.join("batches.meta.txt"),
        CIFAR_CLASSES.join("\n") + "\n\n",
    )
    .unwrap();
}

#[test]
fn cifar_binary_loads_from_the_batches_folder_or_its_parent() {
    let d = tmp();
    let bin = d.path().join("cifar-10-batches-bin");
    write_tiny_cifar(&bin);
    for dir in [d.path(), bin.as_path()] {
        let s = data::load("cifar10", Some(dir), [3, 32, 32], &opts()).unwrap();
        assert_eq!(s.train.len(), 10);
        assert_eq!(s.train.shape, [3, 32, 32]);
        assert_eq!(s.train.labels, (0..10).collect::<Vec<u16>>());
        assert_eq!(s.train.image(3), &rgb_planes(3)[..]);
        let test = s.test.unwrap();
        assert_eq!(test.image(9), &rgb_planes(109)[..]);
        assert_eq!(test.classes, CIFAR_CLASSES);
    }
}

#[test]
fn cifar_bad_files_are_refused() {
    let d = tmp();
    write_tiny_cifar(d.path());
    let test = d.path().join("test_batch.bin");
    let mut bytes = std::fs::read(&test).unwrap();
    bytes.pop();
    std::fs::write(&test, &bytes).unwrap();
    let e = load_err("cifar10", Some(d.path()), [3, 32, 32], &opts());
    assert_names(
        &e,
        &test,
        "not a whole number of 3073-byte CIFAR-10 records",
    );

    write_tiny_cifar(d.path());
    let batch = d.path().join("data_batch_4.bin");
    let mut bytes = std::fs::read(&batch).unwrap();
    bytes[3073] = 10;
    std::fs::write(&batch, &bytes).unwrap();
    let e = load_err("cifar10", Some(d.path()), [3, 32, 32], &opts());
    assert_names(&e, &batch, "record 1 has label 10");

    write_tiny_cifar(d.path());
    let meta = d.path().join("batches.meta.txt");
    std::fs::write(&meta, "cat\ndog\n").unwrap();
    let e = load_err("cifar10", Some(d.path()), [3, 32, 32], &opts());
    assert_names(&e, &meta, "holds 2 class names, expected 10");

    write_tiny_cifar(d.path());
    std::fs::remove_file(d.path().join("data_batch_5.bin")).unwrap();
    let e = load_err("cifar10", Some(d.path()), [3, 32, 32], &opts());
    assert_names(&e, &d.path().join("data_batch_5.bin"), "cannot open");
}

#[test]
fn shape_mismatch_is_a_usage_error() {
    let d = tmp();
    write_tiny_cifar(d.path());
    let e = data::load("cifar10", Some(d.path()), [1, 28, 28], &opts()).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some());
    assert!(
        e.to_string()
            .contains("3×32×32 but the network takes 1×28×28"),
        "{e}"
    );
    let e = data::load("no-such-set", None, [1, 28, 28], &opts()).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
    assert!(
        e.to_string().contains("mnist, fashion-mnist, cifar10"),
        "{e}"
    );
    let bad = LoadOptions {
        val_split: 1.0,
        ..opts()
    };
    let e = data::load("cifar10", Some(d.path()), [3, 32, 32], &bad).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some(), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Image folders.

fn save_rgb(path: &Path, planes: &[u8], w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let plane = (w * h) as usize;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let i = (y * w + x) as usize;
        image::Rgb([planes[i], planes[plane + i], planes[2 * plane + i]])
    });
    img.save(path).unwrap();
}

fn save_grey(path: &Path, value: u8, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::GrayImage::from_pixel(w, h, image::Luma([value]));
    if path.extension().is_some_and(|e| e == "gif") {
        // The GIF encoder takes RGB(A) only.
        image::DynamicImage::ImageLuma8(img)
            .to_rgba8()
            .save(path)
            .unwrap();
    } else {
        img.save(path).unwrap();
    }
}

#[test]
fn image_folder_and_cifar_binary_agree() {
    // The same synthetic images written as PNGs in class folders and as binary records load to
    // identical bytes and labels: same RGB plane order, same class order.
    let d = tmp();
    let folder = d.path().join("pngs");
    for k in 0..10 {
        let class = CIFAR_CLASSES[k % 10];
        save_rgb(
            &folder.join(format!("train/{class}/{k:03}.png")),
            &rgb_planes(k),
            32,
            32,
        );
        save_rgb(
            &folder.join(format!("test/{class}/{k:03}.png")),
            &rgb_planes(100 + k),
            32,
            32,
        );
    }
    let bin = d.path().join("bin");
    write_tiny_cifar(&bin);
    let a = data::load(folder.to_str().unwrap(), None, [3, 32, 32], &opts()).unwrap();
    let b = data::load("cifar10", Some(&bin), [3, 32, 32], &opts()).unwrap();
    assert_eq!(a.train.classes, b.train.classes);
    assert_eq!(a.train.labels, b.train.labels);
    assert!(a.train.images == b.train.images, "train images differ");
    let (at, bt) = (a.test.unwrap(), b.test.unwrap());
    assert_eq!(at.labels, bt.labels);
    assert!(at.images == bt.images, "test images differ");
}

#[test]
fn image_folder_with_png_and_jpeg() {
    let d = tmp();
    let root = d.path();
    save_grey(&root.join("train/zebra/a.png"), 200, 8, 8);
    save_grey(&root.join("train/zebra/b.jpg"), 100, 8, 8);
    save_grey(&root.join("train/ant/c.png"), 10, 4, 4); // resized to 8×8
    std::fs::write(root.join("train/ant/.DS_Store"), b"junk").unwrap(); // hidden: ignored
    std::fs::create_dir_all(root.join("train/.cache")).unwrap(); // hidden: not a class
    save_grey(&root.join("test/ant/d.bmp"), 50, 8, 8);
    save_grey(&root.join("test/zebra/e.gif"), 250, 8, 8);
    let s = data::load(root.to_str().unwrap(), None, [1, 8, 8], &opts()).unwrap();
    assert_eq!(s.train.classes, ["ant", "zebra"]);
    assert_eq!(s.train.labels, [0, 1, 1]);
    assert_eq!(s.train.shape, [1, 8, 8]);
    assert!(s.train.image(0).iter().all(|&p| p == 10));
    assert!(s.train.image(1).iter().all(|&p| p == 200));
    assert!(
        s.train.image(2).iter().all(|&p| p.abs_diff(100) <= 2),
        "JPEG is lossy"
    );
    let test = s.test.unwrap();
    assert_eq!(test.labels, [0, 1]);
    assert!(test.image(1).iter().all(|&p| p == 250));
    // The same grey images as a 3-channel input: each channel repeats the grey value.
    let s = data::load(root.to_str().unwrap(), None, [3, 4, 4], &opts()).unwrap();
    assert_eq!(s.train.shape, [3, 4, 4]);
    assert!(s.train.image(1).iter().all(|&p| p == 200));
}

#[test]
fn image_folder_without_train_is_the_training_set_and_val_split_carves() {
    let d = tmp();
    for (c, class) in ["a", "b"].iter().enumerate() {
        for i in 0..10 {
            save_grey(
                &d.path().join(format!("{class}/{i}.png")),
                (c * 100 + i) as u8,
                2,
                2,
            );
        }
    }
    let root = d.path().to_str().unwrap();
    let o = LoadOptions {
        val_split: 0.2,
        seed: 3,
        ..opts()
    };
    let s = data::load(root, None, [1, 2, 2], &o).unwrap();
    assert_eq!(s.train.len(), 16);
    let val = s.val.unwrap();
    assert_eq!(val.class_counts(), [2, 2], "stratified");
    assert!(s.test.is_none());
    // eval falls back to the same held-out images.
    let (ev, skipped) = data::load_eval(root, None, [1, 2, 2], &o).unwrap();
    assert_eq!((ev.images, ev.labels, skipped), (val.images, val.labels, 0));
    // Without a split there is nothing to evaluate on.
    let e = data::load_eval(root, None, [1, 2, 2], &opts()).unwrap_err();
    assert!(
        format!("{e:#}").contains("no test/ or val/ folder"),
        "{e:#}"
    );
}

#[test]
fn image_folder_errors_name_the_folder_or_file() {
    let d = tmp();
    let root = d.path();
    save_grey(&root.join("train/a/1.png"), 1, 2, 2);
    save_grey(&root.join("train/b/1.png"), 2, 2, 2);
    save_grey(&root.join("train/b/2.png"), 3, 2, 2);
    let path = root.to_str().unwrap();

    // A non-image in a class folder: an error naming it, or skipped and counted.
    let bad = root.join("train/b/notes.txt");
    std::fs::write(&bad, b"not an image").unwrap();
    let e = load_err(path, None, [1, 2, 2], &opts());
    assert_names(&e, &bad, "not an image");
    // A truncated PNG too.
    let png = std::fs::read(root.join("train/b/2.png")).unwrap();
    let cut = root.join("train/a/cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let skip = LoadOptions {
        skip_bad: true,
        ..opts()
    };
    let s = data::load(path, None, [1, 2, 2], &skip).unwrap();
    assert_eq!(s.skipped, 2);
    assert_eq!(s.train.labels, [0, 1, 1]);
    assert_eq!(s.train.images, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
    std::fs::remove_file(&bad).unwrap();
    std::fs::remove_file(&cut).unwrap();

    // An empty class folder.
    std::fs::create_dir_all(root.join("train/c")).unwrap();
    std::fs::write(root.join("train/c/.hidden"), b"").unwrap();
    let e = load_err(path, None, [1, 2, 2], &opts());
    assert_names(&e, &root.join("train/c"), "empty class folder");
    std::fs::remove_dir_all(root.join("train/c")).unwrap();

    // test/ with different class folders.
    save_grey(&root.join("test/a/1.png"), 1, 2, 2);
    save_grey(&root.join("test/z/1.png"), 1, 2, 2);
    let e = load_err(path, None, [1, 2, 2], &opts());
    assert_names(&e, &root.join("test"), "missing [b], not in train [z]");

    // An IDX folder given as an image folder gets a hint.
    let mini = manifest_dir().join("data/mnist-mini");
    let e = load_err(mini.to_str().unwrap(), None, [1, 28, 28], &opts());
    assert!(e.contains("use --dataset mnist"), "{e}");

    // --data-dir with a folder dataset is a usage error.
    let e = data::load(path, Some(root), [1, 2, 2], &opts()).unwrap_err();
    assert!(e.downcast_ref::<UsageError>().is_some());
}

// ---------------------------------------------------------------------------------------------
// Validation split, shuffling, augmentation, normalisation, batches.

fn synthetic(labels: &[u16], shape: [usize; 3], classes: usize) -> Dataset {
    let len: usize = shape.iter().product();
    Dataset {
        name: "synthetic".into(),
        kind: DatasetKind::Mnist,
        images: (0..labels.len() * len).map(|i| (i % 251) as u8).collect(),
        labels: labels.to_vec(),
        shape,
        classes: (0..classes).map(|c| c.to_string()).collect(),
    }
}

#[test]
fn val_split_is_seeded_stratified_and_disjoint() {
    let labels: Vec<u16> = (0..1000).map(|i| (i % 7 + i % 3) as u16).collect();
    let ds = synthetic(&labels, [1, 1, 1], 9);
    let mask = data::split::val_mask(&ds, 0.1, 42);
    assert_eq!(mask, data::split::val_mask(&ds, 0.1, 42));
    assert_ne!(mask, data::split::val_mask(&ds, 0.1, 43));
    let (train, val) = data::split::carve(&ds, 0.1, 42).unwrap();
    assert_eq!(train.len() + val.len(), 1000);
    for (c, (&n, &v)) in ds
        .class_counts()
        .iter()
        .zip(&val.class_counts())
        .enumerate()
    {
        assert_eq!(v, (n as f64 * 0.1).round() as usize, "class {c}");
    }
    let (train_b, _) = data::split::carve(&ds, 0.1, 42).unwrap();
    assert_eq!(train.images, train_b.images);
}

#[test]
fn named_datasets_carve_validation_from_train() {
    let d = tmp();
    write_tiny_cifar(d.path());
    let o = LoadOptions {
        val_split: 0.3,
        seed: 1,
        ..opts()
    };
    let s = data::load("cifar10", Some(d.path()), [3, 32, 32], &o).unwrap();
    // One of each class: round(0.3) = 0 per class, so at least one image is held out.
    assert_eq!(s.train.len() + s.val.as_ref().unwrap().len(), 10);
    assert!(!s.val.unwrap().is_empty());
    assert_eq!(s.test.unwrap().len(), 10);
}

#[test]
fn epoch_order_is_deterministic_per_seed_and_epoch() {
    let a = data::epoch_order(7, 0, 100);
    assert_eq!(a, data::epoch_order(7, 0, 100));
    assert_ne!(a, data::epoch_order(7, 1, 100));
    assert_ne!(a, data::epoch_order(8, 0, 100));
    let mut s = a.clone();
    s.sort();
    assert_eq!(s, (0..100).collect::<Vec<_>>());
    assert!(data::epoch_order(1, 2, 0).is_empty());
}

#[test]
fn placements_hand_worked() {
    // A 1×2×3 image:  1 2 3
    //                 4 5 6
    let img = [1, 2, 3, 4, 5, 6];
    let flip = Placement {
        flip: true,
        dy: 0,
        dx: 0,
        reflect: false,
    };
    assert_eq!(flip.apply(&img, [1, 2, 3]), [3, 2, 1, 6, 5, 4]);
    // Content moves right by 1 and down by 1; zeros come in from the left and the top.
    let shift = Placement {
        flip: false,
        dy: 1,
        dx: 1,
        reflect: false,
    };
    assert_eq!(shift.apply(&img, [1, 2, 3]), [0, 0, 0, 0, 1, 2]);
    // Up and left by 1.
    let shift = Placement {
        flip: false,
        dy: -1,
        dx: -1,
        reflect: false,
    };
    assert_eq!(shift.apply(&img, [1, 2, 3]), [5, 6, 0, 0, 0, 0]);
    // Flip, then right by 2: flipped rows are 3 2 1 / 6 5 4.
    let both = Placement {
        flip: true,
        dy: 0,
        dx: 2,
        reflect: false,
    };
    assert_eq!(both.apply(&img, [1, 2, 3]), [0, 0, 3, 0, 0, 6]);
    // Out of range entirely: all zeros. Channels move together.
    let far = Placement {
        flip: false,
        dy: 0,
        dx: 3,
        reflect: false,
    };
    assert_eq!(far.apply(&img, [2, 1, 3]), [0; 6]);
    let two = [1, 2, 3, 10, 20, 30];
    let p = Placement {
        flip: true,
        dy: 0,
        dx: 1,
        reflect: false,
    };
    assert_eq!(p.apply(&two, [2, 1, 3]), [0, 3, 2, 0, 30, 20]);
}

#[test]
fn augmentation_is_deterministic_and_in_range() {
    let aug = Augment {
        pad_crop: 4,
        flip: true,
        ..Augment::none()
    };
    let s0 = Augment::epoch_seed(5, 0);
    assert_eq!(aug.placement(s0, 17), aug.placement(s0, 17));
    let (mut flips, mut dxs) = (0, std::collections::BTreeSet::new());
    let mut differ_by_epoch = 0;
    for i in 0..2000 {
        let p = aug.placement(s0, i);
        assert!(p.dx.abs() <= 4 && p.dy.abs() <= 4);
        flips += p.flip as usize;
        dxs.insert(p.dx);
        differ_by_epoch += (p != aug.placement(Augment::epoch_seed(5, 1), i)) as usize;
    }
    assert!((800..1200).contains(&flips), "{flips} flips of 2000");
    assert_eq!(dxs.len(), 9, "offsets -4..=4 all occur");
    assert!(differ_by_epoch > 1900);
    assert_eq!(Augment::none().placement(s0, 3), Placement::IDENTITY);
    let digits = Augment::for_dataset(&DatasetKind::Mnist, 1);
    assert_eq!((digits.shift, digits.flip, digits.pad_crop), (2, false, 0));
    let cifar = Augment::for_dataset(&DatasetKind::Cifar10, 3);
    assert_eq!((cifar.shift, cifar.flip, cifar.pad_crop), (0, true, 4));
}

#[test]
fn normalization_hand_worked() {
    // Channel 0 holds 0 and 255 (mean 0.5, population std 0.5); channel 1 is constant 51
    // (mean 0.2, std 0 which is guarded to 1).
    let ds = Dataset {
        images: vec![0, 51, 255, 51],
        ..synthetic(&[0, 0], [2, 1, 1], 1)
    };
    let n = Normalization::from_dataset(&ds);
    assert_eq!(n.mean, [0.5, 0.2]);
    assert_eq!(n.std, [0.5, 1.0]);
    n.check(2).unwrap();
    assert!(n.check(3).is_err());
    let mut out = [0f32; 2];
    n.apply(&[255, 102], [2, 1, 1], &mut out);
    // (1 − 0.5)/0.5 = 1; (0.4 − 0.2)/1 = 0.2.
    assert!(
        (out[0] - 1.0).abs() < 1e-6 && (out[1] - 0.2).abs() < 1e-6,
        "{out:?}"
    );
}

#[test]
fn batches_match_the_reference_and_reuse_their_buffers() {
    let labels: Vec<u16> = (0..40).map(|i| (i % 10) as u16).collect();
    let ds = synthetic(&labels, [3, 5, 7], 10);
    let norm = Normalization {
        mean: vec![0.1, 0.5, 0.9],
        std: vec![0.2, 0.3, 0.0],
    };
    let aug = Augment {
        pad_crop: 2,
        flip: true,
        shift: 1,
        reflect: true,
        alternate_flip: true,
    };
    let mut b = data::Batcher::new();
    let order = data::epoch_order(9, 3, ds.len());
    for chunk in order.chunks(16) {
        b.fill(&ds, chunk, &norm, &aug, 9, 3);
        assert_eq!(b.x.shape(), [chunk.len(), 3, 5, 7]);
        let ptr = b.x.as_ptr();
        let es = Augment::epoch_seed(9, 3);
        for (k, &i) in chunk.iter().enumerate() {
            assert_eq!(b.labels[k], labels[i] as usize);
            let placed = aug.placement(es, i).apply(ds.image(i), ds.shape);
            let mut want = vec![0f32; 105];
            norm.apply(&placed, ds.shape, &mut want);
            let got = &b.x.as_slice().unwrap()[k * 105..(k + 1) * 105];
            for (g, w) in got.iter().zip(&want) {
                assert!((g - w).abs() < 1e-5, "{g} vs {w}");
            }
        }
        // Same batch again: same buffer, same values.
        let before = b.x.clone();
        b.fill(&ds, chunk, &norm, &aug, 9, 3);
        assert_eq!(b.x.as_ptr(), ptr);
        assert_eq!(b.x, before);
    }
}

// ---------------------------------------------------------------------------------------------
// The shipped data.

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shipped_mnist_mini_loads() {
    let dir = manifest_dir().join("data/mnist-mini");
    let s = data::load("mnist", Some(&dir), [1, 28, 28], &opts()).unwrap();
    assert_eq!(s.train.len(), 3000);
    let test = s.test.unwrap();
    assert_eq!(test.len(), 500);
    assert!(s.train.labels.iter().chain(&test.labels).all(|&l| l < 10));
    assert_eq!(s.train.images.len(), 3000 * 784);
    assert!(s.train.class_counts().iter().all(|&c| c > 200));
    let n = Normalization::from_dataset(&s.train);
    // Near the full set's 0.1307 / 0.3081.
    assert!(
        (n.mean[0] - 0.1307).abs() < 0.01 && (n.std[0] - 0.3081).abs() < 0.01,
        "{n:?}"
    );
}

#[test]
fn shipped_samples_are_the_digits() {
    for d in 0..10 {
        let img =
            data::image::decode(&manifest_dir().join(format!("data/samples/{d}.png"))).unwrap();
        assert_eq!(data::image::to_input(&img, [1, 28, 28]).len(), 784);
    }
}

// ---------------------------------------------------------------------------------------------
// Opt-in timing on the real datasets (needs release-like speed; the dev profile here builds
// dependencies at opt-level 3 and this crate at 1). Run with, e.g.:
//
//   CNN_MNIST_DIR=../shared/data/mnist CNN_CIFAR_DIR=/tmp/cifar \
//     cargo test --test integration -- --ignored --nocapture load_times
//
// CNN_CIFAR_DIR holds cifar-10-batches-bin/ and cifar10-jpg/ (as `make-cifar10-bin DIR` writes).
// Either variable may be left out to skip that part.

fn timed<T>(what: &str, limit: f64, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = f();
    let secs = start.elapsed().as_secs_f64();
    println!("{what}: {secs:.2} s (limit {limit} s)");
    assert!(secs < limit, "{what} took {secs:.2} s");
    out
}

#[test]
#[ignore]
fn load_times() {
    let (mnist, cifar) = crate::common::mnist_and_cifar_dirs();
    if let Some(dir) = mnist {
        let s = timed("MNIST (gzip IDX, 70,000 images)", 1.0, || {
            data::load("mnist", Some(Path::new(&dir)), [1, 28, 28], &opts()).unwrap()
        });
        assert_eq!((s.train.len(), s.test.unwrap().len()), (60_000, 10_000));
        let n = timed("MNIST normalisation statistics", 0.5, || {
            Normalization::from_dataset(&s.train)
        });
        println!("MNIST mean {:.4} std {:.4}", n.mean[0], n.std[0]);
    }
    if let Some(dir) = cifar {
        let dir = PathBuf::from(dir);
        let s = timed("CIFAR-10 binary (60,000 images)", 2.0, || {
            data::load("cifar10", Some(&dir), [3, 32, 32], &opts()).unwrap()
        });
        assert_eq!(
            (s.train.len(), s.test.as_ref().unwrap().len()),
            (50_000, 10_000)
        );
        let jpg = dir.join("cifar10-jpg");
        let f = timed("CIFAR-10 JPEG folder (60,000 files)", 15.0, || {
            data::load(jpg.to_str().unwrap(), None, [3, 32, 32], &opts()).unwrap()
        });
        assert_eq!(f.train.classes, s.train.classes);
        assert_eq!(f.train.len(), 50_000);
    }
}

// ---------------------------------------------------------------------------------------------
// scripts/fetch-data.sh (offline: the --from path only).

fn fetch_script(args: &[&str]) -> std::process::Output {
    std::process::Command::new("bash")
        .arg(manifest_dir().join("scripts/fetch-data.sh"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn fetch_script_refuses_bad_checksums_and_bad_usage() {
    // The shipped MNIST-mini files have the canonical names but not the full set's checksums.
    let d = tmp();
    let dest = d.path().join("data");
    let mini = manifest_dir().join("data/mnist-mini");
    let out = fetch_script(&[
        "--dest",
        dest.to_str().unwrap(),
        "--from",
        mini.to_str().unwrap(),
        "mnist",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not match the published"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dest.join("mnist")).unwrap().collect();
    assert!(left.is_empty(), "files left behind: {left:?}");

    let out = fetch_script(&["--dest", dest.to_str().unwrap(), "svhn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"));
    let out = fetch_script(&[]);
    assert_eq!(out.status.code(), Some(2));
}

/// Opt-in, needs the project's shared data mirror:
///   CNN_SHARED_DATA=../shared/data cargo test --test integration -- --ignored fetch_script_copies
#[test]
#[ignore]
fn fetch_script_copies_from_a_local_mirror() {
    let shared = std::env::var("CNN_SHARED_DATA")
        .expect("set CNN_SHARED_DATA to the shared data mirror (see this test's comment)");
    let d = tmp();
    let dest = d.path().join("data");
    let args = ["--dest", dest.to_str().unwrap(), "--from", &shared, "mnist"];
    let out = fetch_script(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = data::load("mnist", Some(&dest.join("mnist")), [1, 28, 28], &opts()).unwrap();
    assert_eq!(s.train.len(), 60_000);
    // A second run finds everything in place.
    let out = fetch_script(&args);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already there"));
}
