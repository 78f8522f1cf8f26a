//! The authoritative server: bounded UDP and TCP loops in front of hickory's
//! catalog, with nolist's policy (AXFR allow list, UPDATE/NOTIFY refused,
//! responses never answered) applied before a query reaches the catalog.
//! A plain UDP query into the blocklist zone is answered before any of
//! that, straight from its bytes ([`super::fast`]).
//!
//! The zones live in an immutable [`Snapshot`]; a reload builds a new one
//! and swaps it in atomically, so a query sees either the old or the new
//! zones, never a mix.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};
use std::time::Duration;

use hickory_net::runtime::TokioTime;
use hickory_net::xfer::Protocol;
use hickory_proto::op::{Edns, Header, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponse, MessageResponseBuilder, Queries, ZoneHandler,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cache::{AnswerCache, CacheKey};
use super::zone::{ZoneData, ZoneError};
use super::{fast, wire};
use crate::clock::unix_now;
use crate::config::Cidr;
use crate::dnsbl::Served;

/// Largest UDP query read; anything longer is cut and answered FORMERR.
const MAX_UDP_QUERY: usize = 4096;
/// Answers each UDP worker keeps (a few hundred KiB at most).
const ANSWER_CACHE_ENTRIES: usize = 4096;

/// The zones being served and the policy that applies to them.
pub struct Snapshot {
    catalog: Catalog,
    zones: Vec<ZoneData>,
    axfr_allow: Vec<Cidr>,
    /// The blocklist zone, answered before the catalog from its live
    /// listings (never from the UDP answer cache).
    dnsbl: Option<Served>,
}

impl Snapshot {
    /// Builds the catalog for `zones`.
    pub fn new(zones: Vec<ZoneData>, axfr_allow: Vec<Cidr>) -> Result<Snapshot, ZoneError> {
        let mut catalog = Catalog::new();
        for zone in &zones {
            // The allow list is enforced before the catalog sees a transfer request.
            let handler = zone.handler(AxfrPolicy::AllowAll)?;
            let handler: Arc<dyn ZoneHandler> = Arc::new(handler);
            catalog.upsert(LowerName::new(&zone.origin), vec![handler]);
        }
        Ok(Snapshot {
            catalog,
            zones,
            axfr_allow,
            dnsbl: None,
        })
    }

    /// The snapshot serving the blocklist zone `served` too.
    #[must_use]
    pub fn with_dnsbl(mut self, served: Served) -> Snapshot {
        self.dnsbl = Some(served);
        self
    }

    /// The blocklist zone, if one is served.
    pub fn dnsbl(&self) -> Option<&Served> {
        self.dnsbl.as_ref()
    }

    /// The zones, as built.
    pub fn zones(&self) -> &[ZoneData] {
        &self.zones
    }
}

/// Answers DNS messages from the current snapshot.
pub struct Authority {
    current: RwLock<Arc<Snapshot>>,
}

impl Authority {
    /// An authority serving `snapshot`.
    pub fn new(snapshot: Snapshot) -> Authority {
        Authority {
            current: RwLock::new(Arc::new(snapshot)),
        }
    }

    /// The snapshot being served.
    pub fn current(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the snapshot; queries already running finish on the old one.
    pub fn swap(&self, snapshot: Snapshot) {
        let new = Arc::new(snapshot);
        match self.current.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// The wire responses to one query packet (none: drop it silently).
    pub async fn answer(&self, packet: &[u8], src: SocketAddr, protocol: Protocol) -> Vec<Vec<u8>> {
        answer(&self.current(), packet, src, protocol).await.0
    }
}

/// The wire responses to one query packet from `snapshot`'s zones, and
/// whether they may be cached for the snapshot's lifetime (not the
/// blocklist's: its listings change without a new snapshot).
async fn answer(
    snapshot: &Snapshot,
    packet: &[u8],
    src: SocketAddr,
    protocol: Protocol,
) -> (Vec<Vec<u8>>, bool) {
    let request = match Request::from_bytes(packet.to_vec(), src, protocol) {
        Ok(request) => request,
        Err(_) => return (unparsable(packet).into_iter().collect(), true),
    };
    // Never answer a response: that is how reflection loops start.
    if request.metadata.message_type == MessageType::Response {
        return (Vec::new(), true);
    }
    (
        from_request(snapshot, &request, src, protocol).await,
        !snapshot.owns(&request),
    )
}

impl Snapshot {
    /// Whether `request` asks the blocklist zone.
    fn owns(&self, request: &Request) -> bool {
        match (&self.dnsbl, request.queries.queries()) {
            (Some(bl), [q]) => bl.zone.owns(q.name()),
            _ => false,
        }
    }
}

/// The wire responses to a parsed query.
async fn from_request(
    snapshot: &Snapshot,
    request: &Request,
    src: SocketAddr,
    protocol: Protocol,
) -> Vec<Vec<u8>> {
    let edns = response_edns(request);
    match request.metadata.op_code {
        OpCode::Query => {}
        // The zones come from the config, not the wire.
        OpCode::Update | OpCode::Notify => {
            return error_response(request, ResponseCode::Refused, edns);
        }
        // IQUERY (obsolete), STATUS, DSO and unassigned ones: we do not
        // know what their sections mean, so none is echoed.
        _ => return not_implemented(request, edns),
    }
    // Only class IN is served; CH, HS, ANY and the rest would otherwise
    // get the IN zones' data.
    if request
        .queries
        .queries()
        .iter()
        .any(|q| q.query_class() != DNSClass::IN)
    {
        return error_response(request, ResponseCode::Refused, edns);
    }
    let limit = match protocol {
        Protocol::Udp => request.max_payload().min(UDP_PAYLOAD),
        _ => u16::MAX,
    };
    if let (Some(bl), true) = (&snapshot.dnsbl, snapshot.owns(request)) {
        // RFC 6891 §6.1.3: an EDNS version we do not speak gets BADVERS,
        // as the catalog answers for the planned zones.
        if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            return error_response(request, ResponseCode::BADVERS, edns);
        }
        return dnsbl_response(bl, request, edns, usize::from(limit));
    }
    let transfer = request
        .queries
        .queries()
        .iter()
        .any(|q| matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR));
    if transfer
        && (protocol != Protocol::Tcp || !snapshot.axfr_allow.iter().any(|n| n.contains(&src.ip())))
    {
        return error_response(request, ResponseCode::Refused, edns);
    }
    let capture = Capture::new(usize::from(limit), edns);
    snapshot
        .catalog
        .handle_request::<_, TokioTime>(request, capture.clone())
        .await;
    let out = capture.take();
    if out.failed && out.messages.is_empty() {
        return truncated(request, edns);
    }
    out.messages
}

/// The blocklist zone's answer to `request` (one question, in the zone),
/// fitted to `limit` bytes like the catalog's.
fn dnsbl_response(
    served: &Served,
    request: &Request,
    edns: Option<&'static Edns>,
    limit: usize,
) -> Vec<Vec<u8>> {
    let Some(q) = request.queries.queries().first() else {
        return Vec::new();
    };
    let reply = served.answer(q.original().name(), q.query_type(), unix_now());
    dnsbl_counted(&reply);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = reply.code != ResponseCode::Refused;
    metadata.response_code = reply.code;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    let response = builder.build(
        metadata,
        reply.answers.iter(),
        reply.authority.iter(),
        std::iter::empty(),
        std::iter::empty(),
    );
    match encode(response).and_then(|(_, bytes)| wire::fit(bytes, limit)) {
        Some(bytes) => vec![bytes],
        None => truncated(request, edns),
    }
}

/// Counts a DNSBL answer of the hickory path by its kind.
fn dnsbl_counted(reply: &crate::dnsbl::Reply) {
    let i = match (reply.code, reply.answers.is_empty()) {
        (ResponseCode::NoError, false) => fast::Kind::Records as usize,
        (ResponseCode::NoError, true) => fast::Kind::NoData as usize,
        (ResponseCode::NXDomain, _) => fast::Kind::NxDomain as usize,
        _ => 3,
    };
    dnsbl_count(i);
}

/// Counts a DNSBL answer: `i` indexes records, nodata, nxdomain, refused
/// (handles made once: a blocklist takes many queries per second).
fn dnsbl_count(i: usize) {
    static COUNTERS: LazyLock<[metrics::Counter; 4]> = LazyLock::new(|| {
        ["records", "nodata", "nxdomain", "refused"]
            .map(|a| metrics::counter!(crate::metrics::DNSBL_QUERIES, "answer" => a))
    });
    COUNTERS[i].increment(1);
}

/// The blocklist's answer to `packet` written by the wire fast path into
/// `out`, counted; `false` when the packet is not of its shape (see
/// [`fast`]) and takes the hickory path.
fn dnsbl_fast(snapshot: &Snapshot, packet: &[u8], out: &mut Vec<u8>) -> bool {
    let Some(served) = &snapshot.dnsbl else {
        return false;
    };
    match fast::answer(served, packet, unix_now(), UDP_PAYLOAD, out) {
        Some(kind) => {
            dnsbl_count(kind as usize);
            true
        }
        None => false,
    }
}

/// The largest UDP answer we send to an EDNS client (the DNS flag day 2020
/// value, NSD's default): larger ones risk IP fragmentation. It is also the
/// payload size our OPT record advertises.
const UDP_PAYLOAD: u16 = 1232;

/// The OPT record of an answer to `request`, which has one only when the
/// query has one (RFC 6891 §6.1.1): EDNS version 0, our UDP payload size,
/// and the query's DO bit (RFC 3225 §3: it MUST be copied, signed zone or
/// not). hickory builds its own, which echoes the client's payload size and
/// copies DO only when built with DNSSEC support; the [`Capture`] puts this
/// one in its place. Static, because a `MessageResponse` borrows its OPT.
fn response_edns(request: &Request) -> Option<&'static Edns> {
    static PLAIN: LazyLock<Edns> = LazyLock::new(|| our_edns(false));
    static DNSSEC_OK: LazyLock<Edns> = LazyLock::new(|| our_edns(true));
    let dnssec_ok = request.edns.as_ref()?.flags().dnssec_ok;
    Some(if dnssec_ok { &DNSSEC_OK } else { &PLAIN })
}

