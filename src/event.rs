//! The rotation event Secrets Manager sends, parsed and checked with no side effects.
//!
//! `aws_lambda_events`' rotation struct drops `RotationToken`, so the event is read here from raw
//! JSON. `Debug` never prints the RotationToken.

use std::fmt;

use serde_json::Value;

use crate::error::{ErrorKind, Failure};

/// The four steps of a Secrets Manager rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }

    pub fn parse(s: &str) -> Option<Step> {
        Step::ALL.into_iter().find(|step| step.as_str() == s)
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The token Secrets Manager hands the function for cross-account PutSecretValue. It is a
/// credential: it is passed on and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RotationToken(String);

impl RotationToken {
    /// Wraps the token, and registers it with the log scrubber (`telemetry::never_log`).
    fn new(token: String) -> Self {
        crate::telemetry::never_log(&token);
        RotationToken(token)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RotationToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RotationToken(<redacted>)")
    }
}

/// The `Action` of the event the retirement sweep's schedule sends: `{"Action": "retire-expired-keys"}`.
pub const SWEEP_ACTION: &str = "retire-expired-keys";

/// Whether the payload is the sweep's event. `Err` for a payload with an `Action` that is not
/// the sweep's, or with a step's fields as well: it is refused, and nothing is done.
pub fn is_sweep(payload: &Value) -> Result<bool, Failure> {
    match payload.get("Action") {
        None => Ok(false),
        Some(Value::String(a)) if a == SWEEP_ACTION => {
            if payload.get("Step").is_some() || payload.get("SecretId").is_some() {
                Err(invalid(
                    "the event has both an Action and a rotation step's fields".to_owned(),
                ))
            } else {
                Ok(true)
            }
        }
        Some(_) => Err(invalid(format!(
            "unknown Action; the only one is {SWEEP_ACTION}"
        ))),
    }
}

/// A validated rotation event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationEvent {
    pub step: Step,
    pub secret_id: String,
    pub token: String,
    pub rotation_token: Option<RotationToken>,
}

/// Token length bounds of Secrets Manager's ClientRequestToken.
pub const TOKEN_MIN: usize = 32;
pub const TOKEN_MAX: usize = 64;

/// What the error message may say about the event before it is known to be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLabels {
    pub secret: String,
    pub step: String,
}

impl EventLabels {
    /// Best-effort names for an error message, taken from a payload that may be invalid. Only
    /// short, printable strings are echoed, and never the RotationToken.
    pub fn from_payload(payload: &Value) -> Self {
        let pick = |field: &str| {
            payload
                .get(field)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty() && s.len() <= 2048 && !s.chars().any(char::is_control))
                .map(str::to_owned)
                .unwrap_or_else(|| "<unknown>".to_owned())
        };
        EventLabels {
            secret: pick("SecretId"),
            step: pick("Step"),
        }
    }
}

fn required_string<'a>(payload: &'a Value, field: &str) -> Result<&'a str, Failure> {
    match payload.get(field) {
        None | Some(Value::Null) => Err(invalid(format!("field {field} is missing"))),
        Some(Value::String(s)) if s.is_empty() => Err(invalid(format!("field {field} is empty"))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(invalid(format!("field {field} must be a string"))),
    }
}

/// A secret name or ARN as Secrets Manager takes one: the event's SecretId and the operator
/// commands' arguments alike.
pub fn is_secret_id(id: &str) -> bool {
    !id.trim().is_empty() && id.len() <= 2048 && !id.chars().any(char::is_control)
}

fn invalid(cause: String) -> Failure {
    Failure::new(ErrorKind::InvalidEvent, cause)
}

