//! Model-based test of key ownership: proptest generates sequences of rotations, `OldKeyAction`,
//! `KeyName` and `UsagePlan` changes (between rotations and inside failing ones), roll-backs,
//! concurrent duplicate deliveries (interleaved at every call), late replays, a tampered record,
//! a person's writes (a staged pending value naming a key the function did not make, an
//! AWSCURRENT value the function cannot parse, the current key deleted by hand, the secret
//! filled up to its 50 tags), a lagging GetApiKeys listing, the operator commands `cleanup --apply` and
//! `rollback --apply [--force]` (between rotations and between a rotation's steps, each
//! interrupted at any call), and faults (a call failing, or its answer lost after it took
//! effect), each followed by the whole rotation being re-run with the same token, as Secrets
//! Manager does. Some secrets have a grace period (their GracePeriod tag, or the function's
//! GRACE_PERIOD): time passes, and the retirement sweep runs (faulted at any of its calls, or
//! raced by a person's roll-back). The real handler and the real operator code run over
//! in-memory fakes of their ports (`tests/fakes`), playing AWS or LocalStack where they differ. After every action the
//! safety invariant is checked (the key AWSCURRENT names works, under keep-previous the key
//! AWSPREVIOUS names works, nothing outside the secret changed); after every completed rotation
//! the ownership invariant (`docs/design/ownership.md`: under disable and keep-previous the key
//! AWSPREVIOUS names must still exist); a failure names the action. With grace periods: a key in
//! its grace period is never deleted or disabled by anything; a sweep touches only due keys,
//! reports every fault it hits, and without one retires each due key by the part it plays
//! (`Model::part`: never a key a label other than AWSPREVIOUS holds); a roll-back that lands
//! while a sweep still reads the secret is respected; and at the end, once every grace period
//! has ended and a sweep has run, no key is alive but those the labels need.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256).

#[path = "../fakes/mod.rs"]
mod fakes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_key_rotator::config::{FunctionConfig, OldKeyAction, TIE_TAG};
use api_key_rotator::grace::{now_secs, schedule_tag, GracePeriod, Schedule};
use api_key_rotator::ops::{Operator, SettingsOverrides, Shared};
use api_key_rotator::ownership::Claim;
use api_key_rotator::ports::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use api_key_rotator::rotation::SWEEP_CALLS;
use api_key_rotator::secret::CurrentValue;
use api_key_rotator::Rotator;
use fakes::{
    lock, Account, DataPlane, FakeGateway, FakeSecrets, Fault, FaultKind, NoFunctions, Playing,
};
use proptest::prelude::*;
use serde_json::{json, Value};

type Fake = Rotator<FakeSecrets, FakeGateway, DataPlane>;
type FakeOperator = Operator<FakeSecrets, FakeGateway, DataPlane, NoFunctions>;

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];
const KEY_NAMES: [&str; 3] = ["partner-a", "partner-b", "partner"];
const POLICIES: [OldKeyAction; 3] = [
    OldKeyAction::Delete,
    OldKeyAction::Disable,
    OldKeyAction::KeepPrevious,
];
/// p1 and p3 cover the same stage (a1/prod); p2 covers a2.
const PLANS: [&str; 4] = ["p1", "p2", "p1,p2", "p3"];
const OPS: [&str; 20] = [
    "ListSecretVersionIds",
    "ListSecrets",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
    "GetTags",
    "DescribeSecret",
    "GetSecretValue",
    "PutSecretValue",
    "UpdateSecretVersionStage",
    "GetUsagePlan",
    "GetApiKey",
    "GetApiKeys",
    "CreateApiKey",
    "TagResource",
    "UpdateApiKey",
    "DeleteApiKey",
    "GetUsagePlans",
    "CreateUsagePlanKey",
    "DeleteUsagePlanKey",
    "Probe",
];
/// Secrets Manager played strictly: the first try and five re-runs.
const TRIES: usize = 6;
/// The grace period of the secrets that have one (`Grace`).
const GRACE: &str = "2h";
/// Time passing within the grace period (twice leaves 20 minutes: no due time sits within a
/// second of the clock, where the real seconds ticking during a case would decide), and past
/// every due time finishSecret can write (the grace, plus the invocation's time left, unknown
/// here: 300 s).
const PASS_SOME: i64 = 3000;
const PASS_ALL: i64 = 8000;

/// Where the secret's grace period comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grace {
    None,
    /// The secret's GracePeriod tag, while its policy is delete or disable (a person removes it
    /// for keep-previous, as the finding `grace-period-with-keep-previous` asks).
    Tag,
    /// The function's GRACE_PERIOD (not applied under keep-previous).
    Default,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// No value: the first rotation makes the first key.
    Empty,
    /// A key made by hand or by another rotator, named exactly the KeyName, the full value.
    Migrated,
    /// `{"api_key_id"}` naming an existing key.
    Adopted,
}

#[derive(Debug, Clone)]
enum Action {
    Rotate {
        /// (operation, which call of it, how) for the first try.
        fault: Option<(usize, u32, FaultKind)>,
        /// This step (index) is delivered twice at once on the first try.
        duplicate: Option<usize>,
        /// `KeyName` changes after this step (index) of the first try, whether it failed or not.
        rename_after: Option<(usize, usize)>,
        /// `UsagePlan` changes when the first try fails in createSecret (the key it made may be
        /// on the old plan already).
        replan: Option<usize>,
        /// An operator command runs after this step (index) of the first try.
        during: Option<(usize, Command)>,
    },
    /// An operator command between rotations.
    Operate(Command),
    /// Someone who may write the secret stages an AWSPENDING value naming a key the function did
    /// not make for it: another secret's disabled key (0), or the secret's own previous key
    /// (1). Every step refuses and nothing changes; the operator then cancels the rotation.
    StagePending(usize),
    /// A person writes an AWSCURRENT value naming the previous key, with a field the function
    /// cannot parse; `cleanup --apply` runs; the person moves AWSCURRENT back.
    UnparseableCurrent,
    /// The secret is force-deleted and restored from a backup under its name (a new ARN, the
    /// old value): `cleanup --all` must not take the keys it holds for a deleted secret's. Then
    /// the original is put back, so that the sequence goes on.
    Recreate,
    KeyName(usize),
    Policy(usize),
    Plan(usize),
    /// The documented roll-back: re-enable the previous key (disable), move AWSCURRENT back,
    /// remove AWSPENDING.
    RollBack,
    /// The same by hand on a secret the earlier release rotated (it left AWSPENDING on the
    /// AWSCURRENT version), AWSPENDING forgotten: the next rotation re-runs the rolled-back
    /// version, which the function must refuse; then the operator removes AWSPENDING.
    RollBackForgettingPending,
    /// A late duplicate delivery of the last completed rotation's finishSecret, while the next
    /// rotation is open (up to its createSecret).
    LateFinish,
    /// Someone with PutSecretValue writes the neighbours' key ids into the record.
    TamperRecord,
    /// From now on GetApiKeys lags (AWS's listings are eventually consistent): every key created
    /// is missing from the next n listings; `None` ends the lag for keys created from now on.
    Lag(Option<u32>),
    /// A person deletes the key AWSCURRENT names (a full value the function wrote): the next
    /// rotation must make a new key and complete, whatever the policy.
    DeleteCurrentKey,
    /// A person fills the secret up to the 50 tags Secrets Manager takes (47 besides the
    /// function's three), or removes them again: the keys must still fit API Gateway's 50.
    FullTags(bool),
    /// A `TestUrl` on an API the plans cover is set (kept pointing at one as `UsagePlan`
    /// changes) or removed: testSecret then probes the data plane with the new key.
    TestUrl(bool),
    /// Time passes (seconds): every scheduled retirement comes this much closer.
    TimePasses(i64),
    /// Time passes (seconds, maybe none), then the retirement sweep runs, with a fault at one
    /// of its calls (`SWEEP_CALLS`).
    Sweep(i64, Option<(usize, u32, FaultKind)>),
    /// Every grace period ends; then a sweep runs while a person rolls back (the documented
    /// roll-back) after this many of the sweep's calls.
    SweepDuringRollBack(u32),
}

