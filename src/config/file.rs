//! The serde mirror of `proxy.yaml` (placeholder until the config module lands).

use super::error::{ConfigError, ConfigErrors};

/// The file as written.
#[derive(Debug)]
pub struct ConfigFile;

impl ConfigFile {
    pub fn parse(_text: &str) -> Result<ConfigFile, ConfigErrors> {
        Err(ConfigError::Syntax {
            message: "config parsing is not built yet".into(),
        }
        .into())
    }
}
