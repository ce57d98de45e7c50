//! `rollback`: puts the previous key back as current, in the order the docs' roll-back
//! procedure gives: the key clients move back to works before they can read it (re-enabled,
//! on its plans), then AWSCURRENT moves back (AWSPREVIOUS follows), then AWSPENDING is cleared
//! so that the next rotation starts cleanly. The end state is the one the ownership design's
//! roll-back sequence proves safe for the next rotation (`docs/design/ownership.md`). It does
//! not race a rotation (an open one is refused unless forced), it can be run again to finish
//! an interrupted roll-back, and it verifies afterwards that the key clients read works.

use super::inspect::{now_secs, Inspection};
use super::{Operator, Unreadable};
use crate::ports::{
    FunctionReader, KeyGateway, Prober, SecretCatalog, SecretStore, AWSCURRENT, AWSPENDING,
    AWSPREVIOUS,
};
use crate::secret::CurrentValue;

/// One step of a roll-back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackStep {
    /// The key rolled back to leaves the retirement schedule first: a sweep that reads the
    /// schedule again before acting then leaves it alone.
    Unschedule {
        key_id: String,
    },
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
    /// With a grace period, the key rolled back from has just left AWSCURRENT: clients that
    /// read it keep it for their cache's TTL, so it gets its grace as after a rotation.
    ScheduleRetirement {
        key_id: String,
        grace: crate::grace::GracePeriod,
    },
    RemovePending {
        version: String,
    },
}

