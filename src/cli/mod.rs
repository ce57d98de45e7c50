//! The operator commands: the same binary run without `AWS_LAMBDA_RUNTIME_API`. Arguments are
//! validated before any AWS call; the work is `crate::ops`; the output is `render`. Logs go to
//! stderr, the report to stdout, and no metric line is written.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::aws::{self, SdkSettings};
use crate::config::{FunctionConfig, TAG_KEY_NAME};
use crate::event::is_secret_id;
use crate::ops::{PlanIndex, SettingsOverrides, Shared, Unreadable};
use crate::ports::{KeyGateway, SecretCatalog};
use crate::AwsOperator;

mod render;

use render::{Entry, Output, Report};

/// Exit codes: the highest that applies wins.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FINDINGS: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNREADABLE: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "api-key-rotator",
    version,
    about = "Operator commands for the api-key-rotator Lambda: check a secret before enabling rotation, see every secret's keys and stages, clean up, roll back, revoke a leaked key.",
    after_help = "Uses the standard AWS credential chain and region, and AWS_ENDPOINT_URL. Never prints a key value. Exit codes: 0 success, 1 error findings or anything refused or failed, 2 usage error, 3 a secret or the account could not be read."
)]
struct Cli {
    /// One JSON document on stdout, at the end, instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// One JSON object a line on stdout, each secret's as soon as it is read, and a last line
    /// with the exit code.
    #[arg(long, global = true, conflicts_with = "json")]
    json_lines: bool,
    #[command(flatten)]
    settings: SettingsArgs,
    #[command(subcommand)]
    command: Command,
}

/// The rotation function's settings; each defaults to the environment variable of the same
/// name, then to the rotation function's own configuration.
#[derive(Debug, Args)]
struct SettingsArgs {
    /// ALLOWED_USAGE_PLAN_IDS as the function has it (comma-separated).
    #[arg(
        long,
        global = true,
        value_name = "IDS",
        env = "ALLOWED_USAGE_PLAN_IDS"
    )]
    allowed_usage_plan_ids: Option<String>,
    /// ALLOWED_TEST_URL_HOSTS as the function has it (comma-separated).
    #[arg(
        long,
        global = true,
        value_name = "HOSTS",
        env = "ALLOWED_TEST_URL_HOSTS"
    )]
    allowed_test_url_hosts: Option<String>,
    /// OLD_KEY_ACTION as the function has it.
    #[arg(long, global = true, value_name = "ACTION", env = "OLD_KEY_ACTION")]
    old_key_action: Option<String>,
}

#[derive(Debug, Args)]
struct Selection {
    /// Secret names or ARNs.
    #[arg(value_name = "SECRET", required_unless_present = "all", conflicts_with = "all", value_parser = secret_id)]
    secrets: Vec<String>,
    /// Every secret that carries a KeyName tag.
    #[arg(long)]
    all: bool,
    /// With --all: only secrets whose names start with this.
    #[arg(long, requires = "all", value_parser = secret_id)]
    prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Report everything that would make a rotation refuse, fail or go wrong. Changes nothing.
    Check {
        #[arg(value_name = "SECRET", required = true, value_parser = secret_id)]
        secrets: Vec<String>,
    },
    /// Rotation settings, versions and stages, every key the secret owns with its role, and the
    /// findings of `check`.
    Status {
        #[command(flatten)]
        selection: Selection,
    },
    /// List the keys no version needs (and, with --all, keys of deleted secrets); retire them
    /// with --apply.
    Cleanup {
        #[command(flatten)]
        selection: Selection,
        /// Retire the orphans (detach, then delete). Without it nothing changes.
        #[arg(long)]
        apply: bool,
    },
    /// Put the previous key back as current; prints the plan, and carries it out with --apply.
    Rollback {
        #[arg(value_name = "SECRET", value_parser = secret_id)]
        secret: String,
        #[arg(long)]
        apply: bool,
        /// Roll back even though a rotation is open, cancelling it (for an abandoned rotation:
        /// `check` reports rotation-unfinished).
        #[arg(long)]
        force: bool,
    },
    /// For a leaked key: rotate now, wait for the rotation to complete, then retire every other
    /// key the secret owns at once, whatever its grace period. Prints the plan; --apply does it.
    Revoke {
        #[arg(value_name = "SECRET", value_parser = secret_id)]
        secret: String,
        #[arg(long)]
        apply: bool,
        /// How long to wait for the rotation to complete (1 to 3600 seconds); run again to go
        /// on waiting.
        #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=3600))]
        wait: u64,
    },
}

