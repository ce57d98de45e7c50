//! Secrets Manager behind `SecretStore`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, SecretListEntry, Tag};
use aws_sdk_secretsmanager::{config, Client};

use super::throttle::{CallOverride, CallPolicy};
use super::{aws_error, next_page, policy_of};
use crate::error::AwsError;
use crate::event::RotationToken;
use crate::ports::{
    RotationInfo, SecretCatalog, SecretMetadata, SecretStore, SecretText, VersionRef,
};

#[derive(Debug, Clone)]
pub struct AwsSecretStore {
    client: Client,
    policy: CallPolicy,
}

impl AwsSecretStore {
    /// The call policy (throttling backoff, timeouts, budget) comes from the same settings.
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        Self::from_client(Client::new(sdk))
    }
    pub fn from_client(client: Client) -> Self {
        let policy = policy_of(
            client.config().retry_config(),
            client.config().timeout_config(),
        );
        AwsSecretStore { client, policy }
    }
}

/// One call's override: its timeouts and the classifier that keeps throttling to the helper.
fn overrides<E>(o: CallOverride<E>) -> config::Builder
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    config::Builder::default()
        .timeout_config(o.timeouts)
        .retry_classifier(o.classifier)
}

#[async_trait]
impl SecretStore for AwsSecretStore {
    async fn describe(&self, secret_id: &str) -> Result<Option<SecretMetadata>, AwsError> {
        let sent = self
            .policy
            .send("DescribeSecret", |o| {
                self.client
                    .describe_secret()
                    .secret_id(secret_id)
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(aws_error("DescribeSecret", &e)),
        };
        // The versions that carry a label, as AWS reports them (an emulator may also list a
        // version whose labels were all removed).
        let versions: BTreeMap<String, Vec<String>> = out
            .version_ids_to_stages()
            .map(|m| {
                m.iter()
                    .filter(|(_, stages)| !stages.is_empty())
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(SecretMetadata {
            arn: out.arn().unwrap_or_default().to_owned(),
            name: out.name().unwrap_or_default().to_owned(),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            versions,
            tags: out
                .tags()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.key()?.to_owned(),
                        t.value().unwrap_or_default().to_owned(),
                    ))
                })
                .collect(),
            rotation: RotationInfo {
                lambda_arn: out.rotation_lambda_arn().map(str::to_owned),
                schedule: out.rotation_rules().and_then(|r| {
                    r.schedule_expression().map(str::to_owned).or_else(|| {
                        r.automatically_after_days()
                            .map(|d| format!("every {d} days"))
                    })
                }),
                last_rotated: out.last_rotated_date().map(|d| d.secs()),
                next_rotation: out.next_rotation_date().map(|d| d.secs()),
            },
            deleted: out.deleted_date().map(|d| d.secs()),
        }))
    }

    async fn get_value(
        &self,
        secret_id: &str,
        version: VersionRef<'_>,
    ) -> Result<Option<SecretText>, AwsError> {
        let sent = self
            .policy
            .send("GetSecretValue", |o| {
                let req = self.client.get_secret_value().secret_id(secret_id);
                let req = match version {
                    VersionRef::Id(id, stage) => req
                        .version_id(id)
                        .set_version_stage(stage.map(str::to_owned)),
                    VersionRef::Stage(stage) => req.version_stage(stage),
                };
                req.customize().config_override(overrides(o)).send()
            })
            .await;
        match sent {
            Ok(out) => Ok(out.secret_string().map(|s| SecretText(s.to_owned()))),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(aws_error("GetSecretValue", &e)),
        }
    }

    async fn put_pending(
        &self,
        secret_id: &str,
        token: &str,
        value: &SecretText,
        rotation_token: Option<&RotationToken>,
    ) -> Result<(), AwsError> {
        self.policy
            .send("PutSecretValue", |o| {
                self.client
                    .put_secret_value()
                    .secret_id(secret_id)
                    .client_request_token(token)
                    .secret_string(value.0.clone())
                    .version_stages(crate::ports::AWSPENDING)
                    .set_rotation_token(rotation_token.map(|t| t.expose().to_owned()))
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|e| aws_error("PutSecretValue", &e))
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), AwsError> {
        self.policy
            .send("UpdateSecretVersionStage", |o| {
                self.client
                    .update_secret_version_stage()
                    .secret_id(secret_id)
                    .version_stage(stage)
                    .set_move_to_version_id(to.map(str::to_owned))
                    .set_remove_from_version_id(from.map(str::to_owned))
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|e| aws_error("UpdateSecretVersionStage", &e))
    }

    /// Secrets Manager's TagResource and UntagResource are named with the service: API Gateway
    /// has a TagResource of its own, and the call lists and the fault matrix tell them apart.
    async fn tag_secret(&self, secret_id: &str, key: &str, value: &str) -> Result<(), AwsError> {
        self.policy
            .send("secretsmanager:TagResource", |o| {
                self.client
                    .tag_resource()
                    .secret_id(secret_id)
                    .tags(Tag::builder().key(key).value(value).build())
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|e| aws_error("secretsmanager:TagResource", &e))
    }

    async fn untag_secret(&self, secret_id: &str, key: &str) -> Result<(), AwsError> {
        self.policy
            .send("secretsmanager:UntagResource", |o| {
                self.client
                    .untag_resource()
                    .secret_id(secret_id)
                    .tag_keys(key)
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|e| aws_error("secretsmanager:UntagResource", &e))
    }
}

impl AwsSecretStore {
    /// ListSecrets with `filters` (all must match; a filter's values are alternatives), every
    /// page: the ARNs of the secrets `keep` accepts.
    async fn list_pages(
        &self,
        filters: Vec<Filter>,
        keep: impl Fn(&SecretListEntry) -> bool,
    ) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .policy
                .send("ListSecrets", |o| {
                    self.client
                        .list_secrets()
                        .set_filters(Some(filters.clone()))
                        .max_results(100)
                        .set_next_token(next.clone())
                        .customize()
                        .config_override(overrides(o))
                        .send()
                })
                .await
                .map_err(|e| aws_error("ListSecrets", &e))?;
            arns.extend(
                out.secret_list()
                    .iter()
                    .filter(|s| keep(s))
                    .filter_map(|s| s.arn().map(str::to_owned)),
            );
            next = next_page(out.next_token(), &next);
            if next.is_none() {
                return Ok(arns);
            }
        }
    }
}

fn filter(key: FilterNameStringType, values: Vec<String>) -> Filter {
    Filter::builder().key(key).set_values(Some(values)).build()
}

/// ListSecrets' name filter matches a prefix, as wanted; kept here so that a listing that
/// ignored it is still held to it.
fn named_under(s: &SecretListEntry, name_prefix: Option<&str>) -> bool {
    name_prefix.is_none_or(|p| s.name().is_some_and(|n| n.starts_with(p)))
}

#[async_trait]
impl SecretCatalog for AwsSecretStore {
    async fn list_secrets(
        &self,
        tag_key: &str,
        name_prefix: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        let mut filters = vec![filter(
            FilterNameStringType::TagKey,
            vec![tag_key.to_owned()],
        )];
        if let Some(prefix) = name_prefix {
            filters.push(filter(FilterNameStringType::Name, vec![prefix.to_owned()]));
        }
        // The tag-key filter matches a prefix of a tag's key (`KeyName` finds `KeyNameOld`):
        // keep the secrets that carry the exact tag.
        self.list_pages(filters, |s| {
            s.tags().iter().any(|t| t.key() == Some(tag_key)) && named_under(s, name_prefix)
        })
        .await
    }

    async fn list_secrets_tagged(
        &self,
        tag_key_prefix: &str,
        value_prefixes: &[String],
        name_prefix: Option<&str>,
        rotated_by: Option<&str>,
    ) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        // A filter takes at most ten values (matched as alternatives).
        for chunk in value_prefixes.chunks(10) {
            let mut filters = vec![
                filter(
                    FilterNameStringType::TagKey,
                    vec![tag_key_prefix.to_owned()],
                ),
                filter(FilterNameStringType::TagValue, chunk.to_vec()),
            ];
            if let Some(prefix) = name_prefix {
                filters.push(filter(FilterNameStringType::Name, vec![prefix.to_owned()]));
            }
            // Another function's secrets (another stack's, which this role may not read) are
            // left out.
            let found = self
                .list_pages(filters, |s| {
                    let other =
                        crate::config::rotated_by_other(s.rotation_lambda_arn(), rotated_by);
                    if let Some(other) = other {
                        tracing::info!(secret = ?s.arn(), function = other, "a retirement is due on a secret another rotation function rotates; left to it");
                    }
                    other.is_none() && named_under(s, name_prefix)
                })
                .await?;
            arns.extend(found);
        }
        arns.sort();
        arns.dedup();
        Ok(arns)
    }

    async fn start_rotation(&self, secret_id: &str, token: &str) -> Result<(), AwsError> {
        self.policy
            .send("RotateSecret", |o| {
                self.client
                    .rotate_secret()
                    .secret_id(secret_id)
                    .client_request_token(token)
                    .rotate_immediately(true)
                    .customize()
                    .config_override(overrides(o))
                    .send()
            })
            .await
            .map(|_| ())
            .map_err(|e| aws_error("RotateSecret", &e))
    }

    async fn version_dates(&self, secret_id: &str) -> Result<BTreeMap<String, i64>, AwsError> {
        let mut dates = BTreeMap::new();
        let mut next: Option<String> = None;
        loop {
            let out = self
                .policy
                .send("ListSecretVersionIds", |o| {
                    self.client
                        .list_secret_version_ids()
                        .secret_id(secret_id)
                        .max_results(100)
                        .set_next_token(next.clone())
                        .customize()
                        .config_override(overrides(o))
                        .send()
                })
                .await
                .map_err(|e| aws_error("ListSecretVersionIds", &e))?;
            for v in out.versions() {
                if let (Some(id), Some(created)) = (v.version_id(), v.created_date()) {
                    dates.insert(id.to_owned(), created.secs());
                }
            }
            next = next_page(out.next_token(), &next);
            if next.is_none() {
                return Ok(dates);
            }
        }
    }
}
