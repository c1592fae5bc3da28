pub(crate) mod dns;
pub(crate) mod ingress;
pub(crate) mod services;
