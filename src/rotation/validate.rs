//! The rules that need AWS calls or the secret's versions, each in one place: createSecret and
//! the other steps fail with the first error they find, and the `check` and `status` commands
//! (`crate::ops`) report every finding. The rules on the tags alone are
//! `RotationSettings::check_tags`; those on a value's shape are in `crate::secret`.

use std::collections::BTreeSet;

use super::Rotator;
use crate::config::{RotationSettings, MAX_KEY_TAGS, TIE_TAG};
use crate::error::StepResult;
use crate::finding::{Code, Finding};
use crate::ownership::{Survey, Tie};
use crate::ports::{
    ApiKey, KeyGateway, Prober, SecretMetadata, SecretStore, UsagePlan, AWSCURRENT, AWSPREVIOUS,
};
use crate::secret::{CurrentValue, SecretValue};

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// Fetches every configured usage plan: each must exist, and no two may cover the same API
    /// stage (API Gateway refuses a key in two such plans). The plans found, and the findings.
    pub(crate) async fn check_plans(
        &self,
        settings: &RotationSettings,
    ) -> StepResult<(Vec<UsagePlan>, Vec<Finding>)> {
        let mut found = Vec::with_capacity(settings.usage_plan_ids.len());
        for id in &settings.usage_plan_ids {
            found.push((id.clone(), self.keys.get_usage_plan(id).await?));
        }
        Ok(checked_plans(found))
    }
}

/// The configured plans as found (id, the plan when it exists), checked: each must exist, and no
/// two may cover the same API stage. The operator commands find them in a run's shared reads.
pub(crate) fn checked_plans(
    found: Vec<(String, Option<UsagePlan>)>,
) -> (Vec<UsagePlan>, Vec<Finding>) {
    let mut plans = Vec::with_capacity(found.len());
    let mut findings = Vec::new();
    for (id, plan) in found {
        match plan {
            Some(plan) => plans.push(plan),
            None => findings.push(Finding::error(
                Code::UsagePlanNotFound,
                format!("usage plan {id} does not exist"),
                "tag the secret with the id of an existing usage plan (aws apigateway get-usage-plans)",
            )),
        }
    }
    let mut seen: BTreeSet<(&str, &str)> = BTreeSet::new();
    for plan in &plans {
        for (api, stage) in &plan.api_stages {
            if !seen.insert((api, stage)) {
                findings.push(Finding::error(
                    Code::UsagePlansOverlap,
                    format!(
                        "usage plans {} both cover API {api} stage {stage}; API Gateway refuses a key in two such plans",
                        plans
                            .iter()
                            .filter(|p| p.api_stages.iter().any(|(a, s)| a == api && s == stage))
                            .map(|p| p.id.as_str())
                            .collect::<Vec<_>>()
                            .join(" and ")
                    ),
                    "keep one of the plans that cover the stage in the UsagePlan tag",
                ));
            }
        }
    }
    (plans, findings)
}

/// The TestUrl host rule: allow-listed, or the execute-api host of an API that one of the key's
/// usage plans covers.
pub(crate) fn test_url_host(settings: &RotationSettings, plans: &[UsagePlan]) -> Option<Finding> {
    let url = settings.test_url.as_ref()?;
    url.check_host(&UsagePlan::api_ids(plans)).err().map(|failure| {
        Finding::error(
            Code::TestUrlHostNotAllowed,
            failure.cause,
            "add the host to the function's ALLOWED_TEST_URL_HOSTS, or point TestUrl at a stage of an API the key's plans cover",
        )
    })
}

/// The key the AWSCURRENT value names, checked against what a search found: an adopted key must
/// exist, and no key tied to another secret is taken. A full value whose key is gone is a
/// warning: the rotation makes a new key.
pub(crate) fn current_key(
    current: &CurrentValue,
    survey: &Survey,
) -> (Option<ApiKey>, Option<Finding>) {
    let Some(id) = &current.key_id else {
        return (None, None);
    };
    if let Some(arn) = survey.foreign.get(id) {
        return (
            None,
            Some(Finding::error(
                Code::CurrentKeyForeign,
                format!("key {id} belongs to another secret ({arn}); refusing to rotate it"),
                "give this secret a key of its own: write {\"api_key_id\": \"<its key id>\"} as its value; if that secret was deleted and this one restored from it (a new ARN), tie the key to this secret (aws apigateway tag-resource --resource-arn arn:aws:apigateway:<region>::/apikeys/<key id> --tags api-key-rotator:secret-arn=<this secret's ARN>)",
            )),
        );
    }
    // The survey looked the current key up: what it did not find does not exist.
    match survey.owned.get(id) {
        Some(owned) => (Some(owned.key.clone()), None),
        None if current.adopting => (
            None,
            Some(Finding::error(
                Code::AdoptedKeyNotFound,
                format!("the AWSCURRENT value names key {id}, which does not exist"),
                "write the id of an existing key as the value ({\"api_key_id\": \"...\"}), or an empty value to start with a new key",
            )),
        ),
        None => (
            None,
            Some(Finding::warning(
                Code::CurrentKeyGone,
                format!("the current key {id} no longer exists; the next rotation makes a new one"),
                "rotate the secret so that its clients get a key that works",
            )),
        ),
    }
}

