//! DNS protocol conformance of `nolist serve`, in the spirit of ISC's EDNS
//! compliance suite (`genreport`) and RFC 8906 §8: every check sends the
//! same hand-made query to `nolist serve` and to NSD serving the same zone
//! (from `nolist plan --out`, plus the base zone), parses both replies fully
//! (a stray byte after the counted records is a failure) and holds both to
//! what the RFCs require. nolist must pass every check. NSD must pass too,
//! except where it is known to depart from an RFC ([`NSD_DEPARTURES`], also
//! listed in docs/serve.md): there the RFC wins. The differences between the
//! two replies are printed either way.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::util;
use crate::util::nsd::Nsd;
use crate::util::serve::Server;

// ---------------------------------------------------------------- queries

/// A query as raw header fields, so that any of them can be odd.
#[derive(Clone, Debug)]
struct Query {
    id: u16,
    /// Header byte 2: QR, opcode, AA, TC, RD.
    flags: u8,
    /// Header byte 3: RA, Z, AD, CD, RCODE.
    flags2: u8,
    questions: Vec<(String, u16, u16)>,
    edns: Option<Opt>,
}

/// The OPT pseudo-record of a query.
#[derive(Clone, Debug)]
struct Opt {
    payload: u16,
    version: u8,
    /// DO is 0x8000; the other 15 bits are unassigned ("Z").
    flags: u16,
    options: Vec<(u16, Vec<u8>)>,
}

const IN: u16 = 1;
const SOA: u16 = 6;
const MX: u16 = 15;
const TXT: u16 = 16;
const A: u16 = 1;
const OPT: u16 = 41;
/// The Extended DNS Error option (RFC 8914).
const EDE: u16 = 15;

const NOERROR: u16 = 0;
const FORMERR: u16 = 1;
const NXDOMAIN: u16 = 3;
const NOTIMP: u16 = 4;
const REFUSED: u16 = 5;
const BADVERS: u16 = 16;

/// A plain query: no RD, class IN, no EDNS.
fn query(name: &str, qtype: u16) -> Query {
    Query {
        id: 0x4e4c,
        flags: 0,
        flags2: 0,
        questions: vec![(name.to_owned(), qtype, IN)],
        edns: None,
    }
}

impl Query {
    fn edns(mut self) -> Query {
        self.edns = Some(Opt {
            payload: 1232,
            version: 0,
            flags: 0,
            options: Vec::new(),
        });
        self
    }
    fn opt(self, f: impl FnOnce(&mut Opt)) -> Query {
        let mut q = if self.edns.is_none() {
            self.edns()
        } else {
            self
        };
        f(q.edns.as_mut().unwrap());
        q
    }
    fn dnssec(self) -> Query {
        self.opt(|o| o.flags |= 0x8000)
    }
    fn version(self, v: u8) -> Query {
        self.opt(|o| o.version = v)
    }
    fn payload(self, p: u16) -> Query {
        self.opt(|o| o.payload = p)
    }
    fn option(self, code: u16, data: &[u8]) -> Query {
        self.opt(|o| o.options.push((code, data.to_vec())))
    }
    fn opcode(mut self, opcode: u8) -> Query {
        self.flags = (self.flags & 0x87) | (opcode << 3);
        self
    }
    fn class(mut self, class: u16) -> Query {
        self.questions[0].2 = class;
        self
    }
    fn questions(mut self, n: usize) -> Query {
        let first = self.questions[0].clone();
        self.questions = vec![first; n];
        self
    }
    fn id(mut self, id: u16) -> Query {
        self.id = id;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut p = self.id.to_be_bytes().to_vec();
        p.extend_from_slice(&[self.flags, self.flags2]);
        let count = |n: usize| u16::try_from(n).unwrap().to_be_bytes();
        p.extend_from_slice(&count(self.questions.len()));
        p.extend_from_slice(&[0, 0, 0, 0]);
        p.extend_from_slice(&count(usize::from(self.edns.is_some())));
        for (name, qtype, class) in &self.questions {
            for label in name.split('.').filter(|l| !l.is_empty()) {
                p.push(u8::try_from(label.len()).unwrap());
                p.extend_from_slice(label.as_bytes());
            }
            p.push(0);
            p.extend_from_slice(&qtype.to_be_bytes());
            p.extend_from_slice(&class.to_be_bytes());
        }
        if let Some(opt) = &self.edns {
            let rdata: Vec<u8> = opt
                .options
                .iter()
                .flat_map(|(code, data)| {
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&count(data.len()));
                    o.extend_from_slice(data);
                    o
                })
                .collect();
            p.push(0);
            p.extend_from_slice(&OPT.to_be_bytes());
            p.extend_from_slice(&opt.payload.to_be_bytes());
            p.extend_from_slice(&[0, opt.version]);
            p.extend_from_slice(&opt.flags.to_be_bytes());
            p.extend_from_slice(&count(rdata.len()));
            p.extend_from_slice(&rdata);
        }
        p
    }
}

