//! The fuzz targets on stable, in every `cargo test`: each seed in `fuzz/corpus/<target>/`, each
//! regression input in `tests/fixtures/fuzz/<target>/` (hostile inputs on the edges a reader
//! must refuse cleanly, written by `make-fixtures.py` there; a crash a fuzzer finds goes there
//! too), and a few thousand seeded mutations of the seeds go through the same bodies that
//! `fuzz/run.sh` fuzzes (`fuzz/src/lib.rs`), which assert no panic, bounded allocation and
//! errors that name the file. Coverage-guided fuzzing finds more; this keeps the targets
//! compiling and the known cases fixed.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod targets;

use std::path::{Path, PathBuf};

/// Mutations per seed file.
const MUTATIONS: usize = 400;

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// SplitMix64: a small deterministic generator, so every run tries the same mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four of libFuzzer's simpler mutations: flip a bit, set a byte to an edge value, write
/// a big-endian or little-endian edge `u32`/`u64`, insert or delete bytes, truncate, duplicate
/// a slice, or replace a digit run with a large number (for the text formats).
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len());
        match rng.below(9) {
            0 if !v.is_empty() => v[at] ^= 1 << rng.below(8),
            1 if !v.is_empty() => v[at] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)],
            2 | 3 => {
                let edge =
                    [0u64, 1, 0xff, 0xffff, 0x7fff_ffff, 0xffff_ffff, u64::MAX][rng.below(7)];
                let bytes: Vec<u8> = match rng.below(3) {
                    0 => (edge as u32).to_be_bytes().to_vec(),
                    1 => (edge as u32).to_le_bytes().to_vec(),
                    _ => edge.to_le_bytes().to_vec(),
                };
                for (i, b) in bytes.into_iter().enumerate() {
                    if at + i < v.len() {
                        v[at + i] = b;
                    }
                }
            }
            4 => {
                let b = rng.next() as u8;
                v.insert(at.min(v.len()), b);
            }
            5 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at..end);
            }
            6 => v.truncate(at),
            7 if !v.is_empty() => {
                let end = (at + 1 + rng.below(64)).min(v.len());
                let piece = v[at..end].to_vec();
                let to = rng.below(v.len());
                v.splice(to..to, piece);
            }
            _ => {
                // A digit run (in text) becomes a large or zero number.
                if let Some(start) = (at..v.len()).find(|&i| v[i].is_ascii_digit()) {
                    let end = (start..v.len())
                        .find(|&i| !v[i].is_ascii_digit())
                        .unwrap_or(v.len());
                    let n =
                        ["0", "4097", "65536", "4294967296", "18446744073709551615"][rng.below(5)];
                    v.splice(start..end, n.bytes());
                }
            }
        }
    }
    v
}

fn exercise(target: &str, body: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let seeds = files(&root.join("fuzz/corpus").join(target));
    assert!(!seeds.is_empty(), "no seeds for {target}");
    let regressions = files(&root.join("tests/fixtures/fuzz").join(target));
    assert!(
        !regressions.is_empty(),
        "no regression inputs for {target} in tests/fixtures/fuzz/{target}"
    );
    for f in seeds.iter().chain(&regressions) {
        let bytes = std::fs::read(f).unwrap();
        let result = std::panic::catch_unwind(|| body(&bytes));
        assert!(result.is_ok(), "{target}: {} panics", f.display());
    }
    let mut rng = Rng(0x5EED ^ target.len() as u64);
    for f in &seeds {
        let seed = std::fs::read(f).unwrap();
        for i in 0..MUTATIONS {
            let input = mutate(&seed, &mut rng);
            let result = std::panic::catch_unwind(|| body(&input));
            if result.is_err() {
                let out = std::env::temp_dir().join(format!("cnn-fuzz-{target}-crash"));
                std::fs::write(&out, &input).unwrap();
                panic!(
                    "{target}: mutation {i} of {} panics; input saved to {}",
                    f.display(),
                    out.display()
                );
            }
        }
    }
}

#[test]
fn idx_reader() {
    exercise("idx", targets::idx);
}

#[test]
fn cifar_reader() {
    exercise("cifar", targets::cifar);
}

#[test]
fn model_file_reader() {
    exercise("model_file", targets::model_file);
}

#[test]
fn architecture_parser_and_builder() {
    exercise("arch", targets::arch);
}
