//! The iptables backend, for hosts without nftables: two ipsets
//! (`nolist4`, `nolist6`; `hash:net` with per-element timeouts, so bans
//! expire in the kernel when the daemon is gone) and a chain `NOLIST` in the
//! filter table of iptables and ip6tables, jumped to first from `INPUT`,
//! that drops new TCP connections to the enforced ports from the sets.
//! Changes are one `ipset -exist restore` per reconcile (one process, not a
//! transaction: ipset has none); the chains are written with
//! `iptables-restore --noflush`, which replaces only the `NOLIST` chain. The
//! state is read back with `ipset save` and `iptables-save`. No other chain
//! or set is touched, apart from the one jump rule in `INPUT`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::{Change, EnforceError, Enforcer, Report, Timeouts, element, exec, parse_element};

/// The chain nolist owns in each filter table.
pub const CHAIN: &str = "NOLIST";
const SET4: &str = "nolist4";
const SET6: &str = "nolist6";
/// ipset's longest element timeout (seconds); longer bans are renewed
/// when half of it is left (see `Change::renewing`).
const MAX_TIMEOUT: u64 = 2_147_483;
/// Room for large ban lists (ipset's default is 65,536).
const MAX_ELEMENTS: u32 = 1 << 20;

/// The iptables + ipset backend.
#[derive(Clone, Debug)]
pub struct Ipset {
    /// TCP ports closed to banned sources.
    pub ports: Vec<u16>,
    /// The tools (`ipset`, `iptables-restore`, …), by name or path.
    pub ipset: String,
    /// `iptables` and `ip6tables` prefixes: `PREFIX-save`, `PREFIX-restore`.
    pub iptables: [String; 2],
    /// When each element the last read found expires.
    held: HashMap<IpNet, Instant>,
}

impl Ipset {
    /// A backend using the tools from PATH.
    pub fn new(ports: Vec<u16>) -> Ipset {
        Ipset {
            ports,
            ipset: "ipset".into(),
            iptables: ["iptables".into(), "ip6tables".into()],
            held: HashMap::new(),
        }
    }

    /// The rule in `NOLIST` for one family's set.
    fn rule(&self, set: &str) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        format!(
            "-A {CHAIN} -p tcp -m multiport --dports {} -m conntrack --ctstate NEW -m set --match-set {set} src -j DROP",
            ports.join(",")
        )
    }

    /// Creates the sets if missing, writes the chains, and adds the jump
    /// from `INPUT` where it is missing.
    fn setup(&self) -> Result<(), EnforceError> {
        for (set, family) in [(SET4, "inet"), (SET6, "inet6")] {
            let max = MAX_ELEMENTS.to_string();
            exec::run(
                &self.ipset,
                &[
                    "create", set, "hash:net", "family", family, "timeout", "0", "maxelem", &max,
                    "-exist",
                ],
                None,
                exec::TIMEOUT,
            )?;
        }
        for (tool, set) in self.iptables.iter().zip([SET4, SET6]) {
            let saved = exec::run(
                &format!("{tool}-save"),
                &["-t", "filter"],
                None,
                exec::TIMEOUT,
            )?;
            let jump = has_jump(&String::from_utf8_lossy(&saved));
            exec::run(
                &format!("{tool}-restore"),
                &["--noflush"],
                Some(chain_text(&self.rule(set), !jump).as_bytes()),
                exec::TIMEOUT,
            )?;
        }
        Ok(())
    }
}

/// The `iptables-restore --noflush` input that replaces `NOLIST` (a
/// declared chain is flushed) and, when `jump`, inserts the jump to it.
fn chain_text(rule: &str, jump: bool) -> String {
    let mut text = format!("*filter\n:{CHAIN} - [0:0]\n{rule}\n");
    if jump {
        let _ = writeln!(text, "-I INPUT 1 -j {CHAIN}");
    }
    text.push_str("COMMIT\n");
    text
}

/// True when `iptables-save` output jumps from `INPUT` to `NOLIST`.
fn has_jump(saved: &str) -> bool {
    saved
        .lines()
        .any(|l| l.trim() == format!("-A INPUT -j {CHAIN}"))
}

/// True when `iptables-save` output has the drop rule exactly as nolist writes it.
fn has_rule(saved: &str, rule: &str) -> bool {
    saved.lines().any(|l| l.trim() == rule)
}

/// A set member and its remaining timeout in seconds, when it has one.
type Member = (IpNet, Option<u64>);

/// The members of one set in `ipset save` output; `None` when the set is
/// not in it.
fn parse_save(saved: &str, set: &str) -> Result<Option<Vec<Member>>, super::Unreadable> {
    let mut found = false;
    let mut out = Vec::new();
    for line in saved.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("create"), Some(name), _) if name == set => found = true,
            (Some("add"), Some(name), Some(member)) if name == set => {
                let mut rest = words;
                let timeout = loop {
                    match rest.next() {
                        Some("timeout") => break rest.next().and_then(|t| t.parse().ok()),
                        Some(_) => {}
                        None => break None,
                    }
                };
                out.push((parse_element(member)?, timeout));
            }
            _ => {}
        }
    }
    Ok(found.then_some(out))
}

