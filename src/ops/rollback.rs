//! `rollback`: puts the previous key back as current, in the order the docs' roll-back
//! procedure gives: the key clients move back to works before they can read it (re-enabled,
//! on its plans), then AWSCURRENT moves back (AWSPREVIOUS follows), then AWSPENDING is cleared
//! so that the next rotation starts cleanly. The end state is the one the ownership design's
//! roll-back sequence proves safe for the next rotation (`docs/design/ownership.md`).

use super::inspect::{now_secs, Inspection};
use super::{Operator, Unreadable};
use crate::config::TIE_TAG;
use crate::ports::{
    FunctionReader, KeyGateway, Prober, SecretCatalog, SecretStore, VersionRef, AWSCURRENT,
    AWSPENDING, AWSPREVIOUS,
};
use crate::secret::{CurrentValue, SecretValue};

/// One step of a roll-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackStep {
    EnableKey {
        key_id: String,
    },
    AttachKey {
        key_id: String,
        usage_plan_id: String,
    },
    MoveCurrent {
        from: String,
        to: String,
    },
    RemovePending {
        version: String,
    },
}

impl RollbackStep {
    pub fn action(&self) -> &'static str {
        match self {
            RollbackStep::EnableKey { .. } => "enable-key",
            RollbackStep::AttachKey { .. } => "attach-key",
            RollbackStep::MoveCurrent { .. } => "move-current",
            RollbackStep::RemovePending { .. } => "remove-pending",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct RollbackOutcome {
    pub steps: Vec<RollbackStep>,
    /// How many of `steps` were done.
    pub done: usize,
    /// Why the roll-back was refused (nothing changed).
    pub refused: Option<String>,
    /// The step that failed, and why (the steps before it were done).
    pub failed: Option<String>,
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// The roll-back's plan for the secret, carried out with `apply`.
    pub async fn rollback(
        &self,
        seen: &Inspection,
        apply: bool,
    ) -> Result<RollbackOutcome, Unreadable> {
        let refuse = |why: String| {
            Ok(RollbackOutcome {
                refused: Some(why),
                ..RollbackOutcome::default()
            })
        };
        let meta = &seen.meta;
        let (Some(current), Some(previous)) = (
            meta.version_with(AWSCURRENT),
            meta.version_with(AWSPREVIOUS)
                .filter(|v| Some(*v) != meta.version_with(AWSCURRENT)),
        ) else {
            return refuse("the secret has no AWSPREVIOUS version to roll back to".into());
        };
        if let Some(open) = seen.open_rotation() {
            let age = seen
                .versions
                .iter()
                .find(|v| v.id == open)
                .and_then(|v| v.created)
                .map(|c| now_secs() - c);
            let timeout = seen.function_timeout.as_secs() as i64;
            if age.is_none_or(|a| a <= timeout) {
                return refuse(format!(
                    "a rotation is open on version {open} and may still be running; wait for it to finish (at most {timeout} s), then roll back"
                ));
            }
        }
        let secrets = &self.rotator.secrets;
        let raw = secrets
            .get_value(&meta.arn, VersionRef::Id(previous, None))
            .await?;
        let raw = raw.as_ref().map(|t| t.0.as_str());
        let previous_value = match CurrentValue::parse(raw) {
            Ok(v) => v,
            Err(e) => {
                return refuse(format!(
                "the AWSPREVIOUS version's value cannot be read as one this function wrote ({})",
                e.cause
            ))
            }
        };
        let Some(key_id) = previous_value.key_id.clone() else {
            return refuse("the AWSPREVIOUS version holds no key".into());
        };
        // Rolling back twice would promote again the version rolled back from.
        if previous_value.rotated_from == Some(Some(current.to_owned())) {
            return refuse(format!(
                "the AWSPREVIOUS version {previous} was rotated from the AWSCURRENT version {current}: the secret was rolled back already, and rolling back again would promote the version rolled back from; rotate instead"
            ));
        }
        let Some(key) = self.rotator.keys.get_key(&key_id).await? else {
            return refuse(format!(
                "the previous key {key_id} no longer exists (OldKeyAction=delete deletes it when the rotation finishes): there is nothing to roll back to; rotate again to move forward"
            ));
        };
        if let Some(other) = key.tags.get(TIE_TAG).filter(|t| **t != meta.arn) {
            return refuse(format!(
                "the previous key {key_id} is tied to another secret ({other}): it is not this secret's to put back"
            ));
        }
        let mut steps = Vec::new();
        if !key.enabled {
            steps.push(RollbackStep::EnableKey {
                key_id: key_id.clone(),
            });
        }
        // The plans the previous version's value names: the key is put back on any it left.
        let plans = raw
            .and_then(|r| SecretValue::parse(r, AWSPREVIOUS).ok())
            .map(|w| w.usage_plan_ids)
            .unwrap_or_default();
        let on = self.rotator.keys.plans_of_key(&key_id).await?;
        for plan in plans {
            if !on.contains(&plan) {
                steps.push(RollbackStep::AttachKey {
                    key_id: key_id.clone(),
                    usage_plan_id: plan,
                });
            }
        }
        steps.push(RollbackStep::MoveCurrent {
            from: current.to_owned(),
            to: previous.to_owned(),
        });
        for (version, stages) in &meta.versions {
            if stages.iter().any(|s| s == AWSPENDING) {
                steps.push(RollbackStep::RemovePending {
                    version: version.clone(),
                });
            }
        }
        let mut out = RollbackOutcome {
            steps,
            ..RollbackOutcome::default()
        };
        if !apply {
            return Ok(out);
        }
        for step in &out.steps {
            let result = match step {
                RollbackStep::EnableKey { key_id } => {
                    self.rotator.keys.set_key_enabled(key_id, true).await
                }
                RollbackStep::AttachKey {
                    key_id,
                    usage_plan_id,
                } => self.rotator.keys.attach(usage_plan_id, key_id).await,
                RollbackStep::MoveCurrent { from, to } => {
                    secrets
                        .move_stage(&meta.arn, AWSCURRENT, Some(to), Some(from))
                        .await
                }
                RollbackStep::RemovePending { version } => {
                    secrets
                        .move_stage(&meta.arn, AWSPENDING, None, Some(version))
                        .await
                }
            };
            match result {
                Ok(()) => {
                    out.done += 1;
                    tracing::info!(action = step.action(), "roll-back step done");
                }
                Err(e) => {
                    out.failed = Some(format!("{} failed: {e}", step.action()));
                    break;
                }
            }
        }
        Ok(out)
    }
}
