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

use std::borrow::Cow;
use std::collections::HashSet;
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
    expires: Expiries,
    /// Every element of the let-through sets and when the kernel drops it.
    passes: Expiries,
}

/// What [`Nft::read_all`] found: the ban sets' and the pass sets' elements
/// with their kernel expiry.
struct Sets {
    bans: Expiries,
    passes: Expiries,
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
        let mut transactions = 0;
        if !text_part.is_empty() {
            if let Err(e) = self.run_batch(&batch_text(&self.skeleton(), &text_part)) {
                return (Err(e), 0);
            }
            transactions += 1;
        }
        let mut changes = Vec::new();
        for (set, v4) in [("banned4", true), ("banned6", false)] {
            // Single addresses of one family, straight from `change`.
            let ours = |n: &IpNet| is_host(n) && n.addr().is_ipv4() == v4;
            changes.push(netlink::SetChange {
                set,
                verb: netlink::Verb::Delete,
                elements: change
                    .remove
                    .iter()
                    .filter(|n| ours(n))
                    .map(|n| (n.addr(), 0))
                    .collect::<Vec<_>>()
                    .into(),
            });
            changes.push(netlink::SetChange {
                set,
                verb: netlink::Verb::Add,
                elements: change
                    .add
                    .iter()
                    .filter(|(n, _)| ours(n))
                    .map(|(n, s)| (n.addr(), *s))
                    .collect::<Vec<_>>()
                    .into(),
            });
        }
        if changes.iter().all(|c| c.elements.is_empty()) {
            return (Ok(()), transactions);
        }
        match apply_in_parts(&changes) {
            Ok(n) => (Ok(()), transactions + n),
            // `nft` adds what was added already again, harmlessly.
            Err((e, n)) => {
                let transactions = transactions + n;
                tracing::debug!(error = %e, "netlink set elements failed; trying nft");
                drop(changes);
                let result = self.run_batch(&batch_text("", &part(change, true)));
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
        let base = Instant::now();
        let mut bans = Expiries::new(base);
        let mut passes = Expiries::new(base);
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
            let Some(generation) = generation else {
                return Ok(Some(sets.bans.nets()));
            };
            self.known = Some(Known {
                generation,
                expires: sets.bans,
                passes: sets.passes,
            });
        }
        let known = self.known.as_mut().expect("known after a read");
        // What the kernel has dropped by now is gone (with a second's margin).
        known.expires.forget_expired(Instant::now());
        Ok(Some(known.expires.nets()))
    }

    /// One transaction (two when networks and addresses both change, see
    /// `write`).
    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let change = unsettled(change, self.known.as_ref().map(|k| &k.expires));
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
        known.passes.forget_expired(Instant::now());
        Ok(Some(known.passes.nets()))
    }

    /// One `nft -f -` transaction. As with bans, an element about to
    /// expire is left to expire rather than deleted or renewed.
    fn apply_passes(&mut self, change: &Change) -> Result<Report, EnforceError> {
        let change = unsettled(change, self.known.as_ref().map(|k| &k.passes));
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
    /// knows nothing yet. (Elements reaching their expiry are the kernel's
    /// doing, not a change from outside: `reconcile` says when that makes
    /// the firewall and the bans disagree, `Report::recheck_in`, so no tick
    /// looks at millions of expiry times.)
    fn changed_outside(&mut self) -> bool {
        let Some(known) = &self.known else {
            return true;
        };
        netlink::generation().ok() != Some(known.generation)
    }

    /// As `read` counts them: an element is held until a second after its
    /// kernel expiry.
    fn holds(&self, nets: &[IpNet]) -> Option<Vec<IpNet>> {
        let known = self.known.as_ref()?;
        let now = Instant::now();
        let held = |net: &&IpNet| {
            known
                .expires
                .get(net)
                .is_some_and(|at| at + Duration::from_secs(1) > now)
        };
        Some(nets.iter().filter(held).copied().collect())
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

/// `change` without the elements about to expire (within [`SETTLING`] by
/// `expires`): they are left to the kernel's expiry, neither deleted nor
/// renewed, since adding an element the kernel still holds does not change
/// its timeout; one renewed is added again once it is gone. `change`
/// itself, not a copy of its millions of elements, when none is settling.
fn unsettled<'a>(change: &'a Change, expires: Option<&Expiries>) -> Cow<'a, Change> {
    let now = Instant::now();
    let settling = |net: &IpNet| {
        expires
            .and_then(|m| m.get(net))
            .is_some_and(|e| e <= now + SETTLING)
    };
    let settled: HashSet<IpNet> = change
        .remove
        .iter()
        .filter(|n| settling(n))
        .copied()
        .collect();
    if settled.is_empty() {
        return Cow::Borrowed(change);
    }
    Cow::Owned(Change {
        rebuild: change.rebuild,
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
    })
}

/// The `nft -f -` input for `change` (pure): the skeleton first when it
/// must be rebuilt, then deletions, then additions with their timeouts,
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

mod expiries;

use expiries::Expiries;

/// Elements per netlink transaction. The kernel grows a set's hash table
/// in the background while elements come in; one transaction of millions
/// outruns it and every insert takes the slow path, while transactions of
/// this size leave it room.
const PER_TRANSACTION: usize = 131_072;

/// Applies `changes` over netlink in transactions of at most
/// [`PER_TRANSACTION`] elements; returns how many were committed, also on
/// failure.
fn apply_in_parts(changes: &[netlink::SetChange<'_>]) -> Result<u32, (std::io::Error, u32)> {
    let mut done = 0;
    for part in in_parts(changes, PER_TRANSACTION) {
        netlink::apply(TABLE, &part).map_err(|e| (e, done))?;
        done += 1;
    }
    Ok(done)
}

/// `changes` split into transactions of at most `size` elements, in order
/// (deletions stay before additions), borrowing the elements.
pub fn in_parts<'a>(
    changes: &'a [netlink::SetChange<'a>],
    size: usize,
) -> Vec<Vec<netlink::SetChange<'a>>> {
    let mut parts: Vec<Vec<netlink::SetChange<'a>>> = Vec::new();
    let mut room = 0;
    for change in changes {
        let mut rest: &'a [(std::net::IpAddr, u64)] = &change.elements;
        while !rest.is_empty() {
            if room == 0 {
                parts.push(Vec::new());
                room = size;
            }
            let (now, later) = rest.split_at(rest.len().min(room));
            room -= now.len();
            parts.last_mut().expect("a part").push(netlink::SetChange {
                set: change.set,
                verb: change.verb,
                elements: std::borrow::Cow::Borrowed(now),
            });
            rest = later;
        }
    }
    parts
}

#[cfg(test)]
mod tests;
