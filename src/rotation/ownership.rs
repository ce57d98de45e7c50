//! Which API keys a secret owns, and the evidence for each (`docs/design/ownership.md`).
//!
//! A key is the secret's when it carries the tie tag naming the secret (set inside CreateApiKey
//! for every key the function makes, so every reader sees it; added with TagResource to adopted
//! keys, and then read back with GetTags, since GetApiKey does not show it on every emulator), or
//! when it is the `api_key_id` of one of the secret's labelled versions (a key being adopted). The record in the values the function writes
//! (`owned_key_ids`) and the name prefixes only say where to look. A key tied to another secret
//! is never the secret's, whatever any record says.

use std::collections::{BTreeMap, BTreeSet};

use super::Rotator;
use crate::config::TIE_TAG;
use crate::error::StepResult;
use crate::ports::{ApiKey, KeyGateway, Prober, SecretStore, VersionRef};
use crate::secret::{is_key_id, CurrentValue};

/// Where to look for a secret's keys.
#[derive(Debug, Default)]
pub(crate) struct Search {
    /// Name prefixes to list (`<KeyName>-`, from the tags and from the versions' key names).
    pub prefixes: BTreeSet<String>,
    /// List every key in the account instead of the prefixes: no complete record exists.
    pub everything: bool,
    /// Key ids to look up when no listing shows them: the record's entries and the versions' keys.
    pub ids: BTreeSet<String>,
    /// The `api_key_id`s of the secret's labelled versions known so far.
    pub labelled: BTreeSet<String>,
}

/// What a search found.
#[derive(Debug, Default)]
pub(crate) struct Holdings {
    /// The secret's keys, by id (values only where a lookup fetched them).
    pub owned: BTreeMap<String, ApiKey>,
    /// Keys found but not proven: no visible tie, and not the key of a labelled version known
    /// so far. `prove` may promote them once more versions have been read.
    pub unproven: BTreeMap<String, ApiKey>,
    /// Keys tied to another secret that a record or a version named: never touched.
    pub foreign: BTreeMap<String, String>,
    /// The prefixes listed, so a later look-up can tell whether a name was in view.
    pub listed: BTreeSet<String>,
    pub listed_everything: bool,
    /// Owned keys whose tie only GetTags showed (added after creation).
    pub tied_later: BTreeSet<String>,
}

impl Holdings {
    /// Promotes the unproven keys that `labelled` vouches for.
    pub fn prove(&mut self, labelled: &BTreeSet<String>) {
        let proven: Vec<String> = self
            .unproven
            .keys()
            .filter(|id| labelled.contains(*id))
            .cloned()
            .collect();
        for id in proven {
            if let Some(key) = self.unproven.remove(&id) {
                self.owned.insert(id, key);
            }
        }
    }

    /// Adds what another search found.
    pub fn merge(&mut self, other: Holdings) {
        self.owned.extend(other.owned);
        self.unproven.extend(other.unproven);
        self.foreign.extend(other.foreign);
        self.listed.extend(other.listed);
        self.tied_later.extend(other.tied_later);
        self.listed_everything |= other.listed_everything;
    }

    /// Whether a listing showed every key named `name`.
    pub fn in_view(&self, name: &str) -> bool {
        self.listed_everything || self.listed.iter().any(|p| name.starts_with(p.as_str()))
    }

    /// The owned, tied key named `name`, when exactly one is.
    pub fn tied_named(&self, arn: &str, name: &str) -> Option<&ApiKey> {
        let mut named = self
            .owned
            .values()
            .filter(|k| k.name == name && tie(k) == Some(arn));
        match (named.next(), named.next()) {
            (Some(key), None) => Some(key),
            _ => None,
        }
    }
}

/// The secret a key is tied to, as far as this read of the key shows (a listing or GetApiKey;
/// a tie found only by GetTags is not in `tags`).
pub(crate) fn tie(key: &ApiKey) -> Option<&str> {
    key.tags.get(TIE_TAG).map(String::as_str)
}

/// The prefix a key made by this function for `version` was named under: its name is
/// `<KeyName>-<version id>`. `None` for a key named otherwise (adopted or migrated).
pub(crate) fn prefix_of(key_name: &str, version: &str) -> Option<String> {
    key_name
        .strip_suffix(version)
        .filter(|p| p.len() > 1 && p.ends_with('-'))
        .map(str::to_owned)
}

