//! JPEG decoding with libjpeg-turbo's decoder, as Pillow does it.
//!
//! Pillow 13 decodes JPEGs with libjpeg-turbo (3.2.0 in its wheels) through `JpegDecode.c`;
//! `mozjpeg-sys` vendors the same decoder (mozjpeg 4 = libjpeg-turbo 2.1's decompressor) and
//! builds it from C sources with the C compiler alone. Without nasm it has no SIMD; the C code
//! gives the same bytes as libjpeg-turbo's SIMD paths for every valid file. Corrupt data can
//! put IDCT inputs out of range, where the x86 SIMD IDCT saturates and the C one wraps: there
//! the pixels equal Pillow's with `JSIMD_FORCENONE=1` (as on a machine without SIMD), not its
//! default. The settings are Pillow's:
//!
//! - libjpeg's defaults: `JDCT_ISLOW` integer IDCT, fancy (triangle) chroma upsampling, block
//!   smoothing, the colour space libjpeg infers from the JFIF/Adobe markers;
//! - output `JCS_GRAYSCALE`, `JCS_RGB` or `JCS_CMYK` for 1, 3 or 4 components (Pillow's modes
//!   `L`, `RGB`, `CMYK`; other component counts are refused, as Pillow does);
//! - then Pillow's `convert("RGB")`: gray replicated; CMYK read as Adobe-inverted (`CMYK;I`) and
//!   converted with `cmyk2rgb` of `libImaging/Convert.c`;
//! - warnings about corrupt data are ignored (Pillow's `output_message` does nothing), fatal
//!   errors fail the decode;
//! - Pillow's source manager suspends when the data run out, and Pillow then raises `image file
//!   is truncated`; here the whole file is in the buffer, so a suspension means truncated data.
//!
//! libjpeg reports fatal errors through `error_exit`, which must not return. It unwinds here
//! (`resume_unwind`, which does not run the panic hook) through libjpeg's frames, which
//! `mozjpeg-sys` compiles with `-fexceptions` (feature `unwinding`), to the `catch_unwind` of
//! [`decode`], where the decompressor is destroyed. No `longjmp` crosses Rust frames. (A build
//! with `panic = "abort"` would abort on a libjpeg error; mm's profiles unwind.)

use std::ffi::{c_int, c_long};
use std::marker::PhantomData;
use std::mem::{transmute, zeroed};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::Path;

use mozjpeg_sys::{
    J_COLOR_SPACE, J_DCT_METHOD, boolean, jpeg_common_struct, jpeg_create_decompress,
    jpeg_decompress_struct, jpeg_destroy_decompress, jpeg_error_mgr, jpeg_finish_decompress,
    jpeg_has_multiple_scans, jpeg_read_header, jpeg_read_scanlines, jpeg_resync_to_restart,
    jpeg_source_mgr, jpeg_start_decompress, jpeg_std_error,
};

use super::{RgbImage, image_error};
use crate::Result;

/// `jpeg_read_header`'s return value once it has read the markers up to the first scan.
const JPEG_HEADER_OK: c_int = 1;
/// `JMSG_LENGTH_MAX` of `jerror.h`.
const MESSAGE_LENGTH: usize = 200;

/// The payload of the unwind that [`error_exit`] starts: libjpeg's message.
struct LibjpegError(String);

/// libjpeg's fatal-error handler: formats the message and unwinds to [`decode`].
unsafe extern "C-unwind" fn error_exit(cinfo: &mut jpeg_common_struct) {
    let mut buffer = [0u8; MESSAGE_LENGTH];
    // SAFETY: `cinfo.err` is the error manager that `Decompressor::new` set up with
    // `jpeg_std_error`, whose `format_message` writes a NUL-terminated message of at most
    // JMSG_LENGTH_MAX bytes into its buffer. The binding types that buffer `&[u8; 80]`, but
    // it is written to, so it is passed as a pointer to a mutable buffer of the C size.
    unsafe {
        if let Some(format) = (*cinfo.err).format_message {
            let format = transmute::<
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, &[u8; 80]),
                unsafe extern "C-unwind" fn(&mut jpeg_common_struct, *mut u8),
            >(format);
            format(cinfo, buffer.as_mut_ptr());
        }
    }
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    resume_unwind(Box::new(LibjpegError(
        String::from_utf8_lossy(&buffer[..end]).into_owned(),
    )));
}

/// Warnings (corrupt data libjpeg decodes on) are not printed, as in Pillow.
unsafe extern "C-unwind" fn silent(_: &mut jpeg_common_struct) {}

