//! Retiring a key: deleted (first detached from the plans the function may touch), or the
//! previous key by policy; and a key whose grace period ended (or that `revoke` retires), by
//! the part it plays now (`Survey::retirement`).

use super::Rotator;
use crate::config::{FunctionConfig, OldKeyAction};
use crate::error::StepResult;
use crate::metrics::{self, Effect, Retired};
use crate::ownership::{Retirement, Survey};
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

    /// Retires the owned key `id` now, by the part the survey says it plays: held by
    /// AWSPREVIOUS alone, by `action`; held by no version, deleted; needed by a version, or not
    /// the secret's, left as it is. Safe to repeat.
    pub(crate) async fn retire_now(
        &self,
        survey: &Survey,
        id: &str,
        action: OldKeyAction,
        scope: Option<&FunctionConfig>,
    ) -> StepResult<Outcome> {
        match (survey.retirement(id), action) {
            (Retirement::NotOwned, _) => Ok(Outcome::NotOwned),
            (Retirement::Needed(why), _) => {
                tracing::info!(key_id = id, reason = why, "the key is needed: it is kept");
                Ok(Outcome::Kept(why))
            }
            (Retirement::Previous, OldKeyAction::KeepPrevious) => Ok(Outcome::Kept(
                "OldKeyAction=keep-previous keeps the previous key",
            )),
            (Retirement::Previous, OldKeyAction::Disable) => {
                let enabled = survey.owned.get(id).is_some_and(|o| o.key.enabled);
                if !enabled {
                    return Ok(Outcome::AlreadyRetired);
                }
                self.keys.set_key_enabled(id, false).await?;
                metrics::record(Effect::KeyRetired(Retired::Disabled));
                tracing::info!(
                    key_id = id,
                    "disabled the previous key (OldKeyAction=disable)"
                );
                Ok(Outcome::Disabled)
            }
            (Retirement::Previous, OldKeyAction::Delete) | (Retirement::Unheld, _) => {
                self.delete_key(id, "its grace period ended, or it was revoked", scope)
                    .await?;
                Ok(Outcome::Deleted)
            }
        }
    }
}

/// What `retire_now` did to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    Disabled,
    /// Disabled already.
    AlreadyRetired,
    /// Needed by a version (or by the policy), with why: left as it is.
    Kept(&'static str),
    /// Not the secret's key (gone, or tied elsewhere): left as it is.
    NotOwned,
}

impl Outcome {
    /// Whether the key is deleted or disabled, by this call or before.
    pub fn retired(self) -> bool {
        matches!(
            self,
            Outcome::Deleted | Outcome::Disabled | Outcome::AlreadyRetired
        )
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Deleted => "deleted",
            Outcome::Disabled => "disabled",
            Outcome::AlreadyRetired => "disabled already",
            Outcome::Kept(_) => "kept",
            Outcome::NotOwned => "not the secret's (gone or tied elsewhere)",
        }
    }
}
