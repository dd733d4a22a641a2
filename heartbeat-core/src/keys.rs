//! Where records live in the store.
//!
//! The default layout is the seed system's: `websocketmanager/instances/<id>` for each
//! heartbeat and `websocketmanager/instances/_index` for the set of ids. The prefix is
//! configurable so that several independent clusters can share one store; because
//! [`InstanceId`] can never start with `_` or contain `/`, no heartbeat key can collide
//! with the index key or escape the prefix.

use crate::id::InstanceId;

/// The seed system's key prefix.
pub const DEFAULT_PREFIX: &str = "websocketmanager/instances/";

/// Name of the index key below the prefix.
pub const INDEX_SUFFIX: &str = "_index";

/// Builds heartbeat and index keys from a prefix.
///
/// ```
/// use heartbeat_core::{InstanceId, KeyLayout};
/// let keys = KeyLayout::default();
/// let id: InstanceId = "pod-1".parse()?;
/// assert_eq!(keys.heartbeat_key(&id), "websocketmanager/instances/pod-1");
/// assert_eq!(keys.index_key(), "websocketmanager/instances/_index");
/// # Ok::<(), heartbeat_core::InstanceIdError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    prefix: String,
    index_key: String,
}

impl KeyLayout {
    /// A layout under `prefix`. The prefix is used as given: end it with `/` to get
    /// path-like keys.
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let index_key = format!("{prefix}{INDEX_SUFFIX}");
        Self { prefix, index_key }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of `id`'s heartbeat record.
    pub fn heartbeat_key(&self, id: &InstanceId) -> String {
        format!("{}{}", self.prefix, id.as_str())
    }

    /// The key of the index (the set of instance ids).
    pub fn index_key(&self) -> &str {
        &self.index_key
    }

    /// The instance id a heartbeat key belongs to, if it is one of this layout's keys.
    pub fn instance_of(&self, key: &str) -> Option<InstanceId> {
        key.strip_prefix(&self.prefix)
            .and_then(|rest| InstanceId::new(rest).ok())
    }
}

impl Default for KeyLayout {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_key_is_never_an_instance_key() {
        let keys = KeyLayout::default();
        assert_eq!(keys.instance_of(keys.index_key()), None);
        let id = InstanceId::new("a").unwrap();
        assert_eq!(keys.instance_of(&keys.heartbeat_key(&id)), Some(id));
    }

    #[test]
    fn custom_prefix() {
        let keys = KeyLayout::new("prod/eu/");
        assert_eq!(keys.index_key(), "prod/eu/_index");
    }
}
