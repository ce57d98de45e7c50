//! What a secret holds, and everything that would make its rotation refuse, fail or go wrong:
//! the `check` and `status` commands. Nothing here changes anything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{Operator, Unreadable};
use crate::config::{RotationSettings, TIE_TAG};
use crate::finding::{Code, Finding, Severity};
use crate::ports::{
    ApiKey, FunctionReader, KeyGateway, Prober, SecretCatalog, SecretMetadata, SecretStore,
    VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use crate::rotation::ownership::{named_for, prefix_of, Search};
use crate::rotation::validate;
use crate::secret::{CurrentValue, SecretValue};

/// A version of the secret that carries a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionView {
    pub id: String,
    pub stages: Vec<String>,
    /// Seconds since the epoch.
    pub created: Option<i64>,
    /// The key its value holds.
    pub key_id: Option<String>,
}

/// The part a key plays for the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Current,
    Previous,
    Pending,
    /// Held by a version with another label.
    Labelled,
    /// Named after a labelled version but held by none: a duplicate from a lost answer, which
    /// the next rotation's finishSecret deletes.
    Duplicate,
    /// Owned, and no version needs it: `cleanup` retires it.
    Orphan,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Current => "current",
            Role::Previous => "previous",
            Role::Pending => "pending",
            Role::Labelled => "labelled",
            Role::Duplicate => "duplicate",
            Role::Orphan => "orphan",
        }
    }
}

/// A key the secret owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub enabled: bool,
    pub usage_plan_ids: Vec<String>,
    pub created: Option<i64>,
    /// The secret the tie tag names.
    pub tie: Option<String>,
    pub role: Role,
}

/// What `check` and `status` report for one secret.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub meta: SecretMetadata,
    pub versions: Vec<VersionView>,
    pub keys: Vec<KeyView>,
    pub findings: Vec<Finding>,
    /// How long a step of the secret's rotation function may run (its Timeout, or the
    /// template's when it cannot be read).
    pub function_timeout: std::time::Duration,
}

impl Inspection {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }
    /// A version other than AWSCURRENT carries AWSPENDING: a rotation is open.
    pub fn open_rotation(&self) -> Option<&str> {
        self.meta
            .versions
            .iter()
            .find(|(_, s)| s.iter().any(|l| l == AWSPENDING) && !s.iter().any(|l| l == AWSCURRENT))
            .map(|(v, _)| v.as_str())
    }
    pub fn key_of(&self, role: Role) -> Option<&KeyView> {
        self.keys.iter().find(|k| k.role == role)
    }
}

/// Keys tied to a secret that no longer exists (`status --all`, `cleanup --all`).
#[derive(Debug, Clone)]
pub struct DeletedSecretKeys {
    /// The secret's ARN, as the tie tag names it.
    pub secret: String,
    /// The secret is scheduled for deletion and may still be restored: its keys are reported,
    /// never retired.
    pub scheduled_for_deletion: bool,
    pub keys: Vec<KeyView>,
}

/// A labelled version's value, as the rules read it.
struct VersionValue {
    /// The value as the rotation reads an AWSCURRENT value (`Err`: why it cannot).
    parsed: Result<CurrentValue, String>,
    /// The value as a full one this function wrote, when it is.
    written: Option<SecretValue>,
}

