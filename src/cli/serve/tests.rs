//! Reloads: the summary, and the old snapshot freed once swapped out.

use std::sync::Arc;

use super::*;
use crate::daemon::zones::tests::config;

fn args(dir: &Path, yaml: &str) -> ServeArgs {
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, yaml).unwrap();
    ServeArgs {
        config: path,
        listen: Vec::new(),
        state_dir: Some(dir.join("state")),
    }
}

#[test]
fn a_reload_frees_the_old_snapshot_and_sums_up_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let args = args(dir.path(), &config(3, 10));
    let Ok((_, first)) = load(&args.config, args.state_dir.as_deref(), None, &List::new()) else {
        panic!("load failed")
    };
    let authority = Authority::new(first);
    let old = Arc::downgrade(&authority.current());

    let summary = reload(&args, &authority, &List::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary.starts_with("reloaded 3 zones (0 changed) in "),
        "{summary}"
    );
    assert!(old.upgrade().is_none(), "the old snapshot is still held");

    std::fs::write(
        &args.config,
        config(2, 10).replace("preference: 10", "preference: 15"),
    )
    .unwrap();
    let summary = reload(&args, &authority, &List::new()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        summary.starts_with("reloaded 2 zones (2 changed, 1 removed) in "),
        "{summary}"
    );
    assert_eq!(authority.current().zones()[0].serial, 2);
}

#[test]
fn a_failed_reload_keeps_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let args = args(dir.path(), &config(1, 10));
    let Ok((_, first)) = load(&args.config, args.state_dir.as_deref(), None, &List::new()) else {
        panic!("load failed")
    };
    let authority = Authority::new(first);
    let before = authority.current();
    std::fs::write(&args.config, "domains: [oops\n").unwrap();
    assert!(reload(&args, &authority, &List::new()).is_err());
    assert!(Arc::ptr_eq(&before, &authority.current()));
}
