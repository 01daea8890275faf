//! Which instruction set the hand-written kernels use: the best one the CPU has, detected once,
//! capped by a limit the caller may set (`CNN_ISA`, read by `commands`) so that any machine can
//! run, test and benchmark every lower path too.
//!
//! Paths, lowest first: `Portable` (plain loops compiled for the target's baseline: 128-bit SSE2
//! on x86-64, 128-bit NEON on aarch64), `Avx2` (AVX2 + FMA, 8 lanes), `Avx512` (AVX-512F, 16
//! lanes). The `gemm` crate's large products choose their own kernels and do not follow the cap.
//!
//! May use: nothing else of this crate.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set path of the hand-written kernels, ordered lowest to highest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// Every path, lowest first.
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    /// The name `CNN_ISA` takes and `cnn bench` prints.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// The path called `name`, if any.
    pub fn from_name(name: &str) -> Option<Isa> {
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// The best path this CPU has (detected on the first call).
    pub fn detected() -> Isa {
        static DETECTED: OnceLock<Isa> = OnceLock::new();
        *DETECTED.get_or_init(detect)
    }

    /// Every path this CPU can run, lowest first: what the tests compare.
    pub fn available() -> Vec<Isa> {
        Isa::ALL
            .into_iter()
            .filter(|&isa| isa <= Isa::detected())
            .collect()
    }

    /// `self` if the CPU has it, else the best path it has: what makes calling a kernel with
    /// any `Isa` safe.
    pub fn supported(self) -> Isa {
        self.min(Isa::detected())
    }
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The cap set by [`limit`], as `Isa as u8`; `u8::MAX` for none.
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

/// Caps every later kernel call at `isa` (process-wide, since the kernels are reached from every
/// layer). The caller sets it once, before any work, from its configuration.
pub fn limit(isa: Isa) {
    LIMIT.store(isa as u8, Ordering::Relaxed);
}

/// The path the kernels use: the detected one, capped by [`limit`].
pub fn active() -> Isa {
    capped(LIMIT.load(Ordering::Relaxed))
}

/// The best path the CPU has at or below `cap` (`Isa as u8`). Called on every kernel call, so
/// it allocates nothing.
fn capped(cap: u8) -> Isa {
    let highest = Isa::ALL.into_iter().rev().find(|&isa| isa as u8 <= cap);
    highest.unwrap_or(Isa::Portable).supported()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_order_is_lowest_first() {
        for isa in Isa::ALL {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(Isa::Portable < Isa::Avx2 && Isa::Avx2 < Isa::Avx512);
        assert_eq!(Isa::available().last(), Some(&Isa::detected()));
        assert_eq!(Isa::Avx512.supported(), Isa::detected());
    }

    /// A limit selects each available path, and one above the CPU gives the CPU's best. (The
    /// process-wide limit itself is left alone: other tests run meanwhile; the integration test
    /// `cnn bench` with `CNN_ISA` checks it end to end.)
    #[test]
    fn a_limit_selects_the_path() {
        for isa in Isa::available() {
            assert_eq!(capped(isa as u8), isa);
        }
        assert_eq!(capped(Isa::Avx512 as u8), Isa::detected());
        assert_eq!(capped(u8::MAX), Isa::detected());
        assert_eq!(active(), Isa::detected());
    }
}
