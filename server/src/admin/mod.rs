//! The admin room: the HTTP listener beside the Kafka listeners (`--http`), serving
//! `/metrics` (Prometheus text), background tasks and the TLS reload. Low-volume control
//! traffic on its own thread; it reads the running broker and never the data path.

pub mod http;
