//! The operator commands' work, without their output: what a secret holds and what is wrong
//! with it (`inspect`, `roles`, `rules`, `deleted`), and the two commands that change things
//! (`cleanup`, `rollback`). They work through the rotation's own rules
//! (`crate::rotation::validate`, `RotationSettings`), the one ownership decision
//! (`crate::ownership`), and the rotation's retirement code, so that a rule lives in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use crate::config::FunctionConfig;
use crate::error::{AwsError, Failure};
use crate::ports::{FunctionReader, KeyGateway, Prober, SecretCatalog, SecretStore};
use crate::rotation::Rotator;

mod cleanup;
mod deleted;
mod inspect;
mod revoke;
mod roles;
mod rollback;
mod rules;
mod shared;

pub use cleanup::{CleanupOutcome, KeyError, Orphan, OrphanReason};
pub use deleted::DeletedSecretKeys;
pub use inspect::{Inspection, KeyView, VersionView};
pub use revoke::{RevokeOutcome, RevokeRotation, RevokedKey, REVOKE_TOKEN_PREFIX};
pub use roles::Role;
pub use rollback::{RollbackOutcome, RollbackStep};
pub use shared::{PlanIndex, Shared};

/// The AWS calls only the operator commands make; every other call they make is a step's
/// (`rotation::STEP_CALLS`), so the fault matrix covers it.
pub const OPERATOR_CALLS: [&str; 5] = [
    "RotateSecret",
    "ListSecrets",
    "ListSecretVersionIds",
    "GetFunctionConfiguration",
    "GetUsagePlanKeys",
];

/// The template's function timeout: how long a rotation step may still be running when the
/// rotation function's own timeout cannot be read.
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(300);

/// The function's settings as the operator gave them (flags first, then the environment); a
/// setting left `None` is read from the rotation function's own configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsOverrides {
    pub allowed_usage_plan_ids: Option<String>,
    pub allowed_test_url_hosts: Option<String>,
    pub old_key_action: Option<String>,
}

impl SettingsOverrides {
    /// The setting given for `name` (an environment variable's name), if any.
    pub fn lookup(&self, name: &str) -> Option<String> {
        match name {
            "ALLOWED_USAGE_PLAN_IDS" => self.allowed_usage_plan_ids.clone(),
            "ALLOWED_TEST_URL_HOSTS" => self.allowed_test_url_hosts.clone(),
            "OLD_KEY_ACTION" => self.old_key_action.clone(),
            _ => None,
        }
    }
    /// Both allow-lists were given: the function's configuration is not needed for them.
    fn allow_lists_given(&self) -> bool {
        self.allowed_usage_plan_ids.is_some() && self.allowed_test_url_hosts.is_some()
    }
}

/// The settings the rotation function applies to a secret, as far as they can be known.
#[derive(Debug, Clone)]
pub struct ResolvedSettings {
    pub config: Result<FunctionConfig, Failure>,
    /// Why the allow-lists are not known (no flags, no environment, and the rotation function's
    /// configuration could not be read); `None` when they are.
    pub unknown: Option<String>,
    /// How long a step of the rotation function may run.
    pub timeout: Duration,
}

/// A secret or the account could not be read: exit code 3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable(pub String);

impl From<AwsError> for Unreadable {
    fn from(e: AwsError) -> Self {
        Unreadable(e.to_string())
    }
}

impl From<Failure> for Unreadable {
    fn from(f: Failure) -> Self {
        Unreadable(f.cause)
    }
}

/// The operator commands' capabilities: the rotation's (its rules and its retirement code) and
/// the reads only the commands make.
pub struct Operator<S, K, P, F> {
    pub rotator: Rotator<S, K, P>,
    pub functions: F,
    pub overrides: SettingsOverrides,
    /// The region the commands work in: a key tied to a secret of another region is never
    /// taken for an orphan.
    pub region: String,
    functions_read: Mutex<BTreeMap<String, Result<Option<crate::ports::FunctionSettings>, String>>>,
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    pub fn new(
        rotator: Rotator<S, K, P>,
        functions: F,
        overrides: SettingsOverrides,
        region: String,
    ) -> Self {
        Operator {
            rotator,
            functions,
            overrides,
            region,
            functions_read: Mutex::new(BTreeMap::new()),
        }
    }

