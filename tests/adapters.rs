//! The SDK adapters, tested with aws-smithy-mocks: the real adapter code and the SDK's own retry
//! logic run, with no network. Each test checks how a service answer maps to a domain result,
//! and how the call policy (`aws::throttle`) retries: throttling and API Gateway's rate-limit
//! `LimitExceededException` until the deadline (its `Retry-After` honoured), quota refusals
//! never, everything else through the SDK's ordinary retries.

use std::time::Duration;

use api_key_rotator::aws::{AwsKeyGateway, AwsSecretStore, SdkSettings};
use api_key_rotator::deadline::Invocation;
use api_key_rotator::ops::PlanIndex;
use api_key_rotator::ports::NewKey;
use api_key_rotator::ports::SecretText;
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
use aws_sdk_secretsmanager::operation::put_secret_value::{
    PutSecretValueError, PutSecretValueOutput,
};
use aws_sdk_secretsmanager::types::error::ResourceNotFoundException;
use aws_smithy_mocks::{mock, mock_client, RuleMode};
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::body::SdkBody;

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

fn new_key() -> NewKey {
    NewKey {
        name: "partner-tok".into(),
        description: None,
        customer_id: None,
        tags: Default::default(),
    }
}

fn limit_exceeded(message: &str) -> CreateApiKeyError {
    CreateApiKeyError::LimitExceededException(
        LimitExceededException::builder()
            .meta(
                aws_smithy_types::error::ErrorMetadata::builder()
                    .code("LimitExceededException")
                    .message(message)
                    .build(),
            )
            .message(message)
            .build(),
    )
}

/// API Gateway's answer on the wire: 429, the error type header, the message, and
/// `Retry-After` when given. The SDK's own deserializer reads it (into `retryAfterSeconds`).
fn limit_exceeded_response(message: &str, retry_after: Option<&str>) -> HttpResponse {
    let mut resp = HttpResponse::new(
        hyper::StatusCode::TOO_MANY_REQUESTS.into(),
        SdkBody::from(serde_json::json!({ "message": message }).to_string()),
    );
    resp.headers_mut()
        .insert("x-amzn-errortype", "LimitExceededException");
    resp.headers_mut()
        .insert("content-type", "application/json");
    if let Some(hint) = retry_after {
        resp.headers_mut().insert("Retry-After", hint.to_owned());
    }
    resp
}

#[tokio::test]
async fn a_quota_limit_exceeded_fails_at_once_and_says_it_is_a_quota() {
    // API Gateway answers LimitExceededException at its 10,000 keys a region; the SDK's own
    // list counts that code as throttling. No Retry-After, a message that names a quota.
    let rule = mock!(aws_sdk_apigateway::Client::create_api_key)
        .sequence()
        .error(|| limit_exceeded("API key quota exceeded for this account"))
        .times(5)
        .output(|| CreateApiKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let err = invocation
        .scope(gateway(client).create_key(&new_key()))
        .await
        .err();
    assert_eq!(
        err.as_ref().and_then(|e| e.code.clone()),
        Some("LimitExceededException".to_owned())
    );
    let message = err.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("API key quota exceeded") && message.contains("read as a quota"),
        "{message}"
    );
    assert_eq!(rule.num_calls(), 1);
    assert_eq!(invocation.throttled_calls(), 0);
}

