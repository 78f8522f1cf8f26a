//! What a Postfix configuration says about a nolisting setup: the classic
//! decoy (a second `smtpd` bound to an address of its own whose
//! restrictions answer `4xx` to everyone), the real MTA's addresses and
//! name, the mail domains and the log. Pure: the files come in as text,
//! the lookup tables through a callback.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::postfix::{MainCf, Service, TableAnswer, list, table_answer};

/// The default log of Postfix on Debian (through rsyslog).
pub const SYSLOG_MAIL_LOG: &str = "/var/log/mail.log";

/// The restriction lists a decoy's `-o` overrides may hold its table in.
const RESTRICTIONS: [&str; 5] = [
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_relay_restrictions",
];

/// Lookup-table types whose source file `init` can read.
const TABLE_TYPES: [&str; 7] = ["pcre", "regexp", "hash", "btree", "lmdb", "cdb", "texthash"];

/// The classic decoy found in `master.cf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoy {
    /// The address its service is bound to.
    pub address: IpAddr,
    /// The `master.cf` line of its service.
    pub line: usize,
    /// Its `-o syslog_name=` (expanded), if any.
    pub syslog_name: Option<String>,
    /// The table (or restriction) and the reply it answers everyone with.
    pub answer: String,
    /// The reply (e.g. `450 4.7.1 Try again later`).
    pub reply: String,
}

/// What [`detect`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Detected {
    /// `myhostname`.
    pub myhostname: Option<String>,
    /// The mail domains (`mydestination`, `relay_domains`,
    /// `virtual_mailbox_domains`, `virtual_alias_domains`), in order.
    pub domains: Vec<String>,
    /// The real MTA's public addresses (`inet_interfaces`, and the other
    /// SMTP services' bound addresses); empty when it listens on all.
    pub real_addresses: Vec<IpAddr>,
    /// The decoy services.
    pub decoys: Vec<Decoy>,
    /// The log nolist should follow.
    pub maillog: String,
    /// Where `init` was not sure: `# CHECK:` notes for the whole config.
    pub checks: Vec<String>,
}

/// Reads the setup out of `main.cf` and `master.cf`. `read_table(path)`
/// gives the text of a lookup table's source file (as written in the
/// config; the caller maps it into the configuration directory), or why it
/// could not.
pub fn detect(
    main: &MainCf,
    master: &[Service],
    read_table: &dyn Fn(&str) -> Result<String, String>,
) -> Detected {
    let mut out = Detected {
        myhostname: main.get("myhostname").filter(|h| !h.is_empty()),
        ..Detected::default()
    };
    if out.myhostname.is_none() {
        out.checks.push(
            "main.cf sets no myhostname (Postfix then uses the system's host name): the real MX's host name below is a guess".into(),
        );
    }
    out.domains = domains(main, out.myhostname.as_deref(), &mut out.checks);
    // Services whose table could not be read: maybe decoys, so not taken
    // as the real MTA's either.
    let mut unsure = Vec::new();
    for service in master.iter().filter(|s| s.is_smtpd_on_25()) {
        if let Some(decoy) = decoy(main, service, read_table, &mut out.checks, &mut unsure) {
            out.decoys.push(decoy);
        }
    }
    let mut skip: Vec<IpAddr> = out.decoys.iter().map(|d| d.address).collect();
    skip.extend(unsure);
    out.real_addresses = real_addresses(main, master, &skip, &mut out.checks);
    out.maillog = match main.get("maillog_file").filter(|f| !f.is_empty()) {
        Some(file) => file,
        None => {
            out.checks.push(format!(
                "Postfix logs through syslog (no maillog_file): {SYSLOG_MAIL_LOG} is the Debian default; use the file your syslog writes mail.* to"
            ));
            SYSLOG_MAIL_LOG.into()
        }
    };
    out
}

