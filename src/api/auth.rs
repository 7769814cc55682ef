//! Who may call what: the cluster secret for nodes and operators, scoped tokens for clients.
//!
//! Every route belongs to one family, and each family has one guard:
//!
//! | family | routes | passes with |
//! |---|---|---|
//! | Raft | `/raft/*` | the cluster secret |
//! | admin | membership, leadership, snapshots, `/api/sync/start|stop`, metrics reset | on the peer listener (or the only one) the secret or a token with `admin`; on a client listener a token with `admin` only |
//! | client | reads (the cluster's `/api/status` too), reserve, create/adjust/batch | a token with the route's scope; anyone when no token is configured |
//! | open | health, `/metrics`, the OpenAPI document, `/api/whoami` (a caller's own scopes), the console's pages `/ui/` (client listener only) | anyone |
//!
//! A forwarded client request carries the client's `Authorization` unchanged, so the leader
//! checks the same token again (nodes share the configuration): forwarding never widens what a
//! client may do. The secret is accepted in its current form or any of
//! `cluster.accepted_secrets` (rotation). Every comparison runs in constant time over the
//! expected value, whatever the guess's length.
//!
//! The secret is not accepted on a client listener at all: with `[tls]` the peer listener
//! demands a CA-signed certificate in front of the secret, and the client listener must not
//! offer a way around it.
//!
//! A token-authenticated request carries the [`ClientScope`] `token:<name>`, the scope its
//! idempotency keys live in (`api::client_scope`): a client cannot pick another's. The legacy
//! `client_token` keeps the anonymous scope its callers had before scopes existed.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_scope::ClientScope;
use super::error::ApiError;
use super::Surface;
use crate::app::App;
use crate::client::headers;
use crate::client::wire::Whoami;
use crate::config::{ClusterConfig, Scope};
use crate::transport::SECRET_HEADER;

/// The client token a request authenticated with (none for open routes and secret holders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub token_name: String,
    /// The legacy `client_token`: its callers keep the anonymous idempotency scope.
    pub legacy: bool,
}

/// Compares a `guess` with the `expected` secret without leaking, through timing, how much of
/// the guess was right or how long the secret is: the work is the same for every guess (one
/// pass over the expected bytes), and a length mismatch is folded in, not returned early.
pub(crate) fn constant_time_eq(guess: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(guess.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        diff |= byte ^ guess.get(i).copied().unwrap_or(!byte);
    }
    diff == 0
}

/// Whether `headers` carry the cluster secret (current or still accepted).
pub(crate) fn has_secret(cluster: &ClusterConfig, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(SECRET_HEADER) else {
        return false;
    };
    // Every accepted secret is compared, so timing does not tell which one matched.
    std::iter::once(&cluster.secret)
        .chain(&cluster.accepted_secrets)
        .fold(false, |found, secret| {
            found | constant_time_eq(value.as_bytes(), secret.as_bytes())
        })
}

/// What a bearer token in `headers` is, among the configured ones.
enum Token {
    Missing,
    Unknown,
    Known {
        name: String,
        scopes: Vec<Scope>,
        legacy: bool,
    },
}

fn token(cluster: &ClusterConfig, headers: &HeaderMap) -> Token {
    let Some(value) = headers.get(headers::AUTHORIZATION) else {
        return Token::Missing;
    };
    let Some(presented) = value.as_bytes().strip_prefix(b"Bearer ") else {
        return Token::Unknown;
    };
    let mut found = Token::Unknown;
    // No early exit: every configured token is compared.
    for configured in cluster.tokens() {
        if constant_time_eq(presented, configured.token.as_bytes()) {
            found = Token::Known {
                name: configured.name.to_owned(),
                scopes: configured.scopes.to_vec(),
                legacy: configured.legacy,
            };
        }
    }
    found
}

/// The decision for one request to a route of `scope` (pure: tested without HTTP).
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    Allow(Option<Caller>),
    Unauthorized,
    Forbidden(String),
}

fn decide(
    cluster: &ClusterConfig,
    headers: &HeaderMap,
    scope: Scope,
    surface: Surface,
) -> Decision {
    let secret_counts = surface != Surface::Client;
    if scope == Scope::Admin && secret_counts && has_secret(cluster, headers) {
        return Decision::Allow(None);
    }
    match token(cluster, headers) {
        Token::Known {
            name,
            scopes,
            legacy,
        } if scopes.contains(&scope) => Decision::Allow(Some(Caller {
            token_name: name,
            legacy,
        })),
        Token::Known { name, .. } => Decision::Forbidden(format!(
            "token {name:?} lacks the {:?} scope this route needs",
            scope.as_str()
        )),
        // Client routes are open while no token is configured; admin ones never are.
        Token::Missing if scope != Scope::Admin && !cluster.client_routes_closed() => {
            Decision::Allow(None)
        }
        Token::Missing | Token::Unknown => Decision::Unauthorized,
    }
}

