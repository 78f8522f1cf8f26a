//! The config `init` writes: the detected setup and, when read, live DNS
//! merged into one [`Draft`] per domain, rendered as commented YAML. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::detect::Detected;

/// The default preferences of a layout `init` invents (no live MX).
const DECOY_PREFERENCE: u16 = 10;
const REAL_PREFERENCE: u16 = 20;

/// A domain's MX set and its hosts' addresses as live DNS answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiveDomain {
    /// `(preference, host)` of each MX record (host without the final
    /// dot), or what went wrong (`no MX records`, a timeout, …).
    pub mx: Result<Vec<(u16, String)>, String>,
    /// Each MX host's A and AAAA addresses.
    pub addresses: BTreeMap<String, Vec<IpAddr>>,
}

/// One MX host of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// The MX target.
    pub host: String,
    /// Its preference.
    pub preference: u16,
    /// Its addresses.
    pub addresses: Vec<IpAddr>,
    /// Comments written above it (where it came from, `CHECK:` notes).
    pub notes: Vec<String>,
}

/// One domain of the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domain {
    /// The domain.
    pub name: String,
    /// Notes for the whole domain (`CHECK:` lines).
    pub notes: Vec<String>,
    /// The decoy.
    pub decoy: Host,
    /// The real MX hosts.
    pub real: Vec<Host>,
    /// The tail decoy (the sandwich layout), when live DNS has a second
    /// decoy MX above every real one.
    pub tail: Option<Host>,
}

/// The whole config to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    /// The domains.
    pub domains: Vec<Domain>,
    /// Where live DNS and the detected setup disagree (also `CHECK:` notes
    /// in the domains): the lines `init` prints on stderr.
    pub disagreements: Vec<String>,
}

/// Merges the detected setup with each domain's live DNS (`None`: not
/// read, `--no-dns`).
pub fn draft(
    detected: &Detected,
    domains: &[String],
    live: &BTreeMap<String, LiveDomain>,
) -> Draft {
    let mut out = Draft {
        domains: Vec::new(),
        disagreements: Vec::new(),
    };
    for name in domains {
        let domain = match live.get(name) {
            None => guessed(detected, name),
            Some(l) => match &l.mx {
                Ok(mx) if !mx.is_empty() => {
                    from_live(detected, name, mx, l, &mut out.disagreements)
                }
                Ok(_) | Err(_) => {
                    let why = l.mx.as_ref().err().map_or("no MX records", String::as_str);
                    let line =
                        format!("live DNS: {why}; the layout below is detected from Postfix only");
                    let mut d = guessed(detected, name);
                    d.notes.push(format!("CHECK: {line}"));
                    out.disagreements.push(format!("{name}: {line}"));
                    d
                }
            },
        };
        out.domains.push(domain);
    }
    same_addresses_everywhere(&mut out.domains, live);
    out
}

/// One host, one set of addresses in every domain (the plan's
/// `host-address-conflict` is an error): the addresses live DNS gave a
/// host win over those `init` took from Postfix for it elsewhere.
fn same_addresses_everywhere(domains: &mut [Domain], live: &BTreeMap<String, LiveDomain>) {
    let mut known: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    for l in live.values() {
        for (host, addresses) in &l.addresses {
            known
                .entry(host.clone())
                .or_insert_with(|| addresses.clone());
        }
    }
    for d in domains.iter() {
        for h in std::iter::once(&d.decoy).chain(&d.real).chain(&d.tail) {
            known
                .entry(h.host.clone())
                .or_insert_with(|| h.addresses.clone());
        }
    }
    for d in domains.iter_mut() {
        for h in std::iter::once(&mut d.decoy)
            .chain(d.real.iter_mut())
            .chain(d.tail.iter_mut())
        {
            if let Some(addresses) = known.get(&h.host).filter(|a| **a != h.addresses) {
                h.addresses = addresses.clone();
                h.notes.push(
                    "addresses as live DNS (or another domain above) has them for this host".into(),
                );
            }
        }
    }
}

