//! The nftables backend: nolist's own table `inet nolist` with two sets per
//! address family, every element with a timeout so bans also expire in the
//! kernel when the daemon is gone: `banned4`/`banned6` for single addresses
//! (hash sets) and `banned4_nets`/`banned6_nets` for networks (interval
//! sets), and a chain that drops new TCP connections to the enforced ports
//! from them. The table, the chain and networks are written with `nft -f -`
//! (one transaction), single addresses as netlink set-element messages (one
//! transaction; `nft` would spend most of the time parsing them); the state
//! is read back with `nft -j`. No other table is ever touched.
//!
//! Reading back is what costs with many bans: nft loads the whole table
//! (about a second for 100,000 elements). So the backend asks the kernel
//! for the ruleset's generation (one netlink request) first, and reads the
//! sets again only when something else changed the ruleset since its own
//! last read or batch; otherwise it uses what it knows, including each
//! element's expiry. An element within a few seconds of its kernel expiry
//! is left to expire: never deleted (the delete could race the kernel and
//! fail the batch), never re-added (an `add` does not renew its timeout).
//!
//! The let-through (listening modes): two more interval sets, `pass4` and
//! `pass6`, hold the networks of retrying MTAs (retry-exempt, see
//! `bans::retry`), each with the exemption's remaining time as its timeout.
//! Rules first in the chain answer their SYNs to the decoy addresses with a
//! TCP reset, so they try the next MX the way every sender family does
//! after a reset, before the responder ever sees them. The pass sets are a
//! list of their own ([`LetThrough::read_passes`]), never mixed with bans.
//!
//! With refuse-mode evidence (opt-in) a second table, `inet nolist_refuse` (its own table, so
//! reading it never loads the ban sets), holds the decoy's evidence: a rule
//! per decoy address, after the drop rules (priority −5 against −10),
//! answers SYNs with a TCP reset and counts them per source in a dynamic
//! set (`seen4`/`seen6`, with counters and timeouts), which the daemon reads
//! back as decoy hits. Banned sources are dropped first, so they stop
//! counting.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::Deserialize;

use super::{
    Cache, Change, Element, EnforceError, Enforcer, LetThrough, MAX_TIMEOUT, Report, Timeouts,
    Unreadable, exec, netlink,
};

/// The table nolist owns.
pub const TABLE: &str = "nolist";
/// The table of refuse mode's evidence.
pub const EVIDENCE_TABLE: &str = "nolist_refuse";
/// The ban sets: (name, element type, holds networks).
const SETS: [(&str, &str, bool); 4] = [
    ("banned4", "ipv4_addr", false),
    ("banned4_nets", "ipv4_addr", true),
    ("banned6", "ipv6_addr", false),
    ("banned6_nets", "ipv6_addr", true),
];
/// The let-through sets: (name, element type); both interval sets.
const PASS_SETS: [(&str, &str); 2] = [("pass4", "ipv4_addr"), ("pass6", "ipv6_addr")];
/// Refuse-mode evidence: the sources of SYNs to the decoy, with counters.
const SEEN4: &str = "seen4";
const SEEN6: &str = "seen6";
/// Most sources remembered per family in the evidence sets.
const SEEN_SIZE: u32 = 65_536;
/// Elements per `add element` / `delete element` command in a batch.
const CHUNK: usize = 4096;
/// An element this close to its kernel expiry is left to expire.
const SETTLING: Duration = Duration::from_secs(3);

/// A single address (`/32`, `/128`): it goes in a hash set, over netlink.
fn is_host(net: &IpNet) -> bool {
    net.prefix_len() == net.max_prefix_len()
}

/// The part of `change` for single addresses (`hosts`) or for networks;
/// the rebuild goes with the networks (both are `nft -f` text).
fn part(change: &Change, hosts: bool) -> Change {
    Change {
        rebuild: change.rebuild && !hosts,
        add: change
            .add
            .iter()
            .filter(|(n, _)| is_host(n) == hosts)
            .copied()
            .collect(),
        remove: change
            .remove
            .iter()
            .filter(|n| is_host(n) == hosts)
            .copied()
            .collect(),
    }
}

/// The set of `net`.
fn set_of(net: &IpNet) -> &'static str {
    match (net.addr().is_ipv4(), is_host(net)) {
        (true, true) => "banned4",
        (true, false) => "banned4_nets",
        (false, true) => "banned6",
        (false, false) => "banned6_nets",
    }
}

/// The let-through set of `net`.
fn pass_set_of(net: &IpNet) -> &'static str {
    if net.addr().is_ipv4() {
        "pass4"
    } else {
        "pass6"
    }
}

/// What the backend knows the sets hold, as of ruleset generation `gen`.
#[derive(Clone, Debug)]
struct Known {
    generation: u32,
    /// Every element of the ban sets and when the kernel drops it.
    expires: HashMap<IpNet, Instant>,
    /// Every element of the let-through sets and when the kernel drops it.
    passes: HashMap<IpNet, Instant>,
}

/// What [`Nft::read_all`] found: the ban sets' and the pass sets' elements
/// with their kernel expiry.
struct Sets {
    bans: HashMap<IpNet, Instant>,
    passes: HashMap<IpNet, Instant>,
}

