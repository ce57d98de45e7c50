//! The pending version: its value, and its key, which every step after createSecret acts on only
//! when it is the key this function made for the version (`ownership::made_for`) and the value
//! is the rotation's own (`validate::stale_pending`).

use super::{validate, Rotator, StepCtx};
use crate::error::{Failure, StepResult};
use crate::ownership;
use crate::ports::{
    ApiKey, KeyGateway, Prober, SecretMetadata, SecretStore, SecretText, VersionRef, AWSPENDING,
};
use crate::secret::SecretValue;

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// The pending value written by createSecret, or a rotation-state error naming what is
    /// missing.
    pub(crate) async fn pending_value(&self, ctx: &StepCtx<'_>) -> StepResult<SecretValue> {
        let raw = self
            .secrets
            .get_value(
                &ctx.ev.secret_id,
                VersionRef::Id(&ctx.ev.token, Some(AWSPENDING)),
            )
            .await?;
        match raw {
            Some(SecretText(text)) if !text.trim().is_empty() => {
                let value = SecretValue::parse(&text, AWSPENDING)?;
                check_not_stale(&ctx.meta, &value, &ctx.ev.token)?;
                Ok(value)
            }
            _ => Err(Failure::state(
                "the AWSPENDING version has no value yet; createSecret must run first",
            )),
        }
    }

    /// The pending value's key, when it is the one this function made for the token; `gone`
    /// makes the error for a key that does not exist.
    pub(crate) async fn pending_key(
        &self,
        ctx: &StepCtx<'_>,
        pending: &SecretValue,
        gone: fn(String) -> Failure,
    ) -> StepResult<ApiKey> {
        let id = &pending.api_key_id;
        let key = self
            .keys
            .get_key(id)
            .await?
            .ok_or_else(|| {
                gone(format!(
                    "the pending key {id} does not exist; cancel the rotation (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING --remove-from-version-id {}) and rotate again",
                    ctx.meta.name, ctx.ev.token
                ))
            })?;
        let token = ctx.ev.token.as_str();
        if key.name != pending.key_name
            || !ownership::made_for(&self.keys, &ctx.meta.arn, &key, token).await?
        {
            return Err(not_made_for(id, token, &ctx.meta.name));
        }
        Ok(key)
    }
}

/// The refusal of a pending value whose key this function did not make for the version.
pub(crate) fn not_made_for(key_id: &str, token: &str, secret: &str) -> Failure {
    Failure::state(format!(
        "the pending version {token} names key {key_id}, which this function did not make for it (it is not tied to the secret, or not named for the version); nothing was changed. Cancel the rotation (aws secretsmanager update-secret-version-stage --secret-id {secret} --version-stage AWSPENDING --remove-from-version-id {token}) and rotate again"
    ))
}

/// A pending value is carried on only while AWSCURRENT is where createSecret found it
/// (`validate::stale_pending`).
pub(crate) fn check_not_stale(
    meta: &SecretMetadata,
    value: &SecretValue,
    token: &str,
) -> StepResult<()> {
    match validate::stale_pending(meta, value, token) {
        Some(finding) => Err(finding.into()),
        None => Ok(()),
    }
}
