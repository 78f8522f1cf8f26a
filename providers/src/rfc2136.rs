//! `rfc2136`: dynamic UPDATE (RFC 2136) signed with TSIG (RFC 8945,
//! HMAC-SHA256 or HMAC-SHA512) to a zone's primary, over TCP, with
//! hickory-net. All changes for a zone go in **one** UPDATE message whose
//! prerequisite is that the zone's SOA exists, so the server applies all of
//! them or none. Each changed RRset is deleted and its new records added in
//! that same message. The current state is read with plain queries to the
//! primary (SOA first: a server that is not authoritative for the zone means
//! the zone is missing there).
//!
//! The key comes from a file in BIND's `key` syntax (what `tsig-keygen`
//! writes) or from an environment variable with the base64 secret, plus a
//! name and an algorithm in the config.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use hickory_net::DnsMultiplexer;
use hickory_net::client::Client;
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::DnsHandle;
use hickory_proto::op::{DnsRequest, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, MX};
use hickory_proto::rr::{DNSClass, Name as DnsName, RData, Record, RecordType as DnsType, TSigner};

use crate::{
    Change, Key, Kind, Provider, ProviderError, Rdata, RecordType, RrSet, Secret, absolute,
};

/// `kind: rfc2136`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The primary's address (UDP/TCP port 53 usually).
    pub server: SocketAddr,
    /// The TSIG key.
    pub key: KeySource,
    /// Limit for connecting and for each answer.
    pub timeout: Duration,
}

/// Where the TSIG key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// A file in BIND `key "name" { algorithm …; secret "…"; };` syntax.
    File(PathBuf),
    /// Name and algorithm from the config, the base64 secret from this
    /// environment variable.
    Env {
        /// The key's name, as the server knows it.
        name: String,
        /// The HMAC.
        algorithm: Algorithm,
        /// The variable that holds the base64 secret.
        secret_env: String,
    },
}

/// The TSIG algorithms nolist signs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// `hmac-sha256`.
    HmacSha256,
    /// `hmac-sha512`.
    HmacSha512,
}

impl Algorithm {
    /// The algorithm named `s` (`hmac-sha256`, `hmac-sha512`, any case).
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.trim_end_matches('.').to_ascii_lowercase().as_str() {
            "hmac-sha256" => Some(Algorithm::HmacSha256),
            "hmac-sha512" => Some(Algorithm::HmacSha512),
            _ => None,
        }
    }

    fn tsig(self) -> TsigAlgorithm {
        match self {
            Algorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            Algorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        }
    }
}

/// A TSIG key ready to sign with. `Debug` shows the name and algorithm only.
#[derive(Clone, PartialEq, Eq)]
pub struct TsigKey {
    /// The key's name.
    pub name: String,
    /// The HMAC.
    pub algorithm: Algorithm,
    /// The secret, decoded.
    secret: Vec<u8>,
}

impl std::fmt::Debug for TsigKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TsigKey")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("secret", &"***")
            .finish()
    }
}

impl KeySource {
    /// Reads and decodes the key.
    pub fn read(&self) -> Result<TsigKey, ProviderError> {
        match self {
            KeySource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ProviderError::Secret(format!("TSIG key file {}: {e}", path.display()))
                })?;
                parse_key_file(&text).map_err(|m| {
                    ProviderError::Secret(format!("TSIG key file {}: {m}", path.display()))
                })
            }
            KeySource::Env {
                name,
                algorithm,
                secret_env,
            } => {
                let secret = crate::SecretSource::Env(secret_env.clone()).read()?;
                Ok(TsigKey {
                    name: name.clone(),
                    algorithm: *algorithm,
                    secret: decode(&secret).map_err(|m| {
                        ProviderError::Secret(format!("environment variable {secret_env}: {m}"))
                    })?,
                })
            }
        }
    }
}

/// Why a TSIG key or an UPDATE message could not be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rfc2136Error {
    /// A key file without one of its parts (`key`, a name, `algorithm`,
    /// `secret`).
    #[error("no {0}")]
    Missing(&'static str),
    /// An algorithm nolist does not sign with.
    #[error("algorithm {0:?} is not supported (use hmac-sha256 or hmac-sha512)")]
    Algorithm(String),
    /// A secret that is not base64.
    #[error("the secret is not valid base64")]
    Secret,
    /// A name that is not a DNS name.
    #[error("{name:?} is not a DNS name: {reason}")]
    Name {
        /// As given.
        name: String,
        /// What the DNS library said.
        reason: String,
    },
}

fn decode(secret: &Secret) -> Result<Vec<u8>, Rfc2136Error> {
    data_encoding::BASE64
        .decode(secret.expose().as_bytes())
        .map_err(|_| Rfc2136Error::Secret)
}

