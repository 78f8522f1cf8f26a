//! The nftables backend: nolist's own table `inet nolist` with one set per
//! address family (`flags interval, timeout`, so bans also expire in the
//! kernel when the daemon is gone) and a chain that drops new TCP
//! connections to the enforced ports from banned sources. Every change is
//! one `nft -f -` batch (one transaction); the state is read back with
//! `nft -j`. No other table is ever touched.
//!
//! In refuse mode the same table also holds the decoy's evidence: a rule
//! per decoy address answers SYNs with a TCP reset and counts them per
//! source in a dynamic set (`seen4`/`seen6`, with counters and timeouts),
//! which the daemon reads back as decoy hits. Banned sources are dropped
//! before that rule, so they stop counting.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

use super::{Change, EnforceError, Enforcer, element, exec};

/// The table nolist owns.
pub const TABLE: &str = "nolist";
const SET4: &str = "banned4";
const SET6: &str = "banned6";
/// Refuse-mode evidence: the sources of SYNs to the decoy, with counters.
const SEEN4: &str = "seen4";
const SEEN6: &str = "seen6";
/// Most sources remembered per family in the evidence sets.
const SEEN_SIZE: u32 = 65_536;

/// The nftables backend.
#[derive(Clone, Debug)]
pub struct Nft {
    /// The `nft` binary.
    pub binary: String,
    /// TCP ports closed to banned sources.
    pub ports: Vec<u16>,
    /// Refuse mode: the decoy addresses whose SYNs are answered with a TCP
    /// reset and counted per source (empty: no evidence rules).
    pub decoys: Vec<SocketAddr>,
    /// How long a quiet source stays in the evidence sets.
    pub seen_timeout: Duration,
}

impl Nft {
    /// A backend using `nft` from PATH.
    pub fn new(ports: Vec<u16>) -> Nft {
        Nft {
            binary: "nft".into(),
            ports,
            decoys: Vec::new(),
            seen_timeout: Duration::from_secs(3600),
        }
    }

    /// Also answers SYNs to `decoys` with a TCP reset and counts them per
    /// source (refuse mode's evidence); sources stay counted while they
    /// come back within `timeout`.
    pub fn with_evidence(mut self, decoys: Vec<SocketAddr>, timeout: Duration) -> Nft {
        self.decoys = decoys;
        self.seen_timeout = timeout.max(Duration::from_secs(1));
        self
    }

    /// Every source counted in the evidence sets with its SYN count.
    pub fn read_seen(&self) -> Result<Vec<(IpAddr, u64)>, EnforceError> {
        let mut out = Vec::new();
        for set in [SEEN4, SEEN6] {
            if let Some(json) = self.list_set(set)? {
                out.extend(
                    parse_counters(&json).map_err(|message| EnforceError::Output {
                        tool: self.binary.clone(),
                        message,
                    })?,
                );
            }
        }
        Ok(out)
    }

