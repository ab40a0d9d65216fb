//! Decoding images and converting between images and tensors.
//!
//! [`load_image`] and [`decode_image`] detect the format from the content (PNG, JPEG, WebP), not
//! from the file name, and return 8-bit RGB equal to Pillow's `Image.open(p).convert("RGB")`:
//! grayscale is replicated to three channels and an alpha channel is dropped *without*
//! compositing, so fully transparent pixels keep whatever colour they store (often black).
//!
//! JPEGs are decoded bit-exactly like Pillow 13: with libjpeg-turbo's decoder (vendored by
//! `mozjpeg-sys`, built from C sources) and Pillow's settings (integer IDCT, fancy upsampling,
//! CMYK read as Adobe-inverted and converted with Pillow's `cmyk2rgb`). Like Pillow, a truncated
//! JPEG is an error ([`Error::Image`]) and corrupt but complete data decodes with libjpeg's
//! recovery (where corrupt coefficients overflow the IDCT, the pixels are those of Pillow
//! without SIMD, `JSIMD_FORCENONE=1`). The tests compare every layout (4:4:4, 4:2:2, 4:2:0,
//! 4:4:0, 4:1:1, gray, progressive, restart intervals, RGB, CMYK, YCCK) with Pillow's pixels.
//! PNG and WebP are decoded by the `image` crate (lossless formats: one right answer).
//!
//! Before any pixel buffer is allocated, the header's size is checked against
//! [`limits::max_image_pixels`] (Pillow's decompression-bomb limit) and the decoded buffer plus
//! the RGB output against [`limits::memory_limit`]; either gives [`Error::TooLarge`].
//!
//! The Python image processors of `transformers` do something different when they are handed a
//! PIL image with transparency: they composite it onto white first. [`load_image_on_white`] and
//! [`decode_image_on_white`] reproduce that (bit-exactly, with Pillow's `alpha_composite`
//! arithmetic), for images whose processed pixels must match `processor(images=Image.open(p))`.
//!
//! [`canny`] detects edges exactly as OpenCV's `cv2.Canny` does, for ControlNet's Canny control
//! images.
//!
//! Tensors follow the PyTorch layout: `[3, H, W]` for one image and `[N, 3, H, W]` for a batch,
//! with values in `[0, 1]`.

pub mod canny;
mod jpeg;

use std::path::{Path, PathBuf};

use ::image::{ColorType, DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits, RgbaImage};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{Error, Result, limits};

/// 8-bit grayscale image buffer (re-exported from the `image` crate), as [`canny`] returns.
pub use ::image::GrayImage;
/// 8-bit RGB image buffer (re-exported from the `image` crate).
pub use ::image::RgbImage;

fn image_error(path: Option<&Path>, reason: impl Into<String>) -> Error {
    Error::Image {
        path: path.map(Path::to_path_buf),
        reason: reason.into(),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            Error::MissingFile {
                what: "image".into(),
                path: path.to_path_buf(),
                hint: String::new(),
            }
        } else {
            Error::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    })
}

/// Checks a `width` x `height` decode that holds `extra_bytes` besides its 8-bit RGB output
/// against [`limits::max_image_pixels`] and [`limits::memory_limit`].
fn check_limits(
    path: Option<&Path>,
    format: ImageFormat,
    width: u32,
    height: u32,
    extra_bytes: u64,
) -> Result<()> {
    let what = match path {
        Some(path) => format!("{format:?} image {}", path.display()),
        None => format!("in-memory {format:?} image"),
    };
    limits::check_image_pixels(&what, width.into(), height.into())?;
    let rgb = 3 * u64::from(width) * u64::from(height);
    limits::check_memory(
        format!("decoding the {what} ({width}x{height})"),
        rgb.saturating_add(extra_bytes),
    )
}

/// Decodes a PNG or WebP file with the `image` crate, after checking the header's size.
fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    path: Option<&Path>,
) -> Result<DynamicImage> {
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    // Our checks below come first and are at least as strict: no size limit of its own, and an
    // allocation limit (its default is 512 MiB) no lower than the memory limit.
    let mut own_limits = Limits::no_limits();
    own_limits.max_alloc = Some(limits::memory_limit());
    reader.limits(own_limits);
    let decoder = reader
        .into_decoder()
        .map_err(|e| image_error(path, format!("cannot decode image: {e}")))?;
    let (width, height) = decoder.dimensions();
    // The decoded buffer is the RGB output itself only when it is 8-bit RGB.
    let extra = match decoder.color_type() {
        ColorType::Rgb8 => 0,
        _ => decoder.total_bytes(),
    };
    check_limits(path, format, width, height, extra)?;
    DynamicImage::from_decoder(decoder)
        .map_err(|e| image_error(path, format!("cannot decode image: {e}")))
}