/// Parses BIND's key syntax (the first `key` statement):
/// `key "name" { algorithm hmac-sha256; secret "base64"; };`, with `#`,
/// `//` and `/* */` comments.
pub fn parse_key_file(text: &str) -> Result<TsigKey, Rfc2136Error> {
    let mut clean = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("/*") {
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else if rest.starts_with('#') || rest.starts_with("//") {
            rest = rest.split_once('\n').map_or("", |(_, after)| after);
            clean.push('\n');
        } else {
            let c = rest.chars().next().expect("non-empty");
            clean.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    let spaced = clean
        .replace('{', " { ")
        .replace('}', " } ")
        .replace(';', " ; ");
    let tokens: Vec<&str> = spaced.split_whitespace().collect();
    let unquote = |t: &str| t.trim_matches('"').to_owned();
    let start = tokens
        .iter()
        .position(|t| *t == "key")
        .ok_or(Rfc2136Error::Missing("`key` statement"))?;
    let name = tokens
        .get(start + 1)
        .map(|t| unquote(t))
        .ok_or(Rfc2136Error::Missing("key name"))?;
    let mut algorithm = None;
    let mut secret = None;
    let mut i = start + 2;
    while i < tokens.len() && tokens[i] != "}" {
        match tokens[i] {
            "algorithm" => algorithm = tokens.get(i + 1).map(|t| unquote(t)),
            "secret" => secret = tokens.get(i + 1).map(|t| unquote(t)),
            _ => {}
        }
        i += 1;
    }
    let algorithm = algorithm.ok_or(Rfc2136Error::Missing("`algorithm`"))?;
    let algorithm =
        Algorithm::parse(&algorithm).ok_or_else(|| Rfc2136Error::Algorithm(algorithm.clone()))?;
    let secret = decode(&Secret::new(
        secret.ok_or(Rfc2136Error::Missing("`secret`"))?,
    ))?;
    Ok(TsigKey {
        name,
        algorithm,
        secret,
    })
}

/// The RFC 2136 backend.
#[derive(Debug)]
pub struct Rfc2136 {
    server: SocketAddr,
    key: TsigKey,
    timeout: Duration,
}

impl Rfc2136 {
    /// Reads the key.
    pub fn new(settings: &Settings) -> Result<Rfc2136, ProviderError> {
        Ok(Rfc2136 {
            server: settings.server,
            key: settings.key.read()?,
            timeout: settings.timeout,
        })
    }

    fn error(&self, kind: fn(String, String) -> ProviderError, message: String) -> ProviderError {
        kind(format!("rfc2136 {}", self.server), message)
    }

    fn unreachable(&self, message: impl std::fmt::Display) -> ProviderError {
        self.error(
            |provider, message| ProviderError::Unreachable { provider, message },
            message.to_string(),
        )
    }

    /// A TCP client to the primary, signing UPDATEs with the key.
    async fn client(&self) -> Result<Client<TokioRuntimeProvider>, ProviderError> {
        let signer = TSigner::new(
            self.key.secret.clone(),
            self.key.algorithm.tsig(),
            dns_name(&self.key.name).map_err(|e| ProviderError::Secret(e.to_string()))?,
            300,
        )
        .map_err(|e| ProviderError::Secret(format!("TSIG key {}: {e}", self.key.name)))?;
        let (connect, sender) = TcpClientStream::new(
            self.server,
            None,
            Some(self.timeout),
            TokioRuntimeProvider::default(),
        );
        let stream = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| self.unreachable("connect timed out"))?
            .map_err(|e| self.unreachable(e))?;
        let multiplexer = DnsMultiplexer::new(stream, sender)
            .with_timeout(self.timeout)
            .with_signer(signer);
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(client)
    }

    /// Sends `message` and returns the response.
    async fn exchange(
        &self,
        client: &Client<TokioRuntimeProvider>,
        message: Message,
    ) -> Result<Message, ProviderError> {
        let mut responses = client.send(DnsRequest::from(message));
        match responses.next().await {
            Some(Ok(response)) => Ok(response.into_message()),
            Some(Err(e)) => {
                let text = e.to_string();
                if text.to_ascii_lowercase().contains("tsig") {
                    // hickory's own words (e.g. about "truncated" MACs: a
                    // BADSIG answer carries an empty one) confuse more than
                    // they help; they go to the debug log.
                    tracing::debug!(error = %text, "TSIG verification of the answer failed");
                    Err(self.credentials(format!(
                        "the server did not accept TSIG key {:?}: its answer is not signed with it \
                         (BADKEY or BADSIG); check the key's name, algorithm and secret",
                        self.key.name
                    )))
                } else {
                    Err(self.unreachable(text))
                }
            }
            None => Err(self.unreachable("no answer")),
        }
    }

    fn credentials(&self, message: String) -> ProviderError {
        self.error(
            |provider, message| ProviderError::Credentials { provider, message },
            message,
        )
    }

    /// The error for a response code other than NOERROR.
    fn rcode_error(&self, zone: &str, rcode: ResponseCode, tsig_error: bool) -> ProviderError {
        let zone = absolute(zone);
        let provider = format!("rfc2136 {}", self.server);
        match rcode {
            ResponseCode::NotAuth if tsig_error => self.credentials(format!(
                "NOTAUTH: the server rejected TSIG key {:?} (wrong name, algorithm or secret)",
                self.key.name
            )),
            ResponseCode::NotAuth | ResponseCode::NotZone | ResponseCode::NXRRSet => {
                ProviderError::ZoneMissing {
                    provider,
                    zone,
                    message: format!("{rcode}: the server is not the primary of this zone"),
                }
            }
            ResponseCode::Refused => self.credentials(format!(
                "REFUSED: the server does not let key {:?} update {zone} (allow-update / update-policy?)",
                self.key.name
            )),
            other => ProviderError::Failed {
                provider,
                message: format!("the server answered {other}"),
            },
        }
    }

    /// One plain query.
    async fn query(
        &self,
        client: &Client<TokioRuntimeProvider>,
        name: &DnsName,
        rtype: DnsType,
    ) -> Result<Message, ProviderError> {
        let mut message = Message::query();
        message.metadata.recursion_desired = false;
        message.add_query(Query::query(name.clone(), rtype));
        self.exchange(client, message).await
    }
}

fn dns_name(name: &str) -> Result<DnsName, Rfc2136Error> {
    absolute(name).parse().map_err(|e| Rfc2136Error::Name {
        name: name.to_owned(),
        reason: format!("{e}"),
    })
}

fn dns_type(t: RecordType) -> DnsType {
    match t {
        RecordType::Mx => DnsType::MX,
        RecordType::A => DnsType::A,
        RecordType::Aaaa => DnsType::AAAA,
    }
}

fn record_data(r: &Rdata) -> Result<RData, Rfc2136Error> {
    Ok(match r {
        Rdata::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, dns_name(exchange)?)),
        Rdata::A(a) => RData::A(A(*a)),
        Rdata::Aaaa(a) => RData::AAAA(AAAA(*a)),
    })
}