// ---------------------------------------------------------------- replies

/// A reply, parsed without hickory (the library under test).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Reply {
    id: u16,
    qr: bool,
    opcode: u8,
    aa: bool,
    tc: bool,
    rd: bool,
    /// The reserved header bit.
    z: bool,
    /// With the OPT record's upper 8 bits.
    rcode: u16,
    /// The question section as sent back, byte for byte.
    question: Vec<u8>,
    qdcount: u16,
    answers: Vec<u16>,
    authority: Vec<u16>,
    additional: Vec<u16>,
    opt: Option<OptSeen>,
    len: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct OptSeen {
    version: u8,
    dnssec_ok: bool,
    /// The other 15 flag bits.
    z: u16,
    options: Vec<u16>,
}

fn skip_name(m: &[u8], mut pos: usize) -> Result<usize, String> {
    loop {
        let len = *m.get(pos).ok_or("name runs past the end")?;
        match len & 0xc0 {
            0 if len == 0 => return Ok(pos + 1),
            0 => pos += 1 + usize::from(len),
            0xc0 if pos + 2 <= m.len() => return Ok(pos + 2),
            _ => return Err(format!("bad label byte {len:#x} at {pos}")),
        }
    }
}

/// Parses a whole message; extra bytes after the counted records, a
/// record cut short, or two OPT records are errors (what `dig` reports as
/// "Message has N extra bytes at end" and the like).
fn parse(m: &[u8]) -> Result<Reply, String> {
    if m.len() < 12 {
        return Err(format!("{} bytes: no header", m.len()));
    }
    let u16_at = |i: usize| u16::from_be_bytes([m[i], m[i + 1]]);
    let (qd, an, ns, ar) = (u16_at(4), u16_at(6), u16_at(8), u16_at(10));
    let mut pos = 12;
    for _ in 0..qd {
        pos = skip_name(m, pos)? + 4;
    }
    if pos > m.len() {
        return Err("question runs past the end".into());
    }
    let question = m[12..pos].to_vec();
    let mut sections = [Vec::new(), Vec::new(), Vec::new()];
    let mut opt = None;
    for (section, n) in [an, ns, ar].into_iter().enumerate() {
        for _ in 0..n {
            let fixed = skip_name(m, pos)?;
            let rr = m
                .get(fixed..fixed + 10)
                .ok_or_else(|| format!("record header cut short at {fixed}"))?;
            let rtype = u16::from_be_bytes([rr[0], rr[1]]);
            let rdlen = usize::from(u16::from_be_bytes([rr[8], rr[9]]));
            let end = fixed + 10 + rdlen;
            if end > m.len() {
                return Err(format!("record data cut short at {fixed}"));
            }
            if rtype == OPT {
                if section != 2 || opt.is_some() {
                    return Err("OPT outside the additional section, or twice".into());
                }
                let mut options = Vec::new();
                let mut o = fixed + 10;
                while o + 4 <= end {
                    options.push(u16::from_be_bytes([m[o], m[o + 1]]));
                    o += 4 + usize::from(u16::from_be_bytes([m[o + 2], m[o + 3]]));
                }
                opt = Some((
                    rr[4],
                    OptSeen {
                        version: rr[5],
                        dnssec_ok: rr[6] & 0x80 != 0,
                        z: u16::from_be_bytes([rr[6] & 0x7f, rr[7]]),
                        options,
                    },
                ));
            } else {
                sections[section].push(rtype);
            }
            pos = end;
        }
    }
    if pos != m.len() {
        return Err(format!("message has {} extra bytes at end", m.len() - pos));
    }
    let [answers, authority, additional] = sections;
    let high = opt.as_ref().map_or(0, |(h, _)| u16::from(*h));
    Ok(Reply {
        id: u16_at(0),
        qr: m[2] & 0x80 != 0,
        opcode: (m[2] >> 3) & 0x0f,
        aa: m[2] & 0x04 != 0,
        tc: m[2] & 0x02 != 0,
        rd: m[2] & 0x01 != 0,
        z: m[3] & 0x40 != 0,
        rcode: (high << 4) | u16::from(m[3] & 0x0f),
        question,
        qdcount: qd,
        answers,
        authority,
        additional,
        opt: opt.map(|(_, o)| o),
        len: m.len(),
    })
}

