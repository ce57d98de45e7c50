//! The model's fakes in their AWS mode, held to moto (the Python AWS mock, a local server on
//! loopback) through the function's own ports and adapters, on every behaviour where moto's
//! source (5.2.5, pinned in tools/moto-constraints.txt) does what AWS documents. The behaviours
//! where it does not are listed in `NOT_FAITHFUL` with the reason, and printed by the case.

use std::collections::BTreeMap;
use std::sync::Arc;

use api_key_rotator::aws::{AwsKeyGateway, AwsSecretStore};
use api_key_rotator::config::TIE_TAG;
use api_key_rotator::ports::{
    KeyGateway, NewKey, SecretStore, SecretText, VersionRef, AWSCURRENT, AWSPENDING, AWSPREVIOUS,
};
use aws_sdk_apigateway::types::{ApiStage, IntegrationType};

use crate::ensure;
use crate::fakes;
use crate::ownership::{answer, observe, Row};
use crate::support::moto::Moto;
use crate::support::world::{fast_sdk, sdk_config, World};
use crate::support::R;

/// Where moto 5.2.5 is not faithful to AWS: the behaviour (a row of the observation, or one
/// that is not observed at all) and why. Rows named here are observed and printed, not compared.
const NOT_FAITHFUL: &[(&str, &str)] = &[
    (
        "another value refused",
        "moto lets PutSecretValue overwrite a version that holds AWSPENDING \
         (_check_with_existing_secrets_and_versions returns early for it); AWS refuses another \
         value under an existing ClientRequestToken (held below on a version without AWSPENDING)",
    ),
    (
        "value",
        "follows from the overwrite above: moto holds the second value",
    ),
    (
        "TagResource on the key",
        "moto's TagResource and GetTags serve REST API stages only: an API key's ARN is a 404 \
         from its router",
    ),
    ("tagged later, GetApiKey shows", "as TagResource on the key"),
    ("tagged later, GetTags shows", "as TagResource on the key"),
    ("TagResource on a missing key", "as TagResource on the key"),
    (
        "GetTags on a missing key",
        "as TagResource on the key (moto's 404 is its router's, for any key)",
    ),
    (
        "TagResource with a 257-character value",
        "as TagResource on the key",
    ),
    ("TagResource up to 50 tags", "as TagResource on the key"),
    ("TagResource to 51 tags", "as TagResource on the key"),
    (
        "DeleteUsagePlanKey on a missing key and plan",
        "moto raises a KeyError (500) for a plan it never saw; AWS answers NotFoundException",
    ),
    (
        "CreateUsagePlanKey on a missing plan",
        "moto never looks the plan up (its NotFoundException is for the missing key; \
         an existing key is attached to a plan that does not exist)",
    ),
    (
        "CreateApiKey with a 257-character tag value",
        "moto enforces none of API Gateway's tag limits",
    ),
    (
        "CreateApiKey with a 129-character tag key",
        "moto enforces none of API Gateway's tag limits",
    ),
    (
        "CreateApiKey with 51 tags",
        "moto enforces none of API Gateway's tag limits",
    ),
];

/// Where moto is not faithful and nothing is observed: printed with the exempt rows.
const NOT_OBSERVED: &[(&str, &str)] = &[
    (
        "RotateSecret while AWSPENDING sits on another version than AWSCURRENT",
        "moto's check is inverted: it refuses when AWSPENDING sits with AWSCURRENT, and opens a \
         new version over an unfinished rotation",
    ),
    (
        "RotateSecret runs the rotation function",
        "moto invokes it through Docker; with no such function it answers \
         ResourceNotFoundException after it opened the valueless AWSPENDING version, so the \
         answer is not compared and the opened version is",
    ),
    (
        "a key on two usage plans that cover one API stage",
        "moto's CreateUsagePlanKey checks neither the plan nor its stages",
    ),
    (
        "DescribeSecret's VersionIdsToStages",
        "moto lists a version that lost its last label, with no labels (AWS lists labelled \
         versions only); the adapter drops empty ones, so the ports see the same",
    ),
    (
        "UpdateSecretVersionStage without RemoveFromVersionId for a label other than \
         AWSCURRENT held elsewhere",
        "moto puts the label on a second version; AWS refuses",
    ),
    (
        "GetSecretValue with a VersionId and a VersionStage that version does not hold",
        "moto answers InvalidRequestException, from a test of its own not verified against \
         AWS, and AWS documents no answer; the fakes answer as for no value",
    ),
];

