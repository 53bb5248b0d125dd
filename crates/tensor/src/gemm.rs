//! General matrix multiply, the one place every convolution and dense layer
//! ends up.
//!
//! `C = alpha * op(A) * op(B) + beta * C`, row-major and contiguous. Every
//! product goes through one dispatch point, `block`, which picks the
//! single-threaded block kernel for this machine (our AVX-512F or AVX2+FMA
//! kernel in `microkernel.rs` when the CPU has them, else `matrixmultiply::sgemm`,
//! whose own threading feature stays off: we never nest a thread pool inside
//! rayon). With [`set_precision`]`(`[`Precision::Bf16`]`)` every product
//! made through [`sgemm`], [`sgemm_bias`] and their serial twins (so every
//! convolution pass and dense layer) runs a bf16 kernel instead: operands
//! rounded to bf16 while packed, products accumulated in f32, on AMX tiles
//! (`microkernel_amx.rs`) where the CPU and OS allow them, else with
//! `vdpbf16ps` (`microkernel_bf16.rs`). [`sgemm`] splits C across rayon's
//! threads; [`sgemm_serial`] runs on the calling thread, for callers that
//! are already one task among many.
//!
//! The split is along the longer of M and N, since splitting M makes every
//! task pack all of B and splitting N makes every task pack all of A. The
//! small late-stage layers (M = 64 rows, N up to 2048) therefore split along
//! N and still keep every core busy.

use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

#[cfg(target_arch = "x86_64")]
use crate::{gemm_blocking::drive, microkernel, microkernel_bf16};

/// Whether an operand is used as stored or transposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trans {
    N,
    T,
}

/// What the product `alpha * op(A) * op(B)` is added to.
#[derive(Clone, Copy, Debug)]
enum Init<'a> {
    /// `beta * C` (with `beta == 0`, C's old contents are ignored, even NaN).
    Scaled(f32),
    /// A row of `n` values added to every row of C (a bias); C's old
    /// contents are ignored. The same numbers as setting every row of C to
    /// it and using `beta = 1`, without the pass that writes C first and
    /// the read of C in the kernel.
    Row(&'a [f32]),
}

/// A single-threaded block kernel that `block` can dispatch to. A new
/// kernel is a new variant here, an arm in `block`, and a case in
/// [`Kernel::available`] and [`Kernel::best`] (an f32-exact kernel) or in
/// [`Precision::kernel`] (a reduced-precision one); the tests then check it
/// against the reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kernel {
    /// `matrixmultiply::sgemm`: portable, picks its own SIMD at run time.
    MatrixMultiply,
    /// Our packed 6x16 AVX2+FMA kernel (`src/microkernel.rs`).
    Avx2Fma,
    /// The same packing with 6x32 AVX-512F tiles (`src/microkernel.rs`).
    Avx512,
    /// bf16 operands (rounded to nearest even while packed), f32
    /// accumulation by `vdpbf16ps`, 6x32 tiles (`src/microkernel_bf16.rs`).
    /// Not an f32 kernel: never in [`Kernel::available`] nor chosen by
    /// [`Kernel::best`]; [`set_precision`] selects it.
    Avx512Bf16,
    /// The same bf16 numbers on AMX tiles (`tdpbf16ps`, 32x32 C blocks,
    /// `src/microkernel_amx.rs`), for CPUs with AMX-BF16 whose OS grants
    /// the tile state. Not an f32 kernel either.
    AmxBf16,
}

impl Kernel {
    /// Every f32 kernel this CPU can run, the portable fallback first (the
    /// ones held to f32 accuracy; the bf16 kernel is not one of them).
    pub fn available() -> Vec<Kernel> {
        let mut v = vec![Kernel::MatrixMultiply];
        for kernel in [Kernel::Avx2Fma, Kernel::Avx512] {
            if kernel.is_supported() {
                v.push(kernel);
            }
        }
        v
    }