    /// `nft -j list set` of one of nolist's sets; `None` when it is missing.
    fn list_set(&self, set: &str) -> Result<Option<Vec<u8>>, EnforceError> {
        match exec::run(
            &self.binary,
            &["-j", "list", "set", "inet", TABLE, set],
            None,
            exec::TIMEOUT,
        ) {
            Ok(json) => Ok(Some(json)),
            Err(EnforceError::Failed { stderr, .. })
                if stderr.contains("No such file or directory") =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn run_batch(&self, batch: &str) -> Result<(), EnforceError> {
        exec::run(
            &self.binary,
            &["-f", "-"],
            Some(batch.as_bytes()),
            exec::TIMEOUT,
        )
        .map(|_| ())
    }

    /// Table, sets and chain, created if missing; the chain's rules replaced.
    pub fn skeleton(&self) -> String {
        let ports = if self.ports.is_empty() {
            vec![25]
        } else {
            self.ports.clone()
        };
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let ports = ports.join(", ");
        let mut text = format!(
            "add table inet {TABLE}\n\
             add set inet {TABLE} {SET4} {{ type ipv4_addr; flags interval, timeout; }}\n\
             add set inet {TABLE} {SET6} {{ type ipv6_addr; flags interval, timeout; }}\n\
             add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}\n\
             flush chain inet {TABLE} input\n\
             add rule inet {TABLE} input tcp dport {{ {ports} }} ct state new ip saddr @{SET4} drop\n\
             add rule inet {TABLE} input tcp dport {{ {ports} }} ct state new ip6 saddr @{SET6} drop\n"
        );
        if !self.decoys.is_empty() {
            let secs = self.seen_timeout.as_secs();
            for (set, ty) in [(SEEN4, "ipv4_addr"), (SEEN6, "ipv6_addr")] {
                let _ = writeln!(
                    text,
                    "add set inet {TABLE} {set} {{ type {ty}; size {SEEN_SIZE}; flags dynamic, timeout; timeout {secs}s; counter; }}"
                );
            }
            for decoy in &self.decoys {
                let (family, set) = if decoy.is_ipv4() {
                    ("ip", SEEN4)
                } else {
                    ("ip6", SEEN6)
                };
                let _ = writeln!(
                    text,
                    "add rule inet {TABLE} input {family} daddr {} tcp dport {} tcp flags & (syn | ack) == syn update @{set} {{ {family} saddr counter }} reject with tcp reset",
                    decoy.ip(),
                    decoy.port()
                );
            }
        }
        text
    }
}

impl Enforcer for Nft {
    fn name(&self) -> &'static str {
        "nftables"
    }

    /// Checks that nft runs and may change the ruleset, by (re)creating
    /// nolist's table and chain.
    fn check(&mut self) -> Result<(), EnforceError> {
        self.run_batch(&self.skeleton())
    }

    /// The elements of both ban sets; `None` when the table or a set is missing.
    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let mut out = Vec::new();
        for set in [SET4, SET6] {
            let Some(json) = self.list_set(set)? else {
                return Ok(None);
            };
            out.extend(parse_set(&json).map_err(|message| EnforceError::Output {
                tool: self.binary.clone(),
                message,
            })?);
        }
        // The evidence sets are part of the skeleton too.
        if !self.decoys.is_empty() {
            for set in [SEEN4, SEEN6] {
                if self.list_set(set)?.is_none() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(out))
    }

    /// One `nft -f -` batch: one transaction.
    fn apply(&mut self, change: &Change) -> Result<(), EnforceError> {
        self.run_batch(&batch_text(&self.skeleton(), change))
    }

    fn evidence(&mut self) -> Result<Vec<(IpAddr, u64)>, EnforceError> {
        if self.decoys.is_empty() {
            return Ok(Vec::new());
        }
        self.read_seen()
    }
}

fn set_of(net: &IpNet) -> &'static str {
    if net.addr().is_ipv4() { SET4 } else { SET6 }
}

/// The `nft -f -` input for `change` (pure): the skeleton first when it
/// must be rebuilt, then deletions, then additions with their timeouts.
pub fn batch_text(skeleton: &str, change: &Change) -> String {
    let mut text = String::new();
    if change.rebuild {
        text.push_str(skeleton);
    }
    for net in &change.remove {
        let _ = writeln!(
            text,
            "delete element inet {TABLE} {} {{ {} }}",
            set_of(net),
            element(net)
        );
    }
    for (net, secs) in &change.add {
        let _ = writeln!(
            text,
            "add element inet {TABLE} {} {{ {} timeout {secs}s }}",
            set_of(net),
            element(net)
        );
    }
    text
}

/// Every set element in `nft -j list set` output.
fn set_elements(json: &[u8]) -> Result<Vec<serde_json::Value>, String> {
    let mut doc: serde_json::Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    let items = doc["nftables"]
        .as_array_mut()
        .ok_or("no `nftables` array")?;
    Ok(items
        .iter_mut()
        .filter_map(|item| match item["set"]["elem"].take() {
            serde_json::Value::Array(elems) => Some(elems),
            _ => None,
        })
        .flatten()
        .collect())
}

