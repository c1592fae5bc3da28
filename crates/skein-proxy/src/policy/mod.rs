//! Is this allowed? AuthorizationPolicy, RequestAuthentication (JWT) and
//! PeerAuthentication, compiled and evaluated (pure, no I/O, except the fetch of a
//! `jwksUri`).

pub(crate) mod authz;
pub(crate) mod jwt;
pub(crate) mod peer_authn;
