//! The secret's JSON value. The function owns five fields; any other field is carried over
//! unchanged into each new version. `Debug` never prints the key value.
//!
//! `owned_key_ids` is the function's record of the other keys the secret owns that a listing of
//! the key's name prefix would not find (adopted or migrated keys, keys made under an earlier
//! `KeyName`). It is a hint, never proof: the rotation acts on a recorded key only when the key is
//! tied to the secret or is the `api_key_id` of one of its labelled versions
//! (`docs/design/ownership.md`).

use std::fmt;

use serde_json::{Map, Value};

use crate::error::{Failure, StepResult};

pub const API_KEY_ID: &str = "api_key_id";
pub const API_KEY_VALUE: &str = "api_key_value";
pub const KEY_NAME: &str = "key_name";
pub const USAGE_PLAN_IDS: &str = "usage_plan_ids";
pub const OWNED_KEY_IDS: &str = "owned_key_ids";
pub const ROTATED_FROM: &str = "rotated_from";
const OWNED: [&str; 6] = [
    API_KEY_ID,
    API_KEY_VALUE,
    KEY_NAME,
    USAGE_PLAN_IDS,
    OWNED_KEY_IDS,
    ROTATED_FROM,
];
/// The record holds at most this many key ids. A secret that would need more gets no record, and
/// the next rotation lists every key in the account instead (`docs/design/ownership.md`).
pub const MAX_OWNED_KEY_IDS: usize = 20;

/// An API key's value: a credential, never printed, and registered with the log scrubber
/// (`telemetry::never_log`) when it is made.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue(String);

impl KeyValue {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::telemetry::never_log(&value);
        KeyValue(value)
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
    /// The name the value gives its key, when it gives one.
    pub key_name: Option<String>,
    /// The record of other owned keys; `None` when the value carries none (a first rotation, an
    /// adopted or migrated key, a value written before the record existed).
    pub owned_key_ids: Option<Vec<String>>,
    /// The version that was AWSCURRENT when this value was written (see `SecretValue`).
    pub rotated_from: Option<Option<String>>,
    /// Fields the function does not own, carried into the new version.
    pub extra: Map<String, Value>,
}