pub async fn the_model_fakes_in_aws_mode_behave_as_moto(w: Arc<World>) -> R<()> {
    let moto = tokio::task::spawn_blocking(Moto::start).await??;
    let sdk = sdk_config(&moto.endpoint, &fast_sdk()).await;
    let sm = aws_sdk_secretsmanager::Client::new(&sdk);
    let ag = aws_sdk_apigateway::Client::new(&sdk);

    // moto: a secret, and RotateSecret opening the token's version.
    let token = w.token();
    let arn = sm
        .create_secret()
        .name(w.unique("moto-secret"))
        .secret_string("{}")
        .send()
        .await?
        .arn()
        .ok_or("moto's CreateSecret gave no ARN")?
        .to_owned();
    let rotated = sm
        .rotate_secret()
        .secret_id(&arn)
        .client_request_token(&token)
        .rotation_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:absent")
        .send()
        .await;
    if let Err(e) = rotated {
        ensure!(
            e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()),
            "moto's RotateSecret: {e:?}"
        );
    }
    let plan = moto_plan(&ag, &w).await?;
    let theirs = observe_all(
        &AwsSecretStore::new(&sdk),
        &AwsKeyGateway::new(&sdk),
        &arn,
        &token,
        &w.token(),
        &plan,
        &w.unique("moto"),
    )
    .await
    .map_err(|e| format!("on moto: {e}; log: {}", moto.log_path().display()))?;

    // The fakes, in their AWS mode, from the same start.
    let account = fakes::Account::new(fakes::Playing::Aws);
    let farn = account.add_secret("moto", Some("{}".into()), &[]);
    let ftoken = "11111111-2222-3333-4444-555555555555";
    account.rotate_secret(&farn, ftoken);
    account.add_plan("plan1", "api1");
    let ours = observe_all(
        &fakes::FakeSecrets(account.clone()),
        &fakes::FakeGateway(account.clone()),
        &farn,
        ftoken,
        "66666666-7777-8888-9999-000000000000",
        "plan1",
        "moto-key",
    )
    .await
    .map_err(|e| format!("on the fakes: {e}"))?;
    ensure!(
        lock_violations(&account).is_empty(),
        "the observation broke the fakes' rules: {:?}",
        lock_violations(&account)
    );

    let compared = compare(&theirs, &ours)?;
    ensure!(
        compared >= 20,
        "only {compared} behaviours compared: the observation lost rows"
    );
    Ok(())
}

fn lock_violations(account: &fakes::Account) -> Vec<String> {
    fakes::lock(&account.violations).clone()
}

/// Every row where moto is faithful must agree; the others are printed with the reason. Fails
/// on a difference, on rows that do not line up, and on an exemption no row uses.
fn compare(theirs: &[Row], ours: &[Row]) -> R<usize> {
    let names = |rows: &[Row]| rows.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    ensure!(
        names(theirs) == names(ours),
        "the observations do not line up:\n  moto  {:?}\n  fakes {:?}",
        names(theirs),
        names(ours)
    );
    for (exempt, _) in NOT_FAITHFUL {
        ensure!(
            theirs.iter().any(|(n, _)| n == exempt),
            "the exemption {exempt:?} names no observed behaviour"
        );
    }
    let reasons: BTreeMap<&str, &str> = NOT_FAITHFUL.iter().copied().collect();
    let (mut compared, mut differ) = (0, Vec::new());
    for ((name, moto), (_, fake)) in theirs.iter().zip(ours) {
        if let Some(why) = reasons.get(name.as_str()) {
            println!("    not compared: {name}: moto {moto:?}, fakes {fake:?} ({why})");
        } else {
            compared += 1;
            println!("    compared: {name}: {moto}");
            if moto != fake {
                differ.push(format!("{name}: moto {moto:?}, fakes {fake:?}"));
            }
        }
    }
    for (what, why) in NOT_OBSERVED {
        println!("    not observed: {what} ({why})");
    }
    println!("    compared with moto: {compared} behaviours");
    ensure!(
        differ.is_empty(),
        "the fakes' AWS mode differs from moto where moto is faithful:\n  {}",
        differ.join("\n  ")
    );
    Ok(compared)
}

