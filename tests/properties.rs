//! Property tests over the parsers that take untrusted input: the event, the secret's tags and
//! the secret's value. No input may panic, and what they accept keeps its invariants.

use std::collections::BTreeSet;

use api_key_rotator::config::{api_gateway_accepts_tag, FunctionConfig, RotationSettings};
use api_key_rotator::event::{RotationEvent, TOKEN_MAX, TOKEN_MIN};
use api_key_rotator::secret::{CurrentValue, KeyValue, SecretValue};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<String, Value>>())),
        ]
    })
}

/// Objects shaped like events, with each field present, absent or of a random type.
fn event_like() -> impl Strategy<Value = Value> {
    let field = prop_oneof![
        Just(None),
        any_json().prop_map(Some),
        "(createSecret|setSecret|testSecret|finishSecret|[a-zA-Z]{0,14})"
            .prop_map(|s| Some(Value::String(s))),
        "[ -~]{0,80}".prop_map(|s| Some(Value::String(s))),
    ];
    (field.clone(), field.clone(), field.clone(), field).prop_map(|(a, b, c, d)| {
        let mut m = Map::new();
        for (k, v) in [
            ("Step", a),
            ("SecretId", b),
            ("ClientRequestToken", c),
            ("RotationToken", d),
        ] {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        }
        Value::Object(m)
    })
}

fn tag_key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("KeyName".to_owned()),
        Just("UsagePlan".to_owned()),
        Just("OldKeyAction".to_owned()),
        Just("TestUrl".to_owned()),
        Just("aws:cloudformation:stack-name".to_owned()),
        ".{0,20}",
    ]
}

fn tag_value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9]{1,10}(,[a-z0-9 ]{0,10}){0,3}",
        "(delete|disable|keep-previous|shred)",
        "(https?|ftp)://[a-z0-9.:@/-]{0,40}",
        ".{0,40}",
    ]
}

