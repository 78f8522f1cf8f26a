//! Secrets (API tokens, API keys, TSIG keys) come from an environment
//! variable or a file, never from the config itself, and never show up in
//! `Debug` output or logs.

use std::fmt;
use std::path::PathBuf;

use crate::ProviderError;

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// The value of this environment variable.
    Env(String),
    /// The content of this file (surrounding white space removed).
    File(PathBuf),
}

impl SecretSource {
    /// Reads the secret now.
    pub fn read(&self) -> Result<Secret, ProviderError> {
        let value = match self {
            SecretSource::Env(var) => std::env::var(var)
                .map_err(|e| ProviderError::Secret(format!("environment variable {var}: {e}")))?,
            SecretSource::File(path) => std::fs::read_to_string(path).map_err(|e| {
                ProviderError::Secret(format!("secret file {}: {e}", path.display()))
            })?,
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(ProviderError::Secret(format!("{self} is empty")));
        }
        Ok(Secret(value.to_owned()))
    }
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Env(var) => write!(f, "environment variable {var}"),
            SecretSource::File(path) => write!(f, "secret file {}", path.display()),
        }
    }
}

/// A secret value. `Debug` prints `Secret(***)`; there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn sources_read_trimmed_values_and_name_themselves_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc\n").unwrap();
        assert_eq!(SecretSource::File(path).read().unwrap().expose(), "abc");
        let missing = SecretSource::File(dir.path().join("nope"))
            .read()
            .unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
        let e = SecretSource::Env("NOLIST_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err();
        assert!(
            e.to_string().contains("NOLIST_TEST_SURELY_UNSET_VAR"),
            "{e}"
        );
    }
}