impl VersionValue {
    fn key_id(&self) -> Option<&String> {
        self.parsed.as_ref().ok().and_then(|v| v.key_id.as_ref())
    }
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// Reads a secret, its versions and its keys, and applies every rule. `listing` is every
    /// key in the account when the caller read it once for many secrets.
    pub async fn inspect(
        &self,
        secret_id: &str,
        listing: Option<&[ApiKey]>,
    ) -> Result<Inspection, Unreadable> {
        let secrets = &self.rotator.secrets;
        let meta = secrets.describe(secret_id).await?.ok_or_else(|| {
            Unreadable("the secret does not exist (or these credentials may not see it)".into())
        })?;
        let dates = secrets.version_dates(&meta.arn).await?;
        let mut findings = Vec::new();

        let mut values: BTreeMap<String, VersionValue> = BTreeMap::new();
        for version in meta.versions.keys() {
            let raw = secrets
                .get_value(&meta.arn, VersionRef::Id(version, None))
                .await?;
            let raw = raw.as_ref().map(|t| t.0.as_str());
            values.insert(
                version.clone(),
                VersionValue {
                    parsed: CurrentValue::parse(raw).map_err(|e| e.cause),
                    written: raw.and_then(|r| SecretValue::parse(r, "version's").ok()),
                },
            );
        }

        // The rotation function's settings, then the rules createSecret applies.
        let resolved = self.settings_for(meta.rotation.lambda_arn.as_deref()).await;
        if let Some(why) = &resolved.unknown {
            findings.push(Finding::warning(
                Code::AllowListsUnknown,
                format!("the function's allow-lists are unknown: {why}"),
                "pass --allowed-usage-plan-ids and --allowed-test-url-hosts (or set ALLOWED_USAGE_PLAN_IDS and ALLOWED_TEST_URL_HOSTS), or allow lambda:GetFunctionConfiguration on the rotation function",
            ));
        }
        let settings = match &resolved.config {
            Err(failure) => {
                findings.push(Finding::error(
                    Code::FunctionConfigInvalid,
                    failure.cause.clone(),
                    "fix the setting in the rotation function's environment (or the flag given)",
                ));
                None
            }
            Ok(config) => {
                let (settings, tag_findings) = RotationSettings::check_tags(&meta.tags, config);
                findings.extend(tag_findings);
                settings
            }
        };
        if let Some(settings) = &settings {
            let (plans, plan_findings) = self.rotator.check_plans(settings).await?;
            let all_found = plan_findings.is_empty();
            findings.extend(plan_findings);
            if all_found {
                if let Some(mut f) = validate::test_url_host(settings, &plans) {
                    let allow_listed_elsewhere = settings
                        .test_url
                        .as_ref()
                        .is_some_and(|u| u.execute_api_id.is_none());
                    if resolved.unknown.is_some() && allow_listed_elsewhere {
                        // The host may be on the allow-list this command could not read.
                        f.severity = Severity::Warning;
                    }
                    findings.push(f);
                }
            }
        }
        let current_version = meta.version_with(AWSCURRENT).map(str::to_owned);
        let current = match current_version.as_deref().and_then(|v| values.get(v)) {
            Some(VersionValue {
                parsed: Err(why), ..
            }) => {
                findings.push(Finding::error(
                    Code::CurrentValueInvalid,
                    why.clone(),
                    "write a value this function can read: {\"api_key_id\": \"<key id>\"} to adopt a key, or an empty value to start with a new one",
                ));
                None
            }
            Some(VersionValue { parsed: Ok(v), .. }) => Some(v.clone()),
            None => Some(CurrentValue::empty()),
        };

        // The secret's keys: the tags' prefix, the prefixes its versions' keys were named
        // under, the keys its versions hold and their records.
        let mut search = Search::default();
        if let Some(s) = &settings {
            search.prefixes.insert(s.key_prefix());
        }
        for (version, value) in &values {
            let Ok(value) = &value.parsed else { continue };
            if let Some(id) = &value.key_id {
                search.ids.insert(id.clone());
                search.labelled.insert(id.clone());
            }
            search
                .ids
                .extend(value.owned_key_ids.iter().flatten().cloned());
            if let Some(prefix) = value
                .key_name
                .as_deref()
                .and_then(|n| prefix_of(n, version))
            {
                search.prefixes.insert(prefix);
            }
        }
        let holdings = self
            .rotator
            .find_owned_in(&meta.arn, &search, listing)
            .await?;
        if let Some(current) = &current {
            if let (_, Some(f)) = validate::current_key(current, &holdings) {
                findings.push(f);
            }
        }
        findings.extend(rotation_findings(&meta));
        findings.extend(self.open_rotation_findings(&meta, &values, &dates, &resolved));

        // Roles.
        let key_of = |stage: &str| {
            meta.version_with(stage)
                .and_then(|v| values.get(v))
                .and_then(|v| v.key_id().cloned())
        };
        let current_key = key_of(AWSCURRENT);
        let previous_key = meta
            .version_with(AWSPREVIOUS)
            .filter(|v| Some(*v) != current_version.as_deref())
            .and_then(|v| values.get(v))
            .and_then(|v| v.key_id().cloned());
        let pending_key = meta
            .versions
            .iter()
            .find(|(_, s)| s.iter().any(|l| l == AWSPENDING) && !s.iter().any(|l| l == AWSCURRENT))
            .and_then(|(v, _)| values.get(v))
            .and_then(|v| v.key_id().cloned());
        let held: BTreeSet<&String> = values.values().filter_map(VersionValue::key_id).collect();
        let mut keys = Vec::new();
        for (id, key) in &holdings.owned {
            let role = if current_key.as_ref() == Some(id) {
                Role::Current
            } else if previous_key.as_ref() == Some(id) {
                Role::Previous
            } else if pending_key.as_ref() == Some(id) {
                Role::Pending
            } else if held.contains(id) {
                Role::Labelled
            } else if meta.versions.keys().any(|v| named_for(key, v)) {
                Role::Duplicate
            } else {
                Role::Orphan
            };
            let tie = key
                .tags
                .get(TIE_TAG)
                .cloned()
                .or_else(|| holdings.tied_later.contains(id).then(|| meta.arn.clone()));
            keys.push(KeyView {
                id: id.clone(),
                name: key.name.clone(),
                enabled: key.enabled,
                usage_plan_ids: self.rotator.keys.plans_of_key(id).await?,
                created: key.created,
                tie,
                role,
            });
        }
        keys.sort_by(|a, b| (a.role, a.created, &a.id).cmp(&(b.role, b.created, &b.id)));
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
        if meta.deleted.is_some() {
            findings.push(Finding::warning(
                Code::SecretScheduledForDeletion,
                "the secret is scheduled for deletion",
                format!(
                    "restore it (aws secretsmanager restore-secret --secret-id {}) to keep rotating it",
                    meta.name
                ),
            ));
        }
        let versions = meta
            .versions
            .iter()
            .map(|(id, stages)| VersionView {
                id: id.clone(),
                stages: stages.clone(),
                created: dates.get(id).copied(),
                key_id: values.get(id).and_then(|v| v.key_id().cloned()),
            })
            .collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Ok(Inspection {
            meta,
            versions,
            keys,
            findings,
            function_timeout: resolved.timeout,
        })
    }

