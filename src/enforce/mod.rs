//! Enforcement: makes the firewall match the bans in the store. The store
//! is the truth; each reconcile reads what the firewall holds, adds what is
//! missing, removes what is stray, and rebuilds nolist's own part of the
//! firewall if someone flushed it. Every backend gets the same semantics
//! from one function, [`reconcile`]; a backend only knows how to read, set
//! up and change its firewall. Only this module runs system commands.
//!
//! Retry-exempt networks (the let-through, see `bans::retry`) are a second,
//! small list of their own, reconciled with [`reconcile_passes`] after the
//! bans, and only by a backend with a [`LetThrough`]; the others
//! leave them to the responder's `421` at the greeting.

pub mod command;
pub mod exec;
pub mod fail2ban;
pub mod ipset;
pub mod netlink;
pub mod nft;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use ipnet::IpNet;

/// One ban to enforce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Target {
    /// Address or network.
    pub net: IpNet,
    /// Seconds until it expires (the kernel drops it then, daemon or not).
    pub remaining: u64,
}

/// What one reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Elements added.
    pub added: usize,
    /// Stray elements removed.
    pub removed: usize,
    /// True when nolist's part of the firewall had to be (re)created.
    pub rebuilt: bool,
    /// Elements replaced with a longer timeout (a ban was extended); not
    /// counted in `added` or `removed`.
    pub renewed: usize,
    /// Seconds from now until time alone makes the firewall and the bans
    /// disagree (an element ends before its ban, or outlives it), so that
    /// a reconcile is due then although nothing changes; `None` when every
    /// element ends with its ban, or the backend cannot tell (see
    /// [`next_disagreement`]). Set by [`reconcile`].
    pub recheck_in: Option<u64>,
}

impl Report {
    /// What applying all of `change` does.
    pub fn of(change: &Change) -> Report {
        let removed: HashSet<&IpNet> = change.remove.iter().collect();
        let renewed = change
            .add
            .iter()
            .filter(|(n, _)| removed.contains(n))
            .count();
        Report {
            added: change.add.len() - renewed,
            removed: change.remove.len() - renewed,
            rebuilt: change.rebuild,
            renewed,
            recheck_in: None,
        }
    }
}

/// A ban whose end moved later by more than this is renewed in the firewall
/// (its element replaced with the longer timeout) instead of waiting for the
/// firewall to drop it and adding it again.
pub const RENEW_SLACK: u64 = 60;

/// The longest timeout given to a firewall (10 years): a longer ban is put
/// back when the firewall drops it. Kernels refuse timeouts of centuries.
pub const MAX_TIMEOUT: u64 = 10 * 365 * 86_400;

/// Why enforcement failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnforceError {
    /// The tool could not be run at all.
    #[error(
        "cannot run {tool}: {source} (is it installed, and is nolist running as root or with CAP_NET_ADMIN?)"
    )]
    Spawn {
        /// The command.
        tool: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The tool ran and failed.
    #[error("{tool} failed: {stderr}")]
    Failed {
        /// The command.
        tool: String,
        /// Its error output.
        stderr: String,
    },
    /// The tool did not finish in time and was killed.
    #[error("{tool} did not finish within {seconds} s and was killed")]
    Timeout {
        /// The command.
        tool: String,
        /// The limit.
        seconds: u64,
    },
    /// Its output was not what we expected.
    #[error("cannot read {tool}'s output: {message}")]
    Output {
        /// The command.
        tool: String,
        /// What was wrong.
        message: String,
    },
}

/// The change that turns what the firewall holds into what the store says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Set up nolist's part of the firewall first (it was missing).
    pub rebuild: bool,
    /// Targets to add, each with its timeout in seconds.
    pub add: Vec<(IpNet, u64)>,
    /// Targets to remove.
    pub remove: Vec<IpNet>,
}

impl Change {
    /// The change from `actual` (`None`: nolist's part is missing) to
    /// `desired` (pure). Desired targets are folded first: duplicates keep
    /// the longest timeout, and a target inside a wider one is left to it.
    pub fn between(desired: &[Target], actual: Option<&[IpNet]>) -> Change {
        Change::between_folded(&fold(desired), actual, &|_, _| None)
    }

