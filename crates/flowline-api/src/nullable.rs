//! `null` versus absent in partial updates.

use serde::{Deserialize, Deserializer};

/// With `#[serde(default, deserialize_with = "nullable")]`: absent → `None` (keep),
/// `null` → `Some(None)` (clear), a value → `Some(Some(v))` (set).
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
