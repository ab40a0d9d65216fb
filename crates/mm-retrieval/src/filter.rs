//! Payload filters: conditions on an item's JSON fields, applied inside the vector search.

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// A condition on the payload, the subset of Qdrant's filter language a catalogue needs.
/// Keys are Qdrant JSON paths (`"category"`, `"specs.color"`).
///
/// ```
/// use mm_retrieval::Filter;
/// let cheap_red_shoes = Filter::all([
///     Filter::eq("category", "shoes"),
///     Filter::any("color", ["red", "crimson"]),
///     Filter::range("price", None, Some(80.0)),
/// ]);
/// let not_sold_out = Filter::not(Filter::eq("sold_out", true));
/// # let _ = (cheap_red_shoes, not_sold_out);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Filter {
    /// The field equals a string, an integer or a boolean.
    Eq(String, Value),
    /// The field equals one of several strings or integers.
    Any(String, Vec<Value>),
    /// The field is a number within bounds (inclusive; `None` is unbounded).
    Range {
        /// The field.
        key: String,
        /// Lower bound (`>=`).
        min: Option<f64>,
        /// Upper bound (`<=`).
        max: Option<f64>,
    },
    /// Every condition holds.
    All(Vec<Filter>),
    /// At least one condition holds.
    AnyOf(Vec<Filter>),
    /// The condition does not hold.
    Not(Box<Filter>),
}

impl Filter {
    /// `key == value` (a string, an integer or a boolean).
    ///
    /// ```
    /// let f = mm_retrieval::Filter::eq("category", "shoes");
    /// # let _ = f;
    /// ```
    pub fn eq(key: impl Into<String>, value: impl Into<Value>) -> Self {
        Self::Eq(key.into(), value.into())
    }

    /// `key` is one of `values` (strings or integers).
    ///
    /// ```
    /// let f = mm_retrieval::Filter::any("size", [40, 41, 42]);
    /// # let _ = f;
    /// ```
    pub fn any<V: Into<Value>>(
        key: impl Into<String>,
        values: impl IntoIterator<Item = V>,
    ) -> Self {
        Self::Any(key.into(), values.into_iter().map(Into::into).collect())
    }

    /// `min <= key <= max`.
    ///
    /// ```
    /// let f = mm_retrieval::Filter::range("price", Some(10.0), Some(20.0));
    /// # let _ = f;
    /// ```
    pub fn range(key: impl Into<String>, min: Option<f64>, max: Option<f64>) -> Self {
        Self::Range {
            key: key.into(),
            min,
            max,
        }
    }

    /// Every filter holds.
    ///
    /// ```
    /// use mm_retrieval::Filter;
    /// let f = Filter::all([Filter::eq("a", 1), Filter::eq("b", 2)]);
    /// # let _ = f;
    /// ```
    pub fn all(filters: impl IntoIterator<Item = Filter>) -> Self {
        Self::All(filters.into_iter().collect())
    }

    /// At least one filter holds.
    ///
    /// ```
    /// use mm_retrieval::Filter;
    /// let f = Filter::any_of([Filter::eq("a", 1), Filter::eq("b", 2)]);
    /// # let _ = f;
    /// ```
    pub fn any_of(filters: impl IntoIterator<Item = Filter>) -> Self {
        Self::AnyOf(filters.into_iter().collect())
    }

    /// The filter does not hold.
    ///
    /// ```
    /// let f = mm_retrieval::Filter::not(mm_retrieval::Filter::eq("sold_out", true));
    /// # let _ = f;
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn not(filter: Filter) -> Self {
        Self::Not(Box::new(filter))
    }

