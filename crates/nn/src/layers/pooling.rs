//! The weightless layers of ResNet50: Keras `ZeroPadding2D`,
//! `MaxPooling2D` ('valid', after explicit zero padding) and
//! `GlobalAveragePooling2D`. Each taps its output under its Keras name.

use autograd::{ops, Graph, Var};
use tensor::Padding;

#[derive(Clone, Debug)]
pub struct ZeroPadding {
    pub name: String,
    pub padding: Padding,
}

impl ZeroPadding {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let y = ops::zero_pad(g, x, self.padding);
        g.tap(&self.name, y)
    }
}

#[derive(Clone, Debug)]
pub struct MaxPool {
    pub name: String,
    pub kernel: usize,
    pub stride: usize,
}

impl MaxPool {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let y = ops::max_pool(g, x, self.kernel, self.stride, Padding::ZERO);
        g.tap(&self.name, y)
    }

    /// This pool after a `ZeroPadding2D` of `padding`, on an input that is
    /// never negative (a ReLU's output), without materializing the padded
    /// copy: the window just skips the padded positions. A zero pad can win
    /// a window only when every real pixel in it is zero too, so the value
    /// is the same, and the gradient it would have taken is one the ReLU's
    /// backward zeroes anyway. (Only a NaN first pixel of a border window
    /// differs: here it makes the output NaN, behind a zero pad it is skipped.)
    /// On an input that can be negative (ResNet V2's pool follows a bare
    /// conv) the zeros would win windows, and this is not the same function.
    pub fn forward_after_zero_padding(&self, g: &mut Graph, x: Var, padding: Padding) -> Var {
        let y = ops::max_pool(g, x, self.kernel, self.stride, padding);
        g.tap(&self.name, y)
    }
}

#[derive(Clone, Debug)]
pub struct GlobalAvgPool {
    pub name: String,
}

impl GlobalAvgPool {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        let y = ops::global_avg_pool(g, x);
        g.tap(&self.name, y)
    }
}
