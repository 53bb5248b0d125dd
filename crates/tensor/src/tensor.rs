//! The owned, contiguous, row-major f32 tensor.
//!
//! A tensor is a shape and a flat buffer, nothing more: no strides, no views.
//! What the dimensions *mean* (NHWC for images, HWIO for conv kernels,
//! `[in, out]` for dense kernels) is carried by the kernel geometry structs in
//! [`crate::geometry`], never guessed from the numbers, so a 4x4x4x4 tensor
//! cannot be misread (candle#3404 is what guessing costs).

use crate::buffer_pool;
use crate::error::{Result, TensorError};

/// Buffers come from and return to [`buffer_pool`], so the large activations
/// of one training step reuse the memory of the step before.
#[derive(Debug, PartialEq)]
pub struct Tensor {
    shape: Vec<usize>,
    data: Vec<f32>,
}

impl Clone for Tensor {
    fn clone(&self) -> Self {
        let mut data = buffer_pool::take(self.data.len());
        data.extend_from_slice(&self.data);
        Tensor {
            shape: self.shape.clone(),
            data,
        }
    }
}

impl Drop for Tensor {
    fn drop(&mut self) {
        buffer_pool::give(std::mem::take(&mut self.data));
    }
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    /// A tensor whose contents are unspecified (recycled values or zeros),
    /// for an op output that a kernel then writes completely: no zero-fill
    /// pass. See [`buffer_pool::take_for_overwrite`].
    pub fn for_overwrite(shape: &[usize]) -> Self {
        Tensor {
            shape: shape.to_vec(),
            data: buffer_pool::take_for_overwrite(shape.iter().product()),
        }
    }

    /// A tensor with every element set to `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        let len = shape.iter().product();
        let mut data = buffer_pool::take(len);
        data.resize(len, value);
        Tensor {
            shape: shape.to_vec(),
            data,
        }
    }

    /// Wraps `data` with `shape`; the element count must match.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != data.len() {
            return Err(TensorError::DataLength {
                what: "Tensor::from_vec".into(),
                shape: shape.to_vec(),
                expected,
                got: data.len(),
            });
        }
        Ok(Tensor {
            shape: shape.to_vec(),
            data,
        })
    }

    /// A rank-0 tensor holding one number (losses).
    pub fn scalar(value: f32) -> Self {
        Tensor {
            shape: vec![],
            data: vec![value],
        }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn numel(&self) -> usize {
        self.data.len()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn into_vec(mut self) -> Vec<f32> {
        std::mem::take(&mut self.data)
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> f32 {
        assert_eq!(
            self.data.len(),
            1,
            "item() on a tensor of shape {:?}",
            self.shape
        );
        self.data[0]
    }

    /// The same data under a new shape with the same element count.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        let expected: usize = shape.iter().product();
        if expected != self.data.len() {
            return Err(TensorError::DataLength {
                what: format!("reshape from {:?}", self.shape),
                shape: shape.to_vec(),
                expected,
                got: self.data.len(),
            });
        }
        self.shape = shape.to_vec();
        Ok(self)
    }

    /// The four dimensions of a rank-4 tensor, or an error naming `what`.
    pub fn dims4(&self, what: &str) -> Result<[usize; 4]> {
        match self.shape[..] {
            [a, b, c, d] => Ok([a, b, c, d]),
            _ => Err(TensorError::Rank {
                what: what.into(),
                expected: 4,
                got: self.shape.clone(),
            }),
        }
    }

    /// Checks that the shape is exactly `expected`, naming `what` otherwise.
    pub fn expect_shape(&self, what: &str, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(TensorError::Shape {
                what: what.into(),
                expected: expected.to_vec(),
                got: self.shape.clone(),
            });
        }
        Ok(())
    }
}
