//! testSecret: the pending key exists, is enabled, holds the secret's value and is attached to
//! every plan; with a TestUrl, a real request with it gets a 2xx answer.

use super::{Rotator, StepCtx, TokenState};
use crate::config::RotationSettings;
use crate::error::{Failure, StepResult};
use crate::ports::{KeyGateway, Prober, SecretStore};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn test_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        if ctx.state == TokenState::AlreadyCurrent {
            tracing::info!("the token is already AWSCURRENT; nothing to test");
            return Ok(());
        }
        let pending = self.pending_value(ctx).await?;
        // The TestUrl is checked again: its tag may have changed since createSecret.
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        self.check_test_url(&settings, None).await?;

        let id = &pending.api_key_id;
        let key = self
            .keys
            .get_key(id)
            .await?
            .ok_or_else(|| Failure::test(format!("the pending key {id} does not exist")))?;
        if !key.enabled {
            return Err(Failure::test(format!("the pending key {id} is disabled")));
        }
        if key.value.as_ref() != Some(&pending.api_key_value) {
            return Err(Failure::test(format!(
                "the pending key {id}'s value differs from the secret's"
            )));
        }
        let on = self.keys.plans_of_key(id).await?;
        for plan in &pending.usage_plan_ids {
            if !on.contains(plan) {
                return Err(Failure::test(format!(
                    "the pending key {id} is not attached to usage plan {plan}"
                )));
            }
        }
        if let Some(url) = &settings.test_url {
            self.prober.probe(&url.url, &pending.api_key_value).await?;
        }
        tracing::info!(key_id = %id, "the pending key passed its tests");
        Ok(())
    }
}
