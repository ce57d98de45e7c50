//! Reading the evidence: every labelled version's raw value, every key in the account, and the
//! tags of the keys a version or a record names whose tie a listing does not show.

use std::collections::{BTreeMap, BTreeSet};

use super::claim::Claim;
use super::{tie, Labelled, Owned, Survey, Tie};
use crate::config::TIE_TAG;
use crate::error::{AwsError, Failure, StepResult};
use crate::grace::Schedule;
use crate::ports::{ApiKey, KeyGateway, SecretMetadata, SecretStore, SecretText, VersionRef};
use crate::secret::CurrentValue;

/// Raw values already read, by version id (a step reads some before it surveys).
pub type Values = BTreeMap<String, Option<SecretText>>;

impl Survey {
    /// Surveys the secret described by `meta`. `values` holds versions' values the caller has
    /// read already; the others are read here. `listing` is every key in the account when the
    /// caller read it once for many secrets (before `meta`); otherwise every key is listed
    /// here (one GetApiKeys call per 500 keys), and the labels are read again after the
    /// listing: a key is made after its rotation's version got AWSPENDING, so labels read after
    /// the listing name every version a listed key can belong to. When they moved in between
    /// (a rotation started or finished), the survey is refused and the step is retried.
    pub async fn read<S: SecretStore, K: KeyGateway>(
        secrets: &S,
        keys: &K,
        meta: &SecretMetadata,
        values: Values,
        listing: Option<&[ApiKey]>,
    ) -> StepResult<Survey> {
        let versions = read_claims(secrets, meta, values).await?;
        let listed = match listing {
            Some(listing) => listing.to_vec(),
            None => {
                let listed = keys.list_all_keys().await?;
                let now = secrets.describe(&meta.arn).await?;
                if now.as_ref().map(|m| &m.versions) != Some(&meta.versions) {
                    return Err(Failure::state(
                        "the secret's labels moved while its keys were being listed (a rotation started or finished at the same time); nothing was changed, and the step can be run again",
                    ));
                }
                listed
            }
        };
        let mut survey = Survey::classify(&meta.arn, versions, listed, keys).await?;
        survey.schedule = Schedule::from_tags(&meta.tags);
        Ok(survey)
    }

    async fn classify<K: KeyGateway>(
        arn: &str,
        versions: BTreeMap<String, Labelled>,
        listed: Vec<ApiKey>,
        keys: &K,
    ) -> Result<Survey, AwsError> {
        // A key a version holds may be the secret's by adoption, but only a key that
        // AWSCURRENT or AWSPREVIOUS names plainly (a value the function reads) vouches for an
        // untied key: AWSPENDING's key is always one the function made, tied at creation; a
        // custom label or a value the function cannot read proves nothing.
        let vouched: BTreeSet<String> = versions
            .values()
            .filter(|l| l.has(crate::ports::AWSCURRENT) || l.has(crate::ports::AWSPREVIOUS))
            .filter_map(|l| match &l.claim {
                Claim::Key { id, .. } => Some(id.clone()),
                _ => None,
            })
            .collect();
        let named: BTreeSet<String> = versions
            .values()
            .flat_map(|l| {
                l.claim
                    .key_id()
                    .map(str::to_owned)
                    .into_iter()
                    .chain(l.claim.record().iter().cloned())
            })
            .collect();
        let mut seen: BTreeMap<String, ApiKey> = listed
            .into_iter()
            .filter(|k| tie(k) == Some(arn) || named.contains(&k.id))
            .map(|k| (k.id.clone(), k))
            .collect();
        let mut missing = BTreeSet::new();
        for id in &named {
            if seen.contains_key(id) {
                continue;
            }
            // Not in the listing: created a moment ago (listings lag on AWS), or gone.
            match keys.get_key(id).await? {
                Some(key) => {
                    seen.insert(id.clone(), key);
                }
                None => {
                    missing.insert(id.clone());
                }
            }
        }
        let mut survey = Survey {
            arn: arn.to_owned(),
            versions,
            owned: BTreeMap::new(),
            foreign: BTreeMap::new(),
            missing,
            schedule: Schedule::default(),
            now: crate::grace::now_secs(),
        };
        for (id, key) in seen {
            let (tied_to, how) = match tie(&key) {
                Some(t) => (Some(t.to_owned()), Tie::Listed),
                // GetTags shows a tie added after creation, which a listing may not.
                None => (keys.key_tags(&id).await?.remove(TIE_TAG), Tie::Later),
            };
            match tied_to {
                Some(t) if t == arn => {
                    survey.owned.insert(id, Owned { key, tie: how });
                }
                Some(other) => {
                    tracing::warn!(key_id = %id, other_secret = %other, "a version or record names a key tied to another secret; it is left alone");
                    survey.foreign.insert(id, other);
                }
                None if vouched.contains(&id) => {
                    survey.owned.insert(
                        id,
                        Owned {
                            key,
                            tie: Tie::Untied,
                        },
                    );
                }
                None => {
                    tracing::warn!(key_id = %id, "a record or a pending value names a key that is neither tied to the secret nor held by a labelled version; it is left alone");
                }
            }
        }
        Ok(survey)
    }
}

/// Every labelled version of the secret and what its value claims: `values` holds the values
/// already read; the others are read here.
pub async fn read_claims<S: SecretStore>(
    secrets: &S,
    meta: &SecretMetadata,
    mut values: Values,
) -> Result<BTreeMap<String, Labelled>, AwsError> {
    let mut versions = BTreeMap::new();
    for (version, stages) in &meta.versions {
        let raw = match values.remove(version) {
            Some(raw) => raw,
            None => {
                secrets
                    .get_value(&meta.arn, VersionRef::Id(version, None))
                    .await?
            }
        };
        let raw = raw.as_ref().map(|t| t.0.as_str());
        let strict = CurrentValue::parse(raw).is_ok();
        versions.insert(
            version.clone(),
            Labelled {
                stages: stages.clone(),
                claim: Claim::read(raw, strict),
            },
        );
    }
    Ok(versions)
}