    /// An open rotation: a warning while a step may still be running, an error after the
    /// function's timeout; and the rules the steps apply to a pending version.
    fn open_rotation_findings(
        &self,
        meta: &SecretMetadata,
        values: &BTreeMap<String, VersionValue>,
        dates: &BTreeMap<String, i64>,
        resolved: &super::ResolvedSettings,
    ) -> Vec<Finding> {
        let mut findings = Vec::new();
        for (version, stages) in &meta.versions {
            if !stages.iter().any(|s| s == AWSPENDING) || stages.iter().any(|s| s == AWSCURRENT) {
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

    /// Keys tied to a secret that no longer exists, from `listing`, leaving out the secrets in
    /// `live`, any secret of another region, and with `prefix` any secret whose name does not
    /// start with it. Each such secret is described once.
    pub async fn deleted_secret_keys(
        &self,
        listing: &[ApiKey],
        live: &BTreeSet<String>,
        prefix: Option<&str>,
    ) -> Result<Vec<DeletedSecretKeys>, Unreadable> {
        let mut by_tie: BTreeMap<String, Vec<&ApiKey>> = BTreeMap::new();
        for key in listing {
            if let Some(tie) = key.tags.get(TIE_TAG) {
                let in_scope = prefix.is_none_or(|p| arn_secret_name(tie).starts_with(p));
                if in_scope && !live.contains(tie) && arn_region(tie) == Some(self.region.as_str())
                {
                    by_tie.entry(tie.clone()).or_default().push(key);
                }
            }
        }
        let mut out = Vec::new();
        for (tie, keys) in by_tie {
            let scheduled_for_deletion = match self.rotator.secrets.describe(&tie).await? {
                None => false,
                Some(meta) if meta.deleted.is_some() => true,
                // A live secret without a KeyName tag: its keys are not orphans.
                Some(_) => continue,
            };
            let mut views = Vec::new();
            for key in keys {
                views.push(KeyView {
                    id: key.id.clone(),
                    name: key.name.clone(),
                    enabled: key.enabled,
                    usage_plan_ids: self.rotator.keys.plans_of_key(&key.id).await?,
                    created: key.created,
                    tie: Some(tie.clone()),
                    role: Role::Orphan,
                });
            }
            out.push(DeletedSecretKeys {
                secret: tie,
                scheduled_for_deletion,
                keys: views,
            });
        }
        Ok(out)
    }
}

/// The secret's rotation configuration: not enabled yet is a warning, since `check` is the
/// command to run before enabling it.
fn rotation_findings(meta: &SecretMetadata) -> Vec<Finding> {
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

/// The region of an ARN (`arn:partition:service:region:account:...`).
fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn")).then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

/// The secret name in a secret's ARN (`...:secret:NAME-abcdef`; Secrets Manager appends a dash
/// and six characters).
fn arn_secret_name(arn: &str) -> &str {
    let name = arn.split_once(":secret:").map_or(arn, |(_, n)| n);
    match name.rsplit_once('-') {
        Some((base, suffix)) if suffix.len() == 6 => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_in_arns() {
        assert_eq!(
            arn_secret_name("arn:aws:secretsmanager:eu-west-1:123:secret:team/partner-a-AbCdEf"),
            "team/partner-a"
        );
        assert_eq!(arn_secret_name("plain"), "plain");
    }

    #[test]
    fn arn_regions() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123:secret:s-AbC"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("s-AbC"), None);
        assert_eq!(arn_region("arn:aws:secretsmanager::123:secret:s"), None);
    }
}