/// A REST API with a GET / deployed to `prod`, and a usage plan covering it, on moto.
async fn moto_plan(ag: &aws_sdk_apigateway::Client, w: &World) -> R<String> {
    let api = ag
        .create_rest_api()
        .name(w.unique("moto-api"))
        .send()
        .await?
        .id()
        .ok_or("no API id")?
        .to_owned();
    let root = ag
        .get_resources()
        .rest_api_id(&api)
        .send()
        .await?
        .items()
        .iter()
        .find(|r| r.path() == Some("/"))
        .and_then(|r| r.id())
        .ok_or("no root resource")?
        .to_owned();
    ag.put_method()
        .rest_api_id(&api)
        .resource_id(&root)
        .http_method("GET")
        .authorization_type("NONE")
        .api_key_required(true)
        .send()
        .await?;
    ag.put_integration()
        .rest_api_id(&api)
        .resource_id(&root)
        .http_method("GET")
        .r#type(IntegrationType::Mock)
        .send()
        .await?;
    ag.create_deployment()
        .rest_api_id(&api)
        .stage_name("prod")
        .send()
        .await?;
    Ok(ag
        .create_usage_plan()
        .name(w.unique("moto-plan"))
        .api_stages(ApiStage::builder().api_id(&api).stage("prod").build())
        .send()
        .await?
        .id()
        .ok_or("no plan id")?
        .to_owned())
}

/// A version's labels, sorted; `None` when DescribeSecret lists no labels for it.
fn labels(meta: &api_key_rotator::ports::SecretMetadata, version: &str) -> String {
    let mut v = meta.stages_of(version).map(<[String]>::to_vec);
    if let Some(v) = v.as_mut() {
        v.sort();
    }
    format!("{v:?}")
}

fn row(what: &str, answer: impl std::fmt::Display) -> Row {
    (what.to_owned(), answer.to_string())
}

/// The opened rotation, `observe` (shared with the LocalStack case), then versions and usage
/// plans, which moto models as AWS does.
async fn observe_all<S: SecretStore, K: KeyGateway>(
    s: &S,
    k: &K,
    arn: &str,
    token: &str,
    next: &str,
    plan: &str,
    key_name: &str,
) -> R<Vec<Row>> {
    let aws =
        |e: api_key_rotator::error::AwsError| -> crate::support::BoxError { e.to_string().into() };
    let mut seen = Vec::new();
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    let first = meta
        .version_with(AWSCURRENT)
        .ok_or("no AWSCURRENT")?
        .to_owned();
    seen.push(row(
        "RotateSecret opened the token's version, labelled",
        labels(&meta, token),
    ));
    seen.push(row(
        "GetSecretValue on the opened version",
        format!(
            "{:?}",
            s.get_value(arn, VersionRef::Id(token, Some(AWSPENDING)))
                .await
                .map_err(aws)?
                .map(|t| t.0)
        ),
    ));
    seen.push(row(
        "GetSecretValue on AWSPENDING",
        format!(
            "{:?}",
            s.get_value(arn, VersionRef::Stage(AWSPENDING))
                .await
                .map_err(aws)?
                .map(|t| t.0)
        ),
    ));

    seen.extend(observe(s, k, arn, token, key_name).await?);

    // The first version now holds AWSPREVIOUS only: versions are immutable, and a version that
    // loses its last label is kept, readable by its id.
    let other = SecretText("another".into());
    seen.push(row(
        "PutSecretValue of another value under a version's token without AWSPENDING",
        answer(&s.put_pending(arn, &first, &other, None).await),
    ));
    let same = SecretText("{}".into());
    seen.push(row(
        "PutSecretValue of the same value under that token",
        answer(&s.put_pending(arn, &first, &same, None).await),
    ));
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    seen.push(row(
        "after both, that version is labelled",
        labels(&meta, &first),
    ));
    seen.push(row(
        "AWSPREVIOUS removed from it",
        answer(&s.move_stage(arn, AWSPREVIOUS, None, Some(&first)).await),
    ));
    seen.push(row(
        "its value, read by id once unlabelled",
        format!(
            "{:?}",
            s.get_value(arn, VersionRef::Id(&first, None))
                .await
                .map_err(aws)?
                .map(|t| t.0)
        ),
    ));
    seen.push(row(
        "AWSPREVIOUS back onto it",
        answer(&s.move_stage(arn, AWSPREVIOUS, Some(&first), None).await),
    ));
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    seen.push(row("then labelled", labels(&meta, &first)));

    // A value under a new token takes AWSPENDING from the version that held it.
    seen.push(row(
        "PutSecretValue under a new token",
        answer(
            &s.put_pending(arn, next, &SecretText("three".into()), None)
                .await,
        ),
    ));
    let meta = s.describe(arn).await.map_err(aws)?.ok_or("no secret")?;
    seen.push(row(
        "then the new version and the last one are labelled",
        format!("{} {}", labels(&meta, next), labels(&meta, token)),
    ));

    seen.extend(observe_plans(k, plan, arn, key_name).await?);
    Ok(seen)
}