    /// The change from `actual` to `want` (folded: in address order, no
    /// duplicates), both walked once in address order: no hash set of
    /// millions of bans is built. `renew` says which held targets get a
    /// new timeout.
    fn between_folded(
        want: &[(IpNet, u64)],
        actual: Option<&[IpNet]>,
        renew: &dyn Fn(IpNet, u64) -> Option<u64>,
    ) -> Change {
        let mut have: Vec<IpNet> = actual
            .unwrap_or_default()
            .iter()
            .map(IpNet::trunc)
            .collect();
        have.sort_unstable();
        have.dedup();
        let mut remove = Vec::new();
        let mut add = Vec::new();
        let mut held = have.into_iter().peekable();
        for &(net, secs) in want {
            while let Some(stray) = held.next_if(|h| *h < net) {
                remove.push(stray);
            }
            if held.next_if_eq(&net).is_none() {
                add.push((net, secs));
            } else if let Some(secs) = renew(net, secs) {
                remove.push(net);
                add.push((net, secs));
            }
        }
        remove.extend(held);
        Change {
            rebuild: actual.is_none(),
            remove,
            add,
        }
    }

    /// Like [`Change::between`], and renews what the firewall holds with a
    /// timeout that ends more than [`RENEW_SLACK`] before its ban (the ban
    /// was extended): the element is in both `remove` and `add`, so the one
    /// transaction that applies the change replaces it and the firewall
    /// never lets the client through in between. `remaining` says how long
    /// the firewall still holds a target (`None`: it cannot tell); `cap` is
    /// its longest timeout. A ban longer than `cap` is renewed once the
    /// firewall's timeout falls below half of it (pure).
    pub fn renewing(
        desired: &[Target],
        actual: Option<&[IpNet]>,
        remaining: &dyn Fn(&IpNet) -> Option<u64>,
        cap: u64,
    ) -> Change {
        Change::renewing_folded(&fold(desired), actual, remaining, cap)
    }

    /// [`Change::renewing`] of targets already folded.
    fn renewing_folded(
        want: &[(IpNet, u64)],
        actual: Option<&[IpNet]>,
        remaining: &dyn Fn(&IpNet) -> Option<u64>,
        cap: u64,
    ) -> Change {
        Change::between_folded(want, actual, &|net, secs| {
            let left = remaining(&net)?;
            let secs = secs.min(cap);
            let renew = left.saturating_add(RENEW_SLACK) < secs && (secs < cap || left < cap / 2);
            renew.then_some(secs)
        })
    }

    /// True when nothing needs doing.
    pub fn is_empty(&self) -> bool {
        !self.rebuild && self.add.is_empty() && self.remove.is_empty()
    }
}

/// Desired targets as `(network, timeout)` in address order: networks
/// truncated, duplicates merged with the longest timeout (at least 1 s),
/// and every target inside a wider target dropped (interval sets refuse
/// overlaps, and the wider ban already covers it). `O(n log n)`: CIDR
/// blocks are nested or disjoint, so in address order a block is covered
/// exactly when the last kept block contains it.
pub fn fold(desired: &[Target]) -> Vec<(IpNet, u64)> {
    let mut all: Vec<(IpNet, u64)> = desired
        .iter()
        // A /0 "ban" would close the ports to a whole address family.
        .filter(|t| t.net.prefix_len() > 0)
        .map(|t| (t.net.trunc(), t.remaining.clamp(1, MAX_TIMEOUT)))
        .collect();
    // `IpNet` orders by family, then network address, then prefix length:
    // a wider block comes before the blocks it contains, and a block's
    // duplicates come together, the longest timeout last.
    all.sort_unstable();
    // In place (no second vector of millions): `kept` is the last target
    // kept, `next` the one that follows it in address order.
    all.dedup_by(|next, kept| {
        if kept.0 == next.0 {
            kept.1 = next.1;
            true
        } else {
            kept.0.contains(&next.0)
        }
    });
    all
}

/// A firewall that nolist can fill with bans: the sink of enforcement.
/// Four methods every backend has; what only some can do is a capability
/// of its own ([`Timeouts`], [`Cache`], [`WriteOnly`], [`LetThrough`]),
/// reached through an accessor that says `None` unless the backend has it.
pub trait Enforcer: Send {
    /// A short name for logs (`nftables`, `iptables`, …).
    fn name(&self) -> &'static str;

    /// Checks that the tool runs and may change the firewall, and sets up
    /// nolist's part of it (tables, sets, chains) where the backend has one.
    fn check(&mut self) -> Result<(), EnforceError>;

