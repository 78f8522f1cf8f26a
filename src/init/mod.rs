//! `nolist init`: a first config from a hand-wired nolisting setup.
//!
//! Pure parts: [`postfix`] parses `main.cf`, `master.cf` and lookup
//! tables, [`detect`] finds the classic decoy, the real MTA, the domains
//! and the log in them, [`fail2ban`] recognises a jail that bans decoy
//! hitters, [`draft`] merges all of it with live DNS and renders the
//! commented YAML, and [`next_steps`] says what to do next. The I/O sits
//! here, at the edge: [`read_postfix`] and [`decoy_jails`] read files (and
//! never write), [`read_live`] asks DNS through [`crate::resolver`].

pub mod detect;
pub mod draft;
pub mod fail2ban;
pub mod postfix;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use hickory_resolver::proto::rr::{Name as DnsName, RData, RecordType};

use self::detect::Detected;
use self::draft::{Draft, LiveDomain};
use crate::resolver::{Resolver, ResolverError, Settings};

/// The default Postfix configuration directory, which the tables' paths
/// in `master.cf` usually start with.
pub const POSTFIX_DIR: &str = "/etc/postfix";

/// A Postfix file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {}: {source}", path.display())]
pub struct ReadError {
    /// The file (or directory).
    pub path: PathBuf,
    /// Why.
    pub source: io::Error,
}

/// Reads `main.cf` and `master.cf` in `dir` (both required) and the lookup
/// tables the decoy candidates name, mapped into `dir` (see
/// [`table_path`]). Reads only.
pub fn read_postfix(dir: &Path) -> Result<Detected, ReadError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| ReadError { path, source })
    };
    if let Err(source) = std::fs::read_dir(dir) {
        return Err(ReadError {
            path: dir.to_owned(),
            source,
        });
    }
    let main = postfix::MainCf::parse(&read("main.cf")?);
    let master = postfix::parse_master(&read("master.cf")?);
    let config_dir = main.get("config_directory");
    let read_table = |path: &str| {
        let path = table_path(dir, config_dir.as_deref(), path);
        std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
    };
    Ok(detect::detect(&main, &master, &read_table))
}

/// Where a table named in the configuration is, for a copy of the
/// configuration in `dir`: a relative path, or one under `/etc/postfix` or
/// `config_directory`, is read inside `dir`; another absolute path as it is.
pub fn table_path(dir: &Path, config_dir: Option<&str>, path: &str) -> PathBuf {
    let inside = [Some(POSTFIX_DIR), config_dir]
        .into_iter()
        .flatten()
        .find_map(|prefix| path.strip_prefix(prefix)?.strip_prefix('/'));
    match inside {
        Some(rest) => dir.join(rest),
        None if Path::new(path).is_relative() => dir.join(path),
        None => PathBuf::from(path),
    }
}

/// The enabled fail2ban jails under `dir` whose filter matches the decoy's
/// log lines (see [`fail2ban::bans_decoy_hitters`]). A missing or
/// unreadable directory has none.
pub fn decoy_jails(dir: &Path, syslog_name: Option<&str>) -> Vec<String> {
    let mut files = Vec::new();
    for name in ["jail.conf", "jail.local"] {
        if let Ok(text) = std::fs::read_to_string(dir.join(name)) {
            files.push(text);
        }
    }
    let mut extra: Vec<PathBuf> = std::fs::read_dir(dir.join("jail.d"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    extra.sort();
    for path in extra {
        if path
            .extension()
            .is_some_and(|e| e == "conf" || e == "local")
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            files.push(text);
        }
    }
    fail2ban::enabled_jails(&files)
        .into_iter()
        .filter(|(_, filter)| {
            let text: String = ["conf", "local"]
                .iter()
                .filter_map(|ext| {
                    std::fs::read_to_string(dir.join("filter.d").join(format!("{filter}.{ext}")))
                        .ok()
                })
                .collect::<Vec<_>>()
                .join("\n");
            fail2ban::bans_decoy_hitters(filter, &text, syslog_name)
        })
        .map(|(jail, _)| jail)
        .collect()
}

/// Each domain's MX set and its hosts' addresses, asked through one
/// resolver built from `settings`. A failed lookup is a value in
/// [`LiveDomain::mx`]; only a resolver that cannot be built is an error.
pub async fn read_live(
    domains: &[String],
    settings: &Settings,
) -> Result<BTreeMap<String, LiveDomain>, ResolverError> {
    let resolver = Resolver::new(settings)?;
    let mut out = BTreeMap::new();
    for domain in domains {
        let mx = mx(&resolver, domain).await;
        let mut addresses = BTreeMap::new();
        if let Ok(set) = &mx {
            for (_, host) in set {
                addresses.insert(host.clone(), host_addresses(&resolver, host).await);
            }
        }
        out.insert(domain.clone(), LiveDomain { mx, addresses });
    }
    Ok(out)
}

/// `(preference, host)` of `domain`'s MX records.
async fn mx(resolver: &Resolver, domain: &str) -> Result<Vec<(u16, String)>, String> {
    let name = absolute(domain).map_err(|e| format!("{domain} is not a valid name: {e}"))?;
    match resolver.lookup(name, RecordType::MX).await {
        Ok(lookup) => Ok(lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::MX(mx) => Some((mx.preference, host_text(&mx.exchange))),
                _ => None,
            })
            .collect()),
        Err(e) => Err(format!("MX lookup failed: {e}")),
    }
}