/// An operator command, run through the real operator code (`api_key_rotator::ops`).
#[derive(Debug, Clone, Copy)]
enum Command {
    /// `cleanup --apply`, with a fault at one of its calls.
    Cleanup(Option<(usize, u32, FaultKind)>),
    /// `rollback --apply [--force]`, with a fault at one of its calls.
    Rollback(Option<(usize, u32, FaultKind)>, bool),
    /// A person turns rotation off (CancelRotateSecret). Between a rotation's steps, the
    /// deliveries already in flight must refuse and change nothing; then the person turns
    /// rotation on again and Secrets Manager re-runs the open rotation.
    CancelRotation,
}

fn command() -> impl Strategy<Value = Command> {
    let fault = || {
        prop::option::weighted(
            0.5,
            (
                0..OPS.len(),
                0u32..3,
                prop_oneof![Just(FaultKind::Fail), Just(FaultKind::LostAnswer)],
            ),
        )
    };
    prop_oneof![
        fault().prop_map(Command::Cleanup),
        (fault(), any::<bool>()).prop_map(|(f, force)| Command::Rollback(f, force)),
        Just(Command::CancelRotation),
    ]
}

fn action() -> impl Strategy<Value = Action> {
    let fault = prop::option::weighted(
        0.6,
        (
            0..OPS.len(),
            0u32..3,
            prop_oneof![Just(FaultKind::Fail), Just(FaultKind::LostAnswer)],
        ),
    );
    prop_oneof![
        6 => (
            fault,
            prop::option::weighted(0.15, 0..4usize),
            prop::option::weighted(0.15, (0..4usize, 0..KEY_NAMES.len())),
            prop::option::weighted(0.1, 0..PLANS.len()),
            prop::option::weighted(0.1, (0..4usize, command())),
        )
            .prop_map(|(fault, duplicate, rename_after, replan, during)| Action::Rotate {
                fault,
                duplicate,
                rename_after,
                replan,
                during,
            }),
        1 => command().prop_map(Action::Operate),
        1 => (0..2usize).prop_map(Action::StagePending),
        1 => Just(Action::UnparseableCurrent),
        1 => Just(Action::Recreate),
        1 => (0..KEY_NAMES.len()).prop_map(Action::KeyName),
        1 => (0..POLICIES.len()).prop_map(Action::Policy),
        1 => (0..PLANS.len()).prop_map(Action::Plan),
        1 => Just(Action::RollBack),
        1 => Just(Action::RollBackForgettingPending),
        1 => Just(Action::LateFinish),
        1 => Just(Action::TamperRecord),
        1 => prop::option::weighted(0.7, 1..6u32).prop_map(Action::Lag),
        1 => Just(Action::DeleteCurrentKey),
        1 => any::<bool>().prop_map(Action::FullTags),
        1 => any::<bool>().prop_map(Action::TestUrl),
        2 => prop_oneof![Just(PASS_SOME), Just(PASS_ALL)].prop_map(Action::TimePasses),
        2 => (
            prop_oneof![Just(0), Just(PASS_SOME), Just(PASS_ALL)],
            prop::option::weighted(
                0.6,
                (
                    0..SWEEP_CALLS.len(),
                    0u32..3,
                    prop_oneof![Just(FaultKind::Fail), Just(FaultKind::LostAnswer)],
                ),
            ),
        )
            .prop_map(|(pass, fault)| Action::Sweep(pass, fault)),
        1 => (0u32..16).prop_map(Action::SweepDuringRollBack),
    ]
}

fn grace() -> impl Strategy<Value = Grace> {
    prop_oneof![Just(Grace::None), Just(Grace::Tag), Just(Grace::Default)]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Empty),
        Just(Start::Migrated),
        Just(Start::Adopted)
    ]
}

/// How a rotation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Completed,
    /// A rolled-back version, refused as it must be.
    Refused,
    /// A forced roll-back cancelled it.
    Cancelled,
}

/// The part a scheduled key plays, as the model reads the labelled versions (`Model::part`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Gone,
    Needed,
    Previous,
    Unheld,
}

/// The versions holding AWSCURRENT and AWSPREVIOUS: (version, key, key enabled if it exists).
struct Labelled {
    current: Option<(String, String, Option<bool>)>,
    previous: Option<(String, String, Option<bool>)>,
    /// The APIs a request with each key gets into (`DataPlane`): key id -> APIs.
    apis: BTreeMap<String, BTreeSet<String>>,
}

/// The test's own bookkeeping beside the fakes.
struct Model {
    account: Arc<Account>,
    rotator: Fake,
    operator: FakeOperator,
    /// Another secret's disabled key: a staged value names it.
    foreign_disabled: String,
    arn: String,
    /// Every key the secret ever held.
    ever: BTreeSet<String>,
    /// Keys outside the secret: id → (enabled, plans). None of them may change.
    neighbours: BTreeMap<String, (bool, BTreeSet<String>)>,
    policy: OldKeyAction,
    last_token: Option<String>,
    tokens: u32,
    /// The last rotation action stopped at a refused, rolled-back token.
    refused: bool,
    /// The current `KeyName`.
    key_name: usize,
    /// Keys a person deleted: no policy can keep them.
    deleted_by_hand: BTreeSet<String>,
    /// The `UsagePlan` tag (an index into PLANS), and whether a TestUrl is set.
    plans: usize,
    test_url: bool,
    grace: Grace,
}

impl Model {
    fn new(start: Start, grace: Grace, playing: Playing) -> Model {
        let account = Account::new(playing);
        account.add_plan("p1", "a1");
        account.add_plan("p2", "a2");
        account.add_plan("p3", "a1");
        let other_arn = "arn:aws:secretsmanager:us-east-1:000000000000:secret:other-XyZ";
        // A neighbour secret whose KeyName extends this one's, and a hand-made key in this
        // secret's prefix: both sit in the listings and are not the secret's.
        let neighbour = account.add_key(
            "partner-a-x-11111111-1111-1111-1111-111111111111",
            &[(TIE_TAG, other_arn)],
        );
        account.attach_raw("p1", &neighbour);
        let manual = account.add_key("partner-a-manual", &[]);
        account.attach_raw("p2", &manual);
        let foreign_disabled = account.add_key("other-disabled", &[(TIE_TAG, other_arn)]);
        account.set_enabled_raw(&foreign_disabled, false);
        let mut ever = BTreeSet::new();
        let value = match start {
            Start::Empty => None,
            Start::Migrated => {
                let id = account.add_key("partner-a", &[]);
                account.attach_raw("p1", &id);
                ever.insert(id.clone());
                Some(
                    json!({"api_key_id": id, "api_key_value": account.key_value(&id),
                    "key_name": "partner-a", "usage_plan_ids": ["p1"], "owner": "team-a"})
                    .to_string(),
                )
            }
            Start::Adopted => {
                let id = account.add_key("legacy-key", &[]);
                account.attach_raw("p1", &id);
                ever.insert(id.clone());
                Some(json!({"api_key_id": id}).to_string())
            }
        };
        let mut tags = vec![
            ("KeyName", "partner-a"),
            ("UsagePlan", "p1"),
            ("OldKeyAction", "delete"),
        ];
        if grace == Grace::Tag {
            tags.push(("GracePeriod", GRACE));
        }
        let arn = account.add_secret("partner-a-secret", value, &tags);
        let config = || FunctionConfig {
            default_grace: match grace {
                Grace::Default => GracePeriod::parse(GRACE).ok().flatten(),
                _ => None,
            },
            ..FunctionConfig::default()
        };
        let neighbours = [neighbour, manual, foreign_disabled.clone()]
            .into_iter()
            .map(|id| {
                let plans = account.plans_of(&id);
                let enabled = lock(&account.keys).get(&id).is_some_and(|k| k.key.enabled);
                (id, (enabled, plans))
            })
            .collect();
        let operator = Operator::new(
            Rotator::new(
                FakeSecrets(account.clone()),
                FakeGateway(account.clone()),
                DataPlane(account.clone()),
                Ok(config()),
            ),
            NoFunctions,
            // The operator knows the rotation function's allow-lists, as it does with
            // lambda:GetFunctionConfiguration: none, like the rotator's FunctionConfig::default().
            // (With them unknown, cleanup deletes a key without detaching it, which the fakes'
            // LocalStack rule "deleted while attached" would flag.)
            SettingsOverrides {
                allowed_usage_plan_ids: Some(String::new()),
                allowed_test_url_hosts: Some(String::new()),
                old_key_action: None,
            },
            "us-east-1".to_owned(),
        );
        let rotator = Rotator::new(
            FakeSecrets(account.clone()),
            FakeGateway(account.clone()),
            DataPlane(account.clone()),
            Ok(config()),
        );
        Model {
            account,
            rotator,
            operator,
            foreign_disabled,
            arn,
            ever,
            neighbours,
            policy: OldKeyAction::Delete,
            last_token: None,
            tokens: 0,
            refused: false,
            key_name: 0,
            deleted_by_hand: BTreeSet::new(),
            plans: 0,
            test_url: false,
            grace,
        }
    }

