//! Shared helpers for the integration tests: running the built binary and
//! finding the system tools a test needs.

#![allow(dead_code)] // each test binary uses a different subset

pub mod nsd;
pub mod postfix;
pub mod serve;
pub mod sink;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A `nolist` command from the build under test, run from the project root.
pub fn nolist() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("nolist").expect("nolist binary");
    cmd.current_dir(root());
    cmd
}

/// Every `examples/*.yaml`, sorted.
pub fn examples() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

/// The path of system tool `name`, or `None` after a loud skip message.
/// Under `CI=true` a missing tool is a test failure, never a skip.
pub fn require_tool(name: &str, package: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let msg = format!(
            "`{name}` is not installed (Debian package {package}); run scripts/test as root to install it"
        );
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true: {msg}");
        }
        eprintln!("\n*** SKIPPED: {msg} ***\n");
    }
    found
}

/// Runs `named-checkzone ORIGIN FILE`; panics with its output unless it accepts the zone.
pub fn named_checkzone(tool: &Path, origin: &str, file: &Path) {
    let out = Command::new(tool)
        .args(["-k", "fail", "-n", "fail", origin])
        .arg(file)
        .output()
        .expect("run named-checkzone");
    assert!(
        out.status.success(),
        "named-checkzone rejected {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The text of `examples/NAME`.
pub fn read_example(name: &str) -> String {
    std::fs::read_to_string(root().join("examples").join(name)).expect("example")
}
