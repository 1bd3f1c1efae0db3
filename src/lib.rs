//! authrelay: an authenticating reverse proxy.

pub mod config;
pub mod sandbox;
pub mod secret;