fn our_edns(dnssec_ok: bool) -> Edns {
    let mut edns = Edns::new();
    edns.set_version(0)
        .set_max_payload(UDP_PAYLOAD)
        .set_dnssec_ok(dnssec_ok);
    edns
}

/// A `ResponseHandler` that encodes responses into buffers instead of
/// sending them, each fitted to `limit` bytes (see [`wire::fit`]).
#[derive(Clone)]
struct Capture {
    limit: usize,
    edns: Option<&'static Edns>,
    out: Arc<Mutex<Captured>>,
}

#[derive(Default)]
struct Captured {
    messages: Vec<Vec<u8>>,
    /// A response could not be encoded (or was not well formed).
    failed: bool,
}

impl Capture {
    fn new(limit: usize, edns: Option<&'static Edns>) -> Capture {
        Capture {
            limit,
            edns,
            out: Arc::new(Mutex::new(Captured::default())),
        }
    }

    fn take(&self) -> Captured {
        match self.out.lock() {
            Ok(mut guard) => std::mem::take(&mut *guard),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        }
    }
}

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        mut response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        if let Some(edns) = self.edns {
            response.set_edns(edns);
        }
        // Encoded whole (a DNS message is at most 64 KiB), then fitted:
        // hickory's own truncation leaves a partial record behind.
        let encoded = encode(response);
        let fitted = encoded.and_then(|(info, bytes)| Some((info, wire::fit(bytes, self.limit)?)));
        let mut out = match self.out.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        match fitted {
            Some((info, bytes)) => {
                out.messages.push(bytes);
                Ok(info)
            }
            None => {
                out.failed = true;
                Err(NetError::from("response could not be encoded"))
            }
        }
    }
}