/// What came back for one query.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Outcome {
    Silent,
    Malformed(String),
    Reply(Reply),
}

impl Outcome {
    fn of(bytes: Option<Vec<u8>>) -> Outcome {
        match bytes {
            None => Outcome::Silent,
            Some(b) => match parse(&b) {
                Ok(r) => Outcome::Reply(r),
                Err(e) => Outcome::Malformed(e),
            },
        }
    }

    /// One line for the differences report.
    fn summary(&self) -> String {
        match self {
            Outcome::Silent => "no reply".into(),
            Outcome::Malformed(e) => format!("malformed: {e}"),
            Outcome::Reply(r) => {
                let flags: Vec<&str> = [(r.aa, "aa"), (r.tc, "tc"), (r.z, "z")]
                    .iter()
                    .filter(|f| f.0)
                    .map(|f| f.1)
                    .collect();
                let opt = r.opt.as_ref().map_or("no OPT".to_owned(), |o| {
                    format!(
                        "OPT v{}{}{}",
                        o.version,
                        if o.dnssec_ok { " do" } else { "" },
                        if o.options.is_empty() {
                            String::new()
                        } else {
                            format!(" options {:?}", o.options)
                        }
                    )
                });
                format!(
                    "{} [{}] qd={} an={} ns={}, {opt}",
                    rcode_name(r.rcode),
                    flags.join(" "),
                    r.qdcount,
                    r.answers.len(),
                    r.authority.len()
                )
            }
        }
    }
}

fn rcode_name(rcode: u16) -> String {
    match rcode {
        NOERROR => "NOERROR".into(),
        FORMERR => "FORMERR".into(),
        NXDOMAIN => "NXDOMAIN".into(),
        NOTIMP => "NOTIMP".into(),
        REFUSED => "REFUSED".into(),
        BADVERS => "BADVERS".into(),
        n => format!("RCODE{n}"),
    }
}

// ---------------------------------------------------------------- transport

const WAIT: Duration = Duration::from_millis(1500);

fn udp(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    sock.send_to(packet, server).unwrap();
    let mut buf = [0u8; 65535];
    sock.recv_from(&mut buf)
        .ok()
        .map(|(n, _)| buf[..n].to_vec())
}

fn read_framed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).ok()?;
    let mut reply = vec![0; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut reply).ok()?;
    Some(reply)
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut f = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    f.extend_from_slice(packet);
    f
}

fn tcp(server: SocketAddr, packet: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&server, WAIT).ok()?;
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&framed(packet)).ok()?;
    read_framed(&mut s)
}

// ---------------------------------------------------------------- servers

/// TXT strings making an RRset of about 900 bytes: too big for 512, small
/// enough for 1232.
fn big_txt() -> String {
    (0..12)
        .map(|i| format!("big IN TXT \"{i:02}-{}\"\n", "x".repeat(56)))
        .collect()
}

