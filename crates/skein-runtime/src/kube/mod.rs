pub mod ingress;
pub mod services;
