//! The nftables backend: nolist's own table `inet nolist` with one set per
//! address family (`flags interval, timeout`, so bans also expire in the
//! kernel when the daemon is gone) and a chain that drops new TCP
//! connections to the enforced ports from banned sources. Every change is
//! one `nft -f -` batch (one transaction); the state is read back with
//! `nft -j`. No other table is ever touched.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use super::{EnforceError, Report, Target};

/// The table nolist owns.
pub const TABLE: &str = "nolist";
const SET4: &str = "banned4";
const SET6: &str = "banned6";

/// The nftables backend.
#[derive(Clone, Debug)]
pub struct Nft {
    /// The `nft` binary.
    pub binary: String,
    /// TCP ports closed to banned sources.
    pub ports: Vec<u16>,
}

impl Nft {
    /// A backend using `nft` from PATH.
    pub fn new(ports: Vec<u16>) -> Nft {
        Nft {
            binary: "nft".into(),
            ports,
        }
    }

    /// Checks that nft runs and may change the ruleset, by (re)creating
    /// nolist's table and chain.
    pub fn check(&self) -> Result<(), EnforceError> {
        self.apply(&skeleton(&self.ports))
    }

    /// Makes the sets hold exactly `desired`.
    pub fn reconcile(&self, desired: &[Target]) -> Result<Report, EnforceError> {
        let actual = self.read()?;
        let rebuilt = actual.is_none();
        let actual = actual.unwrap_or_default();
        let batch = plan_batch(&self.ports, desired, &actual, rebuilt);
        if !batch.changed() {
            return Ok(Report::default());
        }
        self.apply(&batch.text)?;
        Ok(Report {
            added: batch.added,
            removed: batch.removed,
            rebuilt,
        })
    }

    /// The elements of both sets; `None` when the table or a set is missing.
    pub fn read(&self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let mut out = Vec::new();
        for set in [SET4, SET6] {
            let result = Command::new(&self.binary)
                .args(["-j", "list", "set", "inet", TABLE, set])
                .stdin(Stdio::null())
                .output()
                .map_err(|source| EnforceError::Spawn {
                    tool: self.binary.clone(),
                    source,
                })?;
            if !result.status.success() {
                let stderr = String::from_utf8_lossy(&result.stderr);
                if stderr.contains("No such file or directory") {
                    return Ok(None);
                }
                return Err(EnforceError::Failed {
                    tool: format!("{} -j list set", self.binary),
                    stderr: stderr.trim().to_owned(),
                });
            }
            out.extend(
                parse_set(&result.stdout).map_err(|message| EnforceError::Output {
                    tool: self.binary.clone(),
                    message,
                })?,
            );
        }
        Ok(Some(out))
    }

    fn apply(&self, batch: &str) -> Result<(), EnforceError> {
        let mut child = Command::new(&self.binary)
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| EnforceError::Spawn {
                tool: self.binary.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(batch.as_bytes());
        }
        let result = child
            .wait_with_output()
            .map_err(|source| EnforceError::Spawn {
                tool: self.binary.clone(),
                source,
            })?;
        if result.status.success() {
            Ok(())
        } else {
            Err(EnforceError::Failed {
                tool: format!("{} -f -", self.binary),
                stderr: String::from_utf8_lossy(&result.stderr).trim().to_owned(),
            })
        }
    }
}

/// Table, sets and chain, created if missing; the chain's rules replaced.
pub fn skeleton(ports: &[u16]) -> String {
    let ports = if ports.is_empty() {
        vec![25]
    } else {
        ports.to_vec()
    };
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let ports = ports.join(", ");
    format!(
        "add table inet {TABLE}\n\
         add set inet {TABLE} {SET4} {{ type ipv4_addr; flags interval, timeout; }}\n\
         add set inet {TABLE} {SET6} {{ type ipv6_addr; flags interval, timeout; }}\n\
         add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}\n\
         flush chain inet {TABLE} input\n\
         add rule inet {TABLE} input tcp dport {{ {ports} }} ct state new ip saddr @{SET4} drop\n\
         add rule inet {TABLE} input tcp dport {{ {ports} }} ct state new ip6 saddr @{SET6} drop\n"
    )
}

/// One nft batch and what it changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// The `nft -f -` input.
    pub text: String,
    /// Elements added.
    pub added: usize,
    /// Elements removed.
    pub removed: usize,
    rebuild: bool,
}

impl Batch {
    fn changed(&self) -> bool {
        self.rebuild || self.added > 0 || self.removed > 0
    }
}

fn set_of(net: &IpNet) -> &'static str {
    if net.addr().is_ipv4() { SET4 } else { SET6 }
}

fn element(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        net.addr().to_string()
    } else {
        net.to_string()
    }
}

