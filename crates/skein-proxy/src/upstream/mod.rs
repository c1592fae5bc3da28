//! Where a request leaves: clusters and their endpoints, connection pools, load balancing,
//! outlier detection, the retry budget, the request body on its way out, and the TLS a
//! DestinationRule's SIMPLE or MUTUAL mode originates.

pub(crate) mod body;
pub(crate) mod budget;
pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod lb;
pub(crate) mod outlier;
pub(crate) mod tls;
