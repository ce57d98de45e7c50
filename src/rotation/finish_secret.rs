//! finishSecret: every key the secret owns that no version will need is deleted, AWSCURRENT moves
//! to the token's version (AWSPREVIOUS follows), AWSPENDING leaves it, and the key that became
//! the previous one is retired by policy. A retry after the label moved still retires. `docs/design/ownership.md`
//! says why each key found here is the secret's, and why none is lost.

use std::collections::BTreeSet;

use super::ownership::{named_for, prefix_of, Holdings, Search};
use super::{check_not_stale, Rotator, StepCtx, TokenState};
use crate::config::{OldKeyAction, RotationSettings};
use crate::error::{Failure, StepResult};
use crate::metrics::{self, Effect, Retired};
use crate::ports::{
    KeyGateway, Prober, SecretStore, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use crate::secret::SecretValue;

/// The versions finishSecret works with, read off the metadata before anything moves.
struct Versions<'a> {
    /// Becomes (or, on a retry, already is) AWSPREVIOUS: its key is retired by policy.
    previous: Option<&'a str>,
    /// AWSPREVIOUS before the move: it loses its label, and its key is deleted.
    older: Option<&'a str>,
    /// Versions that keep a label after this rotation (a later rotation's AWSPENDING, a custom
    /// label): their keys are left alone.
    kept: Vec<&'a str>,
}

