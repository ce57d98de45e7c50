//! What a secret holds, and everything that would make its rotation refuse, fail or go wrong:
//! the `check` and `status` commands. Nothing here changes anything. Which keys the secret owns,
//! and which a version holds, is the ownership survey's to say (`crate::ownership`); the rules
//! are in `rules` and `crate::rotation::validate`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::roles::{roles, Role};
use super::{rules, Operator, Shared, Unreadable};
use crate::config::{FunctionConfig, RotationSettings};
use crate::finding::{Code, Finding, Severity};
use crate::ownership::{Survey, Tie, Values};
use crate::ports::{
    FunctionReader, KeyGateway, Prober, SecretCatalog, SecretMetadata, SecretStore, VersionRef,
    AWSCURRENT,
};
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
    /// When its grace period ends (seconds since the epoch), when its retirement is scheduled.
    pub retire_at: Option<i64>,
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
    /// The settings the rotation function applies to the secret, when they are valid.
    pub settings: Option<RotationSettings>,
    /// The rotation function's configuration as resolved, when it is known and valid: which
    /// plans a command may attach keys to and detach them from. `None` when its allow-list is
    /// unknown (no flag, no environment, its configuration unreadable) or it is invalid.
    pub function: Option<FunctionConfig>,
    /// What the secret owns and what its versions hold.
    pub survey: Survey,
    /// The labelled versions' creation dates (seconds since the epoch).
    pub dates: BTreeMap<String, i64>,
    /// The labelled versions' values, as the rules read them.
    pub(crate) values: BTreeMap<String, VersionValue>,
}

impl Inspection {
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(Finding::is_error)
    }
    /// A version other than AWSCURRENT carries AWSPENDING: a rotation is open.
    pub fn open_rotation(&self) -> Option<&str> {
        self.meta.open_rotation()
    }
    /// The codes of its error findings, less those in `except` (what a command resolves).
    pub fn error_codes_except(&self, except: &[Code]) -> Vec<&'static str> {
        self.findings
            .iter()
            .filter(|f| f.is_error() && !except.contains(&f.code))
            .map(|f| f.code.as_str())
            .collect()
    }
    pub fn key_of(&self, role: Role) -> Option<&KeyView> {
        self.keys.iter().find(|k| k.role == role)
    }
}

/// A labelled version's value, as the rules read it. `Debug` prints nothing of it: the value
/// holds the key value and the user's own fields.
#[derive(Clone)]
pub(crate) struct VersionValue {
    /// The value as the rotation reads an AWSCURRENT value (`Err`: why it cannot).
    pub parsed: Result<CurrentValue, String>,
    /// The value as a full one this function wrote, when it is.
    pub written: Option<SecretValue>,
}

impl std::fmt::Debug for VersionValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VersionValue(<redacted>)")
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
    /// Reads a secret, its versions and its keys, and applies every rule. `shared` holds what
    /// the caller read once for many secrets (the key listing, the plans and their keys); without
    /// it, the survey lists the keys and each key's plans are read by key.
    pub async fn inspect(
        &self,
        secret_id: &str,
        shared: Option<&Shared>,
    ) -> Result<Inspection, Unreadable> {
        let secrets = &self.rotator.secrets;
        let meta = secrets.describe(secret_id).await?.ok_or_else(|| {
            Unreadable("the secret does not exist (or these credentials may not see it)".into())
        })?;
        let dates = secrets.version_dates(&meta.arn).await?;
        let mut findings = Vec::new();

        let mut raw_values = Values::new();
        let mut values: BTreeMap<String, VersionValue> = BTreeMap::new();
        for version in meta.versions.keys() {
            let raw = secrets
                .get_value(&meta.arn, VersionRef::Id(version, None))
                .await?;
            let text = raw.as_ref().map(|t| t.0.as_str());
            values.insert(
                version.clone(),
                VersionValue {
                    parsed: CurrentValue::parse(text).map_err(|e| e.cause),
                    written: text.and_then(|r| SecretValue::parse(r, "version's").ok()),
                },
            );
            raw_values.insert(version.clone(), raw);
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
            let found = self.plans_named(&settings.usage_plan_ids, shared).await?;
            let (plans, plan_findings) = validate::checked_plans(found);
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
        findings.extend(validate::tie_too_long(&meta.arn));

        let mut survey = Survey::read(
            &self.rotator.secrets,
            &self.rotator.keys,
            &meta,
            raw_values,
            shared.map(|s| s.listing.as_slice()),
        )
        .await?;
        if let Some(current) = &current {
            if let (_, Some(f)) = validate::current_key(current, &survey) {
                findings.push(f);
            }
        }
        findings.extend(validate::untied_keys_full(&survey));
        findings.extend(rules::rotation_findings(&meta));
        findings.extend(rules::open_rotation_findings(
            &meta, &values, &dates, &resolved, &survey,
        ));
        findings.extend(rules::unreadable_versions(&meta, &survey));
        findings.extend(rules::schedule_findings(&meta, &survey, settings.as_ref()));

        let roles = roles(&survey);
        let mut keys = Vec::new();
        for (id, owned) in &survey.owned {
            let key = &owned.key;
            let tie = crate::ownership::tie(key)
                .map(str::to_owned)
                .or_else(|| (owned.tie == Tie::Later).then(|| meta.arn.clone()));
            keys.push(KeyView {
                id: id.clone(),
                name: key.name.clone(),
                enabled: key.enabled,
                usage_plan_ids: self.plans_of(id, shared).await?,
                created: key.created,
                tie,
                role: roles.get(id).copied().unwrap_or(Role::Orphan),
                retire_at: survey.schedule.due.get(id).copied(),
            });
        }
        keys.sort_by(|a, b| (a.role, a.created, &a.id).cmp(&(b.role, b.created, &b.id)));
        // A shared listing is a snapshot older than this secret's reads: a rotation that
        // finished since may have retired the previous key it shows enabled. Before calling that
        // key unretired, read it again (one call, only when the finding would be raised).
        let policy = settings.as_ref().map(|s| s.old_key_action);
        let open = meta.open_rotation().is_some();
        if shared.is_some() {
            let stale = rules::previous_not_retired(&meta, &keys, &values, &survey, policy, open)
                .map(|k| k.id.clone());
            if let Some(id) = stale {
                match self.rotator.keys.get_key(&id).await? {
                    None => {
                        keys.retain(|k| k.id != id);
                        survey.owned.remove(&id);
                    }
                    Some(now) => {
                        if let Some(k) = keys.iter_mut().find(|k| k.id == id) {
                            k.enabled = now.enabled;
                        }
                        if let Some(owned) = survey.owned.get_mut(&id) {
                            owned.key.enabled = now.enabled;
                        }
                    }
                }
            }
        }
        findings.extend(rules::key_findings(
            &meta, &keys, &values, &survey, policy, open,
        ));
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
                key_id: survey.key_of(id).map(str::to_owned),
            })
            .collect();
        findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
        Ok(Inspection {
            meta,
            versions,
            keys,
            findings,
            function_timeout: resolved.timeout,
            settings,
            function: resolved
                .config
                .clone()
                .ok()
                .filter(|_| resolved.unknown.is_none()),
            survey,
            dates,
            values,
        })
    }
}
