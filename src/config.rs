//! Raw configuration (the secret's tags and the function's environment) turned into validated
//! settings, with no side effects. Everything after works on these types.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use reqwest::Url;

use crate::error::{Failure, StepResult};
use crate::finding::{first_error, Code, Finding};
use crate::grace::GracePeriod;

pub const TAG_KEY_NAME: &str = "KeyName";
pub const TAG_USAGE_PLAN: &str = "UsagePlan";
pub const TAG_OLD_KEY_ACTION: &str = "OldKeyAction";
pub const TAG_TEST_URL: &str = "TestUrl";
pub const TAG_GRACE_PERIOD: &str = "GracePeriod";
/// The start of every tag the function itself writes (the tie on keys, the retirement schedule
/// on secrets): never copied from the secret onto a key.
pub const OWN_TAG_PREFIX: &str = "api-key-rotator:";
/// The tag on every key this function creates or adopts, holding the secret's ARN.
pub const TIE_TAG: &str = "api-key-rotator:secret-arn";
/// API Gateway takes at most 50 tags a resource.
pub const MAX_KEY_TAGS: usize = 50;
/// One of a key's tags is the tie tag.
const MAX_COPIED_TAGS: usize = MAX_KEY_TAGS - 1;

/// What happens to the old key once the new one is AWSCURRENT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKeyAction {
    Delete,
    Disable,
    KeepPrevious,
}

impl OldKeyAction {
    pub fn parse(s: &str) -> Option<OldKeyAction> {
        match s.trim() {
            "delete" => Some(OldKeyAction::Delete),
            "disable" => Some(OldKeyAction::Disable),
            "keep-previous" => Some(OldKeyAction::KeepPrevious),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OldKeyAction::Delete => "delete",
            OldKeyAction::Disable => "disable",
            OldKeyAction::KeepPrevious => "keep-previous",
        }
    }
}

impl fmt::Display for OldKeyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The function's own settings, read once from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionConfig {
    pub allowed_usage_plan_ids: Option<BTreeSet<String>>,
    pub default_old_key_action: OldKeyAction,
    /// GRACE_PERIOD: the grace period of the secrets whose tags set none (never applied under
    /// keep-previous, which keeps the previous key anyway).
    pub default_grace: Option<GracePeriod>,
    pub allowed_test_url_hosts: BTreeSet<String>,
    pub probe: ProbeConfig,
    /// SECRET_NAME_PREFIX: the names of the secrets the function's role may touch (the
    /// template's SecretNamePrefix). The sweep lists only those: a schedule tag on any other
    /// secret of the account is not the function's to act on.
    pub secret_name_prefix: Option<String>,
    /// AWS_LAMBDA_FUNCTION_NAME: the function's own name, which Lambda sets. The sweep leaves
    /// alone a secret another rotation function rotates (another stack's).
    pub function_name: Option<String>,
}

/// The testSecret probe's budget: keys take seconds to reach the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeConfig {
    pub budget: Duration,
    pub attempt_timeout: Duration,
    pub interval: Duration,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            budget: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(5),
            interval: Duration::from_secs(2),
        }
    }
}

impl Default for FunctionConfig {
    fn default() -> Self {
        FunctionConfig {
            allowed_usage_plan_ids: None,
            default_old_key_action: OldKeyAction::Delete,
            default_grace: None,
            allowed_test_url_hosts: BTreeSet::new(),
            probe: ProbeConfig::default(),
            secret_name_prefix: None,
            function_name: None,
        }
    }
}

fn split_list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Reads a millisecond setting.
pub fn env_millis(
    lookup: &dyn Fn(&str) -> Option<String>,
    name: &str,
    default: Duration,
) -> StepResult<Duration> {
    match lookup(name) {
        None => Ok(default),
        Some(v) if v.trim().is_empty() => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| {
                Failure::config(format!(
                    "environment variable {name} must be a whole number of milliseconds"
                ))
            }),
    }
}