/// The batch that turns `actual` into `desired` (pure). With `rebuild`,
/// the skeleton is recreated first.
pub fn plan_batch(ports: &[u16], desired: &[Target], actual: &[IpNet], rebuild: bool) -> Batch {
    let mut want: BTreeMap<IpNet, u64> = BTreeMap::new();
    for t in desired {
        let net = t.net.trunc();
        let e = want.entry(net).or_insert(0);
        *e = (*e).max(t.remaining.max(1));
    }
    // Interval sets refuse overlapping elements: a ban inside a wider ban is
    // already enforced by the wider one.
    let nets: Vec<IpNet> = want.keys().copied().collect();
    want.retain(|net, _| !nets.iter().any(|other| other != net && other.contains(net)));
    let have: std::collections::BTreeSet<IpNet> = actual.iter().map(IpNet::trunc).collect();
    let mut batch = Batch {
        rebuild,
        ..Batch::default()
    };
    if rebuild {
        batch.text.push_str(&skeleton(ports));
    }
    for net in have.iter().filter(|n| !want.contains_key(n)) {
        let _ = writeln!(
            batch.text,
            "delete element inet {TABLE} {} {{ {} }}",
            set_of(net),
            element(net)
        );
        batch.removed += 1;
    }
    for (net, secs) in want.iter().filter(|(n, _)| !have.contains(n)) {
        let _ = writeln!(
            batch.text,
            "add element inet {TABLE} {} {{ {} timeout {secs}s }}",
            set_of(net),
            element(net)
        );
        batch.added += 1;
    }
    batch
}

/// The elements of `nft -j list set` output.
pub fn parse_set(json: &[u8]) -> Result<Vec<IpNet>, String> {
    let doc: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let items = doc["nftables"].as_array().ok_or("no `nftables` array")?;
    let mut out = Vec::new();
    for item in items {
        let Some(elems) = item["set"]["elem"].as_array() else {
            continue;
        };
        for elem in elems {
            // Either a bare value, or {"elem": {"val": …, "timeout": …}}.
            let val = if elem.get("elem").is_some() {
                &elem["elem"]["val"]
            } else {
                elem
            };
            out.push(parse_value(val)?);
        }
    }
    Ok(out)
}

fn parse_value(val: &serde_json::Value) -> Result<IpNet, String> {
    if let Some(s) = val.as_str() {
        return s
            .parse::<IpAddr>()
            .map(IpNet::from)
            .map_err(|e| format!("{s:?}: {e}"));
    }
    if let Some(p) = val.get("prefix") {
        let addr: IpAddr = p["addr"]
            .as_str()
            .ok_or("prefix without addr")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let len = p["len"].as_u64().ok_or("prefix without len")?;
        return IpNet::new(addr, u8::try_from(len).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string());
    }
    if let Some(r) = val.get("range").and_then(|r| r.as_array()) {
        // A range that is not a single prefix: keep its start, so it shows as stray.
        let start: IpAddr = r
            .first()
            .and_then(|v| v.as_str())
            .ok_or("range without start")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        return Ok(IpNet::from(start));
    }
    Err(format!("unexpected set element {val}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(net: &str, remaining: u64) -> Target {
        Target {
            net: net.parse().unwrap(),
            remaining,
        }
    }

    #[test]
    fn batch_adds_missing_and_removes_stray() {
        let actual: Vec<IpNet> = vec![
            "203.0.113.9/32".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        let b = plan_batch(
            &[25],
            &[t("203.0.113.9/32", 60), t("2001:db8::bad/128", 3600)],
            &actual,
            false,
        );
        assert_eq!(
            b.text,
            "delete element inet nolist banned4 { 198.51.100.0/24 }\n\
             add element inet nolist banned6 { 2001:db8::bad timeout 3600s }\n"
        );
        assert_eq!((b.added, b.removed), (1, 1));
        assert!(!plan_batch(&[25], &[t("203.0.113.9/32", 60)], &actual[..1], false).changed());
    }

    #[test]
    fn bans_inside_wider_bans_are_left_to_them() {
        let b = plan_batch(
            &[25],
            &[t("198.51.100.7/32", 60), t("198.51.100.0/24", 600)],
            &[],
            false,
        );
        assert_eq!(
            b.text,
            "add element inet nolist banned4 { 198.51.100.0/24 timeout 600s }\n"
        );
    }

    #[test]
    fn rebuild_starts_with_the_skeleton() {
        let b = plan_batch(&[25, 587], &[t("203.0.113.9/32", 60)], &[], true);
        assert!(b.text.starts_with("add table inet nolist\n"), "{}", b.text);
        assert!(
            b.text
                .contains("tcp dport { 25, 587 } ct state new ip saddr @banned4 drop")
        );
        assert!(
            b.text
                .ends_with("add element inet nolist banned4 { 203.0.113.9 timeout 60s }\n")
        );
    }

    #[test]
    fn parses_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "banned4", "table": "nolist", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60, "expires": 59}}, {"elem": {"val": "203.0.113.9", "timeout": 3600, "expires": 3599}}, "192.0.2.1"]}}]}"#;
        let nets = parse_set(json).unwrap();
        let text: Vec<String> = nets.iter().map(ToString::to_string).collect();
        assert_eq!(text, ["198.51.100.0/24", "203.0.113.9/32", "192.0.2.1/32"]);
        assert!(parse_set(b"not json").is_err());
        assert_eq!(
            parse_set(br#"{"nftables": [{"set": {"name": "banned4"}}]}"#).unwrap(),
            vec![]
        );
    }
}
