//! The SDK adapters, tested with aws-smithy-mocks: the real adapter code and the SDK's own retry
//! logic run, with no network. Each test checks how a service answer maps to a domain result,
//! and how the call policy (`aws::throttle`) retries: throttling until the deadline, quota
//! refusals never, everything else through the SDK's ordinary retries.

use std::time::Duration;

use api_key_rotator::aws::{AwsKeyGateway, AwsSecretStore, SdkSettings};
use api_key_rotator::deadline::Invocation;
use api_key_rotator::ops::PlanIndex;
use api_key_rotator::ports::NewKey;
use api_key_rotator::ports::{KeyGateway, PlanCatalog, SecretCatalog, SecretStore, VersionRef};
use aws_sdk_apigateway::operation::create_api_key::{CreateApiKeyError, CreateApiKeyOutput};
use aws_sdk_apigateway::operation::create_usage_plan_key::{
    CreateUsagePlanKeyError, CreateUsagePlanKeyOutput,
};
use aws_sdk_apigateway::operation::delete_api_key::{DeleteApiKeyError, DeleteApiKeyOutput};
use aws_sdk_apigateway::operation::get_api_keys::GetApiKeysOutput;
use aws_sdk_apigateway::operation::get_usage_plan::{GetUsagePlanError, GetUsagePlanOutput};
use aws_sdk_apigateway::types::error::{
    ConflictException, LimitExceededException, NotFoundException, TooManyRequestsException,
};
use aws_sdk_apigateway::types::{ApiKey, ApiStage};
use aws_sdk_secretsmanager::operation::get_secret_value::{
    GetSecretValueError, GetSecretValueOutput,
};
use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{mock, mock_client, RuleMode};

/// The error metadata a real response carries (the code drives the SDK's retry classifier).
fn meta(code: &str) -> aws_smithy_types::error::ErrorMetadata {
    aws_smithy_types::error::ErrorMetadata::builder()
        .code(code)
        .build()
}

fn fast_retries(c: aws_sdk_apigateway::config::Builder) -> aws_sdk_apigateway::config::Builder {
    let s = SdkSettings {
        adaptive: false,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        ..SdkSettings::default()
    };
    c.retry_config(s.retry_config())
}

fn gateway(client: aws_sdk_apigateway::Client) -> AwsKeyGateway {
    AwsKeyGateway::from_client(client, "us-east-1".into())
}

#[tokio::test]
async fn a_missing_usage_plan_is_none_and_a_present_one_lists_its_stages() {
    let missing = mock!(aws_sdk_apigateway::Client::get_usage_plan)
        .match_requests(|r| r.usage_plan_id() == Some("gone"))
        .then_error(|| {
            GetUsagePlanError::NotFoundException(
                NotFoundException::builder()
                    .meta(meta("NotFoundException"))
                    .message("no")
                    .build(),
            )
        });
    let present = mock!(aws_sdk_apigateway::Client::get_usage_plan)
        .match_requests(|r| r.usage_plan_id() == Some("p1"))
        .then_output(|| {
            GetUsagePlanOutput::builder()
                .id("p1")
                .api_stages(ApiStage::builder().api_id("a1").stage("prod").build())
                .build()
        });
    let client = mock_client!(aws_sdk_apigateway, RuleMode::MatchAny, [&missing, &present]);
    let g = gateway(client);
    assert_eq!(g.get_usage_plan("gone").await, Ok(None));
    let plan = g.get_usage_plan("p1").await.ok().flatten();
    assert_eq!(
        plan.map(|p| p.api_stages),
        Some(vec![("a1".to_owned(), "prod".to_owned())])
    );
}

