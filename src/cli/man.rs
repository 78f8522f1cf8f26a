//! `nolist completions` and the hidden `nolist manpages`: shell completion
//! scripts and manual pages generated from the clap definitions, so they
//! cannot drift from `--help`, and `nolist.yaml(5)` converted from the
//! config reference (markdown) compiled into the binary.
//!
//! Pages: `nolist(1)`, one `nolist-<command>(1)` per subcommand and one
//! `nolist-<command>-<action>(1)` per nested subcommand (`nolist-bans-add`),
//! the names clap_mangen gives in its SUBCOMMANDS lists.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, ValueEnum};

use super::{Cli, Failure, print, write_all_atomically};

/// The config reference: the section under the heading named
/// `Configuration` (at any level) of this markdown file. Switching the
/// source file is this one line.
const CONFIG_REFERENCE: &str = include_str!("../../docs/config.md");

/// The version in every page's footer.
const SOURCE: &str = concat!("nolist ", env!("CARGO_PKG_VERSION"));

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to write the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells nolist writes completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Shell {
    /// Bash (bash-completion).
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManpagesArgs {
    /// Write the pages into DIR (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `nolist completions SHELL`: the script on standard output.
pub(crate) fn completions(args: &CompletionsArgs) -> Result<ExitCode, Failure> {
    print(&completion_script(args.shell))?;
    Ok(ExitCode::SUCCESS)
}

/// The completion script for `shell`.
fn completion_script(shell: Shell) -> String {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "nolist", &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The clap tree without its hidden subcommands: clap_complete offers
/// hidden ones too (`manpages`), and clap has no way to remove one, so the
/// top command is rebuilt from the visible ones (it has no arguments of
/// its own but `--help` and `--version`).
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .cloned()
        .collect();
    let mut top = clap::Command::new("nolist")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        top = top.about(about.clone());
    }
    if let Some(long_about) = full.get_long_about() {
        top = top.long_about(long_about.clone());
    }
    top
}

/// `nolist manpages --out DIR`: writes every page and lists them.
pub(crate) fn manpages(args: &ManpagesArgs) -> Result<ExitCode, Failure> {
    std::fs::create_dir_all(&args.out).map_err(|source| Failure::Io {
        context: format!("creating {}", args.out.display()),
        source,
    })?;
    let files: Vec<(PathBuf, String)> = pages()
        .into_iter()
        .map(|(name, text)| (args.out.join(name), text))
        .collect();
    write_all_atomically(&files)?;
    let list: String = files
        .iter()
        .map(|(path, _)| format!("{}\n", path.display()))
        .collect();
    print(&list)?;
    Ok(ExitCode::SUCCESS)
}

/// Every page as `(file name, roff text)`: `nolist.1`, the subcommands'
/// pages, `nolist.yaml.5`. Hidden subcommands (this generator) get none.
/// Dated by `SOURCE_DATE_EPOCH` when set (reproducible builds; `scripts/deb`
/// sets it to the last commit's time), undated otherwise.
fn pages() -> Vec<(String, String)> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let date = page_date(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref());
    let mut pages = Vec::new();
    command_pages(&cmd, &date, &mut pages);
    pages.push((
        "nolist.yaml.5".to_owned(),
        config_page(CONFIG_REFERENCE, &date),
    ));
    pages
}

/// The date of the pages' footer for `SOURCE_DATE_EPOCH` (Unix seconds):
/// `YYYY-MM-DD` in UTC, or empty without a valid one.
fn page_date(epoch: Option<&str>) -> String {
    epoch
        .and_then(|e| e.trim().parse::<i64>().ok())
        .and_then(|secs| jiff::Timestamp::from_second(secs).ok())
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The page of `cmd` and of each of its visible subcommands, depth first.
fn command_pages(cmd: &clap::Command, date: &str, pages: &mut Vec<(String, String)>) {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    // Rendering into a Vec cannot fail.
    let _ = man.render(&mut out);
    let text = String::from_utf8_lossy(&out);
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name());
    let mut page = String::with_capacity(text.len() + 200);
    for line in text.lines() {
        // clap_mangen leaves the date out instead of writing `""`, which
        // shifts the source and manual into the wrong fields of the footer.
        if line.starts_with(".TH ") {
            let _ = writeln!(
                page,
                ".TH {name} 1 \"{date}\" \"{SOURCE}\" \"nolist manual\""
            );
        } else {
            page.push_str(line);
            page.push('\n');
        }
    }
    page.push_str(&see_also(name));
    pages.push((man.get_filename(), ascii_roff(&page)));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        command_pages(sub, date, pages);
    }
}