/// `nolist serve` and NSD with the same data: the sandwich example, its
/// base zone, and a large TXT RRset at big.example.com.
struct Pair {
    nolist: Server,
    nsd: Nsd,
    _dir: tempfile::TempDir,
}

impl Pair {
    fn start() -> Option<Pair> {
        util::require_tool("nsd", "nsd")?;
        let dir = tempfile::tempdir().unwrap();
        let base = format!(
            "{}{}",
            util::read_example("base/example.com.zone"),
            big_txt()
        );
        let config = write_config(dir.path(), &base);
        let out = util::nolist()
            .args(["plan", "-c"])
            .arg(&config)
            .arg("--out")
            .arg(dir.path().join("zones"))
            .output()
            .unwrap();
        assert!(out.status.success(), "plan --out: {out:?}");
        let planned = std::fs::read_to_string(dir.path().join("zones/example.com.zone")).unwrap();
        let zone = format!("{planned}\n{base}");
        let nsd = Nsd::start(&[("example.com", &zone)])?;
        let nolist = Server::start_with("serve", &config, &["--listen", "127.0.0.1:0"], 2)
            .unwrap_or_else(|log| panic!("nolist serve did not start:\n{log}"));
        Some(Pair {
            nolist,
            nsd,
            _dir: dir,
        })
    }

    /// `(name, address)` of both servers for `tcp` or UDP.
    fn servers(&self, tcp: bool) -> [(&'static str, SocketAddr); 2] {
        [
            (
                "nolist",
                self.nolist.addr(if tcp { "tcp" } else { "udp" }, false),
            ),
            ("nsd", self.nsd.addr),
        ]
    }
}

/// The sandwich example with `base` as its base zone, in `dir`.
fn write_config(dir: &Path, base: &str) -> std::path::PathBuf {
    std::fs::write(dir.join("base.zone"), base).unwrap();
    let config = util::read_example("sandwich.yaml")
        .replace("base_zone: base/example.com.zone", "base_zone: base.zone");
    assert!(config.contains("base_zone: base.zone"));
    let path = dir.join("nolist.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

// ---------------------------------------------------------------- checks

/// What a check requires of a reply: the RFC's answer.
type Expect = fn(&Query, &Reply) -> Result<(), String>;

struct Check {
    name: &'static str,
    query: Query,
    tcp: bool,
    /// `None`: no reply at all is the right answer.
    expect: Option<Expect>,
}

fn check(name: &'static str, query: Query, expect: Expect) -> Check {
    Check {
        name,
        query,
        tcp: false,
        expect: Some(expect),
    }
}

/// Where NSD (4.x, as in Debian) answers differently, and why: it departs
/// from an RFC (nolist follows the RFC), or both answers are allowed and
/// nolist's is its documented policy. Each is in docs/serve.md's list.
const NSD_DEPARTURES: &[(&str, &str)] = &[
    (
        "opcode-edns",
        "NSD answers an unknown opcode with EDNS without an OPT record; RFC 6891 §6.1.1: a query with OPT gets one",
    ),
    (
        "edns1-do",
        "NSD's BADVERS drops the DO bit; RFC 3225 §3: it MUST be copied",
    ),
    (
        "update",
        "NSD answers UPDATE with NOTIMP; nolist with REFUSED (both allowed by RFC 2136 §3: the zones come from the config)",
    ),
    (
        "class-any",
        "NSD answers QCLASS ANY with the IN data, without AA (RFC 1035 allows it); nolist serves class IN only and REFUSES every other class",
    ),
];

fn is(cond: bool, what: &str) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what.to_owned()) }
}

/// The header every reply needs: QR, the query's ID and opcode, Z clear.
fn header(q: &Query, r: &Reply) -> Result<(), String> {
    is(r.qr, "QR clear")?;
    is(r.id == q.id, "ID not echoed")?;
    is(r.opcode == (q.flags >> 3) & 0x0f, "opcode not echoed")?;
    is(!r.z, "Z bit set")?;
    is(r.rd == (q.flags & 1 != 0), "RD not echoed")
}

