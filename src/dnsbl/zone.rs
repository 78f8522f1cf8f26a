//! The answers of the blocklist zone (RFC 5782 §2): a listed address
//! gets the configured A record and, with a template, a TXT record; other
//! types at a listed name get NODATA; an unlisted address or a name that
//! is not one gets NXDOMAIN; both negative answers carry the SOA, whose
//! MINIMUM is their TTL (RFC 2308 §3). The apex answers SOA and NS. Pure:
//! the ban set and the time are passed in, and nothing about the querier
//! is, so the answer cannot depend on who asks.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, NS, SOA, TXT};
use hickory_proto::rr::{LowerName, Name as DnsName, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinEncodable, BinEncoder, NameEncoding};

use super::name::{self, Query};
use super::set::{self, BanSet, Listing};
use crate::config::{Dnsbl, NameServer, Soa, dnsbl::TxtTemplate};
use crate::dns::records::{RecordError, dns_name};
use crate::watch::time::rfc3339;

/// The TTL of the apex SOA and NS records.
pub const APEX_TTL: u32 = 3600;

/// The TXT of the RFC 5782 §5 test entry (no ban stands behind it).
pub const TEST_ENTRY_TXT: &str = "RFC 5782 test entry";

/// One blocklist zone, as configured.
#[derive(Clone, Debug)]
pub struct Zone {
    origin: LowerName,
    /// Labels of the origin.
    labels: usize,
    answer: Ipv4Addr,
    ttl: u32,
    txt: Option<TxtTemplate>,
    soa: Record,
    /// The SOA of negative answers: its TTL is the SOA MINIMUM.
    negative: Record,
    /// `negative` in wire form after its owner name (RDATA names written
    /// out in full), for answers written without hickory (`dns::fast`).
    negative_wire: Vec<u8>,
    ns: Vec<Record>,
}

/// What one question gets, decided before any record is built: the
/// hickory path turns it into a [`Reply`], the wire fast path of the DNS
/// server into bytes, so both answer alike.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A transfer: REFUSED.
    Refused,
    /// The apex: its SOA and NS records, or NODATA ([`Zone::answer`]).
    Apex,
    /// NOERROR, no records, the negative SOA.
    NoData,
    /// NXDOMAIN with the negative SOA.
    NxDomain,
    /// A listed address: its A record and TXT text (at least one of them),
    /// with their TTL.
    Listed {
        /// Both records' TTL.
        ttl: u32,
        /// The A record's address, if the type asks for it.
        a: Option<Ipv4Addr>,
        /// The TXT record's text, if the type asks for it and a template
        /// is configured.
        txt: Option<String>,
    },
}

/// What to answer to one question.
#[derive(Debug, PartialEq, Eq)]
pub struct Reply {
    /// NOERROR, NXDOMAIN or REFUSED.
    pub code: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The authority section (the SOA of a negative answer).
    pub authority: Vec<Record>,
}

impl Zone {
    /// The zone of `dnsbl`, with the SOA and NS of the planned zones.
    pub fn new(dnsbl: &Dnsbl, soa: &Soa, ns: &[NameServer]) -> Result<Zone, RecordError> {
        let origin = dns_name(&dnsbl.zone)?;
        let rname: DnsName = soa.rname.parse().map_err(|e: hickory_proto::ProtoError| {
            RecordError::Name(soa.rname.clone(), e.to_string())
        })?;
        let rdata = SOA::new(
            dns_name(&soa.mname)?,
            rname,
            soa.serial,
            i32::try_from(soa.refresh).unwrap_or(i32::MAX),
            i32::try_from(soa.retry).unwrap_or(i32::MAX),
            i32::try_from(soa.expire).unwrap_or(i32::MAX),
            soa.minimum,
        );
        let soa_record = Record::from_rdata(origin.clone(), APEX_TTL, RData::SOA(rdata));
        let mut negative = soa_record.clone();
        negative.ttl = soa.minimum;
        // The owner is the apex: the fast path points it into the question.
        let owner = origin.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
        let negative_wire = uncompressed(&negative)?.split_off(owner);
        let ns = ns
            .iter()
            .map(|n| {
                let host = dns_name(&n.host)?;
                Ok(Record::from_rdata(
                    origin.clone(),
                    APEX_TTL,
                    RData::NS(NS(host)),
                ))
            })
            .collect::<Result<_, RecordError>>()?;
        Ok(Zone {
            labels: origin.iter().count(),
            origin: LowerName::new(&origin),
            answer: dnsbl.answer,
            ttl: dnsbl.ttl,
            txt: dnsbl.txt.clone(),
            soa: soa_record,
            negative,
            negative_wire,
            ns,
        })
    }

