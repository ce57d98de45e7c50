//! `revoke`: for a key that has leaked. A rotation now (RotateSecret, its version id
//! `revoke-<32 hex digits>`), waited for until it completes; then every other key the secret
//! owns is retired at once, whatever its grace period: deleted under `OldKeyAction=delete`,
//! disabled under `disable` and `keep-previous` (revoking must make the key stop working;
//! disabled keeps it recoverable), and deleted when no version holds it. A key a version still
//! needs (a custom label, an open rotation) is left as it is and reported.
//!
//! It refuses while another rotation is open. Interrupted, it is run again: an open rotation of
//! its own (`revoke-…`) is waited for, and a completed one whose old keys still work is finished
//! without rotating again.

use std::time::{Duration, Instant};

use super::inspect::Inspection;
use super::{Operator, Unreadable};
use crate::config::OldKeyAction;
use crate::finding::Code;
use crate::grace::schedule_tag_key;
use crate::ownership::{named_for, Retirement, Survey, Values};
use crate::ports::{
    FunctionReader, KeyGateway, Prober, SecretCatalog, SecretMetadata, SecretStore, AWSCURRENT,
    AWSPENDING,
};
use crate::rotation::Outcome;

pub use crate::grace::REVOKE_TOKEN_PREFIX;
/// The error findings revoke goes ahead with: what it retires, and an open rotation (its own is
/// waited for; any other is refused below).
const RESOLVES: [Code; 5] = [
    Code::PreviousKeyNotRetired,
    Code::KeyPastGrace,
    Code::RetirementScheduleUnreadable,
    Code::RotationInProgress,
    Code::RotationUnfinished,
];
/// How long the rotation's version may stay unseen after RotateSecret before the revoke takes
/// it for gone.
const LAG: Duration = Duration::from_secs(10);
/// How often the rotation's progress is read while waiting.
const POLL: Duration = Duration::from_secs(1);

/// How the revoke's rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevokeRotation {
    /// Without --apply: a rotation would start.
    WouldStart,
    /// This run started it.
    Started(String),
    /// An earlier, interrupted revoke started it; this run waited for it.
    Resumed(String),
    /// An earlier revoke's rotation completed; this run finishes its retirements.
    Finished(String),
}

/// A key the revoke retires (or would).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokedKey {
    pub id: String,
    pub name: String,
    /// What was done: `deleted`, `disabled`, `disabled already`, `kept` (with why), or
    /// `planned` without --apply.
    pub outcome: String,
    /// Why it was kept, when it was.
    pub kept_because: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RevokeOutcome {
    pub rotation: Option<RevokeRotation>,
    /// The rotation completed (AWSCURRENT on its version, no AWSPENDING left).
    pub completed: bool,
    /// The key AWSCURRENT holds once the rotation completed.
    pub new_key: Option<String>,
    pub keys: Vec<RevokedKey>,
    /// Why nothing was done.
    pub refused: Option<String>,
    /// What failed (the work before it was done); run again to finish.
    pub failed: Option<String>,
}