    pub fn is_supported(self) -> bool {
        match self {
            Kernel::MatrixMultiply => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => {
                Kernel::Avx2Fma.is_supported() && std::arch::is_x86_feature_detected!("avx512f")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => {
                // BW and VL: the packing's vpermw and masked 256-bit moves.
                Kernel::Avx512.is_supported()
                    && std::arch::is_x86_feature_detected!("avx512bf16")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::AmxBf16 => {
                Kernel::Avx512Bf16.is_supported() && crate::microkernel_amx::is_available()
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2Fma | Kernel::Avx512 | Kernel::Avx512Bf16 | Kernel::AmxBf16 => false,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::MatrixMultiply => "matrixmultiply",
            Kernel::Avx2Fma => "avx2+fma 6x16",
            Kernel::Avx512 => "avx512f 6x32",
            Kernel::Avx512Bf16 => "avx512_bf16 dpbf16ps 6x32",
            Kernel::AmxBf16 => "amx_bf16 tdpbf16ps 32x32",
        }
    }

    /// The fastest supported kernel, unless `TENSOR_GEMM_KERNEL` names one
    /// (`matrixmultiply`, `avx2` or `avx512`; an unsupported or unknown name
    /// is ignored with a message on stderr). Decided once per process.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let forced = std::env::var("TENSOR_GEMM_KERNEL").ok();
            let named = match forced.as_deref() {
                None => None,
                Some("matrixmultiply") => Some(Kernel::MatrixMultiply),
                Some("avx2") => Some(Kernel::Avx2Fma),
                Some("avx512") => Some(Kernel::Avx512),
                Some(other) => {
                    eprintln!("TENSOR_GEMM_KERNEL={other:?} is not a kernel (matrixmultiply, avx2, avx512); ignored");
                    None
                }
            };
            match named {
                Some(kernel) if kernel.is_supported() => return kernel,
                Some(kernel) => eprintln!("TENSOR_GEMM_KERNEL: {kernel:?} is not supported by this CPU; ignored"),
                None => {}
            }
            Kernel::default_for_cpu()
        })
    }

    /// The kernel used when none is forced: AVX-512 wherever the CPU and OS
    /// enable it. On the EPYC (Zen 5, full 512-bit FMA units) this was
    /// written on, it runs the 2048^3 GEMM at ~1.8x the AVX2 kernel and a
    /// ResNet50 training step ~1.5x faster (docs/performance.md). A core
    /// that splits 512-bit FMAs into two 256-bit halves (Zen 4) should gain
    /// little; it has not been measured.
    fn default_for_cpu() -> Kernel {
        if Kernel::Avx512.is_supported() {
            Kernel::Avx512
        } else if Kernel::Avx2Fma.is_supported() {
            Kernel::Avx2Fma
        } else {
            Kernel::MatrixMultiply
        }
    }
}

/// The name of the block kernel `sgemm` dispatches to on this machine at
/// the current [`precision`].
pub fn kernel_name() -> &'static str {
    active_kernel().name()
}

/// The number format of GEMM operands. Accumulation, C, alpha, beta and the
/// bias row are f32 in both; so is everything outside the GEMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 operands: the fastest f32 kernel ([`Kernel::best`]).
    #[default]
    Fp32,
    /// Operands rounded to bf16 (round to nearest even) while packed,
    /// products accumulated in f32 ([`Kernel::AmxBf16`] where available,
    /// else [`Kernel::Avx512Bf16`]); needs AVX512_BF16.
    Bf16,
}

impl Precision {
    pub const ALL: [Precision; 2] = [Precision::Fp32, Precision::Bf16];

