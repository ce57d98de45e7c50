//! finishSecret: AWSCURRENT moves to the token's version, then every key tied to the secret that
//! the stages no longer need is retired by policy. A retry after the label moved still retires.
//! One listing by name prefix serves both the sweep and finding the previous key.

use std::collections::BTreeSet;

use super::{Rotator, StepCtx, TokenState};
use crate::config::{OldKeyAction, RotationSettings, TIE_TAG};
use crate::error::{Failure, StepResult};
use crate::ports::{
    ApiKey, KeyGateway, Prober, SecretStore, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
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
        // The version whose key becomes the previous one: AWSCURRENT before the move, and
        // AWSPREVIOUS on a retry after it.
        let previous_version = match ctx.state {
            TokenState::Pending => ctx.meta.version_with(AWSCURRENT),
            TokenState::AlreadyCurrent => ctx.meta.version_with(AWSPREVIOUS),
        }
        .filter(|v| *v != token);

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
        // AWSPENDING stays on the new AWSCURRENT version: AWSPENDING and AWSCURRENT on the same
        // version is one of the two states AWS documents for the end of a rotation, and the next
        // RotateSecret moves the label on. Only a label left off AWSCURRENT blocks a rotation.

        // A later rotation may already be open (this is a replay after AWSCURRENT moved): the
        // key its createSecret made is not this rotation's to retire.
        let later = ctx
            .meta
            .version_with(AWSPENDING)
            .filter(|v| *v != token)
            .map(|v| settings.key_name_for(v));
        let tied: Vec<ApiKey> = self
            .keys
            .find_keys_with_prefix(&settings.key_prefix())
            .await?
            .into_iter()
            .filter(|k| k.tags.get(TIE_TAG) == Some(&ctx.meta.arn))
            .filter(|k| Some(&k.name) != later.as_ref())
            .collect();
        let previous_key = self
            .previous_key(ctx, &settings, previous_version, &tied)
            .await?;
        self.retire(&settings, &new.api_key_id, previous_key.as_deref(), &tied)
            .await
    }

    /// The key of the version that becomes AWSPREVIOUS. The key this function made for that
    /// version is named after it (`<KeyName>-<version id>`), so the listing usually names it;
    /// otherwise (an adopted key, a key made under another `KeyName`, two keys with the name)
    /// the version's value says.
    async fn previous_key(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        version: Option<&str>,
        tied: &[ApiKey],
    ) -> StepResult<Option<String>> {
        let Some(version) = version else {
            return Ok(None);
        };
        let name = settings.key_name_for(version);
        let mut named = tied.iter().filter(|k| k.name == name);
        if let (Some(key), None) = (named.next(), named.next()) {
            return Ok(Some(key.id.clone()));
        }
        let raw = self
            .secrets
            .get_value(&ctx.ev.secret_id, VersionRef::Id(version, None))
            .await?;
        match key_id_of(raw.as_ref().map(|t| t.0.as_str())) {
            Ok(id) => Ok(id),
            Err(e) => {
                tracing::warn!(error = %e, previous_version_id = version, "the previous version's value names no key; only keys tied to the secret are retired");
                Ok(None)
            }
        }
    }

    /// Retires every key tied to the secret other than the current one: the previous key by
    /// policy, any other (from two rotations back, or left by an abandoned rotation) deleted.
    /// The keys this function made are found by their name prefix (`<KeyName>-`) and tie tag:
    /// one listing, however many keys the account holds. `previous` may be outside the listing
    /// (an adopted key with another name), and is retired too.
    async fn retire(
        &self,
        settings: &RotationSettings,
        current: &str,
        previous: Option<&str>,
        tied: &[ApiKey],
    ) -> StepResult<()> {
        let action = settings.old_key_action;
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
