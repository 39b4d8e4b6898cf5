//! Who may use the dashboard.
//!
//! - Bound to a loopback address, it needs no token (unless one is given), but it answers only
//!   requests addressed to a loopback host name, so that a web page elsewhere cannot reach it
//!   through DNS rebinding.
//! - Bound to any other address, it requires a token: `Authorization: Bearer TOKEN` (for
//!   Prometheus and scripts), or `?token=TOKEN` once in the browser, which sets an HTTP-only
//!   cookie and redirects to the page without the token in its address.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};

use super::Shared;

/// Whether `token` can travel in a cookie and a query string unchanged.
pub fn valid_token(token: &str) -> bool {
    (8..=256).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// The dashboard's access rule.
#[derive(Debug, Clone)]
pub struct Access {
    token: Option<String>,
    loopback_only: bool,
    /// The cookie's name: per port, so that two dashboards on one host keep their own.
    cookie: String,
}

impl Access {
    /// The rule for a server bound to `addr`, with `token` if one is required or given.
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Access {
            token,
            loopback_only: addr.ip().is_loopback(),
            cookie: format!("laketide_token_{}", addr.port()),
        }
    }

    /// Whether a token is needed.
    pub fn needs_token(&self) -> bool {
        self.token.is_some()
    }

    fn host_allowed(&self, headers: &HeaderMap) -> bool {
        if !self.loopback_only {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return false;
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None => host.split(':').next().unwrap_or_default(),
        };
        name == "localhost"
            || name
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    fn presented<'a>(&self, headers: &'a HeaderMap, query: Option<&'a str>) -> Vec<&'a str> {
        let mut tokens = Vec::new();
        if let Some(bearer) = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "))
        {
            tokens.push(bearer.trim());
        }
        for cookies in headers.get_all(header::COOKIE) {
            if let Ok(cookies) = cookies.to_str() {
                tokens.extend(cookies.split(';').filter_map(|c| {
                    c.trim()
                        .strip_prefix(self.cookie.as_str())
                        .and_then(|v| v.strip_prefix('='))
                }));
            }
        }
        if let Some(t) = query.and_then(token_in_query) {
            tokens.push(t);
        }
        tokens
    }

    fn token_matches(&self, candidate: &str) -> bool {
        self.token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), candidate.as_bytes()))
    }
}

fn token_in_query(query: &str) -> Option<&str> {
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The middleware that applies [`Access`] to every request.
pub async fn check(State(shared): State<Shared>, request: Request, next: Next) -> Response {
    let access = &shared.access;
    if !access.host_allowed(request.headers()) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "the dashboard answers only requests to localhost",
        )
            .into_response();
    }
    if !access.needs_token() {
        return next.run(request).await;
    }
    let query = request.uri().query();
    let tokens = access.presented(request.headers(), query);
    if !tokens.iter().any(|t| access.token_matches(t)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "this dashboard needs its token: open the address laketide printed, or send Authorization: Bearer TOKEN",
        )
            .into_response();
    }
    // A token in the address of a page: keep it in a cookie and drop it from the address.
    if let Some(query) = query.filter(|q| token_in_query(q).is_some()) {
        let rest: Vec<&str> = query
            .split('&')
            .filter(|p| !p.starts_with("token="))
            .collect();
        // One leading slash: `//host/` would send the browser to another site.
        let mut target = format!("/{}", request.uri().path().trim_start_matches(['/', '\\']));
        if !rest.is_empty() {
            target.push('?');
            target.push_str(&rest.join("&"));
        }
        let token = access.token.as_deref().unwrap_or_default();
        let cookie = format!(
            "{}={token}; HttpOnly; SameSite=Strict; Path=/",
            access.cookie
        );
        return ([(header::SET_COOKIE, cookie)], Redirect::to(&target)).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn loopback_servers_answer_only_loopback_host_names() {
        let access = Access::new("127.0.0.1:8080".parse().unwrap(), None);
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "[::1]:8080",
            "localhost",
        ] {
            assert!(access.host_allowed(&headers(&[(header::HOST, ok)])), "{ok}");
        }
        for bad in ["evil.example:8080", "192.168.1.4:8080"] {
            assert!(
                !access.host_allowed(&headers(&[(header::HOST, bad)])),
                "{bad}"
            );
        }
        assert!(!access.host_allowed(&HeaderMap::new()));
        let open = Access::new("0.0.0.0:8080".parse().unwrap(), Some("s3cret".into()));
        assert!(open.host_allowed(&headers(&[(header::HOST, "dash.example:8080")])));
    }

    #[test]
    fn tokens_come_from_bearer_cookie_or_query() {
        let access = Access::new("0.0.0.0:1".parse().unwrap(), Some("s3cret".into()));
        let h = headers(&[
            (header::AUTHORIZATION, "Bearer wrong"),
            (
                header::COOKIE,
                "a=b; laketide_token_1=s3cret; laketide_token_2=other-port",
            ),
        ]);
        let tokens = access.presented(&h, Some("x=1&token=other"));
        assert_eq!(tokens, vec!["wrong", "s3cret", "other"]);
        assert!(valid_token("Abc-123_x.y~z"));
        assert!(!valid_token("short"));
        assert!(!valid_token("has space or; semicolon"));
        assert!(access.token_matches("s3cret"));
        assert!(!access.token_matches("s3cre"));
        assert!(!access.token_matches("other"));
    }
}