/// The one UPDATE message for `changes` in `zone` (RFC 2136): zone
/// section SOA IN; prerequisite "the zone's SOA RRset exists"; per change,
/// "delete the RRset" and then "add" each new record. Pure.
pub fn update_message(zone: &str, changes: &[Change]) -> Result<Message, Rfc2136Error> {
    let origin = dns_name(zone)?;
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.message_type = MessageType::Query;
    message.metadata.recursion_desired = false;
    let mut zone_q = Query::query(origin.clone(), DnsType::SOA);
    zone_q.set_query_class(DNSClass::IN);
    message.add_query(zone_q);
    // 2.4.1 RRset exists (value independent): class ANY, TTL 0, no data.
    let mut exists = Record::update0(origin, 0, DnsType::SOA).into_record_of_rdata();
    exists.dns_class = DNSClass::ANY;
    message.add_answer(exists);
    for change in changes {
        let name = dns_name(&change.key.name)?;
        let rtype = dns_type(change.key.rtype);
        // 2.5.2 Delete an RRset: class ANY, TTL 0, no data.
        let mut delete = Record::update0(name.clone(), 0, rtype).into_record_of_rdata();
        delete.dns_class = DNSClass::ANY;
        message.add_authority(delete);
        if let Some(after) = &change.after {
            for r in &after.records {
                // 2.5.1 Add to an RRset.
                let mut add = Record::from_rdata(name.clone(), after.ttl, record_data(r)?);
                add.dns_class = DNSClass::IN;
                message.add_authority(add);
            }
        }
    }
    Ok(message)
}

#[async_trait]
impl Provider for Rfc2136 {
    fn kind(&self) -> Kind {
        Kind::Rfc2136
    }

