//! Exit codes, each with one meaning (documented in `meshrig --help` and the README), and the
//! one style every error is printed in: `error: what happened; what to do`.

use std::process::ExitCode;

use crate::api;
use crate::resources::ParseError;

/// Success.
pub const OK: u8 = 0;
/// What the command checks does not hold: a lab check or a `doctor` finding failed.
pub const CHECK_FAILED: u8 = 1;
/// The command line is wrong (clap's own code).
pub const USAGE: u8 = 2;
/// The environment is not running (`meshrig up` starts it).
pub const NOT_RUNNING: u8 = 3;
/// The input was refused: YAML that does not parse or resources that do not validate.
pub const INVALID_INPUT: u8 = 4;
/// Anything else went wrong (a port in use, a file that cannot be written, the control plane
/// not answering).
pub const FAILED: u8 = 5;

/// What the command names does not exist: a resource, a pod, a lab, a step.
pub const NOT_FOUND: u8 = 6;

/// The exit-code table for `--help`.
pub const HELP: &str = "Exit codes: 0 ok, 1 a check failed, 2 usage error, 3 environment not running, \
4 invalid input (YAML or validation), 5 other failure, 6 not found, 79 `analyze` found issues (as istioctl).";

/// A command line that names something wrong in a way clap cannot see (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Something the command names does not exist (exit 6).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// The code an error ends the process with.
pub fn code_for(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.downcast_ref::<ParseError>().is_some() {
            return INVALID_INPUT;
        }
        if cause.downcast_ref::<Usage>().is_some() {
            return USAGE;
        }
        if cause.downcast_ref::<NotFound>().is_some() {
            return NOT_FOUND;
        }
        if let Some(crate::labs::Error::NotFound(_)) = cause.downcast_ref::<crate::labs::Error>() {
            return NOT_FOUND;
        }
        if let Some(api) = cause.downcast_ref::<api::Error>() {
            return match api {
                api::Error::NotRunning { .. } | api::Error::NotOnThisBackend(_) => NOT_RUNNING,
                api::Error::Status { status: 400 | 422, .. } => INVALID_INPUT,
                _ => FAILED,
            };
        }
    }
    FAILED
}

/// Prints `error: ...` (the error and its causes on one line) and returns its exit code.
pub fn report(e: &anyhow::Error) -> ExitCode {
    eprintln!("error: {e:#}");
    ExitCode::from(code_for(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_failure_has_its_own_code() {
        let not_running = anyhow::Error::new(api::Error::NotRunning { env: "default".into() });
        assert_eq!(code_for(&not_running), NOT_RUNNING);
        let refused = anyhow::Error::new(api::Error::Status {
            status: 422,
            message: "nothing was applied".into(),
            findings: vec![],
        });
        assert_eq!(code_for(&refused), INVALID_INPUT);
        let parse = crate::resources::parse_documents("x.yaml", "kind: [").unwrap_err();
        assert_eq!(code_for(&anyhow::Error::new(parse).context("reading x.yaml")), INVALID_INPUT);
        assert_eq!(code_for(&anyhow::anyhow!("port 8080 is in use")), FAILED);
        assert_eq!(code_for(&crate::labs::find("99").unwrap_err().into()), NOT_FOUND);
        assert_eq!(code_for(&anyhow::Error::new(NotFound("pod x".into())).context("logs")), NOT_FOUND);
        assert_eq!(code_for(&Usage("no step 9".into()).into()), USAGE);
        assert_eq!(USAGE, 2, "clap exits with 2 on a usage error");
    }
}