/// What the caller presenting `headers` may do (`GET /api/whoami`), by the rules [`decide`]
/// applies: a known token's own scopes; without a token, every client scope while no token is
/// configured and none once one is. An unknown token is refused as on any client route.
pub fn whoami(cluster: &ClusterConfig, headers: &HeaderMap) -> Result<Whoami, ApiError> {
    let tokens_required = cluster.client_routes_closed();
    let (token, scopes) = match token(cluster, headers) {
        Token::Known { name, scopes, .. } => (Some(name), scopes),
        Token::Missing if tokens_required => (None, Vec::new()),
        Token::Missing => (None, CLIENT_SCOPES.to_vec()),
        Token::Unknown => return Err(ApiError::unauthorized()),
    };
    Ok(Whoami {
        tokens_required,
        token,
        scopes: scopes
            .iter()
            .map(|scope| scope.as_str().to_owned())
            .collect(),
    })
}

/// The scopes of the client routes: what anyone may do while no token is configured.
const CLIENT_SCOPES: [Scope; 3] = [Scope::Read, Scope::Reserve, Scope::Write];

/// Route layer: the request needs `scope` on a listener serving `surface` (the module table).
pub async fn require_scope(
    State((app, scope, surface)): State<(Arc<App>, Scope, Surface)>,
    mut request: Request,
    next: Next,
) -> Response {
    match decide(&app.config().cluster, request.headers(), scope, surface) {
        Decision::Allow(caller) => {
            if let Some(caller) = caller.filter(|caller| !caller.legacy) {
                let scope = ClientScope(format!("token:{}", caller.token_name));
                request.extensions_mut().insert(scope);
            }
            next.run(request).await
        }
        Decision::Unauthorized => ApiError::unauthorized().into_response(),
        Decision::Forbidden(message) => ApiError::forbidden(message).into_response(),
    }
}