    async fn read(&self, zone: &str, keys: &[Key]) -> Result<Vec<RrSet>, ProviderError> {
        let client = self.client().await?;
        let origin = dns_name(zone).map_err(|m| self.unreachable(m))?;
        let soa = self.query(&client, &origin, DnsType::SOA).await?;
        let has_soa = soa
            .answers
            .iter()
            .any(|r| r.name == origin && r.record_type() == DnsType::SOA);
        if soa.metadata.response_code != ResponseCode::NoError
            || !soa.metadata.authoritative
            || !has_soa
        {
            return Err(ProviderError::ZoneMissing {
                provider: format!("rfc2136 {}", self.server),
                zone: absolute(zone),
                message: format!(
                    "the server answered {} to the SOA query{}",
                    soa.metadata.response_code,
                    if soa.metadata.authoritative {
                        ""
                    } else {
                        " without authority"
                    }
                ),
            });
        }
        let mut out = Vec::new();
        for key in keys {
            let name = dns_name(&key.name).map_err(|m| self.unreachable(m))?;
            let rtype = dns_type(key.rtype);
            let answer = self.query(&client, &name, rtype).await?;
            match answer.metadata.response_code {
                ResponseCode::NoError | ResponseCode::NXDomain => {}
                other => return Err(self.rcode_error(zone, other, false)),
            }
            let mut records = BTreeSet::new();
            let mut ttl = u32::MAX;
            for r in answer.answers.iter().filter(|r| r.name == name) {
                let data = match &r.data {
                    RData::MX(mx) => Rdata::mx(mx.preference, &mx.exchange.to_ascii()),
                    RData::A(a) => Rdata::A(a.0),
                    RData::AAAA(a) => Rdata::Aaaa(a.0),
                    _ => continue,
                };
                if data.rtype() == key.rtype {
                    ttl = ttl.min(r.ttl);
                    records.insert(data);
                }
            }
            if !records.is_empty() {
                out.push(RrSet {
                    key: key.clone(),
                    ttl,
                    records,
                });
            }
        }
        Ok(out)
    }

    async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), ProviderError> {
        let message = update_message(zone, changes).map_err(|m| self.unreachable(m))?;
        let client = self.client().await?;
        let response = self.exchange(&client, message).await?;
        let rcode = response.metadata.response_code;
        if rcode == ResponseCode::NoError {
            return Ok(());
        }
        // A TSIG failure is NOTAUTH with a TSIG record that carries the error.
        Err(self.rcode_error(zone, rcode, response.signature.is_some()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "# made by tsig-keygen
key \"nolist-key\" {
\talgorithm hmac-sha256;
\tsecret \"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3I=\"; /* 32 bytes */
};
";

    #[test]
    fn bind_key_files_parse_and_never_show_the_secret() {
        let key = parse_key_file(KEY).unwrap();
        assert_eq!(key.name, "nolist-key");
        assert_eq!(key.algorithm, Algorithm::HmacSha256);
        assert_eq!(key.secret.len(), 32);
        assert!(!format!("{key:?}").contains("c2Vj"));
        assert!(
            parse_key_file("key x { algorithm hmac-md5; secret \"AA==\"; };")
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert!(
            parse_key_file("key x { algorithm hmac-sha512; secret \"***\"; };")
                .unwrap_err()
                .to_string()
                .contains("base64")
        );
        assert!(
            parse_key_file("")
                .unwrap_err()
                .to_string()
                .contains("no `key`")
        );
    }

    #[test]
    fn one_update_message_with_the_zone_prerequisite() {
        let after = RrSet {
            key: Key::new("example.org", RecordType::Mx),
            ttl: 600,
            records: [
                Rdata::mx(10, "mx01.example.org"),
                Rdata::mx(20, "mx02.example.org"),
            ]
            .into_iter()
            .collect(),
        };
        let changes = [
            Change {
                key: after.key.clone(),
                before: None,
                after: Some(after),
            },
            Change {
                key: Key::new("mx01.example.org", RecordType::Aaaa),
                before: None,
                after: None,
            },
        ];
        let m = update_message("example.org.", &changes).unwrap();
        assert_eq!(m.metadata.op_code, OpCode::Update);
        assert_eq!(m.queries.len(), 1);
        assert_eq!(m.queries[0].query_type(), DnsType::SOA);
        let pre: Vec<String> = m
            .answers
            .iter()
            .map(|r| format!("{} {} {}", r.name, r.dns_class, r.record_type()))
            .collect();
        assert_eq!(pre, ["example.org. ANY SOA"]);
        let updates: Vec<String> = m
            .authorities
            .iter()
            .map(|r| format!("{} {} {} {}", r.name, r.dns_class, r.ttl, r.record_type()))
            .collect();
        assert_eq!(
            updates,
            [
                "example.org. ANY 0 MX",
                "example.org. IN 600 MX",
                "example.org. IN 600 MX",
                "mx01.example.org. ANY 0 AAAA",
            ]
        );
    }
}
