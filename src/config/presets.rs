//! Vendor presets as data (placeholder until the config module lands).

/// Names accepted by `preset:`.
pub const PRESET_NAMES: &[&str] = &[];
