//! bfloat16 rounding, in scalar code that gives bit for bit what the
//! hardware conversion `vcvtne2ps2bf16` / `vcvtneps2bf16` gives.
//!
//! bf16 is the upper half of an f32: sign, the same 8 exponent bits, 7
//! mantissa bits. The bf16 GEMM (`microkernel_bf16.rs`) converts its f32
//! operands while packing them, with the vector instruction for whole
//! panels and with [`to_bits`] for ragged edges and odd strides, so both
//! must agree exactly; the tests also use [`round`] to build the f64
//! reference from the same rounded inputs the kernel multiplies.
//!
//! The rules (Intel SDM, `convert_fp32_to_bfloat16`):
//! - round to nearest, ties to even, whatever MXCSR says;
//! - zeros and f32 *subnormals* become a zero of the same sign (the
//!   instruction treats denormal inputs as zero; bf16 has the f32 exponent
//!   range, so only inputs below 2^-126 are affected);
//! - infinities stay infinities; a finite value within half a bf16 ulp of
//!   the top rounds up to infinity, as round-to-nearest requires;
//! - a NaN stays a NaN: its top 16 bits, with the quiet bit forced on
//!   (truncating alone could turn a NaN whose payload sits in the low bits
//!   into an infinity).

/// The bf16 bit pattern nearest to `x` (see the module doc for the rules).
pub fn to_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7F80_0000 == 0 {
        // Zero or subnormal: a signed zero.
        return ((bits >> 16) & 0x8000) as u16;
    }
    if x.is_nan() {
        return ((bits >> 16) | 0x0040) as u16;
    }
    // Adding 0x7FFF rounds half-way cases down, 0x8000 up: add the kept
    // part's lowest bit so ties go to the even neighbour. A carry out of
    // the mantissa bumps the exponent, which is exactly right (and gives
    // infinity from the largest binade). Cannot overflow a u32: the largest
    // finite pattern is 0xFF7F_FFFF.
    let lsb = (bits >> 16) & 1;
    ((bits + 0x7FFF + lsb) >> 16) as u16
}

/// The f32 whose upper half is `h` (exact: every bf16 is an f32).
pub fn from_bits(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

/// `x` rounded to the nearest bf16, as an f32.
pub fn round(x: f32) -> f32 {
    from_bits(to_bits(x))
}

/// Two bf16 values packed in the 32-bit word a `vdpbf16ps` lane reads:
/// `lo` (the even k) in the low half, `hi` (the odd k) in the high half.
pub(crate) fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bits(lo)) | (u32::from(to_bits(hi)) << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_puts_the_even_k_low() {
        assert_eq!(pair(1.0, -2.0), 0xC000_3F80);
        assert_eq!(pair(0.0, 0.0), 0);
    }
}