/// A SEE ALSO section for the page of command `name` (`nolist-bans-add`):
/// the parent command's page, so a reader can go up from any page, and the
/// config file's.
fn see_also(name: &str) -> String {
    let parent = name.rsplit_once('-').map(|(parent, _)| parent);
    let refs = match parent {
        Some(parent) => format!(
            "\\fB{}\\fR(1), \\fBnolist.yaml\\fR(5)",
            parent.replace('-', "\\-")
        ),
        None => "\\fBnolist.yaml\\fR(5)".to_owned(),
    };
    format!(".SH \"SEE ALSO\"\n{refs}\n")
}

/// `text` with every non-ASCII character as groff's `\[uXXXX]` escape:
/// groff reads its input as Latin-1 unless told otherwise, and the help
/// texts and the reference use `…`, `≥`, `→`.
fn ascii_roff(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let _ = write!(out, "\\[u{:04X}]", u32::from(c));
        }
    }
    out
}

/// `nolist.yaml(5)`: the Configuration section of `markdown` as a page.
fn config_page(markdown: &str, date: &str) -> String {
    let body = config_section(markdown).map_or_else(
        || "The configuration reference is missing from this build.\n".to_owned(),
        markdown_to_roff,
    );
    let text = format!(
        ".TH nolist.yaml 5 \"{date}\" \"{SOURCE}\" \"nolist manual\"\n\
         .SH NAME\n\
         nolist.yaml \\- the nolist configuration file\n\
         .SH SYNOPSIS\n\
         \\fB/etc/nolist/nolist.yaml\\fR (the packaged path; every command takes \\fB\\-c\\fR \\fIFILE\\fR)\n\
         .SH DESCRIPTION\n\
         {body}\
         .SH \"SEE ALSO\"\n\
         \\fBnolist\\fR(1), \\fBnolist\\-plan\\fR(1), \\fBnolist\\-run\\fR(1)\n"
    );
    ascii_roff(&text)
}

/// A markdown ATX heading's level and text (`## Keys` → `(2, "Keys")`).
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    let text = line[level..].strip_prefix(' ')?;
    (1..=6).contains(&level).then_some((level, text.trim()))
}

/// Whether `line` opens or closes a fenced code block.
fn is_fence(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("```") || line.starts_with("~~~")
}

