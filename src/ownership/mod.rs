//! The one place that decides which API keys a secret owns, and which of them a labelled
//! version needs (`docs/design/ownership.md`). Every step and every operator command asks it.
//!
//! Evidence, and nothing else:
//! - the **tie tag** `api-key-rotator:secret-arn` naming the secret (set inside CreateApiKey for
//!   every key the function makes; added by TagResource to an adopted key);
//! - the **raw values of the labelled versions**: the key a version's value names is held by
//!   that version (and, for a version with a label besides AWSPENDING, owned by adoption when
//!   untied). A value the steps cannot parse still holds every key id it mentions;
//! - the **record** (`owned_key_ids`) only says which keys' tags to read: a hint, never proof.
//!
//! A key tied to another secret is never the secret's. Names prove nothing: they only tell
//! which rotation made a key (`named_for`), so that the key an open rotation is making is not
//! mistaken for one nobody needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::TIE_TAG;
use crate::error::AwsError;
use crate::grace::Schedule;
use crate::ports::{opens_rotation, ApiKey, KeyGateway, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

mod claim;
mod retirement;
mod survey;

pub use claim::Claim;
pub use retirement::Retirement;
pub use survey::{read_claims, Values};

/// A labelled version: its labels and what its value claims.
#[derive(Debug, Clone)]
pub struct Labelled {
    pub stages: Vec<String>,
    pub claim: Claim,
}

impl Labelled {
    pub fn has(&self, stage: &str) -> bool {
        self.stages.iter().any(|s| s == stage)
    }
}

/// How an owned key's tie shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tie {
    /// The key as listed (or read) carries the tie.
    Listed,
    /// Only GetTags shows the tie (added after creation; not every reader shows it).
    Later,
    /// No tie yet: the key is owned because a labelled version holds it (adoption). It is tied
    /// before anything retires it.
    Untied,
}

/// An owned key.
#[derive(Debug, Clone)]
pub struct Owned {
    pub key: ApiKey,
    pub tie: Tie,
}

/// What a secret holds: its labelled versions' claims and its keys, read from evidence.
#[derive(Debug, Clone)]
pub struct Survey {
    pub arn: String,
    /// Every labelled version.
    pub versions: BTreeMap<String, Labelled>,
    /// The secret's keys, by id.
    pub owned: BTreeMap<String, Owned>,
    /// Keys a version or a record names that are tied to another secret: key → that secret.
    pub foreign: BTreeMap<String, String>,
    /// Keys a version or a record names that do not exist.
    pub missing: BTreeSet<String>,
    /// The retirements scheduled on the secret's tags (`crate::grace`), as read with it.
    pub schedule: Schedule,
    /// When the survey was read (seconds since the epoch): a key whose grace has not ended
    /// then is kept.
    pub now: i64,
}

/// The secret a key is tied to, as far as this read of the key shows.
pub fn tie(key: &ApiKey) -> Option<&str> {
    key.tags.get(TIE_TAG).map(String::as_str)
}

/// Whether the key was named by this function for `version` (`<KeyName>-<version id>`),
/// whatever `KeyName` was then. Says which rotation made a key, never whose it is.
pub fn named_for(key: &ApiKey, version: &str) -> bool {
    key.name
        .strip_suffix(version)
        .is_some_and(|p| p.len() > 1 && p.ends_with('-'))
}

/// Whether `key` is one the function made for `version` of the secret `arn`: named for the
/// version, and tied to the secret (as read, or as GetTags shows). The only key a pending
/// version may hold: a staged value that names any other key is not acted on.
pub async fn made_for<K: KeyGateway>(
    keys: &K,
    arn: &str,
    key: &ApiKey,
    version: &str,
) -> Result<bool, AwsError> {
    if !named_for(key, version) {
        return Ok(false);
    }
    Ok(match tie(key) {
        Some(t) => t == arn,
        None => {
            keys.key_tags(&key.id)
                .await?
                .get(TIE_TAG)
                .map(String::as_str)
                == Some(arn)
        }
    })
}

impl Survey {
    /// Whether the owned key `key_id` was made for `version` (see `made_for`).
    pub fn made_for(&self, key_id: &str, version: &str) -> bool {
        self.owned
            .get(key_id)
            .is_some_and(|o| o.tie != Tie::Untied && named_for(&o.key, version))
    }

