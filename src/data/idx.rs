//! The IDX format of MNIST and Fashion-MNIST, raw or gzip-compressed.
//!
//! Layout (big-endian): a magic number `0x00000803` (unsigned bytes, 3 dimensions) for images or
//! `0x00000801` (1 dimension) for labels, then one `u32` per dimension (count, rows, cols for
//! images; count for labels), then the bytes, image after image, each row-major.
//!
//! Safety against bad files: the header says exactly how many bytes follow, and that is checked
//! before anything of that size is allocated. A raw file is compared with its size on disk. A gzip
//! file (recognised by its magic bytes `1f 8b`, whatever its name) is first checked against
//! deflate's largest possible expansion, then read through a reader bounded at one byte past the
//! promised length into a buffer that grows only as real data arrives.

use super::{Dataset, DatasetKind, Part};
use anyhow::{Context, Result, bail};
use flate2::read::MultiGzDecoder;
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};

pub const IMAGES_MAGIC: u32 = 0x0000_0803;
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// Deflate cannot expand data by more than about 1032:1 (a 258-byte match coded in 2 bits), so a
/// gzip file promising more than this many bytes per compressed byte cannot hold them.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// Largest side of an IDX image we accept; far above any real IDX set.
const MAX_SIDE: u32 = 4096;

/// Fashion-MNIST's classes, from its README (github.com/zalandoresearch/fashion-mnist).
pub const FASHION_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Classes of an IDX dataset: digits for MNIST, the garment names for Fashion-MNIST.
pub fn classes(kind: &DatasetKind) -> Vec<String> {
    match kind {
        DatasetKind::FashionMnist => FASHION_CLASSES.iter().map(|s| s.to_string()).collect(),
        _ => (0..10).map(|d| d.to_string()).collect(),
    }
}

/// Loads one part of MNIST or Fashion-MNIST from the four canonical files in `dir`
/// (`train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`,
/// `t10k-labels-idx1-ubyte`, each raw or with `.gz`).
///
/// Shapes: files → `N×1×rows×cols` bytes and `N` labels.
pub fn load(kind: &DatasetKind, dir: &Path, part: Part) -> Result<Dataset> {
    let prefix = match part {
        Part::Train => "train",
        Part::Test => "t10k",
    };
    let classes = classes(kind);
    let image_path = find(dir, &format!("{prefix}-images-idx3-ubyte"), kind)?;
    let label_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"), kind)?;
    let (images, labels) = rayon::join(
        || read_images(&image_path),
        || read_labels(&label_path, classes.len()),
    );
    let (images, [rows, cols]) = images?;
    let labels = labels?;
    let n = images.len() / (rows * cols);
    if n != labels.len() {
        bail!(
            "{}: holds {n} images but {} holds {} labels",
            image_path.display(),
            label_path.display(),
            labels.len()
        );
    }
    Ok(Dataset {
        name: format!("{} {} ({})", kind.name(), part.name(), dir.display()),
        kind: kind.clone(),
        images,
        labels,
        shape: [1, rows, cols],
        classes,
    })
}

/// `dir/base` or `dir/base.gz`, whichever exists.
fn find(dir: &Path, base: &str, kind: &DatasetKind) -> Result<PathBuf> {
    let raw = dir.join(base);
    let gz = dir.join(format!("{base}.gz"));
    for p in [&gz, &raw] {
        if p.is_file() {
            return Ok(p.clone());
        }
    }
    bail!(
        "{}: not found (nor {}); download {} with `scripts/fetch-data.sh {}` or point --data-dir \
         at the folder holding its IDX files",
        gz.display(),
        raw.display(),
        kind.name(),
        kind.name()
    )
}

/// Reads an IDX image file. Returns the bytes (`N×rows×cols`) and `[rows, cols]`.
pub fn read_images(path: &Path) -> Result<(Vec<u8>, [usize; 2])> {
    images_from(IdxFile::open(path)?)
}

/// [`read_images`] on the bytes of a file (raw or gzip), with `name` standing for the file in
/// error messages; the same checks, in the same order.
pub fn parse_images(bytes: &[u8], name: &str) -> Result<(Vec<u8>, [usize; 2])> {
    images_from(IdxFile::new(
        name.to_string(),
        bytes.len() as u64,
        Cursor::new(bytes),
    )?)
}

fn images_from(mut file: IdxFile<'_>) -> Result<(Vec<u8>, [usize; 2])> {
    let mut header = [0u8; 16];
    file.header(&mut header)?;
    let path = file.name.clone();
    let magic = be32(&header[0..4]);
    if magic != IMAGES_MAGIC {
        bail!(
            "{path}: not an IDX image file (magic number {magic:#010x}, expected {IMAGES_MAGIC:#010x})"
        );
    }
    let (n, rows, cols) = (
        be32(&header[4..8]),
        be32(&header[8..12]),
        be32(&header[12..16]),
    );
    if rows == 0 || cols == 0 || rows > MAX_SIDE || cols > MAX_SIDE {
        bail!("{path}: header says images are {rows}×{cols}; expected sides from 1 to {MAX_SIDE}");
    }
    let payload = n as u64 * rows as u64 * cols as u64;
    let what = format!("{n} images of {rows}×{cols}");
    let images = file.payload(payload, 16, &what)?;
    Ok((images, [rows as usize, cols as usize]))
}

