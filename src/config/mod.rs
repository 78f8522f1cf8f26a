//! The configuration: one YAML file that every command reads.
//!
//! Loading goes load → parse → validate. Parsing uses serde-saphyr with
//! `deny_unknown_fields` on every table, so a typo is an error rather than a
//! silently ignored key; value types check themselves (see [`value`]) so the
//! parser reports the offending line and column; validation then checks
//! what spans several keys (duplicate domains, layout vs. tail decoy, SOA vs.
//! NS, in `raw`). Every error names the file, the line and the column.

pub mod dnsbl;
mod error;
pub mod fleet;
pub mod name;
pub mod provider;
mod raw;
pub mod value;

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dnsbl::Dnsbl;
pub use error::ConfigError;
pub use fleet::{Fleet, NodeName, OnSilentMta};
pub use name::{MxTarget, Name};
pub use provider::Provider;
pub use value::{Cidr, Duration, PrefixLen, Ttl};

/// A position in the config file (1-based line and column).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub column: u32,
}

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, as given by the user (used in messages).
    pub source: PathBuf,
    /// Where the daemon keeps its state (bans, checkpoints).
    pub state_dir: PathBuf,
    /// The mail domains, in config order.
    pub domains: Vec<Domain>,
    /// The fake-MX responder.
    pub responder: Responder,
    /// The real MTA whose logs prove delivery.
    pub mta: Mta,
    /// The ban policy and its enforcement.
    pub bans: Bans,
    /// DNS serving and the zone apex records (SOA, NS).
    pub dns: Dns,
    /// The Prometheus endpoint of `run`.
    pub metrics: Option<Metrics>,
    /// Where `diff` and `apply` find the zones (a domain may override it).
    pub provider: Option<Provider>,
    /// Several nodes sharing evidence and bans (none: this host alone).
    pub fleet: Option<Fleet>,
}

/// The `metrics` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Where `run` serves `GET /metrics` (plain HTTP: keep it on loopback
    /// or a management network).
    pub listen: SocketAddr,
}

impl Config {
    /// Where the decoy listens: `responder.listen`, or every decoy and
    /// tail-decoy address of every domain on port 25 (sorted, no duplicates).
    pub fn decoy_addrs(&self) -> Vec<SocketAddr> {
        if !self.responder.listen.is_empty() {
            return self.responder.listen.clone();
        }
        let mut addrs: Vec<SocketAddr> = self
            .domains
            .iter()
            .flat_map(|d| std::iter::once(&d.decoy).chain(d.tail_decoy.iter()))
            .flat_map(MxHost::addresses)
            .map(|ip| SocketAddr::new(ip, 25))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// The provider of `domain`: its own, else the top-level one.
    pub fn provider_for<'a>(&'a self, domain: &'a Domain) -> Option<&'a Provider> {
        domain.provider.as_ref().or(self.provider.as_ref())
    }
}

/// One mail domain and its MX layout.
#[derive(Clone, Debug)]
pub struct Domain {
    /// The domain (zone origin), in A-label form.
    pub name: Name,
    /// TTL of every record nolist emits for this domain.
    pub ttl: u32,
    /// `classic` (decoy, real…) or `sandwich` (decoy, real…, tail decoy).
    pub layout: Layout,
    /// The lowest-preference MX that never accepts mail.
    pub decoy: MxHost,
    /// The MX hosts that really accept mail.
    pub real: Vec<MxHost>,
    /// The highest-preference decoy (sandwich layout only).
    pub tail_decoy: Option<MxHost>,
    /// A zone file with the domain's other records, served by `nolist serve`
    /// beside the planned ones (resolved relative to the config file).
    pub base_zone: Option<PathBuf>,
    /// This domain's provider for `diff` and `apply`, replacing the top-level one.
    pub provider: Option<Provider>,
    /// Where the domain's entry starts in the config.
    pub at: Loc,
}

impl Domain {
    /// Every MX host of the domain with its role, decoy first.
    pub fn hosts(&self) -> impl Iterator<Item = (Role, &MxHost)> {
        std::iter::once((Role::Decoy, &self.decoy))
            .chain(self.real.iter().map(|h| (Role::Real, h)))
            .chain(self.tail_decoy.iter().map(|h| (Role::TailDecoy, h)))
    }
}

/// The part an MX host plays in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Lowest preference; never accepts mail.
    Decoy,
    /// Accepts mail.
    Real,
    /// Highest preference in the sandwich layout; never accepts mail.
    TailDecoy,
}