    /// The version that carries `stage`.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, l)| l.has(stage))
            .map(|(v, _)| v.as_str())
    }

    /// The key `version`'s value names plainly.
    pub fn key_of(&self, version: &str) -> Option<&str> {
        self.versions.get(version).and_then(|l| l.claim.key_id())
    }

    /// The key of the version that carries `stage`.
    pub fn key_with(&self, stage: &str) -> Option<&str> {
        self.version_with(stage).and_then(|v| self.key_of(v))
    }

    /// Whether any labelled version holds `key_id` (its raw value names it, parsed or not).
    pub fn held(&self, key_id: &str) -> bool {
        self.versions.values().any(|l| l.claim.holds(key_id))
    }

    /// The owned keys that no version in `keeping` needs: held by none of them, not named
    /// for an open rotation among them (AWSPENDING on a version other than AWSCURRENT: its
    /// createSecret may have made the key and not yet stored it), and not in a grace period
    /// that has not ended (or whose schedule cannot be read).
    pub fn unneeded(&self, keeping: &BTreeMap<String, Vec<String>>) -> Vec<String> {
        let in_grace = self.schedule.kept_at(self.now);
        self.owned
            .iter()
            .filter(|(id, _)| !in_grace.contains(*id))
            .filter(|(id, owned)| {
                !keeping.keys().any(|v| {
                    self.versions.get(v).is_some_and(|l| l.claim.holds(id))
                        || (open(keeping, v) && named_for(&owned.key, v))
                })
            })
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Every labelled version, with its labels as they are now.
    pub fn labels(&self) -> BTreeMap<String, Vec<String>> {
        self.versions
            .iter()
            .map(|(v, l)| (v.clone(), l.stages.clone()))
            .collect()
    }

    /// The owned keys no labelled version needs now: what `cleanup` retires.
    pub fn orphans(&self) -> Vec<String> {
        self.unneeded(&self.labels())
    }

    /// Every key id the labelled versions may hold (their keys, and every word of a value the
    /// function cannot read): for membership tests only, never printed.
    pub fn held_ids(&self) -> BTreeSet<String> {
        held_ids(&self.versions)
    }

    /// Whether a labelled version's value could not be read as one naming a key: such a
    /// version may hold any key it mentions.
    pub fn has_unreadable(&self) -> bool {
        self.versions.values().any(|l| l.claim.is_unreadable())
    }

    /// The owned keys whose tie a listing may not show (tied later, or not yet): the record the
    /// next value carries, so that the next survey reads their tags.
    pub fn hidden_ties(&self) -> Vec<String> {
        self.owned
            .iter()
            .filter(|(_, o)| o.tie != Tie::Listed)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Ties `key_id` to the secret when it is owned and untied (adopted), so that the role's
    /// tag-conditioned permissions cover everything done to it next. Safe to repeat.
    pub async fn tie_if_untied<K: KeyGateway>(
        &mut self,
        keys: &K,
        key_id: &str,
    ) -> Result<(), AwsError> {
        let Some(owned) = self.owned.get_mut(key_id) else {
            return Ok(());
        };
        if owned.tie != Tie::Untied {
            return Ok(());
        }
        let tag = BTreeMap::from([(TIE_TAG.to_owned(), self.arn.clone())]);
        keys.tag_key(key_id, &tag).await?;
        owned.tie = Tie::Later;
        tracing::info!(key_id, "tied the key a version holds to the secret");
        Ok(())
    }
}

/// Every key id `versions` may hold (see `Survey::held_ids`).
pub fn held_ids(versions: &BTreeMap<String, Labelled>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for l in versions.values() {
        match &l.claim {
            Claim::Nothing => {}
            Claim::Key { id, .. } => {
                ids.insert(id.clone());
            }
            Claim::Unreadable { id, words } => {
                ids.extend(id.iter().cloned());
                ids.extend(words.iter().cloned());
            }
        }
    }
    ids
}

/// Whether `version` is an open rotation's in `labels`.
fn open(labels: &BTreeMap<String, Vec<String>>, version: &str) -> bool {
    labels.get(version).is_some_and(|s| opens_rotation(s))
}

/// The labels after finishSecret moves AWSCURRENT to `token` (AWSPREVIOUS follows it, and the
/// token's AWSPENDING is removed): the versions that keep a label then.
pub fn after_promotion(
    labels: &BTreeMap<String, Vec<String>>,
    token: &str,
) -> BTreeMap<String, Vec<String>> {
    let current = labels
        .iter()
        .find(|(_, s)| s.iter().any(|l| l == AWSCURRENT))
        .map(|(v, _)| v.clone());
    let mut after: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (version, stages) in labels {
        let mut kept: Vec<String> = stages
            .iter()
            .filter(|s| {
                let s = s.as_str();
                match s {
                    AWSCURRENT => version == token,
                    // With no AWSCURRENT to move from, AWSPREVIOUS stays where it is.
                    AWSPREVIOUS => current.is_none() || current.as_deref() == Some(token),
                    AWSPENDING => version != token,
                    _ => true,
                }
            })
            .cloned()
            .collect();
        if version == token && !kept.iter().any(|s| s == AWSCURRENT) {
            kept.push(AWSCURRENT.to_owned());
        }
        if current.as_deref() == Some(version.as_str()) && version != token {
            kept.retain(|s| s != AWSPREVIOUS);
            kept.push(AWSPREVIOUS.to_owned());
        }
        if !kept.is_empty() {
            after.insert(version.clone(), kept);
        }
    }
    after
}

#[cfg(test)]
mod tests;