    /// The targets the firewall holds now; `None` when nolist's part of it
    /// is gone and must be rebuilt.
    fn read(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError>;

    /// Applies `change` (rebuild first, then remove, then add), in one
    /// transaction where the tool has them; says what it really changed.
    fn apply(&mut self, change: &Change) -> Result<Report, EnforceError>;

    /// The firewall's element timeouts, when it can tell them (then
    /// extended bans are renewed).
    fn timeouts(&self) -> Option<&dyn Timeouts> {
        None
    }

    /// What the backend believes about the firewall between reads, when it
    /// keeps anything (without it, every tick is a full reconcile).
    fn cache(&mut self) -> Option<&mut dyn Cache> {
        None
    }

    /// For a backend that cannot read the firewall back: what it applied.
    fn write_only(&mut self) -> Option<&mut dyn WriteOnly> {
        None
    }

    /// The let-through of retry-exempt networks, when the backend has one.
    fn let_through(&mut self) -> Option<&mut dyn LetThrough> {
        None
    }
}

/// How long a firewall still holds its elements.
pub trait Timeouts {
    /// For a target the last `read` found: the seconds until the firewall
    /// drops it, when known.
    fn remaining(&self, net: &IpNet) -> Option<u64>;

    /// The longest element timeout the firewall takes.
    fn max_timeout(&self) -> u64 {
        MAX_TIMEOUT
    }
}

/// A backend that remembers what it read.
pub trait Cache {
    /// Drops whatever the backend believes about the firewall, so that the
    /// next `read` asks the firewall itself.
    fn forget(&mut self);

    /// Whether the firewall may have changed since the last reconcile
    /// (someone else's change, a flush, an element reaching its expiry).
    fn changed_outside(&mut self) -> bool;

    /// Which of `nets` the firewall holds, as far as the backend knows
    /// without reading it (elements the kernel has dropped by now are not
    /// held); `None` when it knows nothing.
    fn holds(&self, nets: &[IpNet]) -> Option<Vec<IpNet>>;
}

/// A backend that cannot read the firewall back: it reports the targets
/// it applied, which the daemon keeps in the store across restarts.
pub trait WriteOnly {
    /// The targets it applied.
    fn applied(&self) -> Vec<IpNet>;

    /// Gives it what it applied before a restart.
    fn restore_applied(&mut self, applied: Vec<IpNet>);
}

/// A let-through: the SYNs of retry-exempt networks to the decoy get a TCP
/// reset, which every sender family falls back from. Only `nftables` has
/// one; with the others the responder answers those clients `421` at the
/// greeting instead.
pub trait LetThrough {
    /// The networks the let-through holds now; `None` when nolist's part
    /// of the firewall is gone (the next reconcile of the bans rebuilds it).
    fn read_passes(&mut self) -> Result<Option<Vec<IpNet>>, EnforceError>;

    /// Applies a change of the let-through (never a rebuild).
    fn apply_passes(&mut self, change: &Change) -> Result<Report, EnforceError>;