/// The mail domains of `main.cf`, without the host's own names
/// (`$myhostname`, `localhost…`); a table or file in the lists cannot be
/// read as domains and gets a CHECK note.
fn domains(main: &MainCf, myhostname: Option<&str>, checks: &mut Vec<String>) -> Vec<String> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for key in [
        "mydestination",
        "relay_domains",
        "virtual_mailbox_domains",
        "virtual_alias_domains",
    ] {
        let Some(value) = main.get(key) else { continue };
        for item in list(&value) {
            let name = item.trim_end_matches('.').to_ascii_lowercase();
            if item.contains(':') || item.starts_with('/') {
                checks.push(format!(
                    "{key} lists {item}: its domains were not read; name them with --domain"
                ));
            } else if name.starts_with("localhost")
                || Some(name.as_str()) == myhostname.map(str::to_ascii_lowercase).as_deref()
                || !name.contains('.')
            {
                continue;
            } else if seen.insert(name.clone()) {
                out.push(name);
            }
        }
    }
    out
}

/// `service` as a decoy: bound to an address of its own, with a
/// restriction that answers `4xx` to everyone. `None` for any other smtpd.
fn decoy(
    main: &MainCf,
    service: &Service,
    read_table: &dyn Fn(&str) -> Result<String, String>,
    checks: &mut Vec<String>,
    unsure: &mut Vec<IpAddr>,
) -> Option<Decoy> {
    let address: IpAddr = service.address()?.parse().ok()?;
    let mut found = None;
    for key in RESTRICTIONS {
        let Some(value) = service.option(key) else {
            continue;
        };
        for item in list(&main.expand(value)) {
            if item == "defer" {
                found = Some((format!("{key} = defer"), "450".to_owned()));
                break;
            }
            let Some((kind, path)) = item.split_once(':') else {
                continue;
            };
            if !TABLE_TYPES.contains(&kind) {
                continue;
            }
            let text = match read_table(path) {
                Ok(text) => text,
                Err(why) => {
                    unsure.push(address);
                    checks.push(format!(
                        "master.cf line {}: the smtpd on {address} uses {item}, which could not be read ({why}); if it answers 4xx to everyone, it is a decoy",
                        service.line
                    ));
                    continue;
                }
            };
            match table_answer(kind, &text) {
                TableAnswer::Everything(reply) => {
                    found = Some((item.clone(), reply));
                }
                TableAnswer::Listed(reply) => {
                    checks.push(format!(
                        "master.cf line {}: {item} answers {reply:?} only to the clients it lists; taken as the decoy",
                        service.line
                    ));
                    found = Some((item.clone(), reply));
                }
                TableAnswer::No => continue,
            }
            break;
        }
        if found.is_some() {
            break;
        }
    }
    let (answer, reply) = found?;
    let syslog_name = service.option("syslog_name").map(|n| main.expand(n));
    Some(Decoy {
        address,
        line: service.line,
        syslog_name,
        answer,
        reply,
    })
}