fn rcode(r: &Reply, want: u16) -> Result<(), String> {
    is(
        r.rcode == want,
        &format!(
            "rcode {} instead of {}",
            rcode_name(r.rcode),
            rcode_name(want)
        ),
    )
}

/// OPT present exactly when the query had one; version 0; DO copied; no
/// unassigned flag set; no option the query did not ask for, except an
/// Extended DNS Error (RFC 8914 §3: any response may carry one).
fn opt(q: &Query, r: &Reply) -> Result<(), String> {
    match (&q.edns, &r.opt) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err("OPT in the reply to a query without one".into()),
        (Some(_), None) => Err("no OPT in the reply to a query with one".into()),
        (Some(qo), Some(ro)) => {
            is(ro.version == 0, "OPT version is not 0")?;
            is(
                ro.dnssec_ok == (qo.flags & 0x8000 != 0),
                "DO bit not copied (RFC 3225 §3)",
            )?;
            is(ro.z == 0, "unassigned EDNS flags echoed")?;
            let asked: BTreeSet<u16> = qo.options.iter().map(|o| o.0).collect();
            is(
                ro.options
                    .iter()
                    .all(|o| *o == EDE || (asked.contains(o) && *o != 100)),
                "an option that was not asked for (or unknown) came back",
            )
        }
    }
}

/// An authoritative answer with `n` records of `rtype`.
fn answer(q: &Query, r: &Reply, rtype: u16, n: usize) -> Result<(), String> {
    header(q, r)?;
    rcode(r, NOERROR)?;
    opt(q, r)?;
    is(r.aa, "AA clear")?;
    is(!r.tc, "TC set")?;
    is(
        r.question == q.bytes()[12..12 + r.question.len()],
        "question not echoed",
    )?;
    is(
        r.answers.len() == n && r.answers.iter().all(|t| *t == rtype),
        &format!("answers {:?}, expected {n} of type {rtype}", r.answers),
    )
}

/// A negative answer (NXDOMAIN or NODATA) with the SOA in the authority section.
fn negative(q: &Query, r: &Reply, code: u16) -> Result<(), String> {
    header(q, r)?;
    rcode(r, code)?;
    opt(q, r)?;
    is(r.aa, "AA clear")?;
    is(r.answers.is_empty(), "answer records in a negative answer")?;
    is(
        r.authority.contains(&SOA),
        "no SOA in the authority section",
    )
}

/// An error with no records: not authoritative, nothing but OPT.
fn error(q: &Query, r: &Reply, code: u16) -> Result<(), String> {
    header(q, r)?;
    rcode(r, code)?;
    opt(q, r)?;
    is(!r.aa, "AA set on an error")?;
    is(
        r.answers.is_empty() && r.authority.is_empty() && r.additional.is_empty(),
        "records in an error",
    )
}

/// A truncated UDP answer: TC, within `limit`, the question, no answer
/// records (the client retries over TCP; no partial RRset).
fn truncated(q: &Query, r: &Reply, limit: usize) -> Result<(), String> {
    header(q, r)?;
    rcode(r, NOERROR)?;
    opt(q, r)?;
    is(r.tc, "TC clear")?;
    is(
        r.len <= limit,
        &format!("{} bytes, more than {limit}", r.len),
    )?;
    is(r.qdcount == 1, "question not echoed")?;
    is(r.answers.is_empty(), "records in a truncated answer")
}

