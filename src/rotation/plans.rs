//! Usage plans: the configured plans loaded and checked, a pending value's plans checked
//! against what the tags and the allow-list permit, and a key placed on exactly its plans.

use std::collections::BTreeSet;

use super::{validate, Rotator};
use crate::config::{FunctionConfig, RotationSettings};
use crate::error::{Failure, StepResult};
use crate::finding::first_error;
use crate::ports::{KeyGateway, Prober, SecretStore, UsagePlan};
use crate::secret::SecretValue;

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// Fetches every configured usage plan, checking that each exists and that no two cover the
    /// same API stage (API Gateway refuses a key in two such plans); the first error found.
    pub(crate) async fn load_plans(
        &self,
        settings: &RotationSettings,
    ) -> StepResult<Vec<UsagePlan>> {
        let (plans, findings) = self.check_plans(settings).await?;
        match first_error(&findings) {
            Some(failure) => Err(failure),
            None => Ok(plans),
        }
    }

    /// Validates the TestUrl host rule, fetching plans only when the host is not allow-listed.
    pub(crate) async fn check_test_url(
        &self,
        settings: &RotationSettings,
        plans: Option<&[UsagePlan]>,
    ) -> StepResult<()> {
        let Some(url) = &settings.test_url else {
            return Ok(());
        };
        if url.host_allowed {
            return Ok(());
        }
        let plans = match plans {
            Some(plans) => plans.to_vec(),
            None => self.load_plans(settings).await?,
        };
        match validate::test_url_host(settings, &plans) {
            Some(finding) => Err(finding.into()),
            None => Ok(()),
        }
    }

    /// Puts the key on exactly `plans`: attached to each, and, when `detach_others`, taken off
    /// every other plan it is on (a plan an earlier try or an earlier tag put it on, which
    /// may cover a stage one of `plans` covers). Safe to repeat.
    pub(crate) async fn place_on_plans(
        &self,
        key_id: &str,
        plans: &[String],
        detach_others: bool,
        config: &FunctionConfig,
    ) -> StepResult<()> {
        let on: BTreeSet<String> = if detach_others {
            self.keys.plans_of_key(key_id).await?.into_iter().collect()
        } else {
            BTreeSet::new()
        };
        // Refused before any change: a plan the role may not detach from (outside
        // ALLOWED_USAGE_PLAN_IDS) would fail half-way through.
        let barred: Vec<&str> = on
            .iter()
            .filter(|p| !plans.contains(p) && !config.may_touch_plan(p))
            .map(String::as_str)
            .collect();
        if !barred.is_empty() {
            return Err(Failure::state(format!(
                "key {key_id} is on usage plan(s) {}, which ALLOWED_USAGE_PLAN_IDS does not list: the function may not detach it from them, and the key must sit on exactly the plans the UsagePlan tag names; the key was left on its plans. Detach the key from those plans, or list them in ALLOWED_USAGE_PLAN_IDS",
                barred.join(",")
            )));
        }
        for plan in on.iter().filter(|p| !plans.contains(p)) {
            self.keys.detach(plan, key_id).await?;
            tracing::info!(key_id, plan_id = %plan, "detached key from a usage plan its value does not name");
        }
        for plan in plans.iter().filter(|p| !on.contains(*p)) {
            self.keys.attach(plan, key_id).await?;
            tracing::info!(key_id, plan_id = %plan, "attached key to usage plan");
        }
        Ok(())
    }
}

/// A pending value's plans must be the ones the tags name now, each allowed by the function's
/// allow-list: a step never puts a key on a plan the secret's configuration does not permit.
pub(crate) fn check_pending_plans(
    settings: &RotationSettings,
    pending: &SecretValue,
    version: &str,
) -> StepResult<()> {
    let named: BTreeSet<&String> = pending.usage_plan_ids.iter().collect();
    let tagged: BTreeSet<&String> = settings.usage_plan_ids.iter().collect();
    if named != tagged {
        return Err(Failure::state(format!(
            "the pending version {version} names usage plans {} but the UsagePlan tag names {}: the tag changed during the rotation, or the value was not written by this function; nothing was changed. Cancel this rotation (remove AWSPENDING from {version}) and rotate again",
            join(&named),
            join(&tagged)
        )));
    }
    Ok(())
}

fn join(ids: &BTreeSet<&String>) -> String {
    ids.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}
