//! Helpers for backends that keep TimeSeries retention and graph
//! properties in their own storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use crate::backend::NamespaceSettings;

/// The retention of each prepared namespace that has one, for a backend's
/// background cleanup. The proxy prepares every namespace again after a
/// plugin restart, so keeping this in memory is enough.
#[derive(Debug, Default)]
pub struct Retentions {
    windows_ms: Mutex<HashMap<String, i64>>,
}

impl Retentions {
    /// Records (or clears) the retention of a namespace being prepared.
    pub fn prepare(&self, settings: &NamespaceSettings) {
        let mut windows = self.windows_ms.lock().unwrap_or_else(PoisonError::into_inner);
        match settings.retention {
            None => windows.remove(&settings.name),
            Some(window) => {
                windows.insert(settings.name.clone(), i64::try_from(window.as_millis()).unwrap_or(i64::MAX))
            }
        };
    }

    /// Forgets a dropped namespace.
    pub fn remove(&self, name: &str) {
        self.windows_ms.lock().unwrap_or_else(PoisonError::into_inner).remove(name);
    }

    /// Each namespace with a retention and the oldest timestamp it keeps,
    /// in milliseconds, as of `now_ms`.
    pub fn cutoffs(&self, now_ms: i64) -> Vec<(String, i64)> {
        let windows = self.windows_ms.lock().unwrap_or_else(PoisonError::into_inner);
        windows.iter().map(|(ns, window)| (ns.clone(), now_ms.saturating_sub(*window))).collect()
    }
}

/// Attributes or properties as the JSON text SQL backends store.
pub fn map_to_json(map: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(map).unwrap_or_else(|_| "{}".to_owned())
}

/// The inverse of [`map_to_json`]; text that is not such a map reads as
/// empty.
pub fn map_from_json(text: &str) -> BTreeMap<String, String> {
    serde_json::from_str(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_prepare_and_drop() {
        let r = Retentions::default();
        let settings = |name: &str, secs: u64| NamespaceSettings {
            retention: (secs > 0).then(|| std::time::Duration::from_secs(secs)),
            ..NamespaceSettings::new(name, crate::Pattern::TimeSeries)
        };
        r.prepare(&settings("a", 60));
        r.prepare(&settings("b", 0));
        assert_eq!(r.cutoffs(100_000), vec![("a".to_owned(), 40_000)]);
        r.prepare(&settings("a", 0));
        assert!(r.cutoffs(0).is_empty());
        r.prepare(&settings("c", 1));
        r.remove("c");
        assert!(r.cutoffs(0).is_empty());
        let map: BTreeMap<_, _> = [("k".to_owned(), "v".to_owned())].into();
        assert_eq!(map_from_json(&map_to_json(&map)), map);
    }
}
