//! Terminal output: check marks, progress lines, colour only when the stream the text goes to
//! is a terminal and NO_COLOR is unset (so colour never leaks into a file or a pipe).

use std::io::{IsTerminal, Write};

/// Where a piece of text is printed: colour is decided per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

pub fn color(stream: Stream) -> bool {
    let tty = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn paint(stream: Stream, code: &str, s: &str) -> String {
    if color(stream) {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// `√` for a message on stderr.
pub fn pass_mark() -> String {
    paint(Stream::Stderr, "32", "√")
}
/// `×` for a message on stderr.
pub fn fail_mark() -> String {
    paint(Stream::Stderr, "31", "×")
}
/// `‼` for a message on stderr.
pub fn warn_mark() -> String {
    paint(Stream::Stderr, "33", "‼")
}

/// `√` or `×` in data printed on stdout (check results, `lab list`, `doctor`).
pub fn result_mark(ok: bool) -> String {
    if ok {
        paint(Stream::Stdout, "32", "√")
    } else {
        paint(Stream::Stdout, "31", "×")
    }
}

/// One step of a multi-step command: `… doing` while it runs on a terminal, then `✔ done`.
/// Without a terminal only the final line is printed.
pub struct Step {
    tty: bool,
}

impl Step {
    pub fn start(what: &str) -> Step {
        let tty = std::io::stderr().is_terminal();
        if tty {
            eprint!("  … {what}");
            let _ = std::io::stderr().flush();
        }
        Step { tty }
    }

    pub fn done(self, what: &str) {
        self.finish(&paint(Stream::Stderr, "32", "✔"), what);
    }

    pub fn failed(self, what: &str) {
        self.finish(&paint(Stream::Stderr, "31", "✘"), what);
    }

    fn finish(&self, mark: &str, what: &str) {
        if self.tty {
            eprint!("\r\x1b[K");
        }
        eprintln!("{mark} {what}");
    }
}

/// A spinner on stderr while something retries or waits; drawn only when stderr is a terminal.
pub fn spinner(message: &str) -> indicatif::ProgressBar {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(message.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// Left-aligned columns, like kubectl's tables.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}
