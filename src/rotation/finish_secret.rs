//! finishSecret: AWSCURRENT moves to the token's version, then every key tied to the secret that
//! the stages no longer need is retired by policy. A retry after the label moved still retires.

use std::collections::BTreeSet;

use super::{Rotator, StepCtx, TokenState};
use crate::config::{OldKeyAction, RotationSettings, TIE_TAG};
use crate::error::{Failure, StepResult};
use crate::ports::{
    KeyGateway, Prober, SecretStore, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use crate::secret::{key_id_of, SecretValue};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn finish_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        let secret_id = ctx.ev.secret_id.as_str();
        let token = ctx.ev.token.as_str();
        // Never promote a version without a value, and know the policy before moving anything.
        let new = match self
            .secrets
            .get_value(secret_id, VersionRef::Id(token, None))
            .await?
        {
            Some(text) if !text.0.trim().is_empty() => SecretValue::parse(&text.0, "token's")?,
            _ => {
                return Err(Failure::state(
                    "the token's version has no value; createSecret must run first",
                ))
            }
        };
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;

        if ctx.state == TokenState::Pending {
            let from = ctx.meta.version_with(AWSCURRENT);
            self.secrets
                .move_stage(secret_id, AWSCURRENT, Some(token), from)
                .await?;
            tracing::info!(
                version_id = token,
                previous_version_id = from.unwrap_or("none"),
                key_id = %new.api_key_id,
                "moved AWSCURRENT to the new version"
            );
        } else {
            tracing::info!("the token is already AWSCURRENT; completing retirement");
        }
        if ctx.meta.has_stage(token, AWSPENDING) {
            self.secrets
                .move_stage(secret_id, AWSPENDING, None, Some(token))
                .await?;
            tracing::info!(
                version_id = token,
                "removed AWSPENDING from the new AWSCURRENT version"
            );
        }

        let previous = self
            .secrets
            .get_value(secret_id, VersionRef::Stage(AWSPREVIOUS))
            .await?;
        let previous_key = match key_id_of(previous.as_ref().map(|t| t.0.as_str())) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(error = %e, "the AWSPREVIOUS value names no key; only keys tied to the secret are retired");
                None
            }
        };
        self.retire(ctx, &settings, &new.api_key_id, previous_key.as_deref())
            .await
    }

    /// Retires every key tied to the secret other than the current one: the previous key by
    /// policy, any other (from two rotations back, or left by an abandoned rotation) deleted.
    /// The keys this function made are found by their name prefix (`<KeyName>-`) and tie tag:
    /// one listing, however many keys the account holds. The previous key also comes from
    /// AWSPREVIOUS, so an adopted key with another name is retired too.
    async fn retire(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        current: &str,
        previous: Option<&str>,
    ) -> StepResult<()> {
        let action = settings.old_key_action;
        let tied: Vec<_> = self
            .keys
            .find_keys_with_prefix(&format!("{}-", settings.key_name))
            .await?
            .into_iter()
            .filter(|k| k.tags.get(TIE_TAG) == Some(&ctx.meta.arn))
            .collect();
        let mut retire: BTreeSet<&str> = tied.iter().map(|k| k.id.as_str()).collect();
        retire.extend(previous);
        retire.remove(current);
        for id in retire {
            if Some(id) != previous {
                self.delete_key(id, "no version of the secret needs it any more")
                    .await?;
                continue;
            }
            match action {
                OldKeyAction::Delete => {
                    self.delete_key(id, "the previous key (OldKeyAction=delete)")
                        .await?
                }
                OldKeyAction::Disable => {
                    let enabled = match tied.iter().find(|k| k.id == id) {
                        Some(k) => Some(k.enabled),
                        None => self.keys.get_key(id).await?.map(|k| k.enabled),
                    };
                    if enabled == Some(true) {
                        self.keys.set_key_enabled(id, false).await?;
                        tracing::info!(
                            key_id = id,
                            "disabled the previous key (OldKeyAction=disable)"
                        );
                    }
                }
                OldKeyAction::KeepPrevious => {
                    tracing::info!(
                        key_id = id,
                        "kept the previous key valid (OldKeyAction=keep-previous)"
                    );
                }
            }
        }
        Ok(())
    }
}
