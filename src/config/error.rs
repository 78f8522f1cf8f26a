//! The one error type of config loading: every variant names the file, and
//! every variant about content names the line and column too.

use std::collections::HashMap;
use std::path::Path;

use serde_saphyr::granit_parser::{Event, Parser};

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

    /// Converts a YAML parser error about `text`, keeping its position and
    /// dropping the parser's own " at line L, column C" suffix (we print the
    /// position first). A duplicate key is told in the user's terms: which
    /// key, and where both occurrences are.
    pub(crate) fn from_yaml(path: &Path, text: &str, err: &serde_saphyr::Error) -> Self {
        if let Some((key, at)) = duplicate_key(err) {
            return ConfigError::at(path, at, duplicate_message(text, key, at));
        }
        let loc = err
            .location()
            .map_or(Loc { line: 1, column: 1 }, |l| loc(&l));
        let text = err.without_snippet().to_string();
        let suffix = format!(" at line {}, column {}", loc.line, loc.column);
        let mut message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        if is_budget(err) {
            message = format!("the file exceeds the YAML parser's safety limits ({message})");
        }
        ConfigError::at(path, loc, message)
    }
}

fn loc(l: &serde_saphyr::Location) -> Loc {
    Loc {
        line: u32::try_from(l.line()).unwrap_or(u32::MAX),
        column: u32::try_from(l.column()).unwrap_or(u32::MAX),
    }
}

/// Whether `err` (possibly wrapped) is the parser refusing a document over
/// its safety budget (nesting, aliases, size).
fn is_budget(mut err: &serde_saphyr::Error) -> bool {
    use serde_saphyr::Error;
    loop {
        match err {
            Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => err = error,
            Error::Budget { .. } => return true,
            _ => return false,
        }
    }
}

/// The key and the position of its second occurrence, when `err` is the
/// parser's duplicate-key error (possibly wrapped).
fn duplicate_key(mut err: &serde_saphyr::Error) -> Option<(Option<&str>, Loc)> {
    use serde_saphyr::Error;
    loop {
        match err {
            Error::WithSnippet { error, .. } | Error::AliasError { error, .. } => err = error,
            Error::DuplicateMappingKey { key, location } => {
                return Some((key.as_deref(), loc(location)));
            }
            _ => return None,
        }
    }
}

/// `duplicate key "name" (first at line 2, column 5)`; without the first
/// position when it cannot be found (a key brought in by a merge key).
fn duplicate_message(text: &str, key: Option<&str>, at: Loc) -> String {
    let key = key.map_or_else(|| "key".to_owned(), |k| format!("key {k:?}"));
    match first_occurrence(text, at) {
        Some(first) => format!(
            "duplicate {key} (first at line {}, column {})",
            first.line, first.column
        ),
        None => format!("duplicate {key}"),
    }
}

/// Where the key written at `at` first occurs in the same mapping: a walk
/// over the YAML events up to `at`, remembering each mapping's scalar keys.
/// (The parser reports only the second occurrence.)
fn first_occurrence(text: &str, at: Loc) -> Option<Loc> {
    /// An open collection; a mapping knows its keys so far and whether its
    /// next node is a key.
    enum Open {
        Seq,
        Map {
            keys: HashMap<String, Loc>,
            key_next: bool,
        },
    }
    /// A node of the innermost collection is complete: in a mapping, keys
    /// and values alternate.
    fn node_done(stack: &mut [Open]) {
        if let Some(Open::Map { key_next, .. }) = stack.last_mut() {
            *key_next = !*key_next;
        }
    }
    let mut stack = Vec::new();
    let mut parser = Parser::new_from_str(text);
    while let Some(Ok((event, span))) = parser.next_event() {
        let here = Loc {
            line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
            column: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
        };
        if here > at {
            return None;
        }
        match event {
            Event::Scalar(value, ..) => {
                if let Some(Open::Map {
                    keys,
                    key_next: true,
                }) = stack.last_mut()
                {
                    if here == at {
                        return keys.get(value.as_ref()).copied();
                    }
                    keys.entry(value.into_owned()).or_insert(here);
                }
                node_done(&mut stack);
            }
            Event::Alias(_) => node_done(&mut stack),
            Event::SequenceStart(..) => stack.push(Open::Seq),
            Event::MappingStart(..) => stack.push(Open::Map {
                keys: HashMap::new(),
                key_next: true,
            }),
            Event::SequenceEnd | Event::MappingEnd => {
                stack.pop();
                node_done(&mut stack);
            }
            _ => {}
        }
    }
    None
}