impl FunctionConfig {
    /// Reads the environment through `lookup` (so tests need not touch the process's).
    pub fn from_lookup(lookup: &dyn Fn(&str) -> Option<String>) -> StepResult<FunctionConfig> {
        let allowed_usage_plan_ids = match lookup("ALLOWED_USAGE_PLAN_IDS") {
            Some(raw) if !raw.trim().is_empty() => {
                let ids: BTreeSet<String> = split_list(&raw).map(str::to_owned).collect();
                for id in &ids {
                    check_plan_id(id).map_err(|_| {
                        Failure::config(format!(
                            "ALLOWED_USAGE_PLAN_IDS holds {id:?}, which is not a usage plan id"
                        ))
                    })?;
                }
                Some(ids)
            }
            _ => None,
        };
        let default_old_key_action = match lookup("OLD_KEY_ACTION") {
            Some(raw) if !raw.trim().is_empty() => OldKeyAction::parse(&raw).ok_or_else(|| {
                Failure::config(
                    "OLD_KEY_ACTION must be one of delete, disable, keep-previous".to_owned(),
                )
            })?,
            _ => OldKeyAction::Delete,
        };
        let default_grace = match lookup("GRACE_PERIOD") {
            Some(raw) if !raw.trim().is_empty() => GracePeriod::parse(&raw)
                .map_err(|why| Failure::config(format!("GRACE_PERIOD: {why}")))?,
            _ => None,
        };
        let allowed_test_url_hosts = lookup("ALLOWED_TEST_URL_HOSTS")
            .map(|raw| split_list(&raw).map(|h| h.to_ascii_lowercase()).collect())
            .unwrap_or_default();
        let d = ProbeConfig::default();
        let probe = ProbeConfig {
            budget: env_millis(lookup, "TEST_URL_BUDGET_MS", d.budget)?,
            attempt_timeout: env_millis(lookup, "TEST_URL_ATTEMPT_TIMEOUT_MS", d.attempt_timeout)?,
            interval: env_millis(lookup, "TEST_URL_INTERVAL_MS", d.interval)?,
        };
        let secret_name_prefix = match lookup("SECRET_NAME_PREFIX") {
            Some(raw) if !raw.trim().is_empty() => {
                let raw = raw.trim();
                let ok = raw.len() <= 512
                    && raw
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
                if !ok {
                    return Err(Failure::config(
                        "SECRET_NAME_PREFIX must be up to 512 letters, digits and /_+=.@- (a secret name's characters)",
                    ));
                }
                Some(raw.to_owned())
            }
            _ => None,
        };
        Ok(FunctionConfig {
            allowed_usage_plan_ids,
            default_old_key_action,
            default_grace,
            allowed_test_url_hosts,
            probe,
            secret_name_prefix,
            function_name: lookup("AWS_LAMBDA_FUNCTION_NAME")
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty()),
        })
    }

    pub fn from_env() -> StepResult<FunctionConfig> {
        Self::from_lookup(&|name| std::env::var(name).ok())
    }

    /// Whether the function may attach a key to, or detach one from, this plan: with
    /// ALLOWED_USAGE_PLAN_IDS set, the role's policy refuses every other plan.
    pub fn may_touch_plan(&self, plan_id: &str) -> bool {
        self.allowed_usage_plan_ids
            .as_ref()
            .is_none_or(|allowed| allowed.contains(plan_id))
    }
}

/// The function a secret's rotation ARN names, when it is not `own` (a function name): such a
/// secret is another function's. `None` when it is `own`, or either is unknown.
pub fn rotated_by_other<'a>(lambda_arn: Option<&'a str>, own: Option<&str>) -> Option<&'a str> {
    let (arn, own) = (lambda_arn?, own?);
    // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
    let name = arn.split(':').nth(6).unwrap_or(arn);
    (name != own).then_some(name)
}

/// A TestUrl that passed the checks that need no AWS call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestUrl {
    pub url: Url,
    /// The host is in ALLOWED_TEST_URL_HOSTS.
    pub host_allowed: bool,
    /// The API id, when the host is an `execute-api` host.
    pub execute_api_id: Option<String>,
}