/// A usage plan and a key on it: attach, list, disable, detach, and the missing cases.
async fn observe_plans<K: KeyGateway>(k: &K, plan: &str, arn: &str, key_name: &str) -> R<Vec<Row>> {
    let aws =
        |e: api_key_rotator::error::AwsError| -> crate::support::BoxError { e.to_string().into() };
    let mut seen = Vec::new();
    let got = k.get_usage_plan(plan).await.map_err(aws)?;
    seen.push(row(
        "GetUsagePlan shows its stages",
        format!(
            "{:?}",
            got.map(|p| p
                .api_stages
                .into_iter()
                .map(|(_, st)| st)
                .collect::<Vec<_>>())
        ),
    ));
    seen.push(row(
        "GetUsagePlan on a missing plan",
        format!(
            "{:?}",
            k.get_usage_plan("nosuchplan").await.map_err(aws)?.is_some()
        ),
    ));
    let key = k
        .create_key(&NewKey {
            name: format!("{key_name}-plans"),
            description: Some("observed".to_owned()),
            customer_id: Some("customer".to_owned()),
            tags: BTreeMap::from([(TIE_TAG.to_owned(), arn.to_owned())]),
        })
        .await
        .map_err(aws)?;
    seen.push(row(
        "a new key is enabled, with its description and customer",
        format!(
            "{} {:?} {:?}",
            key.enabled, key.description, key.customer_id
        ),
    ));
    let on_plans =
        |plans: Vec<String>| format!("{:?}", plans.iter().map(|p| p == plan).collect::<Vec<_>>());
    seen.push(row(
        "GetUsagePlans of a key on no plan",
        on_plans(k.plans_of_key(&key.id).await.map_err(aws)?),
    ));
    seen.push(row(
        "CreateUsagePlanKey",
        answer(&k.attach(plan, &key.id).await),
    ));
    seen.push(row(
        "GetUsagePlans of the key",
        on_plans(k.plans_of_key(&key.id).await.map_err(aws)?),
    ));
    seen.push(row(
        "UpdateApiKey disables it",
        answer(&k.set_key_enabled(&key.id, false).await),
    ));
    seen.push(row(
        "GetApiKey then shows it enabled",
        format!(
            "{:?}",
            k.get_key(&key.id).await.map_err(aws)?.map(|g| g.enabled)
        ),
    ));
    seen.push(row(
        "GetApiKey shows its value",
        k.get_key(&key.id)
            .await
            .map_err(aws)?
            .is_some_and(|g| g.value.is_some()),
    ));
    seen.push(row(
        "DeleteUsagePlanKey",
        answer(&k.detach(plan, &key.id).await),
    ));
    seen.push(row(
        "GetUsagePlans of the key after",
        on_plans(k.plans_of_key(&key.id).await.map_err(aws)?),
    ));
    seen.push(row(
        "DeleteApiKey",
        format!("{:?}", k.delete_key_if_present(&key.id).await.ok()),
    ));
    seen.push(row(
        "CreateUsagePlanKey of a missing key on the plan",
        answer(&k.attach(plan, &key.id).await),
    ));
    seen.push(row(
        "GetApiKey on a missing key",
        format!("{:?}", k.get_key(&key.id).await.map_err(aws)?.is_some()),
    ));
    Ok(seen)
}