    /// Like [`Timeouts::remaining`], for a network of the let-through.
    fn pass_remaining(&self, net: &IpNet) -> Option<u64>;
}

/// Most hits taken from one source per reading of the evidence counters: a
/// SYN flood must not become millions of engine events (the engine needs
/// `maxretry` of them).
const MAX_HITS_PER_READ: u64 = 16;

/// Turns readings of per-source SYN counters into new decoy hits (pure).
#[derive(Debug, Default)]
pub struct SynCounts {
    last: HashMap<IpAddr, u64>,
}

impl SynCounts {
    /// The new hits per source since the previous reading. A source whose
    /// count went down was forgotten by the kernel and counted afresh; a
    /// source missing from `reading` is forgotten here too.
    pub fn update(&mut self, reading: &[(IpAddr, u64)]) -> Vec<(IpAddr, u64)> {
        let mut next = HashMap::with_capacity(reading.len());
        let mut hits = Vec::new();
        for &(ip, count) in reading {
            let before = self.last.get(&ip).copied().unwrap_or(0);
            let new = if count >= before {
                count - before
            } else {
                count
            };
            if new > 0 {
                hits.push((ip, new.min(MAX_HITS_PER_READ)));
            }
            next.insert(ip, count);
        }
        self.last = next;
        hits
    }
}

/// When time alone next makes the firewall and the folded bans `want`
/// disagree (pure): the seconds from now until the first element that ends
/// before its ban is gone (then it is added again), or until the first ban
/// that ends before its element (then the element is stray). `remaining`
/// and `cap` as for [`Change::renewing`]; two seconds either way are
/// rounding (whole seconds, read at different moments), not a
/// disagreement. `None` when every element ends with its ban.
pub fn next_disagreement(
    want: &[(IpNet, u64)],
    remaining: &dyn Fn(&IpNet) -> Option<u64>,
    cap: u64,
) -> Option<u64> {
    want.iter()
        .filter_map(|(net, secs)| {
            let left = remaining(net)?;
            let secs = (*secs).min(cap);
            // Two seconds after the element is gone: the backend forgets
            // what the kernel dropped with a second's margin.
            (left.abs_diff(secs) > 2).then(|| left.min(secs) + 2)
        })
        .min()
}

/// Makes `backend` hold exactly `desired`: read, compute the change, apply.
/// With a backend that tells its timeouts, the report says when time alone
/// makes a reconcile due ([`Report::recheck_in`]).
pub fn reconcile(backend: &mut dyn Enforcer, desired: &[Target]) -> Result<Report, EnforceError> {
    let actual = backend.read()?;
    converge(backend, &fold(desired), actual)
}

/// Makes `backend` hold exactly `desired` among the targets `changed`, and
/// leaves every other element as it is: what a change of a few bans needs,
/// without reading millions of them or the firewall. `desired` is what is
/// to be enforced of `changed` (each ban in force, minus the hosts a wider
/// ban covers). `Ok(None)` when the backend cannot tell what it holds
/// without reading the firewall (it keeps no [`Cache`], or someone else
/// changed the firewall since): then a full [`reconcile`] is due.
pub fn reconcile_some(
    backend: &mut dyn Enforcer,
    changed: &[IpNet],
    desired: &[Target],
) -> Result<Option<Report>, EnforceError> {
    let Some(cache) = backend.cache() else {
        return Ok(None);
    };
    if cache.changed_outside() {
        return Ok(None);
    }
    let Some(actual) = cache.holds(changed) else {
        return Ok(None);
    };
    converge(backend, &fold(desired), Some(actual)).map(Some)
}

/// Applies the change from `actual` to the folded targets `want` (renewing
/// what the backend's timeouts say ends too early) and says when time
/// alone makes the two disagree.
fn converge(
    backend: &mut dyn Enforcer,
    want: &[(IpNet, u64)],
    actual: Option<Vec<IpNet>>,
) -> Result<Report, EnforceError> {
    let change = match backend.timeouts() {
        Some(t) => Change::renewing_folded(
            want,
            actual.as_deref(),
            &|net| t.remaining(net),
            t.max_timeout(),
        ),
        None => Change::between_folded(want, actual.as_deref(), &|_, _| None),
    };
    drop(actual);
    let mut report = if change.is_empty() {
        Report::default()
    } else {
        backend.apply(&change)?
    };
    // An element just added (not renewed) ends with its ban: only the
    // others can disagree, and a bootstrap's millions are not looked up
    // again.
    let others: Vec<(IpNet, u64)>;
    let held = if change.remove.is_empty() && !change.add.is_empty() {
        let mut added = change.add.iter().map(|a| a.0).peekable();
        others = want
            .iter()
            .filter(|(net, _)| added.next_if_eq(net).is_none())
            .copied()
            .collect();
        &others
    } else {
        want
    };
    report.recheck_in = backend
        .timeouts()
        .and_then(|t| next_disagreement(held, &|net| t.remaining(net), t.max_timeout()));
    Ok(report)
}

/// Makes the let-through of `backend` hold exactly `passes` (retry-exempt
/// networks, each with the exemption's remaining time), the way
/// [`reconcile`] does for bans: an extended exemption is renewed. Nothing
/// for a backend without a let-through; nothing either while nolist's
/// part of the firewall is missing (rebuilt by the next reconcile of the
/// bans, after which this fills it).
pub fn reconcile_passes(
    backend: &mut dyn Enforcer,
    passes: &[Target],
) -> Result<Report, EnforceError> {
    let cap = backend
        .timeouts()
        .map_or(MAX_TIMEOUT, Timeouts::max_timeout);
    let actual = match backend.let_through() {
        None => return Ok(Report::default()),
        Some(lt) => lt.read_passes()?,
    };
    let Some(actual) = actual else {
        if let Some(cache) = backend.cache() {
            cache.forget();
        }
        return Ok(Report::default());
    };
    let Some(lt) = backend.let_through() else {
        return Ok(Report::default());
    };
    let change = Change::renewing(passes, Some(&actual), &|net| lt.pass_remaining(net), cap);
    if change.is_empty() {
        return Ok(Report::default());
    }
    lt.apply_passes(&change)
}

/// The text of a target as firewall tools write it: a bare address for a
/// single host, CIDR notation for a network.
pub fn element(net: &IpNet) -> String {
    Element(net).to_string()
}

/// [`element`] without an allocation, for writing into a larger text.
pub struct Element<'a>(pub &'a IpNet);

impl std::fmt::Display for Element<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

/// Output of a firewall tool that nolist cannot read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unreadable(pub String);

impl From<String> for Unreadable {
    fn from(message: String) -> Unreadable {
        Unreadable(message)
    }
}

/// Parses an address or CIDR network as firewall tools print it.
pub fn parse_element(text: &str) -> Result<IpNet, Unreadable> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| Unreadable(format!("{text:?} is not an address or network")))
}

#[cfg(test)]
mod tests;
