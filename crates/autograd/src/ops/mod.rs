//! The differentiable ops. Each file holds one op's forward function and,
//! right below it, the backward that undoes it.

pub mod add;
pub mod batch_norm;
pub mod conv2d;
pub mod conv_bn;
pub mod dense;
pub mod pool;
pub mod relu;
pub mod softmax_cross_entropy;
pub mod zero_pad;

pub use add::add;
pub use batch_norm::{
    batch_norm_add_relu_train, batch_norm_infer, batch_norm_relu_infer, batch_norm_relu_train,
    batch_norm_train, BatchStats,
};
pub use conv2d::conv2d;
pub use conv_bn::{conv_bn_infer, BatchNormArgs, ConvArgs};
pub use dense::dense;
pub use pool::{global_avg_pool, max_pool};
pub use relu::relu;
pub use softmax_cross_entropy::{
    cross_entropy, smoothed_cross_entropy, softmax, softmax_cross_entropy,
    softmax_cross_entropy_smoothed,
};
pub use zero_pad::zero_pad;
