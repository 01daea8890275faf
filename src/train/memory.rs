//! Whether training a network fits in the machine's memory, checked before the first step so
//! that a too-large batch is refused with advice instead of swapping or being killed.

use crate::net::Network;
use anyhow::{Result, bail};

/// Refuses to run `net` (described as `what`) on batches of `batch` images when its
/// [`Network::memory_estimate`] is more than the memory available, naming both and the largest
/// batch that would fit. Where the available memory cannot be read, it does not refuse.
pub fn check(net: &mut Network, batch: usize, what: &str) -> Result<()> {
    let Some(available) = available_memory() else {
        return Ok(());
    };
    let need = net.memory_estimate(batch);
    if need <= available {
        return Ok(());
    }
    let mb = |b: u64| b.div_ceil(1 << 20);
    // The estimate grows with the batch, so the largest batch that fits is found by bisection.
    let (mut lo, mut hi) = (0usize, batch);
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        if net.memory_estimate(mid) <= available {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let advice = if lo >= 1 {
        format!("use --batch-size {lo} or less, or a smaller network")
    } else {
        "even one image does not fit: use a smaller network".to_string()
    };
    bail!(
        "{what} with batches of {batch} images needs about {} MB of memory, but only {} MB is \
         available; {advice}",
        mb(need),
        mb(available)
    )
}

/// Memory the system can give without swapping (`MemAvailable` in /proc/meminfo), in bytes.
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb.saturating_mul(1024))
}
