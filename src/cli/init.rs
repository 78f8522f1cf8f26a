//! `nolist init`: writes a first, commented config from the Postfix setup
//! (and live DNS), checks that it plans without errors, and prints the next
//! steps on stderr.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use super::{EXIT_FAILED, Failure, findings_text, print};
use crate::config::Name;
use crate::init::detect::Detected;
use crate::init::draft::{self, Header};
use crate::plan::{Plan, Severity};
use crate::resolver::Settings;

#[derive(Debug, clap::Args)]
pub(crate) struct InitArgs {
    /// Read the Postfix configuration in DIR (default /etc/postfix when given without DIR).
    #[arg(long, value_name = "DIR", num_args = 0..=1, default_missing_value = crate::init::POSTFIX_DIR)]
    pub from_postfix: Option<PathBuf>,
    /// A mail domain (repeatable); replaces the domains found in main.cf.
    #[arg(long = "domain", value_name = "NAME")]
    pub domains: Vec<String>,
    /// Write the config to FILE (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long, requires = "out")]
    pub force: bool,
    /// Ask only this nameserver (IP or IP:PORT, repeatable); default: the system resolver.
    #[arg(long, value_name = "ADDR", value_parser = parse_nameserver, conflicts_with = "no_dns")]
    pub nameserver: Vec<SocketAddr>,
    /// Do not read live DNS: the layout comes from Postfix (and guesses marked CHECK).
    #[arg(long)]
    pub no_dns: bool,
    /// The fail2ban configuration to look for a decoy jail in.
    #[arg(long, value_name = "DIR", default_value = "/etc/fail2ban")]
    pub fail2ban: PathBuf,
}

/// `IP:PORT`, or an `IP` on port 53.
fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

pub(crate) fn run(args: &InitArgs) -> Result<ExitCode, Failure> {
    if let Some(out) = &args.out
        && !args.force
        && out.exists()
    {
        return Err(Failure::Usage(format!(
            "{} exists; choose another --out or add --force to replace it",
            out.display()
        )));
    }
    let detected = match &args.from_postfix {
        Some(dir) => crate::init::read_postfix(dir).map_err(|e| Failure::Io {
            context: format!("reading the Postfix configuration in {}", dir.display()),
            source: std::io::Error::new(
                e.source.kind(),
                format!("{}: {}", e.path.display(), e.source),
            ),
        })?,
        None => Detected {
            maillog: crate::init::detect::SYSLOG_MAIL_LOG.into(),
            checks: vec![format!(
                "no Postfix configuration read (--from-postfix): the log is the Debian default and every MX host below needs checking"
            )],
            ..Detected::default()
        },
    };
    let domains = domains(args, &detected)?;
    let live = if args.no_dns {
        BTreeMap::new()
    } else {
        let settings = Settings {
            nameservers: args.nameserver.clone(),
            tcp_only: false,
            timeout: Duration::from_secs(3),
            tries: 2,
            recursion: true,
            cache: false,
            max_active_requests: None,
        };
        super::runtime()?
            .block_on(crate::init::read_live(&domains, &settings))
            .map_err(|e| Failure::Usage(format!("{e} (use --nameserver, or --no-dns)")))?
    };
    let draft = draft::draft(&detected, &domains, &live);
    let source = args.from_postfix.as_ref().map(|d| d.display().to_string());
    let text = draft::render(
        &Header {
            source: source.as_deref(),
            dns: !args.no_dns,
        },
        &detected,
        &draft,
    );
    let shown = args.out.as_deref().unwrap_or(Path::new("nolist.yaml"));
    // The config must plan: a lint error here is a case `init` does not
    // handle, reported like `plan` reports it.
    let config = crate::config::parse(&text, shown)?;
    let errors: Vec<_> = Plan::build(&config)
        .findings
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    match &args.out {
        Some(out) => super::write_all_atomically(&[(out.clone(), text)])?,
        None => print(&text)?,
    }
    let syslog_name = detected
        .decoys
        .iter()
        .find_map(|d| d.syslog_name.as_deref());
    let jails = crate::init::decoy_jails(&args.fail2ban, syslog_name);
    let config_name = shown.display().to_string();
    eprint!(
        "{}",
        crate::init::next_steps(&config_name, args.out.is_some(), &detected, &draft, &jails)
    );
    if errors.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprint!("{}", findings_text(shown, &errors));
        Ok(ExitCode::from(EXIT_FAILED))
    }
}

/// The `--domain` names, else those of main.cf, as A-labels; none is a
/// usage error.
fn domains(args: &InitArgs, detected: &Detected) -> Result<Vec<String>, Failure> {
    let given = !args.domains.is_empty();
    let names = if given {
        &args.domains
    } else {
        &detected.domains
    };
    let mut out: Vec<String> = Vec::new();
    for name in names {
        let parsed = Name::parse(name).map_err(|e| {
            Failure::Usage(if given {
                format!("--domain {name:?}: {e}")
            } else {
                format!("the domain {name:?} of main.cf: {e}; name the domains with --domain")
            })
        })?;
        let name = parsed.as_str().trim_end_matches('.').to_owned();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.is_empty() {
        return Err(Failure::Usage(match &args.from_postfix {
            Some(dir) => format!(
                "no mail domain found in {} (mydestination, relay_domains, virtual_*_domains): name them with --domain",
                dir.join("main.cf").display()
            ),
            None => "name the mail domains with --domain (or read them with --from-postfix)".into(),
        }));
    }
    Ok(out)
}