    fn token(&mut self) -> String {
        self.tokens += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", self.tokens, self.tokens)
    }

    async fn step(&self, step: &str, token: &str) -> Result<(), api_key_rotator::Error> {
        self.rotator
            .handle(&json!({"Step": step, "SecretId": self.arn, "ClientRequestToken": token}))
            .await
    }

    /// Every key tied to the secret is one it holds; so is every key a labelled version names.
    fn learn(&mut self) {
        let keys = lock(&self.account.keys);
        for (id, k) in keys.iter() {
            if k.key.tags.get(TIE_TAG) == Some(&self.arn) {
                self.ever.insert(id.clone());
            }
        }
    }

    fn version_value(&self, stage: &str) -> Option<Value> {
        let v = self.account.version_with(&self.arn, stage)?;
        serde_json::from_str(&self.account.value_of(&self.arn, &v)?).ok()
    }

    fn key_of(&self, stage: &str) -> Option<String> {
        self.version_value(stage)?["api_key_id"]
            .as_str()
            .map(str::to_owned)
    }

    /// Sets the `UsagePlan` tag, and the TestUrl, when there is one, to the first API the
    /// plans cover.
    fn set_plans(&mut self, plans: usize) {
        self.plans = plans;
        self.account.set_tag(&self.arn, "UsagePlan", PLANS[plans]);
        if self.test_url {
            let api = if PLANS[plans] == "p2" { "a2" } else { "a1" };
            let url = format!("https://{api}.execute-api.us-east-1.amazonaws.com/prod/health");
            self.account.set_tag(&self.arn, "TestUrl", &url);
        }
    }

    fn rename(&mut self, name: usize) {
        self.key_name = name;
        self.account.set_tag(&self.arn, "KeyName", KEY_NAMES[name]);
    }

    async fn rotate(
        &mut self,
        fault: Option<(usize, u32, FaultKind)>,
        duplicate: Option<usize>,
        rename_after: Option<(usize, usize)>,
        replan: Option<usize>,
        during: Option<(usize, Command)>,
    ) -> Result<Outcome, String> {
        let fresh = self.token();
        let token = self.account.rotate_secret(&self.arn, &fresh);
        let rolled_back = token != fresh;
        lock(&self.account.realism.lagged).clear();
        self.account.arm(fault.map(|(op, nth, kind)| Fault {
            op: OPS[op],
            nth,
            kind,
        }));
        let mut errors = Vec::new();
        let labelled = self.labelled_state();
        for attempt in 0..TRIES {
            let mut failed = false;
            for (i, step) in STEPS.iter().enumerate() {
                let result = if attempt == 0 && duplicate == Some(i) {
                    let (a, _) = tokio::join!(self.step(step, &token), self.step(step, &token));
                    a
                } else {
                    self.step(step, &token).await
                };
                self.learn();
                if attempt == 0 {
                    if let Some((_, name)) = rename_after.filter(|(s, _)| *s == i) {
                        self.rename(name);
                    }
                    if let Some((_, command)) = during.filter(|(s, _)| *s == i) {
                        // The rotation's own armed fault is set aside while the command runs.
                        let armed = lock(&self.account.fault).take();
                        self.operate(command).await?;
                        *lock(&self.account.fault) = armed;
                        if self.cancelled(&token) {
                            self.account.arm(None);
                            return Ok(Outcome::Cancelled);
                        }
                        if matches!(command, Command::CancelRotation) {
                            let armed = lock(&self.account.fault).take();
                            self.in_flight_refuse(&token, &STEPS[i + 1..]).await?;
                            self.account.enable_rotation(&self.arn);
                            *lock(&self.account.fault) = armed;
                        }
                    }
                    // Before any pending value is stored: once one is, the steps refuse a changed
                    // tag until the operator cancels the rotation (a refusal `check` names).
                    let stored = self.account.value_of(&self.arn, &token).is_some();
                    if let (Some(plan), Err(_), 0, false) = (replan, &result, i, stored) {
                        self.set_plans(plan);
                    }
                }
                if let Err(e) = result {
                    // A failed step may be the last one for a long time (the operator may cancel
                    // the rotation): the safety invariant holds at every failure too.
                    self.check_safety(&labelled)
                        .map_err(|s| format!("after {step} failed ({e}): {s}"))?;
                    errors.push(e.to_string());
                    failed = true;
                    break;
                }
            }
            if !failed {
                if rolled_back {
                    return Err(format!(
                        "the rolled-back version {token} was promoted again"
                    ));
                }
                self.last_token = Some(token);
                return Ok(Outcome::Completed);
            }
            if attempt == 0 {
                if let Some((_, name)) = rename_after {
                    if self.key_name != name {
                        self.rename(name);
                    }
                }
            }
        }
        self.account.arm(None);
        if rolled_back {
            return Ok(Outcome::Refused);
        }
        Err(format!(
            "the rotation did not complete in {TRIES} tries: {errors:?}"
        ))
    }

    /// With rotation turned off, the deliveries of `steps` already in flight refuse and
    /// change nothing.
    async fn in_flight_refuse(&mut self, token: &str, steps: &[&str]) -> Result<(), String> {
        let before = self.snapshot();
        for step in steps {
            if self.step(step, token).await.is_ok() {
                return Err(format!("{step} ran with the secret's rotation turned off"));
            }
        }
        if self.snapshot() != before {
            return Err(format!(
                "deliveries with rotation turned off changed something: {before} -> {}",
                self.snapshot()
            ));
        }
        Ok(())
    }

    /// The token's rotation was cancelled (a forced roll-back removed its AWSPENDING).
    fn cancelled(&self, token: &str) -> bool {
        let stages = self.account.stages(&self.arn);
        !stages
            .get(token)
            .is_some_and(|s| s.contains(AWSPENDING) || s.contains(AWSCURRENT))
    }

    /// Runs an operator command through the real operator code, with its fault armed; a command
    /// that failed part-way is run again, as an operator would, and must then finish.
    async fn operate(&mut self, command: Command) -> Result<(), String> {
        let fault = match command {
            Command::Cleanup(f) | Command::Rollback(f, _) => f,
            Command::CancelRotation => {
                self.account.cancel_rotation(&self.arn);
                return Ok(());
            }
        };
        self.account.arm(fault.map(|(op, nth, kind)| Fault {
            op: OPS[op],
            nth,
            kind,
        }));
        let interrupted = self.run_command(command).await;
        self.account.arm(None);
        if interrupted {
            self.learn();
            if self.run_command(command).await {
                return Err(format!(
                    "{command:?} run again after an interruption did not finish"
                ));
            }
        }
        self.learn();
        Ok(())
    }

    /// One run of the command; whether it was interrupted (a call failed).
    async fn run_command(&self, command: Command) -> bool {
        let seen = match self.operator.inspect(&self.arn, None).await {
            Ok(seen) => seen,
            Err(_) => return true,
        };
        match command {
            Command::Cleanup(_) => !self.operator.cleanup(&seen, true).await.failed.is_empty(),
            Command::Rollback(_, force) => match self.operator.rollback(&seen, true, force).await {
                Ok(out) => out.failed.is_some(),
                Err(_) => true,
            },
            Command::CancelRotation => false,
        }
    }

