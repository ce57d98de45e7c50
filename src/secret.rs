//! The secret's JSON value. The function owns four fields; any other field is carried over
//! unchanged into each new version. `Debug` never prints the key value.

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Failure, StepResult};

pub const API_KEY_ID: &str = "api_key_id";
pub const API_KEY_VALUE: &str = "api_key_value";
pub const KEY_NAME: &str = "key_name";
pub const USAGE_PLAN_IDS: &str = "usage_plan_ids";
const OWNED: [&str; 4] = [API_KEY_ID, API_KEY_VALUE, KEY_NAME, USAGE_PLAN_IDS];

/// An API key's value: a credential, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue(String);

impl KeyValue {
    pub fn new(value: impl Into<String>) -> Self {
        KeyValue(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyValue(<redacted>)")
    }
}

/// The AWSCURRENT value as the rotation found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentValue {
    /// The key the secret holds now: `None` on a first rotation.
    pub key_id: Option<String>,
    /// The value names only a key id: an existing key being adopted.
    pub adopting: bool,
    /// Fields the function does not own, carried into the new version.
    pub extra: Map<String, Value>,
}

impl CurrentValue {
    pub fn empty() -> Self {
        CurrentValue {
            key_id: None,
            adopting: false,
            extra: Map::new(),
        }
    }

    /// Reads an AWSCURRENT value (or its absence).
    ///
    /// - none, empty, or `{}`: a first rotation;
    /// - `{"api_key_id": "..."}`: adoption of an existing key;
    /// - a full value written by this function;
    /// - an object with none of the owned fields: a first rotation that keeps those fields.
    ///
    /// Anything else is a configuration error.
    pub fn parse(raw: Option<&str>) -> StepResult<CurrentValue> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Ok(CurrentValue::empty()),
            Some(raw) => raw,
        };
        let mut obj = parse_object(raw, "AWSCURRENT")?;
        if !OWNED.iter().any(|f| obj.contains_key(*f)) {
            return Ok(CurrentValue {
                key_id: None,
                adopting: false,
                extra: obj,
            });
        }
        let key_id = take_string(&mut obj, API_KEY_ID, "AWSCURRENT")?.ok_or_else(|| {
            Failure::config("the AWSCURRENT value has key fields but no api_key_id")
        })?;
        // The other owned fields are checked for type, then replaced by the new key's.
        let value = take_string(&mut obj, API_KEY_VALUE, "AWSCURRENT")?;
        let name = take_string(&mut obj, KEY_NAME, "AWSCURRENT")?;
        let plans = take_string_list(&mut obj, USAGE_PLAN_IDS, "AWSCURRENT")?;
        Ok(CurrentValue {
            key_id: Some(key_id),
            adopting: value.is_none() && name.is_none() && plans.is_none(),
            extra: obj,
        })
    }
}

/// A value written by this function: the AWSPENDING value, and later AWSCURRENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretValue {
    pub api_key_id: String,
    pub api_key_value: KeyValue,
    pub key_name: String,
    pub usage_plan_ids: Vec<String>,
    pub extra: Map<String, Value>,
}

impl SecretValue {
    /// Serialises with sorted keys, so that a retry writes byte-for-byte the same value.
    pub fn to_json(&self) -> String {
        let mut obj = self.extra.clone();
        obj.insert(API_KEY_ID.into(), Value::String(self.api_key_id.clone()));
        obj.insert(
            API_KEY_VALUE.into(),
            Value::String(self.api_key_value.expose().to_owned()),
        );
        obj.insert(KEY_NAME.into(), Value::String(self.key_name.clone()));
        obj.insert(
            USAGE_PLAN_IDS.into(),
            Value::Array(
                self.usage_plan_ids
                    .iter()
                    .map(|p| Value::String(p.clone()))
                    .collect(),
            ),
        );
        Value::Object(obj).to_string()
    }

