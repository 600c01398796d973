//! Parsing of Fluxion service addresses.

use fluxion::FluxionError;

/// Turn a Fluxion service address into the `http://HOST:PORT` URI tonic connects to.
///
/// Accepted forms: `grpc://HOST:PORT`, `http://HOST:PORT` and `HOST:PORT`
/// (a trailing `/` is allowed). `HOST` is a name, an IPv4 address or a
/// bracketed IPv6 address (`[::1]`); the port is required. TLS (`https://`) is
/// not supported: the service is reached inside a pod.
///
/// ```
/// assert_eq!(fluxion_grpc::parse_address("grpc://localhost:4242").unwrap(), "http://localhost:4242");
/// assert_eq!(fluxion_grpc::parse_address("10.0.0.1:4242").unwrap(), "http://10.0.0.1:4242");
/// assert!(fluxion_grpc::parse_address("localhost").is_err());
/// ```
pub fn parse_address(address: &str) -> Result<String, FluxionError> {
    let bad = |why: &str| {
        FluxionError::Invalid(format!(
            "fluxion address {address:?}: {why} (expected grpc://HOST:PORT, http://HOST:PORT or HOST:PORT)"
        ))
    };
    let trimmed = address.trim();
    let rest = if let Some(rest) = strip_prefix_ci(trimmed, "grpc://") {
        rest
    } else if let Some(rest) = strip_prefix_ci(trimmed, "http://") {
        rest
    } else if let Some((scheme, _)) = trimmed.split_once("://") {
        return Err(bad(&format!("unsupported scheme {scheme:?}")));
    } else {
        trimmed
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("empty address"));
    }
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("only HOST:PORT is allowed after the scheme"));
    }
    let (host, port) = if authority.starts_with('[') {
        let Some((host, port)) = authority.split_once("]:") else {
            return Err(bad("missing port"));
        };
        (format!("{host}]"), port)
    } else {
        let Some((host, port)) = authority.rsplit_once(':') else {
            return Err(bad("missing port"));
        };
        if host.contains(':') {
            return Err(bad("IPv6 addresses must be in brackets"));
        }
        (host.to_string(), port)
    };
    if host.is_empty() || host == "[]" {
        return Err(bad("missing host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad(&format!("bad port {port:?}"))),
    }
    let uri = format!("http://{host}:{port}");
    if tonic::transport::Endpoint::from_shared(uri.clone()).is_err() {
        return Err(bad("not a valid URI"));
    }
    Ok(uri)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::parse_address;

    #[test]
    fn accepted_forms() {
        for (input, want) in [
            ("grpc://localhost:4242", "http://localhost:4242"),
            ("GRPC://localhost:4242/", "http://localhost:4242"),
            ("http://127.0.0.1:1", "http://127.0.0.1:1"),
            (
                "fluxion.default.svc:4242",
                "http://fluxion.default.svc:4242",
            ),
            ("  [::1]:4242 ", "http://[::1]:4242"),
            ("grpc://[fe80::1]:80", "http://[fe80::1]:80"),
        ] {
            assert_eq!(parse_address(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn rejected_forms() {
        for input in [
            "",
            "localhost",
            "grpc://localhost",
            "https://localhost:4242",
            "unix:///tmp/sock",
            ":4242",
            "host:0",
            "host:65536",
            "host:port",
            "::1:4242",
            "[::1]",
            "http://host:1/path",
            "http://user@host:1",
            "hö st:1",
        ] {
            assert!(
                parse_address(input).is_err(),
                "{input:?} should be rejected"
            );
        }
    }
}