/// The elements of `nft -j list set` output.
pub fn parse_set(json: &[u8]) -> Result<Vec<IpNet>, String> {
    set_elements(json)?
        .iter()
        .map(|elem| {
            // Either a bare value, or {"elem": {"val": …, "timeout": …}}.
            let val = if elem.get("elem").is_some() {
                &elem["elem"]["val"]
            } else {
                elem
            };
            parse_value(val)
        })
        .collect()
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

/// The sources and SYN counts of an evidence set's `nft -j list set` output.
pub fn parse_counters(json: &[u8]) -> Result<Vec<(IpAddr, u64)>, String> {
    set_elements(json)?
        .iter()
        .map(|elem| {
            let ip = elem["elem"]["val"]
                .as_str()
                .ok_or_else(|| format!("unexpected evidence element {elem}"))?
                .parse::<IpAddr>()
                .map_err(|e| e.to_string())?;
            Ok((ip, elem["elem"]["counter"]["packets"].as_u64().unwrap_or(0)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enforce::Target;
    use crate::enforce::tests::t;

    fn batch(desired: &[Target], actual: Option<&[IpNet]>) -> String {
        let nft = Nft::new(vec![25, 587]);
        batch_text(&nft.skeleton(), &Change::between(desired, actual))
    }

    #[test]
    fn batch_deletes_stray_and_adds_missing_with_timeouts() {
        let actual: Vec<IpNet> = vec![
            "203.0.113.9/32".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        assert_eq!(
            batch(
                &[t("203.0.113.9/32", 60), t("2001:db8::bad/128", 3600)],
                Some(&actual)
            ),
            "delete element inet nolist banned4 { 198.51.100.0/24 }\n\
             add element inet nolist banned6 { 2001:db8::bad timeout 3600s }\n"
        );
    }

    #[test]
    fn rebuild_starts_with_the_skeleton() {
        let b = batch(&[t("203.0.113.9/32", 60)], None);
        assert!(b.starts_with("add table inet nolist\n"), "{b}");
        assert!(b.contains("tcp dport { 25, 587 } ct state new ip saddr @banned4 drop"));
        assert!(b.ends_with("add element inet nolist banned4 { 203.0.113.9 timeout 60s }\n"));
        assert!(
            !b.contains("seen4"),
            "no evidence rules outside refuse mode: {b}"
        );
    }

    #[test]
    fn refuse_evidence_rules_follow_the_drop_rules() {
        let nft = Nft::new(vec![25]).with_evidence(
            vec![
                "198.18.0.1:25".parse().unwrap(),
                "[2001:db8::1]:2525".parse().unwrap(),
            ],
            Duration::from_secs(600),
        );
        let s = nft.skeleton();
        let drop = s.find("@banned4 drop").unwrap();
        let seen = s
            .find("ip daddr 198.18.0.1 tcp dport 25 tcp flags & (syn | ack) == syn update @seen4 { ip saddr counter } reject with tcp reset")
            .unwrap_or_else(|| panic!("{s}"));
        assert!(
            drop < seen,
            "banned sources are dropped before they count: {s}"
        );
        assert!(s.contains("ip6 daddr 2001:db8::1 tcp dport 2525"), "{s}");
        assert!(s.contains("add set inet nolist seen6 { type ipv6_addr; size 65536; flags dynamic, timeout; timeout 600s; counter; }"), "{s}");
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

    #[test]
    fn parses_evidence_counters() {
        // As `nft -j list set inet nolist seen4` prints it (nft 1.0.6).
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "seen4", "table": "nolist", "type": "ipv4_addr", "handle": 2, "size": 65536, "flags": ["timeout"], "timeout": 3600, "elem": [{"elem": {"val": "198.18.0.9", "expires": 3599, "counter": {"packets": 3, "bytes": 180}}}], "stmt": [{"counter": null}]}}]}"#;
        assert_eq!(
            parse_counters(json).unwrap(),
            vec![("198.18.0.9".parse().unwrap(), 3)]
        );
        assert_eq!(
            parse_counters(br#"{"nftables": [{"set": {"name": "seen4"}}]}"#).unwrap(),
            vec![]
        );
        assert!(
            parse_counters(br#"{"nftables": [{"set": {"elem": [{"elem": {"val": "x; drop"}}]}}]}"#)
                .is_err()
        );
    }
}