fn checks() -> Vec<Check> {
    let soa = || query("example.com", SOA);
    let big = || query("big.example.com", TXT);
    let mut v = vec![
        // genreport "dns" and "aa": plain DNS, authoritative.
        check("dns", soa(), |q, r| answer(q, r, SOA, 1)),
        check("aa", query("mx02.example.com", A), |q, r| {
            answer(q, r, A, 1)
        }),
        check("mx", query("example.com", MX).edns(), |q, r| {
            answer(q, r, MX, 4)
        }),
        check("edns", soa().edns(), |q, r| answer(q, r, SOA, 1)),
        // RFC 6891 §6.1.3: an unknown version gets BADVERS with version 0.
        check("edns1", soa().version(1), |q, r| error(q, r, BADVERS)),
        check(
            "edns@512",
            query("example.com", 48).dnssec().payload(512),
            |q, r| negative(q, r, NOERROR),
        ),
        // RFC 6891 §6.1.2: unknown options are ignored, not echoed.
        check("ednsopt", soa().option(100, b""), |q, r| {
            answer(q, r, SOA, 1)
        }),
        check("edns1opt", soa().version(1).option(100, b""), |q, r| {
            error(q, r, BADVERS)
        }),
        // RFC 3225 §3: DO is copied, signed zone or not (here: unsigned).
        check("do", soa().dnssec(), |q, r| answer(q, r, SOA, 1)),
        check("edns1-do", soa().version(1).dnssec(), |q, r| {
            error(q, r, BADVERS)
        }),
        // RFC 6891 §6.1.4: unassigned EDNS flags are ignored and cleared.
        check("ednsflags", soa().opt(|o| o.flags = 0x0040), |q, r| {
            answer(q, r, SOA, 1)
        }),
        // NSID, client subnet, EXPIRE, COOKIE: unsupported ones are ignored.
        check(
            "optlist",
            soa()
                .option(3, b"")
                .option(8, &[0, 1, 0, 0])
                .option(9, b"")
                .option(10, &[1, 2, 3, 4, 5, 6, 7, 8]),
            |q, r| answer(q, r, SOA, 1),
        ),
        // RFC 1035 §4.1.1: Z must be zero in responses.
        check(
            "zflag",
            Query {
                flags2: 0x40,
                ..soa()
            },
            |q, r| answer(q, r, SOA, 1),
        ),
        // RFC 1035 §4.1.1, RFC 8906 §8.1.4: an unknown opcode is NOTIMP.
        check("opcode", soa().opcode(15), |q, r| error(q, r, NOTIMP)),
        check("opcode-edns", soa().opcode(15).edns(), |q, r| {
            error(q, r, NOTIMP)
        }),
        check("iquery", soa().opcode(1), |q, r| error(q, r, NOTIMP)),
        check("status", soa().opcode(2), |q, r| error(q, r, NOTIMP)),
        // NOTIFY and UPDATE: the zones come from the config.
        check("notify", soa().opcode(4), |q, r| error(q, r, REFUSED)),
        check("update", soa().opcode(5), |q, r| error(q, r, REFUSED)),
        // RFC 3597: an unknown type is NODATA.
        check("type666", query("example.com", 666), |q, r| {
            negative(q, r, NOERROR)
        }),
        check("nxdomain", query("nope.example.com", A).edns(), |q, r| {
            negative(q, r, NXDOMAIN)
        }),
        check("nodata", query("mx01.example.com", TXT), |q, r| {
            negative(q, r, NOERROR)
        }),
        // Only class IN is served: never IN data, never AA, for another class.
        check("class-ch", soa().class(3).edns(), |q, r| {
            error(q, r, REFUSED)
        }),
        check("class-hs", soa().class(4), |q, r| error(q, r, REFUSED)),
        check("class-any", soa().class(255), |q, r| error(q, r, REFUSED)),
        check("qdcount-0", soa().questions(0), |q, r| error(q, r, FORMERR)),
        check("qdcount-2", soa().questions(2), |q, r| error(q, r, FORMERR)),
        // RFC 1035 §4.2.1: at most 512 bytes without EDNS; RFC 6891 §7: at
        // most the advertised size (512 at the least) with it.
        check("truncation", big(), |q, r| truncated(q, r, 512)),
        check("truncation-edns512", big().payload(512), |q, r| {
            truncated(q, r, 512)
        }),
        check("fits-edns1232", big().edns(), |q, r| answer(q, r, TXT, 12)),
        Check {
            name: "qr",
            query: Query {
                flags: 0x80,
                ..soa()
            },
            tcp: false,
            expect: None,
        },
    ];
    for (name, q) in [("tcp", soa()), ("tcp-big", big())] {
        v.push(Check {
            name,
            query: q,
            tcp: true,
            expect: Some(if name == "tcp" {
                |q, r| answer(q, r, SOA, 1)
            } else {
                |q, r| answer(q, r, TXT, 12)
            }),
        });
    }
    v
}