/// The nftables backend.
#[derive(Clone, Debug)]
pub struct Nft {
    /// The `nft` binary.
    pub binary: String,
    /// TCP ports closed to banned sources.
    pub ports: Vec<u16>,
    /// Refuse mode: the decoy addresses whose SYNs are answered with a TCP
    /// reset and counted per source (empty: no evidence table).
    pub decoys: Vec<SocketAddr>,
    /// How long a quiet source stays in the evidence sets.
    pub seen_timeout: Duration,
    /// Listening modes: the decoy addresses whose SYNs from a retry-exempt
    /// network are answered with a TCP reset (empty: no let-through).
    pub pass_decoys: Vec<SocketAddr>,
    known: Option<Known>,
}

impl Nft {
    /// A backend using `nft` from PATH.
    pub fn new(ports: Vec<u16>) -> Nft {
        Nft {
            binary: "nft".into(),
            ports,
            decoys: Vec::new(),
            seen_timeout: Duration::from_secs(3600),
            pass_decoys: Vec::new(),
            known: None,
        }
    }

    /// Also lets retry-exempt networks through: their SYNs to `decoys` (the
    /// responder's listen addresses) are answered with a TCP reset. A
    /// decoy on port 0 (a port the kernel picks) gets no rule.
    pub fn with_let_through(mut self, decoys: Vec<SocketAddr>) -> Nft {
        self.pass_decoys = decoys;
        self
    }