impl TestUrl {
    fn parse(raw: &str, allowed_hosts: &BTreeSet<String>) -> StepResult<TestUrl> {
        let url = Url::parse(raw.trim())
            .map_err(|e| Failure::config(format!("the TestUrl tag is not a URL ({e})")))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(Failure::config(
                "the TestUrl tag must not carry credentials",
            ));
        }
        let host = url
            .host_str()
            .ok_or_else(|| Failure::config("the TestUrl tag has no host"))?
            .to_ascii_lowercase();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            "http" => {
                return Err(Failure::config(
                    "the TestUrl tag must use https (plain http only on loopback)",
                ))
            }
            other => {
                return Err(Failure::config(format!(
                    "the TestUrl tag must use https, not {other}"
                )))
            }
        }
        Ok(TestUrl {
            host_allowed: allowed_hosts.contains(&host),
            execute_api_id: execute_api_id(&host),
            url,
        })
    }

    /// The host rule: allow-listed, or the execute-api host of an API that one of the key's
    /// usage plans covers.
    pub fn check_host(&self, plan_api_ids: &BTreeSet<String>) -> StepResult<()> {
        if self.host_allowed {
            return Ok(());
        }
        match &self.execute_api_id {
            Some(api) if plan_api_ids.contains(api) => Ok(()),
            Some(_) => Err(Failure::config(format!(
                "the TestUrl host {} is an API that none of the key's usage plans covers",
                self.url.host_str().unwrap_or_default()
            ))),
            None => Err(Failure::config(format!(
                "the TestUrl host {} is neither in ALLOWED_TEST_URL_HOSTS nor an execute-api host of the key's usage plans",
                self.url.host_str().unwrap_or_default()
            ))),
        }
    }
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// `{api}.execute-api.{region}.amazonaws.com[.cn]`, or a VPC endpoint's
/// `{api}-{vpce}.execute-api.{region}.vpce.amazonaws.com`.
fn execute_api_id(host: &str) -> Option<String> {
    let mut labels = host.split('.');
    let first = labels.next()?;
    if labels.next()? != "execute-api" {
        return None;
    }
    let _region = labels.next()?;
    let rest: Vec<&str> = labels.collect();
    let api = match rest.as_slice() {
        ["amazonaws", "com"] | ["amazonaws", "com", "cn"] => first,
        ["vpce", "amazonaws", "com"] => first.split('-').next()?,
        _ => return None,
    };
    (!api.is_empty() && api.chars().all(|c| c.is_ascii_alphanumeric())).then(|| api.to_owned())
}

fn check_plan_id(id: &str) -> Result<(), ()> {
    if !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(())
    }
}

/// API Gateway's tag rule, as its API reference states it: keys of 1–128 and values of up to
/// 256 characters from `[a-zA-Z+-=._:/]` (read here as ASCII letters and digits and
/// `+ - = . _ : /`), keys not starting with `aws:`. Secrets Manager takes more (spaces, `@`,
/// any Unicode letter), so such tags are skipped with a warning rather than failing CreateApiKey.
pub fn api_gateway_accepts_tag(key: &str, value: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "+-=._:/".contains(c);
    (1..=128).contains(&key.len())
        && value.len() <= 256
        && key.chars().all(ok_char)
        && value.chars().all(ok_char)
        && !key.to_ascii_lowercase().starts_with("aws:")
}

/// The UsagePlan tag's ids, deduplicated, each allowed by ALLOWED_USAGE_PLAN_IDS.
fn plan_ids(
    raw: &str,
    function: &FunctionConfig,
    findings: &mut Vec<Finding>,
) -> Option<Vec<String>> {
    let mut ids: Vec<String> = Vec::new();
    for id in raw.split(',').map(str::trim) {
        if check_plan_id(id).is_err() {
            findings.push(Finding::error(
                Code::UsagePlanInvalid,
                format!("the UsagePlan tag holds {id:?}, which is not a usage plan id (comma-separated ids expected)"),
                "set UsagePlan to comma-separated usage plan ids",
            ));
            return None;
        }
        if !ids.iter().any(|p| p == id) {
            ids.push(id.to_owned());
        }
    }
    if let Some(allowed) = &function.allowed_usage_plan_ids {
        let refused: Vec<&str> = ids
            .iter()
            .filter(|p| !allowed.contains(*p))
            .map(String::as_str)
            .collect();
        if !refused.is_empty() {
            findings.push(Finding::error(
                Code::UsagePlanNotAllowed,
                format!(
                    "usage plan(s) {} are not in ALLOWED_USAGE_PLAN_IDS",
                    refused.join(", ")
                ),
                "add the plans to the function's ALLOWED_USAGE_PLAN_IDS, or tag the secret with an allowed plan",
            ));
            return None;
        }
    }
    Some(ids)
}

/// A secret's configuration, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationSettings {
    pub key_name: String,
    pub usage_plan_ids: Vec<String>,
    pub old_key_action: OldKeyAction,
    /// How long the previous key keeps working after it leaves AWSCURRENT, under delete or
    /// disable (`crate::grace`). `None`: it is retired when AWSCURRENT moves.
    pub grace: Option<GracePeriod>,
    pub test_url: Option<TestUrl>,
    /// Tags copied onto each new key (without the tie tag).
    pub key_tags: BTreeMap<String, String>,
    /// Tag keys that API Gateway cannot take, skipped with a warning.
    pub skipped_tags: Vec<String>,
}