/// 2000 cases by default; `PROPTEST_CASES` asks for more (a long local hunt) or fewer, never
/// none: `PROPTEST_CASES=0`, or a value that is not a number, fails every property here rather
/// than passing it with nothing checked.
fn cases() -> u32 {
    let cases = match std::env::var("PROPTEST_CASES") {
        Err(_) => 2000,
        Ok(raw) => raw.trim().parse().unwrap_or(0),
    };
    assert!(
        cases > 0,
        "PROPTEST_CASES={:?} runs no case: set a positive number, or unset it for the default (2000)",
        std::env::var("PROPTEST_CASES").unwrap_or_default()
    );
    cases
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn event_parsing_never_panics_and_keeps_its_invariants(payload in prop_oneof![any_json(), event_like()]) {
        if let Ok(ev) = RotationEvent::parse(&payload) {
            let n = ev.token.chars().count();
            prop_assert!((TOKEN_MIN..=TOKEN_MAX).contains(&n));
            prop_assert!(!ev.secret_id.is_empty());
            // The printed event must not depend on the RotationToken's value at all. (Checking
            // that the token's text is absent is wrong: the token may equal the SecretId.)
            if ev.rotation_token.is_some() {
                let mut other = payload.clone();
                let marker = ["a-different-rotation-token", "another-rotation-token"]
                    .into_iter()
                    .find(|m| ev.rotation_token.as_ref().map(|t| t.expose()) != Some(*m))
                    .unwrap_or_default();
                other["RotationToken"] = Value::String(marker.to_owned());
                let reparsed = RotationEvent::parse(&other);
                prop_assert!(reparsed.is_ok());
                if let Ok(o) = reparsed {
                    prop_assert_ne!(&o.rotation_token, &ev.rotation_token);
                    prop_assert_eq!(format!("{o:?}"), format!("{ev:?}"));
                }
            }
        }
    }

    #[test]
    fn tag_parsing_never_panics_and_copies_only_acceptable_tags(
        tags in prop::collection::vec((tag_key(), tag_value()), 0..12),
        allowed in prop::option::of(prop::collection::btree_set("[a-z0-9]{1,10}", 0..4)),
    ) {
        let config = FunctionConfig {
            allowed_usage_plan_ids: allowed.clone(),
            allowed_test_url_hosts: BTreeSet::from(["127.0.0.1".to_owned()]),
            ..FunctionConfig::default()
        };
        if let Ok(s) = RotationSettings::from_tags(&tags, &config) {
            prop_assert!(!s.key_name.is_empty());
            prop_assert!(!s.usage_plan_ids.is_empty());
            for p in &s.usage_plan_ids {
                prop_assert!(p.chars().all(|c| c.is_ascii_alphanumeric()));
                if let Some(a) = &allowed {
                    prop_assert!(a.contains(p));
                }
            }
            for (k, v) in &s.key_tags {
                prop_assert!(api_gateway_accepts_tag(k, v));
            }
            if let Some(url) = &s.test_url {
                prop_assert!(url.url.scheme() == "https" || url.url.scheme() == "http");
            }
        }
    }

    #[test]
    fn secret_value_parsing_never_panics(raw in prop_oneof![".*", any_json().prop_map(|v| v.to_string())]) {
        let _ = CurrentValue::parse(Some(&raw));
        let _ = SecretValue::parse(&raw, "AWSPENDING");
    }

    #[test]
    fn owned_fields_of_any_type_never_panic(
        id in any_json(), value in any_json(), name in any_json(), plans in any_json(), extra in any_json()
    ) {
        let raw = json!({"api_key_id": id, "api_key_value": value, "key_name": name, "usage_plan_ids": plans, "x": extra});
        let _ = CurrentValue::parse(Some(&raw.to_string()));
        let _ = SecretValue::parse(&raw.to_string(), "AWSPENDING");
    }

    #[test]
    fn the_record_is_bounded_and_holds_only_key_ids(
        ids in prop::collection::vec("[a-z0-9]{1,12}|.{0,70}", 0..30),
    ) {
        let raw = json!({"api_key_id": "abc123", "owned_key_ids": ids}).to_string();
        let parsed = CurrentValue::parse(Some(&raw));
        let valid = ids.len() <= api_key_rotator::secret::MAX_OWNED_KEY_IDS
            && ids.iter().all(|id| api_key_rotator::secret::is_key_id(id));
        prop_assert_eq!(parsed.is_ok(), valid);
        if let Ok(v) = parsed {
            prop_assert_eq!(v.owned_key_ids, Some(ids.clone()));
            // A record alone does not make the value anything but an adoption.
            prop_assert!(v.adopting);
        } else if let Err(e) = parsed {
            for id in &ids {
                prop_assert!(id.len() < 8 || !e.cause.contains(id.as_str()), "the error echoes an entry");
            }
        }
    }

    #[test]
    fn a_written_value_reads_back_the_same(
        id in "[a-z0-9]{10}", value in "[A-Za-z0-9]{20,128}", name in ".{1,40}",
        plans in prop::collection::vec("[a-z0-9]{10}", 1..4),
        owned in prop::option::of(prop::collection::vec("[a-z0-9]{10}", 0..=20)),
        from in prop::option::of(prop::option::of("[a-f0-9-]{36}")),
        extra in prop::collection::btree_map("[a-z_]{1,8}", any_json(), 0..4),
    ) {
        let mut extra: Map<String, Value> = extra.into_iter().collect();
        for owned in ["api_key_id", "api_key_value", "key_name", "usage_plan_ids", "owned_key_ids", "rotated_from"] {
            extra.remove(owned);
        }
        let v = SecretValue {
            api_key_id: id,
            api_key_value: KeyValue::new(value.clone()),
            key_name: name,
            usage_plan_ids: plans,
            owned_key_ids: owned,
            rotated_from: from,
            extra,
        };
        let back = SecretValue::parse(&v.to_json(), "AWSPENDING");
        prop_assert_eq!(back.as_ref().ok(), Some(&v));
        let printed = format!("{:?}", v);
        prop_assert!(!printed.contains(&value));
    }
}
