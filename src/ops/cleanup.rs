//! `cleanup`: retires the keys a secret owns that no version needs, and a previous key alive
//! against the policy, through the code finishSecret uses. Which keys those are is the ownership
//! survey's to say: no key any labelled version's raw value names, parsed or not, is touched. It
//! never races a rotation: it refuses a secret whose rotation is open or that has error
//! findings, and re-reads the secret before each change.

use super::inspect::Inspection;
use super::roles::Role;
use super::{Operator, Unreadable};
use crate::config::{FunctionConfig, OldKeyAction};
use crate::finding::Code;
use crate::ports::{FunctionReader, KeyGateway, Prober, SecretCatalog, SecretStore};

pub use super::deleted::{DeletedSecretKeys, KeyError};

/// Why a key is an orphan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanReason {
    /// The secret owns it and no version needs it (an abandoned rotation, a duplicate).
    NoVersionNeedsIt,
    /// The previous key, alive against the secret's OldKeyAction: retired by that policy.
    PreviousKeyNotRetired,
    /// Its grace period has ended and the sweep has not retired it yet: retired by the part it
    /// plays, as the sweep would.
    GraceEnded,
    /// Its tie names a secret that no longer exists.
    SecretDeleted,
    /// Its tie names a secret scheduled for deletion: reported, never retired (the secret may
    /// be restored).
    SecretScheduledForDeletion,
}