#[tokio::test]
async fn a_rate_limit_limit_exceeded_waits_out_its_retry_after_header() {
    // The wire answer, so the SDK's deserializer carries Retry-After into retryAfterSeconds. The
    // message names a quota, and the hint wins: a quota has no time after which to retry.
    let rule = mock!(aws_sdk_apigateway::Client::create_api_key)
        .sequence()
        .http_response(|| limit_exceeded_response("API key quota exceeded", Some("1")))
        .output(|| CreateApiKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let got = invocation
        .scope(gateway(client).create_key(&new_key()))
        .await
        .map(|k| k.id);
    assert_eq!(got, Ok("k1".to_owned()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before the hint",
        started.elapsed()
    );
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(invocation.throttled_calls(), 1);
}

#[tokio::test]
async fn a_retry_after_on_a_call_whose_model_lacks_limit_exceeded_is_read_from_the_header() {
    // DeleteApiKey's model has no LimitExceededException: the SDK hands it over unmodelled,
    // with its code but no retryAfterSeconds, and the hint is read from the raw header.
    let rule = mock!(aws_sdk_apigateway::Client::delete_api_key)
        .sequence()
        .http_response(|| limit_exceeded_response("Limit Exceeded", Some("1")))
        .output(|| DeleteApiKeyOutput::builder().build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let started = std::time::Instant::now();
    let got = invocation.scope(gateway(client).delete_key("k1")).await;
    assert_eq!(got, Ok(()));
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before the hint",
        started.elapsed()
    );
    assert_eq!(rule.num_calls(), 2);
    assert_eq!(invocation.throttled_calls(), 1);
}

#[tokio::test]
async fn a_retry_after_past_the_deadline_fails_at_once_saying_so() {
    let rule = mock!(aws_sdk_apigateway::Client::create_api_key)
        .sequence()
        .http_response(|| limit_exceeded_response("Rate exceeded", Some("120")))
        .output(|| CreateApiKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&rule],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(5));
    let started = std::time::Instant::now();
    let err = invocation
        .scope(gateway(client).create_key(&new_key()))
        .await
        .err();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        err.as_ref().and_then(|e| e.code.clone()),
        Some("LimitExceededException".to_owned())
    );
    let message = err.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("retry after 120.0 s")
            && message.contains("before the invocation's deadline"),
        "{message}"
    );
    assert_eq!(rule.num_calls(), 1);
}

#[tokio::test]
async fn an_ambiguous_limit_exceeded_is_waited_out_and_named_a_possible_quota_at_the_deadline() {
    // No Retry-After, a message naming neither a rate nor a quota: read as the rate limit.
    let lifts = mock!(aws_sdk_apigateway::Client::create_api_key)
        .sequence()
        .error(|| limit_exceeded("Limit Exceeded"))
        .times(4)
        .output(|| CreateApiKeyOutput::builder().id("k1").build())
        .build();
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::Sequential,
        [&lifts],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let got = invocation
        .scope(gateway(client).create_key(&new_key()))
        .await
        .map(|k| k.id);
    assert_eq!(got, Ok("k1".to_owned()));
    assert_eq!(lifts.num_calls(), 5);
    assert_eq!(invocation.throttled_calls(), 1);

    let stays = mock!(aws_sdk_apigateway::Client::create_api_key)
        .then_error(|| limit_exceeded("Limit Exceeded"));
    let client = mock_client!(
        aws_sdk_apigateway,
        RuleMode::MatchAny,
        [&stays],
        fast_retries
    );
    let invocation = Invocation::with_budget(Duration::from_millis(300));
    let err = invocation
        .scope(gateway(client).create_key(&new_key()))
        .await
        .err();
    let message = err.map(|e| e.message).unwrap_or_default();
    assert!(
        message.contains("no time left before the invocation's deadline")
            && message.contains("may be a quota"),
        "{message}"
    );
    assert!(stays.num_calls() > 3, "only {} calls", stays.num_calls());
}