/// One MX host entry.
#[derive(Clone, Debug)]
pub struct MxHost {
    /// What the MX record points at.
    pub target: MxTarget,
    /// The MX preference (lower is tried first).
    pub preference: u16,
    /// IPv4 addresses of the host (A records when the host is in the zone).
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses of the host (AAAA records when the host is in the zone).
    pub ipv6: Vec<Ipv6Addr>,
    /// Where the entry starts in the config.
    pub at: Loc,
}

impl MxHost {
    /// Every address of the host, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        both_families(&self.ipv4, &self.ipv6)
    }
}

/// The MX layout of a domain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Decoy with the lowest preference, then the real MX hosts.
    #[default]
    Classic,
    /// Decoy, real MX hosts, and a tail decoy with the highest preference.
    Sandwich,
}

impl Layout {
    /// The config spelling: `classic` or `sandwich`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Classic => "classic",
            Layout::Sandwich => "sandwich",
        }
    }
}

/// How the decoy answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Nothing listens; the kernel answers with a TCP reset.
    #[default]
    Refuse,
    /// A `421` banner, then close.
    #[serde(rename = "greet-421")]
    Greet421,
    /// A `450` banner, then close.
    #[serde(rename = "greet-450")]
    Greet450,
    /// The full dialogue up to RCPT, which gets `450 4.7.1`.
    #[serde(rename = "rcpt-450")]
    Rcpt450,
}

/// The `responder` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Responder {
    /// How the decoy answers (default `refuse`, the mode that loses no mail).
    pub mode: Mode,
    /// Addresses to listen on; empty means every decoy address, port 25.
    pub listen: Vec<SocketAddr>,
    /// The name in the banner and EHLO reply; default: the first decoy host.
    pub hostname: Option<Name>,
    /// The text after `450` at RCPT (and in the `greet-450` banner).
    pub reply: ReplyText,
    /// Sessions served at once; more get `421` and are closed.
    pub max_connections: NonZeroUsize,
    /// Sessions one client address may hold at once; more get `421`.
    pub max_per_ip: NonZeroUsize,
    /// A session that sends nothing for this long gets `421` and is closed.
    pub idle_timeout: Duration,
    /// A session lasts at most this long in all.
    pub session_timeout: Duration,
    /// Longest command line accepted (RFC 5321 §4.5.3.1.4: 512 octets).
    pub max_line: NonZeroUsize,
    /// Commands per session before `421`.
    pub max_commands: NonZeroU32,
    /// Delay before every reply (OpenBSD spamd-style stutter); 0 = none.
    pub tarpit: Duration,
    /// Refuse mode with the nftables backend: count the refused SYNs as
    /// decoy hits. Off by default: a SYN's source can be forged.
    pub refuse_evidence: bool,
    /// Threads serving decoy sessions (each with its own sockets).
    pub threads: Threads,
}

/// `responder.threads`: 1 to 64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Threads(pub usize);

impl Default for Threads {
    fn default() -> Self {
        Threads(1)
    }
}

impl<'de> Deserialize<'de> for Threads {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        match usize::try_from(n) {
            Ok(n @ 1..=64) => Ok(Threads(n)),
            _ => Err(serde::de::Error::custom(format!(
                "responder threads must be 1 to 64, not {n}"
            ))),
        }
    }
}

impl Default for Responder {
    fn default() -> Self {
        Responder {
            mode: Mode::default(),
            listen: Vec::new(),
            hostname: None,
            reply: ReplyText::default(),
            max_connections: NonZeroUsize::new(10_000).expect("non-zero"),
            max_per_ip: NonZeroUsize::new(20).expect("non-zero"),
            idle_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(120),
            max_line: NonZeroUsize::new(1024).expect("non-zero"),
            max_commands: NonZeroU32::new(20).expect("non-zero"),
            tarpit: Duration::from_secs(0),
            refuse_evidence: false,
            threads: Threads::default(),
        }
    }
}

