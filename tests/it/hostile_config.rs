//! Hostile config input never panics: arbitrary bytes and YAML-ish noise
//! end in a clean error or a valid config, never a crash; and a mistake
//! is told in the user's terms.

use std::path::Path;

use proptest::prelude::*;

use crate::util;

/// Every block-mapping key with an inline value in every example, written
/// twice in a row (the first copy keeps its value valid), is
/// reported as that key, at its second line, with the first one's line and
/// column (not as the parser library's advice about its options).
#[test]
fn every_duplicated_key_of_the_examples_names_both_places() {
    let mut checked = 0;
    for path in util::examples() {
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim_start();
            let Some((key, value)) = body.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if body.starts_with(['#', '-'])
                || key.contains([' ', '"', '{', '['])
                || value.is_empty()
                || value.starts_with('#')
            {
                continue;
            }
            let column = line.len() - body.len() + 1;
            let mut doubled = lines.clone();
            doubled.insert(i + 1, line);
            let err = nolist::config::parse(&doubled.join("\n"), Path::new("t.yaml"))
                .err()
                .unwrap_or_else(|| panic!("{}: {line:?} twice was accepted", path.display()));
            assert_eq!(
                err.to_string(),
                format!(
                    "t.yaml:{}:{column}: duplicate key {key:?} (first at line {}, column {column})",
                    i + 2,
                    i + 1
                ),
                "{}: {line:?}",
                path.display()
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} keys checked");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = nolist::config::parse(&text, Path::new("fuzz.yaml"));
    }

    #[test]
    fn yaml_shaped_noise_never_panics(
        parts in proptest::collection::vec(
            prop_oneof![
                Just("domains:\n".to_owned()),
                Just("  - name: ".to_owned()),
                Just("    decoy: {host: ".to_owned()),
                Just("preference: ".to_owned()),
                Just("real: [".to_owned()),
                Just("]".to_owned()),
                Just("}".to_owned()),
                Just("&a ".to_owned()),
                Just("*a".to_owned()),
                Just("<<: ".to_owned()),
                Just("\n".to_owned()),
                "[a-z0-9.:\\[\\]{}\"' -]{0,12}",
            ],
            0..40,
        )
    ) {
        let _ = nolist::config::parse(&parts.concat(), Path::new("fuzz.yaml"));
    }

    #[test]
    fn names_never_panic_and_valid_ones_round_trip(s in "\\PC{0,80}") {
        if let Ok(name) = nolist::config::Name::parse(&s) {
            let again = nolist::config::Name::parse(&name.to_string()).unwrap();
            prop_assert_eq!(again, name);
        }
    }
}
