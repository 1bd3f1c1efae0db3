//! file -> Config (placeholder until the config module lands).

use std::path::Path;

use super::Config;
use super::error::ConfigErrors;
use super::file::ConfigFile;

pub fn validate(_file: ConfigFile, _base_dir: &Path) -> Result<Config, ConfigErrors> {
    unreachable!("ConfigFile::parse never succeeds yet")
}