    /// The block kernel of this precision on this CPU, or why there is
    /// none (naming the missing CPU feature).
    pub fn kernel(self) -> Result<Kernel, String> {
        match self {
            Precision::Fp32 => Ok(Kernel::best()),
            Precision::Bf16 if Kernel::Avx512Bf16.is_supported() => Ok(best_bf16()),
            Precision::Bf16 => Err(
                "bf16 needs a CPU with AVX512_BF16 (and AVX-512 F/BW/VL): this one has no \
                 avx512_bf16 (see the flags in /proc/cpuinfo); use fp32"
                    .into(),
            ),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Precision::ALL
            .into_iter()
            .find(|p| p.to_string() == s)
            .ok_or_else(|| format!("{s:?} is not a precision: expected fp32 or bf16"))
    }
}

/// The bf16 kernel: AMX tiles where the CPU and OS allow them, else
/// `vdpbf16ps`, unless `TENSOR_GEMM_BF16_KERNEL` names one (`amx` or
/// `avx512_bf16`; an unsupported or unknown name is ignored with a message
/// on stderr). Decided once per process; only called when AVX512_BF16 is
/// supported.
fn best_bf16() -> Kernel {
    static BEST: OnceLock<Kernel> = OnceLock::new();
    *BEST.get_or_init(|| {
        let forced = std::env::var("TENSOR_GEMM_BF16_KERNEL").ok();
        let named = match forced.as_deref() {
            None => None,
            Some("amx") => Some(Kernel::AmxBf16),
            Some("avx512_bf16") => Some(Kernel::Avx512Bf16),
            Some(other) => {
                eprintln!("TENSOR_GEMM_BF16_KERNEL={other:?} is not a bf16 kernel (amx, avx512_bf16); ignored");
                None
            }
        };
        match named {
            Some(kernel) if kernel.is_supported() => return kernel,
            Some(kernel) => eprintln!("TENSOR_GEMM_BF16_KERNEL: {kernel:?} is not supported by this CPU; ignored"),
            None => {}
        }
        if Kernel::AmxBf16.is_supported() {
            Kernel::AmxBf16
        } else {
            Kernel::Avx512Bf16
        }
    })
}

/// The process-wide precision ([`Precision`] as its index in `ALL`).
static PRECISION: AtomicU8 = AtomicU8::new(0);

/// Makes every later [`sgemm`], [`sgemm_bias`], [`sgemm_serial`] and
/// [`sgemm_serial_bias`] in this process use `precision`, or refuses
/// (naming the missing CPU feature) when this CPU cannot, leaving the
/// setting as it was. Process-wide because the products are made deep
/// inside convolutions and layers; a product already running finishes in
/// the precision it started with (each call reads the setting once, at
/// dispatch, and hands the same kernel to all its threads). The `*_with`
/// functions name their kernel and ignore it.
pub fn set_precision(precision: Precision) -> Result<(), String> {
    precision.kernel()?;
    let index = Precision::ALL.iter().position(|&p| p == precision);
    PRECISION.store(index.expect("in ALL") as u8, Ordering::Relaxed);
    Ok(())
}

/// The precision [`set_precision`] last set (fp32 until then).
pub fn precision() -> Precision {
    Precision::ALL[PRECISION.load(Ordering::Relaxed) as usize]
}

/// The kernel of the current precision (supported: `set_precision` checked).
fn active_kernel() -> Kernel {
    match precision() {
        Precision::Fp32 => Kernel::best(),
        Precision::Bf16 => best_bf16(),
    }
}

/// Below this many multiply-adds a GEMM runs on the calling thread: the cost of
/// waking the pool outweighs the work.
const PARALLEL_MIN_MACS: usize = 1 << 18;

impl Kernel {
    /// Pieces of a split dimension are whole numbers of the kernel's register
    /// tiles: rows of `mr` along M, columns of 16 along N (a multiple of
    /// every kernel's tile width).
    fn split_align(self, along_m: bool) -> usize {
        match (self, along_m) {
            (Kernel::AmxBf16, _) => 32,
            (Kernel::Avx2Fma | Kernel::Avx512 | Kernel::Avx512Bf16, true) => 6,
            (_, true) => 8,
            (_, false) => 16,
        }
    }
}

/// Checks the operand lengths; returns the row and column strides of A and B
/// as stored, or `None` when there is nothing to multiply.
#[allow(clippy::too_many_arguments)]
fn prepare(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    init: Init,
    c: &mut [f32],
) -> Option<[isize; 4]> {
    assert!(a.len() >= m * k, "sgemm: A holds {} < {m}x{k}", a.len());
    assert!(b.len() >= k * n, "sgemm: B holds {} < {k}x{n}", b.len());
    assert!(c.len() >= m * n, "sgemm: C holds {} < {m}x{n}", c.len());
    if let Init::Row(row) = init {
        assert_eq!(
            row.len(),
            n,
            "sgemm: the bias row has {} values, C {n} columns",
            row.len()
        );
    }
    if m == 0 || n == 0 {
        return None;
    }
    if k == 0 {
        init_only(init, c, m, n, n);
        return None;
    }
    let (rsa, csa) = match ta {
        Trans::N => (k as isize, 1),
        Trans::T => (1, m as isize),
    };
    let (rsb, csb) = match tb {
        Trans::N => (n as isize, 1),
        Trans::T => (1, k as isize),
    };
    Some([rsa, csa, rsb, csb])
}

/// `C = alpha * op(A) * op(B) + beta * C`, split across the rayon threads,
/// at the process's [`precision`].
///
/// `op(A)` is `m x k`: stored `m x k` for [`Trans::N`], `k x m` for [`Trans::T`].
/// `op(B)` is `k x n`: stored `k x n` for [`Trans::N`], `n x k` for [`Trans::T`].
/// `C` is `m x n`. When `beta == 0` the old contents of C are ignored (even NaN).
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    beta: f32,
    c: &mut [f32],
) {
    sgemm_with(active_kernel(), m, n, k, alpha, a, ta, b, tb, beta, c);
}