/// Decodes the bytes of a PNG, JPEG or WebP file, detecting the format from its content.
fn decode_dynamic(bytes: &[u8], path: Option<&Path>) -> Result<DynamicImage> {
    let img = match ::image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => jpeg::decode(bytes, path, |width, height, extra| {
            check_limits(path, ImageFormat::Jpeg, width, height, extra)
        })
        .map(DynamicImage::ImageRgb8)?,
        Ok(format @ (ImageFormat::Png | ImageFormat::WebP)) => {
            decode_with_image_crate(bytes, format, path)?
        }
        _ => {
            return Err(image_error(
                path,
                "not a PNG, JPEG or WebP image (unrecognised content)",
            ));
        }
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(image_error(path, "image has zero width or height"));
    }
    Ok(img)
}

/// Pillow's `convert("RGB")` for 8-bit sources; wider sources are scaled to 8 bits.
fn to_rgb_dropping_alpha(img: DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb,
        other => other.to_rgb8(),
    }
}

/// Composites an RGBA image onto an opaque white background with the integer arithmetic of
/// Pillow's `Image.alpha_composite` (`libImaging/AlphaComposite.c`, 7 precision bits).
fn composite_on_white(rgba: &RgbaImage) -> RgbImage {
    const PRECISION_BITS: u32 = 7;
    let shift_div_255 = |a: u32| ((a >> 8) + a) >> 8;
    let mut out = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in out.pixels_mut().zip(rgba.pixels()) {
        let [r, g, b, a] = src.0;
        if a == 0 {
            dst.0 = [255, 255, 255];
            continue;
        }
        let a = u32::from(a);
        // With an opaque destination: outa255 = 255 * 255, so coef1 = a << 7.
        let coef1 = a << PRECISION_BITS;
        let coef2 = (255 << PRECISION_BITS) - coef1;
        let blend = |c: u8| {
            let tmp = u32::from(c) * coef1 + 255 * coef2;
            // Every value fits in u8: tmp <= 255 * 255 << 7.
            (shift_div_255(tmp + (0x80 << PRECISION_BITS)) >> PRECISION_BITS).min(255) as u8
        };
        dst.0 = [blend(r), blend(g), blend(b)];
    }
    out
}

fn to_rgb_on_white(img: DynamicImage) -> RgbImage {
    match img {
        // No copy of an 8-bit RGBA image (the memory check counts it once).
        DynamicImage::ImageRgba8(rgba) => composite_on_white(&rgba),
        img if img.color().has_alpha() => composite_on_white(&img.to_rgba8()),
        img => to_rgb_dropping_alpha(img),
    }
}

/// Loads an image file (PNG, JPEG or WebP, detected from the content) as 8-bit RGB, like
/// Pillow's `Image.open(path).convert("RGB")`: grayscale is replicated, alpha is dropped.
///
/// A missing file gives [`Error::MissingFile`]; a file that is not a decodable image (also a
/// truncated one) gives [`Error::Image`] naming the file; an image above
/// [`limits::max_image_pixels`] or [`limits::memory_limit`] gives [`Error::TooLarge`] before
/// its pixels are decoded.
pub fn load_image(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    decode_dynamic(&bytes, Some(path)).map(to_rgb_dropping_alpha)
}

/// Decodes an in-memory PNG, JPEG or WebP image as 8-bit RGB (see [`load_image`]).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    decode_dynamic(bytes, None).map(to_rgb_dropping_alpha)
}

/// Loads an image file as 8-bit RGB, compositing any transparency onto white, the way the
/// `transformers` image processors convert a PIL image that has an alpha channel.
///
/// Images without alpha give the same result as [`load_image`].
pub fn load_image_on_white(path: impl AsRef<Path>) -> Result<RgbImage> {
    let path = path.as_ref();
    let bytes = read_file(path)?;
    decode_dynamic(&bytes, Some(path)).map(to_rgb_on_white)
}

/// Decodes an in-memory image as 8-bit RGB, compositing transparency onto white (see
/// [`load_image_on_white`]).
pub fn decode_image_on_white(bytes: &[u8]) -> Result<RgbImage> {
    decode_dynamic(bytes, None).map(to_rgb_on_white)
}

