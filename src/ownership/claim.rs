//! Which key a version's value holds, read from the raw value whatever its shape: a value the
//! function wrote, an adopted `{"api_key_id"}`, a value a person wrote that the steps cannot
//! parse, or text that is not JSON at all. A name never says which key a version holds.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::secret::{is_key_id, API_KEY_ID, OWNED_KEY_IDS};

/// What a labelled version's value says about keys.
#[derive(Clone, PartialEq, Eq)]
pub enum Claim {
    /// No value (RotateSecret's placeholder), an empty one, or one with no key field: the version
    /// holds no key.
    Nothing,
    /// The value's `api_key_id`, and the record it carries (`owned_key_ids`, a hint).
    Key { id: String, record: Vec<String> },
    /// A value that names no key in a form this function reads. Any key id that appears in it
    /// (outside a record) is taken as held: a command never touches a key such a value may name.
    Unreadable {
        /// The value's `api_key_id`, when it has one that reads as a key id.
        id: Option<String>,
        /// Every alphanumeric word of the value outside the record: may hold secrets, never
        /// printed.
        words: BTreeSet<String>,
    },
}

impl fmt::Debug for Claim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Claim::Nothing => f.write_str("Nothing"),
            Claim::Key { id, record } => f
                .debug_struct("Key")
                .field("id", id)
                .field("record", record)
                .finish(),
            Claim::Unreadable { id, words } => f
                .debug_struct("Unreadable")
                .field("id", id)
                .field("words", &words.len())
                .finish(),
        }
    }
}

impl Claim {
    /// Reads a raw value. `strict` is whether the steps' own parser accepts it (a value this
    /// function reads as a key); a value it refuses is read conservatively.
    pub fn read(raw: Option<&str>, strict: bool) -> Claim {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Claim::Nothing,
            Some(raw) => raw,
        };
        let parsed: Option<Value> = serde_json::from_str(raw).ok();
        let obj = parsed.as_ref().and_then(Value::as_object);
        let id = obj
            .and_then(|o| o.get(API_KEY_ID))
            .and_then(Value::as_str)
            .filter(|id| is_key_id(id))
            .map(str::to_owned);
        let record: Vec<String> = obj
            .and_then(|o| o.get(OWNED_KEY_IDS))
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .filter(|id| is_key_id(id))
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if strict {
            return match id {
                Some(id) => Claim::Key { id, record },
                None if obj.is_some_and(|o| !o.contains_key(API_KEY_ID)) => Claim::Nothing,
                None => Claim::Unreadable {
                    id: None,
                    words: words(raw),
                },
            };
        }
        // Not a value the steps read: every word outside the record may name a key.
        let text = match obj {
            Some(o) => {
                let mut o = o.clone();
                if o.get(OWNED_KEY_IDS).is_some_and(Value::is_array) {
                    o.remove(OWNED_KEY_IDS);
                }
                Value::Object(o).to_string()
            }
            None => raw.to_owned(),
        };
        Claim::Unreadable {
            id,
            words: words(&text),
        }
    }

    /// The key the version holds, when its value names one plainly.
    pub fn key_id(&self) -> Option<&str> {
        match self {
            Claim::Key { id, .. } => Some(id),
            Claim::Unreadable { id, .. } => id.as_deref(),
            Claim::Nothing => None,
        }
    }

    /// Whether the version may hold `key_id`.
    pub fn holds(&self, key_id: &str) -> bool {
        match self {
            Claim::Nothing => false,
            Claim::Key { id, .. } => id == key_id,
            Claim::Unreadable { id, words } => {
                id.as_deref() == Some(key_id) || words.contains(key_id)
            }
        }
    }

    /// The record's entries (empty when the value carries none).
    pub fn record(&self) -> &[String] {
        match self {
            Claim::Key { record, .. } => record,
            _ => &[],
        }
    }

    pub fn is_unreadable(&self) -> bool {
        matches!(self, Claim::Unreadable { .. })
    }
}

/// The alphanumeric words of a text: where a key id could stand.
fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| is_key_id(w))
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_value_holds_its_key_and_carries_its_record() {
        let c = Claim::read(
            Some(
                r#"{"api_key_id":"k1","api_key_value":"v","key_name":"a-1","usage_plan_ids":["p"],"owned_key_ids":["k0"]}"#,
            ),
            true,
        );
        assert_eq!(c.key_id(), Some("k1"));
        assert_eq!(c.record(), ["k0".to_owned()]);
        assert!(c.holds("k1") && !c.holds("k0"));
    }

    #[test]
    fn nothing_in_empty_and_keyless_values() {
        for raw in [None, Some(""), Some("  "), Some(r#"{"owner":"team"}"#)] {
            assert_eq!(Claim::read(raw, true), Claim::Nothing, "{raw:?}");
        }
    }

    #[test]
    fn an_unparseable_value_holds_every_key_it_names() {
        let c = Claim::read(
            Some(
                r#"{"api_key_id":"k1","usage_plan_ids":"p1,p2","note":"was k7","owned_key_ids":["k9"]}"#,
            ),
            false,
        );
        assert!(c.is_unreadable());
        assert_eq!(c.key_id(), Some("k1"));
        assert!(c.holds("k1") && c.holds("k7"));
        assert!(
            !c.holds("k9"),
            "the record names keys to retire, not keys held"
        );
        let c = Claim::read(Some("api_key_id=k3; garbage"), false);
        assert!(c.holds("k3"));
        assert_eq!(c.key_id(), None);
    }

    #[test]
    fn debug_never_prints_the_words() {
        let c = Claim::read(Some(r#"{"api_key_value":"SECRETVALUE123"}x"#), false);
        assert!(!format!("{c:?}").contains("SECRETVALUE123"));
    }
}
