//! One check: send a request, judge the answer, and say what was seen and what was expected.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::{header, Request};
use serde::{Deserialize, Serialize};

use crate::net;

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Check {
    /// Stable id, for scripts and hints.
    pub id: String,
    pub title: String,
    pub request: CheckRequest,
    pub expect: Expect,
    pub hint: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckRequest {
    /// Where the request is sent from: `gateway` (a client outside the mesh, at the ingress).
    pub via: Via,
    /// Host header.
    pub host: String,
    pub path: String,
    #[serde(default = "get")]
    pub method: String,
}

fn get() -> String {
    "GET".into()
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Via {
    Gateway,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expect {
    pub status: u16,
}

/// What one attempt saw.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum Seen {
    Status(u16),
    /// No HTTP answer (connection refused, reset, timeout), with the reason.
    NoAnswer(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    pub id: String,
    pub title: String,
    pub passed: bool,
    pub saw: String,
    pub expected: String,
    pub hint: String,
    pub attempts: u32,
}

/// Where checks send their requests.
#[derive(Clone, Debug)]
pub struct Target {
    pub gateway: SocketAddr,
}

fn describe_request(c: &Check, target: &Target) -> String {
    format!("{} http://{}{} (Host: {})", c.request.method, target.gateway, c.request.path, c.request.host)
}

pub fn judge(expect: &Expect, seen: &Seen) -> bool {
    matches!(seen, Seen::Status(s) if *s == expect.status)
}

async fn attempt(client: &net::HttpClient, c: &Check, target: &Target) -> Seen {
    let req = match Request::builder()
        .method(c.request.method.as_str())
        .uri(format!("http://{}{}", target.gateway, c.request.path))
        .header(header::HOST, &c.request.host)
        .header(header::USER_AGENT, "meshrig-lab-check")
        .body(net::empty())
    {
        Ok(r) => r,
        Err(e) => return Seen::NoAnswer(format!("invalid request: {e}")),
    };
    match tokio::time::timeout(Duration::from_secs(5), client.request(req)).await {
        Ok(Ok(resp)) => Seen::Status(resp.status().as_u16()),
        Ok(Err(e)) => {
            let chain = crate::api::error_chain(&e);
            if chain.contains("refused") {
                Seen::NoAnswer(
                    "connection refused: nothing listens there (no Gateway server for that port yet?)".into(),
                )
            } else {
                Seen::NoAnswer(chain)
            }
        }
        Err(_) => Seen::NoAnswer("no answer within 5s".into()),
    }
}

/// Runs a check until it passes or `wait` has passed.
pub async fn run(c: &Check, target: &Target, wait: Duration) -> Outcome {
    // A fresh client per check: no pooled connection carries over between checks.
    let client = net::client();
    let deadline = Instant::now() + wait;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let seen = attempt(&client, c, target).await;
        let passed = judge(&c.expect, &seen);
        if passed || Instant::now() >= deadline {
            let saw = match &seen {
                Seen::Status(s) => format!("{s} from {}", describe_request(c, target)),
                Seen::NoAnswer(why) => format!("no HTTP answer from {}: {why}", describe_request(c, target)),
            };
            return Outcome {
                id: c.id.clone(),
                title: c.title.clone(),
                passed,
                saw,
                expected: format!("status {}", c.expect.status),
                hint: c.hint.clone(),
                attempts,
            };
        }
        // Mesh config is eventually consistent: try again shortly, until the deadline.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_expected_status_passes() {
        let e = Expect { status: 404 };
        assert!(judge(&e, &Seen::Status(404)));
        assert!(!judge(&e, &Seen::Status(200)));
        assert!(!judge(&e, &Seen::NoAnswer("refused".into())));
    }
}