/// Planar `[3, H, W]` values in `[0, 1]` (`x / 255`) of an RGB image, channel-major.
pub fn image_to_chw(image: &RgbImage) -> Vec<f32> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let plane = w * h;
    let mut out = vec![0.0f32; 3 * plane];
    for (i, px) in image.pixels().enumerate() {
        for c in 0..3 {
            out[c * plane + i] = f32::from(px.0[c]) / 255.0;
        }
    }
    out
}

/// Converts an RGB image to a `[3, H, W]` float tensor with values in `[0, 1]`.
pub fn image_to_tensor(image: &RgbImage, device: &Device) -> Tensor<3> {
    let shape = [3, image.height() as usize, image.width() as usize];
    Tensor::<3>::from_data(TensorData::new(image_to_chw(image), shape), device)
}

/// Stacks RGB images of one size into a `[N, 3, H, W]` float tensor with values in `[0, 1]`.
///
/// An empty slice or images of different sizes give [`Error::InvalidInput`].
pub fn images_to_tensor(images: &[RgbImage], device: &Device) -> Result<Tensor<4>> {
    let first = images
        .first()
        .ok_or_else(|| Error::InvalidInput("empty image batch".into()))?;
    let (w, h) = first.dimensions();
    let mut data = Vec::with_capacity(images.len() * 3 * (w as usize) * (h as usize));
    for (i, img) in images.iter().enumerate() {
        if img.dimensions() != (w, h) {
            return Err(Error::InvalidInput(format!(
                "image {i} is {}x{}, expected {w}x{h} like the first image of the batch",
                img.width(),
                img.height()
            )));
        }
        data.extend(image_to_chw(img));
    }
    let shape = [images.len(), 3, h as usize, w as usize];
    Ok(Tensor::<4>::from_data(TensorData::new(data, shape), device))
}

/// Builds an RGB image from planar `[3, H, W]` values, clamping to `[0, 1]` and rounding
/// `x * 255` to the nearest integer (NaN becomes 0).
pub fn chw_to_image(data: &[f32], height: usize, width: usize) -> Result<RgbImage> {
    let plane = height
        .checked_mul(width)
        .filter(|p| p.checked_mul(3).is_some())
        .ok_or_else(|| Error::InvalidInput(format!("image size {height}x{width} overflows")))?;
    if data.len() != 3 * plane {
        return Err(Error::InvalidInput(format!(
            "expected 3x{height}x{width} = {} values, got {}",
            3 * plane,
            data.len()
        )));
    }
    let (w, h) = (
        u32::try_from(width).map_err(|_| Error::InvalidInput("image too wide".into()))?,
        u32::try_from(height).map_err(|_| Error::InvalidInput("image too tall".into()))?,
    );
    let to_u8 = |x: f32| {
        if x.is_nan() {
            0
        } else {
            (x.clamp(0.0, 1.0) * 255.0).round() as u8
        }
    };
    let mut buf = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for c in 0..3 {
            buf.push(to_u8(data[c * plane + i]));
        }
    }
    RgbImage::from_raw(w, h, buf)
        .ok_or_else(|| Error::InvalidInput("image buffer size mismatch".into()))
}