/// Route layer for Raft RPC: the cluster secret, nothing else.
pub async fn require_secret(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    if !has_secret(&app.config().cluster, request.headers()) {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientToken;

    #[test]
    fn secrets_compare_equal_only_when_identical_whatever_the_lengths() {
        assert!(constant_time_eq(b"sekret-value", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret-valuX", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret", b"sekret-value"));
        assert!(!constant_time_eq(b"sekret-value-and-more", b"sekret-value"));
        assert!(!constant_time_eq(b"", b"sekret-value"));
        // A guess padded with what `unwrap_or` would compare against still fails.
        assert!(!constant_time_eq(b"ab", b"ab\xff"));
        assert!(constant_time_eq(b"", b""));
    }

    fn cluster(tokens: &[(&str, &str, &[Scope])]) -> ClusterConfig {
        ClusterConfig {
            secret: "current-secret-0123456789".into(),
            accepted_secrets: vec!["previous-secret-0123456789".into()],
            client_tokens: tokens
                .iter()
                .map(|(name, token, scopes)| ClientToken {
                    name: (*name).into(),
                    token: (*token).into(),
                    scopes: scopes.to_vec(),
                })
                .collect(),
            ..ClusterConfig::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn both_the_current_and_an_accepted_secret_pass_and_nothing_else_does() {
        let cluster = cluster(&[]);
        for (secret, passes) in [
            ("current-secret-0123456789", true),
            ("previous-secret-0123456789", true),
            ("current-secret-012345678", false),
            ("", false),
        ] {
            let headers = headers(&[(SECRET_HEADER, secret)]);
            assert_eq!(has_secret(&cluster, &headers), passes, "{secret:?}");
        }
    }

    #[test]
    fn every_token_meets_every_scope_as_the_matrix_says() {
        let cluster = cluster(&[
            ("reader", "reader-token-0001", &[Scope::Read]),
            (
                "checkout",
                "checkout-token-01",
                &[Scope::Read, Scope::Reserve],
            ),
            ("backoffice", "backoffice-tok-01", &[Scope::Write]),
            ("ops", "ops-token-0000001", &[Scope::Admin]),
        ]);
        let bearer = |token: &str| headers(&[("authorization", &format!("Bearer {token}"))]);
        for (token, allowed) in [
            ("reader-token-0001", vec![Scope::Read]),
            ("checkout-token-01", vec![Scope::Read, Scope::Reserve]),
            ("backoffice-tok-01", vec![Scope::Write]),
            ("ops-token-0000001", vec![Scope::Admin]),
        ] {
            for scope in Scope::ALL {
                let decision = decide(&cluster, &bearer(token), scope, Surface::Both);
                if allowed.contains(&scope) {
                    assert!(
                        matches!(decision, Decision::Allow(Some(_))),
                        "{token} {scope:?}"
                    );
                } else {
                    assert!(
                        matches!(decision, Decision::Forbidden(_)),
                        "{token} {scope:?}"
                    );
                }
            }
        }
        for scope in Scope::ALL {
            assert_eq!(
                decide(&cluster, &HeaderMap::new(), scope, Surface::Both),
                Decision::Unauthorized
            );
            assert_eq!(
                decide(
                    &cluster,
                    &bearer("not-a-token-at-all"),
                    scope,
                    Surface::Both
                ),
                Decision::Unauthorized
            );
        }
        // The secret opens admin routes only, and not on a client listener; a client route
        // wants a token.
        let secret = headers(&[(SECRET_HEADER, "current-secret-0123456789")]);
        for surface in [Surface::Both, Surface::Peer] {
            assert_eq!(
                decide(&cluster, &secret, Scope::Admin, surface),
                Decision::Allow(None)
            );
        }
        assert_eq!(
            decide(&cluster, &secret, Scope::Admin, Surface::Client),
            Decision::Unauthorized
        );
        assert_eq!(
            decide(&cluster, &secret, Scope::Write, Surface::Both),
            Decision::Unauthorized
        );
        let caller = |name: &str| {
            Decision::Allow(Some(Caller {
                token_name: name.into(),
                legacy: false,
            }))
        };
        let ops = bearer("ops-token-0000001");
        assert_eq!(
            decide(&cluster, &ops, Scope::Admin, Surface::Client),
            caller("ops")
        );
        let checkout = bearer("checkout-token-01");
        assert_eq!(
            decide(&cluster, &checkout, Scope::Reserve, Surface::Both),
            caller("checkout")
        );
    }

    #[test]
    fn whoami_names_the_scopes_the_guards_would_grant() {
        let closed = cluster(&[
            (
                "checkout",
                "checkout-token-01",
                &[Scope::Read, Scope::Reserve],
            ),
            ("ops", "ops-token-0000001", &[Scope::Admin]),
        ]);
        let bearer = |token: &str| headers(&[("authorization", &format!("Bearer {token}"))]);
        let checkout = whoami(&closed, &bearer("checkout-token-01")).unwrap();
        assert_eq!(checkout.token.as_deref(), Some("checkout"));
        assert_eq!(checkout.scopes, ["read", "reserve"]);
        assert!(checkout.tokens_required);
        assert_eq!(
            whoami(&closed, &bearer("ops-token-0000001"))
                .unwrap()
                .scopes,
            ["admin"]
        );
        let nobody = whoami(&closed, &HeaderMap::new()).unwrap();
        assert_eq!((nobody.token, nobody.scopes.len()), (None, 0));
        assert!(whoami(&closed, &bearer("not-a-token-at-all")).is_err());
        // What it says agrees with the guards, scope by scope.
        for token in ["checkout-token-01", "ops-token-0000001"] {
            let granted = whoami(&closed, &bearer(token)).unwrap().scopes;
            for scope in Scope::ALL {
                let allowed = matches!(
                    decide(&closed, &bearer(token), scope, Surface::Client),
                    Decision::Allow(_)
                );
                assert_eq!(granted.contains(&scope.as_str().to_owned()), allowed);
            }
        }
        // No token configured: every client scope, admin never.
        let open = whoami(&cluster(&[]), &HeaderMap::new()).unwrap();
        assert!(!open.tokens_required);
        assert_eq!(open.scopes, ["read", "reserve", "write"]);
        for scope in Scope::ALL {
            let allowed = decide(&cluster(&[]), &HeaderMap::new(), scope, Surface::Client)
                == Decision::Allow(None);
            assert_eq!(open.scopes.contains(&scope.as_str().to_owned()), allowed);
        }
    }

    #[test]
    fn without_tokens_client_routes_are_open_and_admin_routes_are_not() {
        let open = cluster(&[]);
        let none = HeaderMap::new();
        for scope in [Scope::Read, Scope::Reserve, Scope::Write] {
            assert_eq!(
                decide(&open, &none, scope, Surface::Both),
                Decision::Allow(None)
            );
        }
        assert_eq!(
            decide(&open, &none, Scope::Admin, Surface::Both),
            Decision::Unauthorized
        );
        // The legacy single token keeps what it had: every client route, no admin one.
        let legacy = ClusterConfig {
            client_token: Some("legacy-token-123".into()),
            ..open
        };
        let bearer = headers(&[("authorization", "Bearer legacy-token-123")]);
        for scope in [Scope::Read, Scope::Reserve, Scope::Write] {
            let expected = Decision::Allow(Some(Caller {
                token_name: "default".into(),
                legacy: true,
            }));
            assert_eq!(decide(&legacy, &bearer, scope, Surface::Both), expected);
        }
        assert!(matches!(
            decide(&legacy, &bearer, Scope::Admin, Surface::Both),
            Decision::Forbidden(_)
        ));
        assert_eq!(
            decide(&legacy, &none, Scope::Read, Surface::Both),
            Decision::Unauthorized
        );
    }
}
