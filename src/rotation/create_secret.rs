//! createSecret: exactly one new key for the token, on exactly the plans the tags name, stored as
//! AWSPENDING. Everything is validated before the first change; which keys the secret owns is
//! the survey's to say (`crate::ownership`).

use super::{check_not_stale, validate, Rotator, StepCtx, TokenState};
use crate::config::RotationSettings;
use crate::error::{Failure, StepResult};
use crate::ownership::{Survey, Tie, Values};
use crate::ports::{
    KeyGateway, Prober, SecretStore, SecretText, VersionRef, AWSCURRENT, AWSPENDING,
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
        validate::tie_fits(&ctx.meta.arn)?;
        let plans = self.load_plans(&settings).await?;
        self.check_test_url(&settings, Some(&plans)).await?;
        let mut values = Values::from([(token.to_owned(), None)]);
        if let Some(version) = ctx.meta.version_with(AWSCURRENT) {
            values.insert(version.to_owned(), current_raw);
        }
        let mut survey = Survey::read(&self.secrets, &self.keys, &ctx.meta, values, None).await?;
        let current_key = match validate::current_key(&current, &survey) {
            (_, Some(finding)) if finding.is_error() => return Err(finding.into()),
            (key, Some(finding)) => {
                tracing::warn!(code = %finding.code, "{}", finding.message);
                key
            }
            (key, None) => key,
        };
        if let Some(full) = validate::untied_keys_full(&survey).into_iter().next() {
            return Err(full.into());
        }
        for tag in &settings.skipped_tags {
            tracing::warn!(tag_key = %tag, "tag not copied: API Gateway cannot take its key or value");
        }

        // Changes. Every key a labelled version holds is tied first (adoption, and keys another
        // rotator left), so that the role's tag-conditioned permissions cover its retirement.
        let untied: Vec<String> = survey
            .owned
            .iter()
            .filter(|(_, o)| o.tie == Tie::Untied)
            .map(|(id, _)| id.clone())
            .collect();
        for id in untied {
            survey.tie_if_untied(&self.keys, &id).await?;
        }
        let made = self
            .key_for_token(ctx, &settings, current_key.as_ref(), &survey)
            .await?;
        let key = made.key;
        self.place_on_plans(&key.id, &settings.usage_plan_ids, !made.fresh, ctx.config)
            .await?;
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
            owned_key_ids: record(&survey, &key.id),
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
}

/// The record the new version carries: the owned keys, other than the new one, whose tie a
/// listing may not show, so that the next survey reads their tags (`docs/design/ownership.md`).
/// `None` when there are more than the record may hold.
fn record(survey: &Survey, new_key: &str) -> Option<Vec<String>> {
    let ids: Vec<String> = survey
        .hidden_ties()
        .into_iter()
        .filter(|id| id != new_key)
        .collect();
    if ids.len() > MAX_OWNED_KEY_IDS {
        tracing::warn!(
            keys = ids.len(),
            "the secret owns more keys with hidden ties than the record holds; they are found by their tie where a listing shows it"
        );
        return None;
    }
    Some(ids)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;
    use crate::ownership::Owned;
    use crate::ports::ApiKey;

    /// A survey owning `hidden` keys whose tie a listing does not show, the new key `new`
    /// (listed), and one more listed key.
    fn survey(hidden: usize) -> Survey {
        let owned = |id: String, tie| {
            let key = ApiKey {
                id: id.clone(),
                name: format!("partner-{id}"),
                ..ApiKey::default()
            };
            (id, Owned { key, tie })
        };
        let mut keys: BTreeMap<String, Owned> = (0..hidden)
            .map(|i| owned(format!("h{i:03}"), Tie::Later))
            .collect();
        keys.extend([
            owned("new".into(), Tie::Listed),
            owned("listed".into(), Tie::Listed),
        ]);
        Survey {
            arn: "arn:aws:secretsmanager:us-east-1:1:secret:partner-a".into(),
            versions: BTreeMap::new(),
            owned: keys,
            foreign: BTreeMap::new(),
            missing: BTreeSet::new(),
            schedule: Default::default(),
            now: 0,
        }
    }

    /// The record holds the hidden ties up to its limit, and none past it: a record of more
    /// would make every later step refuse the value it wrote (`secret::owned_key_ids`).
    #[test]
    fn the_record_holds_hidden_ties_up_to_its_limit_and_none_past_it() {
        let at_limit = record(&survey(MAX_OWNED_KEY_IDS), "new");
        assert_eq!(at_limit.as_ref().map(Vec::len), Some(MAX_OWNED_KEY_IDS));
        assert!(at_limit.is_some_and(
            |ids| !ids.contains(&"new".to_owned()) && !ids.contains(&"listed".to_owned())
        ));
        assert_eq!(record(&survey(MAX_OWNED_KEY_IDS + 1), "new"), None);
        // The new key is never counted, even when its tie is hidden.
        let mut with_new_hidden = survey(MAX_OWNED_KEY_IDS);
        if let Some(o) = with_new_hidden.owned.get_mut("new") {
            o.tie = Tie::Later;
        }
        assert_eq!(
            record(&with_new_hidden, "new").map(|ids| ids.len()),
            Some(MAX_OWNED_KEY_IDS)
        );
    }
}
