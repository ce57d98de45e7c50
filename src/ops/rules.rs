//! The rules `check` and `status` apply beyond the ones the steps share
//! (`crate::rotation::validate`, `RotationSettings::check_tags`): the rotation's configuration,
//! an open rotation, and the keys (orphans, a previous key alive against the policy, versions
//! whose values cannot be read).

use std::collections::BTreeMap;

use super::inspect::{now_secs, KeyView, VersionValue};
use super::roles::Role;
use super::ResolvedSettings;
use crate::config::OldKeyAction;
use crate::finding::{Code, Finding};
use crate::ownership::Survey;
use crate::ports::{opens_rotation, SecretMetadata, AWSCURRENT, AWSPREVIOUS};
use crate::rotation::validate;

/// An open rotation: a warning while a step may still be running, an error after the
/// function's timeout; and the rules the steps apply to a pending version.
pub(crate) fn open_rotation_findings(
    meta: &SecretMetadata,
    values: &BTreeMap<String, VersionValue>,
    dates: &BTreeMap<String, i64>,
    resolved: &ResolvedSettings,
    survey: &Survey,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (version, stages) in &meta.versions {
        if !opens_rotation(stages) {
            continue;
        }
        if let Some(f) = validate::rolled_back_pending(meta, version) {
            findings.push(f);
            continue;
        }
        if let Some(f) = values
            .get(version)
            .and_then(|v| v.written.as_ref())
            .and_then(|w| validate::stale_pending(meta, w, version))
        {
            findings.push(f);
            continue;
        }
        if let Some(w) = values.get(version).and_then(|v| v.written.as_ref()) {
            if !survey.made_for(&w.api_key_id, version) {
                findings.push(Finding::error(
                    Code::PendingKeyNotMadeForIt,
                    format!(
                        "the pending version {version} names key {}, which the function did not make for it (not tied to the secret, or not named for the version): no step acts on it",
                        w.api_key_id
                    ),
                    format!(
                        "cancel the rotation (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING --remove-from-version-id {version}), then rotate again",
                        meta.name
                    ),
                ));
                continue;
            }
        }
        let age = dates.get(version).map(|c| now_secs() - c);
        let timeout = resolved.timeout.as_secs() as i64;
        let cancel = format!(
            "find the cause in the function's logs, fix it, then rotate again (aws secretsmanager rotate-secret --secret-id {0}) or cancel the rotation (aws secretsmanager update-secret-version-stage --secret-id {0} --version-stage AWSPENDING --remove-from-version-id {version})",
            meta.name
        );
        match age {
            Some(age) if age <= timeout => findings.push(Finding::warning(
                Code::RotationInProgress,
                format!(
                    "a rotation is open on version {version}, created {age} s ago: a step may still be running (the function's timeout is {timeout} s)"
                ),
                format!("wait {} s and check again", timeout - age + 1),
            )),
            _ => findings.push(Finding::error(
                Code::RotationUnfinished,
                format!(
                    "a rotation is unfinished on version {version}{}: the next rotation cannot start",
                    age.map(|a| format!(", created {a} s ago")).unwrap_or_default()
                ),
                cancel,
            )),
        }
    }
    findings
}

/// The secret's rotation configuration: not enabled yet is a warning, since `check` is the
/// command to run before enabling it.
pub(crate) fn rotation_findings(meta: &SecretMetadata) -> Vec<Finding> {
    let mut findings = Vec::new();
    if !meta.rotation_enabled {
        findings.push(Finding::warning(
            Code::RotationNotEnabled,
            "rotation is not enabled for the secret",
            format!(
                "aws secretsmanager rotate-secret --secret-id {} --rotation-lambda-arn <the function's ARN> --rotation-rules '{{\"ScheduleExpression\": \"rate(30 days)\"}}'",
                meta.name
            ),
        ));
    }
    if meta.rotation.lambda_arn.is_none() {
        findings.push(Finding::warning(
            Code::RotationFunctionUnset,
            "the secret has no rotation function",
            "set it when enabling rotation (--rotation-lambda-arn)",
        ));
    }
    if meta.rotation.schedule.is_none() {
        findings.push(Finding::warning(
            Code::RotationScheduleUnset,
            "the secret has no rotation schedule: it rotates only on demand",
            "set one when enabling rotation (--rotation-rules)",
        ));
    }
    findings
}

/// A labelled version other than AWSCURRENT whose value the function cannot read: it may hold
/// any key it mentions, and no command touches those keys. (AWSCURRENT's is
/// `current-value-invalid`.)
pub(crate) fn unreadable_versions(meta: &SecretMetadata, survey: &Survey) -> Vec<Finding> {
    survey
        .versions
        .iter()
        .filter(|(_, l)| l.claim.is_unreadable() && !l.has(AWSCURRENT))
        .map(|(version, l)| {
            Finding::warning(
                Code::VersionValueUnreadable,
                format!(
                    "the value of version {version} ({}) cannot be read as one naming a key: every key id it mentions is treated as held, and no command retires those keys",
                    l.stages.join(", ")
                ),
                format!(
                    "if the version is not needed, remove its labels (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage <label> --remove-from-version-id {version})",
                    meta.name
                ),
            )
        })
        .collect()
}

