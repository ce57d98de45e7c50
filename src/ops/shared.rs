//! What a run over many secrets (`--all`) reads once for all of them, instead of once per
//! secret: every key in the account (GetApiKeys pages) and every usage plan with the keys on it
//! (GetUsagePlans pages, then GetUsagePlanKeys pages per plan). API Gateway's control plane
//! allows 10 requests a second for the whole account, shared with the rotations: a run over a
//! fleet must not spend it per secret.
//!
//! The reads are a snapshot, and a long run outlives it. Where a stale snapshot would make a
//! finding false, the reader looks again by id: a key a version names and the listing does not
//! show is read with GetApiKey (`crate::ownership`'s survey), a configured plan the snapshot
//! does not show with GetUsagePlan, and the plans of a key the listing does not show with
//! GetUsagePlans?keyId (`Shared::plans_known`).

use std::collections::{BTreeMap, BTreeSet};

use crate::error::AwsError;
use crate::ports::{ApiKey, PlanCatalog, UsagePlan};

/// Every usage plan and the keys on it, as read at one moment.
#[derive(Debug, Clone, Default)]
pub struct PlanIndex {
    plans: BTreeMap<String, UsagePlan>,
    /// Key id → the plans it is on.
    on: BTreeMap<String, BTreeSet<String>>,
}

impl PlanIndex {
    /// GetUsagePlans (every page), then GetUsagePlanKeys (every page) for each plan. A plan
    /// deleted between the two reads is left out.
    pub async fn read<K: PlanCatalog>(keys: &K) -> Result<PlanIndex, AwsError> {
        let mut index = PlanIndex::default();
        for plan in keys.list_plans().await? {
            let Some(members) = keys.plan_key_ids(&plan.id).await? else {
                continue;
            };
            for key in members {
                index.on.entry(key).or_default().insert(plan.id.clone());
            }
            index.plans.insert(plan.id.clone(), plan);
        }
        Ok(index)
    }

    /// The plan, when it existed at the read.
    pub fn plan(&self, id: &str) -> Option<&UsagePlan> {
        self.plans.get(id)
    }

    /// The plans the key was on at the read, sorted.
    pub fn plans_of(&self, key_id: &str) -> Vec<String> {
        self.on
            .get(key_id)
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// The reads a run over many secrets shares: the key listing, read before any secret is
/// described (`crate::ownership::Survey::read` needs it so), and the plan index, read after the
/// listing (`None` when it could not be read: each key's plans are then read by key).
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub listing: Vec<ApiKey>,
    pub plans: Option<PlanIndex>,
    listed: BTreeSet<String>,
}

impl Shared {
    pub fn new(listing: Vec<ApiKey>, plans: Option<PlanIndex>) -> Shared {
        let listed = listing.iter().map(|k| k.id.clone()).collect();
        Shared {
            listing,
            plans,
            listed,
        }
    }

    /// The plans of `key_id` as the index read them, when that read can be trusted for it: the
    /// key was in the listing, which was read before the index, so the index saw every
    /// attachment made before the listing. `None` for a key made since (its plans are read by
    /// key).
    pub fn plans_known(&self, key_id: &str) -> Option<Vec<String>> {
        let index = self.plans.as_ref()?;
        self.listed.contains(key_id).then(|| index.plans_of(key_id))
    }
}