/// `C = alpha * op(A) * op(B) + bias`, `bias` (`n` values) added to every
/// row: a layer's output with its bias, in one pass over C. Split across the
/// rayon threads like [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub fn sgemm_bias(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    bias: &[f32],
    c: &mut [f32],
) {
    threaded(
        active_kernel(),
        m,
        n,
        k,
        alpha,
        a,
        ta,
        b,
        tb,
        Init::Row(bias),
        c,
    );
}

/// [`sgemm`] with an explicit block kernel, whatever the [`precision`]
/// (tests and benchmarks compare them). Panics if the CPU does not support
/// `kernel`.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    beta: f32,
    c: &mut [f32],
) {
    threaded(kernel, m, n, k, alpha, a, ta, b, tb, Init::Scaled(beta), c);
}

/// [`sgemm_bias`] with an explicit block kernel (tests).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_bias_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    bias: &[f32],
    c: &mut [f32],
) {
    threaded(kernel, m, n, k, alpha, a, ta, b, tb, Init::Row(bias), c);
}

#[allow(clippy::too_many_arguments)]
fn threaded(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    init: Init,
    c: &mut [f32],
) {
    assert!(
        kernel.is_supported(),
        "sgemm: {kernel:?} is not supported by this CPU"
    );
    let Some([rsa, csa, rsb, csb]) = prepare(m, n, k, a, ta, b, tb, init, c) else {
        return;
    };
    // SAFETY: `prepare` checked that A, B and C hold the full operands, and
    // C is contiguous (row stride n).
    unsafe {
        threaded_raw(
            kernel,
            m,
            n,
            k,
            alpha,
            [a.as_ptr(), b.as_ptr()],
            [rsa, csa, rsb, csb],
            init,
            c.as_mut_ptr(),
            n as isize,
        )
    };
}