#[tokio::test]
async fn throttling_is_absorbed_by_the_sdk_retries() {
    let rule = mock!(aws_sdk_apigateway::Client::create_usage_plan_key)
        .sequence()
        .error(|| {
            CreateUsagePlanKeyError::TooManyRequestsException(
                TooManyRequestsException::builder()
                    .meta(meta("TooManyRequestsException"))
                    .build(),
            )
        })
        .times(2)
        .output(|| CreateUsagePlanKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    assert_eq!(gateway(client).attach("p1", "k1").await, Ok(()));
    assert_eq!(rule.num_calls(), 3);
}

#[tokio::test]
async fn an_already_attached_key_and_an_already_deleted_key_are_success() {
    let conflict = mock!(aws_sdk_apigateway::Client::create_usage_plan_key).then_error(|| {
        CreateUsagePlanKeyError::ConflictException(
            ConflictException::builder()
                .meta(meta("ConflictException"))
                .build(),
        )
    });
    let gone = mock!(aws_sdk_apigateway::Client::delete_api_key).then_error(|| {
        DeleteApiKeyError::NotFoundException(
            NotFoundException::builder()
                .meta(meta("NotFoundException"))
                .build(),
        )
    });
    let client = mock_client!(aws_sdk_apigateway, RuleMode::MatchAny, [&conflict, &gone]);
    let g = gateway(client);
    assert_eq!(g.attach("p1", "k1").await, Ok(()));
    assert_eq!(g.delete_key("k1").await, Ok(()));
}

fn too_many_requests() -> DeleteApiKeyError {
    DeleteApiKeyError::TooManyRequestsException(
        TooManyRequestsException::builder()
            .meta(meta("TooManyRequestsException"))
            .message("slow down")
            .build(),
    )
}

#[tokio::test]
async fn throttling_is_retried_past_max_attempts_and_spends_no_retry_quota() {
    // 150 refusals: the SDK's standard strategy would have stopped at 3 attempts, and its retry
    // quota (500 tokens, 5 a throttling retry) would be empty after 100.
    let rule = mock!(aws_sdk_apigateway::Client::delete_api_key)
        .sequence()
        .error(too_many_requests)
        .times(150)
        .output(|| DeleteApiKeyOutput::builder().build())
        .build();
    // Then a 5xx twice: the SDK's ordinary retries must still have their quota.
    let flaky = mock!(aws_sdk_apigateway::Client::create_usage_plan_key)
        .sequence()
        .http_status(500, None)
        .times(2)
        .output(|| CreateUsagePlanKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::MatchAny,
        [&rule, &flaky],
        fast_retries
    );
    let g = gateway(client);
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let outcome = invocation
        .scope(async { (g.delete_key("k1").await, g.attach("p1", "k1").await) })
        .await;
    assert_eq!(outcome, (Ok(()), Ok(())));
    assert_eq!(rule.num_calls(), 151);
    assert_eq!(flaky.num_calls(), 3);
    assert_eq!(invocation.throttled_calls(), 1);
    assert_eq!(invocation.throttled_responses(), 150);
}

#[tokio::test]
async fn throttling_gives_up_at_the_deadline_keeping_operation_and_code() {
    let rule = mock!(aws_sdk_apigateway::Client::delete_api_key).then_error(too_many_requests);
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::MatchAny,
        [&rule],
        fast_retries
    );
    let g = gateway(client);
    let invocation = Invocation::with_budget(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let err = invocation.scope(g.delete_key("k1")).await.err();
    let took = started.elapsed();
    assert_eq!(err.as_ref().map(|e| e.operation), Some("DeleteApiKey"));
    assert_eq!(
        err.as_ref().and_then(|e| e.code.clone()),
        Some("TooManyRequestsException".to_owned())
    );
    assert!(took < Duration::from_millis(400), "took {took:?}");
    assert!(rule.num_calls() > 3, "only {} calls", rule.num_calls());
    assert_eq!(invocation.throttled_calls(), 1);
}

#[tokio::test]
async fn server_errors_fail_after_the_sdks_ordinary_retries() {
    let rule = mock!(aws_sdk_apigateway::Client::create_usage_plan_key)
        .sequence()
        .http_status(500, None)
        .times(10)
        .output(|| CreateUsagePlanKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let err = invocation
        .scope(gateway(client).attach("p1", "k1"))
        .await
        .err();
    assert_eq!(err.map(|e| e.operation), Some("CreateUsagePlanKey"));
    assert_eq!(rule.num_calls(), 3);
    assert_eq!(invocation.throttled_calls(), 0);
}

#[tokio::test]
async fn a_quota_refusal_is_not_throttling_and_fails_at_once() {
    // API Gateway answers LimitExceededException at its 10,000 keys a region; the SDK's own
    // list counts that code as throttling.
    let rule = mock!(aws_sdk_apigateway::Client::create_api_key)
        .sequence()
        .error(|| {
            CreateApiKeyError::LimitExceededException(
                LimitExceededException::builder()
                    .meta(meta("LimitExceededException"))
                    .message("API key limit exceeded")
                    .build(),
            )
        })
        .times(5)
        .output(|| CreateApiKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let key = NewKey {
        name: "partner-tok".into(),
        description: None,
        customer_id: None,
        tags: Default::default(),
    };
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let err = invocation
        .scope(gateway(client).create_key(&key))
        .await
        .err();
    assert_eq!(
        err.and_then(|e| e.code),
        Some("LimitExceededException".to_owned())
    );
    assert_eq!(rule.num_calls(), 1);
    assert_eq!(invocation.throttled_calls(), 0);
}

#[tokio::test]
async fn no_call_is_sent_once_the_deadline_has_passed() {
    let rule = mock!(aws_sdk_apigateway::Client::delete_api_key)
        .then_output(|| DeleteApiKeyOutput::builder().build());
    let client = mock_client!(aws_sdk_apigateway, RuleMode::MatchAny, [&rule]);
    let invocation = Invocation::with_budget(Duration::ZERO);
    let err = invocation
        .scope(gateway(client).delete_key("k1"))
        .await
        .err();
    assert!(err.is_some_and(|e| e.message.contains("deadline")));
    assert_eq!(rule.num_calls(), 0);
}

#[tokio::test]
async fn secrets_manager_throttling_is_waited_out_too() {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .sequence()
        .error(|| GetSecretValueError::generic(meta("ThrottlingException")))
        .times(5)
        .output(|| GetSecretValueOutput::builder().secret_string("{}").build())
        .build();
    let client = mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::Sequential,
        [&rule],
        |c: aws_sdk_secretsmanager::config::Builder| c.retry_config(
            SdkSettings {
                initial_backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(2),
                ..SdkSettings::default()
            }
            .retry_config()
        )
    );
    let store = AwsSecretStore::from_client(client);
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let got = invocation
        .scope(store.get_value("s", VersionRef::Stage("AWSCURRENT")))
        .await;
    assert_eq!(got.map(|v| v.map(|t| t.0)), Ok(Some("{}".to_owned())));
    assert_eq!(rule.num_calls(), 6);
    assert_eq!(invocation.throttled_responses(), 5);
}

#[tokio::test]
async fn keys_by_prefix_are_paged_filtered_and_listed_without_values() {
    let key = |id: &str, name: &str| ApiKey::builder().id(id).name(name).enabled(true).build();
    let page1 = mock!(aws_sdk_apigateway::Client::get_api_keys)
        .match_requests(|r| {
            r.position().is_none()
                && r.name_query() == Some("partner-")
                && r.include_values() == Some(false)
        })
        .then_output(move || {
            GetApiKeysOutput::builder()
                .items(key("k1", "partner-tok"))
                .items(key("k2", "partnerx-tok"))
                .position("next")
                .build()
        });
    let page2 = mock!(aws_sdk_apigateway::Client::get_api_keys)
        .match_requests(|r| r.position() == Some("next") && r.include_values() == Some(false))
        .then_output(move || {
            GetApiKeysOutput::builder()
                .items(key("k3", "partner-tok2"))
                .build()
        });
    let client = mock_client!(aws_sdk_apigateway, RuleMode::MatchAny, [&page1, &page2]);
    let found = gateway(client)
        .find_keys_with_prefix("partner-")
        .await
        .unwrap_or_default();
    let ids: Vec<_> = found.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(ids, ["k1", "k3"]);
    assert!(found.iter().all(|k| k.value.is_none()));
}

#[tokio::test]
async fn a_pending_version_without_a_value_reads_as_none() {
    let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|r| {
            r.version_id() == Some("tok") && r.version_stage() == Some("AWSPENDING")
        })
        .then_error(|| {
            GetSecretValueError::ResourceNotFoundException(
                ResourceNotFoundException::builder()
                    .meta(meta("ResourceNotFoundException"))
                    .meta(meta("NotFoundException"))
                    .build(),
            )
        });
    let current = mock!(aws_sdk_secretsmanager::Client::get_secret_value)
        .match_requests(|r| r.version_stage() == Some("AWSCURRENT"))
        .then_output(|| GetSecretValueOutput::builder().secret_string("{}").build());
    let client = mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        [&rule, &current]
    );
    let store = AwsSecretStore::from_client(client);
    assert_eq!(
        store
            .get_value("s", VersionRef::Id("tok", Some("AWSPENDING")))
            .await
            .map(|v| v.is_none()),
        Ok(true)
    );
    assert_eq!(
        store
            .get_value("s", VersionRef::Stage("AWSCURRENT"))
            .await
            .ok()
            .flatten()
            .map(|t| t.0),
        Some("{}".to_owned())
    );
}