    /// The let-through rules (without `add rule inet nolist input`), one
    /// per decoy address and family. A decoy on the unspecified address
    /// listens on every address: its rule matches the port alone, and for
    /// `[::]` (dual-stack) IPv4 too.
    fn pass_rules(&self) -> Vec<String> {
        let mut rules: Vec<String> = Vec::new();
        for decoy in self.pass_decoys.iter().filter(|d| d.port() != 0) {
            let ip = decoy.ip();
            let mut families = vec![ip.is_ipv4()];
            if ip.is_unspecified() && !ip.is_ipv4() {
                families.push(true);
            }
            for v4 in families {
                let (family, set) = if v4 {
                    ("ip", "pass4")
                } else {
                    ("ip6", "pass6")
                };
                let daddr = if ip.is_unspecified() {
                    String::new()
                } else {
                    format!("{family} daddr {ip} ")
                };
                let rule = format!(
                    "{daddr}tcp dport {} tcp flags & (syn | ack) == syn {family} saddr @{set} reject with tcp reset",
                    decoy.port()
                );
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        rules
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
            if let Some(json) = self.list_set(EVIDENCE_TABLE, set)? {
                out.extend(parse_counters(&json).map_err(|message| self.output(message))?);
            }
        }
        Ok(out)
    }

    fn output(&self, message: impl ToString) -> EnforceError {
        EnforceError::Output {
            tool: self.binary.clone(),
            message: message.to_string(),
        }
    }

    /// `nft -j list set` of one set; `None` when it (or its table) is missing.
    fn list_set(&self, table: &str, set: &str) -> Result<Option<Vec<u8>>, EnforceError> {
        self.list(&["set", "inet", table, set])
    }

    /// `nft -j list chain inet TABLE input`; `None` when it is missing.
    fn list_chain(&self, table: &str) -> Result<Option<Vec<u8>>, EnforceError> {
        self.list(&["chain", "inet", table, "input"])
    }

    /// `nft -j list WHAT…`; `None` when nft says the object does not exist.
    fn list(&self, what: &[&str]) -> Result<Option<Vec<u8>>, EnforceError> {
        let args: Vec<&str> = ["-j", "list"].iter().chain(what).copied().collect();
        match exec::run(&self.binary, &args, None, exec::TIMEOUT) {
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

    /// Tables, sets and chains, created if missing; the chains' rules
    /// replaced. Outside refuse mode the evidence table is removed.
    pub fn skeleton(&self) -> String {
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let ports = ports.join(", ");
        let mut text = format!("add table inet {TABLE}\n");
        for (set, ty, nets) in SETS {
            let flags = if nets { "interval, timeout" } else { "timeout" };
            let _ = writeln!(
                text,
                "add set inet {TABLE} {set} {{ type {ty}; flags {flags}; }}"
            );
        }
        for (set, ty) in PASS_SETS {
            let _ = writeln!(
                text,
                "add set inet {TABLE} {set} {{ type {ty}; flags interval, timeout; }}"
            );
        }
        let _ = writeln!(
            text,
            "add chain inet {TABLE} input {{ type filter hook input priority -10; policy accept; }}\n\
             flush chain inet {TABLE} input"
        );
        // First: a retry-exempt source gets its reset before any drop rule.
        for rule in self.pass_rules() {
            let _ = writeln!(text, "add rule inet {TABLE} input {rule}");
        }
        for (set, ty, _) in SETS {
            let family = if ty == "ipv4_addr" { "ip" } else { "ip6" };
            let _ = writeln!(
                text,
                "add rule inet {TABLE} input tcp dport {{ {ports} }} ct state new {family} saddr @{set} drop"
            );
        }
        // Created first, so the delete works whether or not it existed.
        let _ = writeln!(text, "add table inet {EVIDENCE_TABLE}");
        if self.decoys.is_empty() {
            let _ = writeln!(text, "delete table inet {EVIDENCE_TABLE}");
            return text;
        }
        let secs = self.seen_timeout.as_secs();
        for (set, ty) in [(SEEN4, "ipv4_addr"), (SEEN6, "ipv6_addr")] {
            let _ = writeln!(
                text,
                "add set inet {EVIDENCE_TABLE} {set} {{ type {ty}; size {SEEN_SIZE}; flags dynamic, timeout; timeout {secs}s; counter; }}"
            );
        }
        let _ = writeln!(
            text,
            "add chain inet {EVIDENCE_TABLE} input {{ type filter hook input priority -5; policy accept; }}\n\
             flush chain inet {EVIDENCE_TABLE} input"
        );
        for decoy in &self.decoys {
            let (family, set) = if decoy.is_ipv4() {
                ("ip", SEEN4)
            } else {
                ("ip6", SEEN6)
            };
            let _ = writeln!(
                text,
                "add rule inet {EVIDENCE_TABLE} input {family} daddr {} tcp dport {} tcp flags & (syn | ack) == syn update @{set} {{ {family} saddr counter }} reject with tcp reset",
                decoy.ip(),
                decoy.port()
            );
        }
        text
    }

    /// Writes `change`: the skeleton (on rebuild) and networks with
    /// `nft -f -`, single addresses over netlink (`nft` would spend most of
    /// the time parsing them), or all with `nft` when netlink fails. Returns
    /// the result and the number of transactions committed.
    fn write(&self, change: &Change) -> (Result<(), EnforceError>, u32) {
        let text_part = part(change, false);
        let hosts = part(change, true);
        let mut transactions = 0;
        if !text_part.is_empty() {
            if let Err(e) = self.run_batch(&batch_text(&self.skeleton(), &text_part)) {
                return (Err(e), 0);
            }
            transactions += 1;
        }
        let mut changes = Vec::new();
        for (set, v4) in [("banned4", true), ("banned6", false)] {
            let family = |n: &IpNet| n.addr().is_ipv4() == v4;
            changes.push(netlink::SetChange {
                set,
                verb: netlink::Verb::Delete,
                elements: hosts
                    .remove
                    .iter()
                    .filter(|n| family(n))
                    .map(|n| (n.addr(), 0))
                    .collect(),
            });
            changes.push(netlink::SetChange {
                set,
                verb: netlink::Verb::Add,
                elements: hosts
                    .add
                    .iter()
                    .filter(|(n, _)| family(n))
                    .map(|(n, s)| (n.addr(), *s))
                    .collect(),
            });
        }
        if changes.iter().all(|c| c.elements.is_empty()) {
            return (Ok(()), transactions);
        }
        match netlink::apply(TABLE, &changes) {
            Ok(()) => (Ok(()), transactions + 1),
            Err(e) => {
                tracing::debug!(error = %e, "netlink set elements failed; trying nft");
                let result = self.run_batch(&batch_text("", &hosts));
                let done = u32::from(result.is_ok());
                (result, transactions + done)
            }
        }
    }

    /// Reads every ban and let-through set and checks the chains; `None`
    /// when anything of nolist's is missing or not as nolist writes it (a
    /// set, a rule, an element in the wrong set, a range): then the tables
    /// are recreated.
    fn read_all(&self) -> Result<Option<Sets>, EnforceError> {
        let mut bans = HashMap::new();
        let mut passes = HashMap::new();
        let all = SETS
            .iter()
            .map(|(set, _, _)| (*set, false))
            .chain(PASS_SETS.iter().map(|(set, _)| (*set, true)));
        for (set, pass) in all {
            let Some(json) = self.list_set(TABLE, set)? else {
                return Ok(None);
            };
            // `expires` is in whole seconds, rounded down: count from the
            // end of the listing, plus one, so the kernel drops an element
            // before nolist believes it gone.
            let now = Instant::now();
            let never = now + Duration::from_secs(MAX_TIMEOUT);
            for listed in parse_elements(&json).map_err(|m| self.output(m))? {
                let home = if pass {
                    pass_set_of(&listed.net)
                } else {
                    set_of(&listed.net)
                };
                if !listed.exact || home != set {
                    tracing::warn!(set, element = %listed.net, "nftables: an element nolist did not write; recreating the table");
                    return Ok(None);
                }
                let at = listed
                    .expires
                    .and_then(|s| now.checked_add(Duration::from_secs(s.saturating_add(1))));
                let out = if pass { &mut passes } else { &mut bans };
                out.insert(listed.net, at.unwrap_or(never).min(never));
            }
        }
        let pass_rules = self.pass_rules();
        let sets: Vec<&str> = SETS
            .iter()
            .map(|(s, _, _)| *s)
            .chain(
                PASS_SETS
                    .iter()
                    .map(|(s, _)| *s)
                    .filter(|s| pass_rules.iter().any(|r| r.contains(&format!("@{s} ")))),
            )
            .collect();
        let intact = |json: Option<Vec<u8>>, rules: usize, sets: &[&str]| {
            json.is_some_and(|j| chain_intact(&j, rules, sets))
        };
        if !intact(
            self.list_chain(TABLE)?,
            SETS.len() + pass_rules.len(),
            &sets,
        ) {
            return Ok(None);
        }
        if !self.decoys.is_empty()
            && !intact(self.list_chain(EVIDENCE_TABLE)?, self.decoys.len(), &[])
        {
            return Ok(None);
        }
        Ok(Some(Sets { bans, passes }))
    }

    /// The let-through sets as `nft -j` lists them, without the rest of
    /// the table (when the kernel's generation cannot be read, so nothing
    /// is cached); `None` when one is missing.
    fn list_passes(&self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let mut out = Vec::new();
        for (set, _) in PASS_SETS {
            let Some(json) = self.list_set(TABLE, set)? else {
                return Ok(None);
            };
            out.extend(parse_set(&json).map_err(|m| self.output(m))?);
        }
        Ok(Some(out))
    }
}

impl Enforcer for Nft {
    fn name(&self) -> &'static str {
        "nftables"
    }

    /// Checks that nft runs and may change the ruleset, by (re)creating
    /// nolist's tables and chains. A table of an older layout (other set
    /// types) is replaced; the next reconcile fills it from the store.
    fn check(&mut self) -> Result<(), EnforceError> {
        self.known = None;
        match self.run_batch(&self.skeleton()) {
            Err(EnforceError::Failed { stderr, .. }) if stderr.contains("File exists") => {
                tracing::warn!("nftables: table inet {TABLE} has another layout; recreating it");
                self.run_batch(&format!(
                    "add table inet {TABLE}\ndelete table inet {TABLE}\n{}",
                    self.skeleton()
                ))
            }
            other => other,
        }
    }

    /// What the sets hold, read back only when the ruleset changed since
    /// the last read or batch. Elements about to expire count as present,
    /// so they are not added again (see the module comment).
    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        let generation = netlink::generation().ok();
        let fresh = match (&self.known, generation) {
            (Some(k), Some(g)) => k.generation == g,
            _ => false,
        };
        if !fresh {
            self.known = None;
            let Some(sets) = self.read_all()? else {
                return Ok(None);
            };
            if let Some(generation) = generation {
                self.known = Some(Known {
                    generation,
                    expires: sets.bans.clone(),
                    passes: sets.passes,
                });
            } else {
                return Ok(Some(sets.bans.into_keys().collect()));
            }
        }
        let known = self.known.as_mut().expect("known after a read");
        // What the kernel has dropped by now is gone (with a second's margin).
        let now = Instant::now();
        forget_expired(&mut known.expires, now);
        Ok(Some(known.expires.keys().copied().collect()))
    }

    /// One transaction (two when networks and addresses both change, see
    /// `write`).
    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let change = unsettled(
            change,
            self.known.as_ref().map(|k| &k.expires),
            change.rebuild,
        );
        let before = netlink::generation().ok();
        let (result, transactions) = self.write(&change);
        let after = netlink::generation().ok();
        // Timeouts start when the kernel takes the elements: count from now.
        let written = Instant::now();
        // Only our batches happened in between: what we know stays true.
        match (&mut self.known, before, after, &result) {
            (Some(known), Some(b), Some(a), Ok(()))
                if !change.rebuild
                    && known.generation == b
                    && a == b.wrapping_add(transactions) =>
            {
                known.generation = a;
                for net in &change.remove {
                    known.expires.remove(net);
                }
                for (net, secs) in &change.add {
                    known
                        .expires
                        .insert(*net, written + Duration::from_secs(*secs));
                }
            }
            _ => self.known = None,
        }
        result.map(|()| Report::of(&change))
    }

