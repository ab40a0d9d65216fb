//! Limits checked *before* large allocations, so that a hostile or mistaken input (a config
//! with a billion layers, an 80000 × 80000 request, a small file that decodes to a huge
//! image) gives a typed [`Error::TooLarge`] instead of aborting the process.
//!
//! Two limits, each set by a function, an environment variable, or left at its default:
//!
//! | limit | default | environment | function |
//! |---|---|---|---|
//! | memory one call or model may need | the machine's physical memory | `MM_MEMORY_LIMIT` (`64GiB`, `512M`, bytes) | [`set_memory_limit`] |
//! | pixels of a decoded image | 178,956,970 (Pillow's decompression-bomb error) | `MM_MAX_IMAGE_PIXELS` | [`set_max_image_pixels`] |
//!
//! The memory estimates are computed from the shapes alone (a model's weights at 2 bytes a
//! parameter, the largest activations of a call), so they are rough: within tens of percent of
//! the measured peak where they were compared (a 2048² TAESD round trip: 6.0 GiB estimated,
//! 5.35 GiB peak RSS). They exist to refuse work that cannot fit, with a message, instead of
//! letting the process abort; a call that passes may still need more than its estimate.
//!
//! ```
//! use mm_core::limits;
//!
//! limits::set_memory_limit(Some(1 << 30)); // 1 GiB
//! let err = limits::check_memory("a 4096x4096 decode", 3 * 4096 * 4096 * 128 * 4).unwrap_err();
//! assert!(err.to_string().contains("MM_MEMORY_LIMIT"));
//! limits::set_memory_limit(None); // back to the environment / the machine's memory
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Error, Result};

/// `0` = not set by a call (use the environment or the default).
static MEMORY_LIMIT: AtomicU64 = AtomicU64::new(0);
static MAX_IMAGE_PIXELS: AtomicU64 = AtomicU64::new(0);

/// Pillow's `Image.MAX_IMAGE_PIXELS` is 89,478,485; `Image.open` raises
/// `DecompressionBombError` above twice that.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 2 * 89_478_485;

/// Sets the memory limit in bytes for this process (`None`: back to `MM_MEMORY_LIMIT` or the
/// machine's physical memory).
pub fn set_memory_limit(bytes: Option<u64>) {
    MEMORY_LIMIT.store(bytes.map_or(0, |b| b.max(1)), Ordering::Relaxed);
}

/// The memory limit in bytes: the value of [`set_memory_limit`], else `MM_MEMORY_LIMIT`, else
/// the machine's physical memory (unlimited where it cannot be read).
pub fn memory_limit() -> u64 {
    match MEMORY_LIMIT.load(Ordering::Relaxed) {
        0 => env_size("MM_MEMORY_LIMIT")
            .or_else(physical_memory)
            .unwrap_or(u64::MAX),
        set => set,
    }
}

/// Sets the most pixels a decoded image may have (`None`: back to `MM_MAX_IMAGE_PIXELS` or
/// [`DEFAULT_MAX_IMAGE_PIXELS`]).
pub fn set_max_image_pixels(pixels: Option<u64>) {
    MAX_IMAGE_PIXELS.store(pixels.map_or(0, |p| p.max(1)), Ordering::Relaxed);
}

/// The most pixels a decoded image may have.
pub fn max_image_pixels() -> u64 {
    match MAX_IMAGE_PIXELS.load(Ordering::Relaxed) {
        0 => env_size("MM_MAX_IMAGE_PIXELS").unwrap_or(DEFAULT_MAX_IMAGE_PIXELS),
        set => set,
    }
}

/// Returns [`Error::TooLarge`] when `bytes` (an estimate of what `what` needs) is above
/// [`memory_limit`].
pub fn check_memory(what: impl fmt::Display, bytes: u64) -> Result<()> {
    let limit = memory_limit();
    if bytes > limit {
        return Err(Error::TooLarge {
            what: what.to_string(),
            needed: Bytes(bytes).to_string(),
            limit: format!("memory limit of {}", Bytes(limit)),
            hint: "raise it with MM_MEMORY_LIMIT=<size> (e.g. 64GiB) or \
                   mm_core::limits::set_memory_limit"
                .into(),
        });
    }
    Ok(())
}

/// Returns [`Error::TooLarge`] when a `width` × `height` image has more than
/// [`max_image_pixels`] pixels.
pub fn check_image_pixels(what: impl fmt::Display, width: u64, height: u64) -> Result<()> {
    let limit = max_image_pixels();
    let pixels = width.saturating_mul(height);
    if pixels > limit {
        return Err(Error::TooLarge {
            what: format!("{what} ({width}x{height})"),
            needed: format!("{pixels} pixels"),
            limit: format!("limit of {limit} pixels"),
            hint: "raise it with MM_MAX_IMAGE_PIXELS=<pixels> or \
                   mm_core::limits::set_max_image_pixels"
                .into(),
        });
    }
    Ok(())
}

/// The bytes of a tensor of `shape` with `elem` bytes per element (saturating, never
/// overflowing).
pub fn tensor_bytes(shape: &[usize], elem: u64) -> u64 {
    shape
        .iter()
        .fold(elem, |acc, &d| acc.saturating_mul(d as u64))
}

/// A byte count printed in binary units (`1.3 TiB`, `512.0 MiB`, `12 B`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        write!(f, "{value:.1} {}", UNITS[unit])
    }
}

/// Parses `64GiB`, `64G`, `64gb`, `1.5T`, `512M`, `4096` (bytes); units are powers of 1024.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.trim_end_matches('b').trim_end_matches('i');
    let scale = match unit {
        "" => 1u64,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * scale as f64;
    (bytes.is_finite() && bytes >= 1.0).then(|| bytes.min(u64::MAX as f64) as u64)
}

fn env_size(name: &str) -> Option<u64> {
    parse_size(&std::env::var(name).ok()?)
}

#[cfg(unix)]
fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && page_size > 0).then(|| (pages as u64).saturating_mul(page_size as u64))
}

#[cfg(not(unix))]
fn physical_memory() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(parse_size("64GiB"), Some(64 << 30));
        assert_eq!(parse_size("64g"), Some(64 << 30));
        assert_eq!(parse_size(" 512 MB "), Some(512 << 20));
        assert_eq!(parse_size("1.5T"), Some(3 << 39));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("lots"), None);
        assert_eq!(parse_size("0"), None);
        assert_eq!(Bytes(1_300_000_000_000).to_string(), "1.2 TiB");
        assert_eq!(Bytes(12).to_string(), "12 B");
        assert_eq!(tensor_bytes(&[usize::MAX, 4], 4), u64::MAX);
        assert!(physical_memory().unwrap_or(u64::MAX) > 1 << 30);
    }

    #[test]
    fn checks_name_the_limit_and_how_to_raise_it() {
        let err = check_image_pixels("photo.png", 20_000, 20_000).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("20000x20000") && text.contains("MM_MAX_IMAGE_PIXELS"),
            "{text}"
        );
        assert!(check_image_pixels("photo.png", 4096, 4096).is_ok());
        // The default memory limit is the machine's memory: a terabyte does not fit.
        let err = check_memory("a model", 1 << 50).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err}");
        assert!(err.to_string().contains("1.0 PiB"), "{err}");
        assert!(check_memory("a model", 1 << 20).is_ok());
    }
}