fn read_f32<const D: usize>(tensor: Tensor<D>) -> Result<Vec<f32>> {
    tensor
        .try_into_data_as::<f32>()
        .map_err(|e| Error::InvalidInput(format!("cannot read tensor: {e}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::InvalidInput(format!("cannot read tensor: {e:?}")))
}

/// Converts a `[3, H, W]` tensor with values in `[0, 1]` back to an RGB image (values are
/// clamped to `[0, 1]`, then `(x * 255).round()`).
///
/// A channel count other than 3 gives [`Error::InvalidInput`].
pub fn tensor_to_image(tensor: Tensor<3>) -> Result<RgbImage> {
    let [c, h, w] = tensor.dims();
    if c != 3 {
        return Err(Error::InvalidInput(format!(
            "expected a [3, H, W] image tensor, got [{c}, {h}, {w}]"
        )));
    }
    chw_to_image(&read_f32(tensor)?, h, w)
}

/// Converts a `[N, 3, H, W]` tensor with values in `[0, 1]` to `N` RGB images (see
/// [`tensor_to_image`]).
pub fn tensor_to_images(tensor: Tensor<4>) -> Result<Vec<RgbImage>> {
    let [n, c, h, w] = tensor.dims();
    if c != 3 {
        return Err(Error::InvalidInput(format!(
            "expected a [N, 3, H, W] image tensor, got [{n}, {c}, {h}, {w}]"
        )));
    }
    let data = read_f32(tensor)?;
    let per = 3 * h * w;
    (0..n)
        .map(|i| chw_to_image(&data[i * per..(i + 1) * per], h, w))
        .collect()
}

/// Saves an RGB image, choosing the format from the extension (`.png`, `.jpg`, `.webp`).
pub fn save_image(image: &RgbImage, path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    image.save(path).map_err(|e| Error::Image {
        path: Some(PathBuf::from(path)),
        reason: format!("cannot save image: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assets() -> PathBuf {
        if let Some(p) = std::env::var_os("MM_ASSETS") {
            return PathBuf::from(p);
        }
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/assets")
    }

    #[test]
    fn load_real_images_as_rgb() {
        let dir = assets().join("images");
        for (name, w, h) in [
            ("astronaut.png", 512, 512),
            ("camera.png", 512, 512),
            ("chelsea.png", 451, 300),
            ("coffee.png", 600, 400),
            ("rocket.jpg", 640, 427),
            ("CLIP.png", 2162, 762),
        ] {
            let img = load_image(dir.join(name)).unwrap();
            assert_eq!(img.dimensions(), (w, h), "{name}");
        }
        // Grayscale is replicated to three equal channels.
        let cam = load_image(dir.join("camera.png")).unwrap();
        assert!(cam.pixels().all(|p| p.0[0] == p.0[1] && p.0[1] == p.0[2]));
        // Alpha is dropped (transparent pixels of CLIP.png are black), or composited on white.
        let clip = load_image(dir.join("CLIP.png")).unwrap();
        let white = load_image_on_white(dir.join("CLIP.png")).unwrap();
        assert_eq!(clip.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(white.get_pixel(0, 0).0, [255, 255, 255]);
    }

    #[test]
    fn format_detected_from_content_not_extension() {
        let src = assets().join("images/rocket.jpg");
        let tmp = std::env::temp_dir().join(format!("mm_core_rocket_{}.png", std::process::id()));
        std::fs::copy(&src, &tmp).unwrap();
        let a = load_image(&src).unwrap();
        let b = load_image(&tmp).unwrap();
        let _ = std::fs::remove_file(&tmp);
        assert_eq!(a, b);
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let missing = Path::new("/nonexistent/dir/cat.png");
        let err = load_image(missing).unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("cat.png"));

        let tmp =
            std::env::temp_dir().join(format!("mm_core_not_image_{}.png", std::process::id()));
        std::fs::write(&tmp, b"definitely not an image").unwrap();
        let err = load_image(&tmp).unwrap_err();
        let _ = std::fs::remove_file(&tmp);
        assert!(matches!(err, Error::Image { path: Some(_), .. }), "{err}");
        assert!(err.to_string().contains("mm_core_not_image"), "{err}");

        // A truncated PNG.
        let bytes = std::fs::read(assets().join("images/camera.png")).unwrap();
        assert!(matches!(
            decode_image(&bytes[..bytes.len() / 2]),
            Err(Error::Image { path: None, .. })
        ));
        assert!(decode_image(&[]).is_err());
    }

    #[test]
    fn tensor_round_trip() {
        let device = Device::flex();
        let img = load_image(assets().join("images/chelsea.png")).unwrap();
        let t = image_to_tensor(&img, &device);
        assert_eq!(t.dims(), [3, 300, 451]);
        let back = tensor_to_image(t.clone()).unwrap();
        assert_eq!(back, img);

        let batch = images_to_tensor(&[img.clone(), img.clone()], &device).unwrap();
        assert_eq!(batch.dims(), [2, 3, 300, 451]);
        let imgs = tensor_to_images(batch).unwrap();
        assert_eq!(imgs.len(), 2);
        assert_eq!(imgs[1], img);

        // Out-of-range values are clamped.
        let t = Tensor::<3>::from_data(
            TensorData::new(vec![-1.0f32, 2.0, 0.5, 0.5, f32::NAN, 0.2], [3, 1, 2]),
            &device,
        );
        let img = tensor_to_image(t).unwrap();
        assert_eq!(img.get_pixel(0, 0).0, [0, 128, 0]);
        assert_eq!(img.get_pixel(1, 0).0, [255, 128, 51]);

        let bad = Tensor::<3>::zeros([4, 2, 2], &device);
        assert!(matches!(tensor_to_image(bad), Err(Error::InvalidInput(_))));
        assert!(matches!(
            images_to_tensor(&[], &device),
            Err(Error::InvalidInput(_))
        ));
        let small = RgbImage::new(2, 2);
        assert!(images_to_tensor(&[small, RgbImage::new(3, 2)], &device).is_err());
    }
}
