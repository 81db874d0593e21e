//! What a proxy is told about telemetry, resolved: which standard metrics it reports and with
//! which labels per side, its access log, its custom span tags. `translate::telemetry` computes
//! them from the Telemetries and the mesh config; the proxy reads nothing else.

use serde::{Deserialize, Serialize};

/// Istio's standard metrics, as the Telemetry API names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Metric {
    RequestCount,
    RequestDuration,
    RequestSize,
    ResponseSize,
    TcpOpenedConnections,
    TcpClosedConnections,
    TcpSentBytes,
    TcpReceivedBytes,
    GrpcRequestMessages,
    GrpcResponseMessages,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::RequestCount,
        Metric::RequestDuration,
        Metric::RequestSize,
        Metric::ResponseSize,
        Metric::TcpOpenedConnections,
        Metric::TcpClosedConnections,
        Metric::TcpSentBytes,
        Metric::TcpReceivedBytes,
        Metric::GrpcRequestMessages,
        Metric::GrpcResponseMessages,
    ];

    /// The Telemetry API's name (`match.metric`).
    pub fn name(self) -> &'static str {
        match self {
            Metric::RequestCount => "REQUEST_COUNT",
            Metric::RequestDuration => "REQUEST_DURATION",
            Metric::RequestSize => "REQUEST_SIZE",
            Metric::ResponseSize => "RESPONSE_SIZE",
            Metric::TcpOpenedConnections => "TCP_OPENED_CONNECTIONS",
            Metric::TcpClosedConnections => "TCP_CLOSED_CONNECTIONS",
            Metric::TcpSentBytes => "TCP_SENT_BYTES",
            Metric::TcpReceivedBytes => "TCP_RECEIVED_BYTES",
            Metric::GrpcRequestMessages => "GRPC_REQUEST_MESSAGES",
            Metric::GrpcResponseMessages => "GRPC_RESPONSE_MESSAGES",
        }
    }
}

/// Which side of a proxy's traffic: the client side (sidecar outbound, gateways; reporter
/// `source`) or the server side (sidecar inbound; reporter `destination`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Mode {
    Client,
    Server,
}

/// One metric's overrides on one side of a proxy, after the hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetricRule {
    pub metric: Metric,
    pub mode: Mode,
    pub disabled: bool,
    /// By label name: `None` removes the label, `Some(expr)` sets it (adding a new one).
    pub tags: Vec<(String, Option<crate::cel::Expr>)>,
}

/// What a proxy's metrics are told: nothing at all (`off`), or per metric and side.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct MetricRules {
    /// No metric is reported: `ALL_METRICS` disabled, or a provider other than `prometheus`.
    pub off: bool,
    pub rules: Vec<MetricRule>,
}

/// Where a proxy writes its access log, and how.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AccessLog {
    /// `/dev/stdout` (the proxy's log, `meshrig logs POD -c istio-proxy`), `/dev/stderr`, or a path.
    pub file: String,
    /// JSON lines with Istio's keys rather than text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub json: bool,
    /// A Telemetry's `filter.expression`: only requests it matches are logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<crate::cel::Expr>,
    /// The text format, parsed; none: Istio's default format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Vec<crate::access_format::Piece>>,
}

/// Where a custom span tag's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SpanTag {
    Literal(String),
    /// The proxy's environment variable, or the default.
    Environment {
        name: String,
        default: Option<String>,
    },
    /// A request header (lower-cased name), or the default.
    Header {
        name: String,
        default: Option<String>,
    },
}
