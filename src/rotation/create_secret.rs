//! createSecret: exactly one new key for the token, attached to every plan, stored as
//! AWSPENDING. All configuration is validated before the first change.

use std::collections::BTreeMap;

use super::{Rotator, StepCtx, TokenState};
use crate::config::{RotationSettings, TIE_TAG};
use crate::error::{Failure, StepResult};
use crate::ports::{
    ApiKey, KeyGateway, NewKey, Prober, SecretStore, SecretText, VersionRef, AWSCURRENT,
};
use crate::secret::{CurrentValue, SecretValue};

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
            .get_value(
                secret_id,
                VersionRef::Id(token, Some(crate::ports::AWSPENDING)),
            )
            .await?;
        if pending.is_some_and(|p| !p.0.trim().is_empty()) {
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
        // One listing finds both the keys this function made for the secret (the current one,
        // and any the token already made) by their name prefix.
        let listed = self
            .keys
            .find_keys_with_prefix(&settings.key_prefix())
            .await?;
        let current_key = self.current_key(ctx, &current, &listed).await?;
        for tag in &settings.skipped_tags {
            tracing::warn!(tag_key = %tag, "tag not copied: API Gateway cannot take its key or value");
        }

        // Changes.
        if let Some(key) = &current_key {
            if key.tags.get(TIE_TAG) != Some(&ctx.meta.arn) {
                let tie = BTreeMap::from([(TIE_TAG.to_owned(), ctx.meta.arn.clone())]);
                self.keys.tag_key(&key.id, &tie).await?;
                tracing::info!(key_id = %key.id, "tied the adopted key to the secret");
            }
        }
        let key = self
            .key_for_token(ctx, &settings, current_key.as_ref(), listed)
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

    /// The key the AWSCURRENT value names, checked: it must exist when adopted, and must not
    /// belong to another secret. A key this function made is in `listed`; an adopted key (or one
    /// made under another `KeyName`) is looked up.
    async fn current_key(
        &self,
        ctx: &StepCtx<'_>,
        current: &CurrentValue,
        listed: &[ApiKey],
    ) -> StepResult<Option<ApiKey>> {
        let Some(id) = &current.key_id else {
            return Ok(None);
        };
        let found = match listed.iter().find(|k| k.id == *id) {
            Some(k) => Some(k.clone()),
            None => self.keys.get_key(id).await?,
        };
        let Some(key) = found else {
            if current.adopting {
                return Err(Failure::config(format!(
                    "the AWSCURRENT value names key {id}, which does not exist"
                )));
            }
            tracing::warn!(key_id = %id, "the current key no longer exists; rotating to a new one");
            return Ok(None);
        };
        match key.tags.get(TIE_TAG) {
            Some(arn) if *arn != ctx.meta.arn => Err(Failure::config(format!(
                "key {id} belongs to another secret ({arn}); refusing to rotate it"
            ))),
            _ => Ok(Some(key)),
        }
    }

    /// Finds the key this token already made, or makes it. When an earlier try made more than
    /// one (a CreateApiKey whose answer was lost and that the SDK sent again), the earliest is
    /// kept and the others are removed, so every try settles on the same key. A duplicate made
    /// by this try's own create is not looked for here: it is attached nowhere and stored
    /// nowhere, and finishSecret's sweep deletes it with any other key no version needs.
    async fn key_for_token(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        current_key: Option<&ApiKey>,
        listed: Vec<ApiKey>,
    ) -> StepResult<ApiKey> {
        let name = settings.key_name_for(&ctx.ev.token);
        let arn = &ctx.meta.arn;
        let mut found: Vec<ApiKey> = listed
            .into_iter()
            .filter(|k| k.name == name && k.tags.get(TIE_TAG) == Some(arn))
            .collect();
        if found.is_empty() {
            let mut tags = settings.key_tags.clone();
            tags.insert(TIE_TAG.to_owned(), arn.clone());
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
            tracing::info!(key_id = %created.id, key_name = %name, "created key");
            if created.value.is_some() {
                return Ok(created);
            }
            found.push(created);
        }
        found.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        let mut found = found.into_iter();
        let keep = found
            .next()
            .ok_or_else(|| Failure::state(format!("no key named {name} after creating it")))?;
        for extra in found {
            self.delete_key(&extra.id, "a second key for the same token")
                .await?;
        }
        if keep.value.is_some() {
            return Ok(keep);
        }
        self.keys
            .get_key(&keep.id)
            .await?
            .ok_or_else(|| Failure::state(format!("key {} vanished while being created", keep.id)))
    }
}
