//! The one error type of config loading: every variant names the file, and
//! every variant about content names the line and column too.

use std::path::Path;

use super::Loc;

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file is missing or unreadable.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The content is wrong at a known position.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// 1-based line.
        line: u32,
        /// 1-based column.
        column: u32,
        /// What is wrong and what was expected.
        message: String,
    },
}

impl ConfigError {
    /// An error about the content of `path` at `loc`.
    pub(crate) fn at(path: &Path, loc: Loc, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.display().to_string(),
            line: loc.line.max(1),
            column: loc.column.max(1),
            message: message.into(),
        }
    }

    /// Converts a YAML parser error, keeping its position and dropping the
    /// parser's own " at line L, column C" suffix (we print the position first).
    pub(crate) fn from_yaml(path: &Path, err: &serde_saphyr::Error) -> Self {
        let loc = err.location().map_or(Loc { line: 1, column: 1 }, |l| Loc {
            line: u32::try_from(l.line()).unwrap_or(u32::MAX),
            column: u32::try_from(l.column()).unwrap_or(u32::MAX),
        });
        let text = err.without_snippet().to_string();
        let suffix = format!(" at line {}, column {}", loc.line, loc.column);
        let mut message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        if message.starts_with("budget breached") {
            message = format!("the file exceeds the YAML parser's safety limits ({message})");
        }
        ConfigError::at(path, loc, message)
    }
}