/// A layout from Postfix alone: the decoy at preference 10 on the decoy
/// addresses, the real MTA (`myhostname`) at 20.
fn guessed(detected: &Detected, name: &str) -> Domain {
    let mut decoy = Host {
        host: format!("mx-decoy.{name}"),
        preference: DECOY_PREFERENCE,
        addresses: detected.decoys.iter().map(|d| d.address).collect(),
        notes: vec![format!(
            "CHECK: host name and preference are a guess (not from live DNS): use your decoy MX record's"
        )],
    };
    if detected.decoys.is_empty() {
        decoy.notes.push(
            "CHECK: no decoy found in Postfix: give the decoy an address of its own (nolist's responder answers there) and an MX record".into(),
        );
    } else {
        decoy.notes.insert(0, decoy_origin(detected));
    }
    let (host, mut notes) = match &detected.myhostname {
        Some(h) => (h.clone(), vec!["the real MTA (myhostname)".to_owned()]),
        None => (
            format!("mail.{name}"),
            vec![
                "CHECK: the real MTA's host name is a guess (main.cf sets no myhostname)"
                    .to_owned(),
            ],
        ),
    };
    notes.push("CHECK: preference is a guess (not from live DNS): use your MX record's".into());
    Domain {
        name: name.to_owned(),
        notes: Vec::new(),
        decoy,
        real: vec![Host {
            host,
            preference: REAL_PREFERENCE,
            addresses: detected.real_addresses.clone(),
            notes,
        }],
        tail: None,
    }
}

/// Where the decoy was found, as a comment.
fn decoy_origin(detected: &Detected) -> String {
    let parts: Vec<String> = detected
        .decoys
        .iter()
        .map(|d| {
            format!(
                "master.cf line {} ({}, {} answers {:?})",
                d.line, d.address, d.answer, d.reply
            )
        })
        .collect();
    format!("the classic decoy: {}", parts.join("; "))
}