fn secret_id(raw: &str) -> Result<String, String> {
    if is_secret_id(raw) {
        Ok(raw.to_owned())
    } else {
        Err("not a secret name or ARN".to_owned())
    }
}

/// Runs the command line; the process's exit code.
pub async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version print to stdout and exit 0; usage errors exit 2.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let overrides = SettingsOverrides {
        allowed_usage_plan_ids: cli.settings.allowed_usage_plan_ids.clone(),
        allowed_test_url_hosts: cli.settings.allowed_test_url_hosts.clone(),
        old_key_action: cli.settings.old_key_action.clone(),
    };
    // The settings given are validated before any call, by the function's own rules.
    if let Err(e) = FunctionConfig::from_lookup(&|name| overrides.lookup(name)) {
        eprintln!("error: {}", e.cause);
        return ExitCode::from(EXIT_USAGE);
    }
    let sdk_settings = match SdkSettings::from_lookup(&|name| std::env::var(name).ok()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}", e.cause);
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let sdk = aws::load_sdk_config(&sdk_settings).await;
    let Some(region) = sdk.region().map(|r| r.to_string()) else {
        eprintln!("error: no AWS region: set AWS_REGION (or a profile's region)");
        return ExitCode::from(EXIT_UNREADABLE);
    };
    let operator = crate::operator_from_sdk(&sdk, overrides, region);
    let output = if cli.json {
        Output::Json
    } else if cli.json_lines {
        Output::JsonLines
    } else {
        Output::Text
    };
    let report = run(&operator, cli.command, output).await;
    report.finish();
    ExitCode::from(report.exit_code())
}

async fn run(op: &AwsOperator, command: Command, output: Output) -> Report {
    match command {
        Command::Check { secrets } => {
            let mut report = Report::new("check", output);
            for input in secrets {
                let entry = match op.inspect(&input, None).await {
                    Ok(seen) => Entry::check(input, seen),
                    Err(e) => Entry::unreadable(input, e),
                };
                report.push(entry);
            }
            report
        }
        Command::Status { selection } => {
            let mut report = Report::new("status", output);
            match select(op, &selection).await {
                Err(e) => report.account_unreadable(e),
                Ok((inputs, shared)) => {
                    let mut held = BTreeSet::new();
                    for input in &inputs {
                        report.push(match op.inspect(input, shared.as_ref()).await {
                            Ok(seen) => {
                                held.extend(seen.survey.held_ids());
                                Entry::status(input.clone(), seen)
                            }
                            Err(e) => Entry::unreadable(input.clone(), e),
                        });
                    }
                    if let Some(deleted) =
                        deleted(op, &mut report, &selection, &inputs, &held, shared.as_ref()).await
                    {
                        report.deleted_secrets_status(deleted);
                    }
                }
            }
            report
        }
        Command::Cleanup { selection, apply } => {
            let mut report = Report::new("cleanup", output);
            match select(op, &selection).await {
                Err(e) => report.account_unreadable(e),
                Ok((inputs, shared)) => {
                    let mut held = BTreeSet::new();
                    let mut unread = Vec::new();
                    // The plans a deleted secret's keys may be detached from: the allow-list the
                    // flags or the environment give, else the one every secret read resolved to
                    // (their rotation function outlives a deleted secret); unknown otherwise.
                    let mut scopes = BTreeSet::new();
                    for input in &inputs {
                        report.push(match op.inspect(input, shared.as_ref()).await {
                            Ok(seen) => {
                                scopes.insert(
                                    seen.function
                                        .as_ref()
                                        .map(|f| f.allowed_usage_plan_ids.clone()),
                                );
                                held.extend(seen.survey.held_ids());
                                let outcome = op.cleanup(&seen, apply).await;
                                Entry::cleanup(input.clone(), &seen, outcome, apply)
                            }
                            Err(e) => {
                                unread.push(input.clone());
                                Entry::unreadable(input.clone(), e)
                            }
                        });
                    }
                    let deleted =
                        deleted(op, &mut report, &selection, &inputs, &held, shared.as_ref())
                            .await
                            .unwrap_or_default();
                    // A deleted secret's key is retired only when every live secret that could
                    // hold it was read: the secrets this run read, and with --prefix every other
                    // secret with a KeyName tag.
                    let blocked = if !apply || deleted.is_empty() {
                        None
                    } else if !unread.is_empty() {
                        Some(format!(
                            "{} secret(s) could not be read ({}): a key of a deleted secret is retired only when no live secret's version may hold it",
                            unread.len(),
                            unread.join(", ")
                        ))
                    } else if selection.prefix.is_some() {
                        let done: BTreeSet<String> = live(&report, &inputs);
                        match op.held_by_tagged_secrets(TAG_KEY_NAME, &done).await {
                            Ok(more) => {
                                held.extend(more);
                                None
                            }
                            Err(e) => Some(format!(
                                "the secrets outside --prefix could not all be read ({}): a key of a deleted secret is retired only when no live secret's version may hold it",
                                e.0
                            )),
                        }
                    } else {
                        None
                    };
                    let scope = op.deleted_secrets_scope(&scopes);
                    for d in deleted {
                        let d = d.without(&held);
                        let outcome = match &blocked {
                            Some(why) => {
                                let mut out = op.cleanup_deleted(&d, false, scope.as_ref()).await;
                                out.refused = Some(why.clone());
                                out
                            }
                            None => op.cleanup_deleted(&d, apply, scope.as_ref()).await,
                        };
                        report.deleted_secret_cleanup(&d, outcome, apply);
                    }
                }
            }
            report
        }
        Command::Revoke {
            secret,
            apply,
            wait,
        } => {
            let mut report = Report::new("revoke", output);
            let entry = match op.inspect(&secret, None).await {
                Ok(seen) => match op
                    .revoke(&seen, apply, std::time::Duration::from_secs(wait))
                    .await
                {
                    Ok(outcome) => Entry::revoke(secret, &seen, outcome, apply),
                    Err(e) => Entry::unreadable(secret, e),
                },
                Err(e) => Entry::unreadable(secret, e),
            };
            report.push(entry);
            report
        }
        Command::Rollback {
            secret,
            apply,
            force,
        } => {
            let mut report = Report::new("rollback", output);
            let entry = match op.inspect(&secret, None).await {
                Ok(seen) => match op.rollback(&seen, apply, force).await {
                    Ok(outcome) => Entry::rollback(secret, &seen, outcome, apply),
                    Err(e) => Entry::unreadable(secret, e),
                },
                Err(e) => Entry::unreadable(secret, e),
            };
            report.push(entry);
            report
        }
    }
}

