//! Catalogue items: an id, an image, a text and a JSON payload.

use std::path::PathBuf;
use std::sync::Arc;

use image::RgbImage;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The id of an item (a Qdrant point id).
pub type ItemId = u64;

/// The payload key under which an item's image path is stored (reserved).
pub const IMAGE_KEY: &str = "_image";
/// The payload key under which an item's text is stored (reserved).
pub const TEXT_KEY: &str = "_text";

/// Where an item's image comes from.
#[derive(Debug, Clone)]
pub enum ImageSource {
    /// A file, decoded when the item is indexed; the path is stored in the payload.
    Path(PathBuf),
    /// Pixels already in memory (not stored: only their embedding is).
    Pixels(Arc<RgbImage>),
}

/// One product of a catalogue: an image and/or a text (each embedded into its own named
/// vector, `image` and `text`) and a JSON payload (filterable fields such as a price or a
/// category).
///
/// ```
/// use mm_retrieval::Item;
/// let item = Item::new(7)
///     .with_image_path("shoes/7.jpg")
///     .with_text("red running shoes")
///     .with_field("price", 59.9)
///     .with_field("category", "shoes");
/// assert_eq!(item.payload["category"], "shoes");
/// ```
#[derive(Debug, Clone)]
pub struct Item {
    /// The id (unique in the catalogue; adding an item with an existing id replaces it).
    pub id: ItemId,
    /// The image, if any.
    pub image: Option<ImageSource>,
    /// The text (description, caption), if any.
    pub text: Option<String>,
    /// Free JSON fields, filterable at query time. The keys [`IMAGE_KEY`] and [`TEXT_KEY`] are
    /// reserved.
    pub payload: Map<String, Value>,
}

impl Item {
    /// An item with nothing but its id.
    ///
    /// ```
    /// let item = mm_retrieval::Item::new(1);
    /// assert!(item.image.is_none() && item.text.is_none());
    /// ```
    pub fn new(id: ItemId) -> Self {
        Self {
            id,
            image: None,
            text: None,
            payload: Map::new(),
        }
    }

    /// Sets the image file.
    ///
    /// ```
    /// let item = mm_retrieval::Item::new(1).with_image_path("a.jpg");
    /// assert_eq!(item.image_path(), Some(std::path::Path::new("a.jpg")));
    /// ```
    pub fn with_image_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.image = Some(ImageSource::Path(path.into()));
        self
    }

    /// Sets the image from pixels in memory.
    ///
    /// ```
    /// let item = mm_retrieval::Item::new(1).with_image(image::RgbImage::new(4, 4));
    /// assert!(item.image.is_some() && item.image_path().is_none());
    /// ```
    pub fn with_image(mut self, image: RgbImage) -> Self {
        self.image = Some(ImageSource::Pixels(Arc::new(image)));
        self
    }

    /// Sets the text.
    ///
    /// ```
    /// let item = mm_retrieval::Item::new(1).with_text("a red bicycle");
    /// assert_eq!(item.text.as_deref(), Some("a red bicycle"));
    /// ```
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.text = Some(text.into());
        self
    }

    /// Sets one payload field.
    ///
    /// ```
    /// let item = mm_retrieval::Item::new(1).with_field("price", 10);
    /// assert_eq!(item.payload["price"], 10);
    /// ```
    pub fn with_field(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.payload.insert(key.into(), value.into());
        self
    }

    /// The image file, when the image comes from one.
    ///
    /// ```
    /// assert!(mm_retrieval::Item::new(1).image_path().is_none());
    /// ```
    pub fn image_path(&self) -> Option<&std::path::Path> {
        match &self.image {
            Some(ImageSource::Path(p)) => Some(p),
            _ => None,
        }
    }

    /// The payload as stored: the user fields plus the image path and text under the reserved
    /// keys. A user field under a reserved key is an [`Error::Payload`].
    pub(crate) fn stored_payload(&self) -> Result<Map<String, Value>> {
        for key in [IMAGE_KEY, TEXT_KEY] {
            if self.payload.contains_key(key) {
                return Err(Error::Payload {
                    id: self.id,
                    reason: format!("the key {key:?} is reserved"),
                });
            }
        }
        let mut payload = self.payload.clone();
        if let Some(path) = self.image_path() {
            payload.insert(
                IMAGE_KEY.into(),
                Value::String(path.to_string_lossy().into_owned()),
            );
        }
        if let Some(text) = &self.text {
            payload.insert(TEXT_KEY.into(), Value::String(text.clone()));
        }
        Ok(payload)
    }

    /// The item a stored payload describes (the inverse of `stored_payload`).
    pub(crate) fn from_stored(id: ItemId, mut payload: Map<String, Value>) -> Self {
        let image = match payload.remove(IMAGE_KEY) {
            Some(Value::String(p)) => Some(ImageSource::Path(PathBuf::from(p))),
            _ => None,
        };
        let text = match payload.remove(TEXT_KEY) {
            Some(Value::String(t)) => Some(t),
            _ => None,
        };
        Self {
            id,
            image,
            text,
            payload,
        }
    }
}

/// A stable id for a string key (a file name, a SKU): the 64-bit FNV-1a hash of its bytes.
/// Re-indexing the same folder gives the same ids, so files are updated rather than duplicated.
///
/// ```
/// use mm_retrieval::item::id_from_key;
/// assert_eq!(id_from_key("shoes/7.jpg"), id_from_key("shoes/7.jpg"));
/// assert_ne!(id_from_key("a.jpg"), id_from_key("b.jpg"));
/// ```
pub fn id_from_key(key: &str) -> ItemId {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}
