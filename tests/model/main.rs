//! Model-based test of key ownership: proptest generates sequences of rotations, `OldKeyAction`,
//! `KeyName` and `UsagePlan` changes, roll-backs, concurrent duplicate deliveries, late replays,
//! a tampered record, and faults (a call failing, or its answer lost after it took effect), each
//! followed by the whole rotation being re-run with the same token, as Secrets Manager does. The
//! real handler runs over in-memory fakes of its ports (`tests/fakes`), with LocalStack's blind
//! spot played: tags added by TagResource are invisible. After every completed rotation the
//! ownership invariant is checked (`docs/design/ownership.md`); a failure names the action.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 256).

#[path = "../fakes/mod.rs"]
mod fakes;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_key_rotator::config::{FunctionConfig, OldKeyAction, TIE_TAG};
use api_key_rotator::ports::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};
use api_key_rotator::Rotator;
use fakes::{lock, Account, FakeGateway, FakeSecrets, Fault, FaultKind, OkProber, Playing};
use proptest::prelude::*;
use serde_json::{json, Value};

type Fake = Rotator<FakeSecrets, FakeGateway, OkProber>;

const STEPS: [&str; 4] = ["createSecret", "setSecret", "testSecret", "finishSecret"];
const KEY_NAMES: [&str; 3] = ["partner-a", "partner-b", "partner"];
const POLICIES: [OldKeyAction; 3] = [
    OldKeyAction::Delete,
    OldKeyAction::Disable,
    OldKeyAction::KeepPrevious,
];
/// p1 and p3 cover the same stage (a1/prod); p2 covers a2.
const PLANS: [&str; 4] = ["p1", "p2", "p1,p2", "p3"];
const OPS: [&str; 15] = [
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
];
/// Secrets Manager played strictly: the first try and five re-runs.
const TRIES: usize = 6;

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
    },
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
        )
            .prop_map(|(fault, duplicate, rename_after)| Action::Rotate {
                fault,
                duplicate,
                rename_after
            }),
        1 => (0..KEY_NAMES.len()).prop_map(Action::KeyName),
        1 => (0..POLICIES.len()).prop_map(Action::Policy),
        1 => (0..PLANS.len()).prop_map(Action::Plan),
        1 => Just(Action::RollBack),
        1 => Just(Action::RollBackForgettingPending),
        1 => Just(Action::LateFinish),
        1 => Just(Action::TamperRecord),
    ]
}

fn start() -> impl Strategy<Value = Start> {
    prop_oneof![
        Just(Start::Empty),
        Just(Start::Migrated),
        Just(Start::Adopted)
    ]
}

/// The test's own bookkeeping beside the fakes.
struct Model {
    account: Arc<Account>,
    rotator: Fake,
    arn: String,
    /// Every key the secret ever held.
    ever: BTreeSet<String>,
    /// Keys outside the secret: id → (enabled, plans). None of them may change.
    neighbours: BTreeMap<String, (bool, BTreeSet<String>)>,
    policy: OldKeyAction,
    last_token: Option<String>,
    tokens: u32,
    /// The last rotation stopped at a refused, rolled-back token.
    refused: bool,
    /// The rename that happened inside a rotation, to be checked against the documented limit.
    key_name: usize,
}