    fn timeouts(&self) -> Option<&dyn Timeouts> {
        Some(self)
    }

    fn cache(&mut self) -> Option<&mut dyn Cache> {
        Some(self)
    }

    /// Only in the listening modes: in refuse mode the kernel resets
    /// every SYN to the decoy anyway.
    fn let_through(&mut self) -> Option<&mut dyn LetThrough> {
        if self.pass_decoys.is_empty() {
            None
        } else {
            Some(self)
        }
    }
}

impl Timeouts for Nft {
    fn remaining(&self, net: &IpNet) -> Option<u64> {
        let expires = self.known.as_ref()?.expires.get(net)?;
        Some(expires.saturating_duration_since(Instant::now()).as_secs())
    }
}

impl LetThrough for Nft {
    /// Read with the ban sets (see `read`), so a let-through costs no
    /// reading of its own after a reconcile of the bans.
    fn read_passes(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError> {
        if self.read()?.is_none() {
            return Ok(None);
        }
        let Some(known) = self.known.as_mut() else {
            return self.list_passes();
        };
        let now = Instant::now();
        forget_expired(&mut known.passes, now);
        Ok(Some(known.passes.keys().copied().collect()))
    }

    /// One `nft -f -` transaction. As with bans, an element about to
    /// expire is left to expire rather than deleted or renewed.
    fn apply_passes(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let change = unsettled(change, self.known.as_ref().map(|k| &k.passes), false);
        if change.is_empty() {
            return Ok(Report::default());
        }
        let before = netlink::generation().ok();
        let result = self.run_batch(&pass_batch_text(&change));
        let after = netlink::generation().ok();
        let written = Instant::now();
        match (&mut self.known, before, after, &result) {
            (Some(known), Some(b), Some(a), Ok(()))
                if known.generation == b && a == b.wrapping_add(1) =>
            {
                known.generation = a;
                for net in &change.remove {
                    known.passes.remove(net);
                }
                for (net, secs) in &change.add {
                    known
                        .passes
                        .insert(*net, written + Duration::from_secs(*secs));
                }
            }
            _ => self.known = None,
        }
        result.map(|()| Report::of(&change))
    }

    fn pass_remaining(&self, net: &IpNet) -> Option<u64> {
        let expires = self.known.as_ref()?.passes.get(net)?;
        Some(expires.saturating_duration_since(Instant::now()).as_secs())
    }
}

impl Cache for Nft {
    fn forget(&mut self) {
        self.known = None;
    }

