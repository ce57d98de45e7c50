//! setSecret: the pending key is enabled and attached to every plan. Repairs partial state; a
//! cheap no-op when all is in place.

use super::{Rotator, StepCtx, TokenState};
use crate::error::{Failure, StepResult};
use crate::ports::{KeyGateway, Prober, SecretStore};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn set_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        if ctx.state == TokenState::AlreadyCurrent {
            tracing::info!("the token is already AWSCURRENT; nothing to set");
            return Ok(());
        }
        let pending = self.pending_value(ctx).await?;
        let key = self
            .keys
            .get_key(&pending.api_key_id)
            .await?
            .ok_or_else(|| {
                Failure::state(format!(
                    "the pending key {} does not exist",
                    pending.api_key_id
                ))
            })?;
        if !key.enabled {
            self.keys.set_key_enabled(&key.id, true).await?;
            tracing::info!(key_id = %key.id, "enabled the pending key");
        }
        // One call lists the key's plans, however many are configured.
        let on = self.keys.plans_of_key(&key.id).await?;
        for plan in &pending.usage_plan_ids {
            if !on.contains(plan) {
                self.keys.attach(plan, &key.id).await?;
                tracing::info!(key_id = %key.id, plan_id = %plan, "attached key to usage plan");
            }
        }
        Ok(())
    }
}
