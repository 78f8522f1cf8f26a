//! `nolist probe`: one SMTP dialogue up to RCPT per address of a host,
//! printed as a transcript or JSON. Never sends DATA.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use clap::ValueEnum;
use serde::Serialize;

use super::{EXIT_FAILED, Failure, print};
use crate::smtp::probe::{self, Outcome, ProbeOptions, ProbeReport};

#[derive(Debug, clap::Args)]
pub(crate) struct ProbeArgs {
    /// HOST, HOST:PORT, IP, IP:PORT or [IPv6]:PORT (port 25 by default).
    #[arg(value_name = "HOST[:PORT]")]
    pub target: String,
    /// RCPT TO address (default: postmaster at the host).
    #[arg(long, value_name = "ADDR")]
    pub rcpt: Option<String>,
    /// EHLO/HELO name.
    #[arg(long, value_name = "NAME", default_value = "nolist-probe.invalid")]
    pub helo: String,
    /// MAIL FROM address; empty for the null sender.
    #[arg(long, value_name = "ADDR", default_value = "")]
    pub mail_from: String,
    /// Limit for the connect and for each reply.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ProbeFormat::Text)]
    pub format: ProbeFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProbeFormat {
    /// A swaks-style transcript.
    Text,
    /// JSON (schema `nolist.probe/1`).
    Json,
}

#[derive(Serialize)]
struct JsonProbes<'a> {
    schema: &'static str,
    probes: &'a [ProbeReport],
}

/// Splits `target` into a host and a port (25 unless given).
fn split_target(target: &str) -> Result<(String, u16), Failure> {
    if let Ok(addr) = target.parse::<SocketAddr>() {
        return Ok((addr.ip().to_string(), addr.port()));
    }
    if let Ok(ip) = target
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok((ip.to_string(), 25));
    }
    match target.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => port
            .parse()
            .map(|p| (host.to_owned(), p))
            .map_err(|_| Failure::Usage(format!("probe: invalid port in {target:?}"))),
        _ => Ok((target.to_owned(), 25)),
    }
}

pub(crate) fn run(args: &ProbeArgs) -> Result<ExitCode, Failure> {
    let (host, port) = split_target(&args.target)?;
    let rcpt = args
        .rcpt
        .clone()
        .unwrap_or_else(|| match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(ip)) => format!("postmaster@[IPv6:{ip}]"),
            Ok(ip) => format!("postmaster@[{ip}]"),
            Err(_) => format!("postmaster@{host}"),
        });
    let check = |what: &str, value: &str| {
        probe::check_argument(what, value).map_err(|e| Failure::Usage(format!("probe: {e}")))
    };
    check("--helo", &args.helo)?;
    check("--rcpt", &rcpt)?;
    if !args.mail_from.is_empty() {
        check("--mail-from", &args.mail_from)?;
    }
    let options = ProbeOptions {
        helo: args.helo.clone(),
        mail_from: args.mail_from.clone(),
        rcpt,
        timeout: args.timeout,
    };
    let reports = super::runtime()?.block_on(async {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Failure::Usage(format!("probe: cannot resolve {host}: {e}")))?
            .collect();
        let mut reports = Vec::with_capacity(addrs.len());
        for addr in addrs {
            reports.push(probe::probe(addr, &options).await);
        }
        Ok::<_, Failure>(reports)
    })?;
    match args.format {
        ProbeFormat::Text => {
            let text: Vec<String> = reports.iter().map(probe::transcript_text).collect();
            print(&text.join("\n"))?;
        }
        ProbeFormat::Json => {
            let doc = JsonProbes {
                schema: "nolist.probe/1",
                probes: &reports,
            };
            let mut s = serde_json::to_string_pretty(&doc).unwrap_or_default();
            s.push('\n');
            print(&s)?;
        }
    }
    let all_talked = !reports.is_empty() && reports.iter().all(|r| r.outcome == Outcome::Completed);
    Ok(if all_talked {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}