/// The threaded split of [`threaded`] over raw operands: C (`m x n`, row
/// stride `rsc >= n`) split along the longer of M and N.
///
/// # Safety
/// A and B must be readable at every element their strides reach, C
/// writable at every `(i, j)` of its `m x n` block, and nobody else may
/// access C meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn threaded_raw(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    [a, b]: [*const f32; 2],
    [rsa, csa, rsb, csb]: [isize; 4],
    init: Init,
    c: *mut f32,
    rsc: isize,
) {
    let threads = rayon::current_num_threads();
    if threads == 1 || m * n * k < PARALLEL_MIN_MACS {
        // SAFETY: the caller's contract.
        unsafe {
            block(
                kernel, m, n, k, alpha, a, rsa, csa, b, rsb, csb, init, c, rsc,
            )
        };
        return;
    }
    let split_m = m >= n;
    let len = if split_m { m } else { n };
    // Two pieces per thread lets a core that was slowed down (the machine is
    // shared) hand work over, as long as pieces stay a useful size.
    let pieces = if len / (2 * threads) >= 64 {
        2 * threads
    } else {
        threads
    };
    let align = kernel.split_align(split_m);
    let piece = len.div_ceil(pieces).next_multiple_of(align).min(len);
    let (a, b, c) = (SendPtr(a as *mut f32), SendPtr(b as *mut f32), SendPtr(c));
    (0..len.div_ceil(piece)).into_par_iter().for_each(|p| {
        let (a, b, c) = (&a, &b, &c);
        let start = p * piece;
        let size = piece.min(len - start);
        // SAFETY: each task reads inside A and B (the caller's contract) and
        // writes its own rows (split_m) or columns of C, disjoint from
        // every other task's (rows do not overlap: rsc >= n).
        unsafe {
            if split_m {
                let a = a.0.offset(start as isize * rsa);
                let c = c.0.offset(start as isize * rsc);
                block(
                    kernel, size, n, k, alpha, a, rsa, csa, b.0, rsb, csb, init, c, rsc,
                );
            } else {
                let b = b.0.offset(start as isize * csb);
                let c = c.0.add(start);
                // This piece's columns of the bias row.
                let init = match init {
                    Init::Row(row) => Init::Row(&row[start..start + size]),
                    scaled => scaled,
                };
                block(
                    kernel, m, size, k, alpha, a.0, rsa, csa, b, rsb, csb, init, c, rsc,
                );
            }
        }
    });
}

/// A matrix stored with arbitrary strides: element `(i, j)` is
/// `data[i * rs + j * cs]`. Convolutions use it to multiply blocks of an
/// NHWC tensor or an HWIO kernel in place (one output position of every
/// image is a matrix with row stride `H * W * C`), with no copy.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    /// Row stride, in floats.
    pub rs: usize,
    /// Column stride, in floats.
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// The `rows x cols` matrix at `data[offset..]` with strides `rs`, `cs`.
    pub fn new(data: &'a [f32], offset: usize, rs: usize, cs: usize) -> Self {
        MatRef {
            data: &data[offset.min(data.len())..],
            rs,
            cs,
        }
    }

    /// The transpose: the same elements, strides swapped.
    pub fn t(self) -> Self {
        MatRef {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }

    /// Panics unless every element of a `rows x cols` block is inside `data`.
    fn check(&self, what: &str, rows: usize, cols: usize) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = (rows - 1) * self.rs + (cols - 1) * self.cs;
        assert!(
            last < self.data.len(),
            "sgemm_strided: {what} ({rows}x{cols}, strides {} {}) reaches element {last} of {}",
            self.rs,
            self.cs,
            self.data.len()
        );
    }
}