impl<'a> Versions<'a> {
    fn of(ctx: &'a StepCtx<'_>) -> Versions<'a> {
        let token = ctx.ev.token.as_str();
        let meta = &ctx.meta;
        let (previous, older) = match ctx.state {
            TokenState::Pending => (
                meta.version_with(AWSCURRENT),
                meta.version_with(AWSPREVIOUS),
            ),
            TokenState::AlreadyCurrent => (meta.version_with(AWSPREVIOUS), None),
        };
        let previous = previous.filter(|v| *v != token);
        let older = older.filter(|v| *v != token && Some(*v) != previous);
        let kept = meta
            .versions
            .iter()
            .filter(|(v, _)| v.as_str() != token && Some(v.as_str()) != previous)
            .filter(|(v, stages)| {
                stages
                    .iter()
                    .any(|s| s != AWSPREVIOUS || Some(v.as_str()) != older)
            })
            .map(|(v, _)| v.as_str())
            .collect();
        Versions {
            previous,
            older,
            kept,
        }
    }
}

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn finish_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        let secret_id = ctx.ev.secret_id.as_str();
        let token = ctx.ev.token.as_str();
        let arn = ctx.meta.arn.as_str();
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
        if ctx.state == TokenState::Pending {
            check_not_stale(&ctx.meta, &new, token)?;
        }
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        let versions = Versions::of(ctx);

        // The secret's keys: the tags' prefix and the one the new key was named under (they
        // differ after a KeyName change), every key when the new value has no record, and the
        // record's entries.
        let mut search = Search {
            prefixes: BTreeSet::from([settings.key_prefix()]),
            everything: new.owned_key_ids.is_none(),
            ..Search::default()
        };
        search.prefixes.extend(prefix_of(&new.key_name, token));
        search.ids.insert(new.api_key_id.clone());
        search
            .ids
            .extend(new.owned_key_ids.iter().flatten().cloned());
        search.labelled.insert(new.api_key_id.clone());
        let mut holdings = self.find_owned(arn, &search).await?;

        let previous_key = self
            .previous_key(ctx, &settings, versions.previous, &mut holdings)
            .await?;
        if !holdings.unproven.is_empty() {
            // Recorded keys without a visible tie: the labelled versions vouch for theirs.
            let mut labelled = BTreeSet::new();
            for version in versions.older.iter().chain(&versions.kept) {
                if let Some((id, _)) = self.version_key(secret_id, version).await? {
                    labelled.insert(id);
                }
            }
            holdings.prove(&labelled);
        }

        // Keys no version will need once AWSCURRENT has moved: those of the version losing
        // AWSPREVIOUS, abandoned rotations, duplicates from lost answers, keys made under an
        // earlier KeyName. Deleted first, while the version that vouches for them is labelled.
        let candidates: Vec<String> = holdings
            .owned
            .keys()
            .filter(|id| **id != new.api_key_id && Some(*id) != previous_key.as_ref())
            .cloned()
            .collect();
        let kept = self
            .kept_keys(ctx, &versions, &holdings, &candidates)
            .await?;
        for id in candidates.iter().filter(|id| !kept.contains(*id)) {
            self.delete_key(id, "no version of the secret needs it any more")
                .await?;
            if holdings.owned.get(id).is_some_and(|k| named_for(k, token)) {
                metrics::record(Effect::KeyCreated); // a duplicate a lost answer made
            }
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

        match previous_key {
            Some(id) if id != new.api_key_id && !kept.contains(&id) => {
                self.retire_previous(settings.old_key_action, &id, &holdings)
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The key of the version that becomes AWSPREVIOUS. The key this function made for that
    /// version is named after it, so a listing usually shows it; otherwise (an adopted key, a
    /// key made under another `KeyName`, two keys with the name) the version's value says, and
    /// the prefix its key was named under is listed too.
    async fn previous_key(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        version: Option<&str>,
        holdings: &mut Holdings,
    ) -> StepResult<Option<String>> {
        let Some(version) = version else {
            return Ok(None);
        };
        let arn = ctx.meta.arn.as_str();
        let name = settings.key_name_for(version);
        if let Some(key) = holdings.tied_named(arn, &name) {
            return Ok(Some(key.id.clone()));
        }
        let Some((id, key_name)) = self.version_key(&ctx.ev.secret_id, version).await? else {
            return Ok(None);
        };
        let mut search = Search {
            ids: BTreeSet::from([id.clone()]),
            labelled: BTreeSet::from([id.clone()]),
            ..Search::default()
        };
        // The prefix the previous key was named under, when it is a new one: keys of that
        // rotation (duplicates, abandoned tries) are there.
        if let Some(prefix) = key_name.as_deref().and_then(|n| prefix_of(n, version)) {
            if !holdings.in_view(&prefix) {
                search.prefixes.insert(prefix);
            }
        }
        holdings.prove(&search.labelled);
        if holdings.owned.contains_key(&id) && search.prefixes.is_empty() {
            return Ok(Some(id));
        }
        holdings.merge(self.find_owned(arn, &search).await?);
        holdings.prove(&search.labelled);
        if holdings.foreign.contains_key(&id) {
            return Ok(None);
        }
        Ok(Some(id))
    }

    /// Which of `candidates` the versions that keep a label need: keys named for them, and the
    /// keys their values hold (read only while some candidate would otherwise be deleted).
    async fn kept_keys(
        &self,
        ctx: &StepCtx<'_>,
        versions: &Versions<'_>,
        holdings: &Holdings,
        candidates: &[String],
    ) -> StepResult<BTreeSet<String>> {
        let mut kept: BTreeSet<String> = candidates
            .iter()
            .filter(|id| {
                holdings
                    .owned
                    .get(*id)
                    .is_some_and(|k| versions.kept.iter().any(|v| named_for(k, v)))
            })
            .cloned()
            .collect();
        if kept.len() == candidates.len() {
            return Ok(kept);
        }
        for version in &versions.kept {
            if let Some((id, _)) = self.version_key(&ctx.ev.secret_id, version).await? {
                kept.insert(id);
            }
        }
        Ok(kept)
    }

    /// Retires the previous key by policy. It is the secret's: tied to it, or the key of the
    /// labelled version that is AWSPREVIOUS.
    async fn retire_previous(
        &self,
        action: OldKeyAction,
        id: &str,
        holdings: &Holdings,
    ) -> StepResult<()> {
        // Every search that named the key looked it up: what is not owned is gone, or is
        // another secret's.
        let Some(key) = holdings.owned.get(id) else {
            if !holdings.foreign.contains_key(id) {
                tracing::info!(key_id = id, "the previous key no longer exists");
            }
            return Ok(());
        };
        match action {
            OldKeyAction::Delete => {
                self.delete_key(id, "the previous key (OldKeyAction=delete)")
                    .await
            }
            OldKeyAction::Disable => {
                if key.enabled {
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