/// Reads an IDX label file, checking every label is below `classes`.
pub fn read_labels(path: &Path, classes: usize) -> Result<Vec<u16>> {
    labels_from(IdxFile::open(path)?, classes)
}

/// [`read_labels`] on the bytes of a file (raw or gzip), with `name` standing for the file.
pub fn parse_labels(bytes: &[u8], classes: usize, name: &str) -> Result<Vec<u16>> {
    labels_from(
        IdxFile::new(name.to_string(), bytes.len() as u64, Cursor::new(bytes))?,
        classes,
    )
}

fn labels_from(mut file: IdxFile<'_>, classes: usize) -> Result<Vec<u16>> {
    let mut header = [0u8; 8];
    file.header(&mut header)?;
    let path = file.name.clone();
    let magic = be32(&header[0..4]);
    if magic != LABELS_MAGIC {
        bail!(
            "{path}: not an IDX label file (magic number {magic:#010x}, expected {LABELS_MAGIC:#010x})"
        );
    }
    let n = be32(&header[4..8]);
    let bytes = file.payload(n as u64, 8, &format!("{n} labels"))?;
    if let Some(i) = bytes.iter().position(|&l| l as usize >= classes) {
        bail!(
            "{path}: label {} at index {i} is not below the class count {classes}",
            bytes[i]
        );
    }
    Ok(bytes.into_iter().map(u16::from).collect())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// An open IDX file (or the bytes of one), raw or gzip, that knows its name for error messages.
struct IdxFile<'a> {
    /// The path as shown in messages.
    name: String,
    /// Size on disk.
    size: u64,
    reader: Box<dyn Read + 'a>,
    gzip: bool,
}

impl<'a> IdxFile<'a> {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let size = file
            .metadata()
            .with_context(|| format!("{}: cannot read", path.display()))?
            .len();
        IdxFile::new(path.display().to_string(), size, file)
    }

    /// Wraps `source` of `size` bytes, looking at its first two bytes for the gzip magic.
    fn new(name: String, size: u64, mut source: impl Read + Seek + 'a) -> Result<Self> {
        let mut magic = [0u8; 2];
        let got =
            read_full(&mut source, &mut magic).with_context(|| format!("{name}: cannot read"))?;
        source
            .rewind()
            .with_context(|| format!("{name}: cannot read"))?;
        let gzip = got == 2 && magic == [0x1f, 0x8b];
        let reader: Box<dyn Read + 'a> = if gzip {
            Box::new(MultiGzDecoder::new(BufReader::with_capacity(
                1 << 16,
                source,
            )))
        } else {
            Box::new(source)
        };
        Ok(IdxFile {
            name,
            size,
            reader,
            gzip,
        })
    }

    fn err_read(&self, e: std::io::Error) -> anyhow::Error {
        if self.gzip {
            anyhow::anyhow!("{}: corrupt gzip data: {e}", self.name)
        } else {
            anyhow::anyhow!("{}: cannot read: {e}", self.name)
        }
    }

    fn header(&mut self, buf: &mut [u8]) -> Result<()> {
        let got = read_full(&mut self.reader, buf).map_err(|e| self.err_read(e))?;
        if got < buf.len() {
            bail!(
                "{}: truncated: {got} bytes, too short for an IDX header of {}",
                self.name,
                buf.len()
            );
        }
        Ok(())
    }

    /// Reads exactly the `payload` bytes the header promised (describing them as `what`), after
    /// checking the file can hold them, and checks nothing follows.
    fn payload(&mut self, payload: u64, header_len: u64, what: &str) -> Result<Vec<u8>> {
        let path = &self.name;
        let total = payload + header_len;
        if !self.gzip {
            if self.size != total {
                bail!(
                    "{path}: header promises {what} ({total} bytes) but the file holds {} bytes",
                    self.size
                );
            }
            let mut buf = vec![0u8; payload as usize];
            self.reader
                .read_exact(&mut buf)
                .map_err(|e| self.err_read(e))?;
            return Ok(buf);
        }
        if total > self.size.saturating_mul(MAX_DEFLATE_RATIO) {
            bail!(
                "{path}: header promises {what} ({total} bytes) but a gzip file of {} bytes \
                 cannot hold more than {} bytes",
                self.size,
                self.size.saturating_mul(MAX_DEFLATE_RATIO)
            );
        }
        // Grows with the data actually decompressed, never past payload + 1 bytes.
        let mut buf = Vec::new();
        (&mut self.reader)
            .take(payload + 1)
            .read_to_end(&mut buf)
            .map_err(|e| self.err_read(e))?;
        if buf.len() as u64 != payload {
            let holds = if buf.len() as u64 > payload {
                "more".to_string()
            } else {
                (buf.len() as u64 + header_len).to_string()
            };
            bail!(
                "{path}: header promises {what} ({total} bytes) but the file decompresses to \
                 {holds} bytes"
            );
        }
        Ok(buf)
    }
}

/// Like `read_exact` but returns how many bytes were read when the input ends early.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
