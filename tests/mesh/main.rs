//! Integration tests: drive the real `meshrig` binary against real processes on loopback.
//! Each test runs its own environment (a temp state dir, ephemeral gateway ports) and stops
//! it on drop, so tests run in parallel and leave nothing behind.

mod addons;
mod analyze;
mod bookinfo;
mod capture;
mod cli;
mod course;
mod dashboard;
mod docker;
mod drain;
mod egress;
mod gateway_ports;
mod hardening;
mod istiod;
mod kind_cluster;
mod kind_up;
#[path = "../../src/testing/kube_api.rs"]
mod kube_api;
mod labs;
mod lifecycle;
mod proxy_config;
mod push;
mod resilience;
mod samples;
mod scenarios;
mod security;
mod support;
mod tcp;
mod telemetry;
mod traffic;
