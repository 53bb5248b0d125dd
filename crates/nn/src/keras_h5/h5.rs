//! The few HDF5 reads a Keras weights file needs, over `hdf5_reader`, with
//! every failure turned into a message that names the object it concerns.

use crate::checkpoint::decode_f32;
use hdf5_reader::{Attribute, ByteOrder, Datatype, Hdf5File};
use safetensors::tensor::Dtype;
use tensor::Tensor;

/// An error of reading the file, not yet tied to the file's path (the
/// caller adds it): `Msg` for the layout, `Dtype` for a non-float tensor.
#[derive(Debug)]
pub(crate) enum ReadError {
    Msg(String),
    Dtype { name: String, dtype: String },
}

pub(crate) type Result<T> = std::result::Result<T, ReadError>;

pub(crate) fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(ReadError::Msg(msg.into()))
}

/// `format!`-style shorthand for `fail`.
macro_rules! bail {
    ($($arg:tt)*) => { return $crate::keras_h5::h5::fail(format!($($arg)*)) };
}
pub(crate) use bail;

/// The HDF5 signature. It sits at offset 0, or at 512, 1024, 2048 ... when
/// the file starts with a user block.
const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";

/// Whether `bytes` hold an HDF5 file (its signature at 0 or a power of two
/// from 512 on, as the format allows).
pub fn is_hdf5(bytes: &[u8]) -> bool {
    let mut at = 0usize;
    loop {
        match bytes.get(at..at + SIGNATURE.len()) {
            Some(s) if s == SIGNATURE => return true,
            Some(_) => at = if at == 0 { 512 } else { at * 2 },
            None => return false,
        }
    }
}

/// Joins HDF5 path components: `join("/model_weights", "conv1_conv")`.
pub(crate) fn join(parent: &str, child: &str) -> String {
    format!("{}/{}", parent.trim_end_matches('/'), child)
}

/// The attributes of the group at `path`, by name.
pub(crate) fn attributes(file: &Hdf5File, path: &str) -> Result<Vec<Attribute>> {
    file.group(path)
        .and_then(|g| g.attributes())
        .or_else(|e| fail(format!("group {path}: cannot read its attributes: {e}")))
}

/// Child group and dataset names of the group at `path`.
pub(crate) fn members(file: &Hdf5File, path: &str) -> Result<(Vec<String>, Vec<String>)> {
    file.group(path)
        .and_then(|g| g.member_names())
        .or_else(|e| fail(format!("group {path}: cannot list it: {e}")))
}

/// Whether the group at `path` has a child group `name`.
pub(crate) fn has_group(file: &Hdf5File, path: &str, name: &str) -> Result<bool> {
    Ok(members(file, path)?.0.iter().any(|g| g == name))
}

/// The strings of one attribute: a scalar or an array, fixed-length or
/// variable-length (writers differ). An empty non-string array counts as no
/// strings: tf_keras writes `weight_names = []` (float64) for weightless
/// layers.
fn strings_of(attr: &Attribute, path: &str) -> Result<Vec<String>> {
    match attr.read_strings() {
        Ok(s) => Ok(s),
        Err(_) if attr.num_elements().ok() == Some(0) => Ok(Vec::new()),
        Err(e) => fail(format!(
            "{path}: attribute '{}' is not a list of strings: {e}",
            attr.name
        )),
    }
}

/// A list-of-strings attribute among `attrs` (those of the group at `path`,
/// which messages name), reassembled from Keras's `name0`, `name1`, ...
/// chunks when the writer split it (an HDF5 object header holds at most
/// 64 KiB of attributes). `None` if absent.
pub(crate) fn string_list(
    attrs: &[Attribute],
    path: &str,
    name: &str,
) -> Result<Option<Vec<String>>> {
    if let Some(a) = attrs.iter().find(|a| a.name == name) {
        return strings_of(a, path).map(Some);
    }
    let mut out = None::<Vec<String>>;
    for i in 0.. {
        let Some(a) = attrs.iter().find(|a| a.name == format!("{name}{i}")) else {
            break;
        };
        out.get_or_insert_with(Vec::new)
            .extend(strings_of(a, path)?);
    }
    Ok(out)
}

/// A single-string attribute (`keras_version`, Keras 3's `name`), if present.
pub(crate) fn string_attr(attrs: &[Attribute], path: &str, name: &str) -> Result<Option<String>> {
    Ok(string_list(attrs, path, name)?.and_then(|v| v.into_iter().next()))
}

/// The shape of the dataset at `path`.
pub(crate) fn shape(file: &Hdf5File, path: &str) -> Result<Vec<usize>> {
    let ds = file
        .dataset(path)
        .or_else(|e| fail(format!("dataset {path}: cannot open it: {e}")))?;
    Ok(ds.shape().iter().map(|&d| d as usize).collect())
}

/// The dataset at `path` as an f32 tensor named `name` (for messages).
/// IEEE floats of 16, 32 and 64 bits in either byte order are accepted,
/// widened or narrowed by the decoder the safetensors path uses.
pub(crate) fn read_tensor(file: &Hdf5File, path: &str, name: &str) -> Result<Tensor> {
    let ds = file.dataset(path).or_else(|e| {
        fail(format!(
            "dataset {path} (tensor '{name}'): cannot open it: {e}"
        ))
    })?;
    let (dtype, size, order) = match ds.dtype() {
        Datatype::FloatingPoint {
            size: 2,
            byte_order,
        } => (Dtype::F16, 2, *byte_order),
        Datatype::FloatingPoint {
            size: 4,
            byte_order,
        } => (Dtype::F32, 4, *byte_order),
        Datatype::FloatingPoint {
            size: 8,
            byte_order,
        } => (Dtype::F64, 8, *byte_order),
        other => {
            return Err(ReadError::Dtype {
                name: name.to_string(),
                dtype: format!("{} (dataset {path})", describe(other)),
            })
        }
    };
    let mut bytes = ds.read_raw_bytes().or_else(|e| {
        fail(format!(
            "dataset {path} (tensor '{name}'): cannot read it: {e}"
        ))
    })?;
    if matches!(order, ByteOrder::BigEndian) {
        bytes.chunks_exact_mut(size).for_each(|c| c.reverse());
    }
    let data = decode_f32(&bytes, dtype).expect("a float dtype");
    let shape: Vec<usize> = ds.shape().iter().map(|&d| d as usize).collect();
    Tensor::from_vec(&shape, data)
        .or_else(|e| fail(format!("dataset {path} (tensor '{name}'): {e}")))
}

/// A datatype as a person reads it: `int32`, `uint8`, `float128`, `string`.
fn describe(dtype: &Datatype) -> String {
    match dtype {
        Datatype::FixedPoint { size, signed, .. } => {
            format!("{}int{}", if *signed { "" } else { "u" }, *size as u32 * 8)
        }
        Datatype::FloatingPoint { size, .. } => format!("float{}", *size as u32 * 8),
        Datatype::String { .. } => "string".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_at_zero_or_after_a_user_block() {
        let mut bytes = vec![0u8; 2048 + 8];
        assert!(!is_hdf5(&bytes));
        bytes[1024..1032].copy_from_slice(SIGNATURE);
        assert!(is_hdf5(&bytes));
        assert!(is_hdf5(SIGNATURE));
        assert!(!is_hdf5(&SIGNATURE[..7]));
        let mut off_grid = vec![0u8; 2048];
        off_grid[700..708].copy_from_slice(SIGNATURE);
        assert!(!is_hdf5(&off_grid));
    }
}