/// The secrets named, or with `--all` every secret with a KeyName tag and what is read once for
/// all of them: the account's keys, then the usage plans and their keys. When the plans cannot
/// be read, each key's plans are read by key instead (the report is the same, only slower).
async fn select(
    op: &AwsOperator,
    selection: &Selection,
) -> Result<(Vec<String>, Option<Shared>), Unreadable> {
    if !selection.all {
        return Ok((selection.secrets.clone(), None));
    }
    let secrets = op
        .rotator
        .secrets
        .list_secrets(TAG_KEY_NAME, selection.prefix.as_deref())
        .await?;
    let listing = op.rotator.keys.list_all_keys().await?;
    let plans = match PlanIndex::read(&op.rotator.keys).await {
        Ok(index) => Some(index),
        Err(e) => {
            tracing::warn!(error = %e, "the usage plans could not be read once for all secrets; each key's plans are read by key");
            None
        }
    };
    Ok((secrets, Some(Shared::new(listing, plans))))
}

/// With `--all`: the keys of deleted secrets in the listing, each one that could not be judged
/// with its cause (`None` without `--all`).
async fn deleted(
    op: &AwsOperator,
    report: &mut Report,
    selection: &Selection,
    inputs: &[String],
    held: &BTreeSet<String>,
    shared: Option<&Shared>,
) -> Option<Vec<crate::ops::DeletedSecretKeys>> {
    let shared = shared?;
    report.listed_all();
    let live = live(report, inputs);
    Some(
        op.deleted_secret_keys(shared, &live, held, selection.prefix.as_deref())
            .await,
    )
}

/// The secrets ListSecrets named, and the ARNs of those the report read.
fn live(report: &Report, inputs: &[String]) -> BTreeSet<String> {
    report
        .secret_arns()
        .into_iter()
        .chain(inputs.iter().cloned())
        .collect()
}