unsafe extern "C-unwind" fn source_noop(_: &mut jpeg_decompress_struct) {}

/// Asked for more data than the file has: suspend (`FALSE`), which [`decode`] reports as a
/// truncated file, as Pillow does.
unsafe extern "C-unwind" fn source_suspend(_: &mut jpeg_decompress_struct) -> boolean {
    0
}

unsafe extern "C-unwind" fn source_skip(cinfo: &mut jpeg_decompress_struct, num_bytes: c_long) {
    // SAFETY: `cinfo.src` is the source manager of `Decompressor`, alive for the whole decode.
    let src = unsafe { &mut *cinfo.src };
    // Skipping past the end leaves no data: the next read suspends (truncated).
    let skip = usize::try_from(num_bytes)
        .unwrap_or(0)
        .min(src.bytes_in_buffer);
    // SAFETY: `skip <= bytes_in_buffer`, so the pointer stays within (or one past) the data.
    src.next_input_byte = unsafe { src.next_input_byte.add(skip) };
    src.bytes_in_buffer -= skip;
}

/// A libjpeg decompressor reading from `bytes`, destroyed on drop (also while unwinding from
/// [`error_exit`]). The structures are boxed because libjpeg keeps pointers to them.
struct Decompressor<'a> {
    cinfo: Box<jpeg_decompress_struct>,
    _err: Box<jpeg_error_mgr>,
    _src: Box<jpeg_source_mgr>,
    _bytes: PhantomData<&'a [u8]>,
}

impl<'a> Decompressor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        // SAFETY: all-zero bytes are valid values of these C structs (null pointers, `None`
        // callbacks, enums whose first variant is 0) and the state `jpeg_create_decompress`
        // expects; a zeroed decompressor is also safe to destroy (`mem` is null).
        let (mut cinfo, mut err, mut src) = unsafe {
            (
                Box::new(zeroed::<jpeg_decompress_struct>()),
                Box::new(zeroed::<jpeg_error_mgr>()),
                Box::new(zeroed::<jpeg_source_mgr>()),
            )
        };
        // SAFETY: `jpeg_std_error` only fills in the error manager.
        unsafe { jpeg_std_error(&mut err) };
        err.error_exit = Some(error_exit);
        err.output_message = Some(silent);
        cinfo.common.err = &mut *err;
        src.next_input_byte = bytes.as_ptr();
        src.bytes_in_buffer = bytes.len();
        src.init_source = Some(source_noop);
        src.fill_input_buffer = Some(source_suspend);
        src.skip_input_data = Some(source_skip);
        src.resync_to_restart = Some(jpeg_resync_to_restart);
        src.term_source = Some(source_noop);
        let mut decompressor = Decompressor {
            cinfo,
            _err: err,
            _src: src,
            _bytes: PhantomData,
        };
        // SAFETY: `cinfo.err` is set; a failure unwinds through `error_exit` and drops
        // `decompressor`, destroying whatever was created.
        unsafe { jpeg_create_decompress(&mut *decompressor.cinfo) };
        decompressor.cinfo.src = &mut *decompressor._src;
        decompressor
    }
}

impl Drop for Decompressor<'_> {
    fn drop(&mut self) {
        // SAFETY: the decompressor was created (or is all zero); destroying frees libjpeg's
        // memory pools and never calls `error_exit`.
        unsafe { jpeg_destroy_decompress(&mut self.cinfo) };
    }
}

/// Decodes a JPEG file to 8-bit RGB exactly like Pillow's `Image.open(p).convert("RGB")`.
///
/// `check_limits(width, height, extra_bytes)` runs after the header is read and before any
/// pixel buffer is allocated; `extra_bytes` is what the decode holds besides the RGB output
/// (the gray or CMYK buffer, the coefficients of a progressive or multi-scan file).
pub(super) fn decode(
    bytes: &[u8],
    path: Option<&Path>,
    check_limits: impl FnOnce(u32, u32, u64) -> Result<()>,
) -> Result<RgbImage> {
    match catch_unwind(AssertUnwindSafe(|| {
        decode_unwinding(bytes, path, check_limits)
    })) {
        Ok(result) => result,
        Err(payload) => match payload.downcast::<LibjpegError>() {
            Ok(error) => Err(image_error(
                path,
                format!("cannot decode JPEG: {}", error.0),
            )),
            // A panic that is not libjpeg's error: a bug, let it continue.
            Err(other) => resume_unwind(other),
        },
    }
}