/// The wire form of `response`, at most 64 KiB; `None` when it is larger.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Option<(ResponseInfo, Vec<u8>)> {
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(u16::MAX);
    let info = response.destructive_emit(&mut encoder).ok()?;
    // A record that hit the limit leaves its partial bytes past the offset.
    let end = encoder.offset();
    bytes.truncate(end);
    (!info.truncation).then_some((info, bytes))
}

/// An empty response with `code`, echoing the question.
fn error_response(
    request: &Request,
    code: ResponseCode,
    edns: Option<&'static Edns>,
) -> Vec<Vec<u8>> {
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    encode(builder.error_msg(&request.metadata, code))
        .map(|(_, bytes)| bytes)
        .into_iter()
        .collect()
}

/// NOTIMP for an opcode we do not implement: the header and the OPT record
/// only, since the sections of an unknown opcode need not be a question.
fn not_implemented(request: &Request, edns: Option<&'static Edns>) -> Vec<Vec<u8>> {
    let Ok(none) = Queries::read(&mut BinDecoder::new(&[]), 0) else {
        return Vec::new();
    };
    let builder = MessageResponseBuilder::new(&none, edns);
    encode(builder.error_msg(&request.metadata, ResponseCode::NotImp))
        .map(|(_, bytes)| bytes)
        .into_iter()
        .collect()
}

