//! Decoding one JPEG or PNG file into 32x32 RGB (HWC, u8).
//!
//! Why zune-jpeg + png instead of the `image` crate: they are the decoders
//! `image` itself uses, without its other codecs and abstractions, which
//! keeps compile time down. The format is recognized by its magic bytes,
//! not by the file extension.

use std::path::Path;

use zune_jpeg::zune_core::colorspace::ColorSpace;
use zune_jpeg::zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::error::DataError;
use super::{IMAGE_BYTES, IMAGE_SIDE};

/// Decodes `bytes` (a JPEG or PNG file) into `out` (3072 bytes, HWC RGB).
/// Grayscale is replicated to RGB; alpha is dropped (not composited).
/// `path` is only used to name the file in errors.
pub(crate) fn decode_rgb32(bytes: &[u8], path: &Path, out: &mut [u8]) -> Result<(), DataError> {
    debug_assert_eq!(out.len(), IMAGE_BYTES);
    if bytes.starts_with(&[0xFF, 0xD8]) {
        decode_jpeg(bytes, path, out)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes, path, out)
    } else {
        Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: "not a JPEG or PNG file (unrecognized signature)".into(),
        })
    }
}

fn check_size(path: &Path, width: usize, height: usize) -> Result<(), DataError> {
    if width != IMAGE_SIDE || height != IMAGE_SIDE {
        return Err(DataError::WrongSize {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}

/// Copies `pixels` with `channels` interleaved channels into RGB `out`.
fn to_rgb(pixels: &[u8], channels: usize, path: &Path, out: &mut [u8]) -> Result<(), DataError> {
    let n = IMAGE_SIDE * IMAGE_SIDE;
    if channels == 0 || pixels.len() < n * channels {
        return Err(DataError::Decode {
            path: path.to_path_buf(),
            reason: format!(
                "decoder returned {} bytes for {n} pixels with {channels} channels",
                pixels.len()
            ),
        });
    }
    for (dst, src) in out.chunks_exact_mut(3).zip(pixels.chunks_exact(channels)) {
        if channels >= 3 {
            dst.copy_from_slice(&src[..3]);
        } else {
            dst.fill(src[0]);
        }
    }
    Ok(())
}

fn decode_jpeg(bytes: &[u8], path: &Path, out: &mut [u8]) -> Result<(), DataError> {
    let err = |e: zune_jpeg::errors::DecodeErrors| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("JPEG: {e:?}"),
    };
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut dec = JpegDecoder::new_with_options(bytes, opts);
    dec.decode_headers().map_err(err)?;
    let (w, h) = dec.dimensions().unwrap_or((0, 0));
    check_size(path, w, h)?;
    let pixels = dec.decode().map_err(err)?;
    let channels = dec
        .get_output_colorspace()
        .map(|c| c.num_components())
        .unwrap_or(3);
    to_rgb(&pixels, channels, path, out)
}

fn decode_png(bytes: &[u8], path: &Path, out: &mut [u8]) -> Result<(), DataError> {
    let err = |e: png::DecodingError| DataError::Decode {
        path: path.to_path_buf(),
        reason: format!("PNG: {e}"),
    };
    let mut dec = png::Decoder::new(bytes);
    // Palette -> RGB(A), 16-bit -> 8-bit, low bit depths -> 8-bit.
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(err)?;
    let (w, h) = {
        let info = reader.info();
        (info.width as usize, info.height as usize)
    };
    check_size(path, w, h)?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(err)?;
    let channels = frame.color_type.samples();
    to_rgb(&buf[..frame.buffer_size()], channels, path, out)
}
