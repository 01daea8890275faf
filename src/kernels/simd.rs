//! One vector interface for the hand-written kernels, so each kernel is written once, generic
//! over the lane width, and one dispatcher, [`run_on`], which compiles a kernel per instruction
//! set and runs the one `isa` asks for: [`F32x16`] (AVX-512F),
//! [`F32x8`] (AVX2 + FMA) and [`F32x4`] (plain arrays, which the compiler maps to the target's
//! baseline 128-bit vectors: SSE2 on x86-64, NEON on aarch64). Loads and stores take a lane
//! mask, so the last, partial vector of a run is handled by the same code (masked-off lanes are
//! neither read nor written and do not fault).
//!
//! Every method is `#[inline(always)]` and `unsafe`: it is only sound inside a function compiled
//! with the instruction set's `#[target_feature]`, into which it is inlined; the pointers must
//! be valid for the unmasked lanes.
//!
//! May use: `isa`.

use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A vector of `LANES` floats and the operations the kernels need. (Off x86-64 not all of it
/// is used.)
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) trait Vector: Copy {
    const LANES: usize;
    /// The path this vector belongs to, for the few kernels whose blocking or algorithm differs
    /// between paths: plain lanes of any width are `Portable` (the tests' 16 plain lanes
    /// included, so they take the portable choices at AVX-512's width).
    const ISA: Isa;
    type Mask: Copy;

    /// Lanes `0..min(left, LANES)`.
    unsafe fn mask(left: usize) -> Self::Mask;
    unsafe fn zero() -> Self;
    unsafe fn splat(x: f32) -> Self;
    /// The unmasked lanes from `p`, zero elsewhere.
    unsafe fn load(mask: Self::Mask, p: *const f32) -> Self;
    unsafe fn store(self, mask: Self::Mask, p: *mut f32);
    unsafe fn add(self, b: Self) -> Self;
    unsafe fn sub(self, b: Self) -> Self;
    unsafe fn mul(self, b: Self) -> Self;
    /// `self·b + c`, rounded once (twice on [`F32x4`]).
    unsafe fn mul_add(self, b: Self, c: Self) -> Self;
    /// The mask for storing the vector at `s` of a run whose stores may reach `room` floats:
    /// all lanes where they fit (masked stores are slow on AMD's cores), else `k`.
    #[inline(always)]
    unsafe fn room_mask(k: Self::Mask, s: usize, room: usize) -> Self::Mask {
        // SAFETY: as every method's (module doc).
        if s + Self::LANES <= room {
            unsafe { Self::mask(Self::LANES) }
        } else {
            k
        }
    }
    /// `−self`, by flipping the sign bit as the portable code's negation compiles to (`0 − x`
    /// would turn −0 into +0).
    unsafe fn neg(self) -> Self;
    /// `f32::max(self, b)` per lane, for `b` not NaN: `b` where `self` is NaN.
    unsafe fn max(self, b: Self) -> Self;
    /// `d` where `self > 0`, else 0 (also where `self` is NaN): a ReLU's gradient.
    unsafe fn where_positive(self, d: Self) -> Self;
}

/// A kernel's body, written once over [`Vector`]; [`run_on`] runs it at a path's vector.
pub(crate) trait Kernel {
    type Out;
    /// Must be `#[inline(always)]`, so that it compiles inside [`run_on`]'s function for the
    /// instruction set. A closure it calls is compiled apart, without that instruction set,
    /// unless the compiler chooses to inline it: keep closures small, and write loops that
    /// carry the work out in full (a macro where they repeat, as `batch_norm`'s `vectors!`).
    ///
    /// # Safety
    /// `V`'s instruction set is enabled in the caller (module doc).
    unsafe fn run<V: Vector>(self) -> Self::Out;
}

