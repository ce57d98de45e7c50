//! setSecret: the pending key, once shown to be the one createSecret made for the token, is
//! enabled and put on exactly the plans its value names, which must be the plans the tags
//! permit. Repairs partial state; a cheap no-op when all is in place.

use super::plans::check_pending_plans;
use super::{Rotator, StepCtx, TokenState};
use crate::config::RotationSettings;
use crate::error::{Failure, StepResult};
use crate::ports::{KeyGateway, Prober, SecretStore};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn set_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        if ctx.state == TokenState::AlreadyCurrent {
            tracing::info!("the token is already AWSCURRENT; nothing to set");
            return Ok(());
        }
        let pending = self.pending_value(ctx).await?;
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        check_pending_plans(&settings, &pending, &ctx.ev.token)?;
        let key = self.pending_key(ctx, &pending, Failure::state).await?;
        if !key.enabled {
            self.keys.set_key_enabled(&key.id, true).await?;
            tracing::info!(key_id = %key.id, "enabled the pending key");
        }
        // One call lists the key's plans, however many are configured.
        self.place_on_plans(&key.id, &pending.usage_plan_ids, true, ctx.config)
            .await
    }
}