impl Model {
    fn new(start: Start, playing: Playing) -> Model {
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
        let arn = account.add_secret(
            "partner-a-secret",
            value,
            &[
                ("KeyName", "partner-a"),
                ("UsagePlan", "p1"),
                ("OldKeyAction", "delete"),
            ],
        );
        let neighbours = [neighbour, manual]
            .into_iter()
            .map(|id| {
                let plans = account.plans_of(&id);
                (id, (true, plans))
            })
            .collect();
        let rotator = Rotator::new(
            FakeSecrets(account.clone()),
            FakeGateway(account.clone()),
            OkProber,
            Ok(FunctionConfig::default()),
        );
        Model {
            account,
            rotator,
            arn,
            ever,
            neighbours,
            policy: OldKeyAction::Delete,
            last_token: None,
            tokens: 0,
            refused: false,
            key_name: 0,
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

    /// The one sequence the design documents as out of reach (docs/design/ownership.md,
    /// "Known limit"): inside one failing rotation, KeyName changed back to the name the current
    /// key was made under, after a try under another name made a key. Nothing durable records
    /// that try but its key, which only a listing of every key finds.
    fn reverts_within_rotation(&self, name: usize) -> bool {
        let current_name = self
            .version_value(AWSCURRENT)
            .and_then(|v| v["key_name"].as_str().map(str::to_owned));
        let version = self.account.version_with(&self.arn, AWSCURRENT);
        match (current_name, version) {
            (Some(n), Some(v)) => n == format!("{}-{v}", KEY_NAMES[name]) && self.key_name != name,
            _ => false,
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
    ) -> Result<bool, String> {
        let fresh = self.token();
        let token = self.account.rotate_secret(&self.arn, &fresh);
        let rolled_back = token != fresh;
        self.account.arm(fault.map(|(op, nth, kind)| Fault {
            op: OPS[op],
            nth,
            kind,
        }));
        let mut errors = Vec::new();
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
                        if !self.reverts_within_rotation(name) {
                            self.rename(name);
                        }
                    }
                }
                if let Err(e) = result {
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
                return Ok(true);
            }
            if attempt == 0 {
                if let Some((_, name)) = rename_after {
                    if self.key_name != name && !self.reverts_within_rotation(name) {
                        self.rename(name);
                    }
                }
            }
        }
        self.account.arm(None);
        if rolled_back {
            return Ok(false);
        }
        Err(format!(
            "the rotation did not complete in {TRIES} tries: {errors:?}"
        ))
    }

    /// The documented roll-back (`docs/operations.md`).
    fn roll_back(&mut self, clear_pending: bool) -> bool {
        let (Some(current), Some(previous)) = (
            self.account.version_with(&self.arn, AWSCURRENT),
            self.account.version_with(&self.arn, AWSPREVIOUS),
        ) else {
            return false;
        };
        let Some(previous_key) = self.key_of(AWSPREVIOUS) else {
            return false;
        };
        if !lock(&self.account.keys).contains_key(&previous_key) {
            return false; // under delete the old key is gone: rotate again instead
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

    fn snapshot(&self) -> String {
        let keys: BTreeMap<String, (bool, BTreeSet<String>)> = lock(&self.account.keys)
            .iter()
            .map(|(id, k)| (id.clone(), (k.key.enabled, self.account.plans_of(id))))
            .collect();
        format!("{keys:?} {:?}", self.account.stages(&self.arn))
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
        let others: BTreeSet<&String> =
            alive.iter().copied().filter(|id| **id != current).collect();
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
                let expected: BTreeSet<&String> =
                    previous.iter().filter(|p| keys.contains_key(*p)).collect();
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

    async fn apply(&mut self, action: &Action) -> Result<(), String> {
        match action {
            Action::Rotate {
                fault,
                duplicate,
                rename_after,
            } => {
                let before = self.snapshot();
                let completed = self.rotate(*fault, *duplicate, *rename_after).await?;
                if completed {
                    self.check()?;
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
            Action::KeyName(n) => self.rename(*n),
            Action::Policy(n) => {
                self.policy = POLICIES[*n];
                self.account
                    .set_tag(&self.arn, "OldKeyAction", POLICIES[*n].as_str());
            }
            Action::Plan(n) => self.account.set_tag(&self.arn, "UsagePlan", PLANS[*n]),
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

fn run(start: Start, playing: Playing, actions: &[Action]) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let mut model = Model::new(start, playing);
        for (i, action) in actions.iter().enumerate() {
            model
                .apply(action)
                .await
                .map_err(|e| format!("after action {i} ({action:?}): {e}"))?;
        }
        // Whatever happened, one more clean rotation ends in the invariant.
        model
            .apply(&Action::Rotate {
                fault: None,
                duplicate: None,
                rename_after: None,
            })
            .await
            .map_err(|e| format!("the closing rotation: {e}"))
    })
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn every_key_the_secret_held_is_retired_by_its_policy(
        start in start(),
        playing in prop_oneof![Just(Playing::LocalStack), Just(Playing::Aws)],
        actions in prop::collection::vec(action(), 1..14),
    ) {
        let outcome = run(start, playing, &actions);
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
            "a tampered record",
            Start::Migrated,
            vec![plain(), Action::TamperRecord, plain(), plain()],
        ),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .flat_map(|(name, start, actions)| {
            [Playing::LocalStack, Playing::Aws]
                .into_iter()
                .filter_map(move |playing| {
                    run(start, playing, &actions)
                        .err()
                        .map(|e| format!("{name} ({playing:?}): {e}"))
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
