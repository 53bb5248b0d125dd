//! The weightless layers of ResNet50: Keras `ZeroPadding2D`,
//! `MaxPooling2D` ('valid', after explicit zero padding) and
//! `GlobalAveragePooling2D`.

use autograd::{ops, Graph, Var};
use tensor::Padding;

#[derive(Clone, Debug)]
pub struct ZeroPadding {
    pub name: String,
    pub padding: Padding,
}

impl ZeroPadding {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        ops::zero_pad(g, x, self.padding)
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
        ops::max_pool(g, x, self.kernel, self.stride, Padding::ZERO)
    }
}

#[derive(Clone, Debug)]
pub struct GlobalAvgPool {
    pub name: String,
}

impl GlobalAvgPool {
    pub fn forward(&self, g: &mut Graph, x: Var) -> Var {
        ops::global_avg_pool(g, x)
    }
}
