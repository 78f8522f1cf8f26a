//! `nolist diff` output: text in the style of dnscontrol and octoDNS
//! (`+`, `-`, `~`), or JSON (schema [`JSON_SCHEMA`], documented in
//! `docs/diff-json.md`). Pure string building.

use std::fmt::Write as _;

use nolist_providers::{Change, Kind, ProviderError};
use serde::Serialize;

use super::{Line, Op, lines};

/// Version tag of the JSON document; bumped on any incompatible change.
pub const JSON_SCHEMA: &str = "nolist.diff/1";

/// One domain compared with its provider.
#[derive(Debug)]
pub struct DomainDiff {
    /// The domain (A-label form, no trailing dot).
    pub domain: String,
    /// The provider's kind.
    pub provider: Kind,
    /// The changes, or why the provider could not be read.
    pub outcome: Result<Vec<Change>, ProviderError>,
}

impl DomainDiff {
    /// True when the provider was read and holds the plan.
    pub fn in_sync(&self) -> bool {
        self.outcome.as_ref().is_ok_and(Vec::is_empty)
    }
}

/// One `+`/`-`/`~` line per record.
pub fn line_text(line: &Line) -> String {
    let sign = match line.op {
        Op::Add => '+',
        Op::Delete => '-',
        Op::Ttl => '~',
    };
    let mut s = format!("{sign} {} {} {}", line.name, line.rtype, line.data);
    if let Some(old) = line.old_ttl {
        let _ = write!(s, " ({old} → {})", line.ttl);
    }
    s
}

/// The diff as text: a header per domain, then its lines.
pub fn text(domains: &[DomainDiff]) -> String {
    let mut out = String::new();
    for d in domains {
        let _ = write!(out, "{} ({}): ", d.domain, d.provider);
        match &d.outcome {
            Err(e) => {
                let _ = writeln!(out, "error: {e}");
            }
            Ok(changes) if changes.is_empty() => out.push_str("in sync\n"),
            Ok(changes) => {
                let lines = lines(changes);
                let n = lines.len();
                let _ = writeln!(out, "{n} change{}", if n == 1 { "" } else { "s" });
                for line in &lines {
                    let _ = writeln!(out, "{}", line_text(line));
                }
            }
        }
    }
    out
}

#[derive(Serialize)]
struct JsonDiff<'a> {
    schema: &'static str,
    in_sync: bool,
    domains: Vec<JsonDomain<'a>>,
}

#[derive(Serialize)]
struct JsonDomain<'a> {
    domain: &'a str,
    provider: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    changes: Vec<Line>,
}

/// The diff as a JSON document, pretty-printed, with a trailing newline.
pub fn json(domains: &[DomainDiff]) -> String {
    let doc = JsonDiff {
        schema: JSON_SCHEMA,
        in_sync: domains.iter().all(DomainDiff::in_sync),
        domains: domains
            .iter()
            .map(|d| JsonDomain {
                domain: &d.domain,
                provider: d.provider.as_str(),
                status: match &d.outcome {
                    Err(_) => "error",
                    Ok(c) if c.is_empty() => "in_sync",
                    Ok(_) => "drift",
                },
                error: d.outcome.as_ref().err().map(ToString::to_string),
                changes: d.outcome.as_ref().map(|c| lines(c)).unwrap_or_default(),
            })
            .collect(),
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("diff types always serialize");
    s.push('\n');
    s
}