#[tokio::test]
async fn secrets_managers_limit_exceeded_is_always_a_quota() {
    // Its model defines it as a quota, with no hint: even a message naming a rate fails at once.
    let rule = mock!(aws_sdk_secretsmanager::Client::put_secret_value)
        .sequence()
        .error(|| {
            PutSecretValueError::LimitExceededException(
                aws_sdk_secretsmanager::types::error::LimitExceededException::builder()
                    .meta(
                        aws_smithy_types::error::ErrorMetadata::builder()
                            .code("LimitExceededException")
                            .message("Rate exceeded")
                            .build(),
                    )
                    .build(),
            )
        })
        .times(3)
        .output(|| PutSecretValueOutput::builder().build())
        .build();
    let client = mock_client!(aws_sdk_secretsmanager, RuleMode::Sequential, [&rule]);
    let store = AwsSecretStore::from_client(client);
    let invocation = Invocation::with_budget(Duration::from_secs(30));
    let err = invocation
        .scope(store.put_pending("s", "tok", &SecretText("{}".to_owned()), None))
        .await
        .err();
    let message = err.map(|e| e.message).unwrap_or_default();
    assert!(message.contains("read as a quota"), "{message}");
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

/// The ports return whole lists: paging is the adapters' (issue 20). Each listing follows
/// its position or token to the last page, and stops on a token that repeats.
#[tokio::test]
async fn usage_plans_of_a_key_are_read_to_the_last_page() {
    use aws_sdk_apigateway::operation::get_usage_plans::GetUsagePlansOutput;
    use aws_sdk_apigateway::types::UsagePlan;
    let plan = |id: &str| UsagePlan::builder().id(id).build();
    let page1 = mock!(aws_sdk_apigateway::Client::get_usage_plans)
        .match_requests(|r| r.key_id() == Some("k1") && r.position().is_none())
        .then_output(move || {
            GetUsagePlansOutput::builder()
                .items(plan("p1"))
                .position("two")
                .build()
        });
    let page2 = mock!(aws_sdk_apigateway::Client::get_usage_plans)
        .match_requests(|r| r.key_id() == Some("k1") && r.position() == Some("two"))
        // Answers once: a listing that followed the repeated position would match no rule.
        .sequence()
        .output(move || {
            GetUsagePlansOutput::builder()
                .items(plan("p2"))
                .position("two")
                .build()
        })
        .build();
    let client = mock_client!(aws_sdk_apigateway, RuleMode::MatchAny, [&page1, &page2]);
    let plans = gateway(client).plans_of_key("k1").await;
    assert_eq!(plans, Ok(vec!["p1".to_owned(), "p2".to_owned()]));
    assert_eq!((page1.num_calls(), page2.num_calls()), (1, 1));
}

#[tokio::test]
async fn secrets_and_their_versions_are_read_to_the_last_page() {
    use aws_sdk_secretsmanager::operation::list_secret_version_ids::ListSecretVersionIdsOutput;
    use aws_sdk_secretsmanager::operation::list_secrets::ListSecretsOutput;
    use aws_sdk_secretsmanager::types::{SecretListEntry, SecretVersionsListEntry, Tag};
    // Each carries the exact tag: the adapter keeps only those (ListSecrets' tag-key filter
    // matches a prefix).
    let secret = |name: &str| {
        SecretListEntry::builder()
            .name(name)
            .arn(format!("arn:{name}"))
            .tags(Tag::builder().key("KeyName").value(name).build())
            .build()
    };
    let list1 = mock!(aws_sdk_secretsmanager::Client::list_secrets)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || {
            ListSecretsOutput::builder()
                .secret_list(secret("partner-a"))
                .next_token("t2")
                .build()
        });
    let list2 = mock!(aws_sdk_secretsmanager::Client::list_secrets)
        .match_requests(|r| r.next_token() == Some("t2"))
        .then_output(move || {
            ListSecretsOutput::builder()
                .secret_list(secret("partner-b"))
                .build()
        });
    let version = |id: &str, secs: i64| {
        SecretVersionsListEntry::builder()
            .version_id(id)
            .created_date(aws_smithy_types::DateTime::from_secs(secs))
            .build()
    };
    let versions1 = mock!(aws_sdk_secretsmanager::Client::list_secret_version_ids)
        .match_requests(|r| r.next_token().is_none())
        .then_output(move || {
            ListSecretVersionIdsOutput::builder()
                .versions(version("v1", 10))
                .next_token("t2")
                .build()
        });
    let versions2 = mock!(aws_sdk_secretsmanager::Client::list_secret_version_ids)
        .match_requests(|r| r.next_token() == Some("t2"))
        .then_output(move || {
            ListSecretVersionIdsOutput::builder()
                .versions(version("v2", 10))
                .build()
        });
    let client = mock_client!(
        aws_sdk_secretsmanager,
        RuleMode::MatchAny,
        [&list1, &list2, &versions1, &versions2]
    );
    let store = AwsSecretStore::from_client(client);
    let arns = store.list_secrets("KeyName", Some("partner-")).await;
    assert_eq!(
        arns,
        Ok(vec!["arn:partner-a".to_owned(), "arn:partner-b".to_owned()])
    );
    // Two versions made in the same second are both kept.
    let dates = store.version_dates("s").await.unwrap_or_default();
    assert_eq!(
        dates.into_iter().collect::<Vec<_>>(),
        [("v1".to_owned(), 10), ("v2".to_owned(), 10)]
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
