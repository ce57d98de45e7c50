//! finishSecret: every key the secret owns that no version will need is retired, AWSCURRENT
//! moves to the token's version (AWSPREVIOUS follows), AWSPENDING leaves it, and the key that
//! became the previous one is retired by policy, or, with a grace period, scheduled for
//! retirement on the secret's tags (`crate::grace`; the sweep retires it when the grace ends).
//! A retry after the label moved still retires (or schedules).
//! Which keys are owned and needed is the survey's to say (`crate::ownership`); which key a
//! version holds comes from its value, never from a name.

use super::pending::{check_not_stale, not_made_for};
use super::plans::check_pending_plans;
use super::{Rotator, StepCtx, TokenState};
use crate::config::RotationSettings;
use crate::error::{Failure, StepResult};
use crate::metrics::{self, Effect};
use crate::ownership::{after_promotion, named_for, Survey, Values};
use crate::ports::{
    KeyGateway, Prober, SecretStore, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use crate::secret::SecretValue;

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn finish_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        let secret_id = ctx.ev.secret_id.as_str();
        let token = ctx.ev.token.as_str();
        // Never promote a version without a value, and know the policy before moving anything.
        let raw = self
            .secrets
            .get_value(secret_id, VersionRef::Id(token, None))
            .await?;
        let new = match &raw {
            Some(text) if !text.0.trim().is_empty() => SecretValue::parse(&text.0, "token's")?,
            _ => {
                return Err(Failure::state(
                    "the token's version has no value; createSecret must run first",
                ))
            }
        };
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        if ctx.state == TokenState::Pending {
            check_not_stale(&ctx.meta, &new, token)?;
            check_pending_plans(&settings, &new, token)?;
        }
        let values = Values::from([(token.to_owned(), raw)]);
        let mut survey = Survey::read(&self.secrets, &self.keys, &ctx.meta, values, None).await?;
        if ctx.state == TokenState::Pending && !survey.made_for(&new.api_key_id, token) {
            return Err(not_made_for(&new.api_key_id, token, &ctx.meta.name));
        }

        // What the labels will be once AWSCURRENT has moved, and the keys no version will need
        // then: those of the version losing AWSPREVIOUS, abandoned rotations, duplicates from
        // lost answers, keys earlier tries made under another name. Each is tied first (an
        // untied key is the secret's only while a labelled version holds it), so that a retry
        // after the move still finds it by its tie; they are retired only once AWSCURRENT has
        // moved, so that a move that fails leaves the key AWSPREVIOUS names working.
        let after = after_promotion(&survey.labels(), token);
        let previous_version = after
            .iter()
            .find(|(v, s)| v.as_str() != token && s.iter().any(|l| l == AWSPREVIOUS))
            .map(|(v, _)| v.clone());
        let previous_key = previous_version
            .as_deref()
            .and_then(|v| survey.key_of(v))
            .map(str::to_owned);
        let unneeded = survey.unneeded(&after);
        for id in &unneeded {
            survey.tie_if_untied(&self.keys, id).await?;
        }
        // The previous key, by policy, unless another version that keeps a label holds it too.
        let previous_key = previous_key.filter(|id| *id != new.api_key_id).filter(|id| {
            let shared = after.keys().any(|v| {
                Some(v) != previous_version.as_ref()
                    && survey.versions.get(v).is_some_and(|l| l.claim.holds(id))
            });
            if shared {
                tracing::info!(key_id = %id, "another labelled version holds the previous key; it is left as it is");
            }
            !shared && survey.owned.contains_key(id)
        });
        if let Some(id) = &previous_key {
            survey.tie_if_untied(&self.keys, id).await?;
        }
        // With a grace period, the previous key's retirement is on the secret's tags before
        // AWSCURRENT moves, due no sooner than the grace after this invocation's deadline (the
        // move happens before it): a crash after the move leaves it scheduled, never early.
        // A revoke's rotation (`crate::grace::REVOKE_TOKEN_PREFIX`) retires the previous key at
        // once: revoke retires it anyway, and a secret at its 50 tags must still be revocable.
        // A previous key disabled already is retired already.
        let grace = settings
            .grace
            .filter(|_| settings.old_key_action != crate::config::OldKeyAction::KeepPrevious)
            .filter(|_| !token.starts_with(crate::grace::REVOKE_TOKEN_PREFIX))
            .filter(|_| {
                previous_key
                    .as_ref()
                    .is_some_and(|id| survey.owned.get(id).is_some_and(|o| o.key.enabled))
            });
        if let (Some(grace), Some(id), TokenState::Pending) = (grace, &previous_key, ctx.state) {
            let left = crate::deadline::current()
                .map(|i| i.time_left())
                .unwrap_or(crate::grace::UNKNOWN_DEADLINE);
            let due = crate::grace::now_secs() + grace.seconds() + left.as_secs() as i64 + 1;
            self.schedule_retirement(secret_id, id, due).await?;
        }

        if ctx.state == TokenState::Pending {
            let from = ctx.meta.version_with(AWSCURRENT);
            self.secrets
                .move_stage(secret_id, AWSCURRENT, Some(token), from)
                .await?;
            metrics::record(Effect::RotationCompleted);
            tracing::info!(
                version_id = token,
                previous_version_id = from.unwrap_or("none"),
                key_id = %new.api_key_id,
                "moved AWSCURRENT to the new version"
            );
        } else {
            tracing::info!("the token is already AWSCURRENT; completing retirement");
        }
        // Now that AWSCURRENT has moved, the grace is counted from now (rounded up to the next
        // second), before AWSPENDING leaves: whoever waits for the rotation to complete (revoke)
        // sees this write done. A re-run after the move keeps the time already scheduled.
        if let (Some(grace), Some(id)) = (grace, &previous_key) {
            // On a re-run the move happened before now, so now + grace is never early either:
            // the earlier of the two is kept (a crash after the move leaves the first write's
            // later time, which this brings back).
            let due = crate::grace::now_secs() + grace.seconds() + 1;
            let rewrite = match survey.schedule.due.get(id) {
                _ if ctx.state == TokenState::Pending => true,
                Some(scheduled) => *scheduled > due,
                None => true,
            };
            if rewrite {
                self.schedule_retirement(secret_id, id, due).await?;
            }
        }
        // AWSPENDING leaves the new AWSCURRENT version, so that no label of this rotation is
        // left behind: a later roll-back that moves AWSCURRENT back would otherwise leave
        // AWSPENDING on a version that was current once, and the next rotation would promote
        // it again (Secrets Manager re-runs an unfinished rotation).
        if ctx.meta.has_stage(token, AWSPENDING) {
            self.secrets
                .move_stage(secret_id, AWSPENDING, None, Some(token))
                .await?;
            tracing::info!(
                version_id = token,
                "removed AWSPENDING: the rotation is complete"
            );
        }

        for id in &unneeded {
            self.delete_key(
                id,
                "no version of the secret needs it any more",
                Some(ctx.config),
            )
            .await?;
            if survey
                .owned
                .get(id)
                .is_some_and(|o| named_for(&o.key, token))
            {
                metrics::record(Effect::KeyCreated); // a duplicate a lost answer made
            }
        }

        match (previous_key, grace) {
            (Some(id), None) => {
                self.retire_previous(settings.old_key_action, &id, &survey, Some(ctx.config))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// Schedules the retirement of `key_id` at `due` on the secret's tags (`crate::grace`).
    async fn schedule_retirement(&self, secret_id: &str, key_id: &str, due: i64) -> StepResult<()> {
        let (key, value) = crate::grace::schedule_tag(key_id, due);
        self.secrets.tag_secret(secret_id, &key, &value).await?;
        tracing::info!(
            key_id,
            retire_at = %crate::grace::rfc3339(due),
            "the previous key keeps working for its grace period; its retirement is scheduled"
        );
        Ok(())
    }
}
