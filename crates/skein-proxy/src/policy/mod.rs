//! Is this allowed? AuthorizationPolicy and PeerAuthentication, compiled and evaluated
//! (pure, no I/O).

pub(crate) mod authz;
pub(crate) mod peer_authn;