impl RotationEvent {
    /// Parses the raw invocation payload. Unknown fields are ignored.
    pub fn parse(payload: &Value) -> Result<RotationEvent, Failure> {
        if !payload.is_object() {
            return Err(invalid("the event must be a JSON object".to_owned()));
        }
        let step_name = required_string(payload, "Step")?;
        let step = Step::parse(step_name).ok_or_else(|| {
            invalid(
                "unknown step; expected one of createSecret, setSecret, testSecret, finishSecret"
                    .to_owned(),
            )
        })?;
        let secret_id = required_string(payload, "SecretId")?;
        if !is_secret_id(secret_id) {
            return Err(invalid("SecretId is not a secret name or ARN".to_owned()));
        }
        let token = required_string(payload, "ClientRequestToken")?;
        let len = token.chars().count();
        if !(TOKEN_MIN..=TOKEN_MAX).contains(&len) {
            return Err(invalid(format!(
                "ClientRequestToken must be {TOKEN_MIN} to {TOKEN_MAX} characters, got {len}"
            )));
        }
        if !token.chars().all(|c| c.is_ascii_graphic()) {
            return Err(invalid(
                "ClientRequestToken may hold only printable ASCII characters without spaces"
                    .to_owned(),
            ));
        }
        let rotation_token = match payload.get("RotationToken") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(RotationToken::new(s.clone())),
            Some(_) => return Err(invalid("field RotationToken must be a string".to_owned())),
        };
        Ok(RotationEvent {
            step,
            secret_id: secret_id.to_owned(),
            token: token.to_owned(),
            rotation_token,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOKEN: &str = "3f0c8a6e-2b1d-4c5e-9f7a-1234567890ab";

    #[test]
    fn parses_a_full_event_and_ignores_unknown_fields() {
        let ev = RotationEvent::parse(&json!({
            "Step": "finishSecret", "SecretId": "arn:aws:secretsmanager:eu-west-1:1:secret:s",
            "ClientRequestToken": TOKEN, "RotationToken": "rt-secret", "Extra": 1
        }));
        let ev = ev.ok();
        assert_eq!(ev.as_ref().map(|e| e.step), Some(Step::Finish));
        assert_eq!(
            ev.as_ref()
                .and_then(|e| e.rotation_token.as_ref())
                .map(|t| t.expose()),
            Some("rt-secret")
        );
    }

    #[test]
    fn debug_never_prints_the_rotation_token() {
        let ev = RotationEvent::parse(&json!({
            "Step": "createSecret", "SecretId": "s", "ClientRequestToken": TOKEN,
            "RotationToken": "very-secret-rotation-token"
        }));
        let text = format!("{ev:?}");
        assert!(!text.contains("very-secret-rotation-token"), "{text}");
        assert!(text.contains("<redacted>"));
    }

    #[test]
    fn a_parsed_rotation_token_is_scrubbed_from_logs() {
        let ev = RotationEvent::parse(&json!({
            "Step": "createSecret", "SecretId": "s", "ClientRequestToken": TOKEN,
            "RotationToken": "scrubbed-rotation-token-0001"
        }));
        assert!(ev.is_ok());
        assert_eq!(
            crate::telemetry::scrub("token scrubbed-rotation-token-0001 in a line"),
            "token <redacted> in a line"
        );
    }

    #[test]
    fn rejects_bad_events_with_a_clear_kind() {
        let cases = [
            json!([]),
            json!({"SecretId": "s", "ClientRequestToken": TOKEN}),
            json!({"Step": "rotateEverything", "SecretId": "s", "ClientRequestToken": TOKEN}),
            json!({"Step": "createSecret", "ClientRequestToken": TOKEN}),
            json!({"Step": "createSecret", "SecretId": "s"}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "short"}),
            json!({"Step": "createSecret", "SecretId": 7, "ClientRequestToken": TOKEN}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": "x".repeat(65)}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": TOKEN, "RotationToken": 5}),
            json!({"Step": "createSecret", "SecretId": "s", "ClientRequestToken": format!("{TOKEN} x")}),
        ];
        for case in cases {
            let err = RotationEvent::parse(&case).err();
            assert_eq!(err.map(|e| e.kind), Some(ErrorKind::InvalidEvent), "{case}");
        }
    }

    #[test]
    fn the_sweep_event_is_recognised_and_anything_like_it_refused() {
        assert_eq!(is_sweep(&json!({"Action": SWEEP_ACTION})), Ok(true));
        assert_eq!(is_sweep(&json!({"Step": "createSecret"})), Ok(false));
        for bad in [
            json!({"Action": "retire-everything"}),
            json!({"Action": 1}),
            json!({"Action": SWEEP_ACTION, "Step": "finishSecret"}),
            json!({"Action": SWEEP_ACTION, "SecretId": "s"}),
        ] {
            assert_eq!(
                is_sweep(&bad).err().map(|e| e.kind),
                Some(ErrorKind::InvalidEvent),
                "{bad}"
            );
        }
    }

    #[test]
    fn accepts_a_non_uuid_token_of_valid_length() {
        let token = "a".repeat(32);
        let ev = RotationEvent::parse(
            &json!({"Step": "setSecret", "SecretId": "s", "ClientRequestToken": token}),
        );
        assert!(ev.is_ok());
    }
}

#[cfg(test)]
mod fixture_tests {
    use super::*;

    /// Every sample in `events/` is what it claims: the step samples parse, the `bad-*` ones are
    /// refused as invalid events.
    #[test]
    fn sample_events_parse_as_named() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/events");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let payload: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if name == "sweep" {
                assert_eq!(is_sweep(&payload), Ok(true), "{name}");
                seen += 1;
                continue;
            }
            let parsed = is_sweep(&payload).and_then(|_| RotationEvent::parse(&payload));
            if name.starts_with("bad-") {
                assert_eq!(
                    parsed.err().map(|e| e.kind),
                    Some(ErrorKind::InvalidEvent),
                    "{name}"
                );
            } else {
                assert_eq!(
                    parsed.ok().map(|e| e.step.as_str().to_owned()),
                    Some(name.clone()),
                    "{name}"
                );
            }
            seen += 1;
        }
        assert!(seen >= 9, "expected the sample events, found {seen}");
    }
}