/// The layout from the live MX set: each MX host on a decoy address is a
/// decoy, one on the real MTA's addresses (or named `myhostname`) real,
/// and without a decoy in Postfix, the lowest MX that the real MTA does not
/// listen on is the decoy (its `inet_interfaces` exclude it). Disagreements
/// go to `disagreements` and the notes.
fn from_live(
    detected: &Detected,
    name: &str,
    mx: &[(u16, String)],
    live: &LiveDomain,
    disagreements: &mut Vec<String>,
) -> Domain {
    let mut mx = mx.to_vec();
    mx.sort();
    let decoy_addresses: Vec<IpAddr> = detected.decoys.iter().map(|d| d.address).collect();
    let addresses = |host: &str| live.addresses.get(host).cloned().unwrap_or_default();
    let is_decoy = |host: &str| addresses(host).iter().any(|a| decoy_addresses.contains(a));
    let serves = |host: &str| {
        Some(host) == detected.myhostname.as_deref()
            || addresses(host)
                .iter()
                .any(|a| detected.real_addresses.contains(a))
    };
    let mut notes = Vec::new();
    let mut say = |line: String, notes: &mut Vec<String>| {
        notes.push(format!("CHECK: {line}"));
        disagreements.push(format!("{name}: {line}"));
    };
    let decoy_at = mx.iter().position(|(_, h)| is_decoy(h)).or_else(|| {
        // No decoy service in Postfix: the lowest MX that this Postfix
        // does not listen on, when its addresses are known.
        let (_, lowest) = mx.first()?;
        (decoy_addresses.is_empty()
            && !detected.real_addresses.is_empty()
            && mx.len() > 1
            && !addresses(lowest).is_empty()
            && !serves(lowest))
        .then_some(0)
    });
    let mut decoy = match decoy_at {
        Some(i) => {
            let (pref, host) = mx.remove(i);
            let mut notes = vec![if decoy_addresses.is_empty() {
                "the decoy: the lowest MX, on addresses the real MTA does not listen on (inet_interfaces)".to_owned()
            } else {
                decoy_origin(detected)
            }];
            notes.push(format!("live DNS: MX {pref} {host}"));
            Host {
                addresses: addresses(&host),
                host,
                preference: pref,
                notes,
            }
        }
        None => {
            let mut g = guessed(detected, name).decoy;
            g.preference = 0;
            say(
                if decoy_addresses.is_empty() {
                    "live DNS has no decoy MX: add one (the decoy below is new)".to_owned()
                } else {
                    format!(
                        "no MX record points at the decoy's address ({}): add the decoy's MX record",
                        list_addresses(&decoy_addresses)
                    )
                },
                &mut notes,
            );
            g
        }
    };
    for a in &decoy_addresses {
        if decoy_at.is_some() && !decoy.addresses.contains(a) {
            say(
                format!(
                    "the decoy {} does not resolve to the decoy's address {a} in live DNS",
                    decoy.host
                ),
                &mut notes,
            );
        }
    }
    // More MX hosts on decoy addresses: the highest, above every real MX,
    // is the sandwich's tail decoy; one between real MX hosts is left out
    // (as a real MX it would share the decoy's address).
    let (decoys, mx): (Vec<_>, Vec<_>) = mx.into_iter().partition(|(_, h)| is_decoy(h));
    let top_real = mx.iter().map(|(p, _)| *p).max();
    let mut tail = None;
    for (pref, host) in decoys {
        if tail.is_none() && top_real.is_some_and(|top| pref > top) {
            tail = Some(Host {
                addresses: addresses(&host),
                notes: vec![format!(
                    "live DNS: MX {pref} {host}, on a decoy address above every real MX"
                )],
                host,
                preference: pref,
            });
        } else {
            say(
                format!(
                    "MX {pref} {host} is on a decoy address but not the lowest or highest MX: left out"
                ),
                &mut notes,
            );
        }
    }
    let mut real = Vec::new();
    for (pref, host) in mx {
        let mut host_notes = vec![format!("live DNS: MX {pref} {host}")];
        if !serves(&host) {
            say(
                format!("MX {host} is not served by this Postfix (a backup MX elsewhere?)"),
                &mut host_notes,
            );
        } else {
            for a in &detected.real_addresses {
                if !addresses(&host).contains(a)
                    && Some(host.as_str()) == detected.myhostname.as_deref()
                {
                    say(
                        format!("{host} does not resolve to the real MTA's address {a}"),
                        &mut host_notes,
                    );
                }
            }
        }
        real.push(Host {
            addresses: addresses(&host),
            host,
            preference: pref,
            notes: host_notes,
        });
    }
    if real.is_empty() {
        say(
            "live DNS has no real MX besides the decoy: the real MX below is from Postfix".into(),
            &mut notes,
        );
        real = guessed(detected, name).real;
    }
    let lowest_real = real
        .iter()
        .map(|h| h.preference)
        .min()
        .unwrap_or(REAL_PREFERENCE);
    if decoy.preference >= lowest_real {
        say(
            format!(
                "the decoy {} has preference {}, not below every real MX ({lowest_real}): nolisting needs it lowest; changed below",
                decoy.host, decoy.preference
            ),
            &mut notes,
        );
        // The lowest preference that stays below every real MX: 0, the
        // real ones moved up by one when one of them is at 0.
        if lowest_real == 0 {
            for h in real.iter_mut().chain(tail.iter_mut()) {
                h.preference = h.preference.saturating_add(1);
            }
        }
        decoy.preference = 0;
    }
    Domain {
        name: name.to_owned(),
        notes,
        decoy,
        real,
        tail,
    }
}

fn list_addresses(addresses: &[IpAddr]) -> String {
    addresses
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What [`render`] needs besides the domains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The Postfix directory read, if any.
    pub source: Option<&'a str>,
    /// Whether live DNS was read.
    pub dns: bool,
}

