//! Renders a plan as an RFC 1035 master file, an nsupdate script or JSON.
//!
//! Pure string building with a fixed record order, so output is
//! reproducible byte for byte.

use std::fmt::Write as _;

use serde::Serialize;

use std::collections::BTreeSet;

use super::{Address, Finding, Plan, Zone};
use crate::config::Role;

/// Version tag of the JSON document; bumped on any incompatible change.
pub const JSON_SCHEMA: &str = "nolist.plan/1";

fn role_comment(role: Role) -> &'static str {
    match role {
        Role::Decoy => "decoy: never accepts mail",
        Role::Real => "real MX",
        Role::TailDecoy => "tail decoy: never accepts mail",
    }
}

/// The zone as master-file text (`named-checkzone` accepts it when complete).
pub fn zone(zone: &Zone) -> String {
    let mut out = String::new();
    let origin = &zone.origin;
    let ttl = zone.ttl;
    // `write!` into a String cannot fail.
    let _ = writeln!(
        out,
        "; {origin} - records planned by nolist ({} layout).",
        zone.layout.as_str()
    );
    let _ = writeln!(out, "; Generated: change the nolist config, not this file.");
    if zone.is_complete() {
        let _ = writeln!(out, "; Complete zone: SOA and NS from dns.soa and dns.ns.");
    } else {
        let _ = writeln!(
            out,
            "; FRAGMENT: no SOA or NS (set dns.soa and dns.ns for a complete zone);\n\
             ; add these records to the zone that holds {origin}"
        );
    }
    let _ = writeln!(out, "$ORIGIN {origin}\n$TTL {ttl}");
    if let Some(soa) = zone.soa.as_ref().filter(|_| zone.is_complete()) {
        let _ = writeln!(
            out,
            "{origin}\t{ttl}\tIN\tSOA\t{} {} {} {} {} {} {}",
            soa.mname, soa.rname, soa.serial, soa.refresh, soa.retry, soa.expire, soa.minimum
        );
        for ns in &zone.ns {
            let _ = writeln!(out, "{origin}\t{ttl}\tIN\tNS\t{ns}");
        }
    }
    for mx in &zone.mx {
        let _ = writeln!(
            out,
            "{origin}\t{ttl}\tIN\tMX\t{} {}\t; {}",
            mx.preference,
            mx.host,
            role_comment(mx.role)
        );
    }
    let glue = zone.ns_addresses.iter().filter(|_| zone.is_complete());
    let addresses: BTreeSet<&Address> = zone.addresses.iter().chain(glue).collect();
    for a in addresses {
        let _ = writeln!(out, "{}\t{ttl}\tIN\t{}\t{}", a.name, a.rtype(), a.address);
    }
    for host in &zone.external_hosts {
        let _ = writeln!(
            out,
            "; {host} is outside {origin}: no address records here (verify resolves it)"
        );
    }
    out
}

/// An nsupdate script that replaces exactly the records nolist owns in the
/// zone (the apex MX RRset and the A/AAAA RRsets of the in-zone MX hosts it
/// defines) in one UPDATE message: `nsupdate -k KEYFILE script`.
pub fn nsupdate(zone: &Zone) -> String {
    let mut out = String::new();
    let origin = &zone.origin;
    let ttl = zone.ttl;
    let _ = writeln!(
        out,
        "; nolist: replaces the records nolist owns in {origin} in one UPDATE.\n\
         ; Run: nsupdate -k KEYFILE <this file>   (add a `server` line to pick the primary)"
    );
    let _ = writeln!(out, "zone {origin}");
    let _ = writeln!(out, "update delete {origin} IN MX");
    for mx in &zone.mx {
        let _ = writeln!(
            out,
            "update add {origin} {ttl} IN MX {} {}",
            mx.preference, mx.host
        );
    }
    for host in zone.owned_hosts() {
        let _ = writeln!(out, "update delete {host} IN A");
        let _ = writeln!(out, "update delete {host} IN AAAA");
    }
    for a in &zone.addresses {
        let _ = writeln!(
            out,
            "update add {} {ttl} IN {} {}",
            a.name,
            a.rtype(),
            a.address
        );
    }
    let _ = writeln!(out, "send");
    out
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    schema: &'static str,
    ok: bool,
    zones: Vec<JsonZone<'a>>,
    findings: &'a [Finding],
}

#[derive(Serialize)]
struct JsonZone<'a> {
    complete: bool,
    #[serde(flatten)]
    zone: &'a Zone,
}

/// The plan as a JSON document (schema [`JSON_SCHEMA`], documented in
/// `docs/plan-json.md`), pretty-printed, with a trailing newline.
pub fn json(plan: &Plan) -> String {
    let doc = JsonPlan {
        schema: JSON_SCHEMA,
        ok: !plan.has_errors(),
        zones: plan
            .zones
            .iter()
            .map(|zone| JsonZone {
                complete: zone.is_complete(),
                zone,
            })
            .collect(),
        findings: &plan.findings,
    };
    let mut s = serde_json::to_string_pretty(&doc).expect("plan types always serialize");
    s.push('\n');
    s
}