    /// The ruleset generation moved past what this backend knows, or it
    /// knows nothing yet, or an element it knows has reached its expiry.
    fn changed_outside(&mut self) -> bool {
        let Some(known) = &self.known else {
            return true;
        };
        let now = Instant::now();
        netlink::generation().ok() != Some(known.generation)
            || known.expires.values().any(|e| *e <= now + SETTLING)
    }
}

impl Nft {
    /// Refuse mode: the sources of refused connections to the decoy and how
    /// many each made so far (none without an evidence table).
    pub fn evidence(&self) -> Result<Vec<(IpAddr, u64)>, EnforceError> {
        if self.decoys.is_empty() {
            return Ok(Vec::new());
        }
        self.read_seen()
    }
}

/// The `nft -f -` input for `change` (pure): the skeleton first when it
/// must be rebuilt, then deletions, then additions with their timeouts,
/// Forgets the elements the kernel has dropped by `now` (with a second's
/// margin).
fn forget_expired(expires: &mut HashMap<IpNet, Instant>, now: Instant) {
    expires.retain(|_, e| now < *e + Duration::from_secs(1));
}

/// `change` without the elements about to expire (within [`SETTLING`] by
/// `expires`): they are left to the kernel's expiry, neither deleted nor
/// renewed, since adding an element the kernel still holds does not change
/// its timeout; one renewed is added again once it is gone.
fn unsettled(change: &Change, expires: Option<&HashMap<IpNet, Instant>>, rebuild: bool) -> Change {
    let now = Instant::now();
    let settling = |net: &IpNet| {
        expires
            .and_then(|m| m.get(net))
            .is_some_and(|e| *e <= now + SETTLING)
    };
    let settled: HashSet<IpNet> = change
        .remove
        .iter()
        .filter(|n| settling(n))
        .copied()
        .collect();
    Change {
        rebuild,
        add: change
            .add
            .iter()
            .filter(|(n, _)| !settled.contains(n))
            .copied()
            .collect(),
        remove: change
            .remove
            .iter()
            .filter(|n| !settled.contains(n))
            .copied()
            .collect(),
    }
}

/// up to 4,096 elements (`CHUNK`) per command.
pub fn batch_text(skeleton: &str, change: &Change) -> String {
    let mut text =
        String::with_capacity(skeleton.len() + 40 * (change.add.len() + change.remove.len()));
    if change.rebuild {
        // Recreated, so nothing of what was there survives (the batch is one
        // transaction: the table is never seen half built).
        let _ = writeln!(text, "add table inet {TABLE}\ndelete table inet {TABLE}");
        text.push_str(skeleton);
    }
    // One pass per set and verb keeps the text in a fixed order.
    for (set, _, _) in SETS {
        let items = change.remove.iter().filter(|n| set_of(n) == set);
        elements_command(&mut text, "delete", set, items.map(|n| (n, None)));
    }
    for (set, _, _) in SETS {
        let items = change.add.iter().filter(|(n, _)| set_of(n) == set);
        elements_command(&mut text, "add", set, items.map(|(n, s)| (n, Some(*s))));
    }
    text
}

/// The `nft -f -` input for a change of the let-through sets (pure):
/// deletions, then additions with their timeouts. A renewal is a delete
/// and an add of the same element in this one transaction.
pub fn pass_batch_text(change: &Change) -> String {
    let mut text = String::new();
    for (set, _) in PASS_SETS {
        let items = change.remove.iter().filter(|n| pass_set_of(n) == set);
        elements_command(&mut text, "delete", set, items.map(|n| (n, None)));
    }
    for (set, _) in PASS_SETS {
        let items = change.add.iter().filter(|(n, _)| pass_set_of(n) == set);
        elements_command(&mut text, "add", set, items.map(|(n, s)| (n, Some(*s))));
    }
    text
}

/// Appends `VERB element inet nolist SET { … }` for `items` (with their
/// timeouts, if given), up to [`CHUNK`] elements per command; nothing for
/// no items.
fn elements_command<'a>(
    text: &mut String,
    verb: &str,
    set: &str,
    items: impl Iterator<Item = (&'a IpNet, Option<u64>)>,
) {
    let mut n = 0;
    for (net, secs) in items {
        if n % CHUNK == 0 {
            if n > 0 {
                text.push_str(" }\n");
            }
            let _ = write!(text, "{verb} element inet {TABLE} {set} {{ ");
        } else {
            text.push_str(", ");
        }
        let _ = write!(text, "{}", Element(net));
        if let Some(secs) = secs {
            let _ = write!(text, " timeout {secs}s");
        }
        n += 1;
    }
    if n > 0 {
        text.push_str(" }\n");
    }
}

/// `nft -j list set` output, as far as nolist reads it.
#[derive(Deserialize)]
struct Listing {
    nftables: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    set: Option<SetBody>,
}

#[derive(Deserialize)]
struct SetBody {
    #[serde(default)]
    elem: Vec<Elem>,
}

/// A bare value, or `{"elem": {"val": …, "expires": …, "counter": …}}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Elem {
    Full { elem: ElemBody },
    Bare(Value),
}