/// The A and AAAA addresses of `host` (none when a lookup fails).
async fn host_addresses(resolver: &Resolver, host: &str) -> Vec<IpAddr> {
    let Ok(name) = absolute(host) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for rtype in [RecordType::A, RecordType::AAAA] {
        if let Ok(lookup) = resolver.lookup(name.clone(), rtype).await {
            for r in lookup.answers() {
                match &r.data {
                    RData::A(a) if r.name == name => out.push(IpAddr::V4(a.0)),
                    RData::AAAA(a) if r.name == name => out.push(IpAddr::V6(a.0)),
                    _ => {}
                }
            }
        }
    }
    out
}

fn absolute(name: &str) -> Result<DnsName, hickory_resolver::proto::ProtoError> {
    let mut name = DnsName::from_ascii(name)?;
    name.set_fqdn(true);
    Ok(name)
}

/// A name as the config writes it: lowercase, without the final dot.
fn host_text(name: &DnsName) -> String {
    name.to_lowercase()
        .to_ascii()
        .trim_end_matches('.')
        .to_owned()
}

/// The next steps, for stderr: check, plan, verify, run, and what to change
/// in DNS, in Postfix and in fail2ban.
pub fn next_steps(
    config: &str,
    saved: bool,
    detected: &Detected,
    draft: &Draft,
    jails: &[String],
) -> String {
    let mut out = String::from("Next steps:\n");
    let mut n = 0;
    let mut step = |out: &mut String, text: String| {
        n += 1;
        let _ = writeln!(out, "  {n}. {text}");
    };
    step(
        &mut out,
        if saved {
            format!("Review every `# CHECK:` line in {config}.")
        } else {
            format!(
                "Save the config above as {config} (or use --out) and review every `# CHECK:` line."
            )
        },
    );
    step(
        &mut out,
        format!("nolist plan -c {config}    (the MX records to publish; no errors allowed)"),
    );
    step(
        &mut out,
        "DNS: publish the planned MX set (the decoy at the lowest preference, with its own address), e.g. with `nolist plan --format nsupdate` or `nolist apply`".into(),
    );
    step(
        &mut out,
        format!("nolist verify -c {config}    (live DNS and every MX host's SMTP answers)"),
    );
    let names: Vec<&str> = detected
        .decoys
        .iter()
        .filter_map(|d| d.syslog_name.as_deref())
        .collect();
    if detected.decoys.is_empty() {
        step(
            &mut out,
            "Postfix: nothing to change for the real MTA; it must not listen on the decoy's address (inet_interfaces)".into(),
        );
    } else {
        let lines: Vec<String> = detected.decoys.iter().map(|d| d.line.to_string()).collect();
        step(
            &mut out,
            format!(
                "Postfix: the classic decoy (master.cf line {}) can keep running: nolist reads its log ({}), or be replaced by nolist's responder — remove it, `postfix reload`, and keep `responder.mode: refuse` (recommended: every sender falls back, none loses mail)",
                lines.join(", "),
                if names.is_empty() {
                    "see the CHECK in mta".to_owned()
                } else {
                    format!("syslog name {}", names.join(", "))
                }
            ),
        );
    }
    step(
        &mut out,
        format!(
            "nolist run -c {config}    (as root: the responder, the log watcher, the bans in nftables)"
        ),
    );
    for jail in jails {
        step(
            &mut out,
            format!(
                "fail2ban: disable jail {jail} once `nolist run` enforces (it bans the same decoy hitters)"
            ),
        );
    }
    for line in &draft.disagreements {
        let _ = writeln!(out, "live DNS disagrees: {line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_paths_map_into_the_copied_directory() {
        let dir = Path::new("/tmp/copy");
        assert_eq!(
            table_path(dir, None, "/etc/postfix/d.pcre"),
            dir.join("d.pcre")
        );
        assert_eq!(
            table_path(dir, Some("/opt/pf"), "/opt/pf/maps/d"),
            dir.join("maps/d")
        );
        assert_eq!(table_path(dir, None, "d.pcre"), dir.join("d.pcre"));
        assert_eq!(
            table_path(dir, None, "/srv/d.pcre"),
            PathBuf::from("/srv/d.pcre")
        );
        assert_eq!(
            table_path(dir, None, "/etc/postfixx"),
            PathBuf::from("/etc/postfixx")
        );
    }
}