/// The lines under the heading named `Configuration` (at any level) up to
/// the next heading of the same or a higher level; `#` lines inside fenced
/// code blocks are not headings.
fn config_section(markdown: &str) -> Option<String> {
    let mut fenced = false;
    let mut level = None;
    let mut out = String::new();
    for line in markdown.lines() {
        if is_fence(line) {
            fenced = !fenced;
        }
        let head = if fenced || is_fence(line) {
            None
        } else {
            heading(line)
        };
        match (level, head) {
            (None, Some((l, "Configuration"))) => level = Some(l),
            (None, _) => {}
            (Some(top), Some((l, _))) if l <= top => break,
            (Some(_), _) => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    level.map(|_| out)
}

/// The block-level markdown of the reference as man(7) roff: deeper
/// headings as `.SS`, paragraphs as `.PP`, bullets as `.IP`, table rows as
/// `.TP` entries (the first column the tag, the last the text, the others
/// in parentheses), fenced code as `.EX`/`.EE`.
fn markdown_to_roff(section: String) -> String {
    let mut out = String::new();
    let mut lines = section.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        if is_fence(line) {
            out.push_str(".EX\n");
            for code in lines.by_ref() {
                if is_fence(code) {
                    break;
                }
                out.push_str(&roff_line(&escape(code)));
            }
            out.push_str(".EE\n");
        } else if let Some((_, text)) = heading(line) {
            let _ = writeln!(out, ".SS \"{}\"", inline(text).replace('"', "\\(dq"));
        } else if trimmed.starts_with('|') {
            let mut rows = vec![trimmed];
            while let Some(next) = lines.next_if(|l| l.trim().starts_with('|')) {
                rows.push(next.trim());
            }
            table(&rows, &mut out);
        } else if let Some(item) = trimmed.strip_prefix("- ") {
            let mut text = item.to_owned();
            while let Some(next) = lines.next_if(|l| l.starts_with("  ") && !l.trim().is_empty()) {
                text.push(' ');
                text.push_str(next.trim());
            }
            out.push_str(".IP \\(bu 2\n");
            out.push_str(&roff_line(&inline(&text)));
        } else {
            let mut text = trimmed.to_owned();
            while let Some(next) = lines.next_if(|l| paragraph_continues(l)) {
                text.push(' ');
                text.push_str(next.trim());
            }
            out.push_str(".PP\n");
            out.push_str(&roff_line(&inline(&text)));
        }
    }
    out
}

/// Whether `line` continues the paragraph above it.
fn paragraph_continues(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty()
        && !t.starts_with('|')
        && !t.starts_with("- ")
        && !is_fence(line)
        && heading(line).is_none()
}

/// A markdown table (header, separator, rows) as `.TP` entries.
fn table(rows: &[&str], out: &mut String) {
    let header = cells(rows[0]);
    for row in rows.iter().skip(1).map(|r| cells(r)) {
        if row
            .iter()
            .all(|c| c.chars().all(|ch| matches!(ch, '-' | ':' | ' ')))
        {
            continue;
        }
        let Some((meaning, first_and_middle)) = row.split_last() else {
            continue;
        };
        let Some((term, middle)) = first_and_middle.split_first() else {
            out.push_str(".PP\n");
            out.push_str(&roff_line(&inline(meaning)));
            continue;
        };
        out.push_str(".TP\n");
        let mut tag = inline(term);
        let details: Vec<String> = middle
            .iter()
            .enumerate()
            .filter(|(_, value)| !value.is_empty())
            .map(|(i, value)| match header.get(i + 1) {
                Some(name) if !name.is_empty() => format!("{}: {}", inline(name), inline(value)),
                _ => inline(value),
            })
            .collect();
        if !details.is_empty() {
            let _ = write!(tag, " ({})", details.join("; "));
        }
        out.push_str(&roff_line(&tag));
        out.push_str(&roff_line(&inline(meaning)));
    }
}

/// The cells of a table row: split at `|` outside code spans and not
/// escaped as `\|`, trimmed, with `\|` read as `|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = vec![String::new()];
    let mut chars = inner.chars().peekable();
    let mut in_code = false;
    while let Some(c) = chars.next() {
        let cell = cells.last_mut().expect("never empty");
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '`' => {
                in_code = !in_code;
                cell.push(c);
            }
            '|' if !in_code => cells.push(String::new()),
            _ => cell.push(c),
        }
    }
    cells.iter().map(|c| c.trim().to_owned()).collect()
}

/// Inline markdown as roff: code spans and `**strong**` in bold, links as
/// their text, everything else escaped.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    let mut bold = false;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            let ticks = rest.len() - rest.trim_start_matches('`').len();
            let fence = &rest[..ticks];
            if let Some(end) = rest[ticks..].find(fence) {
                let code = &rest[ticks..ticks + end];
                let code = match code.strip_prefix(' ').and_then(|c| c.strip_suffix(' ')) {
                    Some(inner) if !inner.trim().is_empty() => inner,
                    _ => code,
                };
                let _ = write!(out, "\\fB{}\\fP", escape(code));
                rest = &rest[ticks + end + ticks..];
                continue;
            }
            out.push_str(&escape(fence));
            rest = &rest[ticks..];
        } else if let Some(after) = rest.strip_prefix("**") {
            bold = !bold;
            out.push_str(if bold { "\\fB" } else { "\\fR" });
            rest = after;
        } else if let Some((label, after)) = link(rest) {
            out.push_str(&inline(label));
            rest = after;
        } else {
            out.push_str(&escape(&rest[..c.len_utf8()]));
            rest = &rest[c.len_utf8()..];
        }
    }
    if bold {
        out.push_str("\\fR");
    }
    out
}

