//! The token's key: found when an earlier try made it, made otherwise. When earlier tries made
//! more than one under the current name (a CreateApiKey whose answer was lost and that the SDK
//! sent again), the earliest is kept, so that every try settles on the same key. Nothing is
//! deleted here: a delivery of createSecret running at the same time may be storing another of
//! them, and only once a pending value is stored is it known which key a version holds. The
//! others, and keys earlier tries made under another `KeyName`, are owned and needed by no
//! version: finishSecret retires them with every other such key.

use super::{Rotator, StepCtx};
use crate::config::{RotationSettings, TIE_TAG};
use crate::error::{Failure, StepResult};
use crate::metrics::{self, Effect};
use crate::ownership::{Survey, Tie};
use crate::ports::{ApiKey, KeyGateway, NewKey, Prober, SecretStore};

/// The key createSecret stores.
pub(crate) struct Made {
    pub key: ApiKey,
    /// Made by this try: on no plan yet.
    pub fresh: bool,
}

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    pub(crate) async fn key_for_token(
        &self,
        ctx: &StepCtx<'_>,
        settings: &RotationSettings,
        current_key: Option<&ApiKey>,
        survey: &Survey,
    ) -> StepResult<Made> {
        let name = settings.key_name_for(&ctx.ev.token);
        let mut found: Vec<ApiKey> = survey
            .owned
            .values()
            .filter(|o| o.key.name == name && o.tie != Tie::Untied)
            .map(|o| o.key.clone())
            .collect();
        let mut fresh = false;
        if found.is_empty() {
            let mut tags = settings.key_tags.clone();
            tags.insert(TIE_TAG.to_owned(), ctx.meta.arn.clone());
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
                return Ok(Made {
                    key: created,
                    fresh: true,
                });
            }
            fresh = true;
            found.push(created);
        }
        found.sort_by(|a, b| (a.created, &a.id).cmp(&(b.created, &b.id)));
        if found.len() > 1 {
            tracing::warn!(
                keys = found.len(),
                "earlier tries made more than one key for the token; the earliest is kept, finishSecret retires the others"
            );
        }
        let keep = found
            .into_iter()
            .next()
            .ok_or_else(|| Failure::state(format!("no key named {name} after creating it")))?;
        let key = match keep.value {
            Some(_) => keep,
            None => self.keys.get_key(&keep.id).await?.ok_or_else(|| {
                Failure::state(format!("key {} vanished while being created", keep.id))
            })?,
        };
        Ok(Made { key, fresh })
    }
}