impl RotationSettings {
    /// Validates the secret's tags against the function's configuration: the first error, as a
    /// step fails with it. Plans' existence and the TestUrl host rule need AWS calls and are
    /// checked by the rotation (`rotation::validate`) before any change.
    pub fn from_tags(
        tags: &[(String, String)],
        function: &FunctionConfig,
    ) -> StepResult<RotationSettings> {
        let (settings, findings) = Self::check_tags(tags, function);
        match (settings, first_error(&findings)) {
            (Some(s), None) => Ok(s),
            (_, Some(failure)) => Err(failure),
            (None, None) => Err(Failure::config("the secret's tags are not valid")),
        }
    }

    /// Every rule on the secret's tags, each finding reported: the settings when no rule found
    /// an error. `check` reports them all; the steps fail with the first error.
    pub fn check_tags(
        tags: &[(String, String)],
        function: &FunctionConfig,
    ) -> (Option<RotationSettings>, Vec<Finding>) {
        let mut findings = Vec::new();
        let tag = |name: &str| {
            tags.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.trim().to_owned())
        };
        let key_name = match tag(TAG_KEY_NAME).filter(|v| !v.is_empty()) {
            None => {
                findings.push(Finding::error(
                    Code::KeyNameMissing,
                    "the secret has no KeyName tag",
                    "tag the secret with KeyName=<the partner's key name>",
                ));
                None
            }
            Some(k) if k.chars().count() > 128 || k.chars().any(char::is_control) => {
                findings.push(Finding::error(
                    Code::KeyNameInvalid,
                    "the KeyName tag must be at most 128 printable characters",
                    "shorten the KeyName tag",
                ));
                None
            }
            Some(k) => Some(k),
        };
        let usage_plan_ids = match tag(TAG_USAGE_PLAN).filter(|v| !v.is_empty()) {
            None => {
                findings.push(Finding::error(
                    Code::UsagePlanMissing,
                    "the secret has no UsagePlan tag",
                    "tag the secret with UsagePlan=<usage plan id>[,<another>]",
                ));
                None
            }
            Some(raw) => plan_ids(&raw, function, &mut findings),
        };
        let old_key_action = match tag(TAG_OLD_KEY_ACTION) {
            Some(v) if !v.is_empty() => {
                let action = OldKeyAction::parse(&v);
                if action.is_none() {
                    findings.push(Finding::error(
                        Code::OldKeyActionInvalid,
                        "the OldKeyAction tag must be one of delete, disable, keep-previous",
                        "set OldKeyAction to delete, disable or keep-previous, or remove it for the function's default",
                    ));
                }
                action
            }
            _ => Some(function.default_old_key_action),
        };
        let test_url = match tag(TAG_TEST_URL) {
            Some(v) if !v.is_empty() => {
                match TestUrl::parse(&v, &function.allowed_test_url_hosts) {
                    Ok(url) => Some(Some(url)),
                    Err(failure) => {
                        findings.push(Finding::error(
                        Code::TestUrlInvalid,
                        failure.cause,
                        "set TestUrl to an https URL without credentials (plain http only on loopback)",
                    ));
                        None
                    }
                }
            }
            _ => Some(None),
        };
        let grace = match (
            tag(TAG_GRACE_PERIOD).filter(|v| !v.is_empty()),
            old_key_action,
        ) {
            (Some(raw), action) => match GracePeriod::parse(&raw) {
                Err(why) => {
                    findings.push(Finding::error(
                        Code::GracePeriodInvalid,
                        format!("the GracePeriod tag: {why}"),
                        "set GracePeriod to a duration up to 7d (30m, 2h, 24h, 7d), or 0 for none",
                    ));
                    None
                }
                Ok(Some(_)) if action == Some(OldKeyAction::KeepPrevious) => {
                    findings.push(Finding::error(
                        Code::GracePeriodWithKeepPrevious,
                        "the GracePeriod tag is set with OldKeyAction=keep-previous, which keeps the previous key valid until the next rotation anyway",
                        "remove GracePeriod, or set OldKeyAction to delete or disable to retire the previous key when its grace period ends",
                    ));
                    None
                }
                Ok(grace) => Some(grace),
            },
            (None, Some(OldKeyAction::KeepPrevious)) => Some(None),
            (None, _) => Some(function.default_grace),
        };
        let mut key_tags = BTreeMap::new();
        let mut skipped_tags = Vec::new();
        for (k, v) in tags {
            if [
                TAG_KEY_NAME,
                TAG_USAGE_PLAN,
                TAG_OLD_KEY_ACTION,
                TAG_TEST_URL,
                TAG_GRACE_PERIOD,
            ]
            .contains(&k.as_str())
                || k.starts_with(OWN_TAG_PREFIX)
                || k.starts_with("aws:")
            {
                continue;
            }
            if api_gateway_accepts_tag(k, v) {
                key_tags.insert(k.clone(), v.clone());
            } else {
                findings.push(Finding::warning(
                    Code::TagNotCopied,
                    format!("the tag {k} is not copied onto the keys: API Gateway cannot take its key or value"),
                    "use letters, digits and + - = . _ : / in tags meant for the key",
                ));
                skipped_tags.push(k.clone());
            }
        }
        if key_tags.len() > MAX_COPIED_TAGS {
            findings.push(Finding::error(
                Code::TooManyKeyTags,
                format!(
                    "the secret has {} tags to copy onto the key; API Gateway takes at most {MAX_COPIED_TAGS} besides the function's own",
                    key_tags.len()
                ),
                "remove tags from the secret",
            ));
        }
        if findings.iter().any(Finding::is_error) {
            return (None, findings);
        }
        let settings = match (key_name, usage_plan_ids, old_key_action, test_url, grace) {
            (
                Some(key_name),
                Some(usage_plan_ids),
                Some(old_key_action),
                Some(test_url),
                Some(grace),
            ) => Some(RotationSettings {
                key_name,
                usage_plan_ids,
                old_key_action,
                grace,
                test_url,
                key_tags,
                skipped_tags,
            }),
            _ => None,
        };
        (settings, findings)
    }

    /// The name of the key a token makes, so that a retry finds it.
    pub fn key_name_for(&self, token: &str) -> String {
        format!("{}{}", self.key_prefix(), token)
    }

    /// The prefix every key made for this secret shares: `<KeyName>-`.
    pub fn key_prefix(&self) -> String {
        format!("{}-", self.key_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn tags(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn base() -> Vec<(String, String)> {
        tags(&[
            ("KeyName", "partner-a"),
            ("UsagePlan", "plan1, plan2,plan1"),
        ])
    }

    #[test]
    fn minimal_tags_give_defaults() {
        let s = RotationSettings::from_tags(&base(), &FunctionConfig::default()).ok();
        let s = s.as_ref();
        assert_eq!(
            s.map(|s| s.usage_plan_ids.clone()),
            Some(vec!["plan1".into(), "plan2".into()])
        );
        assert_eq!(s.map(|s| s.old_key_action), Some(OldKeyAction::Delete));
        assert_eq!(
            s.map(|s| s.key_name_for("tok")),
            Some("partner-a-tok".into())
        );
    }

    #[test]
    fn copies_other_tags_and_skips_what_api_gateway_refuses() {
        let mut t = base();
        t.extend(tags(&[
            ("Project", "billing"),
            ("CostCategory", "cc-42"),
            ("aws:cloudformation:stack-name", "x"),
            ("Bad*Key", "v"),
            ("Owner", "a<b>"),
            ("Team", "billing team"),
            ("Contact", "ops@example.com"),
        ]));
        let s = RotationSettings::from_tags(&t, &FunctionConfig::default()).ok();
        let s = s.as_ref();
        assert_eq!(
            s.map(|s| s.key_tags.keys().cloned().collect::<Vec<_>>()),
            Some(vec!["CostCategory".into(), "Project".into()])
        );
        assert_eq!(
            s.map(|s| s.skipped_tags.clone()),
            Some(vec![
                "Bad*Key".into(),
                "Owner".into(),
                "Team".into(),
                "Contact".into()
            ])
        );
    }

    #[test]
    fn bad_tags_are_configuration_errors() {
        let fc = FunctionConfig {
            allowed_usage_plan_ids: Some(BTreeSet::from(["plan1".to_owned()])),
            ..FunctionConfig::default()
        };
        let cases: Vec<Vec<(String, String)>> = vec![
            tags(&[("UsagePlan", "plan1")]),
            tags(&[("KeyName", "k")]),
            tags(&[("KeyName", "k"), ("UsagePlan", "plan1,")]),
            tags(&[("KeyName", "k"), ("UsagePlan", "plan 1")]),
            tags(&[("KeyName", "k"), ("UsagePlan", "plan1,plan9")]),
            tags(&[
                ("KeyName", "k"),
                ("UsagePlan", "plan1"),
                ("OldKeyAction", "shred"),
            ]),
            tags(&[
                ("KeyName", "k"),
                ("UsagePlan", "plan1"),
                ("TestUrl", "http://example.com/x"),
            ]),
            tags(&[
                ("KeyName", "k"),
                ("UsagePlan", "plan1"),
                ("TestUrl", "ftp://h/x"),
            ]),
            tags(&[
                ("KeyName", "k"),
                ("UsagePlan", "plan1"),
                ("TestUrl", "https://u:p@h/x"),
            ]),
            tags(&[
                ("KeyName", "k"),
                ("UsagePlan", "plan1"),
                ("TestUrl", "not a url"),
            ]),
        ];
        for case in cases {
            let err = RotationSettings::from_tags(&case, &fc)
                .err()
                .map(|e| e.kind);
            assert_eq!(err, Some(ErrorKind::InvalidConfiguration), "{case:?}");
        }
    }

    #[test]
    fn test_url_host_rule() {
        let fc = FunctionConfig {
            allowed_test_url_hosts: BTreeSet::from([
                "api.partner.example".to_owned(),
                "127.0.0.1".to_owned(),
            ]),
            ..FunctionConfig::default()
        };
        let url = |u: &str| {
            let mut t = base();
            t.push(("TestUrl".into(), u.into()));
            RotationSettings::from_tags(&t, &fc)
                .ok()
                .and_then(|s| s.test_url)
        };
        let plans = BTreeSet::from(["abc123defg".to_owned()]);
        let ok = |u: &str| url(u).map(|t| t.check_host(&plans).is_ok());
        assert_eq!(ok("https://api.partner.example/health"), Some(true));
        assert_eq!(
            ok("http://127.0.0.1:4566/_aws/execute-api/x/prod/ping"),
            Some(true)
        );
        assert_eq!(
            ok("https://abc123defg.execute-api.eu-west-1.amazonaws.com/prod/ping"),
            Some(true)
        );
        assert_eq!(
            ok("https://abc123defg-vpce-0123.execute-api.eu-west-1.vpce.amazonaws.com/prod"),
            Some(true)
        );
        assert_eq!(
            ok("https://zzz999zzzz.execute-api.eu-west-1.amazonaws.com/prod/ping"),
            Some(false)
        );
        assert_eq!(ok("https://evil.example/collect"), Some(false));
        assert_eq!(
            ok("https://abc123defg.execute-api.eu-west-1.amazonaws.com.evil.example/"),
            Some(false)
        );
        assert_eq!(ok("http://localhost:9/x"), Some(false));
    }

    #[test]
    fn a_secret_rotated_by_another_function_is_told_apart() {
        let arn = "arn:aws:lambda:us-east-1:1:function:other-stack-rotator";
        assert_eq!(
            rotated_by_other(Some(arn), Some("api-key-rotator")),
            Some("other-stack-rotator")
        );
        assert_eq!(
            rotated_by_other(Some(arn), Some("other-stack-rotator")),
            None
        );
        assert_eq!(
            rotated_by_other(Some(&format!("{arn}:live")), Some("other-stack-rotator")),
            None
        );
        assert_eq!(rotated_by_other(None, Some("api-key-rotator")), None);
        assert_eq!(rotated_by_other(Some(arn), None), None);
    }

    #[test]
    fn environment_is_validated() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let ok = FunctionConfig::from_lookup(&env(&[
            ("ALLOWED_USAGE_PLAN_IDS", "a1, b2"),
            ("OLD_KEY_ACTION", "keep-previous"),
            ("ALLOWED_TEST_URL_HOSTS", "Example.COM"),
            ("TEST_URL_BUDGET_MS", "1500"),
        ]))
        .ok();
        assert_eq!(
            ok.as_ref().map(|c| c.default_old_key_action),
            Some(OldKeyAction::KeepPrevious)
        );
        assert_eq!(
            ok.as_ref().map(|c| c.probe.budget),
            Some(Duration::from_millis(1500))
        );
        assert!(ok
            .map(|c| c.allowed_test_url_hosts.contains("example.com"))
            .unwrap_or(false));
        for bad in [
            &[("OLD_KEY_ACTION", "nuke")][..],
            &[("ALLOWED_USAGE_PLAN_IDS", "a1,b-2")][..],
            &[("TEST_URL_BUDGET_MS", "soon")][..],
        ] {
            assert!(FunctionConfig::from_lookup(&env(bad)).is_err(), "{bad:?}");
        }
    }
}