impl CurrentValue {
    pub fn empty() -> Self {
        CurrentValue {
            key_id: None,
            adopting: false,
            key_name: None,
            owned_key_ids: None,
            rotated_from: None,
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
                key_name: None,
                owned_key_ids: None,
                rotated_from: None,
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
        let owned_key_ids = take_owned_key_ids(&mut obj, "AWSCURRENT")?;
        let rotated_from = take_rotated_from(&mut obj, "AWSCURRENT")?;
        Ok(CurrentValue {
            key_id: Some(key_id),
            adopting: value.is_none() && name.is_none() && plans.is_none(),
            key_name: name,
            owned_key_ids,
            rotated_from,
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
    /// The record of other owned keys; `None` in a value written before the record existed, or
    /// when the secret owned more than `MAX_OWNED_KEY_IDS` such keys.
    pub owned_key_ids: Option<Vec<String>>,
    /// The version that was AWSCURRENT when createSecret wrote this value (`Some(None)` on a
    /// first rotation); `None` in a value written before the field existed. A rotation whose
    /// AWSCURRENT has moved since is not carried on.
    pub rotated_from: Option<Option<String>>,
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
        if let Some(ids) = &self.owned_key_ids {
            obj.insert(
                OWNED_KEY_IDS.into(),
                Value::Array(ids.iter().map(|id| Value::String(id.clone())).collect()),
            );
        }
        if let Some(from) = &self.rotated_from {
            obj.insert(
                ROTATED_FROM.into(),
                from.clone().map(Value::String).unwrap_or(Value::Null),
            );
        }
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
        let owned_key_ids = take_owned_key_ids(&mut obj, which)?;
        let rotated_from = take_rotated_from(&mut obj, which)?;
        Ok(SecretValue {
            api_key_id,
            api_key_value: KeyValue::new(value),
            key_name,
            usage_plan_ids,
            owned_key_ids,
            rotated_from,
            extra: obj,
        })
    }
}

/// The record: a list of at most `MAX_OWNED_KEY_IDS` key ids (API Gateway's ids are short
/// alphanumeric strings). Anything else is a configuration error: the value was not written by
/// this function, and nothing is acted on.
fn take_owned_key_ids(
    obj: &mut Map<String, Value>,
    which: &str,
) -> StepResult<Option<Vec<String>>> {
    let Some(ids) = take_string_list(obj, OWNED_KEY_IDS, which)? else {
        return Ok(None);
    };
    if ids.len() > MAX_OWNED_KEY_IDS {
        return Err(Failure::config(format!(
            "the {which} value's {OWNED_KEY_IDS} holds {} ids; at most {MAX_OWNED_KEY_IDS} are allowed",
            ids.len()
        )));
    }
    // The offending entry is named by position only: whatever it holds is not echoed.
    if let Some(bad) = ids.iter().position(|id| !is_key_id(id)) {
        return Err(Failure::config(format!(
            "the {which} value's {OWNED_KEY_IDS} entry {bad} is not an API key id"
        )));
    }
    Ok(Some(ids))
}

/// `rotated_from`: a version id, or null for a first rotation.
fn take_rotated_from(
    obj: &mut Map<String, Value>,
    which: &str,
) -> StepResult<Option<Option<String>>> {
    match obj.remove(ROTATED_FROM) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(v))
            if (1..=64).contains(&v.len()) && v.chars().all(|c| c.is_ascii_graphic()) =>
        {
            Ok(Some(Some(v)))
        }
        Some(_) => Err(Failure::config(format!(
            "the {which} value's {ROTATED_FROM} must be a version id or null"
        ))),
    }
}

/// The shape of an API Gateway key id: 1 to 64 ASCII letters and digits.
pub fn is_key_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The fields of a value that name things (ids, names, versions) and are logged: every other
/// field (the key value, the user's own fields) is registered with the log scrubber.
const NAMING: [&str; 5] = [
    API_KEY_ID,
    KEY_NAME,
    USAGE_PLAN_IDS,
    OWNED_KEY_IDS,
    ROTATED_FROM,
];

fn parse_object(raw: &str, which: &str) -> StepResult<Map<String, Value>> {
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(obj)) => {
            obj.iter()
                .filter(|(field, _)| !NAMING.contains(&field.as_str()))
                .for_each(|(_, value)| crate::telemetry::never_log_json(value));
            Ok(obj)
        }
        // serde_json's message names a line and column, never the content.
        Ok(other) => {
            crate::telemetry::never_log_json(&other);
            crate::telemetry::never_log(raw.trim());
            Err(Failure::config(format!(
                "the {which} value must be a JSON object"
            )))
        }
        Err(e) => {
            crate::telemetry::never_log(raw.trim());
            Err(Failure::config(format!(
                "the {which} value is not JSON (line {}, column {})",
                e.line(),
                e.column()
            )))
        }
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
            owned_key_ids: Some(vec!["abc123".into()]),
            rotated_from: Some(Some("v0".into())),
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
    fn the_key_value_and_the_users_fields_are_scrubbed_from_logs_but_names_are_not() {
        let raw = r#"{"api_key_id":"keyid12345","api_key_value":"ScrubbedKeyValue0123456789",
            "key_name":"partner-named-key","usage_plan_ids":["planid12345"],
            "client_secret":"users-own-secret-field","nested":{"pin":"nested-secret-1"}}"#;
        assert!(SecretValue::parse(raw, "AWSCURRENT").is_ok());
        let line = "keyid12345 partner-named-key planid12345 ScrubbedKeyValue0123456789 \
                    users-own-secret-field nested-secret-1";
        assert_eq!(
            crate::telemetry::scrub(line),
            "keyid12345 partner-named-key planid12345 <redacted> <redacted> <redacted>"
        );
        let _ = CurrentValue::parse(Some("plain-text-secret-value"));
        assert_eq!(
            crate::telemetry::scrub("x plain-text-secret-value"),
            "x <redacted>"
        );
    }

    #[test]
    fn parse_errors_never_echo_content() {
        let err = CurrentValue::parse(Some("{\"api_key_value\": \"LEAKME12345678901234\"")).err();
        let text = format!("{err:?}");
        assert!(!text.contains("LEAKME"), "{text}");
    }
}
