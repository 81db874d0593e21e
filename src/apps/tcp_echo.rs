//! tcp-echo, as Istio's `istio/tcp-echo-server` sample behaves: `tcp-echo-server PORTS PREFIX`
//! listens on each comma-separated port (default `9000`) and answers every line it reads with
//! `PREFIX line` (default prefix `hello`), until the client closes.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::ready;

/// The ports and prefix from the container's `args`, with the sample's defaults.
pub fn parse_args(args: &[String]) -> Result<(Vec<u16>, String), String> {
    let ports = match args.first() {
        Some(list) => list
            .split(',')
            .map(|p| p.trim().parse::<u16>().map_err(|_| format!("args[0]: `{p}` is not a port")))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![9000],
    };
    let prefix = args.get(1).cloned().unwrap_or_else(|| "hello".into());
    Ok((ports, prefix))
}

/// Binds one loopback listener per container port, announces them, and serves them all.
pub async fn run(args: &[String]) -> std::io::Result<()> {
    let (ports, prefix) = parse_args(args).map_err(std::io::Error::other)?;
    let mut addrs = ready::Addrs::new();
    let mut listeners = Vec::new();
    for port in ports {
        let l = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        addrs.insert(ready::Listener::App(port), l.local_addr()?);
        listeners.push(l);
    }
    ready::announce(&addrs);
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let prefix = prefix.clone();
        tasks.spawn(async move {
            loop {
                let (stream, _) = crate::net::accept(&l).await;
                tokio::spawn(echo(stream, prefix.clone()));
            }
        });
    }
    // A signal ends it at once: a line echo has nothing in flight worth waiting for.
    tokio::select! {
        _ = async { while tasks.join_next().await.is_some() {} } => {}
        _ = crate::shutdown::signalled() => {}
    }
    Ok(())
}

/// Answers each line with `prefix line` (the line keeps its newline).
async fn echo(stream: TcpStream, prefix: String) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        match lines.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) if line.last() != Some(&b'\n') => return, // EOF mid-line: the sample drops it
            Ok(_) => {}
        }
        let mut out = Vec::with_capacity(prefix.len() + 1 + line.len());
        out.extend_from_slice(prefix.as_bytes());
        out.push(b' ');
        out.extend_from_slice(&line);
        if write.write_all(&out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_are_the_samples() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_args(&args(&["9000,9001,9002", "one"])), Ok((vec![9000, 9001, 9002], "one".into())));
        assert_eq!(parse_args(&[]), Ok((vec![9000], "hello".into())));
        assert!(parse_args(&args(&["90x"])).unwrap_err().contains("90x"));
    }

    #[tokio::test]
    async fn every_line_comes_back_with_the_prefix() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            echo(s, "one".into()).await;
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.write_all(b"hello\nworld\n").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut c, &mut got).await.unwrap();
        assert_eq!(got, "one hello\none world\n");
    }
}
