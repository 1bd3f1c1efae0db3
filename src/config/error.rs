//! Configuration errors. Each names where in `proxy.yaml` the problem is (`routes[2].provider`)
//! and never carries a secret's value, only the reference that failed (`${env:CR_SECRET}`).

use std::path::PathBuf;

/// One problem found in a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {error}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    /// YAML syntax, an unknown key, or a wrong type: serde-saphyr's message carries line and column.
    #[error("{message}")]
    Syntax { message: String },
    /// A value that parsed but means nothing valid; `path` is the YAML path of the field.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// Every problem found in one configuration, in file order.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

// === impl ConfigError ===

impl ConfigError {
    /// A semantic error at a YAML path.
    pub fn invalid(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}

// === impl ConfigErrors ===

impl ConfigErrors {
    /// The problems, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}

impl std::fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}