fn decode_unwinding(
    bytes: &[u8],
    path: Option<&Path>,
    check_limits: impl FnOnce(u32, u32, u64) -> Result<()>,
) -> Result<RgbImage> {
    let truncated = || {
        image_error(
            path,
            "JPEG data is truncated (Pillow: \"image file is truncated\")",
        )
    };
    let mut decompressor = Decompressor::new(bytes);
    let cinfo = &mut *decompressor.cinfo;
    // SAFETY (all libjpeg calls below): `cinfo` was created by `Decompressor::new`, its source
    // points into `bytes`, which outlive it, and errors unwind to `decode`.
    if unsafe { jpeg_read_header(cinfo, 1) } != JPEG_HEADER_OK {
        return Err(truncated());
    }
    let (width, height) = (cinfo.image_width, cinfo.image_height);
    let (out_color_space, channels) = match cinfo.num_components {
        1 => (J_COLOR_SPACE::JCS_GRAYSCALE, 1),
        3 => (J_COLOR_SPACE::JCS_RGB, 3),
        4 => (J_COLOR_SPACE::JCS_CMYK, 4),
        n => {
            return Err(image_error(
                path,
                format!("cannot handle {n}-component JPEG images (Pillow cannot either)"),
            ));
        }
    };
    let pixels = u64::from(width) * u64::from(height);
    let coefficients = if unsafe { jpeg_has_multiple_scans(cinfo) } != 0 {
        // SAFETY: after the header, `comp_info` points to `num_components` components.
        let components =
            unsafe { std::slice::from_raw_parts(cinfo.comp_info, cinfo.num_components as usize) };
        // A JBLOCK of 64 16-bit coefficients for each 8x8 block of each component.
        components.iter().fold(0u64, |acc, c| {
            acc.saturating_add(u64::from(c.width_in_blocks) * u64::from(c.height_in_blocks) * 128)
        })
    } else {
        0
    };
    let separate = if channels == 3 { 0 } else { channels * pixels };
    check_limits(width, height, coefficients.saturating_add(separate))?;

    cinfo.out_color_space = out_color_space;
    cinfo.dct_method = J_DCT_METHOD::JDCT_ISLOW;
    cinfo.do_fancy_upsampling = 1;
    if unsafe { jpeg_start_decompress(cinfo) } == 0 {
        return Err(truncated());
    }
    if (cinfo.output_width, cinfo.output_height) != (width, height)
        || cinfo.output_components as u64 != channels
    {
        return Err(image_error(
            path,
            "libjpeg's output does not have the header's size and components",
        ));
    }
    let stride = width as usize * channels as usize;
    let mut samples = vec![0u8; stride * height as usize];
    let base = samples.as_mut_ptr();
    // SAFETY: row `i` starts at `i * stride` of `samples`, which has `height` rows.
    let mut rows: Vec<*mut u8> = (0..height as usize)
        .map(|i| unsafe { base.add(i * stride) })
        .collect();
    while cinfo.output_scanline < height {
        let next = cinfo.output_scanline;
        // SAFETY: libjpeg writes at most `height - next` rows of `stride` bytes, each into
        // the row of `samples` that `rows` points to.
        let read = unsafe {
            jpeg_read_scanlines(cinfo, rows[next as usize..].as_mut_ptr(), height - next)
        };
        if read == 0 {
            return Err(truncated());
        }
    }
    // FALSE = suspended before the end-of-image marker with every row decoded: Pillow accepts
    // that too.
    unsafe { jpeg_finish_decompress(cinfo) };
    drop(decompressor);
    let rgb = match channels {
        3 => samples,
        1 => samples.iter().flat_map(|&g| [g, g, g]).collect(),
        _ => samples
            .chunks_exact(4)
            .flat_map(inverted_cmyk_to_rgb)
            .collect(),
    };
    RgbImage::from_raw(width, height, rgb)
        .ok_or_else(|| image_error(path, "JPEG pixel buffer has the wrong size"))
}

/// Pillow's `CMYK;I` unpacking (each byte inverted, the Adobe convention) followed by
/// `cmyk2rgb` of `libImaging/Convert.c`: `nk - nk * c / 255`, rounded as `MULDIV255`.
fn inverted_cmyk_to_rgb(stored: &[u8]) -> [u8; 3] {
    // nk = 255 - k where k = 255 - stored k.
    let nk = u32::from(stored[3]);
    let channel = |stored: u8| {
        let c = u32::from(255 - stored);
        let tmp = c * nk + 128;
        (nk - (((tmp >> 8) + tmp) >> 8)) as u8
    };
    [channel(stored[0]), channel(stored[1]), channel(stored[2])]
}