/// `C = alpha * A * B + beta * C` (or `+ bias` on every row instead of
/// `beta * C`, when `bias` is given) on strided operands, split across the
/// rayon threads at the process's [`precision`]. A is `m x k`, B `k x n`,
/// C `m x n` at `c[..]` with row stride `rsc >= n` (columns contiguous).
/// With `beta == 0` (and no bias) C's old contents are ignored, even NaN.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_strided(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: MatRef,
    b: MatRef,
    beta: f32,
    bias: Option<&[f32]>,
    c: &mut [f32],
    rsc: usize,
) {
    a.check("A", m, k);
    b.check("B", k, n);
    assert!(
        rsc >= n,
        "sgemm_strided: C's row stride {rsc} < its {n} columns"
    );
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        (m - 1) * rsc + n <= c.len(),
        "sgemm_strided: C ({m}x{n}, row stride {rsc}) needs {} of {} elements",
        (m - 1) * rsc + n,
        c.len()
    );
    let init = match bias {
        Some(row) => {
            assert_eq!(
                row.len(),
                n,
                "sgemm_strided: bias of {} for {n} columns",
                row.len()
            );
            Init::Row(row)
        }
        None => Init::Scaled(beta),
    };
    if k == 0 {
        init_only(init, c, m, n, rsc);
        return;
    }
    let s = |v: usize| v as isize;
    // SAFETY: the checks above put every element of A, B and C's block
    // inside their slices.
    unsafe {
        threaded_raw(
            active_kernel(),
            m,
            n,
            k,
            alpha,
            [a.data.as_ptr(), b.data.as_ptr()],
            [s(a.rs), s(a.cs), s(b.rs), s(b.cs)],
            init,
            c.as_mut_ptr(),
            s(rsc),
        )
    };
}

/// [`sgemm`] on the calling thread only.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_serial(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    beta: f32,
    c: &mut [f32],
) {
    serial(m, n, k, alpha, a, ta, b, tb, Init::Scaled(beta), c);
}

/// [`sgemm_bias`] on the calling thread only.
#[allow(clippy::too_many_arguments)]
pub fn sgemm_serial_bias(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    bias: &[f32],
    c: &mut [f32],
) {
    serial(m, n, k, alpha, a, ta, b, tb, Init::Row(bias), c);
}

#[allow(clippy::too_many_arguments)]
fn serial(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    ta: Trans,
    b: &[f32],
    tb: Trans,
    init: Init,
    c: &mut [f32],
) {
    let Some([rsa, csa, rsb, csb]) = prepare(m, n, k, a, ta, b, tb, init, c) else {
        return;
    };
    // SAFETY: `prepare` checked that A, B and C hold the full operands.
    unsafe {
        block(
            active_kernel(),
            m,
            n,
            k,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            init,
            c.as_mut_ptr(),
            n as isize,
        )
    };
}

/// A raw pointer that may cross threads; used only for disjoint writes.
struct SendPtr(*mut f32);
unsafe impl Sync for SendPtr {}
unsafe impl Send for SendPtr {}

/// The single dispatch point: one single-threaded block product
/// `C = alpha * A * B + init` with arbitrary strides (C's columns unit).
///
/// # Safety
/// `kernel` must be supported by the CPU; A (`m x k`), B (`k x n`) and C
/// (`m x n`, row stride `rsc`) must be valid for the given strides, a bias
/// row must hold `n` values, and C must not be accessed by anyone else
/// meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    init: Init,
    c: *mut f32,
    rsc: isize,
) {
    let (beta, row) = match init {
        Init::Scaled(beta) => (beta, None),
        Init::Row(row) => (1.0, Some(row)),
    };
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2Fma => unsafe {
            drive::<microkernel::Fp32<false>>(
                m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, row, c, rsc,
            )
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 => unsafe {
            drive::<microkernel::Fp32<true>>(
                m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, row, c, rsc,
            )
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512Bf16 => unsafe {
            drive::<microkernel_bf16::Bf16>(
                m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, row, c, rsc,
            )
        },
        #[cfg(target_arch = "x86_64")]
        Kernel::AmxBf16 => unsafe {
            drive::<crate::microkernel_amx::Amx>(
                m, n, k, alpha, a, rsa, csa, b, rsb, csb, beta, row, c, rsc,
            )
        },
        _ => unsafe {
            if let Some(row) = row {
                // This kernel knows only beta: set C to the row, add onto it.
                for i in 0..m {
                    let ci = std::slice::from_raw_parts_mut(c.offset(i as isize * rsc), n);
                    ci.copy_from_slice(row);
                }
            }
            matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, 1)
        },
    }
}