    /// The zone apex.
    pub fn origin(&self) -> &LowerName {
        &self.origin
    }

    /// Whether `name` is the apex or below it.
    pub fn owns(&self, name: &LowerName) -> bool {
        self.origin.zone_of(name)
    }

    /// The labels of `name` (leftmost first) in front of the apex, when
    /// the zone owns it (compared without regard to ASCII case).
    pub fn below<'n, L: AsRef<[u8]>>(&self, name: &'n [L]) -> Option<&'n [L]> {
        let below = name.len().checked_sub(self.labels)?;
        let ours = name[below..]
            .iter()
            .zip(self.origin.iter())
            .all(|(label, origin)| label.as_ref().eq_ignore_ascii_case(origin));
        ours.then_some(&name[..below])
    }

    /// The negative answers' SOA record in wire form from its type on:
    /// the writer puts the owner name (the apex) in front, and the RDATA's
    /// names are written out in full.
    pub fn negative_wire(&self) -> &[u8] {
        &self.negative_wire
    }

    /// The answer to `qtype` at `name` (owned by the zone; the answer
    /// records are named as asked, `name`'s spelling), from `set` at `now`.
    pub fn answer(&self, set: &BanSet, name: &DnsName, qtype: RecordType, now: i64) -> Reply {
        let labels: Vec<&[u8]> = name.iter().collect();
        let below = labels.len().saturating_sub(self.labels);
        match self.verdict(set, &labels[..below], qtype, now) {
            Verdict::Refused => Reply {
                code: ResponseCode::Refused,
                answers: Vec::new(),
                authority: Vec::new(),
            },
            Verdict::Apex => self.apex(qtype),
            Verdict::NoData => self.nodata(),
            Verdict::NxDomain => self.nxdomain(),
            Verdict::Listed { ttl, a, txt } => {
                let a = a.map(|a| Record::from_rdata(name.clone(), ttl, RData::A(A(a))));
                let txt = txt.map(|text| {
                    Record::from_rdata(name.clone(), ttl, RData::TXT(TXT::new(vec![text])))
                });
                Reply {
                    code: ResponseCode::NoError,
                    answers: a.into_iter().chain(txt).collect(),
                    authority: Vec::new(),
                }
            }
        }
    }

    /// What `qtype` at the name whose labels in front of the apex are
    /// `below` gets, from `set` at `now`.
    pub fn verdict<L: AsRef<[u8]>>(
        &self,
        set: &BanSet,
        below: &[L],
        qtype: RecordType,
        now: i64,
    ) -> Verdict {
        if matches!(qtype, RecordType::AXFR | RecordType::IXFR) {
            // Not (yet) transferable: its content moves with every ban.
            return Verdict::Refused;
        }
        match name::parse(below) {
            Query::Apex => Verdict::Apex,
            Query::Partial => Verdict::NoData,
            Query::Invalid => Verdict::NxDomain,
            Query::Address(ip) => match self.listing(set, ip, now) {
                None => Verdict::NxDomain,
                Some(listing) => self.listed(ip, listing, qtype, now),
            },
        }
    }

    /// `Some(None)` for the always-listed test entry, `Some(listing)` for
    /// a ban in force, `None` when `ip` is not listed.
    fn listing(&self, set: &BanSet, ip: IpAddr, now: i64) -> Option<Option<Listing>> {
        if set::never_listed(ip) {
            return None;
        }
        if set::always_listed(ip) {
            return Some(None);
        }
        set.lookup(ip, now).map(Some)
    }

    fn listed(&self, ip: IpAddr, listing: Option<Listing>, qtype: RecordType, now: i64) -> Verdict {
        // Never cached past the ban's end.
        let ttl = listing.map_or(self.ttl, |l| {
            let left = u32::try_from(l.until() - now).unwrap_or(u32::MAX);
            self.ttl.min(left).max(1)
        });
        let txt = || {
            let template = self.txt.as_ref()?;
            Some(match listing {
                None => TEST_ENTRY_TXT.to_owned(),
                Some(l) => template.render(|field| match field {
                    "ip" => ip.to_canonical().to_string(),
                    "hits" => l.hits().to_string(),
                    "offence" => l.offence().to_string(),
                    _ => rfc3339(l.until()),
                }),
            })
        };
        let (a, txt) = match qtype {
            RecordType::A => (Some(self.answer), None),
            RecordType::TXT => (None, txt()),
            RecordType::ANY => (Some(self.answer), txt()),
            _ => (None, None),
        };
        if a.is_none() && txt.is_none() {
            return Verdict::NoData;
        }
        Verdict::Listed { ttl, a, txt }
    }

    fn apex(&self, qtype: RecordType) -> Reply {
        let answers: Vec<Record> = match qtype {
            RecordType::SOA => vec![self.soa.clone()],
            RecordType::NS => self.ns.clone(),
            RecordType::ANY => std::iter::once(self.soa.clone())
                .chain(self.ns.clone())
                .collect(),
            _ => return self.nodata(),
        };
        Reply {
            code: ResponseCode::NoError,
            answers,
            authority: Vec::new(),
        }
    }

    fn nodata(&self) -> Reply {
        Reply {
            code: ResponseCode::NoError,
            answers: Vec::new(),
            authority: vec![self.negative.clone()],
        }
    }

    fn nxdomain(&self) -> Reply {
        Reply {
            code: ResponseCode::NXDomain,
            answers: Vec::new(),
            authority: vec![self.negative.clone()],
        }
    }
}