/// Orphans, and a previous key alive against the policy (a retirement that failed, or that
/// no re-run has finished): `cleanup --apply` retires both.
pub(crate) fn key_findings(
    meta: &SecretMetadata,
    keys: &[KeyView],
    values: &BTreeMap<String, VersionValue>,
    survey: &Survey,
    policy: Option<OldKeyAction>,
    open: bool,
) -> Vec<Finding> {
    let mut findings = Vec::new();
    let orphans: Vec<&str> = keys
        .iter()
        .filter(|k| k.role == Role::Orphan)
        .map(|k| k.id.as_str())
        .collect();
    if !orphans.is_empty() {
        findings.push(Finding::warning(
            Code::OrphanKeys,
            format!(
                "the secret owns {} key(s) that no version needs: {}",
                orphans.len(),
                orphans.join(", ")
            ),
            format!("api-key-rotator cleanup {} --apply", meta.name),
        ));
    }
    if let Some(key) = previous_not_retired(meta, keys, values, survey, policy, open) {
        let policy = policy.map(OldKeyAction::as_str).unwrap_or_default();
        findings.push(Finding::error(
            Code::PreviousKeyNotRetired,
            format!(
                "the previous key {} is {} but OldKeyAction={policy} retires it when a rotation finishes: a retirement failed, or no re-run has finished it",
                key.id,
                if key.enabled { "enabled" } else { "disabled but not deleted" },
            ),
            format!(
                "api-key-rotator cleanup {} --apply (retires it by the policy)",
                meta.name
            ),
        ));
    }
    findings
}

/// The previous key, when the policy says it should be retired and it is not: no rotation is
/// open, the secret was not rolled back to its AWSCURRENT version (then the previous key is the
/// one rolled back from, which the next rotation retires), the AWSPREVIOUS value is one the
/// function reads, and no other labelled version holds the key (finishSecret leaves such a key
/// alone too).
pub(crate) fn previous_not_retired<'k>(
    meta: &SecretMetadata,
    keys: &'k [KeyView],
    values: &BTreeMap<String, VersionValue>,
    survey: &Survey,
    policy: Option<OldKeyAction>,
    open: bool,
) -> Option<&'k KeyView> {
    if open {
        return None;
    }
    let current = meta.version_with(AWSCURRENT)?;
    // A key whose retirement is scheduled is the sweep's (`schedule_findings`).
    let previous = meta.version_with(AWSPREVIOUS).filter(|v| *v != current)?;
    let rolled_back = values
        .get(previous)
        .and_then(|v| v.parsed.as_ref().ok())
        .and_then(|v| v.rotated_from.clone())
        == Some(Some(current.to_owned()));
    if rolled_back {
        return None;
    }
    let key = keys.iter().find(|k| k.role == Role::Previous)?;
    if survey.schedule.due.contains_key(&key.id) || survey.schedule.unreadable.contains(&key.id) {
        return None;
    }
    let readable = matches!(
        survey.versions.get(previous).map(|l| &l.claim),
        Some(crate::ownership::Claim::Key { .. })
    );
    let shared = survey
        .versions
        .iter()
        .any(|(v, l)| v != previous && l.claim.holds(&key.id));
    if !readable || shared {
        return None;
    }
    match policy? {
        OldKeyAction::Delete => Some(key),
        OldKeyAction::Disable => key.enabled.then_some(key),
        OldKeyAction::KeepPrevious => None,
    }
}

/// The retirement schedule: a key alive more than `grace::LATE_AFTER` past its due time (the
/// sweep has not retired it), and schedule tags the function cannot read.
pub(crate) fn schedule_findings(
    meta: &SecretMetadata,
    survey: &Survey,
    settings: Option<&crate::config::RotationSettings>,
) -> Vec<Finding> {
    use crate::ownership::Retirement;
    let mut findings = Vec::new();
    let late: Vec<String> = survey
        .schedule
        .due_by(survey.now - crate::grace::LATE_AFTER)
        .into_iter()
        .filter(|(id, _)| match survey.retirement(id) {
            Retirement::Unheld => true,
            Retirement::Previous => match settings.map(|s| s.old_key_action) {
                Some(OldKeyAction::Delete) => true,
                Some(OldKeyAction::Disable) => survey.owned.get(id).is_some_and(|o| o.key.enabled),
                _ => false,
            },
            Retirement::Needed(_) | Retirement::NotOwned => false,
        })
        .map(|(id, due)| format!("{id} (due {})", crate::grace::rfc3339(due)))
        .collect();
    if !late.is_empty() {
        findings.push(Finding::error(
            Code::KeyPastGrace,
            format!(
                "{} key(s) still work more than five minutes after their grace period ended: {}",
                late.len(),
                late.join(", ")
            ),
            format!(
                "see the function's KeysPastGrace alarm and its sweep's logs; api-key-rotator cleanup {} --apply retires them",
                meta.name
            ),
        ));
    }
    if !survey.schedule.unreadable.is_empty() {
        let ids: Vec<&str> = survey
            .schedule
            .unreadable
            .iter()
            .map(String::as_str)
            .collect();
        findings.push(Finding::error(
            Code::RetirementScheduleUnreadable,
            format!(
                "the secret's retirement schedule tags for {} do not hold a due time the function wrote: those keys are kept",
                ids.join(", ")
            ),
            format!(
                "remove the tag(s) {}<key id> from the secret, or revoke it (api-key-rotator revoke {} --apply)",
                crate::grace::RETIRE_TAG_PREFIX,
                meta.name
            ),
        ));
    }
    findings
}