    /// What the safety invariant compares: the versions holding AWSCURRENT and AWSPREVIOUS, and
    /// their keys' state.
    fn labelled_state(&self) -> Labelled {
        let keys = lock(&self.account.keys);
        let state = |stage: &str| {
            let version = self.account.version_with(&self.arn, stage)?;
            let key = self.key_of(stage)?;
            let alive = keys.get(&key).map(|k| k.key.enabled);
            Some((version, key, alive))
        };
        let (current, previous) = (state(AWSCURRENT), state(AWSPREVIOUS));
        drop(keys);
        let apis = [&current, &previous]
            .into_iter()
            .flatten()
            .map(|(_, k, _)| (k.clone(), self.account.apis_of(k)))
            .collect();
        Labelled {
            current,
            previous,
            apis,
        }
    }

    /// After every action: the key AWSCURRENT names works unless a person wrote it otherwise;
    /// under keep-previous, the key AWSPREVIOUS names still works if it did and its version is
    /// still AWSPREVIOUS; nothing outside the secret changed.
    fn check_safety(&self, before: &Labelled) -> Result<(), String> {
        let now = self.labelled_state();
        if let (Some((v, k, Some(true))), Some((v2, k2, alive))) = (&before.current, &now.current) {
            if v == v2 && k == k2 && *alive != Some(true) {
                return Err(format!("the key AWSCURRENT names ({k}) stopped working"));
            }
            if v == v2 && k == k2 && !now.apis[k].is_superset(&before.apis[k]) {
                return Err(format!(
                    "the key AWSCURRENT names ({k}) lost an API: it got into {:?}, now {:?}",
                    before.apis[k], now.apis[k]
                ));
            }
        }
        if self.policy == OldKeyAction::KeepPrevious {
            if let (Some((v, k, Some(true))), Some((v2, k2, alive))) =
                (&before.previous, &now.previous)
            {
                if v == v2 && k == k2 && *alive != Some(true) {
                    return Err(format!(
                        "keep-previous: the key AWSPREVIOUS names ({k}) stopped working"
                    ));
                }
                if v == v2 && k == k2 && !now.apis[k].is_superset(&before.apis[k]) {
                    return Err(format!(
                        "keep-previous: the key AWSPREVIOUS names ({k}) lost an API: it got into {:?}, now {:?}",
                        before.apis[k], now.apis[k]
                    ));
                }
            }
        }
        self.check_neighbours()
    }

