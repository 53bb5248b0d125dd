//! Layers as small named structs holding the ids of their parameters. A
//! layer's `forward` adds its ops to a graph; the gradients come from the ops.

pub mod batch_norm;
pub mod conv2d;
pub mod conv_bn;
pub mod dense;
pub mod pooling;

pub use batch_norm::{BatchNorm, VarianceUpdate};
pub use conv2d::{Conv2d, PaddingMode};
pub use conv_bn::{BnRelu, ConvBn, Form};
pub use dense::Dense;
pub use pooling::{GlobalAvgPool, MaxPool, ZeroPadding};
