//! The part each owned key plays for the secret, read off the ownership survey: the key a
//! labelled version's value holds, or none.

use std::collections::{BTreeMap, BTreeSet};

use crate::ownership::Survey;
use crate::ports::{AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// The part a key plays for the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Current,
    Previous,
    Pending,
    /// Held by a version with another label (or mentioned by a value the function cannot read).
    Labelled,
    /// Named after an open rotation's version and held by none yet: that rotation's
    /// createSecret may still be making it; its finishSecret retires it if it is a duplicate.
    Duplicate,
    /// Held by no version, and in its grace period (or its schedule cannot be read): kept
    /// until the sweep retires it when the grace ends.
    Retiring,
    /// Owned, and no version needs it: `cleanup` retires it.
    Orphan,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Current => "current",
            Role::Previous => "previous",
            Role::Pending => "pending",
            Role::Labelled => "labelled",
            Role::Duplicate => "duplicate",
            Role::Retiring => "retiring",
            Role::Orphan => "orphan",
        }
    }
}

/// The role of each owned key, by id.
pub fn roles(survey: &Survey) -> BTreeMap<String, Role> {
    let orphans: BTreeSet<String> = survey.orphans().into_iter().collect();
    survey
        .owned
        .keys()
        .map(|id| (id.clone(), role_of(survey, &orphans, id)))
        .collect()
}

/// The role of the owned key `id`; `orphans` are the survey's.
fn role_of(survey: &Survey, orphans: &BTreeSet<String>, id: &str) -> Role {
    let holds = |stage: &str, not: Option<&str>| {
        survey
            .versions
            .values()
            .any(|l| l.has(stage) && not.is_none_or(|n| !l.has(n)) && l.claim.key_id() == Some(id))
    };
    if holds(AWSCURRENT, None) {
        Role::Current
    } else if holds(AWSPREVIOUS, None) {
        Role::Previous
    } else if holds(AWSPENDING, Some(AWSCURRENT)) {
        Role::Pending
    } else if survey.held(id) {
        Role::Labelled
    } else if orphans.contains(id) {
        Role::Orphan
    } else if survey.schedule.kept_at(survey.now).contains(id) {
        Role::Retiring
    } else {
        Role::Duplicate
    }
}
