//! The blocklist zone's UDP answers written straight from the query
//! datagram, without hickory's message parsing and encoding.
//!
//! A blocklist takes many queries per second, nearly all of one shape: a
//! plain QUERY for an address name, class IN, with or without an OPT
//! record. For that shape alone, [`answer`] reads the question in place,
//! asks the zone for its [`Verdict`] (the same decision the hickory path
//! turns into records) and writes the response bytes: the question copied
//! as sent (its case preserved), answer names as pointers to it, the
//! zone's pre-encoded negative SOA, our OPT record when the query had one,
//! and TC when the client's size limit is exceeded (through [`wire::fit`],
//! as the hickory path does). Anything else (another zone, the apex, a
//! transfer, another class or opcode, several questions, EDNS options
//! hickory interprets, another EDNS version, any malformation) is declined
//! and goes the hickory way unchanged.

use hickory_proto::rr::RecordType;

use super::wire;
use crate::dnsbl::{Served, Verdict};

/// The most labels a name of at most 255 bytes can have.
const MAX_LABELS: usize = 128;

/// An answer's kind, as the `answer` label of the DNSBL query counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// NOERROR with records.
    Records = 0,
    /// NOERROR without records.
    NoData = 1,
    /// NXDOMAIN.
    NxDomain = 2,
}

/// A query of the shape the fast path answers, read in place.
struct Query<'p> {
    /// The labels of the question name, leftmost first.
    labels: [&'p [u8]; MAX_LABELS],
    count: usize,
    /// End of the question section (name, type, class).
    question_end: usize,
    /// Where the zone's apex starts in the question name (set once the
    /// zone owns the name).
    apex: usize,
    qtype: u16,
    /// The OPT record's (payload size, DO bit), if the query has one.
    edns: Option<(u16, bool)>,
}

/// The wire answer to `packet` from the blocklist zone `served` at `now`,
/// written into `out` (cleared first), with its kind; `None` when the
/// packet is not a plain query into the zone (the caller then takes the
/// hickory path, and `out` holds nothing of use). `payload` is the largest
/// UDP answer we send and advertise (the slow path's limit).
pub fn answer(
    served: &Served,
    packet: &[u8],
    now: i64,
    payload: u16,
    out: &mut Vec<u8>,
) -> Option<Kind> {
    let mut query = read(packet)?;
    let below = served.zone.below(&query.labels[..query.count])?;
    if below.is_empty() {
        return None; // the apex: SOA and NS records, rare
    }
    query.apex = 12 + below.iter().map(|l| l.len() + 1).sum::<usize>();
    let verdict = served.zone.verdict(
        &served.list.read(),
        below,
        RecordType::from(query.qtype),
        now,
    );
    let kind = write(served, packet, &query, &verdict, payload, out)?;
    let limit = match query.edns {
        Some((size, _)) => size.clamp(512, payload),
        None => 512,
    };
    if out.len() > usize::from(limit) {
        *out = wire::fit(std::mem::take(out), usize::from(limit))?;
    }
    Some(kind)
}

/// `packet` read as a plain query: QR=0, opcode QUERY, one question with
/// an uncompressed name of class IN, no answer or authority records, at
/// most one additional record, which is a version 0 OPT record; nothing
/// after it. `None` for anything else.
fn read(packet: &[u8]) -> Option<Query<'_>> {
    let header = packet.get(..12)?;
    if header[2] & 0xf8 != 0 {
        return None; // a response, or not a QUERY
    }
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 || count(10) > 1 {
        return None;
    }
    let mut query = Query {
        labels: [&[]; MAX_LABELS],
        count: 0,
        question_end: 0,
        apex: 12,
        qtype: 0,
        edns: None,
    };
    let mut pos = 12;
    loop {
        let len = usize::from(*packet.get(pos)?);
        pos += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // a pointer or an extended label type
        }
        let label = packet.get(pos..pos + len)?;
        *query.labels.get_mut(query.count)? = label;
        query.count += 1;
        pos += len;
    }
    // hickory's limit: 255 bytes of name on the wire, root label included.
    if pos - 12 > 255 {
        return None;
    }
    let fixed = packet.get(pos..pos + 4)?;
    query.qtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    if fixed[2..4] != [0, 1] {
        return None; // not class IN: the slow path refuses it
    }
    pos += 4;
    query.question_end = pos;
    if count(10) == 1 {
        query.edns = Some(read_opt(packet.get(pos..)?)?);
    } else if packet.len() != pos {
        return None;
    }
    Some(query)
}

