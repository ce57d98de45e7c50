//! createSecret: exactly one new key for the token, attached to every plan, stored as
//! AWSPENDING with the record of the other keys the secret owns. All configuration is validated
//! before the first change.

use std::collections::{BTreeMap, BTreeSet};

use super::ownership::{prefix_of, tie, Holdings, Search};
use super::{check_not_stale, validate, Rotator, StepCtx, TokenState};
use crate::config::{RotationSettings, TIE_TAG};
use crate::error::{Failure, StepResult};
use crate::metrics::{self, Effect};
use crate::ports::{
    ApiKey, KeyGateway, NewKey, Prober, SecretStore, SecretText, VersionRef, AWSCURRENT,
    AWSPENDING, AWSPREVIOUS,
};
use crate::secret::{CurrentValue, SecretValue, MAX_OWNED_KEY_IDS};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn create_secret(&self, ctx: &StepCtx<'_>) -> StepResult<()> {
        if ctx.state == TokenState::AlreadyCurrent {
            tracing::info!("the token is already AWSCURRENT; nothing to create");
            return Ok(());
        }
        let secret_id = ctx.ev.secret_id.as_str();
        let token = ctx.ev.token.as_str();
        let pending = self
            .secrets
            .get_value(secret_id, VersionRef::Id(token, Some(AWSPENDING)))
            .await?;
        if let Some(text) = pending.filter(|p| !p.0.trim().is_empty()) {
            // A value that does not parse is setSecret's to report.
            if let Ok(value) = SecretValue::parse(&text.0, AWSPENDING) {
                check_not_stale(&ctx.meta, &value, token)?;
            }
            tracing::info!(version_id = token, "the pending value is already stored");
            return Ok(());
        }

        // Validation: nothing below this block changes anything until it has all passed.
        let current_raw = self
            .secrets
            .get_value(secret_id, VersionRef::Stage(AWSCURRENT))
            .await?;
        let current = CurrentValue::parse(current_raw.as_ref().map(|t| t.0.as_str()))?;
        let settings = RotationSettings::from_tags(&ctx.meta.tags, ctx.config)?;
        let plans = self.load_plans(&settings).await?;
        self.check_test_url(&settings, Some(&plans)).await?;
        let holdings = self.holdings_at_create(ctx, &settings, &current).await?;
        let current_key = match validate::current_key(&current, &holdings) {
            (_, Some(finding)) if finding.is_error() => return Err(finding.into()),
            (key, Some(finding)) => {
                tracing::warn!(code = %finding.code, "{}", finding.message);
                key
            }
            (key, None) => key,
        };
        for tag in &settings.skipped_tags {
            tracing::warn!(tag_key = %tag, "tag not copied: API Gateway cannot take its key or value");
        }

        // Changes.
        if let Some(key) = &current_key {
            if tie(key).is_none() && !holdings.tied_later.contains(&key.id) {
                let tie = BTreeMap::from([(TIE_TAG.to_owned(), ctx.meta.arn.clone())]);
                self.keys.tag_key(&key.id, &tie).await?;
                tracing::info!(key_id = %key.id, "tied the adopted key to the secret");
            }
        }
        let (key, removed) = self
            .key_for_token(ctx, &settings, current_key.as_ref(), &holdings)
            .await?;
        for plan in &settings.usage_plan_ids {
            self.keys.attach(plan, &key.id).await?;
            tracing::info!(key_id = %key.id, plan_id = %plan, "attached key to usage plan");
        }
        let value = key.value.clone().ok_or_else(|| {
            Failure::state(format!(
                "API Gateway returned key {} without its value",
                key.id
            ))
        })?;
        let secret_value = SecretValue {
            api_key_id: key.id.clone(),
            api_key_value: value,
            key_name: key.name.clone(),
            usage_plan_ids: settings.usage_plan_ids.clone(),
            owned_key_ids: record(&ctx.meta.arn, &settings, &holdings, &key.id, &removed),
            rotated_from: Some(ctx.meta.version_with(AWSCURRENT).map(str::to_owned)),
            extra: current.extra,
        };
        self.secrets
            .put_pending(
                secret_id,
                token,
                &SecretText(secret_value.to_json()),
                ctx.ev.rotation_token.as_ref(),
            )
            .await?;
        tracing::info!(key_id = %key.id, version_id = token, "stored the new key as AWSPENDING");
        Ok(())
    }

    /// The secret's keys as createSecret sees them: one listing of the `<KeyName>-` prefix in
    /// the steady state. Every key in the account is listed instead when the current value
    /// carries no record (a first rotation, an adopted or migrated key, a value from before the
    /// record existed) or when its key was named under another prefix (`KeyName` changed: keys
    /// of earlier tries may be under any name it had since). Record entries outside the listing
    /// are looked up one by one.
    async fn holdings_at_create(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        current: &CurrentValue,
    ) -> StepResult<Holdings> {
        let prefix = settings.key_prefix();
        let current_prefix = match (ctx.meta.version_with(AWSCURRENT), &current.key_name) {
            (Some(version), Some(name)) => prefix_of(name, version),
            _ => None,
        };
        let renamed = current.key_id.is_some() && current_prefix.as_ref() != Some(&prefix);
        let mut search = Search {
            everything: current.owned_key_ids.is_none() || renamed,
            prefixes: BTreeSet::from([prefix]),
            ..Search::default()
        };
        search.ids.extend(current.key_id.iter().cloned());
        search
            .ids
            .extend(current.owned_key_ids.iter().flatten().cloned());
        search.labelled.extend(current.key_id.iter().cloned());
        // The current value's record covers the previous version when the current one was
        // rotated from it. Otherwise (no record, or a roll-back made a later version
        // AWSPREVIOUS) that version's key and record are read, and every key is listed.
        let previous = ctx
            .meta
            .version_with(AWSPREVIOUS)
            .filter(|v| Some(*v) != ctx.meta.version_with(AWSCURRENT));
        let covered = current.owned_key_ids.is_some()
            && current
                .rotated_from
                .as_ref()
                .is_some_and(|f| f.as_deref() == previous);
        if let (false, Some(version)) = (covered, previous) {
            search.everything = true;
            let raw = self
                .secrets
                .get_value(&ctx.ev.secret_id, VersionRef::Id(version, None))
                .await?;
            match CurrentValue::parse(raw.as_ref().map(|t| t.0.as_str())) {
                Ok(v) => {
                    search.ids.extend(v.key_id.iter().cloned());
                    search.labelled.extend(v.key_id);
                    search.ids.extend(v.owned_key_ids.into_iter().flatten());
                }
                Err(e) => {
                    tracing::warn!(error = %e, version_id = version, "the previous version's value names no key")
                }
            }
        }
        let holdings = self.find_owned(&ctx.meta.arn, &search).await?;
        for id in holdings.unproven.keys() {
            tracing::warn!(key_id = %id, "the record names a key that is neither tied to the secret nor held by a labelled version; it is left alone");
        }
        Ok(holdings)
    }

    /// Finds the key this token already made, or makes it. When an earlier try made more than
    /// one (a CreateApiKey whose answer was lost and that the SDK sent again), the earliest is
    /// kept and the others are removed, so every try settles on the same key. A duplicate made
    /// by this try's own create is not looked for here: it is attached nowhere and stored
    /// nowhere, and finishSecret's sweep deletes it with any other key no version needs.
    /// Returns the key and the ids of the keys it removed.
    async fn key_for_token(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        current_key: Option<&ApiKey>,
        holdings: &Holdings,
    ) -> StepResult<(ApiKey, Vec<String>)> {
        let name = settings.key_name_for(&ctx.ev.token);
        let arn = ctx.meta.arn.as_str();
        let mut found: Vec<ApiKey> = holdings
            .owned
            .values()
            .filter(|k| k.name == name && tie(k) == Some(arn))
            .cloned()
            .collect();
        if found.is_empty() {
            let mut tags = settings.key_tags.clone();
            tags.insert(TIE_TAG.to_owned(), arn.to_owned());
            let new = NewKey {
                name: name.clone(),
                description: current_key.and_then(|k| k.description.clone()).or_else(|| {
                    Some(format!(
                        "Rotated by api-key-rotator for secret {}",
                        ctx.meta.name
                    ))
                }),
                customer_id: current_key.and_then(|k| k.customer_id.clone()),
                tags,
            };
            let created = self.keys.create_key(&new).await?;
            metrics::record(Effect::KeyCreated);
            tracing::info!(key_id = %created.id, key_name = %name, "created key");
            if created.value.is_some() {
                return Ok((created, Vec::new()));
            }
            found.push(created);
        }
        found.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let mut found = found.into_iter();
        let keep = found
            .next()
            .ok_or_else(|| Failure::state(format!("no key named {name} after creating it")))?;
        let mut removed = Vec::new();
        for extra in found {
            self.delete_key(&extra.id, "a second key for the same token")
                .await?;
            removed.push(extra.id);
            metrics::record(Effect::KeyCreated); // a duplicate a lost answer made
        }
        if keep.value.is_some() {
            return Ok((keep, removed));
        }
        let key = self.keys.get_key(&keep.id).await?.ok_or_else(|| {
            Failure::state(format!("key {} vanished while being created", keep.id))
        })?;
        Ok((key, removed))
    }
}

/// The record the new version carries: every key the secret owns, other than the new one, that
/// a listing of the new key's prefix would not prove (`docs/design/ownership.md`). `None` when
/// there are more than the record may hold: the next rotation then lists every key instead.
fn record(
    arn: &str,
    settings: &RotationSettings,
    holdings: &Holdings,
    new_key: &str,
    removed: &[String],
) -> Option<Vec<String>> {
    let prefix = settings.key_prefix();
    let ids: Vec<String> = holdings
        .owned
        .values()
        .filter(|k| k.id != new_key && !removed.contains(&k.id))
        .filter(|k| !(k.name.starts_with(&prefix) && tie(k) == Some(arn)))
        .map(|k| k.id.clone())
        .collect();
    if ids.len() > MAX_OWNED_KEY_IDS {
        tracing::warn!(
            keys = ids.len(),
            "the secret owns more keys outside its name prefix than the record holds; the next rotation lists every key"
        );
        return None;
    }
    Some(ids)
}
