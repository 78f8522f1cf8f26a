//! `nolist verify`: check live DNS and SMTP against the plan and print the report.
//!
//! Glue only: load the config, build the plan, read the expectations off it,
//! run `verify::run` on a tokio runtime (DNS checks, then SMTP probes of
//! every MX address unless `--dns-only`), print the text table or the JSON,
//! and map the outcome to the exit code (0 nothing failed, 1 a check failed,
//! 2 config or usage error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::ValueEnum;

use super::{EXIT_FAILED, Failure, findings_text, print};
use crate::config::{self, Name};
use crate::plan::{Plan, Severity};
use crate::verify::{self, Options, SmtpOptions, report};

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Ask only this nameserver (repeatable); default: the system resolver.
    #[arg(long, value_name = "IP:PORT")]
    pub nameserver: Vec<SocketAddr>,
    /// Ask the nameservers over TCP only (default: UDP, TCP when truncated).
    #[arg(long)]
    pub tcp: bool,
    /// Also discover each zone's NS set and ask every authoritative server directly.
    #[arg(long)]
    pub authoritative: bool,
    /// The port to ask the authoritative servers on (with --authoritative).
    #[arg(
        long,
        value_name = "PORT",
        default_value_t = 53,
        requires = "authoritative"
    )]
    pub ns_port: u16,
    /// How long to wait for one DNS answer (each query is sent at most twice).
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// Check DNS only (skip the SMTP probes).
    #[arg(long)]
    pub dns_only: bool,
    /// The port every MX address is probed on.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 25,
        value_parser = clap::value_parser!(u16).range(1..),
        conflicts_with = "dns_only"
    )]
    pub smtp_port: u16,
    /// Limit for each SMTP connect and each reply (10ms to 5m).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_smtp_timeout, conflicts_with = "dns_only")]
    pub smtp_timeout: Duration,
    /// RCPT TO address for every domain (default: postmaster@<domain>).
    #[arg(long, value_name = "ADDR", value_parser = parse_rcpt, conflicts_with = "dns_only")]
    pub rcpt: Option<String>,
    /// EHLO/HELO name of the SMTP probes.
    #[arg(long, value_name = "NAME", default_value = verify::DEFAULT_HELO, value_parser = parse_helo, conflicts_with = "dns_only")]
    pub helo: String,
    /// Verify only this domain.
    #[arg(long, value_name = "NAME")]
    pub domain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = VerifyFormat::Text)]
    pub format: VerifyFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum VerifyFormat {
    /// A compact table per domain.
    Text,
    /// The report as JSON (schema nolist.verify/1).
    Json,
}

/// `500ms`, `2s`, … between 10 ms and 60 s.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(60) {
        return Err("must be between 10ms and 60s".into());
    }
    Ok(d)
}

/// `500ms`, `10s`, … between 10 ms and 5 min.
fn parse_smtp_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(10) || d > Duration::from_secs(300) {
        return Err("must be between 10ms and 5m".into());
    }
    Ok(d)
}

/// Text that goes into an SMTP command: printable ASCII, no space, no `<>`,
/// so that no argument can smuggle in a line break or a second command.
fn smtp_word(s: &str, what: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 256 {
        return Err(format!("{what} must be 1 to 256 characters"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, '<' | '>'))
    {
        return Err(format!("{what} must not contain {c:?}"));
    }
    Ok(s.to_owned())
}

/// `user@domain`, as the RCPT TO address of every probe.
fn parse_rcpt(s: &str) -> Result<String, String> {
    let s = smtp_word(s, "the address")?;
    match s.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => Ok(s),
        _ => Err("expected user@domain".into()),
    }
}

/// The EHLO name.
fn parse_helo(s: &str) -> Result<String, String> {
    smtp_word(s, "the EHLO name")
}

pub(crate) fn run(args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let config = config::load(&args.config)?;
    let plan = Plan::build(&config);
    let mut expected = verify::expectations(&plan, &config);
    if let Some(wanted) = &args.domain {
        let name = Name::parse(wanted).map_err(|e| Failure::Usage(format!("--domain: {e}")))?;
        expected.retain(|e| e.origin == name);
        if expected.is_empty() {
            return Err(Failure::Usage(format!(
                "--domain: {} is not configured in {}",
                name.as_str(),
                args.config.display()
            )));
        }
    }
    // Lint errors change what "as planned" means: show them, but verify anyway.
    let errors: Vec<_> = plan
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .filter(|f| {
            f.domain
                .as_ref()
                .is_none_or(|d| expected.iter().any(|e| &e.origin == d))
        })
        .cloned()
        .collect();
    eprint!("{}", findings_text(&args.config, &errors));

    let options = Options {
        nameservers: args.nameserver.clone(),
        authoritative: args.authoritative,
        ns_port: args.ns_port,
        timeout: args.timeout,
        dns_only: args.dns_only,
        tcp: args.tcp,
        smtp: SmtpOptions {
            port: args.smtp_port,
            timeout: args.smtp_timeout,
            helo: args.helo.clone(),
            rcpt: args.rcpt.clone(),
            ..SmtpOptions::default()
        },
        ..Options::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Failure::Io {
            context: "starting the async runtime".into(),
            source,
        })?;
    let report = runtime
        .block_on(verify::run(&expected, &options))
        .map_err(|e| Failure::Usage(e.to_string()))?;
    // Resolver background tasks may still hold sockets: do not wait for them.
    runtime.shutdown_background();

    print(&match args.format {
        VerifyFormat::Text => report::text(&report),
        VerifyFormat::Json => report::json(&report),
    })?;
    Ok(if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILED)
    })
}
