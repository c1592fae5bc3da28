pub mod dns;
pub mod ingress;
pub mod services;