/// The (payload size, DO bit) of `opt`, the rest of the packet, when it
/// is exactly one OPT record: root owner, no extended RCODE bits, version
/// 0, and options hickory keeps uninterpreted (NSID, DAU and Client Subnet
/// it parses, and may reject).
fn read_opt(opt: &[u8]) -> Option<(u16, bool)> {
    let fixed = opt.get(..11)?;
    if fixed[..3] != [0, 0, 41] || fixed[5] != 0 || fixed[6] != 0 {
        return None;
    }
    let rdlen = usize::from(u16::from_be_bytes([fixed[9], fixed[10]]));
    let mut options = &opt[11..];
    if options.len() != rdlen {
        return None;
    }
    while !options.is_empty() {
        let head = options.get(..4)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        if matches!(code, 3 | 5 | 8) {
            return None;
        }
        options = options.get(4 + len..)?;
    }
    Some((
        u16::from_be_bytes([fixed[3], fixed[4]]),
        fixed[7] & 0x80 != 0,
    ))
}

/// Writes the response to `query` (in `packet`) with `verdict`'s content
/// into `out`; `None` for a verdict the fast path leaves to hickory.
fn write(
    served: &Served,
    packet: &[u8],
    query: &Query<'_>,
    verdict: &Verdict,
    payload: u16,
    out: &mut Vec<u8>,
) -> Option<Kind> {
    let (rcode, kind) = match verdict {
        Verdict::Refused | Verdict::Apex => return None,
        Verdict::NoData => (0, Kind::NoData),
        Verdict::NxDomain => (3, Kind::NxDomain),
        Verdict::Listed { .. } => (0, Kind::Records),
    };
    out.clear();
    out.extend_from_slice(&packet[..2]);
    // QR and AA, the query's RD; then its CD, and the RCODE.
    out.push(0x84 | (packet[2] & 0x01));
    out.push((packet[3] & 0x10) | rcode);
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0]);
    out.push(0);
    out.push(u8::from(query.edns.is_some()));
    out.extend_from_slice(&packet[12..query.question_end]);
    match verdict {
        Verdict::Listed { ttl, a, txt } => {
            let mut answers = 0;
            if let Some(a) = a {
                record(out, RecordType::A, *ttl, &a.octets());
                answers += 1;
            }
            if let Some(text) = txt {
                // One character string: longer text is hickory's to refuse.
                let len = u8::try_from(text.len()).ok()?;
                let mut rdata = Vec::with_capacity(text.len() + 1);
                rdata.push(len);
                rdata.extend_from_slice(text.as_bytes());
                record(out, RecordType::TXT, *ttl, &rdata);
                answers += 1;
            }
            out[7] = answers;
        }
        _ => {
            // The owner, the apex, is the end of the question's name.
            let [hi, lo] = u16::try_from(query.apex).ok()?.to_be_bytes();
            out.extend_from_slice(&[0xc0 | hi, lo]);
            out.extend_from_slice(served.zone.negative_wire());
            out[9] = 1;
        }
    }
    if let Some((_, dnssec_ok)) = query.edns {
        let [hi, lo] = payload.to_be_bytes();
        out.extend_from_slice(&[0, 0, 41, hi, lo, 0, 0]);
        out.extend_from_slice(&[if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    }
    Some(kind)
}

/// Appends a class IN record named by a pointer to the question's name.
fn record(out: &mut Vec<u8>, rtype: RecordType, ttl: u32, rdata: &[u8]) {
    out.extend_from_slice(&[0xc0, 12]);
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&ttl.to_be_bytes());
    // A and one character string: well under 64 KiB.
    let len = u16::try_from(rdata.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(rdata);
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::path::Path;

    use hickory_net::xfer::Protocol;
    use hickory_proto::op::{Edns, Message, ResponseCode};
    use hickory_proto::rr::Record;
    use ipnet::IpNet;
    use proptest::prelude::*;

    use super::*;
    use crate::clock::unix_now;
    use crate::config;
    use crate::dns::{Authority, Snapshot};
    use crate::dnsbl::{BanSet, List, Listing, Zone, name};

    const PAYLOAD: u16 = 1232;
    const TEMPLATE: &str = "{ip} hit the decoy {hits} times; ban {offence} until {until}";

    /// The blocklist `zone` (with a TXT `template`) listing a /32, a /24,
    /// a /128 and a /64 for a day from now.
    fn served(zone: &str, template: &str) -> Served {
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
    zone: {zone}
    answer: 127.0.0.4
    ttl: 5m
    txt: \"{template}\"
"
        );
        let c = config::parse(&yaml, Path::new("t.yaml")).unwrap();
        let zone = Zone::new(
            c.dns.dnsbl.as_ref().unwrap(),
            c.dns.soa.as_ref().unwrap(),
            &c.dns.ns,
        )
        .unwrap();
        let until = unix_now() + 86_400;
        let set = BanSet::build(
            [
                "192.0.2.99/32",
                "198.51.100.0/24",
                "2001:db8::7/128",
                "2001:db8:5:6::/64",
            ]
            .map(|n| (n.parse::<IpNet>().unwrap(), Listing::new(until, 4, 2))),
        );
        Served {
            zone,
            list: List::holding(set),
        }
    }

    /// EDNS of a test query: payload size, DO bit, version, options.
    type Opt<'a> = (u16, bool, u8, &'a [u8]);

    /// A query datagram: `flags` (bytes 2 and 3), one question of `class`.
    fn query(flags: [u8; 2], name: &str, qtype: u16, class: u16, edns: Option<Opt<'_>>) -> Vec<u8> {
        let mut q = vec![0xbe, 0xef, flags[0], flags[1], 0, 1, 0, 0, 0, 0, 0];
        q.push(u8::from(edns.is_some()));
        for label in name.split('.').filter(|l| !l.is_empty()) {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&class.to_be_bytes());
        if let Some((payload, dnssec_ok, version, options)) = edns {
            q.extend_from_slice(&[0, 0, 41]);
            q.extend_from_slice(&payload.to_be_bytes());
            q.extend_from_slice(&[0, version, if dnssec_ok { 0x80 } else { 0 }, 0]);
            q.extend_from_slice(&(options.len() as u16).to_be_bytes());
            q.extend_from_slice(options);
        }
        q
    }

    fn addr(ip: &str, zone: &str) -> String {
        format!("{}.{zone}.", name::reversed(ip.parse().unwrap()))
    }

    /// The hickory path's answers to `packet`, as the UDP server sends them.
    fn slow(served: &Served, packet: &[u8]) -> Vec<Vec<u8>> {
        let snapshot = Snapshot::new(Vec::new(), Vec::new())
            .unwrap()
            .with_dnsbl(served.clone());
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(Authority::new(snapshot).answer(packet, src, Protocol::Udp))
    }

    fn fast(served: &Served, packet: &[u8]) -> Option<(Kind, Vec<u8>)> {
        let mut out = vec![0xaa; 7]; // stale bytes must not leak into the answer
        answer(served, packet, unix_now(), PAYLOAD, &mut out).map(|kind| (kind, out))
    }

    /// A record with its owner name spelled as on the wire (hickory's
    /// names compare without regard to case).
    fn spelled(r: &Record) -> (String, Record) {
        (r.name.to_string(), r.clone())
    }

    /// Asserts that both paths give the same response to `packet`: header
    /// flags and RCODE, the question as spelled, the answer and authority
    /// records with their TTLs and spelling, the OPT record; returns the
    /// fast one's kind and size.
    fn same(served: &Served, packet: &[u8]) -> (Kind, usize) {
        let Some((kind, fast)) = fast(served, packet) else {
            panic!("declined: {packet:02x?}")
        };
        let slow = slow(served, packet);
        let [slow] = slow.as_slice() else {
            panic!("{} hickory answers", slow.len())
        };
        let (f, s) = (
            Message::from_vec(&fast).unwrap(),
            Message::from_vec(slow).unwrap(),
        );
        let what = format!("{s}");
        assert_eq!(f.metadata, s.metadata, "{what}");
        let names = |m: &Message| {
            m.queries
                .iter()
                .map(|q| (q.name().to_string(), q.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&f), names(&s), "{what}");
        let records = |rs: &[Record]| rs.iter().map(spelled).collect::<Vec<_>>();
        assert_eq!(records(&f.answers), records(&s.answers), "{what}");
        assert_eq!(records(&f.authorities), records(&s.authorities), "{what}");
        assert_eq!(records(&f.additionals), records(&s.additionals), "{what}");
        assert_eq!(f.edns, s.edns, "{what}");
        assert!(fast.len() <= slow.len(), "{} > {}", fast.len(), slow.len());
        // Counted as the hickory path counts it (`server::dnsbl_counted`,
        // before truncation empties the answer).
        let counted = match (s.metadata.response_code, s.answers.is_empty()) {
            (ResponseCode::NXDomain, _) => Kind::NxDomain,
            (_, true) => Kind::NoData,
            (_, false) => Kind::Records,
        };
        assert!(s.metadata.truncation || kind == counted, "{what}");
        (kind, fast.len())
    }

    #[test]
    fn the_fast_path_answers_like_hickory() {
        const Z: &str = "bl.example.org";
        let s = served(Z, TEMPLATE);
        let (a, txt, any, aaaa, mx) = (1, 16, 255, 28, 15);
        let edns: Option<Opt<'_>> = Some((4096, false, 0, &[]));
        let dnssec_ok: Option<Opt<'_>> = Some((1232, true, 0, &[]));
        // dig's cookie and padding options: kept, not interpreted.
        let cookie: Option<Opt<'_>> = Some((
            1232,
            false,
            0,
            &[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 12, 0, 0],
        ));
        let mut cases = Vec::new();
        for ip in [
            "192.0.2.99",
            "198.51.100.200",
            "2001:db8::7",
            "2001:db8:5:6:a::1",
            "127.0.0.2",
        ] {
            for (qtype, kind) in [
                (a, Kind::Records),
                (txt, Kind::Records),
                (any, Kind::Records),
                (aaaa, Kind::NoData),
                (mx, Kind::NoData),
            ] {
                for opt in [None, edns, dnssec_ok, cookie] {
                    cases.push((addr(ip, Z), qtype, opt, kind));
                }
            }
        }
        for ip in ["192.0.2.98", "127.0.0.1", "2001:db8::8", "198.51.101.1"] {
            cases.push((addr(ip, Z), a, None, Kind::NxDomain));
            cases.push((addr(ip, Z), txt, dnssec_ok, Kind::NxDomain));
        }
        for partial in [
            "2.0.192.",
            "0.127.",
            "a.b.c.",
            "5.0.0.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.",
        ] {
            cases.push((format!("{partial}{Z}."), a, edns, Kind::NoData));
        }
        for garbage in ["www.", "256.2.0.192.", "02.2.0.192.", "1.2.3.4.55."] {
            cases.push((format!("{garbage}{Z}."), a, None, Kind::NxDomain));
        }
        // Mixed case, in the address and in the zone: echoed as asked.
        cases.push(("99.2.0.192.Bl.ExAmple.ORG.".into(), a, edns, Kind::Records));
        let upper = addr("2001:db8::7", "BL.EXAMPLE.ORG").to_uppercase();
        cases.push((upper, any, None, Kind::Records));
        for (qname, qtype, opt, kind) in cases {
            let packet = query([0x01, 0x10], &qname, qtype, 1, opt);
            assert_eq!(same(&s, &packet).0, kind, "{qname} {qtype} {opt:?}");
        }
        // RD clear, CD clear, and query flags the response does not echo
        // (AA, TC, RA, AD, Z, an RCODE).
        for flags in [[0, 0], [0x06, 0xef]] {
            same(&s, &query(flags, &addr("192.0.2.99", Z), a, 1, edns));
        }
        // Answer names point at the question: rbldnsd's 64 bytes, not 94.
        let plain = query([1, 0], &addr("192.0.2.99", Z), a, 1, None);
        assert_eq!(same(&s, &plain).1, plain.len() + 16);
    }

    #[test]
    fn answers_over_the_clients_limit_are_truncated_like_hickory() {
        // A 249-byte question name and a 226-byte TXT: ANY takes 520
        // bytes without EDNS.
        let zone = format!(
            "{}.{}.{}.{}.org",
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(40)
        );
        let template = format!("{}{{ip}}", "x".repeat(216));
        let s = served(&zone, &template);
        let qname = addr("192.0.2.99", &zone);
        for (opt, truncated) in [
            (None, true),
            (Some((512, false, 0, &[][..])), true),
            (Some((100, true, 0, &[][..])), true),
            (Some((1232, false, 0, &[][..])), false),
        ] {
            let packet = query([1, 0], &qname, 255, 1, opt);
            let (_, len) = same(&s, &packet);
            let (_, out) = fast(&s, &packet).unwrap();
            assert_eq!(out[2] & 0x02 != 0, truncated, "{opt:?}");
            assert!(len <= if truncated { 512 } else { 1232 });
        }
    }

    #[test]
    fn other_queries_are_left_to_hickory() {
        const Z: &str = "bl.example.org";
        let s = served(Z, TEMPLATE);
        let name = addr("192.0.2.99", Z);
        let ok = query([1, 0], &name, 1, 1, None);
        assert!(fast(&s, &ok).is_some());
        let mut two = query([1, 0], &name, 1, 1, None);
        two[5] = 2;
        two.extend_from_slice(&ok[12..]);
        let mut none = ok[..12].to_vec();
        none[5] = 0;
        let mut trailing = ok.clone();
        trailing.push(0);
        let mut compressed = ok[..12].to_vec();
        compressed.extend_from_slice(&[2, b'9', b'9', 0xc0, 12, 0, 1, 0, 1]);
        let mut answer_count = ok.clone();
        answer_count[7] = 1;
        let declined = [
            ("QDCOUNT 0", none),
            ("QDCOUNT 2", two),
            ("class CH", query([1, 0], &name, 1, 3, None)),
            ("class ANY", query([1, 0], &name, 1, 255, None)),
            ("a response", query([0x81, 0], &name, 1, 1, None)),
            ("NOTIFY", query([0x21, 0], &name, 1, 1, None)),
            ("STATUS", query([0x11, 0], &name, 1, 1, None)),
            ("the apex", query([1, 0], &format!("{Z}."), 1, 1, None)),
            ("AXFR", query([1, 0], &name, 252, 1, None)),
            (
                "another zone",
                query([1, 0], "99.2.0.192.example.org.", 1, 1, None),
            ),
            (
                "a zone's suffix",
                query([1, 0], "99.2.0.192.xbl.example.org.", 1, 1, None),
            ),
            (
                "EDNS version 1",
                query([1, 0], &name, 1, 1, Some((1232, false, 1, &[]))),
            ),
            (
                "Client Subnet",
                query(
                    [1, 0],
                    &name,
                    1,
                    1,
                    Some((1232, false, 0, &[0, 8, 0, 4, 0, 1, 0, 0])),
                ),
            ),
            (
                "a cut option",
                query(
                    [1, 0],
                    &name,
                    1,
                    1,
                    Some((1232, false, 0, &[0, 10, 0, 8, 1])),
                ),
            ),
            ("a byte after the question", trailing),
            ("a compressed name", compressed),
            ("an answer record", answer_count),
            ("a header alone", ok[..12].to_vec()),
            ("a cut question", ok[..ok.len() - 1].to_vec()),
            ("too short", ok[..11].to_vec()),
        ];
        for (what, packet) in declined {
            assert_eq!(fast(&s, &packet), None, "{what}");
        }
    }

    /// An EDNS version other than 0, declined by the fast path, gets
    /// BADVERS from the hickory path (RFC 6891 §6.1.3), with an OPT record
    /// of version 0 and the question echoed, as the planned zones' answers.
    #[test]
    fn another_edns_version_gets_badvers() {
        const Z: &str = "bl.example.org";
        let s = served(Z, TEMPLATE);
        let name = addr("192.0.2.99", Z);
        let packet = query([1, 0], &name, 1, 1, Some((1232, false, 1, &[])));
        let answers = slow(&s, &packet);
        let [answer] = answers.as_slice() else {
            panic!("one answer: {answers:?}")
        };
        let m = Message::from_vec(answer).expect("a well-formed answer");
        // 16: BADVERS (hickory reads the code back as BADSIG, its TSIG twin).
        assert_eq!(u16::from(m.metadata.response_code), 16);
        assert_eq!(m.edns.as_ref().map(Edns::version), Some(0));
        assert_eq!(m.queries.len(), 1);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
    }

    /// A valid query, then any byte changed and any length cut: the fast
    /// path never panics, and what it writes parses with the query's ID.
    fn survives(s: &Served, packet: &[u8]) {
        if let Some((_, out)) = fast(s, packet) {
            let m = Message::from_vec(&out).expect("a well-formed answer");
            assert_eq!(m.metadata.id, u16::from_be_bytes([packet[0], packet[1]]));
        }
    }

    #[test]
    fn every_cut_of_a_valid_query_is_safe() {
        let s = served("bl.example.org", TEMPLATE);
        let packet = query(
            [1, 0],
            &addr("2001:db8::7", "bl.example.org"),
            255,
            1,
            Some((1232, true, 0, &[0, 10, 0, 0])),
        );
        for len in 0..=packet.len() {
            survives(&s, &packet[..len]);
        }
    }

    proptest! {
        #[test]
        fn random_datagrams_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            survives(&served("bl.example.org", TEMPLATE), &bytes);
        }

        #[test]
        fn mutated_queries_never_panic(at in 0usize..200, value in any::<u8>(), cut in 0usize..200) {
            let s = served("bl.example.org", TEMPLATE);
            let mut packet = query([1, 0], &addr("192.0.2.99", "bl.example.org"), 16, 1, Some((1232, true, 0, &[])));
            if let Some(b) = packet.get_mut(at) {
                *b = value;
            }
            packet.truncate(packet.len().min(cut.max(12)));
            survives(&s, &packet);
        }
    }
}