/// Runs `kernel` at the vector of `isa`, or of the best path below it that the CPU has,
/// compiled with that path's `#[target_feature]`.
#[inline(always)]
pub(crate) fn run_on<K: Kernel>(isa: Isa, kernel: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        unsafe fn avx512<K: Kernel>(kernel: K) -> K::Out {
            // SAFETY: AVX-512F is enabled here.
            unsafe { kernel.run::<F32x16>() }
        }
        #[target_feature(enable = "avx2,fma")]
        unsafe fn avx2<K: Kernel>(kernel: K) -> K::Out {
            // SAFETY: AVX2 and FMA are enabled here.
            unsafe { kernel.run::<F32x8>() }
        }
        match isa.supported() {
            // SAFETY: `supported` returns only paths the CPU has.
            Isa::Avx512 => return unsafe { avx512(kernel) },
            // SAFETY: as above.
            Isa::Avx2 => return unsafe { avx2(kernel) },
            Isa::Portable => {}
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = isa;
    // SAFETY: plain arrays need no instruction set.
    unsafe { kernel.run::<F32x4>() }
}

/// 16 floats in an AVX-512 register.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct F32x16(__m512);

/// 8 floats in an AVX register, with AVX2 + FMA operations.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub(crate) struct F32x8(__m256);

/// `N` floats as a plain array. [`F32x4`] is the portable path's vector: the compiler keeps it
/// in one 128-bit register. Its `mul_add` rounds twice, as the baseline targets have no fused
/// multiply-add. (Tests also run the kernels at 16 plain lanes, AVX-512's width, on any CPU.)
#[derive(Clone, Copy)]
pub(crate) struct Lanes<const N: usize>([f32; N]);

/// The portable path's vector.
pub(crate) type F32x4 = Lanes<4>;

impl<const N: usize> Lanes<N> {
    #[inline(always)]
    fn zip(self, b: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        Lanes(std::array::from_fn(|i| f(self.0[i], b.0[i])))
    }
}

impl<const N: usize> Vector for Lanes<N> {
    const LANES: usize = N;
    const ISA: Isa = Isa::Portable;
    /// How many lanes, from the first, to load or store.
    type Mask = usize;

    #[inline(always)]
    unsafe fn mask(left: usize) -> usize {
        left.min(N)
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        Lanes([0.0; N])
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        Lanes([x; N])
    }
    #[inline(always)]
    unsafe fn load(lanes: usize, p: *const f32) -> Self {
        // SAFETY: the caller makes `p` valid for `lanes` floats (module doc); likewise below.
        unsafe {
            if lanes == N {
                return Lanes(p.cast::<[f32; N]>().read_unaligned());
            }
            Lanes(std::array::from_fn(
                |i| if i < lanes { *p.add(i) } else { 0.0 },
            ))
        }
    }
    #[inline(always)]
    unsafe fn store(self, lanes: usize, p: *mut f32) {
        unsafe {
            if lanes == N {
                return p.cast::<[f32; N]>().write_unaligned(self.0);
            }
            for (i, &v) in self.0[..lanes].iter().enumerate() {
                *p.add(i) = v;
            }
        }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        self.zip(b, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        self.zip(b, |x, y| x - y)
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        self.zip(b, |x, y| x * y)
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        self.zip(b, |x, y| x * y).zip(c, |x, y| x + y)
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        Lanes(self.0.map(|x| -x))
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        self.zip(b, f32::max)
    }
    #[inline(always)]
    unsafe fn where_positive(self, d: Self) -> Self {
        self.zip(d, |z, d| if z > 0.0 { d } else { 0.0 })
    }
}

#[cfg(target_arch = "x86_64")]
impl Vector for F32x16 {
    const LANES: usize = 16;
    const ISA: Isa = Isa::Avx512;
    type Mask = __mmask16;

    #[inline(always)]
    unsafe fn mask(left: usize) -> __mmask16 {
        if left >= 16 {
            0xFFFF
        } else {
            ((1u32 << left) - 1) as u16
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        // SAFETY: the caller enables AVX-512F (module doc); likewise below.
        unsafe { F32x16(_mm512_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { F32x16(_mm512_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load(mask: __mmask16, p: *const f32) -> Self {
        unsafe { F32x16(_mm512_maskz_loadu_ps(mask, p)) }
    }
    #[inline(always)]
    unsafe fn store(self, mask: __mmask16, p: *mut f32) {
        unsafe { _mm512_mask_storeu_ps(p, mask, self.0) }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        unsafe { F32x16(_mm512_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x16(_mm512_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        unsafe {
            F32x16(_mm512_castsi512_ps(_mm512_xor_si512(
                _mm512_castps_si512(self.0),
                _mm512_set1_epi32(i32::MIN),
            )))
        }
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // `vmaxps` returns its second operand where either is NaN.
        unsafe { F32x16(_mm512_max_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn where_positive(self, d: Self) -> Self {
        unsafe {
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(self.0, _mm512_setzero_ps());
            F32x16(_mm512_maskz_mov_ps(positive, d.0))
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Vector for F32x8 {
    const LANES: usize = 8;
    const ISA: Isa = Isa::Avx2;
    /// Whether all lanes are on, and all ones in the lanes to load or store (AVX2's
    /// `maskload`/`maskstore` read the sign bit). Full vectors use plain loads and stores:
    /// masked ones are slow on AMD's Zen cores (with masks everywhere, the AVX2 path trained
    /// `cifar-ref` at about 500 images/s on a Zen 4, with plain ones for full vectors 540-575).
    type Mask = (bool, __m256i);

    #[inline(always)]
    unsafe fn mask(left: usize) -> (bool, __m256i) {
        let lanes = left.min(8) as i32;
        // SAFETY: the caller enables AVX2 (module doc); likewise below.
        unsafe {
            let iota = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            (
                left >= 8,
                _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), iota),
            )
        }
    }
    #[inline(always)]
    unsafe fn zero() -> Self {
        unsafe { F32x8(_mm256_setzero_ps()) }
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        unsafe { F32x8(_mm256_set1_ps(x)) }
    }
    #[inline(always)]
    unsafe fn load((full, mask): (bool, __m256i), p: *const f32) -> Self {
        unsafe {
            F32x8(if full {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, mask)
            })
        }
    }
    #[inline(always)]
    unsafe fn store(self, (full, mask): (bool, __m256i), p: *mut f32) {
        unsafe {
            if full {
                _mm256_storeu_ps(p, self.0)
            } else {
                _mm256_maskstore_ps(p, mask, self.0)
            }
        }
    }
    #[inline(always)]
    unsafe fn add(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_add_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn sub(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_sub_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul(self, b: Self) -> Self {
        unsafe { F32x8(_mm256_mul_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn mul_add(self, b: Self, c: Self) -> Self {
        unsafe { F32x8(_mm256_fmadd_ps(self.0, b.0, c.0)) }
    }
    #[inline(always)]
    unsafe fn neg(self) -> Self {
        unsafe { F32x8(_mm256_xor_ps(self.0, _mm256_set1_ps(-0.0))) }
    }
    #[inline(always)]
    unsafe fn max(self, b: Self) -> Self {
        // `vmaxps` returns its second operand where either is NaN.
        unsafe { F32x8(_mm256_max_ps(self.0, b.0)) }
    }
    #[inline(always)]
    unsafe fn where_positive(self, d: Self) -> Self {
        unsafe {
            let positive = _mm256_cmp_ps::<_CMP_GT_OQ>(self.0, _mm256_setzero_ps());
            F32x8(_mm256_and_ps(positive, d.0))
        }
    }
}
