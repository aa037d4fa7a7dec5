//! The network layer: the pieces every network adapter shares and that are no adapter
//! themselves — TLS configurations and the deployment trust of CPQ, certificate reading,
//! DNS, the SSH host key, the SMTP reply reader and the text of network errors. It
//! imports the core only; the adapters above import it.

pub mod cpq_certs;
pub mod dns;
pub mod host_key;
pub mod net_error;
pub mod outbound;
pub mod smtp_io;
pub mod tls;
pub mod trust;
