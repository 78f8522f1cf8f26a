//! Hostile config input never panics: arbitrary bytes and YAML-ish noise
//! end in a clean error or a valid config, never a crash.

use std::path::Path;

use proptest::prelude::*;

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
