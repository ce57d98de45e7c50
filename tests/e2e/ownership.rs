//! Key ownership on the local AWS (`docs/design/ownership.md`): every key a secret ever held is
//! retired by its policy, whatever the key is named and however the tags change, and no key
//! outside the secret is touched. The model test (`tests/model`) explores sequences over
//! in-memory fakes; these cases prove the same invariant against LocalStack, and hold the fakes
//! to it on the behaviours the model relies on.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use api_key_rotator::config::{OldKeyAction, TIE_TAG};
use api_key_rotator::ports::{
    KeyGateway, NewKey, SecretStore, SecretText, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use api_key_rotator::{AwsRotator, ErrorKind};
use aws_sdk_secretsmanager::types::Tag;
use serde_json::{json, Value};

use crate::cases::rotator;
use crate::ensure;
use crate::fakes;
use crate::support::proxy::{Fault, Proxy};
use crate::support::world::{str_field, World, STEPS};
use crate::support::R;

pub(crate) const POLICIES: [OldKeyAction; 3] = [
    OldKeyAction::Delete,
    OldKeyAction::Disable,
    OldKeyAction::KeepPrevious,
];

/// A secret under test, with what the invariant needs beside the local AWS's own state.
pub(crate) struct Owned {
    pub arn: String,
    pub api: String,
    pub plans: Vec<String>,
    pub key_name: String,
    /// Every key the secret ever held: the starting key, and every key tied to it.
    ever: BTreeSet<String>,
    /// Keys outside the secret, with their state: (enabled, plans).
    outside: BTreeMap<String, (bool, BTreeSet<String>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// A key made by hand, named exactly the KeyName, in a full value.
    Migrated,
    /// `{"api_key_id"}` naming an existing key.
    Adopted,
}

pub(crate) async fn plans_of(w: &World, key: &str) -> R<BTreeSet<String>> {
    let out = w.ag.get_usage_plans().key_id(key).limit(500).send().await?;
    Ok(out
        .items()
        .iter()
        .filter_map(|p| p.id().map(str::to_owned))
        .collect())
}

pub(crate) async fn set_tag(w: &World, arn: &str, key: &str, value: &str) -> R<()> {
    w.sm.tag_resource()
        .secret_id(arn)
        .tags(Tag::builder().key(key).value(value).build())
        .send()
        .await?;
    Ok(())
}

/// A secret starting from a migrated or adopted key, with neighbours that sit in its name
/// listings and are not its own: another secret's key whose KeyName extends this one's, and a
/// hand-made key in this one's prefix.
pub(crate) async fn given(w: &World, start: Start, policy: OldKeyAction) -> R<Owned> {
    let api = w.create_api().await?;
    let plan = w.create_plan(Some(&api)).await?;
    let plan2 = w.create_plan(None).await?;
    let key_name = w.unique("owner");
    let (first, first_value) = w.create_key(&key_name).await?;
    w.attach(&plan, &first).await?;
    let value = match start {
        Start::Migrated => json!({"api_key_id": first, "api_key_value": first_value,
            "key_name": key_name, "usage_plan_ids": [plan], "owner": "team-a"}),
        Start::Adopted => json!({"api_key_id": first}),
    };
    let arn = w
        .create_secret(
            Some(&value.to_string()),
            &[
                ("KeyName", &key_name),
                ("UsagePlan", &plan),
                ("OldKeyAction", policy.as_str()),
            ],
        )
        .await?;
    let other = w.create_secret(Some("{}"), &[("KeyName", "other")]).await?;
    let neighbour = w
        .create_tied_key(&format!("{key_name}-x-{}", w.token()), &other)
        .await?;
    w.attach(&plan, &neighbour).await?;
    let (manual, _) = w.create_key(&format!("{key_name}-manual")).await?;
    let mut outside = BTreeMap::new();
    for id in [neighbour, manual] {
        outside.insert(id.clone(), (true, plans_of(w, &id).await?));
    }
    Ok(Owned {
        arn,
        api,
        plans: vec![plan, plan2],
        key_name,
        ever: BTreeSet::from([first]),
        outside,
    })
}

/// Secrets Manager's side of a rotation: RotateSecret, or, while AWSPENDING sits off AWSCURRENT,
/// the unfinished rotation's token again (AWS re-runs it: "A previous rotation isn't complete.
/// That rotation will be reattempted."). Then the steps, the whole rotation re-run on failure.
pub(crate) async fn rotate_as_aws(
    w: &World,
    r: &AwsRotator,
    arn: &str,
    tries: u32,
) -> R<(String, Vec<api_key_rotator::Error>)> {
    let versions = w.versions(arn).await?;
    let unfinished = versions
        .iter()
        .find(|(_, s)| s.iter().any(|l| l == AWSPENDING) && !s.iter().any(|l| l == AWSCURRENT))
        .map(|(v, _)| v.clone());
    let token = match unfinished {
        Some(t) => t,
        None => w.open_rotation(arn).await?,
    };
    let mut errors = Vec::new();
    for _ in 0..tries {
        match World::run_steps(r, arn, &token).await {
            Ok(()) => return Ok((token, errors)),
            Err(e) => errors.push(e),
        }
    }
    Ok((token, errors))
}

/// The invariant after a completed rotation, among all keys the secret ever held:
/// `delete` exactly the current key; `disable` the current key enabled and at most the previous
/// one, disabled; `keep-previous` exactly current and previous, both enabled; each on its own
/// version's plans; no AWSPENDING off AWSCURRENT; nothing outside the secret changed.
pub(crate) async fn invariant(w: &World, o: &mut Owned, policy: OldKeyAction) -> R<()> {
    for k in w.tied_keys(&o.arn).await? {
        o.ever.extend(k.id().map(str::to_owned));
    }
    let current_value = w.value(&o.arn, AWSCURRENT).await?;
    let current = str_field(&current_value, "api_key_id").ok_or("no AWSCURRENT key")?;
    let previous_value = w.value(&o.arn, AWSPREVIOUS).await?;
    let previous = str_field(&previous_value, "api_key_id").filter(|p| *p != current);
    let mut state = BTreeMap::new();
    for id in &o.ever {
        if let Some(k) = w.key(id).await? {
            state.insert(id.clone(), k.enabled());
        }
    }
    ensure!(
        state.get(&current) == Some(&true),
        "the current key {current} is not enabled"
    );
    let others: BTreeMap<&String, bool> = state
        .iter()
        .filter(|(id, _)| **id != current)
        .map(|(id, e)| (id, *e))
        .collect();
    match policy {
        OldKeyAction::Delete => ensure!(others.is_empty(), "delete: keys besides the current one: {others:?}"),
        OldKeyAction::Disable => ensure!(
            others.len() <= 1 && others.iter().all(|(id, enabled)| Some(*id) == previous.as_ref() && !enabled),
            "disable: besides the current key only the previous one, disabled, may remain: {others:?} (previous {previous:?})"
        ),
        OldKeyAction::KeepPrevious => ensure!(
            others.len() == usize::from(previous.is_some())
                && others.iter().all(|(id, enabled)| Some(*id) == previous.as_ref() && *enabled),
            "keep-previous: exactly the previous key, enabled, besides the current one: {others:?} (previous {previous:?})"
        ),
    }
    for (value, key) in [
        (&current_value, Some(&current)),
        (&previous_value, previous.as_ref()),
    ] {
        let (Some(key), Some(plans)) = (
            key,
            value
                .as_ref()
                .and_then(|v| v.get("usage_plan_ids"))
                .and_then(Value::as_array),
        ) else {
            continue;
        };
        if !state.contains_key(key) {
            continue;
        }
        let want: BTreeSet<String> = plans
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        let on = plans_of(w, key).await?;
        ensure!(
            on == want,
            "key {key} is on {on:?}; its version names {want:?}"
        );
    }
    let versions = w.versions(&o.arn).await?;
    ensure!(
        !versions
            .values()
            .any(|s| s.iter().any(|l| l == AWSPENDING) && !s.iter().any(|l| l == AWSCURRENT)),
        "AWSPENDING left off AWSCURRENT: {versions:?}"
    );
    for (id, before) in &o.outside {
        let now = match w.key(id).await? {
            Some(k) => Some((k.enabled(), plans_of(w, id).await?)),
            None => None,
        };
        ensure!(
            now.as_ref() == Some(before),
            "key {id} outside the secret changed: {now:?}"
        );
    }
    Ok(())
}

pub(crate) async fn rotate_checked(
    w: &World,
    r: &AwsRotator,
    o: &mut Owned,
    policy: OldKeyAction,
    what: &str,
) -> R<String> {
    let (token, errors) = rotate_as_aws(w, r, &o.arn, 1).await?;
    ensure!(errors.is_empty(), "{what}: the rotation failed: {errors:?}");
    invariant(w, o, policy)
        .await
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(token)
}

/// For each policy, three rotations in a row from each start the issue names: a first key made
/// by hand and named exactly the KeyName; an adopted `{"api_key_id"}`; the KeyName tag changed
/// between rotations; the UsagePlan tag moved between rotations. The invariant after each.
pub async fn every_key_the_secret_held_is_retired_by_its_policy(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    for policy in POLICIES {
        for start in ["migrated", "adopted", "renamed", "plan moved"] {
            let mut o = given(
                &w,
                if start == "adopted" {
                    Start::Adopted
                } else {
                    Start::Migrated
                },
                policy,
            )
            .await?;
            for n in 1..=3 {
                if n > 1 && start == "renamed" {
                    let name = format!("{}-r{n}", o.key_name);
                    set_tag(&w, &o.arn, "KeyName", &name).await?;
                }
                if n == 2 && start == "plan moved" {
                    set_tag(&w, &o.arn, "UsagePlan", &o.plans[1]).await?;
                }
                rotate_checked(
                    &w,
                    &r,
                    &mut o,
                    policy,
                    &format!("{policy}, {start}, rotation {n}"),
                )
                .await?;
            }
        }
    }
    Ok(())
}

/// Sequence 1: createSecret makes and attaches a key, then PutSecretValue fails; the KeyName is
/// renamed before the re-run, which makes a key under the new name. The first key is gone by the
/// end of that rotation. Also sequence 2's lost CreateApiKey answer with a rename before
/// finishSecret: the duplicate is deleted.
pub async fn a_key_made_before_a_keyname_change_is_retired(w: Arc<World>) -> R<()> {
    let proxy = Proxy::start(&w.endpoint).await?;
    let r = w.rotator(&proxy.endpoint, crate::cases::config()).await?;
    for policy in [
        OldKeyAction::KeepPrevious,
        OldKeyAction::Disable,
        OldKeyAction::Delete,
    ] {
        let mut o = given(&w, Start::Migrated, policy).await?;
        rotate_checked(&w, &r, &mut o, policy, "before").await?;
        // 1: the put fails past the SDK's retries; the key is made and attached.
        let token = w.open_rotation(&o.arn).await?;
        proxy.inject_in(
            Some("createSecret"),
            "PutSecretValue",
            Fault::FailBefore,
            u32::MAX,
        );
        proxy.set_phase(Some("createSecret"));
        let failed = r
            .handle(&World::event("createSecret", &o.arn, &token))
            .await;
        proxy.set_phase(None);
        proxy.clear();
        ensure!(failed.is_err(), "createSecret did not fail");
        let first = w
            .keys_with_prefix(&format!("{}-{token}", o.key_name))
            .await?;
        ensure!(
            first.len() == 1,
            "expected the one key of the failed try: {}",
            first.len()
        );
        let renamed = format!("{}-renamed", o.key_name);
        set_tag(&w, &o.arn, "KeyName", &renamed).await?;
        World::drive(&r, &o.arn, &token, 3, || {}).await?;
        invariant(&w, &mut o, policy)
            .await
            .map_err(|e| format!("{policy}, sequence 1: {e}"))?;
        let id = first[0].id().unwrap_or_default().to_owned();
        ensure!(
            w.key(&id).await?.is_none(),
            "{policy}: the key made before the rename survived"
        );

        // 2: CreateApiKey's answer is lost once, the SDK makes a second key; KeyName changes
        // after createSecret; finishSecret deletes the loser.
        let token = w.open_rotation(&o.arn).await?;
        proxy.inject_in(Some("createSecret"), "CreateApiKey", Fault::LoseAnswer, 1);
        proxy.set_phase(Some("createSecret"));
        r.handle(&World::event("createSecret", &o.arn, &token))
            .await?;
        proxy.set_phase(None);
        proxy.clear();
        let made = w.keys_with_prefix(&format!("{renamed}-{token}")).await?;
        ensure!(
            made.len() == 2,
            "{policy}: the lost answer did not make a duplicate ({})",
            made.len()
        );
        set_tag(&w, &o.arn, "KeyName", &format!("{}-again", o.key_name)).await?;
        for step in &STEPS[1..] {
            r.handle(&World::event(step, &o.arn, &token)).await?;
        }
        invariant(&w, &mut o, policy)
            .await
            .map_err(|e| format!("{policy}, sequence 2: {e}"))?;
        let left = w.keys_with_prefix(&format!("{renamed}-{token}")).await?;
        ensure!(
            left.len() == 1,
            "{policy}: the duplicate survived the rename ({})",
            left.len()
        );
    }
    Ok(())
}

/// Sequence 3: a late replay of the previous rotation's finishSecret while the next rotation is
/// open leaves the open rotation's key alone.
pub async fn a_late_finish_leaves_the_open_rotation_alone(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    for policy in POLICIES {
        let mut o = given(&w, Start::Migrated, policy).await?;
        rotate_checked(&w, &r, &mut o, policy, "first").await?;
        let last = rotate_checked(&w, &r, &mut o, policy, "second").await?;
        let token = w.open_rotation(&o.arn).await?;
        r.handle(&World::event("createSecret", &o.arn, &token))
            .await?;
        let open =
            w.sm.get_secret_value()
                .secret_id(&o.arn)
                .version_id(&token)
                .send()
                .await?;
        let open: Value = serde_json::from_str(open.secret_string().unwrap_or("{}"))?;
        let open_key = open["api_key_id"].as_str().unwrap_or_default().to_owned();
        r.handle(&World::event("finishSecret", &o.arn, &last))
            .await?;
        ensure!(
            w.key(&open_key).await?.is_some(),
            "{policy}: the late finishSecret deleted the open rotation's key"
        );
        for step in &STEPS[1..] {
            r.handle(&World::event(step, &o.arn, &token)).await?;
        }
        invariant(&w, &mut o, policy)
            .await
            .map_err(|e| format!("{policy}: {e}"))?;
    }
    Ok(())
}

/// The documented roll-back (docs/operations.md): re-enable the previous key under `disable`,
/// move AWSCURRENT back to the AWSPREVIOUS version, remove AWSPENDING wherever it is.
async fn roll_back(w: &World, o: &Owned, clear_pending: bool) -> R<String> {
    let versions = w.versions(&o.arn).await?;
    let with = |label: &str| {
        versions
            .iter()
            .find(|(_, s)| s.iter().any(|l| l == label))
            .map(|(v, _)| v.clone())
    };
    let current = with(AWSCURRENT).ok_or("no AWSCURRENT")?;
    let previous = with(AWSPREVIOUS).ok_or("no AWSPREVIOUS")?;
    let previous_key =
        str_field(&w.value(&o.arn, AWSPREVIOUS).await?, "api_key_id").ok_or("no previous key")?;
    w.set_key_enabled(&previous_key, true).await?;
    w.sm.update_secret_version_stage()
        .secret_id(&o.arn)
        .version_stage(AWSCURRENT)
        .move_to_version_id(&previous)
        .remove_from_version_id(&current)
        .send()
        .await?;
    // Wherever AWSPENDING is (the earlier release left it on AWSCURRENT): the roll-back ends
    // every rotation in progress.
    if let (true, Some(pending)) = (clear_pending, with(AWSPENDING)) {
        w.sm.update_secret_version_stage()
            .secret_id(&o.arn)
            .version_stage(AWSPENDING)
            .remove_from_version_id(&pending)
            .send()
            .await?;
    }
    Ok(previous_key)
}

/// Sequence 6: roll-back as documented under `keep-previous` and `disable`, then a new rotation:
/// the key clients went back to is kept as the previous one and the version rolled back from is
/// never promoted again. With AWSPENDING forgotten, Secrets Manager re-runs the rolled-back
/// version: the function refuses it and changes nothing.
pub async fn a_roll_back_then_a_rotation_keeps_the_key_clients_went_back_to(
    w: Arc<World>,
) -> R<()> {
    let r = rotator(&w).await?;
    for policy in [OldKeyAction::KeepPrevious, OldKeyAction::Disable] {
        let mut o = given(&w, Start::Migrated, policy).await?;
        rotate_checked(&w, &r, &mut o, policy, "first").await?;
        rotate_checked(&w, &r, &mut o, policy, "second").await?;
        let back_to = roll_back(&w, &o, true).await?;
        ensure!(
            str_field(&w.value(&o.arn, AWSCURRENT).await?, "api_key_value").map(|v| v.len())
                > Some(0),
            "no current value after the roll-back"
        );
        let value =
            str_field(&w.value(&o.arn, AWSCURRENT).await?, "api_key_value").unwrap_or_default();
        ensure!(
            w.call_stage(&o.api, &value).await? == 200,
            "{policy}: the rolled-back key does not work"
        );
        rotate_checked(&w, &r, &mut o, policy, "after the roll-back").await?;
        let previous = str_field(&w.value(&o.arn, AWSPREVIOUS).await?, "api_key_id");
        ensure!(
            previous.as_deref() == Some(back_to.as_str()),
            "{policy}: the key clients went back to is not the previous one"
        );

        // A secret the earlier release rotated (it left AWSPENDING on the AWSCURRENT version),
        // rolled back with AWSPENDING forgotten: the re-run of the rolled-back version is
        // refused, and nothing moves.
        let fourth = rotate_checked(&w, &r, &mut o, policy, "fourth").await?;
        w.sm.update_secret_version_stage()
            .secret_id(&o.arn)
            .version_stage(AWSPENDING)
            .move_to_version_id(&fourth)
            .send()
            .await?;
        roll_back(&w, &o, false).await?;
        let before = w.snapshot(&o.arn, &[&o.plans[0]]).await?;
        let (token, errors) = rotate_as_aws(&w, &r, &o.arn, 2).await?;
        ensure!(
            errors.len() == 2,
            "{policy}: the rolled-back version was carried on: {errors:?}"
        );
        ensure!(
            errors
                .iter()
                .all(|e| e.kind == ErrorKind::RotationState && e.cause.contains("rolled back")),
            "{policy}: {errors:?}"
        );
        ensure!(
            before == w.snapshot(&o.arn, &[&o.plans[0]]).await?,
            "{policy}: refusing changed something"
        );
        // As the error says: remove AWSPENDING, rotate again.
        w.sm.update_secret_version_stage()
            .secret_id(&o.arn)
            .version_stage(AWSPENDING)
            .remove_from_version_id(&token)
            .send()
            .await?;
        rotate_checked(&w, &r, &mut o, policy, "after the forgotten AWSPENDING").await?;
    }
    Ok(())
}

/// What the model test's fakes do in their LocalStack mode, checked against LocalStack through
/// the same ports: UpdateSecretVersionStage refuses a wrong or missing RemoveFromVersionId;
/// AWSPREVIOUS moves with AWSCURRENT; a key created with tags shows them, and one tagged later
/// shows them through GetTags only. Versions: AWS documents them as immutable (a second
/// PutSecretValue of another value with the same token is refused), and the fakes' AWS mode
/// keeps that; LocalStack overwrites the version, and its mode does too, so the model runs the
/// rotation under both.
pub async fn the_model_fakes_behave_as_the_local_aws(w: Arc<World>) -> R<()> {
    let r = rotator(&w).await?;
    let arn = w.create_secret(Some("{}"), &[("KeyName", "diff")]).await?;
    let token = w.open_rotation(&arn).await?;
    let local = observe(&r.secrets, &r.keys, &arn, &token, &w.unique("diff")).await?;

    let account = fakes::Account::new(fakes::Playing::LocalStack);
    let farn = account.add_secret("diff", Some("{}".into()), &[]);
    let ftoken = "11111111-2222-3333-4444-555555555555";
    account.rotate_secret(&farn, ftoken);
    let fake = observe(
        &fakes::FakeSecrets(account.clone()),
        &fakes::FakeGateway(account.clone()),
        &farn,
        ftoken,
        "diff-key",
    )
    .await?;
    ensure!(
        local == fake,
        "the fakes differ from the local AWS:\n  local AWS {local:#?}\n  fakes     {fake:#?}"
    );
    Ok(())
}

/// One behaviour observed through the ports: what was done, and what the service answered.
pub(crate) type Row = (String, String);

fn row(what: &str, answer: impl std::fmt::Display) -> Row {
    (what.to_owned(), answer.to_string())
}

/// Secrets Manager and API Gateway, through the function's own ports, on the behaviours the
/// model relies on. Every call's answer is a row; only a call the rest needs stops it.
pub(crate) async fn observe<S: SecretStore, K: KeyGateway>(
    s: &S,
    k: &K,
    arn: &str,
    token: &str,
    key_name: &str,
) -> R<Vec<Row>> {
    let aws =
        |e: api_key_rotator::error::AwsError| -> crate::support::BoxError { e.to_string().into() };
    let mut seen = Vec::new();
    let first = s
        .put_pending(arn, token, &SecretText("one".into()), None)
        .await;
    seen.push(row("first put ok", first.is_ok()));
    let same = s
        .put_pending(arn, token, &SecretText("one".into()), None)
        .await;
    seen.push(row("same value again ok", same.is_ok()));
    let other = s
        .put_pending(arn, token, &SecretText("two".into()), None)
        .await;
    seen.push(row("another value refused", other.is_err()));
    let read = s
        .get_value(arn, VersionRef::Id(token, None))
        .await
        .map_err(aws)?;
    seen.push(row("value", format!("{:?}", read.map(|t| t.0))));
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    let current = meta
        .version_with(AWSCURRENT)
        .ok_or("no AWSCURRENT")?
        .to_owned();
    let wrong = s
        .move_stage(arn, AWSCURRENT, Some(token), Some(token))
        .await;
    seen.push(row("wrong RemoveFromVersionId refused", wrong.is_err()));
    let none = s.move_stage(arn, AWSCURRENT, Some(token), None).await;
    seen.push(row("missing RemoveFromVersionId refused", none.is_err()));
    s.move_stage(arn, AWSCURRENT, Some(token), Some(&current))
        .await
        .map_err(aws)?;
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    let sorted = |v: Option<&[String]>| {
        let mut v = v.map(<[String]>::to_vec).unwrap_or_default();
        v.sort();
        v
    };
    seen.push(row(
        "after the move",
        format!(
            "token {:?}, old {:?}",
            sorted(meta.stages_of(token)),
            sorted(meta.stages_of(&current))
        ),
    ));
    let made = k
        .create_key(&NewKey {
            name: key_name.to_owned(),
            description: None,
            customer_id: None,
            tags: BTreeMap::from([
                (TIE_TAG.to_owned(), arn.to_owned()),
                ("a".to_owned(), "b".to_owned()),
            ]),
        })
        .await
        .map_err(aws)?;
    let got = k.get_key(&made.id).await.map_err(aws)?.ok_or("no key")?;
    seen.push(row(
        "created with tags, GetApiKey shows",
        format!("{:?}", got.tags.keys().collect::<Vec<_>>()),
    ));
    let listed = k.find_keys_with_prefix(key_name).await.map_err(aws)?;
    seen.push(row(
        "GetApiKeys shows",
        format!(
            "{:?}",
            listed
                .iter()
                .map(|l| l.tags.keys().cloned().collect::<Vec<_>>())
                .collect::<Vec<_>>()
        ),
    ));
    let later = BTreeMap::from([("later".to_owned(), "x".to_owned())]);
    seen.push(row(
        "TagResource on the key",
        answer(&k.tag_key(&made.id, &later).await),
    ));
    seen.push(row(
        "tagged later, GetApiKey shows",
        match k.get_key(&made.id).await {
            Ok(Some(got)) => format!("{:?}", got.tags.keys().collect::<Vec<_>>()),
            other => answer(&other),
        },
    ));
    seen.push(row(
        "tagged later, GetTags shows",
        match k.key_tags(&made.id).await {
            Ok(tags) => format!("{:?}", tags.keys().collect::<Vec<_>>()),
            other => answer(&other),
        },
    ));
    k.delete_key(&made.id).await.map_err(aws)?;
    seen.push(row(
        "deleted",
        k.get_key(&made.id).await.map_err(aws)?.is_none(),
    ));
    seen.extend(observe_missing_key_writes(k, &made.id).await?);
    seen.extend(observe_tag_limits(k, arn, key_name).await?);
    Ok(seen)
}

/// What an AWS call answered: `ok`, or its error code.
pub(crate) fn answer<T>(r: &Result<T, api_key_rotator::error::AwsError>) -> String {
    match r {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.code.clone().unwrap_or_else(|| e.message.clone()),
    }
}

/// Writes to a key that no longer exists (issue 20): API Gateway answers NotFoundException to
/// UpdateApiKey and TagResource; the adapter reads NotFound as done for DeleteApiKey (nothing
/// deleted), DeleteUsagePlanKey and GetTags (no tags).
async fn observe_missing_key_writes<K: KeyGateway>(k: &K, gone: &str) -> R<Vec<Row>> {
    let mut seen = Vec::new();
    seen.push(row(
        "UpdateApiKey on a missing key",
        answer(&k.set_key_enabled(gone, false).await),
    ));
    let tag = BTreeMap::from([("x".to_owned(), "y".to_owned())]);
    seen.push(row(
        "TagResource on a missing key",
        answer(&k.tag_key(gone, &tag).await),
    ));
    seen.push(row(
        "DeleteApiKey on a missing key",
        format!(
            "{}, deleted {:?}",
            answer(&k.delete_key(gone).await),
            k.delete_key_if_present(gone).await.ok()
        ),
    ));
    seen.push(row(
        "DeleteUsagePlanKey on a missing key and plan",
        answer(&k.detach("nosuchplan", gone).await),
    ));
    seen.push(row(
        "CreateUsagePlanKey on a missing plan",
        answer(&k.attach("nosuchplan", gone).await),
    ));
    seen.push(row(
        "GetTags on a missing key",
        format!("{:?}", k.key_tags(gone).await.ok()),
    ));
    Ok(seen)
}

/// API Gateway's tag limits on CreateApiKey and TagResource (issue 20): values of up to 256
/// characters, keys of up to 128, 50 tags a resource.
async fn observe_tag_limits<K: KeyGateway>(k: &K, arn: &str, key_name: &str) -> R<Vec<Row>> {
    let mut seen = Vec::new();
    let tie = (TIE_TAG.to_owned(), arn.to_owned());
    let mut made = Vec::new();
    let create = |tags: Vec<(String, String)>, what: &'static str| {
        let key = NewKey {
            name: format!("{key_name}-limits"),
            description: None,
            customer_id: None,
            tags: std::iter::once(tie.clone()).chain(tags).collect(),
        };
        async move { (what, k.create_key(&key).await) }
    };
    let cases = [
        (
            vec![("a".to_owned(), "v".repeat(256))],
            "a 256-character tag value",
        ),
        (
            vec![("a".to_owned(), "v".repeat(257))],
            "a 257-character tag value",
        ),
        (
            vec![("k".repeat(128), "v".to_owned())],
            "a 128-character tag key",
        ),
        (
            vec![("k".repeat(129), "v".to_owned())],
            "a 129-character tag key",
        ),
        (
            (0..49).map(|i| (format!("t{i}"), "v".to_owned())).collect(),
            "50 tags",
        ),
        (
            (0..50).map(|i| (format!("t{i}"), "v".to_owned())).collect(),
            "51 tags",
        ),
    ];
    for (tags, what) in cases {
        let (what, out) = create(tags, what).await;
        seen.push(row(&format!("CreateApiKey with {what}"), answer(&out)));
        if let Ok(key) = out {
            made.push(key.id);
        }
    }
    // TagResource on a key made with the tie tag alone.
    let (_, base) = create(Vec::new(), "").await;
    let base = base.map_err(|e| e.to_string())?;
    made.push(base.id.clone());
    let tag = |n: usize, value: String| -> BTreeMap<String, String> {
        (0..n)
            .map(|i| (format!("later{i}"), value.clone()))
            .collect()
    };
    seen.push(row(
        "TagResource with a 257-character value",
        answer(&k.tag_key(&base.id, &tag(1, "v".repeat(257))).await),
    ));
    seen.push(row(
        "TagResource up to 50 tags",
        answer(&k.tag_key(&base.id, &tag(49, "v".to_owned())).await),
    ));
    let one_more = BTreeMap::from([("onemore".to_owned(), "v".to_owned())]);
    seen.push(row(
        "TagResource to 51 tags",
        answer(&k.tag_key(&base.id, &one_more).await),
    ));
    for id in made {
        let _ = k.delete_key(&id).await;
    }
    Ok(seen)
}