/// The question with TC set: the answer does not fit, retry over TCP.
fn truncated(request: &Request, edns: Option<&'static Edns>) -> Vec<Vec<u8>> {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.authoritative = true;
    metadata.truncation = true;
    let builder = MessageResponseBuilder::new(&request.queries, edns);
    let response = builder.build_no_records(metadata);
    let mut bytes = Vec::with_capacity(64);
    let mut encoder = BinEncoder::new(&mut bytes);
    match response.destructive_emit(&mut encoder) {
        Ok(_) => vec![bytes],
        Err(_) => Vec::new(),
    }
}

/// The answer to a packet whose body does not parse: FORMERR, or NOTIMP for
/// an opcode we do not implement (its body need not look like a query),
/// header only. Nothing for a packet too short to have a header, or that
/// is itself a response.
fn unparsable(packet: &[u8]) -> Option<Vec<u8>> {
    let header = Header::read(&mut BinDecoder::new(packet)).ok()?;
    if header.metadata.message_type == MessageType::Response {
        return None;
    }
    let mut metadata = Metadata::response_from_request(&header.metadata);
    metadata.response_code = match header.metadata.op_code {
        OpCode::Query | OpCode::Update | OpCode::Notify => ResponseCode::FormErr,
        _ => ResponseCode::NotImp,
    };
    let reply = Header {
        metadata,
        counts: Default::default(),
    };
    reply.to_bytes().ok()
}

/// Limits for the TCP side.
#[derive(Clone, Copy, Debug)]
pub struct TcpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Idle time after which a connection is closed.
    pub idle_timeout: Duration,
}

/// Bound sockets, one UDP and one TCP per listen address, on the same port.
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    /// Binds UDP and TCP on every address; port 0 picks one free port for both.
    pub async fn bind(addrs: &[SocketAddr]) -> io::Result<Listeners> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for addr in addrs {
            let (u, t) = bind_pair(*addr).await?;
            udp.push(u);
            tcp.push(t);
        }
        Ok(Listeners { udp, tcp })
    }

    /// `("udp" | "tcp", address)` for every bound socket, with real ports.
    pub fn local_addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let udp = self
            .udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| ("udp", a));
        let tcp = self
            .tcp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .map(|a| ("tcp", a));
        udp.chain(tcp).collect()
    }

    /// Serves until `shutdown` is cancelled, then drains open TCP
    /// connections for at most `drain` before returning.
    pub async fn serve(
        self,
        authority: Arc<Authority>,
        limits: TcpLimits,
        shutdown: CancellationToken,
        drain: Duration,
    ) {
        let tracker = TaskTracker::new();
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        for socket in self.udp {
            let socket = Arc::new(socket);
            for _ in 0..workers {
                tracker.spawn(udp_worker(
                    socket.clone(),
                    authority.clone(),
                    shutdown.clone(),
                ));
            }
        }
        // One connection budget for all TCP listeners together.
        let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
        for listener in self.tcp {
            tracker.spawn(tcp_accept(
                listener,
                authority.clone(),
                limits,
                slots.clone(),
                shutdown.clone(),
                tracker.clone(),
            ));
        }
        tracker.close();
        shutdown.cancelled().await;
        let _ = tokio::time::timeout(drain, tracker.wait()).await;
    }
}