#[derive(Deserialize)]
struct ElemBody {
    val: Value,
    #[serde(default)]
    expires: Option<u64>,
    #[serde(default)]
    counter: Option<Counter>,
}

#[derive(Deserialize)]
struct Counter {
    #[serde(default)]
    packets: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Value {
    Addr(String),
    Prefix { prefix: Prefix },
    Range { range: Vec<String> },
}

#[derive(Deserialize)]
struct Prefix {
    addr: String,
    len: u8,
}

impl Value {
    fn net(&self) -> Result<IpNet, String> {
        let addr = |s: &str| s.parse::<IpAddr>().map_err(|e| format!("{s:?}: {e}"));
        match self {
            Value::Addr(s) => addr(s).map(IpNet::from),
            Value::Prefix { prefix } => {
                IpNet::new(addr(&prefix.addr)?, prefix.len).map_err(|e| e.to_string())
            }
            // A range that is not a single prefix: keep its start, so it shows as stray.
            Value::Range { range } => {
                addr(range.first().ok_or("range without start")?).map(IpNet::from)
            }
        }
    }
}

/// Every element of `nft -j list set` output.
fn elements(json: &[u8]) -> Result<impl Iterator<Item = Elem>, String> {
    let listing: Listing = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    Ok(listing
        .nftables
        .into_iter()
        .filter_map(|i| i.set)
        .flat_map(|s| s.elem))
}

/// One element of `nft -j list set` output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listed {
    /// The address or network (a range's start address).
    pub net: IpNet,
    /// Seconds until the kernel drops it, if it has a timeout.
    pub expires: Option<u64>,
    /// False for a range that is not one network: nolist never writes one.
    pub exact: bool,
}

/// The elements of `nft -j list set` output.
pub fn parse_elements(json: &[u8]) -> Result<Vec<Listed>, Unreadable> {
    elements(json)?
        .map(|e| {
            let (val, expires) = match e {
                Elem::Full { elem } => (elem.val, elem.expires),
                Elem::Bare(v) => (v, None),
            };
            Ok(Listed {
                net: val.net()?,
                expires,
                exact: !matches!(val, Value::Range { .. }),
            })
        })
        .collect()
}

/// The addresses and networks of `nft -j list set` output.
pub fn parse_set(json: &[u8]) -> Result<Vec<IpNet>, Unreadable> {
    Ok(parse_elements(json)?.into_iter().map(|l| l.net).collect())
}

/// Whether `nft -j list chain` output has exactly `rules` rules, one
/// referring to each of `sets` (a flushed or edited chain does not).
fn chain_intact(json: &[u8], rules: usize, sets: &[&str]) -> bool {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(json) else {
        return false;
    };
    let found: Vec<String> = doc["nftables"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter(|i| i.get("rule").is_some())
                .map(|i| i["rule"].to_string())
                .collect()
        })
        .unwrap_or_default();
    found.len() == rules
        && sets
            .iter()
            .all(|set| found.iter().any(|r| r.contains(&format!("\"@{set}\""))))
}