/// The real MTA's public addresses: `inet_interfaces` (unless `all`) and
/// the bound addresses of the SMTP services, loopback and
/// `decoy_addresses` (decoys, and services that may be) left out.
fn real_addresses(
    main: &MainCf,
    master: &[Service],
    decoy_addresses: &[IpAddr],
    checks: &mut Vec<String>,
) -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = Vec::new();
    let interfaces = main.get("inet_interfaces").unwrap_or_default();
    let items = list(&interfaces);
    let all = items.iter().any(|i| i == "all");
    let mut add = |a: IpAddr| {
        if !a.is_loopback() && !decoy_addresses.contains(&a) && !out.contains(&a) {
            out.push(a);
        }
    };
    let bound: Vec<IpAddr> = master
        .iter()
        .filter(|s| s.is_smtpd_on_25())
        .filter_map(|s| s.address()?.parse().ok())
        .collect();
    let main_service_unbound = master
        .iter()
        .any(|s| s.is_smtpd_on_25() && s.address().is_none());
    if main_service_unbound && !all {
        for item in &items {
            match item.trim_matches(['[', ']']).parse::<IpAddr>() {
                Ok(a) => add(a),
                Err(_) if matches!(item.as_str(), "loopback-only" | "localhost") => {}
                Err(_) => checks.push(format!(
                    "inet_interfaces names {item}: not an address; add the real MX's addresses by hand"
                )),
            }
        }
    }
    for a in bound {
        add(a);
    }
    if out.is_empty() {
        checks.push(
            "the real MTA listens on every address (inet_interfaces = all): its public addresses are not known from Postfix; list them under real"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::postfix::parse_master;
    use super::*;

    const MAIN: &str = "\
myhostname = mx2.example.org
mydomain = example.org
mydestination = $myhostname, localhost.$mydomain, localhost, $mydomain
relay_domains = shop.example, hash:/etc/postfix/relay
inet_interfaces = 127.0.0.1, 192.0.2.20, [2001:db8::20]
maillog_file = /var/log/postfix.log
";
    const MASTER: &str = "\
smtp inet n - y - - smtpd
192.0.2.10:smtp inet n - y - - smtpd
  -o syslog_name=postfix/decoy
  -o smtpd_client_restrictions=check_client_access,pcre:/etc/postfix/decoy.pcre
[2001:db8::10]:smtp inet n - y - - smtpd
  -o smtpd_recipient_restrictions=pcre:/etc/postfix/missing.pcre
";

    fn tables(path: &str) -> Result<String, String> {
        match path {
            "/etc/postfix/decoy.pcre" => Ok("/./ 450 4.7.1 Later\n".into()),
            _ => Err("No such file or directory".into()),
        }
    }

    #[test]
    fn finds_the_classic_decoy_and_the_real_mta() {
        let d = detect(&MainCf::parse(MAIN), &parse_master(MASTER), &tables);
        assert_eq!(d.myhostname.as_deref(), Some("mx2.example.org"));
        assert_eq!(d.domains, vec!["example.org", "shop.example"]);
        assert_eq!(d.decoys.len(), 1);
        let decoy = &d.decoys[0];
        assert_eq!(decoy.address, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(decoy.syslog_name.as_deref(), Some("postfix/decoy"));
        assert_eq!(decoy.reply, "450 4.7.1 Later");
        assert_eq!(decoy.line, 2);
        assert_eq!(
            d.real_addresses,
            vec![
                "192.0.2.20".parse::<IpAddr>().unwrap(),
                "2001:db8::20".parse().unwrap()
            ]
        );
        assert_eq!(d.maillog, "/var/log/postfix.log");
        let checks = d.checks.join("\n");
        assert!(checks.contains("hash:/etc/postfix/relay"), "{checks}");
        assert!(checks.contains("missing.pcre"), "{checks}");
    }

    #[test]
    fn no_decoy_and_all_interfaces_are_noted() {
        let d = detect(
            &MainCf::parse("myhostname = mail.example.net\nmydestination = example.net\n"),
            &parse_master("smtp inet n - y - - smtpd\n"),
            &tables,
        );
        assert!(d.decoys.is_empty());
        assert!(d.real_addresses.is_empty());
        assert_eq!(d.domains, vec!["example.net"]);
        assert_eq!(d.maillog, SYSLOG_MAIL_LOG);
        let checks = d.checks.join("\n");
        assert!(checks.contains("inet_interfaces = all"), "{checks}");
        assert!(checks.contains("syslog"), "{checks}");
    }

    #[test]
    fn a_second_smtpd_without_a_deferring_table_is_no_decoy() {
        let d = detect(
            &MainCf::parse("inet_interfaces = 192.0.2.20\n"),
            &parse_master(
                "smtp inet n - y - - smtpd\n192.0.2.30:smtp inet n - y - - smtpd\n -o smtpd_client_restrictions=permit_mynetworks,reject\n",
            ),
            &tables,
        );
        assert!(d.decoys.is_empty());
        assert_eq!(d.real_addresses.len(), 2);
    }
}
