//! Keys tied to a secret that no longer exists (`status --all`, `cleanup --all`). A key that a
//! live secret's labelled version holds is never one of them, whatever its tie says: a secret
//! restored from a backup under the same name has a new ARN and still names its keys.
//!
//! What cannot be read is reported per key and the rest goes on: a key whose secret (or that
//! secret's live namesake, or its plans) could not be read is listed with the cause and never
//! retired; the other deleted secrets' keys are reported and retired as usual.

use std::collections::{BTreeMap, BTreeSet};

use super::roles::Role;
use super::{KeyView, Operator, Shared, Unreadable};
use crate::config::TIE_TAG;
use crate::ownership::{held_ids, read_claims, Values};
use crate::ports::{ApiKey, FunctionReader, KeyGateway, Prober, SecretCatalog, SecretStore};

/// Keys tied to a secret that no longer exists.
#[derive(Debug, Clone)]
pub struct DeletedSecretKeys {
    /// The secret's ARN, as the tie tag names it.
    pub secret: String,
    /// The secret is scheduled for deletion and may still be restored: its keys are reported,
    /// never retired.
    pub scheduled_for_deletion: bool,
    pub keys: Vec<KeyView>,
    /// Keys tied to the secret that could not be told to be orphans, each with the cause:
    /// reported, never retired.
    pub errors: Vec<KeyError>,
}

/// A key tied to a deleted secret that could not be judged, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    pub id: String,
    pub name: String,
    pub error: String,
}

impl DeletedSecretKeys {
    /// The same, without the keys in `held` (held by a live secret's labelled version).
    pub fn without(&self, held: &BTreeSet<String>) -> DeletedSecretKeys {
        DeletedSecretKeys {
            keys: self
                .keys
                .iter()
                .filter(|k| !held.contains(&k.id))
                .cloned()
                .collect(),
            errors: self
                .errors
                .iter()
                .filter(|k| !held.contains(&k.id))
                .cloned()
                .collect(),
            ..self.clone()
        }
    }
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// Keys tied to a secret that no longer exists, from the shared listing, leaving out the
    /// secrets in `live`, any secret of another region, with `prefix` any secret whose name
    /// does not start with it, and every key in `held` (held by a live secret the caller read).
    /// Each such secret is described once, and so is a live secret of the same name, whose
    /// labelled versions are read: a key one of them holds is not an orphan. A read that fails
    /// puts the keys it was for into `errors`, and the others go on.
    pub async fn deleted_secret_keys(
        &self,
        shared: &Shared,
        live: &BTreeSet<String>,
        held: &BTreeSet<String>,
        prefix: Option<&str>,
    ) -> Vec<DeletedSecretKeys> {
        let mut by_tie: BTreeMap<String, Vec<&ApiKey>> = BTreeMap::new();
        for key in &shared.listing {
            if let Some(tie) = key.tags.get(TIE_TAG) {
                let in_scope = prefix.is_none_or(|p| arn_secret_name(tie).starts_with(p));
                if in_scope
                    && !live.contains(tie)
                    && !held.contains(&key.id)
                    && arn_region(tie) == Some(self.region.as_str())
                {
                    by_tie.entry(tie.clone()).or_default().push(key);
                }
            }
        }
        let mut out = Vec::new();
        for (tie, keys) in by_tie {
            let all_failed = |why: String| DeletedSecretKeys {
                secret: tie.clone(),
                scheduled_for_deletion: false,
                keys: Vec::new(),
                errors: keys
                    .iter()
                    .map(|k| KeyError {
                        id: k.id.clone(),
                        name: k.name.clone(),
                        error: why.clone(),
                    })
                    .collect(),
            };
            let scheduled_for_deletion = match self.rotator.secrets.describe(&tie).await {
                Ok(None) => false,
                Ok(Some(meta)) if meta.deleted.is_some() => true,
                // A live secret without a KeyName tag: its keys are not orphans.
                Ok(Some(_)) => continue,
                Err(e) => {
                    out.push(all_failed(format!(
                        "the secret its tie names could not be read ({e}): whether it still exists is unknown"
                    )));
                    continue;
                }
            };
            let held_by_namesake = match self.held_by_namesake(&tie).await {
                Ok(held) => held,
                Err(e) => {
                    out.push(all_failed(format!(
                        "the live secret named {} could not be read ({}): a key it holds is no orphan",
                        arn_secret_name(&tie),
                        e.0
                    )));
                    continue;
                }
            };
            let mut views = Vec::new();
            let mut errors = Vec::new();
            for key in keys {
                if held_by_namesake.contains(&key.id) {
                    tracing::warn!(key_id = %key.id, dead_secret = %tie, "a live secret of the same name holds this key: it is not an orphan");
                    continue;
                }
                match self.plans_of(&key.id, Some(shared)).await {
                    Ok(usage_plan_ids) => views.push(KeyView {
                        id: key.id.clone(),
                        name: key.name.clone(),
                        enabled: key.enabled,
                        usage_plan_ids,
                        created: key.created,
                        tie: Some(tie.clone()),
                        role: Role::Orphan,
                        retire_at: None,
                    }),
                    Err(e) => errors.push(KeyError {
                        id: key.id.clone(),
                        name: key.name.clone(),
                        error: format!("its usage plans could not be read ({e})"),
                    }),
                }
            }
            if views.is_empty() && errors.is_empty() {
                continue;
            }
            out.push(DeletedSecretKeys {
                secret: tie,
                scheduled_for_deletion,
                keys: views,
                errors,
            });
        }
        out
    }

