//! The `meshrig` binary: parse the command line, run it, map the result to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc, purging freed pages in the background within a second (`.cargo/config.toml`), so
/// memory a burst of connections used goes back to the system when they close.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = meshrig::cli::Cli::parse();
    match meshrig::cli::run(cli) {
        Ok(code) => code,
        Err(e) => meshrig::cli::exit::report(&e),
    }
}

/// `meshrig status | head -1`: when the reader of stdout goes away, `println!` panics with
/// "failed printing to stdout: Broken pipe". End quietly instead, with the status a process
/// killed by SIGPIPE has (141), as C tools do; every other panic keeps the default report.
fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // println!'s own panic, and a library's `expect` on a write (`kind: BrokenPipe`).
        if message.contains("Broken pipe") || message.contains("BrokenPipe") {
            std::process::exit(141);
        }
        default(info);
    }));
}
