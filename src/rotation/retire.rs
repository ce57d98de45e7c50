//! Retiring a key: deleted (first detached from the plans the function may touch), or the
//! previous key by policy.

use super::Rotator;
use crate::config::{FunctionConfig, OldKeyAction};
use crate::error::StepResult;
use crate::metrics::{self, Effect, Retired};
use crate::ownership::Survey;
use crate::ports::{KeyGateway, Prober, SecretStore};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// Detaches a key from every plan it is on that the function may touch, then deletes it.
    /// Safe to repeat. Callers pass only keys the survey says the secret owns, tied to it.
    ///
    /// A plan outside ALLOWED_USAGE_PLAN_IDS is left alone (the role may not detach from it,
    /// and a refused detach would strand the retirement after AWSCURRENT moved): DeleteApiKey
    /// takes the key off every plan it is still on. `scope` is the function's configuration,
    /// `None` when an operator command cannot know its allow-list: then no plan is detached.
    pub(crate) async fn delete_key(
        &self,
        key_id: &str,
        why: &str,
        scope: Option<&FunctionConfig>,
    ) -> StepResult<()> {
        match scope {
            None => tracing::info!(
                key_id,
                "the function's ALLOWED_USAGE_PLAN_IDS is unknown: no plan is detached; deleting the key takes it off them"
            ),
            Some(config) => {
                for plan in self.keys.plans_of_key(key_id).await? {
                    if !config.may_touch_plan(&plan) {
                        tracing::info!(
                            key_id,
                            plan_id = %plan,
                            "left the key on a usage plan ALLOWED_USAGE_PLAN_IDS does not list; deleting the key takes it off"
                        );
                        continue;
                    }
                    self.keys.detach(&plan, key_id).await?;
                    tracing::info!(key_id, plan_id = %plan, "detached key from usage plan");
                }
            }
        }
        if self.keys.delete_key_if_present(key_id).await? {
            metrics::record(Effect::KeyRetired(Retired::Deleted));
        }
        tracing::info!(key_id, reason = why, "deleted key");
        Ok(())
    }

    /// Retires the previous key by policy, when the secret owns it.
    pub(crate) async fn retire_previous(
        &self,
        action: OldKeyAction,
        id: &str,
        survey: &Survey,
        scope: Option<&FunctionConfig>,
    ) -> StepResult<()> {
        let Some(owned) = survey.owned.get(id) else {
            if !survey.foreign.contains_key(id) {
                tracing::info!(key_id = id, "the previous key no longer exists");
            }
            return Ok(());
        };
        match action {
            OldKeyAction::Delete => {
                self.delete_key(id, "the previous key (OldKeyAction=delete)", scope)
                    .await
            }
            OldKeyAction::Disable => {
                if owned.key.enabled {
                    self.keys.set_key_enabled(id, false).await?;
                    metrics::record(Effect::KeyRetired(Retired::Disabled));
                    tracing::info!(
                        key_id = id,
                        "disabled the previous key (OldKeyAction=disable)"
                    );
                }
                Ok(())
            }
            OldKeyAction::KeepPrevious => {
                metrics::record(Effect::KeyRetired(Retired::Kept));
                tracing::info!(
                    key_id = id,
                    "kept the previous key valid (OldKeyAction=keep-previous)"
                );
                Ok(())
            }
        }
    }
}
