//! `nolist verify`: check live DNS against the plan and print the report.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::ValueEnum;

use super::Failure;

#[derive(Debug, clap::Args)]
pub(crate) struct VerifyArgs {
    /// The nolist config file (YAML).
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Ask only this nameserver (repeatable); default: the system resolver.
    #[arg(long, value_name = "IP:PORT")]
    pub nameserver: Vec<SocketAddr>,
    /// Also discover each zone's NS set and ask every authoritative server directly.
    #[arg(long)]
    pub authoritative: bool,
    /// Check DNS only (skip the SMTP probes).
    #[arg(long)]
    pub dns_only: bool,
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
    /// The report as JSON.
    Json,
}

pub(crate) fn run(args: &VerifyArgs) -> Result<ExitCode, Failure> {
    let _ = args;
    Err(Failure::Usage("verify: under construction".into()))
}
