//! The grace period: how long a key keeps working after it leaves AWSCURRENT, and the schedule
//! of retirements kept on the secret's own tags (`docs/design/grace-period.md`).
//!
//! One tag per scheduled key, `api-key-rotator:retire:<key id>`, so that writers never rewrite
//! each other's entries (TagResource replaces a tag's value, and there is no compare-and-set):
//! finishSecret adds the entry of the key it moves AWSCURRENT away from, the sweep and `revoke`
//! remove the entry of the key they retired. The value starts with the due time in 34 binary
//! digits (`due:0110…:<RFC 3339>`), so that the secrets with a retirement due by `now` are found
//! by ListSecrets' prefix-matching tag-value filter with at most 35 prefixes (`due_prefixes`):
//! a sweep with nothing due costs a few calls whatever the fleet's size.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

/// The tag key of a scheduled retirement, followed by the key's id.
pub const RETIRE_TAG_PREFIX: &str = "api-key-rotator:retire:";
/// The start of every schedule tag's value.
pub const DUE_MARK: &str = "due:";
/// The due time's binary digits: seconds since the epoch, until the year 2514.
const DUE_BITS: u32 = 34;
/// The longest grace period: Stripe's longest "roll key" expiry, and with Secrets Manager's
/// shortest schedule (every 4 hours) at most 42 keys in grace a secret, below its 50 tags.
pub const MAX_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long after its due time a key may still be alive before `status` reports it: the sweep's
/// longest interval (4 minutes) and a run of it.
pub const LATE_AFTER: i64 = 5 * 60;

/// The version ids `revoke` gives its rotations. Such a rotation's finishSecret retires the
/// previous key at once, whatever the grace period.
pub const REVOKE_TOKEN_PREFIX: &str = "revoke-";

/// How long an invocation may still run when its deadline is not known (the template's
/// function timeout).
pub const UNKNOWN_DEADLINE: Duration = Duration::from_secs(300);

/// A grace period of at least a second and at most `MAX_GRACE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GracePeriod(Duration);

impl GracePeriod {
    /// `30s`, `45m`, `2h`, `7d`: a whole number and one unit. `0` is no grace period (`None`).
    pub fn parse(raw: &str) -> Result<Option<GracePeriod>, String> {
        let raw = raw.trim();
        if raw == "0" {
            return Ok(None);
        }
        let bad = || {
            format!("{raw:?} is not a duration: use a whole number and one of s, m, h, d (30m, 2h, 7d), or 0 for none")
        };
        let unit = raw.chars().last().ok_or_else(bad)?;
        let seconds_per = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let digits = &raw[..raw.len() - 1];
        if digits.is_empty() || digits.len() > 9 || !digits.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let grace = Duration::from_secs(n * seconds_per);
        if grace.is_zero() {
            return Ok(None);
        }
        if grace > MAX_GRACE {
            return Err(format!("{raw} is longer than the longest grace period, 7d"));
        }
        Ok(Some(GracePeriod(grace)))
    }

    pub fn duration(self) -> Duration {
        self.0
    }
    pub fn seconds(self) -> i64 {
        self.0.as_secs() as i64
    }
}

impl fmt::Display for GracePeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            s if s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// The schedule tag of `key_id`, due at `due` (seconds since the epoch): its key and value.
pub fn schedule_tag(key_id: &str, due: i64) -> (String, String) {
    (
        format!("{RETIRE_TAG_PREFIX}{key_id}"),
        format!("{DUE_MARK}{}:{}", bits(due), rfc3339(due)),
    )
}

/// The tag key of `key_id`'s scheduled retirement.
pub fn schedule_tag_key(key_id: &str) -> String {
    format!("{RETIRE_TAG_PREFIX}{key_id}")
}

fn bits(due: i64) -> String {
    let due = due.clamp(0, (1i64 << DUE_BITS) - 1);
    format!("{due:0width$b}", width = DUE_BITS as usize)
}

/// A time as RFC 3339 (UTC, seconds).
pub fn rfc3339(secs: i64) -> String {
    aws_smithy_types::DateTime::from_secs(secs)
        .fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| secs.to_string())
}

/// The tag-value prefixes that match exactly the schedule values due by `now` (due ≤ now): for
/// each 1 digit of `now`, the digits before it and a 0; and `now` itself. At most 35.
pub fn due_prefixes(now: i64) -> Vec<String> {
    let now_bits = bits(now);
    let mut prefixes: Vec<String> = now_bits
        .char_indices()
        .filter(|(_, c)| *c == '1')
        .map(|(i, _)| format!("{DUE_MARK}{}0", &now_bits[..i]))
        .collect();
    prefixes.push(format!("{DUE_MARK}{now_bits}"));
    prefixes
}

/// A secret's scheduled retirements, read from its tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// Key id → due (seconds since the epoch).
    pub due: BTreeMap<String, i64>,
    /// Key ids whose schedule tag cannot be read (a person's edit): such a key is kept, and
    /// `status` reports it.
    pub unreadable: BTreeSet<String>,
}

