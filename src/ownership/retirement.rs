//! What may be done, now, to a key whose grace period has ended or that `revoke` retires: the
//! same evidence as every other ownership question, read at the moment of acting. A roll-back
//! during the grace makes the key AWSCURRENT's again, and then it is needed and survives.

use super::Survey;
use crate::ports::{opens_rotation, AWSPREVIOUS};

/// The part a scheduled (or revoked) key plays now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// Not the secret's (gone, tied to another secret, or never proven its): nothing is done to
    /// it, and its schedule entry goes.
    NotOwned,
    /// A version needs it: it stays as it is, and its schedule entry goes. The reason is for
    /// logs and reports.
    Needed(&'static str),
    /// Held by AWSPREVIOUS alone, as the value the function wrote names it: retired by the
    /// secret's OldKeyAction.
    Previous,
    /// Owned, and held by no labelled version: deleted.
    Unheld,
}

impl Survey {
    /// What may be done to the key `key_id` now (see `Retirement`).
    pub fn retirement(&self, key_id: &str) -> Retirement {
        let Some(owned) = self.owned.get(key_id) else {
            return Retirement::NotOwned;
        };
        let mut previous = false;
        for (version, l) in self.versions.iter().filter(|(_, l)| !l.stages.is_empty()) {
            if opens_rotation(&l.stages) && super::named_for(&owned.key, version) {
                return Retirement::Needed("an open rotation is making it");
            }
            if !l.claim.holds(key_id) {
                continue;
            }
            if l.claim.key_id() != Some(key_id) {
                return Retirement::Needed("a version the function cannot read mentions it");
            }
            if l.stages.iter().any(|s| s != AWSPREVIOUS) {
                return Retirement::Needed(
                    "a version labelled other than AWSPREVIOUS holds it (rolled back to, or still current)",
                );
            }
            previous = true;
        }
        if previous {
            Retirement::Previous
        } else {
            Retirement::Unheld
        }
    }
}