/// The `ipset -exist restore` input for `change` (pure).
fn restore_text(change: &Change) -> String {
    let set_of = |net: &IpNet| if net.addr().is_ipv4() { SET4 } else { SET6 };
    let mut text = String::new();
    for net in &change.remove {
        let _ = writeln!(text, "del {} {}", set_of(net), element(net));
    }
    for (net, secs) in &change.add {
        // hash:net holds /1 to /32 (/128); a /0 "ban" would close port 25 to the world.
        if net.prefix_len() == 0 {
            continue;
        }
        let _ = writeln!(
            text,
            "add {} {} timeout {}",
            set_of(net),
            element(net),
            (*secs).clamp(1, MAX_TIMEOUT)
        );
    }
    text
}

impl Enforcer for Ipset {
    fn name(&self) -> &'static str {
        "iptables"
    }

    fn check(&mut self) -> Result<(), EnforceError> {
        self.setup()
    }

    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let output = |message: super::Unreadable| EnforceError::Output {
            tool: self.ipset.clone(),
            message: message.0,
        };
        let saved = exec::run(&self.ipset, &["save"], None, exec::TIMEOUT)?;
        let saved = String::from_utf8_lossy(&saved);
        let now = Instant::now();
        let mut out = Vec::new();
        self.held.clear();
        for set in [SET4, SET6] {
            match parse_save(&saved, set).map_err(output)? {
                Some(members) => {
                    for (net, timeout) in members {
                        if let Some(secs) = timeout {
                            self.held.insert(net, now + Duration::from_secs(secs));
                        }
                        out.push(net);
                    }
                }
                None => return Ok(None),
            }
        }
        for (tool, set) in self.iptables.iter().zip([SET4, SET6]) {
            let rules = exec::run(
                &format!("{tool}-save"),
                &["-t", "filter"],
                None,
                exec::TIMEOUT,
            )?;
            let rules = String::from_utf8_lossy(&rules);
            if !has_jump(&rules) || !has_rule(&rules, &self.rule(set)) {
                return Ok(None);
            }
        }
        Ok(Some(out))
    }

    fn timeouts(&self) -> Option<&dyn Timeouts> {
        Some(self)
    }

    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        if change.rebuild {
            self.setup()?;
        }
        let text = restore_text(change);
        if !text.is_empty() {
            exec::run(
                &self.ipset,
                &["-exist", "restore"],
                Some(text.as_bytes()),
                exec::TIMEOUT,
            )?;
        }
        Ok(Report::of(change))
    }
}

impl Timeouts for Ipset {
    fn remaining(&self, net: &IpNet) -> Option<u64> {
        let expires = self.held.get(net)?;
        Some(expires.saturating_duration_since(Instant::now()).as_secs())
    }

    /// ipset's own limit (about 24 days).
    fn max_timeout(&self) -> u64 {
        MAX_TIMEOUT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_text_clamps_timeouts_and_skips_slash_zero() {
        let change = Change {
            rebuild: false,
            add: vec![
                ("198.18.0.9/32".parse().unwrap(), 60),
                ("198.18.5.0/24".parse().unwrap(), 40 * 86_400),
                ("2001:db8::/64".parse().unwrap(), 0),
                ("0.0.0.0/0".parse().unwrap(), 60),
            ],
            remove: vec!["198.18.7.7/32".parse().unwrap()],
        };
        assert_eq!(
            restore_text(&change),
            "del nolist4 198.18.7.7\n\
             add nolist4 198.18.0.9 timeout 60\n\
             add nolist4 198.18.5.0/24 timeout 2147483\n\
             add nolist6 2001:db8::/64 timeout 1\n"
        );
    }

    #[test]
    fn reads_ipset_save_output() {
        let saved = "create nolist4 hash:net family inet hashsize 1024 maxelem 1048576 timeout 0 bucketsize 12 initval 0xd63499b7\n\
                     add nolist4 198.18.6.0/24 timeout 2147483\n\
                     add nolist4 198.18.0.9 timeout 100\n\
                     create other hash:ip family inet\n\
                     add other 192.0.2.1\n";
        let got = parse_save(saved, SET4).unwrap().unwrap();
        let got: Vec<(String, Option<u64>)> =
            got.iter().map(|(n, t)| (n.to_string(), *t)).collect();
        assert_eq!(
            got,
            [
                ("198.18.6.0/24".to_owned(), Some(2_147_483)),
                ("198.18.0.9/32".to_owned(), Some(100))
            ]
        );
        assert_eq!(parse_save(saved, SET6).unwrap(), None);
        assert!(parse_save("create nolist4 x\nadd nolist4 bogus\n", SET4).is_err());
    }

    #[test]
    fn chain_text_and_rule() {
        let b = Ipset::new(vec![25, 587]);
        let rule = b.rule(SET4);
        assert_eq!(
            rule,
            "-A NOLIST -p tcp -m multiport --dports 25,587 -m conntrack --ctstate NEW -m set --match-set nolist4 src -j DROP"
        );
        assert_eq!(
            chain_text(&rule, true),
            format!("*filter\n:NOLIST - [0:0]\n{rule}\n-I INPUT 1 -j NOLIST\nCOMMIT\n")
        );
        let saved = format!("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j NOLIST\n{rule}\nCOMMIT\n");
        assert!(has_jump(&saved) && has_rule(&saved, &rule));
        assert!(!has_jump("-A INPUT -j ACCEPT\n"));
    }
}