/// `record` in wire form with its names written out in full, so the
/// bytes can be placed anywhere in a message.
fn uncompressed(record: &Record) -> Result<Vec<u8>, RecordError> {
    let mut bytes = Vec::with_capacity(128);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_name_encoding(NameEncoding::Uncompressed);
    record
        .emit(&mut encoder)
        .map_err(|e| RecordError::Name(record.name.to_string(), e.to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::str::FromStr;

    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;
    use crate::config;

    const NOW: i64 = 1_800_000_000;

    fn zone(extra: &str) -> Zone {
        let yaml = format!(
            "domains:
  - name: example.org
    decoy: {{ host: mx01.example.org, preference: 10, ipv4: [192.0.2.10] }}
    real:
      - {{ host: mx02.example.org, preference: 20, ipv4: [192.0.2.20] }}
dns:
  soa: {{ mname: ns1.example.net, rname: h@example.org, minimum: 600 }}
  ns: [ns1.example.net, ns2.example.net]
  dnsbl:
    zone: bl.example.org
    answer: 127.0.0.4
    ttl: 5m
{extra}"
        );
        let c = config::parse(&yaml, Path::new("t.yaml")).unwrap();
        Zone::new(
            c.dns.dnsbl.as_ref().unwrap(),
            c.dns.soa.as_ref().unwrap(),
            &c.dns.ns,
        )
        .unwrap()
    }

    fn set() -> BanSet {
        BanSet::build(
            [
                ("192.0.2.99/32", NOW + 3600),
                ("198.51.100.0/24", NOW + 60),
                ("2001:db8::7/128", NOW + 3600),
                ("2001:db8:5:6::/64", NOW + 3600),
            ]
            .map(|(n, until)| (n.parse::<IpNet>().unwrap(), Listing::new(until, 4, 2))),
        )
    }

    fn ask(z: &Zone, name: &str, qtype: RecordType) -> Reply {
        z.answer(&set(), &DnsName::from_str(name).unwrap(), qtype, NOW)
    }

    fn q(ip: &str) -> String {
        format!("{}.bl.example.org.", name::reversed(ip.parse().unwrap()))
    }

    #[test]
    fn listed_addresses_get_the_answer_with_its_ttl() {
        let z = zone("");
        for ip in [
            "192.0.2.99",
            "198.51.100.200",
            "2001:db8::7",
            "2001:db8:5:6:a::1",
            "127.0.0.2",
            "::ffff:127.0.0.2",
        ] {
            let r = ask(&z, &q(ip), RecordType::A);
            assert_eq!(r.code, ResponseCode::NoError, "{ip}");
            assert_eq!(r.answers.len(), 1);
            assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(127, 0, 0, 4))));
            assert_eq!(r.answers[0].name, DnsName::from_str(&q(ip)).unwrap());
        }
        assert_eq!(ask(&z, &q("192.0.2.99"), RecordType::A).answers[0].ttl, 300);
        // The /24 ends in a minute: never cached longer.
        assert_eq!(
            ask(&z, &q("198.51.100.1"), RecordType::A).answers[0].ttl,
            60
        );
    }

    #[test]
    fn unlisted_and_invalid_names_are_nxdomain_with_the_soa() {
        let z = zone("");
        for name in [
            q("192.0.2.98"),
            q("127.0.0.1"),
            q("::ffff:127.0.0.1"),
            q("2001:db8::8"),
            "www.bl.example.org.".into(),
            "1.2.3.4.5x.bl.example.org.".into(),
            "256.2.0.192.bl.example.org.".into(),
        ] {
            let r = ask(&z, &name, RecordType::A);
            assert_eq!(r.code, ResponseCode::NXDomain, "{name}");
            assert!(r.answers.is_empty());
            assert_eq!(r.authority.len(), 1);
            assert_eq!(r.authority[0].record_type(), RecordType::SOA);
            assert_eq!(
                r.authority[0].ttl, 600,
                "the negative TTL is the SOA minimum"
            );
        }
    }

    #[test]
    fn other_types_and_partial_names_are_nodata() {
        let z = zone("");
        for (name, qtype) in [
            (q("192.0.2.99"), RecordType::MX),
            (q("192.0.2.99"), RecordType::AAAA),
            // No template: no TXT.
            (q("192.0.2.99"), RecordType::TXT),
            ("2.0.192.bl.example.org.".into(), RecordType::A),
            ("bl.example.org.".into(), RecordType::A),
        ] {
            let r = ask(&z, &name, qtype);
            assert_eq!(r.code, ResponseCode::NoError, "{name} {qtype}");
            assert!(r.answers.is_empty());
            assert_eq!(r.authority[0].record_type(), RecordType::SOA);
        }
    }

    #[test]
    fn txt_follows_the_template() {
        let z = zone("    txt: \"{ip} hit the decoy {hits} times; ban {offence} until {until}\"\n");
        let r = ask(&z, &q("::ffff:192.0.2.99"), RecordType::TXT);
        let RData::TXT(txt) = &r.answers[0].data else {
            panic!("{r:?}")
        };
        assert_eq!(
            txt.to_string(),
            "192.0.2.99 hit the decoy 4 times; ban 2 until 2027-01-15T09:00:00Z"
        );
        let r = ask(&z, &q("127.0.0.2"), RecordType::TXT);
        assert_eq!(
            r.answers[0].data,
            RData::TXT(TXT::new(vec![TEST_ENTRY_TXT.into()]))
        );
        assert_eq!(ask(&z, &q("192.0.2.99"), RecordType::ANY).answers.len(), 2);
    }

    #[test]
    fn apex_and_transfers() {
        let z = zone("");
        let soa = ask(&z, "BL.example.org.", RecordType::SOA);
        assert_eq!(soa.answers.len(), 1);
        assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
        assert_eq!(ask(&z, "bl.example.org.", RecordType::NS).answers.len(), 2);
        assert_eq!(
            ask(&z, "bl.example.org.", RecordType::AXFR).code,
            ResponseCode::Refused
        );
        assert!(z.owns(&LowerName::from_str("x.Bl.Example.org.").unwrap()));
        assert!(!z.owns(&LowerName::from_str("xbl.example.org.").unwrap()));
    }

    proptest! {
        /// Whatever the labels, an answer comes back, and a positive one
        /// only for an address the set (or the test entry) lists.
        #[test]
        fn any_name_is_answered(labels in prop::collection::vec("[0-9a-fA-F]{1,3}|[a-z-]{1,5}", 0..34)) {
            let z = zone("");
            let mut text = labels.join(".");
            if !text.is_empty() { text.push('.'); }
            text.push_str("bl.example.org.");
            let Ok(name) = DnsName::from_str(&text) else { return Ok(()) };
            let r = z.answer(&set(), &name, RecordType::A, NOW);
            if !r.answers.is_empty() {
                let Query::Address(ip) = name::parse(&labels) else { panic!("{text}") };
                prop_assert!(set::always_listed(ip) || set().lookup(ip, NOW).is_some());
            }
        }
    }
}