    /// Every key id the labelled versions of the secrets carrying `tag_key` may hold, leaving
    /// out the secrets in `done` (read already). Fails when any of them cannot be read.
    pub async fn held_by_tagged_secrets(
        &self,
        tag_key: &str,
        done: &BTreeSet<String>,
    ) -> Result<BTreeSet<String>, Unreadable> {
        let secrets = &self.rotator.secrets;
        let mut held = BTreeSet::new();
        for arn in secrets.list_secrets(tag_key, None).await? {
            if done.contains(&arn) {
                continue;
            }
            let meta = secrets
                .describe(&arn)
                .await?
                .ok_or_else(|| Unreadable(format!("{arn} vanished while being read")))?;
            held.extend(held_ids(&read_claims(secrets, &meta, Values::new()).await?));
        }
        Ok(held)
    }

    /// The keys held by the labelled versions of a live secret with the name of the deleted
    /// secret `arn` (restored from a backup, or recreated): empty when there is none.
    pub(crate) async fn held_by_namesake(&self, arn: &str) -> Result<BTreeSet<String>, Unreadable> {
        let secrets = &self.rotator.secrets;
        match secrets.describe(arn_secret_name(arn)).await? {
            Some(meta) if meta.arn != arn && meta.deleted.is_none() => {
                let claims = read_claims(secrets, &meta, Values::new()).await?;
                Ok(held_ids(&claims))
            }
            _ => Ok(BTreeSet::new()),
        }
    }
}

/// The region of an ARN (`arn:partition:service:region:account:...`).
fn arn_region(arn: &str) -> Option<&str> {
    let mut parts = arn.split(':');
    (parts.next() == Some("arn")).then_some(())?;
    parts.nth(2).filter(|r| !r.is_empty())
}

/// The secret name in a secret's ARN (`...:secret:NAME-abcdef`; Secrets Manager appends a dash
/// and six characters).
pub(crate) fn arn_secret_name(arn: &str) -> &str {
    let name = arn.split_once(":secret:").map_or(arn, |(_, n)| n);
    match name.rsplit_once('-') {
        Some((base, suffix)) if suffix.len() == 6 => base,
        _ => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_in_arns() {
        assert_eq!(
            arn_secret_name("arn:aws:secretsmanager:eu-west-1:123:secret:team/partner-a-AbCdEf"),
            "team/partner-a"
        );
        assert_eq!(arn_secret_name("plain"), "plain");
    }

    #[test]
    fn arn_regions() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123:secret:s-AbC"),
            Some("eu-west-1")
        );
        assert_eq!(arn_region("s-AbC"), None);
        assert_eq!(arn_region("arn:aws:secretsmanager::123:secret:s"), None);
    }
}