    /// The documented roll-back (`docs/operations.md`).
    fn roll_back(&self, clear_pending: bool) -> bool {
        let (Some(current), Some(previous)) = (
            self.account.version_with(&self.arn, AWSCURRENT),
            self.account.version_with(&self.arn, AWSPREVIOUS),
        ) else {
            return false;
        };
        let Some(previous_key) = self.key_of(AWSPREVIOUS) else {
            return false;
        };
        // The documented procedure rolls back only to a value the function can read.
        let readable = self
            .version_value(AWSPREVIOUS)
            .is_some_and(|v| v.get("usage_plan_ids").is_none_or(Value::is_array));
        if !readable {
            return false;
        }
        if !lock(&self.account.keys).contains_key(&previous_key) {
            return false; // under delete the old key is gone: rotate again instead
        }
        // Nor to a key a retirement left half done (detached from a plan its value names: a
        // sweep that failed after its grace ended): by hand, a person rolls back only to a key
        // that is on its plans (`rollback --apply` attaches it first).
        let plans: BTreeSet<String> = self
            .version_value(AWSPREVIOUS)
            .and_then(|v| v.get("usage_plan_ids").cloned())
            .and_then(|p| p.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        if !plans.is_subset(&self.account.plans_of(&previous_key)) {
            return false;
        }
        self.account.set_enabled_raw(&previous_key, true);
        if self
            .account
            .update_stage(&self.arn, AWSCURRENT, Some(&previous), Some(&current))
            .is_err()
        {
            return false;
        }
        // Wherever AWSPENDING is: the roll-back ends every rotation in progress.
        if let (true, Some(pending)) = (
            clear_pending,
            self.account.version_with(&self.arn, AWSPENDING),
        ) {
            let _ = self
                .account
                .update_stage(&self.arn, AWSPENDING, None, Some(&pending));
        }
        true
    }

    /// A staged AWSPENDING value naming a key the function did not make for the version: every
    /// step refuses and changes nothing; then the operator cancels the rotation.
    async fn stage_pending(&mut self, which: usize) -> Result<(), String> {
        self.account.arm(None);
        let target = match which {
            0 => Some(self.foreign_disabled.clone()),
            _ => self.key_of(AWSPREVIOUS),
        };
        let Some(target) = target.filter(|k| lock(&self.account.keys).contains_key(k)) else {
            return Ok(());
        };
        let fresh = self.token();
        let token = self.account.rotate_secret(&self.arn, &fresh);
        if token != fresh {
            return Ok(()); // an unfinished rotation is open: not this action's case
        }
        let current = self.account.version_with(&self.arn, AWSCURRENT);
        let plans: Vec<String> = lock(&self.account.secrets)
            .get(&self.arn)
            .and_then(|s| s.tags.iter().find(|(k, _)| k == "UsagePlan").cloned())
            .map(|(_, v)| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let value = json!({
            "api_key_id": target,
            "api_key_value": self.account.key_value(&target),
            "key_name": format!("{}-{token}", KEY_NAMES[self.key_name]),
            "usage_plan_ids": plans,
            "owned_key_ids": [],
            "rotated_from": current,
        });
        if let Some(s) = lock(&self.account.secrets).get_mut(&self.arn) {
            if let Some(v) = s.versions.get_mut(&token) {
                v.value = Some(value.to_string());
            }
        }
        let before = self.snapshot();
        for step in &STEPS[1..] {
            if self.step(step, &token).await.is_ok() {
                return Err(format!(
                    "{step} acted on a staged value naming key {target}"
                ));
            }
        }
        if self.snapshot() != before {
            return Err(format!(
                "a staged value naming key {target} changed something: {before} -> {}",
                self.snapshot()
            ));
        }
        let _ = self
            .account
            .update_stage(&self.arn, AWSPENDING, None, Some(&token));
        Ok(())
    }

    /// A person writes an AWSCURRENT value naming the previous key with a field the function
    /// cannot parse; `cleanup --apply` must not touch that key; the person then moves
    /// AWSCURRENT back.
    async fn unparseable_current(&mut self) -> Result<(), String> {
        let (Some(current), Some(previous)) = (
            self.account.version_with(&self.arn, AWSCURRENT),
            self.key_of(AWSPREVIOUS),
        ) else {
            return Ok(());
        };
        // Not while AWSPENDING sits anywhere: moving AWSCURRENT by hand would take AWSPREVIOUS
        // off a rolled-back version that still carries AWSPENDING (the earlier release's
        // leftover), and nothing would then tell it from a rotation just opened.
        if !lock(&self.account.keys).contains_key(&previous)
            || self.account.version_with(&self.arn, AWSPENDING).is_some()
        {
            return Ok(());
        }
        let written = self.token();
        let value = json!({
            "api_key_id": previous,
            "api_key_value": self.account.key_value(&previous),
            "key_name": "by-hand",
            "usage_plan_ids": "p1,p2",
        });
        self.account
            .put_by_hand(&self.arn, &written, &value.to_string(), AWSCURRENT);
        self.operate(Command::Cleanup(None)).await?;
        if !lock(&self.account.keys).contains_key(&previous) {
            return Err(format!(
                "cleanup deleted key {previous}, which the AWSCURRENT value names"
            ));
        }
        self.account
            .update_stage(&self.arn, AWSCURRENT, Some(&current), Some(&written))
            .map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn recreate(&mut self) -> Result<(), String> {
        self.account.arm(None); // a fault a rotation armed and never reached is not this action's
        let Some(old) = lock(&self.account.secrets).remove(&self.arn) else {
            return Ok(());
        };
        let restored_arn = self.arn.replace("-AbCdEf", "-ReStOr");
        let mut restored = old.clone();
        restored.arn = restored_arn.clone();
        restored
            .versions
            .retain(|_, v| v.stages.contains(AWSCURRENT));
        let held: BTreeSet<String> = restored
            .versions
            .values()
            .filter_map(|v| v.value.as_deref())
            .filter_map(|v| serde_json::from_str::<Value>(v).ok())
            .filter_map(|v| v["api_key_id"].as_str().map(str::to_owned))
            .collect();
        lock(&self.account.secrets).insert(restored_arn.clone(), restored);
        let listing: Vec<api_key_rotator::ports::ApiKey> = lock(&self.account.keys)
            .values()
            .map(|k| k.key.clone())
            .collect();
        // As `cleanup --all` sees it without having read the restored secret: only the
        // namesake check stands between the key and retirement.
        let found = self
            .operator
            .deleted_secret_keys(
                &Shared::new(listing, None),
                &BTreeSet::new(),
                &BTreeSet::new(),
                None,
            )
            .await;
        let wrong: Vec<&String> = found
            .iter()
            .flat_map(|d| d.keys.iter().map(|k| &k.id))
            .filter(|id| held.contains(*id))
            .collect();
        lock(&self.account.secrets).remove(&restored_arn);
        lock(&self.account.secrets).insert(self.arn.clone(), old);
        if !wrong.is_empty() {
            return Err(format!(
                "cleanup --all took keys the restored secret holds for a deleted secret's: {wrong:?}"
            ));
        }
        Ok(())
    }

    fn snapshot(&self) -> String {
        let keys: BTreeMap<String, (bool, BTreeSet<String>)> = lock(&self.account.keys)
            .iter()
            .map(|(id, k)| (id.clone(), (k.key.enabled, self.account.plans_of(id))))
            .collect();
        format!("{keys:?} {:?}", self.account.stages(&self.arn))
    }

    /// The secret's scheduled retirements, as its tags hold them now.
    fn schedule(&self) -> Schedule {
        lock(&self.account.secrets)
            .get(&self.arn)
            .map(|s| Schedule::from_tags(&s.tags))
            .unwrap_or_default()
    }

    /// The keys in their grace period now (a schedule entry due later, or unreadable) that
    /// exist: key → (enabled, due; unreadable: never).
    fn in_grace(&self) -> BTreeMap<String, (bool, i64)> {
        let schedule = self.schedule();
        let keys = lock(&self.account.keys);
        schedule
            .kept_at(now_secs())
            .into_iter()
            .filter_map(|id| {
                let due = schedule.due.get(&id).copied().unwrap_or(i64::MAX);
                keys.get(&id).map(|k| (id.clone(), (k.key.enabled, due)))
            })
            .collect()
    }

    /// A key in its grace period is never deleted or disabled, by any step, command or sweep
    /// (a person may delete one by hand). `in_grace` was read before the action; a key whose
    /// due time the clock reached during it is left out.
    fn check_grace(&self, in_grace: &BTreeMap<String, (bool, i64)>) -> Result<(), String> {
        let now = now_secs();
        let keys = lock(&self.account.keys);
        for (id, (enabled, due)) in in_grace {
            if self.deleted_by_hand.contains(id) || *due <= now {
                continue;
            }
            match keys.get(id) {
                None => return Err(format!("the key {id} was deleted during its grace period")),
                Some(k) if *enabled && !k.key.enabled => {
                    return Err(format!("the key {id} was disabled during its grace period"))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Time passes: every schedule entry of the secret moves `by` seconds earlier.
    fn pass_time(&self, by: i64) {
        let schedule = self.schedule();
        if let Some(s) = lock(&self.account.secrets).get_mut(&self.arn) {
            for (id, due) in schedule.due {
                let (k, v) = schedule_tag(&id, due - by);
                s.tags.retain(|(t, _)| *t != k);
                s.tags.push((k, v));
            }
        }
    }

    /// Every key's state: id → (enabled, plans).
    fn key_states(&self) -> BTreeMap<String, (bool, BTreeSet<String>)> {
        lock(&self.account.keys)
            .iter()
            .map(|(id, k)| (id.clone(), (k.key.enabled, self.account.plans_of(id))))
            .collect()
    }

    /// What a sweep may do to the scheduled key `id`, by the part it plays in the labelled
    /// versions now (the rule of `Survey::retirement`, stated here on its own): a version
    /// labelled other than AWSPREVIOUS holds it (rolled back to, still current, staged), a
    /// version the function cannot read mentions it, or an open rotation is making it: kept.
    /// Held by AWSPREVIOUS alone: retired by the policy. Held by no labelled version: deleted.
    fn part(&self, id: &str) -> Part {
        let Some(name) = lock(&self.account.keys).get(id).map(|k| k.key.name.clone()) else {
            return Part::Gone;
        };
        let mut previous = false;
        for (version, stages) in self.account.stages(&self.arn) {
            let open = stages.contains(AWSPENDING) && !stages.contains(AWSCURRENT);
            let made_for_it = name
                .strip_suffix(version.as_str())
                .is_some_and(|p| p.len() > 1 && p.ends_with('-'));
            if open && made_for_it {
                return Part::Needed;
            }
            let raw = self.account.value_of(&self.arn, &version);
            let strict = CurrentValue::parse(raw.as_deref()).is_ok();
            let claim = Claim::read(raw.as_deref(), strict);
            if !claim.holds(id) {
                continue;
            }
            if claim.key_id() != Some(id) || stages.iter().any(|s| s != AWSPREVIOUS) {
                return Part::Needed;
            }
            previous = true;
        }
        if previous {
            Part::Previous
        } else {
            Part::Unheld
        }
    }

    /// `pass` seconds pass, then a sweep runs with `fault` armed. Whatever happens, keys not
    /// due are untouched (those in their grace period included) and a fault it hit is
    /// reported; without a fault, every due key is retired by its part (`part`) and its
    /// schedule entry removed (a kept key's stays while a rotation is open).
    async fn sweep(
        &mut self,
        pass: i64,
        fault: Option<(usize, u32, FaultKind)>,
    ) -> Result<(), String> {
        self.pass_time(pass);
        let in_grace = self.in_grace();
        let now = now_secs();
        let schedule = self.schedule();
        let due: BTreeMap<String, Part> = schedule
            .due_by(now)
            .into_iter()
            .map(|(id, _)| {
                let part = self.part(&id);
                (id, part)
            })
            .collect();
        // Due by the time the sweep reads the clock, perhaps: the clock may tick in between.
        let maybe_due: BTreeSet<String> = schedule
            .due_by(now + 1)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        let before = self.key_states();
        self.account.arm(fault.map(|(op, nth, kind)| Fault {
            op: SWEEP_CALLS[op],
            nth,
            kind,
        }));
        let out = self.rotator.sweep().await;
        let hit = fault.is_some() && lock(&self.account.fault).is_none();
        self.account.arm(None);
        let failed = match &out {
            Err(e) => Some(e.to_string()),
            Ok(o) => o.failed.first().map(|(_, f)| f.to_string()),
        };
        let after = self.key_states();
        self.check_grace(&in_grace)?;
        for (id, state) in &before {
            if !maybe_due.contains(id) && after.get(id) != Some(state) {
                return Err(format!(
                    "the sweep changed the key {id}, which no due retirement names: {state:?} -> {:?}",
                    after.get(id)
                ));
            }
        }
        if hit {
            return match failed {
                Some(_) => Ok(()),
                None => Err(format!("the sweep hit {fault:?} and reported no failure")),
            };
        }
        if let Some(f) = failed {
            return Err(format!("a sweep without a fault failed: {f}"));
        }
        let left = self.schedule();
        // A kept key's entry stays while a rotation is open (its re-run writes it again).
        let open = self
            .account
            .stages(&self.arn)
            .values()
            .any(|s| s.contains(AWSPENDING) && !s.contains(AWSCURRENT));
        for (id, part) in &due {
            let kept = *part == Part::Needed
                || (*part == Part::Previous && self.policy == OldKeyAction::KeepPrevious);
            if left.due.contains_key(id) && !(kept && open) {
                return Err(format!(
                    "the sweep left the due key {id}'s schedule entry ({part:?})"
                ));
            }
            let (was, now) = (before.get(id), after.get(id));
            let kept = now == was;
            let ok = match (part, self.policy) {
                (Part::Gone, _) => now.is_none(),
                (Part::Needed, _) | (Part::Previous, OldKeyAction::KeepPrevious) => kept,
                (Part::Previous, OldKeyAction::Disable) => now
                    .is_some_and(|(enabled, plans)| !enabled && Some(plans) == was.map(|(_, p)| p)),
                (Part::Previous, OldKeyAction::Delete) | (Part::Unheld, _) => now.is_none(),
            };
            if !ok {
                return Err(format!(
                    "the due key {id} ({part:?}, {}) is {now:?} after the sweep, was {was:?}",
                    self.policy.as_str()
                ));
            }
        }
        Ok(())
    }

    /// Every grace period ends; a sweep runs while a person rolls back after `after` of its
    /// calls. A roll-back that lands while the sweep is still reading the secret (before its
    /// last read of a version's value) is respected: the key AWSCURRENT then names, if it
    /// worked, still works. (One that lands after the sweep's last read races the retirement:
    /// there is no compare-and-set, and the roll-back belongs inside the grace period.)
    async fn sweep_during_roll_back(&mut self, after: u32) -> Result<(), String> {
        self.account.arm(None);
        self.pass_time(PASS_ALL);
        let before = self.key_states();
        let current_before = self.account.version_with(&self.arn, AWSCURRENT);
        let start = lock(&self.account.log).len();
        let person = async {
            for _ in 0..after {
                tokio::task::yield_now().await;
            }
            let at = lock(&self.account.log).len();
            self.roll_back(true).then_some(at)
        };
        let (_, rolled_back_at) = tokio::join!(self.rotator.sweep(), person);
        let last_read = lock(&self.account.log)
            .iter()
            .enumerate()
            .skip(start)
            .filter(|(_, op)| *op == "GetSecretValue")
            .map(|(i, _)| i)
            .next_back();
        let respected = matches!((rolled_back_at, last_read), (Some(at), Some(read)) if at <= read);
        if let Some(k) = self.key_of(AWSCURRENT) {
            let worked = before.get(&k).is_some_and(|(enabled, _)| *enabled);
            let works = lock(&self.account.keys)
                .get(&k)
                .is_some_and(|key| key.key.enabled);
            if worked && !works {
                if respected {
                    return Err(format!(
                        "a roll-back to the key {k} landed while the sweep was reading the secret, and the sweep retired the key"
                    ));
                }
                // Rolled back to a key whose grace had ended, as the sweep retired it: the
                // person rolls forward again.
                let now = self.account.version_with(&self.arn, AWSCURRENT);
                let _ = self.account.update_stage(
                    &self.arn,
                    AWSCURRENT,
                    current_before.as_deref(),
                    now.as_deref(),
                );
            }
        }
        self.check_neighbours()
    }

    /// The invariant after a completed rotation (`docs/design/ownership.md`).
    fn check(&self) -> Result<(), String> {
        let keys = lock(&self.account.keys).clone();
        let alive: BTreeSet<&String> = self
            .ever
            .iter()
            .filter(|id| keys.contains_key(*id))
            .collect();
        let current = self.key_of(AWSCURRENT).ok_or("no AWSCURRENT key")?;
        let previous = self.key_of(AWSPREVIOUS).filter(|p| *p != current);
        let enabled = |id: &str| keys.get(id).is_some_and(|k| k.key.enabled);
        if !enabled(&current) {
            return Err(format!("the current key {current} is not enabled"));
        }
        // A key a lagging listing hid during the rotation may outlive it (the steps could not
        // see it), as long as it is tied to the secret: the next rotation that sees it retires
        // it (the closing rotation runs without lag).
        let lagged = lock(&self.account.realism.lagged).clone();
        let hidden = |id: &String| lagged.contains(id) && Some(id) != previous.as_ref();
        if let Some(id) = alive
            .iter()
            .find(|id| hidden(id) && keys[id.as_str()].key.tags.get(TIE_TAG) != Some(&self.arn))
        {
            return Err(format!(
                "the key {id} a listing hid is not tied to the secret"
            ));
        }
        // A key in its grace period is kept, enabled (checked after every action), whatever
        // its part; the closing sweep, once every grace has ended, leaves none.
        let in_grace = self.in_grace();
        let others: BTreeSet<&String> = alive
            .iter()
            .copied()
            .filter(|id| **id != current && !hidden(id) && !in_grace.contains_key(*id))
            .collect();
        // Under disable and keep-previous the key AWSPREVIOUS names is the one clients fall back
        // to: when it is one the secret held, it must still exist (issue 20).
        if let Some(p) = previous
            .as_ref()
            .filter(|p| self.ever.contains(*p) && !self.deleted_by_hand.contains(*p))
        {
            if self.policy != OldKeyAction::Delete && !keys.contains_key(p) {
                return Err(format!(
                    "{}: the previous key {p} no longer exists",
                    self.policy.as_str()
                ));
            }
        }
        match self.policy {
            OldKeyAction::Delete => {
                if !others.is_empty() {
                    return Err(format!("delete: keys besides the current one: {others:?}"));
                }
            }
            OldKeyAction::Disable => {
                if others.len() > 1
                    || others
                        .iter()
                        .any(|id| Some(*id) != previous.as_ref() || enabled(id))
                {
                    return Err(format!(
                        "disable: besides the current key, only the previous one, disabled, may remain: {others:?} (previous {previous:?})"
                    ));
                }
            }
            OldKeyAction::KeepPrevious => {
                let expected: BTreeSet<&String> = previous
                    .iter()
                    .filter(|p| keys.contains_key(*p) && !in_grace.contains_key(*p))
                    .collect();
                if others != expected {
                    return Err(format!(
                        "keep-previous: expected exactly the previous key besides the current one: {others:?} (previous {previous:?})"
                    ));
                }
                if let Some(p) = &previous {
                    if keys.contains_key(p) && !enabled(p) {
                        return Err(format!("keep-previous: the previous key {p} is disabled"));
                    }
                }
            }
        }
        // Each key on its own version's plans.
        for stage in [AWSCURRENT, AWSPREVIOUS] {
            let Some(v) = self.version_value(stage) else {
                continue;
            };
            let (Some(id), Some(plans)) =
                (v["api_key_id"].as_str(), v["usage_plan_ids"].as_array())
            else {
                continue;
            };
            if !keys.contains_key(id) {
                continue;
            }
            let want: BTreeSet<String> = plans
                .iter()
                .filter_map(|p| p.as_str().map(str::to_owned))
                .collect();
            let on = self.account.plans_of(id);
            if on != want {
                return Err(format!(
                    "the {stage} key {id} is on {on:?}, its version names {want:?}"
                ));
            }
        }
        let stages = self.account.stages(&self.arn);
        if let Some(p) = stages
            .iter()
            .find(|(_, s)| s.contains(AWSPENDING) && !s.contains(AWSCURRENT))
        {
            return Err(format!("AWSPENDING left off AWSCURRENT on {}", p.0));
        }
        self.check_neighbours()
    }

    fn check_neighbours(&self) -> Result<(), String> {
        let keys = lock(&self.account.keys).clone();
        for (id, (enabled, plans)) in &self.neighbours {
            let now = keys
                .get(id)
                .map(|k| (k.key.enabled, self.account.plans_of(id)));
            if now.as_ref() != Some(&(*enabled, plans.clone())) {
                return Err(format!("a key outside the secret changed: {id}: {now:?}"));
            }
        }
        let violations = lock(&self.account.violations).clone();
        if !violations.is_empty() {
            return Err(format!("broken rules: {violations:?}"));
        }
        Ok(())
    }

    /// One action, then the safety invariant.
    async fn apply(&mut self, action: &Action) -> Result<(), String> {
        let before = self.labelled_state();
        let in_grace = self.in_grace();
        self.act(action).await?;
        if !matches!(
            action,
            Action::TimePasses(_) | Action::Sweep(..) | Action::SweepDuringRollBack(_)
        ) {
            self.check_grace(&in_grace)?;
        }
        if matches!(action, Action::DeleteCurrentKey) {
            return self.check_neighbours();
        }
        self.check_safety(&before)
    }

    async fn act(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Rotate {
                fault,
                duplicate,
                rename_after,
                replan,
                during,
            } => {
                self.refused = false;
                let before = self.snapshot();
                let outcome = self
                    .rotate(*fault, *duplicate, *rename_after, *replan, *during)
                    .await?;
                if outcome == Outcome::Completed {
                    self.check()?;
                } else if outcome == Outcome::Cancelled {
                    self.check_neighbours()?;
                } else {
                    // A refused rolled-back version: nothing changed, then the operator follows
                    // the error's advice and removes AWSPENDING.
                    if self.snapshot() != before {
                        return Err("refusing the rolled-back version changed something".into());
                    }
                    self.refused = true;
                    let pending = self.account.version_with(&self.arn, AWSPENDING);
                    if let Some(p) = pending {
                        let _ = self
                            .account
                            .update_stage(&self.arn, AWSPENDING, None, Some(&p));
                    }
                    self.check_neighbours()?;
                }
            }
            Action::Operate(command) => self.operate(*command).await?,
            Action::StagePending(which) => self.stage_pending(*which).await?,
            Action::UnparseableCurrent => self.unparseable_current().await?,
            Action::Recreate => self.recreate().await?,
            Action::KeyName(n) => self.rename(*n),
            Action::Policy(n) => {
                self.policy = POLICIES[*n];
                self.account
                    .set_tag(&self.arn, "OldKeyAction", POLICIES[*n].as_str());
                if self.grace == Grace::Tag {
                    if self.policy == OldKeyAction::KeepPrevious {
                        if let Some(s) = lock(&self.account.secrets).get_mut(&self.arn) {
                            s.tags.retain(|(k, _)| k != "GracePeriod");
                        }
                    } else {
                        self.account.set_tag(&self.arn, "GracePeriod", GRACE);
                    }
                }
            }
            Action::TimePasses(by) => self.pass_time(*by),
            Action::Sweep(pass, fault) => self.sweep(*pass, *fault).await?,
            Action::SweepDuringRollBack(after) => self.sweep_during_roll_back(*after).await?,
            Action::Plan(n) => self.set_plans(*n),
            Action::TestUrl(on) => {
                self.test_url = *on;
                if !on {
                    if let Some(s) = lock(&self.account.secrets).get_mut(&self.arn) {
                        s.tags.retain(|(k, _)| k != "TestUrl");
                    }
                }
                self.set_plans(self.plans);
            }
            Action::RollBack => {
                self.roll_back(true);
                self.check_neighbours()?;
            }
            Action::RollBackForgettingPending => {
                // Only on the version a rotation made: a label moved by hand onto a value the
                // function never wrote (and with nothing that says it was current once) looks
                // like any unfinished rotation.
                let current = self.account.version_with(&self.arn, AWSCURRENT);
                if current.is_none() || current != self.last_token {
                    return Ok(());
                }
                if let Some(current) = current {
                    if self.account.version_with(&self.arn, AWSPENDING).is_none() {
                        let _ =
                            self.account
                                .update_stage(&self.arn, AWSPENDING, Some(&current), None);
                    }
                }
                self.roll_back(false);
                self.check_neighbours()?;
            }
            Action::LateFinish => {
                let Some(last) = self.last_token.clone() else {
                    return Ok(());
                };
                let current = self.account.version_with(&self.arn, AWSCURRENT);
                if current.as_deref() != Some(last.as_str()) {
                    return Ok(());
                }
                let fresh = self.token();
                let token = self.account.rotate_secret(&self.arn, &fresh);
                if token != fresh {
                    return Ok(());
                }
                self.account.arm(None);
                if self.step("createSecret", &token).await.is_err() {
                    return Ok(());
                }
                self.learn();
                let open_key = self
                    .account
                    .value_of(&self.arn, &token)
                    .and_then(|v| serde_json::from_str::<Value>(&v).ok())
                    .and_then(|v| v["api_key_id"].as_str().map(str::to_owned));
                let _ = self.step("finishSecret", &last).await;
                if let Some(k) = &open_key {
                    if !lock(&self.account.keys).contains_key(k) {
                        return Err(format!(
                            "a late finishSecret deleted the open rotation's key {k}"
                        ));
                    }
                }
                // The open rotation completes.
                for step in &STEPS[1..] {
                    self.step(step, &token).await.map_err(|e| {
                        format!("the open rotation failed after a late replay: {e}")
                    })?;
                }
                self.learn();
                self.last_token = Some(token);
                self.check()?;
            }
            Action::Lag(listings) => self.account.lag_new_keys(*listings),
            Action::FullTags(full) => {
                if let Some(s) = lock(&self.account.secrets).get_mut(&self.arn) {
                    s.tags.retain(|(k, _)| !k.starts_with("team-"));
                    if *full {
                        s.tags
                            .extend((0..47).map(|i| (format!("team-{i}"), format!("value-{i}"))));
                    }
                }
            }
            Action::DeleteCurrentKey => {
                // An adopted `{"api_key_id"}` naming a missing key is refused by design.
                let full = self
                    .version_value(AWSCURRENT)
                    .is_some_and(|v| v.get("api_key_value").is_some());
                let Some(key) = self
                    .key_of(AWSCURRENT)
                    .filter(|k| full && self.ever.contains(k))
                else {
                    return Ok(());
                };
                self.account.delete_by_hand(&key);
                self.deleted_by_hand.insert(key);
            }
            Action::TamperRecord => {
                let Some(current) = self.account.version_with(&self.arn, AWSCURRENT) else {
                    return Ok(());
                };
                let Some(mut value) = self.version_value(AWSCURRENT) else {
                    return Ok(());
                };
                if value.get("api_key_value").is_none() {
                    return Ok(());
                }
                // Added to what the record holds: a record stripped of entries can only hide keys
                // (a leak that LocalStack's blind spot keeps the model from seeing), never make
                // the function act on a wrong one, which is what this checks.
                let mut ids: Vec<Value> = value["owned_key_ids"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                ids.extend(self.neighbours.keys().map(|k| json!(k)));
                value["owned_key_ids"] = json!(ids);
                let tampered = self.token();
                {
                    let mut secrets = lock(&self.account.secrets);
                    if let Some(s) = secrets.get_mut(&self.arn) {
                        s.versions.insert(
                            tampered.clone(),
                            fakes::Version {
                                value: Some(value.to_string()),
                                stages: BTreeSet::new(),
                            },
                        );
                    }
                }
                let _ = self.account.update_stage(
                    &self.arn,
                    AWSCURRENT,
                    Some(&tampered),
                    Some(&current),
                );
            }
        }
        Ok(())
    }
}

fn plain_rotation() -> Action {
    Action::Rotate {
        fault: None,
        duplicate: None,
        rename_after: None,
        replan: None,
        during: None,
    }
}

fn run(start: Start, grace: Grace, playing: Playing, actions: &[Action]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut model = Model::new(start, grace, playing);
        for (i, action) in actions.iter().enumerate() {
            model
                .apply(action)
                .await
                .map_err(|e| format!("after action {i} ({action:?}): {e}"))?;
        }
        // Whatever happened, one more clean rotation, with every listing caught up, ends in
        // the invariant; then every grace period ends and a sweep runs: no key is left alive
        // but those the labels need (`Model::check`, with no key in its grace period).
        model.account.end_lag();
        model
            .apply(&plain_rotation())
            .await
            .map_err(|e| format!("the closing rotation: {e}"))?;
        let closing = async {
            // A closing rotation that re-ran a rolled-back version was refused (the operator
            // then removed AWSPENDING): the next one completes.
            if model.refused {
                model.apply(&plain_rotation()).await?;
            }
            model.apply(&Action::TimePasses(PASS_ALL)).await?;
            model.apply(&Action::Sweep(0, None)).await?;
            model.check()
        };
        closing.await.map_err(|e| format!("the closing sweep: {e}"))
    })
}

/// 256 cases by default; `PROPTEST_CASES` asks for more (a long local hunt) or fewer, never
/// none: `PROPTEST_CASES=0`, or a value that is not a number, fails every property here rather
/// than passing it with nothing checked.
fn cases() -> u32 {
    let cases = match std::env::var("PROPTEST_CASES") {
        Err(_) => 256,
        Ok(raw) => raw.trim().parse().unwrap_or(0),
    };
    assert!(
        cases > 0,
        "PROPTEST_CASES={:?} runs no case: set a positive number, or unset it for the default (256)",
        std::env::var("PROPTEST_CASES").unwrap_or_default()
    );
    cases
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_key_the_secret_held_is_retired_by_its_policy(
        start in start(),
        grace in grace(),
        playing in prop_oneof![Just(Playing::LocalStack), Just(Playing::Aws)],
        actions in prop::collection::vec(action(), 1..14),
    ) {
        let outcome = run(start, grace, playing, &actions);
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
    }
}

/// The sequences the issue names, as fixed cases: each must hold on its own.
#[test]
fn the_named_sequences_hold() {
    let rotate =
        |fault: Option<(&str, u32, FaultKind)>, rename: Option<(usize, usize)>| Action::Rotate {
            fault: fault
                .map(|(op, nth, kind)| (OPS.iter().position(|o| *o == op).unwrap_or(0), nth, kind)),
            duplicate: None,
            rename_after: rename,
            replan: None,
            during: None,
        };
    let plain = || rotate(None, None);
    let cases: Vec<(&str, Start, Vec<Action>)> = vec![
        (
            "1: PutSecretValue fails after the key is attached, KeyName renamed before the re-run",
            Start::Migrated,
            vec![
                plain(),
                rotate(Some(("PutSecretValue", 0, FaultKind::Fail)), Some((0, 1))),
                plain(),
            ],
        ),
        (
            "2: a lost CreateApiKey answer, KeyName renamed before finishSecret",
            Start::Empty,
            vec![
                plain(),
                rotate(
                    Some(("CreateApiKey", 0, FaultKind::LostAnswer)),
                    Some((2, 1)),
                ),
                plain(),
            ],
        ),
        (
            "2b: two deliveries of createSecret at once, KeyName renamed before finishSecret",
            Start::Empty,
            vec![
                plain(),
                Action::Rotate {
                    fault: None,
                    duplicate: Some(0),
                    rename_after: Some((2, 1)),
                    replan: None,
                    during: None,
                },
                plain(),
            ],
        ),
        (
            "3: a late finishSecret while the next rotation is open",
            Start::Empty,
            vec![plain(), plain(), Action::LateFinish],
        ),
        (
            "4: delete, keep-previous, disable",
            Start::Migrated,
            vec![
                plain(),
                Action::Policy(2),
                plain(),
                Action::Policy(1),
                plain(),
                Action::Policy(0),
                plain(),
            ],
        ),
        (
            "5: UsagePlan moves to a plan on the same stage",
            Start::Migrated,
            vec![
                Action::Policy(2),
                plain(),
                Action::Plan(3),
                plain(),
                Action::Plan(1),
                plain(),
            ],
        ),
        (
            "6: roll-back under keep-previous and disable, then rotations",
            Start::Empty,
            vec![
                Action::Policy(2),
                plain(),
                plain(),
                Action::RollBack,
                plain(),
                Action::Policy(1),
                plain(),
                Action::RollBack,
                plain(),
                Action::RollBackForgettingPending,
                plain(),
                plain(),
            ],
        ),
        (
            "migrated key named exactly KeyName, keep-previous, twice",
            Start::Migrated,
            vec![Action::Policy(2), plain(), plain(), plain()],
        ),
        (
            "disable twice from a migrated key",
            Start::Migrated,
            vec![Action::Policy(1), plain(), plain(), plain()],
        ),
        (
            "KeyName changed between rotations under keep-previous",
            Start::Adopted,
            vec![
                Action::Policy(2),
                plain(),
                Action::KeyName(1),
                plain(),
                plain(),
                plain(),
            ],
        ),
        (
            "KeyName a prefix of the migrated key's name, disable",
            Start::Migrated,
            vec![Action::KeyName(2), Action::Policy(1), plain()],
        ),
        (
            "adversary 2: KeyName flip-flop inside a failing rotation under keep-previous",
            Start::Empty,
            vec![
                Action::Policy(2),
                plain(),
                Action::KeyName(1),
                rotate(Some(("PutSecretValue", 0, FaultKind::Fail)), Some((0, 0))),
                Action::KeyName(1),
                plain(),
                plain(),
            ],
        ),
        (
            "adversary 3: staged pending values naming keys the function did not make",
            Start::Migrated,
            vec![
                Action::Policy(1),
                plain(),
                Action::StagePending(0),
                Action::StagePending(1),
                plain(),
            ],
        ),
        (
            "adversary 4: UsagePlan moves to a plan on the same stage inside a failing rotation",
            Start::Migrated,
            vec![
                plain(),
                Action::Rotate {
                    fault: Some((
                        OPS.iter().position(|o| *o == "PutSecretValue").unwrap_or(0),
                        0,
                        FaultKind::Fail,
                    )),
                    duplicate: None,
                    rename_after: None,
                    replan: Some(3),
                    during: None,
                },
                plain(),
            ],
        ),
        (
            "adversary 5: an AWSCURRENT value the function cannot parse, then cleanup",
            Start::Empty,
            vec![
                Action::Policy(2),
                plain(),
                plain(),
                Action::UnparseableCurrent,
                plain(),
            ],
        ),
        (
            "adversary 7, 8: roll-backs through the operator code, during and between rotations",
            Start::Empty,
            vec![
                Action::Policy(1),
                plain(),
                plain(),
                Action::Rotate {
                    fault: None,
                    duplicate: None,
                    rename_after: None,
                    replan: None,
                    during: Some((0, Command::Rollback(None, false))),
                },
                Action::Rotate {
                    fault: None,
                    duplicate: None,
                    rename_after: None,
                    replan: None,
                    during: Some((1, Command::Rollback(None, true))),
                },
                Action::Operate(Command::Rollback(
                    Some((
                        OPS.iter()
                            .position(|o| *o == "UpdateSecretVersionStage")
                            .unwrap_or(0),
                        0,
                        FaultKind::Fail,
                    )),
                    false,
                )),
                Action::Operate(Command::Rollback(None, false)),
                plain(),
                Action::Operate(Command::Cleanup(None)),
            ],
        ),
        (
            "keep-previous: finishSecret's move fails; the key AWSPREVIOUS names keeps working meanwhile",
            Start::Empty,
            vec![
                Action::Policy(2),
                plain(),
                plain(),
                rotate(Some(("UpdateSecretVersionStage", 0, FaultKind::Fail)), None),
            ],
        ),
        (
            "a tampered record",
            Start::Migrated,
            vec![plain(), Action::TamperRecord, plain(), plain()],
        ),
    ];
    let sweep = || Action::Sweep(0, None);
    let all_due = || Action::TimePasses(PASS_ALL);
    let grace_cases: Vec<(&str, Start, Grace, Vec<Action>)> = vec![
        (
            "grace: two rotations within one grace keep both old keys; both retired once due",
            Start::Empty,
            Grace::Tag,
            vec![
                plain(),
                plain(),
                Action::TimePasses(PASS_SOME),
                plain(),
                Action::Operate(Command::Cleanup(None)),
                sweep(),
                all_due(),
                sweep(),
            ],
        ),
        (
            "grace: rolled back to during its grace, the key survives the sweep",
            Start::Migrated,
            Grace::Tag,
            vec![plain(), plain(), Action::RollBack, all_due(), sweep(), plain()],
        ),
        (
            "grace: under disable, the function's GRACE_PERIOD, a failed sweep, then one that converges",
            Start::Adopted,
            Grace::Default,
            vec![
                Action::Policy(1),
                plain(),
                plain(),
                all_due(),
                Action::Sweep(
                    0,
                    Some((
                    SWEEP_CALLS
                        .iter()
                        .position(|o| *o == "UpdateApiKey")
                        .unwrap_or(0),
                    0,
                    FaultKind::LostAnswer,
                    )),
                ),
                sweep(),
                Action::RollBack,
                plain(),
            ],
        ),
        (
            "grace: a roll-back at every point of a sweep",
            Start::Empty,
            Grace::Tag,
            (0..16)
                .flat_map(|after| [plain(), Action::SweepDuringRollBack(after)])
                .collect(),
        ),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .map(|(name, start, actions)| (name, start, Grace::None, actions))
        .chain(grace_cases)
        .flat_map(|(name, start, grace, actions)| {
            [Playing::LocalStack, Playing::Aws]
                .into_iter()
                .filter_map(move |playing| {
                    run(start, grace, playing, &actions)
                        .err()
                        .map(|e| format!("{name} ({playing:?}): {e}"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