    /// The function's settings for a secret rotated by `function`: each from the flags or the
    /// environment when given, else from the function's own configuration (read once per
    /// function).
    pub async fn settings_for(&self, function: Option<&str>) -> ResolvedSettings {
        let read = match function {
            None => Err("the secret has no rotation function".to_owned()),
            Some(name) => self.function_settings(name).await,
        };
        let function_env = read.as_ref().ok().map(|s| s.environment.clone());
        let lookup = |name: &str| {
            self.overrides
                .lookup(name)
                .or_else(|| function_env.as_ref().and_then(|env| env.get(name).cloned()))
        };
        let unknown = match (&read, self.overrides.allow_lists_given()) {
            (_, true) | (Ok(_), _) => None,
            (Err(why), false) => Some(why.clone()),
        };
        let timeout = read
            .as_ref()
            .ok()
            .and_then(|s| s.timeout_seconds)
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_FUNCTION_TIMEOUT);
        ResolvedSettings {
            config: FunctionConfig::from_lookup(&lookup),
            unknown,
            timeout,
        }
    }

    /// The plans the key is on: from the run's shared reads when they know the key, else
    /// read by key (GetUsagePlans?keyId).
    pub(crate) async fn plans_of(
        &self,
        key_id: &str,
        shared: Option<&Shared>,
    ) -> Result<Vec<String>, AwsError> {
        match shared.and_then(|s| s.plans_known(key_id)) {
            Some(plans) => Ok(plans),
            None => self.rotator.keys.plans_of_key(key_id).await,
        }
    }

    /// The configured plans, each from the run's shared reads when they show it, else read by
    /// id (a plan made since, or one that does not exist: it is looked up before it is
    /// reported missing).
    pub(crate) async fn plans_named(
        &self,
        ids: &[String],
        shared: Option<&Shared>,
    ) -> Result<Vec<(String, Option<crate::ports::UsagePlan>)>, AwsError> {
        let mut found = Vec::with_capacity(ids.len());
        for id in ids {
            let known = shared
                .and_then(|s| s.plans.as_ref())
                .and_then(|p| p.plan(id))
                .cloned();
            let plan = match known {
                Some(plan) => Some(plan),
                None => self.rotator.keys.get_usage_plan(id).await?,
            };
            found.push((id.clone(), plan));
        }
        Ok(found)
    }

    /// The rotation function's configuration for the keys of deleted secrets: the allow-list the
    /// flags or the environment give; else the one every secret the run read resolved to (the
    /// `None` of `seen` is a secret whose allow-list was unknown); else unknown (`None`).
    pub fn deleted_secrets_scope(
        &self,
        seen: &BTreeSet<Option<Option<BTreeSet<String>>>>,
    ) -> Option<FunctionConfig> {
        if self.overrides.allowed_usage_plan_ids.is_some() {
            return FunctionConfig::from_lookup(&|name| self.overrides.lookup(name)).ok();
        }
        match seen.iter().collect::<Vec<_>>().as_slice() {
            [Some(allowed)] => Some(FunctionConfig {
                allowed_usage_plan_ids: allowed.clone(),
                ..FunctionConfig::default()
            }),
            _ => None,
        }
    }

    async fn function_settings(
        &self,
        name: &str,
    ) -> Result<crate::ports::FunctionSettings, String> {
        let cached = self
            .functions_read
            .lock()
            .ok()
            .and_then(|m| m.get(name).cloned());
        let read = match cached {
            Some(read) => read,
            None => {
                let read = self
                    .functions
                    .function_settings(name)
                    .await
                    .map_err(|e| e.to_string());
                if let Ok(mut m) = self.functions_read.lock() {
                    m.insert(name.to_owned(), read.clone());
                }
                read
            }
        };
        match read {
            Ok(Some(settings)) => Ok(settings),
            Ok(None) => Err(format!("the rotation function {name} does not exist")),
            Err(e) => Err(format!(
                "the rotation function's configuration could not be read ({e})"
            )),
        }
    }
}
