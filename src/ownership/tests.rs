use super::*;

fn labels(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(v, s)| ((*v).to_owned(), s.iter().map(|l| (*l).to_owned()).collect()))
        .collect()
}

fn key(id: &str, name: &str) -> Owned {
    Owned {
        key: ApiKey {
            id: id.into(),
            name: name.into(),
            ..ApiKey::default()
        },
        tie: Tie::Listed,
    }
}

fn held(id: &str) -> Claim {
    Claim::Key {
        id: id.into(),
        record: vec![],
    }
}

#[test]
fn promotion_moves_current_and_previous_and_drops_the_tokens_pending() {
    let before = labels(&[
        ("old", &[AWSPREVIOUS]),
        ("cur", &[AWSCURRENT]),
        ("tok", &[AWSPENDING]),
        ("pin", &["PINNED"]),
    ]);
    let after = after_promotion(&before, "tok");
    assert_eq!(
        after,
        labels(&[
            ("cur", &[AWSPREVIOUS]),
            ("tok", &[AWSCURRENT]),
            ("pin", &["PINNED"]),
        ])
    );
    // A retry after the move changes nothing but the token's AWSPENDING; a later rotation's
    // AWSPENDING stays.
    let retry = labels(&[("cur", &[AWSPREVIOUS]), ("tok", &[AWSCURRENT, AWSPENDING])]);
    assert_eq!(
        after_promotion(&retry, "tok"),
        labels(&[("cur", &[AWSPREVIOUS]), ("tok", &[AWSCURRENT])])
    );
    let open = labels(&[
        ("cur", &[AWSPREVIOUS]),
        ("tok", &[AWSCURRENT]),
        ("next", &[AWSPENDING]),
    ]);
    assert_eq!(after_promotion(&open, "tok"), open);
}

#[test]
fn unneeded_keys_are_owned_held_by_no_keeper_and_not_an_open_rotations() {
    let survey = Survey {
        arn: "arn".into(),
        versions: BTreeMap::from([
            (
                "cur".to_owned(),
                Labelled {
                    stages: vec![AWSCURRENT.into()],
                    claim: held("k1"),
                },
            ),
            (
                "next".to_owned(),
                Labelled {
                    stages: vec![AWSPENDING.into()],
                    claim: Claim::Nothing,
                },
            ),
        ]),
        owned: BTreeMap::from([
            ("k1".to_owned(), key("k1", "a-cur")),
            ("k2".to_owned(), key("k2", "b-cur")),
            ("k3".to_owned(), key("k3", "a-next")),
            ("k4".to_owned(), key("k4", "a-gone")),
        ]),
        foreign: BTreeMap::new(),
        missing: BTreeSet::new(),
        schedule: Default::default(),
        now: 0,
    };
    // k2 is named for the current version but held by none: a duplicate; k3 is being made by the
    // open rotation.
    assert_eq!(survey.orphans(), ["k2".to_owned(), "k4".to_owned()]);
}
