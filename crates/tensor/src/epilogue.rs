//! Work folded into a convolution's output while it is still in cache.
//!
//! In inference every ResNet convolution is followed by a batchnorm with
//! fixed (moving) statistics, which is a per-channel affine map, often by a
//! ReLU, and at the end of each residual block by the shortcut addition.
//! Run as separate ops, each is one more pass over an activation in memory;
//! as an [`Epilogue`] they are applied to each tile of the convolution's
//! output right after the GEMM wrote it, while it is in the core's cache:
//!
//! ```text
//! y = conv(x, w) + bias
//! y = y * scale + shift      (affine: the batchnorm)
//! y = residual + y           (residual: the shortcut)
//! y = max(y, 0)              (relu; a NaN passes through)
//! ```
//!
//! Each step is the same f32 operation, in the same order, as the separate
//! kernel ([`crate::elementwise::channel_affine`], [`crate::elementwise::add`],
//! [`crate::elementwise::relu`]), so a fused result is bit-identical to the
//! unfused one.

use crate::elementwise::multiversion;
use crate::error::{Result, TensorError};

/// What to apply to a convolution's output, per element; the default does
/// nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// `(scale, shift)`, one value per output channel: `y = y * scale + shift`.
    pub affine: Option<(&'a [f32], &'a [f32])>,
    /// A tensor of the output's shape added after the affine map.
    pub residual: Option<&'a [f32]>,
    /// A ReLU last.
    pub relu: bool,
}

impl Epilogue<'_> {
    /// Nothing to do.
    pub fn is_identity(&self) -> bool {
        self.affine.is_none() && self.residual.is_none() && !self.relu
    }

    /// Checks the operand lengths against an output of `len` values with
    /// `channels` channels.
    pub fn validate(&self, len: usize, channels: usize) -> Result<()> {
        let bad = |what: &str, got: usize, expected: usize| {
            Err(TensorError::Geometry(format!(
                "conv epilogue: {what} has {got} values, expected {expected}"
            )))
        };
        if let Some((scale, shift)) = self.affine {
            if scale.len() != channels {
                return bad("scale", scale.len(), channels);
            }
            if shift.len() != channels {
                return bad("shift", shift.len(), channels);
            }
        }
        if let Some(r) = self.residual {
            if r.len() != len {
                return bad("residual", r.len(), len);
            }
        }
        Ok(())
    }

    /// Applies the epilogue to `y`, whole rows of `channels` values that
    /// start at flat offset `offset` of the output (where the residual is
    /// read from).
    pub(crate) fn apply(&self, y: &mut [f32], offset: usize, channels: usize) {
        if self.is_identity() {
            return;
        }
        debug_assert!(y.len().is_multiple_of(channels) && offset.is_multiple_of(channels));
        let residual = self
            .residual
            .map_or(&[][..], |r| &r[offset..offset + y.len()]);
        let (scale, shift) = self.affine.unwrap_or((&[], &[]));
        let flags = Flags {
            affine: self.affine.is_some(),
            residual: self.residual.is_some(),
            relu: self.relu,
        };
        epilogue_kernel(y, channels, scale, shift, residual, flags);
    }
}

#[derive(Clone, Copy)]
struct Flags {
    affine: bool,
    residual: bool,
    relu: bool,
}

/// One row-loop per combination of steps, so each inner loop is branch-free
/// and vectorizes.
#[inline(always)]
fn rows<const AFFINE: bool, const RESIDUAL: bool, const RELU: bool>(
    y: &mut [f32],
    c: usize,
    scale: &[f32],
    shift: &[f32],
    residual: &[f32],
) {
    // Slices of exactly `c` values, so the indexing below needs no checks.
    let (scale, shift) = if AFFINE {
        (&scale[..c], &shift[..c])
    } else {
        (&[][..], &[][..])
    };
    for (i, row) in y.chunks_exact_mut(c).enumerate() {
        let row = &mut row[..c];
        let res = if RESIDUAL {
            &residual[i * c..][..c]
        } else {
            &[][..]
        };
        for j in 0..c {
            let mut v = row[j];
            if AFFINE {
                v = v * scale[j] + shift[j];
            }
            if RESIDUAL {
                v += res[j]; // == res + v: f32 addition commutes
            }
            if RELU {
                v = if v <= 0.0 { 0.0 } else { v };
            }
            row[j] = v;
        }
    }
}

multiversion! {
    fn epilogue_kernel(
        y: &mut [f32],
        c: usize,
        scale: &[f32],
        shift: &[f32],
        residual: &[f32],
        flags: Flags,
    ) {
        match (flags.affine, flags.residual, flags.relu) {
            (true, true, true) => rows::<true, true, true>(y, c, scale, shift, residual),
            (true, true, false) => rows::<true, true, false>(y, c, scale, shift, residual),
            (true, false, true) => rows::<true, false, true>(y, c, scale, shift, residual),
            (true, false, false) => rows::<true, false, false>(y, c, scale, shift, residual),
            (false, true, true) => rows::<false, true, true>(y, c, scale, shift, residual),
            (false, true, false) => rows::<false, true, false>(y, c, scale, shift, residual),
            (false, false, true) => rows::<false, false, true>(y, c, scale, shift, residual),
            (false, false, false) => {}
        }
    }
}
