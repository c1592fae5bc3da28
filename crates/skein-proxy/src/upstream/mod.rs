//! Where a request leaves: clusters and their endpoints, connection pools, load balancing,
//! outlier detection, the retry budget, and the request body on its way out.

pub(crate) mod body;
pub(crate) mod budget;
pub(crate) mod cluster;
pub(crate) mod endpoint;
pub(crate) mod lb;
pub(crate) mod outlier;