/// Reply text: printable ASCII only, so a config can never inject CR/LF
/// (and with it a second reply line) into the SMTP dialogue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyText(pub String);

impl Default for ReplyText {
    fn default() -> Self {
        ReplyText("4.7.1 Service temporarily unavailable, try again later".into())
    }
}

impl<'de> Deserialize<'de> for ReplyText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text.is_empty() || text.len() > 400 || !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return Err(serde::de::Error::custom(
                "reply text must be 1 to 400 printable ASCII characters",
            ));
        }
        Ok(ReplyText(text))
    }
}

/// The IANA name of a time zone (`Europe/Berlin`), checked against the
/// time zone database when the config is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeZoneName(pub String);

impl<'de> Deserialize<'de> for TimeZoneName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        match jiff::tz::TimeZone::get(&name) {
            Ok(_) => Ok(TimeZoneName(name)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "unknown time zone {name:?}: expected an IANA name such as Europe/Berlin or UTC"
            ))),
        }
    }
}

/// The MTA log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MtaFormat {
    /// Postfix (`postfix/smtpd[pid]: …`).
    #[default]
    Postfix,
    /// Exim main log.
    Exim,
}

/// The `mta` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mta {
    /// Log files of the real MTA, followed across rotation.
    #[serde(default)]
    pub logs: Vec<PathBuf>,
    /// Their format.
    #[serde(default)]
    pub format: MtaFormat,
    /// A classic Postfix decoy in the same log: its smtpd's syslog name
    /// (`-o syslog_name=postfix/decoy`), whose reject lines are decoy hits.
    #[serde(default = "default_decoy_syslog_name")]
    pub decoy_syslog_name: String,
    /// The classic decoy's reply text (e.g. `450 4.7.1 Try again later`):
    /// reject lines of any smtpd with this reply are decoy hits too.
    #[serde(default)]
    pub decoy_reply: Option<String>,
    /// The time zone of the logs' local stamps (classic syslog, Exim);
    /// default: the host's (`TZ`, else /etc/localtime).
    #[serde(default)]
    pub timezone: Option<TimeZoneName>,
}

fn default_decoy_syslog_name() -> String {
    "postfix/decoy".into()
}

impl Default for Mta {
    fn default() -> Self {
        Mta {
            logs: Vec::new(),
            format: MtaFormat::default(),
            decoy_syslog_name: default_decoy_syslog_name(),
            decoy_reply: None,
            timezone: None,
        }
    }
}

/// The `bans` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bans {
    /// Decoy hits within `findtime` that make a client a candidate.
    pub maxretry: u32,
    /// The window in which hits are counted.
    pub findtime: Duration,
    /// How long to wait after the first hit for the sender to deliver via a real MX.
    pub grace: Duration,
    /// How long a ban lasts (at most [`value::MAX_BAN`]).
    #[serde(deserialize_with = "value::de_ban_length")]
    pub bantime: Duration,
    /// Network sizes within which a delivery clears a client.
    pub networks: Networks,
    /// Clients never banned (loopback and the planned MX addresses never are, regardless).
    pub ignore: Vec<Cidr>,
    /// How long a delivery through a real MX clears its client and network.
    pub remember: Duration,
    /// Senders never banned: static networks, and the networks the SPF
    /// records of big senders authorise.
    pub allow: Allow,
    /// Longer bans for repeat offenders.
    pub escalation: Escalation,
    /// Retry recognition: a client that comes back with the same envelope
    /// is a real MTA, exempt from bans.
    pub retry: Retry,
    /// How bans are enforced.
    pub enforce: Enforce,
}

/// `bans.retry`: what counts as a retrying MTA (see `crate::bans::retry`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Whether hits are checked for retries at all.
    pub enabled: bool,
    /// A sighting sooner than this after the previous one is no retry
    /// (bots resend fast; MTAs wait minutes).
    pub min_delay: Duration,
    /// A sighting later than this after the previous one is no retry.
    pub max_delay: Duration,
}