/// Every untied key a labelled version holds is tied before anything else (adoption, a
/// migration's previous key), and API Gateway takes at most 50 tags a key: one that carries 50
/// already cannot take the tie, so the rotation would fail at its first change, on every try.
pub(crate) fn untied_keys_full(survey: &Survey) -> Vec<Finding> {
    survey
        .owned
        .iter()
        .filter(|(_, o)| o.tie == Tie::Untied && o.key.tags.len() >= MAX_KEY_TAGS)
        .map(|(id, o)| {
            Finding::error(
                Code::KeyTagsFull,
                format!(
                    "key {id}, which a version of the secret holds, carries {} tags, API Gateway's most: the function cannot add its tie ({TIE_TAG}), which it writes before any other change",
                    o.key.tags.len()
                ),
                format!("remove one tag from the key (aws apigateway untag-resource --resource-arn arn:aws:apigateway:<region>::/apikeys/{id} --tag-keys <key>), then rotate"),
            )
        })
        .collect()
}

/// A version that is AWSPREVIOUS as well as AWSPENDING was current once and rolled back from:
/// promoting it again would undo the roll-back and retire the key clients went back to.
pub(crate) fn rolled_back_pending(meta: &SecretMetadata, version: &str) -> Option<Finding> {
    if !meta.has_stage(version, AWSPREVIOUS) || meta.has_stage(version, AWSCURRENT) {
        return None;
    }
    Some(Finding::error(
        Code::PendingRolledBack,
        format!(
            "the version {version} is AWSPREVIOUS as well as AWSPENDING: AWSCURRENT was rolled back from it, so it is not promoted again"
        ),
        format!(
            "finish the roll-back by removing AWSPENDING from it (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING --remove-from-version-id {version}), then rotate again",
            meta.name
        ),
    ))
}

/// A pending value is carried on only while AWSCURRENT is where createSecret found it. When it
/// moved since (a roll-back, a value written by hand), promoting this version would undo that.
pub(crate) fn stale_pending(
    meta: &SecretMetadata,
    value: &SecretValue,
    version: &str,
) -> Option<Finding> {
    let from = value.rotated_from.as_ref()?;
    let current = meta.version_with(AWSCURRENT);
    if from.as_deref() == current {
        return None;
    }
    Some(Finding::error(
        Code::PendingStale,
        format!(
            "AWSCURRENT has moved since createSecret wrote version {version} (it was on {}, it is on {}), so the version is not promoted",
            from.as_deref().unwrap_or("no version"),
            current.unwrap_or("no version"),
        ),
        format!(
            "remove AWSPENDING from it (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING --remove-from-version-id {version}), then rotate again",
            meta.name
        ),
    ))
}

/// API Gateway takes tag values of at most this many characters; the tie tag's value is the
/// secret's ARN.
pub const MAX_TAG_VALUE: usize = 256;

/// The tie tag must fit on a key: a secret whose ARN is longer than a tag value may be could
/// never get a key (every CreateApiKey would be refused mid-rotation).
pub(crate) fn tie_too_long(arn: &str) -> Option<Finding> {
    (arn.chars().count() > MAX_TAG_VALUE).then(|| {
        Finding::error(
            Code::SecretArnTooLong,
            format!(
                "the secret's ARN is {} characters; API Gateway takes tag values of at most {MAX_TAG_VALUE}, so no key can carry the tie tag naming it",
                arn.chars().count()
            ),
            "give the secret a shorter name (at most about 190 characters)",
        )
    })
}

/// `tie_too_long` as a step's refusal, before any change.
pub(crate) fn tie_fits(arn: &str) -> StepResult<()> {
    match tie_too_long(arn) {
        Some(finding) => Err(finding.into()),
        None => Ok(()),
    }
}