    /// Reads a value this function wrote (`which` names the version for error messages).
    pub fn parse(raw: &str, which: &str) -> StepResult<SecretValue> {
        let mut obj = parse_object(raw, which)?;
        let missing = |f: &str| Failure::state(format!("the {which} value has no {f}"));
        let api_key_id =
            take_string(&mut obj, API_KEY_ID, which)?.ok_or_else(|| missing(API_KEY_ID))?;
        let value =
            take_string(&mut obj, API_KEY_VALUE, which)?.ok_or_else(|| missing(API_KEY_VALUE))?;
        let key_name = take_string(&mut obj, KEY_NAME, which)?.ok_or_else(|| missing(KEY_NAME))?;
        let usage_plan_ids = take_string_list(&mut obj, USAGE_PLAN_IDS, which)?
            .ok_or_else(|| missing(USAGE_PLAN_IDS))?;
        Ok(SecretValue {
            api_key_id,
            api_key_value: KeyValue(value),
            key_name,
            usage_plan_ids,
            extra: obj,
        })
    }
}

/// The key id of any value this function may find in a version (current, previous, pending),
/// or `None` when that version holds no key.
pub fn key_id_of(raw: Option<&str>) -> StepResult<Option<String>> {
    Ok(CurrentValue::parse(raw)?.key_id)
}

fn parse_object(raw: &str, which: &str) -> StepResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(obj)) => Ok(obj),
        // serde_json's message names a line and column, never the content.
        Ok(_) => Err(Failure::config(format!(
            "the {which} value must be a JSON object"
        ))),
        Err(e) => Err(Failure::config(format!(
            "the {which} value is not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))),
    }
}

fn take_string(
    obj: &mut Map<String, Value>,
    field: &str,
    which: &str,
) -> StepResult<Option<String>> {
    match obj.remove(field) {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s)),
        Some(_) => Err(Failure::config(format!(
            "the {which} value's {field} must be a non-empty string"
        ))),
    }
}

fn take_string_list(
    obj: &mut Map<String, Value>,
    field: &str,
    which: &str,
) -> StepResult<Option<Vec<String>>> {
    let bad = || {
        Failure::config(format!(
            "the {which} value's {field} must be a list of strings"
        ))
    };
    match obj.remove(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(bad()),
            })
            .collect::<StepResult<Vec<_>>>()
            .map(Some),
        Some(_) => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn first_rotation_forms() {
        for raw in [None, Some(""), Some("  "), Some("{}")] {
            assert_eq!(
                CurrentValue::parse(raw),
                Ok(CurrentValue::empty()),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn adoption_and_carried_fields() {
        let v = CurrentValue::parse(Some(r#"{"api_key_id":"abc","owner":"team-a"}"#));
        let v = v.ok();
        assert_eq!(
            v.as_ref().and_then(|v| v.key_id.clone()),
            Some("abc".into())
        );
        assert_eq!(
            v.as_ref().and_then(|v| v.extra.get("owner").cloned()),
            Some(Value::String("team-a".into()))
        );
    }

    #[test]
    fn wrong_values_are_configuration_errors() {
        for raw in [
            "not json",
            "[1,2]",
            "\"text\"",
            r#"{"api_key_id": 5}"#,
            r#"{"api_key_id": ""}"#,
            r#"{"api_key_value": "abcdefghijabcdefghij"}"#,
            r#"{"api_key_id": "a", "usage_plan_ids": "p1"}"#,
            r#"{"api_key_id": "a", "usage_plan_ids": [1]}"#,
        ] {
            let err = CurrentValue::parse(Some(raw)).err().map(|e| e.kind);
            assert_eq!(err, Some(ErrorKind::InvalidConfiguration), "{raw}");
        }
    }

    #[test]
    fn round_trip_is_stable_and_debug_redacts() {
        let v = SecretValue {
            api_key_id: "id1".into(),
            api_key_value: KeyValue::new("SuperSecretValue1234567890"),
            key_name: "partner-x".into(),
            usage_plan_ids: vec!["p1".into(), "p2".into()],
            extra: Map::from_iter([("owner".to_owned(), Value::String("a".into()))]),
        };
        let json = v.to_json();
        assert_eq!(
            SecretValue::parse(&json, "AWSPENDING").ok(),
            Some(v.clone())
        );
        assert_eq!(json, v.to_json());
        assert!(!format!("{v:?}").contains("SuperSecret"));
    }

    #[test]
    fn parse_errors_never_echo_content() {
        let err = CurrentValue::parse(Some("{\"api_key_value\": \"LEAKME12345678901234\"")).err();
        let text = format!("{err:?}");
        assert!(!text.contains("LEAKME"), "{text}");
    }
}