/// The shortest `bans.retry.min_delay` allowed: below it, a client's own
/// pipelined or parallel sessions would pass for retries.
pub const MIN_RETRY_DELAY: Duration = Duration::from_secs(1);

impl Default for Retry {
    fn default() -> Self {
        Retry {
            enabled: true,
            min_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(86_400),
        }
    }
}

impl<'de> Deserialize<'de> for Retry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            enabled: Option<bool>,
            min_delay: Option<Duration>,
            max_delay: Option<Duration>,
        }
        let raw = Raw::deserialize(d)?;
        let default = Retry::default();
        let retry = Retry {
            enabled: raw.enabled.unwrap_or(default.enabled),
            min_delay: raw.min_delay.unwrap_or(default.min_delay),
            max_delay: raw.max_delay.unwrap_or(default.max_delay),
        };
        if retry.min_delay < MIN_RETRY_DELAY {
            return Err(serde::de::Error::custom(format!(
                "`min_delay` must be at least {MIN_RETRY_DELAY} (a client's own parallel sessions would pass for retries)"
            )));
        }
        if retry.min_delay >= retry.max_delay {
            return Err(serde::de::Error::custom(format!(
                "`min_delay` ({}) must be shorter than `max_delay` ({})",
                retry.min_delay, retry.max_delay
            )));
        }
        if retry.max_delay > value::MAX_BAN {
            return Err(serde::de::Error::custom(format!(
                "`max_delay` must be at most {}",
                value::MAX_BAN
            )));
        }
        Ok(retry)
    }
}

/// `bans.allow`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Allow {
    /// Networks never banned.
    pub networks: Vec<Cidr>,
    /// Sender domains (e.g. `gmail.com`) whose SPF networks are never banned.
    pub spf: Vec<Name>,
    /// How often the SPF records are resolved again.
    pub refresh: Duration,
}

impl Default for Allow {
    fn default() -> Self {
        Allow {
            networks: Vec::new(),
            spf: Vec::new(),
            refresh: Duration::from_secs(86_400),
        }
    }
}

/// `bans.escalation`: the n-th ban of a client lasts `bantime × factor^(n−1)`, at most `max`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Escalation {
    /// Growth per repeat ban (1 = none).
    pub factor: u32,
    /// The longest ban (at most [`value::MAX_BAN`]).
    #[serde(deserialize_with = "value::de_ban_length")]
    pub max: Duration,
}

impl Default for Escalation {
    fn default() -> Self {
        Escalation {
            factor: 2,
            max: Duration::from_secs(28 * 86_400),
        }
    }
}

impl Default for Bans {
    fn default() -> Self {
        Bans {
            maxretry: 3,
            findtime: Duration::from_secs(3600),
            grace: Duration::from_secs(600),
            bantime: Duration::from_secs(86_400),
            networks: Networks::default(),
            ignore: vec![
                "127.0.0.0/8".parse().expect("valid literal"),
                "::1".parse().expect("valid literal"),
            ],
            remember: Duration::from_secs(30 * 86_400),
            allow: Allow::default(),
            escalation: Escalation::default(),
            retry: Retry::default(),
            enforce: Enforce::default(),
        }
    }
}

/// Prefix lengths that group a client with its network.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Networks {
    /// IPv4 prefix (default 24).
    pub ipv4: PrefixLen<32>,
    /// IPv6 prefix (default 64).
    pub ipv6: PrefixLen<128>,
}

impl Default for Networks {
    fn default() -> Self {
        Networks {
            ipv4: PrefixLen(24),
            ipv6: PrefixLen(64),
        }
    }
}

/// The enforcement backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// nftables sets in nolist's own table.
    #[default]
    Nftables,
    /// iptables with ipset.
    Iptables,
    /// An existing fail2ban jail.
    Fail2ban,
    /// A user command.
    Command,
    /// Decisions are logged and stored only.
    None,
}

/// `bans.enforce`.
#[derive(Clone, Debug)]
pub struct Enforce {
    /// The backend.
    pub backend: Backend,
    /// TCP ports closed to banned clients.
    pub ports: Vec<u16>,
    /// `backend: command`: the programs that ban and unban.
    pub command: Option<CommandSpec>,
    /// `backend: fail2ban`: the jail.
    pub fail2ban: Fail2banSpec,
    /// Whether the config has a `fail2ban` table (the lint
    /// `enforce-table-unused` tells when another backend ignores it).
    pub fail2ban_given: bool,
}