/// The config as commented YAML. Strings that could need quoting are
/// written as JSON strings (valid YAML double-quoted scalars).
pub fn render(header: &Header<'_>, detected: &Detected, draft: &Draft) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# nolist config written by `nolist init`{}.",
        match header.source {
            Some(dir) => format!(" from the Postfix configuration in {dir}"),
            None => String::new(),
        }
    );
    let _ = writeln!(
        out,
        "# Live DNS was {}. Review every `# CHECK:` line, then: nolist plan -c THIS_FILE",
        if header.dns {
            "read for the MX hosts and their addresses"
        } else {
            "not read (--no-dns)"
        }
    );
    for check in &detected.checks {
        let _ = writeln!(out, "# CHECK: {check}");
    }
    out.push_str("\n# Where the daemon keeps bans and log checkpoints.\nstate_dir: /var/lib/nolist\n\ndomains:\n");
    for d in &draft.domains {
        let _ = writeln!(out, "  - name: {}", quote(&d.name));
        for note in &d.notes {
            let _ = writeln!(out, "    # {note}");
        }
        let layout = if d.tail.is_some() {
            "sandwich"
        } else {
            "classic"
        };
        let _ = writeln!(out, "    layout: {layout}");
        out.push_str("    decoy:\n");
        host(&mut out, "      ", &d.decoy);
        out.push_str("    real:\n");
        for h in &d.real {
            host(&mut out, "      - ", h);
        }
        if let Some(tail) = &d.tail {
            out.push_str("    tail_decoy:\n");
            host(&mut out, "      ", tail);
        }
    }
    out.push_str(
        "\n# refuse: nolist binds nothing on the decoy addresses. A classic decoy\n\
         # still running there keeps answering (nolist reads its log lines); once\n\
         # it is stopped, the kernel resets every connection and every sender\n\
         # falls back at once.\nresponder:\n  mode: refuse\n",
    );
    out.push_str("\n# The real MTA's log: deliveries (and the classic decoy's rejects).\nmta:\n");
    let _ = writeln!(out, "  logs: [{}]", quote(&detected.maillog));
    out.push_str("  format: postfix\n");
    let names: Vec<&str> = detected
        .decoys
        .iter()
        .filter_map(|d| d.syslog_name.as_deref())
        .collect();
    match names.first() {
        Some(name) => {
            let _ = writeln!(
                out,
                "  # the classic decoy's -o syslog_name (master.cf line {})",
                detected.decoys[0].line
            );
            let _ = writeln!(out, "  decoy_syslog_name: {}", quote(name));
            if names.iter().any(|n| n != name) {
                out.push_str("  # CHECK: the decoys log under different syslog names; nolist follows only this one\n");
            }
        }
        None if !detected.decoys.is_empty() => {
            let reply = &detected.decoys[0].reply;
            out.push_str(
                "  # CHECK: the classic decoy sets no syslog_name, so its lines look like the\n",
            );
            out.push_str(
                "  # real MTA's: add `-o syslog_name=postfix/decoy` to its master.cf line.\n",
            );
            out.push_str("  # Until then its reply text tells its rejects apart:\n");
            let _ = writeln!(out, "  decoy_reply: {}", quote(reply));
        }
        None => {}
    }
    out.push_str(
        "\n# Bans of clients that only ever talk to decoys, enforced in nftables on\n\
         # port 25. Disable an older fail2ban jail for the decoy once this runs.\n\
         bans:\n  enforce: { backend: nftables, ports: [25] }\n",
    );
    out
}

/// One host entry at `prefix` (`      ` for the decoy, `      - ` in a list).
fn host(out: &mut String, prefix: &str, h: &Host) {
    let indent = " ".repeat(prefix.len());
    let note_indent = prefix.trim_end_matches("- ");
    for note in &h.notes {
        let _ = writeln!(out, "{note_indent}# {note}");
    }
    let _ = writeln!(out, "{prefix}host: {}", quote(&h.host));
    let _ = writeln!(out, "{indent}preference: {}", h.preference);
    let v4: Vec<String> = h
        .addresses
        .iter()
        .filter(|a| a.is_ipv4())
        .map(ToString::to_string)
        .collect();
    let v6: Vec<String> = h
        .addresses
        .iter()
        .filter(|a| a.is_ipv6())
        .map(|a| quote(&a.to_string()))
        .collect();
    if !v4.is_empty() {
        let _ = writeln!(out, "{indent}ipv4: [{}]", v4.join(", "));
    }
    if !v6.is_empty() {
        let _ = writeln!(out, "{indent}ipv6: [{}]", v6.join(", "));
    }
}