/// Socket buffer for UDP: bursts queue here instead of being dropped
/// (the kernel caps it at net.core.rmem_max / wmem_max).
const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket with large buffers, bound to `addr`.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol as SockProtocol, Socket, Type};
    let socket = Socket::new(
        Domain::for_address(addr),
        Type::DGRAM,
        Some(SockProtocol::UDP),
    )?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means earlier drops under load.
    let _ = socket.set_recv_buffer_size(UDP_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((bind_udp(addr)?, TcpListener::bind(addr).await?));
    }
    // Port 0: take a free TCP port, then the same UDP port (retry if taken).
    let mut last = None;
    for _ in 0..16 {
        let tcp = TcpListener::bind(addr).await?;
        match bind_udp(tcp.local_addr()?) {
            Ok(udp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

async fn udp_worker(
    socket: Arc<UdpSocket>,
    authority: Arc<Authority>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    let mut cache = AnswerCache::new(ANSWER_CACHE_ENTRIES);
    // Weak: a worker must not keep a swapped-out snapshot alive until its
    // next packet (it held one whole snapshot after every reload).
    let mut cached_for: Weak<Snapshot> = Weak::new();
    let mut reply = Vec::with_capacity(512);
    // Fetched once: counting is then one atomic add per query.
    let queries = metrics::counter!(crate::metrics::DNS_QUERIES, "proto" => "udp");
    let responses = Responses::new("udp");
    loop {
        let received = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            () = shutdown.cancelled() => return,
        };
        let (len, src) = match received {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "udp receive failed");
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let packet = &buf[..len];
        queries.increment(1);
        let snapshot = authority.current();
        // The Weak keeps the allocation, so the address cannot be reused.
        if !std::ptr::eq(cached_for.as_ptr(), Arc::as_ptr(&snapshot)) {
            cache.clear();
            cached_for = Arc::downgrade(&snapshot);
        }
        if dnsbl_fast(&snapshot, packet, &mut reply) {
            send(&socket, &reply, src, &responses).await;
            continue;
        }
        let key = CacheKey::of(packet);
        if let Some(key) = &key
            && cache.answer(key, packet, &mut reply)
        {
            send(&socket, &reply, src, &responses).await;
            continue;
        }
        let (replies, cacheable) = answer(&snapshot, packet, src, Protocol::Udp).await;
        if let (Some(key), [one], true) = (key, replies.as_slice(), cacheable) {
            cache.store(key, one);
        }
        for r in &replies {
            send(&socket, r, src, &responses).await;
        }
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], src: SocketAddr, responses: &Responses) {
    match socket.send_to(reply, src).await {
        Ok(_) => responses.count(reply),
        Err(e) => tracing::debug!(error = %e, %src, "udp send failed"),
    }
}

/// `nolist_dns_responses_total` of one transport, one counter per RCODE
/// label, fetched once: counting a response is one atomic add.
struct Responses([metrics::Counter; crate::metrics::RCODES.len()]);

impl Responses {
    fn new(proto: &'static str) -> Responses {
        Responses(crate::metrics::RCODES.map(|rcode| {
            metrics::counter!(crate::metrics::DNS_RESPONSES, "proto" => proto, "rcode" => rcode)
        }))
    }

    /// Counts `reply` under its header's RCODE (an extended RCODE, in
    /// the OPT record, is counted by its low four bits).
    fn count(&self, reply: &[u8]) {
        let rcode = reply.get(3).map_or(usize::MAX, |b| usize::from(b & 0x0f));
        self.0[rcode.min(self.0.len() - 1)].increment(1);
    }
}

async fn tcp_accept(
    listener: TcpListener,
    authority: Arc<Authority>,
    limits: TcpLimits,
    slots: Arc<Semaphore>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let (stream, src) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // The slot is taken after the accept, so an idle listener holds
        // none (with more listeners than slots, one that held a slot while
        // waiting would starve the others). A full server stops accepting:
        // this connection waits here for a slot, the next ones in the
        // kernel's backlog.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = shutdown.cancelled() => return,
        };
        let authority = authority.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            tcp_connection(stream, src, &authority, limits.idle_timeout, &shutdown).await;
        });
    }
}

async fn tcp_connection(
    mut stream: TcpStream,
    src: SocketAddr,
    authority: &Authority,
    idle: Duration,
    shutdown: &CancellationToken,
) {
    let mut message = Vec::new();
    let responses = Responses::new("tcp");
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            r = tokio::time::timeout(idle, stream.read_exact(&mut len)) => r,
            () = shutdown.cancelled() => return,
        };
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        message.resize(usize::from(u16::from_be_bytes(len)), 0);
        if !matches!(
            tokio::time::timeout(idle, stream.read_exact(&mut message)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        metrics::counter!(crate::metrics::DNS_QUERIES, "proto" => "tcp").increment(1);
        for reply in authority.answer(&message, src, Protocol::Tcp).await {
            let Ok(n) = u16::try_from(reply.len()) else {
                continue;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&reply);
            if !matches!(
                tokio::time::timeout(idle, stream.write_all(&framed)).await,
                Ok(Ok(()))
            ) {
                return;
            }
            responses.count(&reply);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Responses;
    use crate::metrics::Registry;

    #[test]
    fn responses_are_counted_by_their_rcode() {
        let registry = Registry::default();
        metrics::with_local_recorder(&registry, || {
            let responses = Responses::new("udp");
            // Header bytes 2-3: QR, then the RCODE in the low four bits.
            for byte3 in [0x80, 0x83, 0x83, 0x85, 0x89] {
                responses.count(&[0, 1, 0x84, byte3]);
            }
            responses.count(&[0, 1]);
        });
        let text = registry.render();
        for (rcode, n) in [
            ("noerror", 1),
            ("nxdomain", 2),
            ("refused", 1),
            ("other", 2),
        ] {
            let line = format!("nolist_dns_responses_total{{proto=\"udp\",rcode=\"{rcode}\"}} {n}");
            assert!(text.contains(&line), "{line}\n{text}");
        }
    }
}
