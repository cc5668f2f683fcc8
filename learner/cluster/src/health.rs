//! `learner health`: a liveness check that notices a wedged trainer, not only
//! a live HTTP listener. It reads the learner's own Prometheus endpoint and
//! fails when actors are connected but no update has happened for too long
//! (`flotilla_last_update_timestamp_seconds`, set at each update and when the
//! trainer starts). Kubernetes runs it as the learner's liveness probe.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use flotilla_common::metrics as m;

/// What the metrics endpoint said, as far as health is concerned.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub actors_connected: f64,
    pub last_update: Option<f64>,
}

/// The verdict: `Ok` with a one-line status, or `Err` with the reason.
pub fn judge(r: &Reading, now: f64, max_update_age: f64) -> Result<String, String> {
    let Some(last) = r.last_update else {
        return Err(format!(
            "{} is not exported yet: the trainer has not started",
            m::LAST_UPDATE_TIME
        ));
    };
    let age = (now - last).max(0.0);
    if r.actors_connected > 0.0 && age > max_update_age {
        return Err(format!(
            "no update for {age:.0} s while {} actor stream(s) are connected (limit {max_update_age:.0} s): the trainer looks wedged",
            r.actors_connected
        ));
    }
    Ok(format!(
        "healthy: last update {age:.0} s ago, {} actor stream(s) connected",
        r.actors_connected
    ))
}

/// Picks the two gauges out of a Prometheus text exposition.
pub fn parse(text: &str) -> Reading {
    let value = |name: &str| {
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (metric, v) = l.rsplit_once(' ')?;
            let bare = metric.split('{').next()?;
            (bare == name)
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
    };
    Reading {
        actors_connected: value(m::ACTORS_CONNECTED).unwrap_or(0.0),
        last_update: value(m::LAST_UPDATE_TIME),
    }
}

/// GETs `url` (`http://host:port/path`) with a short timeout; the body.
pub fn fetch(url: &str, timeout: Duration) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: expected an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    // One write: `write!` straight to the socket would send the request in
    // pieces, and a server that answers after the first piece and closes
    // resets the connection over the unread rest.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("{url}: {e}"))?;
    let mut response = String::new();
    stream
        .take(64 << 20)
        .read_to_string(&mut response)
        .map_err(|e| format!("{url}: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let status = head.lines().next().unwrap_or("");
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    Ok(body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP flotilla_actors_connected x\n\
        # TYPE flotilla_actors_connected gauge\n\
        flotilla_actors_connected 3\n\
        flotilla_last_update_timestamp_seconds 1000.5\n\
        flotilla_loss{term=\"policy\"} 0.1\n";

    #[test]
    fn parses_the_two_gauges() {
        assert_eq!(
            parse(TEXT),
            Reading {
                actors_connected: 3.0,
                last_update: Some(1000.5)
            }
        );
        assert_eq!(parse("").last_update, None);
    }

    #[test]
    fn wedged_only_when_actors_wait_on_a_silent_trainer() {
        let r = parse(TEXT);
        assert!(judge(&r, 1100.0, 600.0).is_ok());
        let e = judge(&r, 1700.0, 600.0).unwrap_err();
        assert!(e.contains("wedged") && e.contains("700 s"), "{e}");
        // No actors: nothing to train on, so no update is expected.
        let idle = Reading {
            actors_connected: 0.0,
            ..r.clone()
        };
        assert!(judge(&idle, 1e9, 600.0).is_ok());
        // Not started at all.
        assert!(judge(&parse(""), 0.0, 600.0).is_err());
    }

    #[test]
    fn fetch_reads_a_real_http_endpoint() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // Read the whole request before answering and closing, as an
            // HTTP server does (closing over unread bytes sends a reset).
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "request ended early: {request:?}");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(request.starts_with(b"GET /metrics HTTP/1.0\r\n"));
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n")
                .unwrap();
            s.write_all(TEXT.as_bytes()).unwrap();
        });
        let body = fetch(&format!("http://{addr}/metrics"), Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert_eq!(parse(&body).actors_connected, 3.0);
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        assert!(fetch(&format!("http://{addr}/metrics"), Duration::from_secs(2)).is_err());
        assert!(fetch("https://x/metrics", Duration::from_secs(1)).is_err());
    }
}