impl Default for Enforce {
    fn default() -> Self {
        Enforce {
            backend: Backend::default(),
            ports: vec![25],
            command: None,
            fail2ban: Fail2banSpec::default(),
            fail2ban_given: false,
        }
    }
}

impl<'de> Deserialize<'de> for Enforce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            backend: Backend,
            #[serde(default = "default_ports")]
            ports: Vec<u16>,
            #[serde(default)]
            command: Option<CommandSpec>,
            #[serde(default)]
            fail2ban: Option<Fail2banSpec>,
        }
        let raw = Raw::deserialize(d)?;
        if raw.backend == Backend::Command && raw.command.is_none() {
            return Err(serde::de::Error::custom(
                "backend `command` needs `command: { ban: [...], unban: [...] }`",
            ));
        }
        let mut ports = raw.ports;
        ports.sort_unstable();
        ports.dedup();
        if ports.is_empty() || ports.contains(&0) || ports.len() > 15 {
            return Err(serde::de::Error::custom(
                "`ports` needs 1 to 15 TCP ports, none of them 0",
            ));
        }
        if raw.command.as_ref().is_some_and(|c| c.timeout.0.is_zero()) {
            return Err(serde::de::Error::custom(
                "`command.timeout` must be more than 0 (every call would time out)",
            ));
        }
        Ok(Enforce {
            backend: raw.backend,
            ports,
            command: raw.command,
            fail2ban_given: raw.fail2ban.is_some(),
            fail2ban: raw.fail2ban.unwrap_or_default(),
        })
    }
}

fn default_ports() -> Vec<u16> {
    vec![25]
}

/// `bans.enforce.command`: argv templates run without a shell.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Bans one target: `{ip}` (address or CIDR network) and `{seconds}`.
    pub ban: ArgvTemplate,
    /// Lifts one ban: `{ip}`.
    pub unban: ArgvTemplate,
    /// Optional: prints the targets in force, one per line, so the firewall
    /// can be read back. Without it nolist remembers what it applied.
    #[serde(default)]
    pub list: Option<ArgvTemplate>,
    /// A call running longer is killed and counts as failed.
    #[serde(default = "default_command_timeout")]
    pub timeout: Duration,
}

fn default_command_timeout() -> Duration {
    Duration::from_secs(10)
}

/// An argv template: an absolute program path, then arguments in which
/// `{ip}` and `{seconds}` are replaced. Any other `{` or `}` is an error, so
/// a typo never reaches the program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgvTemplate(pub Vec<String>);

impl ArgvTemplate {
    /// The argv with the placeholders filled in.
    pub fn render(&self, ip: &str, seconds: &str) -> Vec<String> {
        self.0
            .iter()
            .map(|a| a.replace("{ip}", ip).replace("{seconds}", seconds))
            .collect()
    }
}

impl<'de> Deserialize<'de> for ArgvTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(d)?;
        let Some(program) = argv.first() else {
            return Err(serde::de::Error::custom(
                "a command needs at least the program: [\"/path/to/program\", \"{ip}\", ...]",
            ));
        };
        if !program.starts_with('/') {
            return Err(serde::de::Error::custom(format!(
                "the program must be an absolute path (no PATH lookup), not {program:?}"
            )));
        }
        for arg in &argv {
            if arg.contains('\0') {
                return Err(serde::de::Error::custom("an argument contains a NUL byte"));
            }
            let rest = arg.replace("{ip}", "").replace("{seconds}", "");
            if rest.contains('{') || rest.contains('}') {
                return Err(serde::de::Error::custom(format!(
                    "unknown placeholder in {arg:?}: only {{ip}} and {{seconds}} are replaced"
                )));
            }
        }
        Ok(ArgvTemplate(argv))
    }
}

/// `bans.enforce.fail2ban`: the jail that enforces nolist's bans.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Fail2banSpec {
    /// The jail's name.
    pub jail: String,
    /// The server socket (`fail2ban-client -s`); default: fail2ban's own.
    pub socket: Option<PathBuf>,
    /// The client program.
    pub client: String,
}