#[tokio::test]
async fn plans_and_their_keys_are_paged_and_a_vanished_plan_is_none() {
    use aws_sdk_apigateway::operation::get_usage_plan_keys::{
        GetUsagePlanKeysError, GetUsagePlanKeysOutput,
    };
    use aws_sdk_apigateway::operation::get_usage_plans::GetUsagePlansOutput;
    use aws_sdk_apigateway::types::{UsagePlan, UsagePlanKey};
    let plan = |id: &str| {
        UsagePlan::builder()
            .id(id)
            .api_stages(ApiStage::builder().api_id("a1").stage(id).build())
            .build()
    };
    let plans1 = mock!(aws_sdk_apigateway::Client::get_usage_plans)
        .match_requests(|r| r.position().is_none() && r.key_id().is_none())
        .then_output(move || {
            GetUsagePlansOutput::builder()
                .items(plan("p1"))
                .position("next")
                .build()
        });
    let plans2 = mock!(aws_sdk_apigateway::Client::get_usage_plans)
        .match_requests(|r| r.position() == Some("next") && r.key_id().is_none())
        .then_output(move || GetUsagePlansOutput::builder().items(plan("p2")).build());
    let key = |id: &str| UsagePlanKey::builder().id(id).r#type("API_KEY").build();
    let keys1 = mock!(aws_sdk_apigateway::Client::get_usage_plan_keys)
        .match_requests(|r| r.usage_plan_id() == Some("p1") && r.position().is_none())
        .then_output(move || {
            GetUsagePlanKeysOutput::builder()
                .items(key("k1"))
                .position("more")
                .build()
        });
    let keys2 = mock!(aws_sdk_apigateway::Client::get_usage_plan_keys)
        .match_requests(|r| r.usage_plan_id() == Some("p1") && r.position() == Some("more"))
        .then_output(move || GetUsagePlanKeysOutput::builder().items(key("k2")).build());
    let gone = mock!(aws_sdk_apigateway::Client::get_usage_plan_keys)
        .match_requests(|r| r.usage_plan_id() == Some("p2"))
        .then_error(|| {
            GetUsagePlanKeysError::NotFoundException(
                NotFoundException::builder()
                    .meta(meta("NotFoundException"))
                    .message("no")
                    .build(),
            )
        });
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::MatchAny,
        [&plans1, &plans2, &keys1, &keys2, &gone]
    );
    let g = gateway(client);
    let plans = g.list_plans().await.unwrap_or_default();
    let ids: Vec<_> = plans.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2"]);
    assert_eq!(
        plans.first().map(|p| p.api_stages.clone()),
        Some(vec![("a1".to_owned(), "p1".to_owned())])
    );
    assert_eq!(
        g.plan_key_ids("p1").await,
        Ok(Some(vec!["k1".to_owned(), "k2".to_owned()]))
    );
    assert_eq!(g.plan_key_ids("p2").await, Ok(None));
    // The index: p2 vanished between the reads and is left out.
    let index = PlanIndex::read(&g).await.unwrap_or_default();
    assert_eq!(index.plans_of("k2"), ["p1"]);
    assert!(index.plan("p1").is_some() && index.plan("p2").is_none());
}

