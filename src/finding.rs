//! Findings: what a rule found wrong with a secret, with a stable code, a severity, and how to
//! fix it. The rotation steps fail with the first error a rule finds (`Failure::from`); the
//! `check` and `status` commands report every finding. A rule lives in one place and serves
//! both. The codes are listed in `docs/operator-commands.md` and are only ever added to.

use std::fmt;

use crate::error::{ErrorKind, Failure};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $kind:ident;)*) => {
        /// Every finding code. Listed in `docs/operator-commands.md`; never renamed or removed.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }
            /// The error kind a rotation step fails with when it meets this finding.
            pub fn kind(self) -> ErrorKind {
                match self { $(Code::$variant => ErrorKind::$kind),* }
            }
        }
    };
}

codes! {
    FunctionConfigInvalid = "function-config-invalid", InvalidConfiguration;
    AllowListsUnknown = "allow-lists-unknown", InvalidConfiguration;
    KeyNameMissing = "key-name-missing", InvalidConfiguration;
    KeyNameInvalid = "key-name-invalid", InvalidConfiguration;
    UsagePlanMissing = "usage-plan-missing", InvalidConfiguration;
    UsagePlanInvalid = "usage-plan-invalid", InvalidConfiguration;
    UsagePlanNotAllowed = "usage-plan-not-allowed", InvalidConfiguration;
    UsagePlanNotFound = "usage-plan-not-found", InvalidConfiguration;
    UsagePlansOverlap = "usage-plans-overlap", InvalidConfiguration;
    OldKeyActionInvalid = "old-key-action-invalid", InvalidConfiguration;
    TestUrlInvalid = "test-url-invalid", InvalidConfiguration;
    TestUrlHostNotAllowed = "test-url-host-not-allowed", InvalidConfiguration;
    TooManyKeyTags = "too-many-key-tags", InvalidConfiguration;
    TagNotCopied = "tag-not-copied", InvalidConfiguration;
    CurrentValueInvalid = "current-value-invalid", InvalidConfiguration;
    AdoptedKeyNotFound = "adopted-key-not-found", InvalidConfiguration;
    CurrentKeyGone = "current-key-gone", RotationState;
    CurrentKeyForeign = "current-key-foreign", InvalidConfiguration;
    KeyTagsFull = "key-tags-full", InvalidConfiguration;
    RotationNotEnabled = "rotation-not-enabled", RotationState;
    RotationFunctionUnset = "rotation-function-unset", RotationState;
    RotationScheduleUnset = "rotation-schedule-unset", RotationState;
    RotationInProgress = "rotation-in-progress", RotationState;
    RotationUnfinished = "rotation-unfinished", RotationState;
    PendingRolledBack = "pending-rolled-back", RotationState;
    PendingStale = "pending-stale", RotationState;
    OrphanKeys = "orphan-keys", RotationState;
    SecretScheduledForDeletion = "secret-scheduled-for-deletion", RotationState;
    SecretArnTooLong = "secret-arn-too-long", InvalidConfiguration;
    PreviousKeyNotRetired = "previous-key-not-retired", RotationState;
    VersionValueUnreadable = "version-value-unreadable", RotationState;
    PendingKeyNotMadeForIt = "pending-key-not-made-for-it", RotationState;
    GracePeriodInvalid = "grace-period-invalid", InvalidConfiguration;
    GracePeriodWithKeepPrevious = "grace-period-with-keep-previous", InvalidConfiguration;
    KeyPastGrace = "key-past-grace", RotationState;
    RetirementScheduleUnreadable = "retirement-schedule-unreadable", RotationState;
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing wrong with a secret. The message names what is wrong; `fix` says what to do. Neither
/// ever holds a key value or any of the user's own fields of the secret's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn error(code: Code, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            code,
            severity: Severity::Error,
            message: message.into(),
            fix: fix.into(),
        }
    }
    pub fn warning(code: Code, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            code,
            severity: Severity::Warning,
            message: message.into(),
            fix: fix.into(),
        }
    }
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A step that meets an error finding fails with it: what is wrong, how to fix it, and the code
/// the docs list.
impl From<Finding> for Failure {
    fn from(f: Finding) -> Self {
        Failure::new(
            f.code.kind(),
            format!("{}; to fix: {} [{}]", f.message, f.fix, f.code),
        )
    }
}

/// The first error among `findings`, as the failure a step returns.
pub fn first_error(findings: &[Finding]) -> Option<Failure> {
    findings
        .iter()
        .find(|f| f.is_error())
        .cloned()
        .map(Failure::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_kebab_case() {
        let mut seen = std::collections::BTreeSet::new();
        for code in Code::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code
                .as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-'));
        }
    }

    #[test]
    fn every_code_is_documented() {
        let doc = include_str!("../docs/operator-commands.md");
        for code in Code::ALL {
            assert!(
                doc.contains(&format!("`{code}`")),
                "docs/operator-commands.md does not list {code}"
            );
        }
    }
}