/// `s` as a YAML scalar: bare when it is a plain name or path, else a
/// double-quoted (JSON) string.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::detect::Decoy;
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Postfix with the classic decoy on 192.0.2.10, the real MTA
    /// mx2.example.org on 192.0.2.20.
    fn detected() -> Detected {
        Detected {
            myhostname: Some("mx2.example.org".into()),
            domains: vec!["example.org".into()],
            real_addresses: vec![ip("192.0.2.20")],
            decoys: vec![Decoy {
                address: ip("192.0.2.10"),
                line: 2,
                syslog_name: Some("postfix/decoy".into()),
                answer: "pcre:/etc/postfix/d.pcre".into(),
                reply: "450 later".into(),
            }],
            maillog: "/var/log/mail.log".into(),
            checks: Vec::new(),
        }
    }

    fn live(mx: &[(u16, &str, &str)]) -> BTreeMap<String, LiveDomain> {
        let mut addresses = BTreeMap::new();
        for (_, host, a) in mx {
            addresses.insert((*host).to_owned(), vec![ip(a)]);
        }
        let mx = Ok(mx.iter().map(|(p, h, _)| (*p, (*h).to_owned())).collect());
        BTreeMap::from([("example.org".to_owned(), LiveDomain { mx, addresses })])
    }

    fn domains() -> Vec<String> {
        vec!["example.org".into()]
    }

    #[test]
    fn without_dns_the_layout_is_guessed_and_marked() {
        let d = draft(&detected(), &domains(), &BTreeMap::new());
        let domain = &d.domains[0];
        assert_eq!(domain.decoy.host, "mx-decoy.example.org");
        assert_eq!(domain.decoy.preference, 10);
        assert_eq!(domain.decoy.addresses, vec![ip("192.0.2.10")]);
        assert!(domain.decoy.notes.iter().any(|n| n.starts_with("CHECK:")));
        assert_eq!(domain.real[0].host, "mx2.example.org");
        assert!(d.disagreements.is_empty());
    }

    #[test]
    fn a_decoy_above_a_real_mx_is_moved_down_and_reported() {
        let live = live(&[
            (10, "mx2.example.org", "192.0.2.20"),
            (20, "mx1.example.org", "192.0.2.10"),
        ]);
        let d = draft(&detected(), &domains(), &live);
        let domain = &d.domains[0];
        assert_eq!(domain.decoy.host, "mx1.example.org");
        assert_eq!(domain.decoy.preference, 0);
        assert_eq!(domain.real[0].preference, 10);
        assert_eq!(d.disagreements.len(), 1, "{:?}", d.disagreements);
        assert!(d.disagreements[0].contains("not below every real MX"));
    }

    #[test]
    fn a_second_decoy_mx_above_every_real_one_is_the_tail_decoy() {
        let live = live(&[
            (10, "mx1.example.org", "192.0.2.10"),
            (20, "mx2.example.org", "192.0.2.20"),
            (90, "mx9.example.org", "192.0.2.10"),
        ]);
        let d = draft(&detected(), &domains(), &live);
        let domain = &d.domains[0];
        assert_eq!(domain.tail.as_ref().unwrap().host, "mx9.example.org");
        assert_eq!(domain.real.len(), 1);
        assert!(d.disagreements.is_empty(), "{:?}", d.disagreements);
        let text = render(
            &Header {
                source: None,
                dns: true,
            },
            &detected(),
            &d,
        );
        assert!(text.contains("layout: sandwich\n"), "{text}");
        assert!(text.contains("    tail_decoy:\n"), "{text}");
    }

    #[test]
    fn a_backup_mx_and_a_missing_decoy_record_are_disagreements() {
        let live = live(&[
            (10, "mx2.example.org", "192.0.2.20"),
            (30, "backup.example.net", "198.51.100.1"),
        ]);
        let d = draft(&detected(), &domains(), &live);
        let text = d.disagreements.join("\n");
        assert!(
            text.contains("no MX record points at the decoy's address (192.0.2.10)"),
            "{text}"
        );
        assert!(
            text.contains("backup.example.net is not served by this Postfix"),
            "{text}"
        );
        assert_eq!(d.domains[0].decoy.preference, 0);
        assert_eq!(d.domains[0].real.len(), 2);
    }

    #[test]
    fn a_host_keeps_the_live_addresses_in_every_domain() {
        let mut live = live(&[
            (10, "mx1.example.org", "192.0.2.10"),
            (20, "mx2.example.org", "192.0.2.21"),
        ]);
        live.insert(
            "shop.example".into(),
            LiveDomain {
                mx: Err("timeout".into()),
                addresses: BTreeMap::new(),
            },
        );
        let names = vec!["example.org".to_owned(), "shop.example".to_owned()];
        let d = draft(&detected(), &names, &live);
        assert_eq!(d.domains[1].real[0].host, "mx2.example.org");
        assert_eq!(d.domains[1].real[0].addresses, vec![ip("192.0.2.21")]);
    }

    #[test]
    fn odd_strings_are_quoted() {
        assert_eq!(quote("postfix/decoy"), "postfix/decoy");
        assert_eq!(quote("450 4.7.1 x: y"), "\"450 4.7.1 x: y\"");
        assert_eq!(quote("-x"), "\"-x\"");
        assert_eq!(quote(""), "\"\"");
    }
}