impl Default for Fail2banSpec {
    fn default() -> Self {
        Fail2banSpec {
            jail: "nolist".into(),
            socket: None,
            client: "fail2ban-client".into(),
        }
    }
}

/// The `dns` section.
#[derive(Clone, Debug, Default)]
pub struct Dns {
    /// Authoritative serving of the planned zones.
    pub serve: Option<Serve>,
    /// The zone apex SOA; with `ns`, `plan` emits complete zones.
    pub soa: Option<Soa>,
    /// The zone's name servers.
    pub ns: Vec<NameServer>,
    /// The bans published as a DNS blocklist (`docs/dnsbl.md`).
    pub dnsbl: Option<Dnsbl>,
}

/// One entry of `dns.ns`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameServer {
    /// The server's host name.
    pub host: Name,
    /// IPv4 addresses (A records when the server is inside a planned zone).
    pub ipv4: Vec<Ipv4Addr>,
    /// IPv6 addresses (AAAA records when the server is inside a planned zone).
    pub ipv6: Vec<Ipv6Addr>,
    /// Where the entry is in the config.
    pub at: Loc,
}

impl NameServer {
    /// Every address of the server, IPv4 first.
    pub fn addresses(&self) -> impl Iterator<Item = std::net::IpAddr> + '_ {
        both_families(&self.ipv4, &self.ipv6)
    }
}

/// `dns.serve`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Serve {
    /// UDP and TCP listen addresses.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// Clients allowed to transfer zones (AXFR); everyone else is refused.
    #[serde(default)]
    pub axfr_allow: Vec<Cidr>,
    /// Most TCP connections served at once; more wait in the kernel backlog.
    #[serde(default = "default_tcp_connections")]
    pub tcp_max_connections: NonZeroUsize,
    /// A TCP connection idle for this long is closed.
    #[serde(default = "default_tcp_idle")]
    pub tcp_idle_timeout: Duration,
}

fn default_tcp_connections() -> NonZeroUsize {
    NonZeroUsize::new(256).expect("non-zero")
}

fn default_tcp_idle() -> Duration {
    Duration::from_secs(10)
}

/// `dns.soa`: the SOA record used for every planned zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Soa {
    /// The primary name server.
    pub mname: Name,
    /// The responsible mailbox in DNS form (`hostmaster.example.org.`).
    pub rname: String,
    /// The serial.
    pub serial: u32,
    /// Refresh interval, seconds.
    pub refresh: u32,
    /// Retry interval, seconds.
    pub retry: u32,
    /// Expiry, seconds.
    pub expire: u32,
    /// Negative-caching TTL, seconds.
    pub minimum: u32,
}

/// IPv4 then IPv6 addresses as one sequence.
fn both_families<'a>(
    ipv4: &'a [Ipv4Addr],
    ipv6: &'a [Ipv6Addr],
) -> impl Iterator<Item = std::net::IpAddr> + 'a {
    ipv4.iter()
        .map(|a| (*a).into())
        .chain(ipv6.iter().map(|a| (*a).into()))
}

/// Reads, parses and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let loc = loc_of_offset(&bytes, e.valid_up_to());
        ConfigError::at(path, loc, "the file is not valid UTF-8")
    })?;
    parse(text, path)
}

/// Parses and validates config text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'));
    if blank {
        return Err(ConfigError::at(
            path,
            Loc { line: 1, column: 1 },
            "the configuration file is empty; it needs at least `domains:`",
        ));
    }
    let raw: raw::RawConfig = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| ConfigError::from_yaml(path, text, &e))?;
    raw.validate(path)
}

/// Parser limits sized for configs of up to a few hundred thousand domains
/// (about 30 YAML nodes each), while still stopping alias bombs and
/// pathological nesting.
fn yaml_options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_nodes = 20_000_000;
    budget.max_events = 60_000_000;
    budget.max_documents = 1;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// The line and column of byte `offset` in `bytes`.
fn loc_of_offset(bytes: &[u8], offset: usize) -> Loc {
    let before = &bytes[..offset.min(bytes.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    Loc {
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
mod tests;
