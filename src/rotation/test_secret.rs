//! testSecret: the pending key is the one createSecret made for the token, exists, is enabled,
//! holds the secret's value and is on exactly the plans its value names; with a TestUrl, a real
//! request with it gets a 2xx answer.

use std::collections::BTreeSet;

use super::plans::check_pending_plans;
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
        // The tags are checked again: they may have changed since createSecret.
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        check_pending_plans(&settings, &pending, &ctx.ev.token)?;
        self.check_test_url(&settings, None).await?;

        let key = self.pending_key(ctx, &pending, Failure::test).await?;
        let id = &key.id;
        if !key.enabled {
            return Err(Failure::test(format!("the pending key {id} is disabled")));
        }
        if key.value.as_ref() != Some(&pending.api_key_value) {
            return Err(Failure::test(format!(
                "the pending key {id}'s value differs from the secret's"
            )));
        }
        let on: BTreeSet<String> = self.keys.plans_of_key(id).await?.into_iter().collect();
        let want: BTreeSet<String> = pending.usage_plan_ids.iter().cloned().collect();
        if on != want {
            return Err(Failure::test(format!(
                "the pending key {id} is on usage plans [{}], its value names [{}]",
                on.into_iter().collect::<Vec<_>>().join(","),
                want.into_iter().collect::<Vec<_>>().join(",")
            )));
        }
        if let Some(url) = &settings.test_url {
            self.prober.probe(&url.url, &pending.api_key_value).await?;
        }
        tracing::info!(key_id = %id, "the pending key passed its tests");
        Ok(())
    }
}