impl<S, K, P, F> Operator<S, K, P, F>
where
    S: SecretStore + SecretCatalog,
    K: KeyGateway,
    P: Prober,
    F: FunctionReader,
{
    /// The revoke of the secret `seen` describes; carried out with `apply`, waiting up to `wait`
    /// for the rotation.
    pub async fn revoke(
        &self,
        seen: &Inspection,
        apply: bool,
        wait: Duration,
    ) -> Result<RevokeOutcome, Unreadable> {
        let refuse = |why: String| {
            Ok(RevokeOutcome {
                refused: Some(why),
                ..RevokeOutcome::default()
            })
        };
        let meta = &seen.meta;
        // Validated before anything changes: the rotation would fail on the same findings.
        let Some(settings) = &seen.settings else {
            return refuse(format!(
                "the secret's settings are not valid ({}): a rotation would fail; fix them first (api-key-rotator check {})",
                seen.error_codes_except(&[]).join(", "),
                meta.name
            ));
        };
        // The settings were read from the tags; the findings say whether the rest (plans,
        // TestUrl, values, open rotations) lets a rotation complete.
        let blocking = seen.error_codes_except(&RESOLVES);
        if !blocking.is_empty() {
            return refuse(format!(
                "the secret has error findings ({}): its rotation would fail or act on what the function cannot read; fix them first (api-key-rotator check {})",
                blocking.join(", "),
                meta.name
            ));
        }
        if !meta.rotation_enabled || meta.rotation.lambda_arn.is_none() {
            return refuse(
                "rotation is not enabled for the secret (or it has no rotation function): revoke rotates it"
                    .to_owned(),
            );
        }
        let action = match settings.old_key_action {
            OldKeyAction::Delete => OldKeyAction::Delete,
            OldKeyAction::Disable | OldKeyAction::KeepPrevious => OldKeyAction::Disable,
        };
        let current = meta.version_with(AWSCURRENT).map(str::to_owned);
        let (token, rotation) = match meta.open_rotation() {
            Some(open) if open.starts_with(REVOKE_TOKEN_PREFIX) => {
                (open.to_owned(), RevokeRotation::Resumed(open.to_owned()))
            }
            Some(open) => {
                return refuse(format!(
                    "another rotation is open on version {open}: revoke does not race it. Wait for it to finish, or cancel it (aws secretsmanager update-secret-version-stage --secret-id {} --version-stage AWSPENDING --remove-from-version-id {open}), and revoke then",
                    meta.name
                ))
            }
            None => match current.as_deref() {
                Some(v) if v.starts_with(REVOKE_TOKEN_PREFIX) && unfinished(&seen.survey) => {
                    (v.to_owned(), RevokeRotation::Finished(v.to_owned()))
                }
                _ => (new_token(), RevokeRotation::WouldStart),
            },
        };
        if !apply {
            let mut out = RevokeOutcome {
                rotation: Some(rotation),
                ..RevokeOutcome::default()
            };
            // Every key the secret owns now is retired once the new one is current (the
            // current key included, unless the rotation already completed), but the new one:
            // a resumed rotation's createSecret may have made it already.
            let keep = match &out.rotation {
                Some(RevokeRotation::Finished(_)) => seen.survey.key_with(AWSCURRENT),
                _ => None,
            };
            for (id, owned) in &seen.survey.owned {
                if Some(id.as_str()) != keep && !named_for(&owned.key, &token) {
                    out.keys.push(RevokedKey {
                        id: id.clone(),
                        name: owned.key.name.clone(),
                        outcome: "planned".to_owned(),
                        kept_because: None,
                    });
                }
            }
            return Ok(out);
        }
        let rotation = match rotation {
            RevokeRotation::WouldStart => {
                self.rotator
                    .secrets
                    .start_rotation(&meta.arn, &token)
                    .await?;
                tracing::info!(version_id = %token, "started the revoke's rotation");
                RevokeRotation::Started(token.clone())
            }
            other => other,
        };
        let mut out = RevokeOutcome {
            rotation: Some(rotation),
            ..RevokeOutcome::default()
        };
        let Some(done) = self.wait_for_rotation(&meta.arn, &token, wait).await? else {
            out.failed = Some(format!(
                "the rotation (version {token}) has not completed within {} s: nothing was retired yet. Run revoke again to go on waiting and finish; if the rotation failed, see the rotation function's logs",
                wait.as_secs()
            ));
            return Ok(out);
        };
        out.completed = true;
        // What the secret owns now, read again: the rotation made a key and moved the labels.
        let survey = Survey::read(
            &self.rotator.secrets,
            &self.rotator.keys,
            &done,
            Values::new(),
            None,
        )
        .await?;
        let new_key = survey.key_with(AWSCURRENT).map(str::to_owned);
        out.new_key = new_key.clone();
        let Some(new_key) = new_key else {
            out.failed = Some(
                "after the rotation AWSCURRENT holds no key this function can read: nothing was retired"
                    .to_owned(),
            );
            return Ok(out);
        };
        for (id, owned) in &survey.owned {
            if *id == new_key {
                continue;
            }
            let result = self
                .rotator
                .retire_now(&survey, id, action, seen.function.as_ref())
                .await;
            let outcome = match result {
                Ok(o) => o,
                Err(e) => {
                    out.failed = Some(format!("retiring the key {id} failed: {}", e.cause));
                    break;
                }
            };
            let scheduled =
                survey.schedule.due.contains_key(id) || survey.schedule.unreadable.contains(id);
            if scheduled && (outcome.retired() || outcome == Outcome::NotOwned) {
                if let Err(e) = self
                    .rotator
                    .secrets
                    .untag_secret(&done.arn, &schedule_tag_key(id))
                    .await
                {
                    out.failed = Some(format!(
                        "the key {id} was retired, and removing its schedule entry failed: {e}"
                    ));
                }
            }
            out.keys.push(RevokedKey {
                id: id.clone(),
                name: owned.key.name.clone(),
                outcome: outcome.as_str().to_owned(),
                kept_because: match outcome {
                    Outcome::Kept(why) => Some(why.to_owned()),
                    _ => None,
                },
            });
            if out.failed.is_some() {
                break;
            }
        }
        Ok(out)
    }

    /// Waits until the rotation of `token` has completed: AWSCURRENT on its version and no
    /// AWSPENDING on it. `None` when `wait` passed first; an error when the version is gone
    /// (the rotation was cancelled).
    async fn wait_for_rotation(
        &self,
        arn: &str,
        token: &str,
        wait: Duration,
    ) -> Result<Option<SecretMetadata>, Unreadable> {
        let started = Instant::now();
        let until = started + wait;
        loop {
            let meta = self
                .rotator
                .secrets
                .describe(arn)
                .await?
                .ok_or_else(|| Unreadable("the secret no longer exists".to_owned()))?;
            let Some(stages) = meta.stages_of(token) else {
                // Secrets Manager's reads may lag a moment behind RotateSecret.
                if started.elapsed() < LAG {
                    tokio::time::sleep(POLL).await;
                    continue;
                }
                return Err(Unreadable(format!(
                    "the revoke's rotation (version {token}) is gone from the secret (cancelled?): nothing was retired; run revoke again"
                )));
            };
            let current = stages.iter().any(|s| s == AWSCURRENT);
            let pending = stages.iter().any(|s| s == AWSPENDING);
            if current && !pending {
                return Ok(Some(meta));
            }
            if Instant::now() + POLL > until {
                return Ok(None);
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether a completed revoke left keys working that it retires: an owned key other than the
/// current one that is enabled or still scheduled, and that no version needs. A key a version
/// needs (a custom label holds it) is kept by every revoke: counting it would take every later
/// revoke for the unfinished one, and none would rotate again.
fn unfinished(survey: &Survey) -> bool {
    let current = survey.key_with(AWSCURRENT);
    survey.owned.iter().any(|(id, o)| {
        Some(id.as_str()) != current
            && matches!(
                survey.retirement(id),
                Retirement::Previous | Retirement::Unheld
            )
            && (o.key.enabled
                || survey.schedule.due.contains_key(id)
                || survey.schedule.unreadable.contains(id))
    })
}

/// A fresh version id for the revoke's rotation: `revoke-` and 32 hex digits (39 characters,
/// within ClientRequestToken's 32 to 64).
fn new_token() -> String {
    format!(
        "{REVOKE_TOKEN_PREFIX}{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}