impl OrphanReason {
    pub fn as_str(self) -> &'static str {
        match self {
            OrphanReason::NoVersionNeedsIt => "no-version-needs-it",
            OrphanReason::PreviousKeyNotRetired => "previous-key-not-retired",
            OrphanReason::GraceEnded => "grace-ended",
            OrphanReason::SecretDeleted => "secret-deleted",
            OrphanReason::SecretScheduledForDeletion => "secret-scheduled-for-deletion",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orphan {
    pub id: String,
    pub name: String,
    pub reason: OrphanReason,
}

/// What `cleanup` found and did for one secret (or one deleted secret's keys).
#[derive(Debug, Clone, Default)]
pub struct CleanupOutcome {
    pub orphans: Vec<Orphan>,
    pub retired: Vec<String>,
    /// Key id (or the secret, when the whole cleanup was refused) → why.
    pub failed: Vec<(String, String)>,
    /// Why nothing was retired, when the cleanup was refused.
    pub refused: Option<String>,
}

/// The findings cleanup itself resolves; any other error finding stops it.
const RESOLVES: [Code; 3] = [
    Code::OrphanKeys,
    Code::PreviousKeyNotRetired,
    Code::KeyPastGrace,
];

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// The secret's orphans, retired with `apply`.
    pub async fn cleanup(&self, seen: &Inspection, apply: bool) -> CleanupOutcome {
        let mut orphans: Vec<Orphan> = seen
            .keys
            .iter()
            .filter(|k| k.role == Role::Orphan)
            .map(|k| Orphan {
                id: k.id.clone(),
                name: k.name.clone(),
                reason: OrphanReason::NoVersionNeedsIt,
            })
            .collect();
        if seen
            .findings
            .iter()
            .any(|f| f.code == Code::PreviousKeyNotRetired)
        {
            orphans.extend(seen.key_of(Role::Previous).map(|k| Orphan {
                id: k.id.clone(),
                name: k.name.clone(),
                reason: OrphanReason::PreviousKeyNotRetired,
            }));
        }
        // Keys whose grace has ended that the sweep has not retired yet, and that a version does
        // not need now (the previous key: by the policy; a key no version holds is an orphan
        // already).
        let policy = seen.settings.as_ref().map(|s| s.old_key_action);
        for (id, _) in seen.survey.schedule.due_by(seen.survey.now) {
            let retires = match (seen.survey.retirement(&id), policy) {
                (crate::ownership::Retirement::Previous, Some(OldKeyAction::Delete)) => true,
                (crate::ownership::Retirement::Previous, Some(OldKeyAction::Disable)) => {
                    seen.survey.owned.get(&id).is_some_and(|o| o.key.enabled)
                }
                _ => false,
            };
            if retires && !orphans.iter().any(|o| o.id == id) {
                let name = seen.survey.owned.get(&id).map(|o| o.key.name.clone());
                orphans.push(Orphan {
                    id,
                    name: name.unwrap_or_default(),
                    reason: OrphanReason::GraceEnded,
                });
            }
        }
        let mut out = CleanupOutcome {
            orphans,
            ..CleanupOutcome::default()
        };
        if let Some(version) = seen.open_rotation() {
            out.refused = Some(format!(
                "a rotation is open on version {version}: cleanup does not race it; run it again once the rotation has finished or been cancelled"
            ));
            return out;
        }
        let errors = seen.error_codes_except(&RESOLVES);
        if !errors.is_empty() {
            out.refused = Some(format!(
                "the secret has error findings ({}): cleanup acts only on a secret whose every version and setting it can read; fix them first (api-key-rotator check {})",
                errors.join(", "),
                seen.meta.name
            ));
            return out;
        }
        if !apply {
            return out;
        }
        let mut survey = seen.survey.clone();
        // The tags the secret should have: the ones read, less the schedule entries removed.
        let mut tags = seen.meta.tags.clone();
        for orphan in &out.orphans {
            // The secret is read again before each change: a rotation that started since, or
            // any label that moved, stops the cleanup.
            match self.rotator.secrets.describe(&seen.meta.arn).await {
                Ok(Some(now)) if now.versions == seen.meta.versions && now.tags == tags => {}
                Ok(_) => {
                    out.refused = Some(
                        "the secret's versions or tags changed during the cleanup (a rotation started?); the remaining keys were left alone: run cleanup again".to_owned(),
                    );
                    return out;
                }
                Err(e) => {
                    out.failed.push((orphan.id.clone(), e.to_string()));
                    return out;
                }
            }
            let result = match orphan.reason {
                OrphanReason::PreviousKeyNotRetired => match &seen.settings {
                    Some(settings) => {
                        match survey.tie_if_untied(&self.rotator.keys, &orphan.id).await {
                            Ok(()) => {
                                self.rotator
                                    .retire_previous(
                                        settings.old_key_action,
                                        &orphan.id,
                                        &survey,
                                        seen.function.as_ref(),
                                    )
                                    .await
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                    None => continue,
                },
                OrphanReason::GraceEnded => match policy {
                    Some(action) => self
                        .rotator
                        .retire_now(&survey, &orphan.id, action, seen.function.as_ref())
                        .await
                        .map(|_| ()),
                    None => continue,
                },
                _ => {
                    self.rotator
                        .delete_key(
                            &orphan.id,
                            "cleanup: no version of the secret needs it",
                            seen.function.as_ref(),
                        )
                        .await
                }
            };
            // A retired key's schedule entry goes with it.
            let result = match result {
                Ok(()) if seen.survey.schedule.due.contains_key(&orphan.id) => self
                    .rotator
                    .secrets
                    .untag_secret(&seen.meta.arn, &crate::grace::schedule_tag_key(&orphan.id))
                    .await
                    .map_err(crate::error::Failure::from),
                other => other,
            };
            match result {
                Ok(()) => {
                    let entry = crate::grace::schedule_tag_key(&orphan.id);
                    tags.retain(|(k, _)| *k != entry);
                    out.retired.push(orphan.id.clone());
                }
                Err(e) => out.failed.push((orphan.id.clone(), e.cause)),
            }
        }
        out
    }

    /// The keys of a deleted secret, retired with `apply` once the secret is read again and
    /// still does not exist. Keys of a secret scheduled for deletion are never retired, nor the
    /// keys in `deleted.errors`. When the secret cannot be read again, the keys left are failed
    /// with the cause.
    /// `scope` is the rotation function's configuration (the plans the operator may detach keys
    /// from), when the command knows it; `None`: no plan is detached, DeleteApiKey takes the key
    /// off them.
    pub async fn cleanup_deleted(
        &self,
        deleted: &DeletedSecretKeys,
        apply: bool,
        scope: Option<&FunctionConfig>,
    ) -> CleanupOutcome {
        let reason = if deleted.scheduled_for_deletion {
            OrphanReason::SecretScheduledForDeletion
        } else {
            OrphanReason::SecretDeleted
        };
        let mut out = CleanupOutcome {
            orphans: deleted
                .keys
                .iter()
                .map(|k| Orphan {
                    id: k.id.clone(),
                    name: k.name.clone(),
                    reason,
                })
                .collect(),
            ..CleanupOutcome::default()
        };
        if !apply || deleted.scheduled_for_deletion {
            return out;
        }
        for (i, orphan) in deleted.keys.iter().enumerate() {
            match self.rotator.secrets.describe(&deleted.secret).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    out.refused = Some(format!(
                        "the secret {} exists again; its keys were left alone",
                        deleted.secret
                    ));
                    return out;
                }
                Err(e) => {
                    let why = format!(
                        "the secret could not be read again before retiring the key ({}); left alone",
                        Unreadable::from(e).0
                    );
                    out.failed.extend(
                        deleted
                            .keys
                            .iter()
                            .skip(i)
                            .map(|k| (k.id.clone(), why.clone())),
                    );
                    return out;
                }
            }
            // A secret recreated or restored under the name since the section was read (a new
            // ARN) may hold the key again: read it again next to the dead ARN.
            match self.held_by_namesake(&deleted.secret).await {
                Ok(held) if held.contains(&orphan.id) => {
                    out.failed.push((
                        orphan.id.clone(),
                        format!(
                            "a live secret named {} holds it now; left alone",
                            super::deleted::arn_secret_name(&deleted.secret)
                        ),
                    ));
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    out.failed.push((
                        orphan.id.clone(),
                        format!(
                            "the live secret of the same name could not be read ({}); left alone",
                            e.0
                        ),
                    ));
                    continue;
                }
            }
            match self
                .rotator
                .delete_key(&orphan.id, "cleanup: its secret no longer exists", scope)
                .await
            {
                Ok(()) => out.retired.push(orphan.id.clone()),
                Err(e) => out.failed.push((orphan.id.clone(), e.cause)),
            }
        }
        out
    }
}