/// Whether the key was made by this function for `version`, whatever `KeyName` was then.
pub(crate) fn named_for(key: &ApiKey, version: &str) -> bool {
    prefix_of(&key.name, version).is_some()
}

impl<S: SecretStore, K: KeyGateway, P: Prober> Rotator<S, K, P> {
    /// Finds the secret's keys: one listing per prefix (or of every key), then a look-up of each
    /// id that no listing showed. Classifies each key by its evidence.
    pub(crate) async fn find_owned(&self, arn: &str, search: &Search) -> StepResult<Holdings> {
        self.find_owned_in(arn, search, None).await
    }

    /// The same, over `listing` (every key in the account, read once and shared by the
    /// operator commands across secrets) when one is given: every key tied to the secret in it
    /// is found too, whatever its name.
    pub(crate) async fn find_owned_in(
        &self,
        arn: &str,
        search: &Search,
        listing: Option<&[ApiKey]>,
    ) -> StepResult<Holdings> {
        let everything = search.everything || listing.is_some();
        let mut holdings = Holdings {
            listed_everything: everything,
            ..Holdings::default()
        };
        let mut seen: BTreeMap<String, ApiKey> = BTreeMap::new();
        if let Some(listing) = listing {
            for key in listing {
                let named = search
                    .prefixes
                    .iter()
                    .any(|p| key.name.starts_with(p.as_str()));
                if named || tie(key) == Some(arn) || search.ids.contains(&key.id) {
                    seen.insert(key.id.clone(), key.clone());
                }
            }
        } else if search.everything {
            for key in self.keys.list_all_keys().await? {
                seen.insert(key.id.clone(), key);
            }
        } else {
            for prefix in &search.prefixes {
                for key in self.keys.find_keys_with_prefix(prefix).await? {
                    seen.insert(key.id.clone(), key);
                }
                holdings.listed.insert(prefix.clone());
            }
        }
        for id in &search.ids {
            // A listing of every key showed every key that exists.
            if everything || seen.contains_key(id) || !is_key_id(id) {
                continue;
            }
            if let Some(key) = self.keys.get_key(id).await? {
                seen.insert(id.clone(), key);
            }
        }
        for (id, key) in seen {
            // A key a version or the record names, whose tie this read does not show: GetTags
            // shows tags added after creation (adopted keys), where GetApiKey may not. The key
            // keeps the tags as read, so the record can tell what a listing would prove.
            let mut tied_to = tie(&key).map(str::to_owned);
            if tied_to.is_none() && search.ids.contains(&id) {
                tied_to = self.keys.key_tags(&id).await?.remove(TIE_TAG);
                if tied_to.as_deref() == Some(arn) {
                    holdings.tied_later.insert(id.clone());
                }
            }
            match tied_to {
                Some(t) if t == arn => {
                    holdings.owned.insert(id, key);
                }
                Some(other) if search.ids.contains(&id) => {
                    tracing::warn!(key_id = %id, other_secret = %other, "a version or record names a key tied to another secret; it is left alone");
                    holdings.foreign.insert(id, other);
                }
                Some(_) => {}
                None if search.labelled.contains(&id) => {
                    holdings.owned.insert(id, key);
                }
                None if search.ids.contains(&id) => {
                    holdings.unproven.insert(id, key);
                }
                None => {}
            }
        }
        Ok(holdings)
    }

    /// The key id and key name a version's value holds, whatever its form (a full value, an
    /// adopted `{"api_key_id"}`); `None` when it holds none or cannot be read as one.
    pub(crate) async fn version_key(
        &self,
        secret_id: &str,
        version: &str,
    ) -> StepResult<Option<(String, Option<String>)>> {
        let raw = self
            .secrets
            .get_value(secret_id, VersionRef::Id(version, None))
            .await?;
        match CurrentValue::parse(raw.as_ref().map(|t| t.0.as_str())) {
            Ok(v) => Ok(v.key_id.map(|id| (id, v.key_name))),
            Err(e) => {
                tracing::warn!(error = %e, version_id = version, "a version's value names no key");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_come_only_from_names_made_for_the_version() {
        let v = "22222222-2222-2222-2222-222222222222";
        assert_eq!(
            prefix_of(&format!("partner-a-{v}"), v).as_deref(),
            Some("partner-a-")
        );
        assert_eq!(prefix_of("partner-a", v), None);
        assert_eq!(prefix_of(v, v), None);
        assert_eq!(prefix_of(&format!("-{v}"), v), None);
        assert_eq!(prefix_of(&format!("partner-a{v}"), v), None);
    }
}