/// A product of depth 0: C (`m x n`, row stride `rsc`) becomes `beta * C`
/// (0 when beta is 0, even over NaN) or the bias row.
fn init_only(init: Init, c: &mut [f32], m: usize, n: usize, rsc: usize) {
    for row in c.chunks_mut(rsc).take(m) {
        match init {
            Init::Scaled(beta) => scale_c(beta, &mut row[..n]),
            Init::Row(bias) => row[..n].copy_from_slice(bias),
        }
    }
}

fn scale_c(beta: f32, c: &mut [f32]) {
    if beta == 0.0 {
        c.fill(0.0);
    } else {
        c.iter_mut().for_each(|v| *v *= beta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference;

    fn seq(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_reference_for_all_transposes_and_splits() {
        // Shapes that take each path: serial, split along M, split along N.
        for &(m, n, k) in &[(3, 5, 7), (1024, 33, 17), (64, 300, 40), (64, 2048, 512)] {
            for ta in [Trans::N, Trans::T] {
                for tb in [Trans::N, Trans::T] {
                    let a = seq(m * k, 1);
                    let b = seq(k * n, 2);
                    let mut c = seq(m * n, 3);
                    let mut want = c.clone();
                    sgemm(m, n, k, 0.5, &a, ta, &b, tb, 2.0, &mut c);
                    reference::gemm(m, n, k, 0.5, &a, ta, &b, tb, 2.0, &mut want);
                    let err = c
                        .iter()
                        .zip(&want)
                        .map(|(x, y)| (x - y).abs())
                        .fold(0.0, f32::max);
                    // Sums of k products of numbers in [-1, 1]: f32 rounding
                    // grows like sqrt(k) * 2^-24 * k; 1e-4 * k is generous.
                    assert!(
                        err <= 1e-4 * k as f32,
                        "{m}x{n}x{k} {ta:?}{tb:?}: max err {err}"
                    );
                }
            }
        }
    }

    /// A bias row gives exactly what setting every row of C to it and
    /// adding with beta = 1 gives, on every kernel and every split.
    #[test]
    fn bias_row_equals_filling_c_then_beta_one() {
        for kernel in Kernel::available() {
            for &(m, n, k) in &[(3, 5, 7), (1024, 33, 17), (64, 300, 40), (64, 2048, 700)] {
                for ta in [Trans::N, Trans::T] {
                    let a = seq(m * k, 1);
                    let b = seq(k * n, 2);
                    let bias = seq(n, 4);
                    let mut want: Vec<f32> = (0..m).flat_map(|_| bias.iter().copied()).collect();
                    sgemm_with(kernel, m, n, k, 1.0, &a, ta, &b, Trans::N, 1.0, &mut want);
                    let mut c = vec![f32::NAN; m * n];
                    sgemm_bias_with(kernel, m, n, k, 1.0, &a, ta, &b, Trans::N, &bias, &mut c);
                    assert_eq!(c, want, "{kernel:?} {m}x{n}x{k} {ta:?}");
                    let mut c = vec![f32::NAN; m * n];
                    if kernel == Kernel::best() {
                        sgemm_serial_bias(m, n, k, 1.0, &a, ta, &b, Trans::N, &bias, &mut c);
                        assert_eq!(c, want, "serial {m}x{n}x{k} {ta:?}");
                    }
                }
            }
        }
        // k = 0: C is the bias row on every row.
        let mut c = vec![f32::NAN; 4];
        sgemm_bias(
            2,
            2,
            0,
            1.0,
            &[],
            Trans::N,
            &[],
            Trans::N,
            &[1.0, 2.0],
            &mut c,
        );
        assert_eq!(c, [1.0, 2.0, 1.0, 2.0]);
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        let mut c = vec![f32::NAN; 4];
        sgemm(
            2,
            2,
            1,
            1.0,
            &[1.0, 2.0],
            Trans::N,
            &[3.0, 4.0],
            Trans::N,
            0.0,
            &mut c,
        );
        assert_eq!(c, vec![3.0, 4.0, 6.0, 8.0]);
    }
}
