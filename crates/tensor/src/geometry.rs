//! Explicit descriptions of what a kernel's flat buffers mean.
//!
//! Every convolution and pooling kernel takes one of these structs instead of
//! inferring dimensions from tensor shapes. Images are NHWC, conv kernels HWIO
//! (`[kh, kw, c_in, c_out]`, the Keras layout), and padding is explicit per
//! side, so both Keras 'same' (TensorFlow puts the odd extra pixel after) and
//! explicit ZeroPadding layers are expressible.

use crate::error::{Result, TensorError};

/// Zero padding on each side of the spatial dimensions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Padding {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

impl Padding {
    pub const ZERO: Padding = Padding {
        top: 0,
        bottom: 0,
        left: 0,
        right: 0,
    };

    /// The same padding on all four sides.
    pub fn uniform(p: usize) -> Self {
        Padding {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }

    /// TensorFlow's 'same' padding for one axis: the output has
    /// `ceil(input / stride)` positions and the odd extra pixel goes after.
    fn same_1d(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
        let out = input.div_ceil(stride);
        let needed = ((out - 1) * stride + kernel).saturating_sub(input);
        (needed / 2, needed - needed / 2)
    }

    /// TensorFlow/Keras `padding='same'` for a `h` x `w` input.
    pub fn same(h: usize, w: usize, kh: usize, kw: usize, stride: usize) -> Self {
        let (top, bottom) = Self::same_1d(h, kh, stride);
        let (left, right) = Self::same_1d(w, kw, stride);
        Padding {
            top,
            bottom,
            left,
            right,
        }
    }
}

/// A 2-D convolution over an NHWC batch with an HWIO kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub in_c: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub out_c: usize,
    pub stride: usize,
    pub padding: Padding,
}

impl ConvGeometry {
    /// Validates that the kernel fits in the padded input at least once.
    pub fn validate(&self) -> Result<()> {
        let ph = self.in_h + self.padding.top + self.padding.bottom;
        let pw = self.in_w + self.padding.left + self.padding.right;
        if self.stride == 0 || self.kernel_h == 0 || self.kernel_w == 0 {
            return Err(TensorError::Geometry(format!(
                "conv: stride and kernel must be positive in {self:?}"
            )));
        }
        if ph < self.kernel_h || pw < self.kernel_w {
            return Err(TensorError::Geometry(format!(
                "conv: {}x{} kernel does not fit the padded {}x{} input ({self:?})",
                self.kernel_h, self.kernel_w, ph, pw
            )));
        }
        Ok(())
    }

    pub fn out_h(&self) -> usize {
        (self.in_h + self.padding.top + self.padding.bottom - self.kernel_h) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + self.padding.left + self.padding.right - self.kernel_w) / self.stride + 1
    }

    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_h, self.in_w, self.in_c]
    }

    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.kernel_h, self.kernel_w, self.in_c, self.out_c]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_h(), self.out_w(), self.out_c]
    }

    /// Rows of the im2col matrix: one per output pixel, `N * Ho * Wo`.
    pub fn gemm_m(&self) -> usize {
        self.batch * self.out_h() * self.out_w()
    }

    /// Columns of the im2col matrix: one per kernel tap, `kh * kw * Cin`.
    pub fn gemm_k(&self) -> usize {
        self.kernel_h * self.kernel_w * self.in_c
    }

    /// Multiply-accumulates of the forward pass (each backward pass costs the same).
    pub fn macs(&self) -> usize {
        self.gemm_m() * self.gemm_k() * self.out_c
    }

    /// True when the convolution is a plain GEMM over the NHWC input:
    /// a 1x1 kernel, stride 1, no padding.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride == 1
            && self.padding == Padding::ZERO
    }
}

/// A 2-D max pool over an NHWC batch. Padded positions never win the max
/// (they count as -inf), as in TensorFlow's 'same' pooling; Keras ResNet50
/// instead pads with explicit zeros (a separate ZeroPadding op) and pools 'valid'.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolGeometry {
    pub batch: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: Padding,
}

impl PoolGeometry {
    pub fn validate(&self) -> Result<()> {
        let ph = self.in_h + self.padding.top + self.padding.bottom;
        let pw = self.in_w + self.padding.left + self.padding.right;
        if self.stride == 0 || self.kernel == 0 || ph < self.kernel || pw < self.kernel {
            return Err(TensorError::Geometry(format!(
                "max pool: {0}x{0} window / stride {1} does not fit the padded {ph}x{pw} input",
                self.kernel, self.stride
            )));
        }
        if self.padding.top >= self.kernel
            || self.padding.bottom >= self.kernel
            || self.padding.left >= self.kernel
            || self.padding.right >= self.kernel
        {
            return Err(TensorError::Geometry(format!(
                "max pool: padding {:?} must be smaller than the window {}, or a window could see only padding",
                self.padding, self.kernel
            )));
        }
        Ok(())
    }

    pub fn out_h(&self) -> usize {
        (self.in_h + self.padding.top + self.padding.bottom - self.kernel) / self.stride + 1
    }

    pub fn out_w(&self) -> usize {
        (self.in_w + self.padding.left + self.padding.right - self.kernel) / self.stride + 1
    }

    pub fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_h, self.in_w, self.channels]
    }

    pub fn output_shape(&self) -> [usize; 4] {
        [self.batch, self.out_h(), self.out_w(), self.channels]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_puts_the_odd_pixel_after() {
        // 3x3 stride 1: one on each side.
        assert_eq!(Padding::same(8, 8, 3, 3, 1), Padding::uniform(1));
        // 1x1 input, 3x3 kernel: still one each side, output 1x1.
        assert_eq!(Padding::same(1, 1, 3, 3, 1), Padding::uniform(1));
        // 3x3 stride 2 on an even input: TF pads 0 before, 1 after.
        let p = Padding::same(8, 8, 3, 3, 2);
        assert_eq!((p.top, p.bottom, p.left, p.right), (0, 1, 0, 1));
    }

    #[test]
    fn resnet_stem_geometry() {
        let g = ConvGeometry {
            batch: 64,
            in_h: 38,
            in_w: 38,
            in_c: 3,
            kernel_h: 7,
            kernel_w: 7,
            out_c: 64,
            stride: 2,
            padding: Padding::ZERO,
        };
        assert_eq!(g.output_shape(), [64, 16, 16, 64]);
        assert_eq!(g.gemm_k(), 147);
    }
}