/// The sources and SYN counts of an evidence set's `nft -j list set` output.
pub fn parse_counters(json: &[u8]) -> Result<Vec<(IpAddr, u64)>, Unreadable> {
    elements(json)?
        .map(|e| match e {
            Elem::Full {
                elem:
                    ElemBody {
                        val: Value::Addr(s),
                        counter,
                        ..
                    },
            } => s
                .parse::<IpAddr>()
                .map(|ip| (ip, counter.map_or(0, |c| c.packets)))
                .map_err(|e| Unreadable(format!("{s:?}: {e}"))),
            _ => Err(Unreadable("unexpected evidence element".to_owned())),
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
    fn batch_deletes_stray_and_adds_missing_per_set() {
        let actual: Vec<IpNet> = vec![
            "203.0.113.9/32".parse().unwrap(),
            "198.51.100.0/24".parse().unwrap(),
        ];
        assert_eq!(
            batch(
                &[
                    t("203.0.113.9/32", 60),
                    t("2001:db8::bad/128", 3600),
                    t("203.0.113.10/32", 5),
                    t("2001:db8:1::/48", 7)
                ],
                Some(&actual)
            ),
            "delete element inet nolist banned4_nets { 198.51.100.0/24 }\n\
             add element inet nolist banned4 { 203.0.113.10 timeout 5s }\n\
             add element inet nolist banned6 { 2001:db8::bad timeout 3600s }\n\
             add element inet nolist banned6_nets { 2001:db8:1::/48 timeout 7s }\n"
        );
    }

    #[test]
    fn many_elements_go_in_few_commands() {
        let many: Vec<Target> = (0..10_000u32)
            .map(|i| Target {
                net: IpNet::from(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i))),
                remaining: 60,
            })
            .collect();
        let b = batch(&many, Some(&[]));
        assert_eq!(b.lines().count(), 3, "10,000 elements in chunks of {CHUNK}");
        assert!(b.starts_with(
            "add element inet nolist banned4 { 10.0.0.0 timeout 60s, 10.0.0.1 timeout 60s,"
        ));
    }

    #[test]
    fn rebuild_starts_with_the_skeleton() {
        let b = batch(&[t("203.0.113.9/32", 60)], None);
        assert!(b.starts_with("add table inet nolist\n"), "{b}");
        for set in ["banned4", "banned4_nets", "banned6", "banned6_nets"] {
            assert!(
                b.contains(&format!(
                    "ct state new ip{} saddr @{set} drop",
                    if set.contains('6') { "6" } else { "" }
                )),
                "{b}"
            );
        }
        assert!(b.contains("tcp dport { 25, 587 }"), "{b}");
        assert!(
            b.contains("add set inet nolist banned4 { type ipv4_addr; flags timeout; }"),
            "{b}"
        );
        assert!(
            b.contains(
                "add set inet nolist banned4_nets { type ipv4_addr; flags interval, timeout; }"
            ),
            "{b}"
        );
        assert!(b.ends_with("add element inet nolist banned4 { 203.0.113.9 timeout 60s }\n"));
        assert!(
            b.contains("add table inet nolist_refuse\ndelete table inet nolist_refuse\n"),
            "no evidence outside refuse mode: {b}"
        );
    }

    #[test]
    fn refuse_evidence_has_its_own_table_after_the_drop_rules() {
        let nft = Nft::new(vec![25]).with_evidence(
            vec![
                "198.18.0.1:25".parse().unwrap(),
                "[2001:db8::1]:2525".parse().unwrap(),
            ],
            Duration::from_secs(600),
        );
        let s = nft.skeleton();
        assert!(
            s.contains("add chain inet nolist input { type filter hook input priority -10;"),
            "{s}"
        );
        assert!(
            s.contains("add chain inet nolist_refuse input { type filter hook input priority -5;"),
            "{s}"
        );
        assert!(s.contains("add rule inet nolist_refuse input ip daddr 198.18.0.1 tcp dport 25 tcp flags & (syn | ack) == syn update @seen4 { ip saddr counter } reject with tcp reset"), "{s}");
        assert!(s.contains("ip6 daddr 2001:db8::1 tcp dport 2525"), "{s}");
        assert!(s.contains("add set inet nolist_refuse seen6 { type ipv6_addr; size 65536; flags dynamic, timeout; timeout 600s; counter; }"), "{s}");
        assert!(!s.contains("delete table"), "{s}");
    }

    #[test]
    fn the_let_through_resets_passed_sources_before_any_drop_rule() {
        let nft = Nft::new(vec![25]).with_let_through(vec![
            "198.18.0.1:25".parse().unwrap(),
            "[2001:db8::1]:2525".parse().unwrap(),
            "198.18.0.1:0".parse().unwrap(),
        ]);
        let s = nft.skeleton();
        for set in ["pass4", "pass6"] {
            let ty = if set == "pass4" { "ipv4" } else { "ipv6" };
            assert!(
                s.contains(&format!(
                    "add set inet nolist {set} {{ type {ty}_addr; flags interval, timeout; }}\n"
                )),
                "{s}"
            );
        }
        let rules: Vec<&str> = s
            .lines()
            .filter(|l| l.starts_with("add rule inet nolist input"))
            .collect();
        assert_eq!(
            rules.len(),
            6,
            "two resets (port 0 gets none), four drops: {s}"
        );
        assert_eq!(
            rules[0],
            "add rule inet nolist input ip daddr 198.18.0.1 tcp dport 25 tcp flags & (syn | ack) == syn ip saddr @pass4 reject with tcp reset"
        );
        assert_eq!(
            rules[1],
            "add rule inet nolist input ip6 daddr 2001:db8::1 tcp dport 2525 tcp flags & (syn | ack) == syn ip6 saddr @pass6 reject with tcp reset"
        );
        assert!(rules[2..].iter().all(|r| r.ends_with(" drop")), "{s}");
        // The chain is flushed before the rules go in, so they are in this order.
        let flush = s.find("flush chain inet nolist input").unwrap();
        assert!(flush < s.find(rules[0]).unwrap(), "{s}");
    }

    #[test]
    fn the_let_through_on_a_wildcard_decoy_matches_the_port_in_both_families() {
        let nft = Nft::new(vec![25]).with_let_through(vec!["[::]:25".parse().unwrap()]);
        assert_eq!(
            nft.pass_rules(),
            [
                "tcp dport 25 tcp flags & (syn | ack) == syn ip6 saddr @pass6 reject with tcp reset",
                "tcp dport 25 tcp flags & (syn | ack) == syn ip saddr @pass4 reject with tcp reset",
            ]
        );
        // Without decoys (refuse mode) nothing is let through, but the sets
        // exist, so the table has one layout.
        let mut none = Nft::new(vec![25]);
        assert!(none.let_through().is_none() && none.pass_rules().is_empty());
        assert!(none.skeleton().contains("add set inet nolist pass4 "));
    }

    #[test]
    fn pass_batches_delete_then_add_with_timeouts_and_never_touch_ban_sets() {
        let held: Vec<IpNet> = vec![
            "198.18.5.0/24".parse().unwrap(),
            "198.18.1.0/24".parse().unwrap(),
        ];
        let change = Change::renewing(
            &[
                t("198.18.1.0/24", 86_000),
                t("2001:db8:1::/64", 3600),
                t("198.18.9.9/32", 60),
            ],
            Some(&held),
            &|n| (n.to_string() == "198.18.1.0/24").then_some(100),
            MAX_TIMEOUT,
        );
        assert_eq!(
            pass_batch_text(&change),
            "delete element inet nolist pass4 { 198.18.1.0/24, 198.18.5.0/24 }\n\
             add element inet nolist pass4 { 198.18.1.0/24 timeout 86000s, 198.18.9.9 timeout 60s }\n\
             add element inet nolist pass6 { 2001:db8:1::/64 timeout 3600s }\n"
        );
        assert_eq!(pass_batch_text(&Change::default()), "");
    }

    #[test]
    fn parses_a_pass_set_back() {
        // `nft -j list set inet nolist pass4` (nft 1.0.6) after the batch above.
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "pass4", "table": "nolist", "type": "ipv4_addr", "handle": 6, "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "198.18.1.0", "len": 24}}, "timeout": 86000, "expires": 85998}}, {"elem": {"val": "198.18.9.9", "timeout": 60, "expires": 59}}]}}]}"#;
        let got: Vec<(String, Option<u64>, &str)> = parse_elements(json)
            .unwrap()
            .iter()
            .map(|l| (l.net.to_string(), l.expires, pass_set_of(&l.net)))
            .collect();
        assert_eq!(
            got,
            [
                ("198.18.1.0/24".to_owned(), Some(85_998), "pass4"),
                ("198.18.9.9/32".to_owned(), Some(59), "pass4")
            ]
        );
    }

    #[test]
    fn parses_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "banned4", "table": "nolist", "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": [{"elem": {"val": {"prefix": {"addr": "198.51.100.0", "len": 24}}, "timeout": 60, "expires": 59}}, {"elem": {"val": "203.0.113.9", "timeout": 3600, "expires": 3599}}, "192.0.2.1", {"elem": {"val": {"range": ["192.0.2.5", "192.0.2.7"]}}}]}}]}"#;
        let got = parse_elements(json).unwrap();
        let text: Vec<(String, Option<u64>, bool)> = got
            .iter()
            .map(|l| (l.net.to_string(), l.expires, l.exact))
            .collect();
        assert_eq!(
            text,
            [
                ("198.51.100.0/24".to_owned(), Some(59), true),
                ("203.0.113.9/32".to_owned(), Some(3599), true),
                ("192.0.2.1/32".to_owned(), None, true),
                ("192.0.2.5/32".to_owned(), None, false)
            ]
        );
        assert!(parse_set(b"not json").is_err());
        assert!(parse_set(br#"{"nftables": [{"set": {"elem": ["x; drop"]}}]}"#).is_err());
        assert_eq!(
            parse_set(br#"{"nftables": [{"set": {"name": "banned4"}}]}"#).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_chain_is_intact_with_its_rules_only() {
        // `nft -j list chain inet nolist input` (nft 1.0.6), one rule shown.
        let rule = |set: &str| {
            format!(
                r#"{{"rule": {{"family": "inet", "table": "nolist", "chain": "input", "handle": 9, "expr": [{{"match": {{"op": "==", "left": {{"payload": {{"protocol": "tcp", "field": "dport"}}}}, "right": 25}}}}, {{"match": {{"op": "==", "left": {{"payload": {{"protocol": "ip", "field": "saddr"}}}}, "right": "@{set}"}}}}, {{"drop": null}}]}}}}"#
            )
        };
        let chain = r#"{"chain": {"family": "inet", "table": "nolist", "name": "input", "handle": 5, "type": "filter", "hook": "input", "prio": -10, "policy": "accept"}}"#;
        let doc = |rules: &[String]| {
            format!(
                r#"{{"nftables": [{{"metainfo": {{"version": "1.0.6"}}}}, {chain}{}]}}"#,
                rules.iter().map(|r| format!(", {r}")).collect::<String>()
            )
        };
        let sets = ["banned4", "banned4_nets"];
        let both = doc(&[rule("banned4"), rule("banned4_nets")]);
        assert!(chain_intact(both.as_bytes(), 2, &sets));
        assert!(
            !chain_intact(doc(&[rule("banned4")]).as_bytes(), 2, &sets),
            "a rule gone"
        );
        assert!(!chain_intact(doc(&[]).as_bytes(), 2, &sets), "flushed");
        assert!(!chain_intact(
            doc(&[rule("banned4"), rule("other")]).as_bytes(),
            2,
            &sets
        ));
        assert!(!chain_intact(b"garbage", 0, &[]));
    }

    #[test]
    fn parses_evidence_counters() {
        // As `nft -j list set inet nolist_refuse seen4` prints it (nft 1.0.6).
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}}, {"set": {"family": "inet", "name": "seen4", "table": "nolist_refuse", "type": "ipv4_addr", "handle": 2, "size": 65536, "flags": ["timeout"], "timeout": 3600, "elem": [{"elem": {"val": "198.18.0.9", "expires": 3599, "counter": {"packets": 3, "bytes": 180}}}], "stmt": [{"counter": null}]}}]}"#;
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