    /// Parses `key=value` (the example's `--filter`): the value is read as JSON when it is a
    /// number or a boolean, else taken as a string; `key=a|b|c` is [`Filter::Any`] and
    /// `key=10..20` (either bound may be left out) a [`Filter::Range`].
    ///
    /// ```
    /// use mm_retrieval::Filter;
    /// assert_eq!(Filter::parse("category=shoes")?, Filter::eq("category", "shoes"));
    /// assert_eq!(Filter::parse("price=..80")?, Filter::range("price", None, Some(80.0)));
    /// assert_eq!(Filter::parse("size=40|41")?, Filter::any("size", [40, 41]));
    /// assert!(Filter::parse("no equals sign").is_err());
    /// # Ok::<(), mm_retrieval::Error>(())
    /// ```
    pub fn parse(spec: &str) -> Result<Self> {
        let (key, value) = spec.split_once('=').ok_or_else(|| {
            Error::InvalidInput(format!("filter {spec:?} is not of the form key=value"))
        })?;
        let key = key.trim();
        if key.is_empty() {
            return Err(Error::InvalidInput(format!("filter {spec:?} has no key")));
        }
        let scalar = |s: &str| -> Value {
            match serde_json::from_str::<Value>(s) {
                Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
                _ => Value::String(s.to_string()),
            }
        };
        if let Some((lo, hi)) = value.split_once("..") {
            let bound = |s: &str| -> Result<Option<f64>> {
                let s = s.trim();
                if s.is_empty() {
                    return Ok(None);
                }
                s.parse::<f64>().map(Some).map_err(|_| {
                    Error::InvalidInput(format!("filter {spec:?}: {s:?} is not a number"))
                })
            };
            return Ok(Self::range(key, bound(lo)?, bound(hi)?));
        }
        if value.contains('|') {
            return Ok(Self::Any(
                key.into(),
                value.split('|').map(scalar).collect(),
            ));
        }
        Ok(Self::Eq(key.into(), scalar(value)))
    }

    /// Checks the values: equality takes strings, integers or booleans; `Any` strings or
    /// integers (not mixed); ranges finite bounds.
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::InvalidInput(format!("filter: {what}")));
        match self {
            Self::Eq(key, v) => match v {
                Value::String(_) | Value::Bool(_) => Ok(()),
                Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
                _ => bad(format!(
                    "{key} = {v}: equality takes a string, an integer or a boolean (use a range \
                     for other numbers)"
                )),
            },
            Self::Any(key, values) => {
                let strings = values.iter().all(Value::is_string);
                let ints = values.iter().all(|v| v.is_i64() || v.is_u64());
                if values.is_empty() || !(strings || ints) {
                    return bad(format!(
                        "{key} in {values:?}: needs one or more strings, or one or more integers"
                    ));
                }
                Ok(())
            }
            Self::Range { key, min, max } => {
                if min.is_none() && max.is_none() {
                    return bad(format!("{key}: a range needs a bound"));
                }
                if min.iter().chain(max).any(|b| !b.is_finite()) {
                    return bad(format!("{key}: range bounds must be finite"));
                }
                Ok(())
            }
            Self::All(fs) | Self::AnyOf(fs) => fs.iter().try_for_each(Self::validate),
            Self::Not(f) => f.validate(),
        }
    }

    /// The filter in Qdrant's JSON filter language (what the REST API takes), as a filter
    /// object (`{"must": [...]}`).
    ///
    /// ```
    /// let json = mm_retrieval::Filter::eq("category", "shoes").to_qdrant_json();
    /// assert_eq!(json["must"][0]["match"]["value"], "shoes");
    /// ```
    pub fn to_qdrant_json(&self) -> Value {
        match self {
            Self::All(fs) => json!({ "must": fs.iter().map(Self::condition).collect::<Vec<_>>() }),
            Self::AnyOf(fs) => {
                json!({ "should": fs.iter().map(Self::condition).collect::<Vec<_>>() })
            }
            Self::Not(f) => json!({ "must_not": [f.condition()] }),
            _ => json!({ "must": [self.condition()] }),
        }
    }

    fn condition(&self) -> Value {
        match self {
            Self::Eq(key, v) => json!({ "key": key, "match": { "value": v } }),
            Self::Any(key, vs) => json!({ "key": key, "match": { "any": vs } }),
            Self::Range { key, min, max } => {
                let mut range = serde_json::Map::new();
                if let Some(min) = min {
                    range.insert("gte".into(), json!(min));
                }
                if let Some(max) = max {
                    range.insert("lte".into(), json!(max));
                }
                json!({ "key": key, "range": range })
            }
            Self::All(_) | Self::AnyOf(_) | Self::Not(_) => self.to_qdrant_json(),
        }
    }
}