#[tokio::test]
async fn list_secrets_keeps_only_the_exact_tag_key() {
    use aws_sdk_secretsmanager::operation::list_secrets::ListSecretsOutput;
    use aws_sdk_secretsmanager::types::{SecretListEntry, Tag};
    let entry = |arn: &str, name: &str, tag: &str| {
        SecretListEntry::builder()
            .arn(arn)
            .name(name)
            .tags(Tag::builder().key(tag).value("x").build())
            .build()
    };
    // ListSecrets' tag-key filter matches prefixes: it answers KeyNameOld too.
    let rule = mock!(aws_sdk_secretsmanager::Client::list_secrets).then_output(move || {
        ListSecretsOutput::builder()
            .secret_list(entry("arn:1", "team/a", "KeyName"))
            .secret_list(entry("arn:2", "team/b", "KeyNameOld"))
            .secret_list(entry("arn:3", "other/c", "KeyName"))
            .build()
    });
    let client = mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]);
    let store = AwsSecretStore::from_client(client);
    assert_eq!(
        store.list_secrets("KeyName", None).await,
        Ok(vec!["arn:1".to_owned(), "arn:3".to_owned()])
    );
    assert_eq!(
        store.list_secrets("KeyName", Some("team/")).await,
        Ok(vec!["arn:1".to_owned()])
    );
}