impl Schedule {
    pub fn from_tags(tags: &[(String, String)]) -> Schedule {
        let mut schedule = Schedule::default();
        for (k, v) in tags {
            let Some(key_id) = k.strip_prefix(RETIRE_TAG_PREFIX) else {
                continue;
            };
            match parse_due(v) {
                Some(due) if crate::secret::is_key_id(key_id) => {
                    schedule.due.insert(key_id.to_owned(), due);
                }
                _ => {
                    schedule.unreadable.insert(key_id.to_owned());
                }
            }
        }
        schedule
    }

    /// The keys whose grace has not ended at `now`, or whose schedule cannot be read: no
    /// version may need them, and still they are kept.
    pub fn kept_at(&self, now: i64) -> BTreeSet<String> {
        self.due
            .iter()
            .filter(|(_, due)| **due > now)
            .map(|(id, _)| id.clone())
            .chain(self.unreadable.iter().cloned())
            .collect()
    }

    /// The scheduled keys due by `now`, earliest first.
    pub fn due_by(&self, now: i64) -> Vec<(String, i64)> {
        let mut due: Vec<(String, i64)> = self
            .due
            .iter()
            .filter(|(_, due)| **due <= now)
            .map(|(id, due)| (id.clone(), *due))
            .collect();
        due.sort_by_key(|(_, due)| *due);
        due
    }

    pub fn is_empty(&self) -> bool {
        self.due.is_empty() && self.unreadable.is_empty()
    }
}

/// The due time a schedule value holds: its binary digits (the RFC 3339 part is for people).
fn parse_due(value: &str) -> Option<i64> {
    let rest = value.strip_prefix(DUE_MARK)?;
    let digits = rest.split(':').next()?;
    if digits.len() != DUE_BITS as usize || !digits.chars().all(|c| c == '0' || c == '1') {
        return None;
    }
    i64::from_str_radix(digits, 2).ok()
}

/// Seconds since the epoch, now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_within_bounds() {
        let ok = |s: &str| GracePeriod::parse(s).map(|g| g.map(GracePeriod::seconds));
        assert_eq!(ok("30s"), Ok(Some(30)));
        assert_eq!(ok("30m"), Ok(Some(1800)));
        assert_eq!(ok(" 2h "), Ok(Some(7200)));
        assert_eq!(ok("7d"), Ok(Some(604_800)));
        assert_eq!(ok("0"), Ok(None));
        assert_eq!(ok("0h"), Ok(None));
        for bad in [
            "",
            "h",
            "2",
            "2 h",
            "-2h",
            "1.5h",
            "2H",
            "8d",
            "169h",
            "2w",
            "1h30m",
            "99999999999s",
        ] {
            assert!(GracePeriod::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            GracePeriod::parse("120m")
                .ok()
                .flatten()
                .map(|g| g.to_string()),
            Some("2h".into())
        );
    }

    #[test]
    fn schedule_tags_round_trip_and_bad_ones_are_kept() {
        let (k, v) = schedule_tag("abc123", 1_796_223_600);
        assert_eq!(k, "api-key-rotator:retire:abc123");
        assert!(v.starts_with("due:"), "{v}");
        assert!(v.ends_with(":2026-12-02T15:00:00Z"), "{v}");
        let tags = vec![
            (k, v),
            ("api-key-rotator:retire:def456".into(), "tomorrow".into()),
            ("api-key-rotator:retire:bad id".into(), "due:0".into()),
            ("Project".into(), "due:0000".into()),
        ];
        let s = Schedule::from_tags(&tags);
        assert_eq!(s.due.get("abc123"), Some(&1_796_223_600));
        assert_eq!(
            s.unreadable,
            BTreeSet::from(["def456".to_owned(), "bad id".to_owned()])
        );
        assert_eq!(
            s.kept_at(1_796_223_600),
            BTreeSet::from(["def456".to_owned(), "bad id".to_owned()])
        );
        assert!(s.kept_at(1_796_223_599).contains("abc123"));
        assert_eq!(s.due_by(1_796_223_600).len(), 1);
    }

    /// The prefixes match a value exactly when it is due: every due time around `now`, and the
    /// edges of the range, checked against `starts_with` as the filter applies it.
    #[test]
    fn due_prefixes_match_exactly_the_due_values() {
        for now in [
            1_796_223_600i64,
            1_796_223_601,
            1 << 30,
            (1 << 31) - 1,
            5,
            0,
        ] {
            let prefixes = due_prefixes(now);
            assert!(prefixes.len() <= 35);
            let matched = |due: i64| {
                let (_, v) = schedule_tag("k1", due);
                prefixes
                    .iter()
                    .filter(|p| v.starts_with(p.as_str()))
                    .count()
            };
            for due in [
                0,
                1,
                now - 86_400,
                now - 61,
                now - 1,
                now,
                now + 1,
                now + 60,
                now + 86_400,
            ] {
                if due < 0 {
                    continue;
                }
                assert_eq!(matched(due), usize::from(due <= now), "now {now} due {due}");
            }
        }
    }
}