impl RollbackStep {
    pub fn action(&self) -> &'static str {
        match self {
            RollbackStep::Unschedule { .. } => "unschedule-retirement",
            RollbackStep::EnableKey { .. } => "enable-key",
            RollbackStep::AttachKey { .. } => "attach-key",
            RollbackStep::MoveCurrent { .. } => "move-current",
            RollbackStep::ScheduleRetirement { .. } => "schedule-retirement",
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
    /// The key the roll-back puts back as current.
    pub key_id: Option<String>,
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// The roll-back's plan for the secret, carried out with `apply`. It refuses while a
    /// rotation is open unless `force` (then the roll-back cancels that rotation). Run again
    /// after an interruption, it finishes what is left.
    pub async fn rollback(
        &self,
        seen: &Inspection,
        apply: bool,
        force: bool,
    ) -> Result<RollbackOutcome, Unreadable> {
        let refuse = |why: String| {
            Ok(RollbackOutcome {
                refused: Some(why),
                ..RollbackOutcome::default()
            })
        };
        let meta = &seen.meta;
        let Some(current) = meta.version_with(AWSCURRENT) else {
            return refuse("the secret has no AWSCURRENT version".into());
        };
        let Some(previous) = meta.version_with(AWSPREVIOUS).filter(|v| *v != current) else {
            return refuse("the secret has no AWSPREVIOUS version to roll back to".into());
        };
        if let Some(open) = seen.open_rotation().filter(|_| !force) {
            let age = seen
                .dates
                .get(open)
                .map(|c| format!(", opened {} s ago", now_secs() - c))
                .unwrap_or_default();
            return refuse(format!(
                "a rotation is open on version {open}{age}: a roll-back does not race it (its finishSecret may still retire the key rolled back to). Wait for it to finish and roll back then; if it is abandoned (check reports rotation-unfinished), run again with --force: the roll-back cancels it"
            ));
        }
        // The versions' values as the inspection read them (a version's value never changes).
        let parsed = |version: &str| match seen.values.get(version) {
            Some(v) => v.parsed.clone(),
            None => Ok(CurrentValue::empty()),
        };
        let previous_value = match parsed(previous) {
            Ok(v) => v,
            Err(cause) => {
                return refuse(format!(
                    "the AWSPREVIOUS version's value cannot be read as one this function wrote ({cause}): rolling back to it would leave the secret unrotatable"
                ))
            }
        };
        // Rolled back already (the previous version was rotated from the current one): what
        // is left of an interrupted roll-back is finished, and nothing else is done. Otherwise
        // the current version must have been rotated from the previous one: anything else (a
        // value written by hand, a second roll-back) is not a rotation to undo, and moving
        // AWSCURRENT would only flip the labels back and forth.
        let rolled_back = previous_value.rotated_from == Some(Some(current.to_owned()));
        if !rolled_back {
            let from = parsed(current).ok().and_then(|v| v.rotated_from);
            if from != Some(Some(previous.to_owned())) {
                return refuse(format!(
                    "the AWSCURRENT version {current} was not rotated from the AWSPREVIOUS version {previous} (a value written by hand, or by an earlier release): there is no rotation to undo; move the labels by hand if you must (docs/operations.md, Roll-back)"
                ));
            }
        }
        let target = if rolled_back { current } else { previous };
        let Some(key_id) = seen.survey.key_of(target).map(str::to_owned) else {
            return refuse(format!(
                "the {} version {target} holds no key this function can read",
                if rolled_back {
                    "AWSCURRENT"
                } else {
                    "AWSPREVIOUS"
                }
            ));
        };
        if let Some(other) = seen.survey.foreign.get(&key_id) {
            return refuse(format!(
                "the key {key_id} is tied to another secret ({other}): it is not this secret's to put back"
            ));
        }
        let Some(key) = self.rotator.keys.get_key(&key_id).await? else {
            return refuse(format!(
                "the key {key_id} no longer exists (OldKeyAction=delete deletes it when the rotation finishes): there is nothing to roll back to; rotate again to move forward"
            ));
        };
        let mut steps = Vec::new();
        let schedule = &seen.survey.schedule;
        if schedule.due.contains_key(&key_id) || schedule.unreadable.contains(&key_id) {
            steps.push(RollbackStep::Unschedule {
                key_id: key_id.clone(),
            });
        }
        if !key.enabled {
            steps.push(RollbackStep::EnableKey {
                key_id: key_id.clone(),
            });
        }
        // The plans the version's value names: the key is put back on any it left.
        let plans = seen
            .values
            .get(target)
            .and_then(|v| v.written.as_ref())
            .map(|w| w.usage_plan_ids.clone())
            .unwrap_or_default();
        let on = self.rotator.keys.plans_of_key(&key_id).await?;
        let missing: Vec<&str> = plans
            .iter()
            .filter(|p| !on.contains(p))
            .map(String::as_str)
            .collect();
        let barred: Vec<&str> = match &seen.function {
            Some(function) => missing
                .iter()
                .copied()
                .filter(|p| !function.may_touch_plan(p))
                .collect(),
            None if !missing.is_empty() => {
                return refuse(format!(
                    "the key {key_id} must go back on usage plan(s) {}, and the rotation function's ALLOWED_USAGE_PLAN_IDS is unknown (the operator policy may allow only those plans): pass --allowed-usage-plan-ids as the function has it",
                    missing.join(",")
                ))
            }
            None => Vec::new(),
        };
        if !barred.is_empty() {
            return refuse(format!(
                "the {target} version's key {key_id} belongs on usage plan(s) {}, which the function's ALLOWED_USAGE_PLAN_IDS does not list: the operator policy may not attach it there, and rolled back to without them its clients would be refused. List them in ALLOWED_USAGE_PLAN_IDS, or attach the key by hand first",
                barred.join(",")
            ));
        }
        for plan in plans {
            if !on.contains(&plan) {
                steps.push(RollbackStep::AttachKey {
                    key_id: key_id.clone(),
                    usage_plan_id: plan,
                });
            }
        }
        if !rolled_back {
            steps.push(RollbackStep::MoveCurrent {
                from: current.to_owned(),
                to: previous.to_owned(),
            });
        }
        // With a grace period, the key rolled back from has just left AWSCURRENT. Planned
        // again by a run that finds the secret rolled back already, when the interrupted one
        // did not get to it: that key is then AWSPREVIOUS's, still working and unscheduled.
        let grace = seen
            .settings
            .as_ref()
            .filter(|s| s.old_key_action != crate::config::OldKeyAction::KeepPrevious)
            .and_then(|s| s.grace);
        let from_version = if rolled_back { previous } else { current };
        let from_key = seen
            .survey
            .key_of(from_version)
            .filter(|k| *k != key_id)
            .filter(|k| seen.survey.owned.get(*k).is_some_and(|o| o.key.enabled));
        if let (Some(grace), Some(from_key)) = (grace, from_key) {
            let scheduled =
                schedule.due.contains_key(from_key) || schedule.unreadable.contains(from_key);
            if !(rolled_back && scheduled) {
                steps.push(RollbackStep::ScheduleRetirement {
                    key_id: from_key.to_owned(),
                    grace,
                });
            }
        }
        for (version, stages) in &meta.versions {
            if stages.iter().any(|s| s == AWSPENDING) {
                steps.push(RollbackStep::RemovePending {
                    version: version.clone(),
                });
            }
        }
        if rolled_back && steps.is_empty() {
            return refuse(format!(
                "the AWSPREVIOUS version {previous} was rotated from the AWSCURRENT version {current}: the secret was rolled back already and nothing of it is left to do; rolling back again would promote the version rolled back from, so rotate instead"
            ));
        }
        let secrets = &self.rotator.secrets;
        let mut out = RollbackOutcome {
            steps,
            key_id: Some(key_id),
            ..RollbackOutcome::default()
        };
        if !apply {
            return Ok(out);
        }
        let mut survey = seen.survey.clone();
        for step in &out.steps {
            let result = match step {
                RollbackStep::Unschedule { key_id } => {
                    secrets
                        .untag_secret(&meta.arn, &crate::grace::schedule_tag_key(key_id))
                        .await
                }
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
                RollbackStep::ScheduleRetirement { key_id, grace } => {
                    // Tied first (an adopted key): the sweep retires only keys it can prove
                    // the secret's once no version holds them.
                    match survey.tie_if_untied(&self.rotator.keys, key_id).await {
                        Err(e) => Err(e),
                        Ok(()) => {
                            let due = crate::grace::now_secs() + grace.seconds() + 1;
                            let (k, v) = crate::grace::schedule_tag(key_id, due);
                            secrets.tag_secret(&meta.arn, &k, &v).await
                        }
                    }
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
        // The key clients now read must still work: a rotation that ran at the same time may
        // have retired it.
        if out.failed.is_none() {
            if let Some(id) = &out.key_id {
                match self.rotator.keys.get_key(id).await {
                    Ok(Some(k)) if k.enabled => {}
                    Ok(found) => {
                        out.failed = Some(format!(
                            "verify failed: after the roll-back the key {id} that AWSCURRENT names is {} (a rotation that ran at the same time retired it?); rotate now (aws secretsmanager rotate-secret --secret-id {}) so that clients get a key that works",
                            if found.is_some() { "disabled" } else { "gone" },
                            meta.name
                        ));
                    }
                    Err(e) => out.failed = Some(format!("verify failed: {e}")),
                }
            }
        }
        Ok(out)
    }
}