fn judge(check: &Check, outcome: &Outcome) -> Result<(), String> {
    match (check.expect, outcome) {
        (None, Outcome::Silent) => Ok(()),
        (None, other) => Err(format!("expected no reply, got {}", other.summary())),
        (Some(_), Outcome::Silent) => Err("no reply".into()),
        (Some(_), Outcome::Malformed(e)) => Err(format!("malformed reply: {e}")),
        (Some(expect), Outcome::Reply(r)) => expect(&check.query, r),
    }
}

#[test]
fn nolist_and_nsd_against_the_rfcs() {
    let Some(pair) = Pair::start() else { return };
    let mut failures = Vec::new();
    let mut report = Vec::new();
    for check in checks() {
        let packet = check.query.bytes();
        let [(_, ours), (_, theirs)] = pair.servers(check.tcp);
        let send = |addr| {
            Outcome::of(if check.tcp {
                tcp(addr, &packet)
            } else {
                udp(addr, &packet)
            })
        };
        let (ours, theirs) = (send(ours), send(theirs));
        if let Err(e) = judge(&check, &ours) {
            failures.push(format!(
                "nolist fails {}: {e} ({})",
                check.name,
                ours.summary()
            ));
        }
        let departure = NSD_DEPARTURES.iter().find(|d| d.0 == check.name);
        match (judge(&check, &theirs), departure) {
            (Ok(()), None) => {}
            (Ok(()), Some(_)) => report.push(format!(
                "{}: NSD now follows the RFC; drop it from NSD_DEPARTURES and docs/serve.md",
                check.name
            )),
            (Err(e), Some((_, why))) => report.push(format!("{}: NSD {e} ({why})", check.name)),
            (Err(e), None) => failures.push(format!(
                "NSD fails {}: {e} ({}): a new NSD departure, or a wrong check",
                check.name,
                theirs.summary()
            )),
        }
        if ours.summary() != theirs.summary() {
            report.push(format!(
                "{:<20} nolist: {}\n{:<20} nsd:    {}",
                check.name,
                ours.summary(),
                "",
                theirs.summary()
            ));
        }
    }
    eprintln!(
        "differences between nolist serve and NSD:\n{}",
        report.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A change to a query.
type Variant = fn(Query) -> Query;

/// The UDP answer cache (one per worker) must answer like the catalog:
/// the client's ID and spelling of the name (0x20), its DO bit, EDNS or not.
/// Each query is repeated so that every worker answers it from its cache.
#[test]
fn cached_answers_echo_case_do_bit_and_edns() {
    let Some(pair) = Pair::start() else { return };
    let spellings = ["example.com", "ExAmPlE.cOm", "EXAMPLE.COM", "eXaMpLe.CoM"];
    let variants: [(&str, Variant); 5] = [
        ("no EDNS", |q| q),
        ("EDNS", Query::edns),
        ("DO", Query::dnssec),
        ("EDNS 1", |q| q.version(1)),
        ("EDNS 1 and DO", |q| q.version(1).dnssec()),
    ];
    for (name, addr) in pair.servers(false) {
        for round in 0..3 {
            for (what, variant) in &variants {
                if name == "nsd" && *what == "EDNS 1 and DO" {
                    continue; // NSD_DEPARTURES: "edns1-do"
                }
                for (i, spelling) in spellings.iter().enumerate() {
                    let id = 0x1000 + u16::try_from(round * 100 + i).unwrap();
                    let q = variant(query(spelling, MX)).id(id);
                    let outcome = Outcome::of(udp(addr, &q.bytes()));
                    let Outcome::Reply(r) = &outcome else {
                        panic!("{name}, {what}, {spelling}: {}", outcome.summary());
                    };
                    let bad_version = q.edns.as_ref().is_some_and(|o| o.version > 0);
                    let verdict = if bad_version {
                        error(&q, r, BADVERS)
                    } else {
                        answer(&q, r, MX, 4)
                    };
                    verdict.unwrap_or_else(|e| {
                        panic!("{name}, {what}, {spelling}, round {round}: {e}: {r:?}")
                    });
                    assert_eq!(
                        r.question,
                        q.bytes()[12..12 + r.question.len()],
                        "{name}: the question as spelled"
                    );
                }
            }
        }
    }
}

/// Several queries in one TCP write (RFC 7766 §6.2.1.1): every one gets
/// its answer on the same connection.
#[test]
fn pipelined_tcp_queries_are_all_answered() {
    let Some(pair) = Pair::start() else { return };
    let queries = [
        query("example.com", SOA).id(1),
        query("big.example.com", TXT).id(2).edns(),
        query("nope.example.com", A).id(3),
        query("example.com", MX).id(4).dnssec(),
    ];
    let mut burst = Vec::new();
    for q in &queries {
        burst.extend_from_slice(&framed(&q.bytes()));
    }
    for (name, addr) in pair.servers(true) {
        let mut s = TcpStream::connect_timeout(&addr, WAIT).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(&burst).unwrap();
        let mut ids = BTreeSet::new();
        for _ in &queries {
            let outcome = Outcome::of(read_framed(&mut s));
            let Outcome::Reply(r) = outcome else {
                panic!("{name}: {}", outcome.summary());
            };
            ids.insert(r.id);
            let q = &queries[usize::from(r.id) - 1];
            opt(q, &r).unwrap_or_else(|e| panic!("{name}, query {}: {e}", r.id));
        }
        assert_eq!(ids, BTreeSet::from([1, 2, 3, 4]), "{name}");
    }
}

/// Every uncached query with EDNS version 1 makes hickory warn. A flood of
/// them is answered (BADVERS) but logged as one warning and a count, not
/// one line per query.
#[test]
fn a_flood_of_odd_queries_is_not_a_flood_of_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &util::read_example("base/example.com.zone"));
    // The default log filter (NOLIST_LOG unset), as in production.
    let mut server = Server::start_logging("serve", &config, &["--listen", "127.0.0.1:0"], 2, None)
        .unwrap_or_else(|log| panic!("nolist serve did not start:\n{log}"));
    let addr = server.addr("udp", false);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let total = 20_000u32;
    let mut badvers = 0u32;
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(60);
    for batch in 0..total / 100 {
        // Distinct names: none is answered from the cache.
        for i in 0..100 {
            let n = batch * 100 + i;
            let q = query(&format!("q{n}.example.com"), A)
                .version(1)
                .id(u16::try_from(n % 65536).unwrap());
            sock.send_to(&q.bytes(), addr).unwrap();
        }
        for _ in 0..100 {
            let Ok((len, _)) = sock.recv_from(&mut buf) else {
                break;
            };
            if parse(&buf[..len]).is_ok_and(|r| r.rcode == BADVERS) {
                badvers += 1;
            }
        }
        assert!(Instant::now() < deadline, "the flood took over 60 s");
    }
    assert!(
        badvers >= total * 9 / 10,
        "only {badvers} of {total} BADVERS answers"
    );
    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    // The stderr reader thread may still be reading the last lines.
    assert!(server.wait_for_log("held back", Duration::from_secs(5)));
    let log = server.log_text();
    let warnings = log.matches("edns version").count();
    assert_eq!(warnings, 1, "one warning in full:\n{log}");
    let lines = log.lines().count();
    assert!(lines < 20, "{lines} log lines:\n{log}");
    let held: u32 = log
        .split("held back ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count:\n{log}"));
    assert!(held + 1 >= badvers, "held back {held}, answered {badvers}");
}