/// A markdown link at the start of `text`: its label and what follows it.
fn link(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix('[')?;
    let close = body.find("](")?;
    let label = &body[..close];
    if label.contains('[') {
        return None;
    }
    let target_end = body[close + 2..].find(')')?;
    Some((label, &body[close + 2 + target_end + 1..]))
}

/// `text` with roff's escape character written as `\e`.
fn escape(text: &str) -> String {
    text.replace('\\', "\\e")
}

/// One output line: a leading `.` or `'` would be read as a request, so it
/// gets the zero-width `\&` in front.
fn roff_line(text: &str) -> String {
    if text.starts_with('.') || text.starts_with('\'') {
        format!("\\&{text}\n")
    } else {
        format!("{text}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page's text with roff's `\-` as `-`, as a reader sees it.
    fn plain(page: &str) -> String {
        page.replace("\\-", "-")
    }

    #[test]
    fn config_section_runs_to_the_next_heading_of_the_same_or_a_higher_level() {
        let md = "# Tool\nintro\n## Configuration\nkept\n### Keys\n```sh\n# not a heading\n## nor this\n```\nalso kept\n## Exit codes\ngone\n";
        let section = config_section(md).expect("found");
        assert_eq!(
            section,
            "kept\n### Keys\n```sh\n# not a heading\n## nor this\n```\nalso kept\n"
        );
        // docs/config.md's form: the heading at level 1, to the end.
        let md = "# Configuration\none\n## Keys\ntwo\n";
        assert_eq!(config_section(md).unwrap(), "one\n## Keys\ntwo\n");
        assert_eq!(config_section("# Other\n## Configurations\n"), None);
    }

    #[test]
    fn pages_are_dated_by_source_date_epoch_or_not_at_all() {
        assert_eq!(page_date(Some("1764806400")), "2025-12-04");
        assert_eq!(page_date(Some(" 0\n")), "1970-01-01");
        for bad in [None, Some(""), Some("soon"), Some("99999999999999999")] {
            assert_eq!(page_date(bad), "", "{bad:?}");
        }
        let page = config_page("# Configuration\nkeys\n", "2025-12-04");
        assert!(
            page.starts_with(".TH nolist.yaml 5 \"2025-12-04\" "),
            "{page}"
        );
    }

    #[test]
    fn inline_markdown_becomes_bold_code_and_link_text() {
        assert_eq!(inline("see [State](#state)"), "see State");
        assert_eq!(
            inline("`a\\b` and **Host**"),
            "\\fBa\\eb\\fP and \\fBHost\\fR"
        );
        assert_eq!(inline("``x `y` z``"), "\\fBx `y` z\\fP");
        assert_eq!(inline("an [unclosed link"), "an [unclosed link");
        assert_eq!(inline("a lone ` tick"), "a lone ` tick");
    }

    #[test]
    fn a_line_starting_with_a_dot_or_quote_is_not_a_request() {
        let roff = markdown_to_roff("`.` is the null MX\n'quoted' start\n".to_owned());
        assert_eq!(roff, ".PP\n\\fB.\\fP is the null MX 'quoted' start\n");
        let roff = markdown_to_roff(".hidden request\n".to_owned());
        assert_eq!(roff, ".PP\n\\&.hidden request\n");
    }

    #[test]
    fn table_rows_become_tagged_paragraphs() {
        let md = "| key | type | default | meaning |\n|-----|------|---------|---------|\n| `a.b` | `x` \\| `y` | `x` | pick **one** |\n| `c` | list | | see [d](#d) |\n";
        assert_eq!(
            markdown_to_roff(md.to_owned()),
            ".TP\n\\fBa.b\\fP (type: \\fBx\\fP | \\fBy\\fP; default: \\fBx\\fP)\npick \\fBone\\fR\n\
             .TP\n\\fBc\\fP (type: list)\nsee d\n"
        );
    }

    #[test]
    fn bullets_headings_and_code_blocks() {
        let md = "Value syntax:\n\n- **Durations:** `90s`,\n  or more\n- two\n\n### Keys\n\n```yaml\nkey: \\value\n```\n";
        assert_eq!(
            markdown_to_roff(md.to_owned()),
            ".PP\nValue syntax:\n.IP \\(bu 2\n\\fBDurations:\\fR \\fB90s\\fP, or more\n.IP \\(bu 2\ntwo\n\
             .SS \"Keys\"\n.EX\nkey: \\evalue\n.EE\n"
        );
    }

    #[test]
    fn non_ascii_becomes_groff_escapes() {
        assert_eq!(ascii_roff("a ≥ 1 → ü"), "a \\[u2265] 1 \\[u2192] \\[u00FC]");
    }

    /// Every key in the first column of the reference's tables is a tag in
    /// nolist.yaml(5), so the page cannot lose a key the reference has.
    #[test]
    fn the_config_page_has_every_key_of_the_reference_tables() {
        let section = config_section(CONFIG_REFERENCE).expect("a Configuration section");
        let keys: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        assert!(keys.len() > 50, "only {} keys found", keys.len());
        assert!(keys.contains(&"bans.enforce.backend"));
        let page = config_page(CONFIG_REFERENCE, "");
        let tags: Vec<&str> = page
            .lines()
            .zip(page.lines().skip(1))
            .filter(|(tp, _)| *tp == ".TP")
            .map(|(_, tag)| tag)
            .collect();
        for key in keys {
            let tag = format!("\\fB{}\\fP", escape(key));
            assert!(
                tags.iter().any(|t| t.starts_with(&tag)),
                "`{key}` is not a tag in nolist.yaml(5)"
            );
        }
    }

    /// Walks the clap tree: every visible command has a page named after
    /// it, listed in its parent's page, and every visible flag, option and
    /// positional argument of the command is on its page.
    #[test]
    fn every_subcommand_and_argument_is_in_the_pages() {
        let pages = pages();
        let page = |name: &str| {
            pages
                .iter()
                .find(|(file, _)| file == name)
                .map(|(_, text)| plain(text))
                .unwrap_or_else(|| panic!("no page {name}"))
        };
        let mut cmd = Cli::command().disable_help_subcommand(true);
        cmd.build();
        let mut stack = vec![cmd];
        let mut checked = 0;
        while let Some(cmd) = stack.pop() {
            let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_owned();
            let text = page(&format!("{name}.1"));
            for arg in cmd.get_arguments().filter(|a| !a.is_hide_set()) {
                let mut forms = Vec::new();
                if let Some(long) = arg.get_long() {
                    forms.push(format!("\\fB--{long}\\fR"));
                }
                if let Some(short) = arg.get_short() {
                    forms.push(format!("\\fB-{short}\\fR"));
                }
                if arg.is_positional() {
                    let value = arg
                        .get_value_names()
                        .map_or(arg.get_id().as_str().to_uppercase(), |v| v[0].to_string());
                    forms.push(format!("<\\fI{value}\\fR>"));
                }
                for form in forms {
                    assert!(text.contains(&form), "{name}.1 lacks {form}");
                    checked += 1;
                }
            }
            for sub in cmd.get_subcommands() {
                let listed = format!("{name}-{}(1)", sub.get_name());
                assert_eq!(
                    text.contains(&listed),
                    !sub.is_hide_set(),
                    "{name}.1 and {listed}"
                );
                if !sub.is_hide_set() {
                    stack.push(sub.clone());
                }
            }
        }
        assert!(checked > 60, "only {checked} arguments checked");
        assert!(pages.iter().all(|(file, _)| !file.contains("manpages")));
        assert!(pages.iter().any(|(file, _)| file == "nolist-bans-add.1"));
    }
}
