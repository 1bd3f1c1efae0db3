//! Secret references: `${env:NAME}`, `${file:PATH}` or a literal. Errors name the reference
//! (which says where the secret lives), never the text it resolved to, and never a literal.

use std::path::Path;

use crate::secret::Secret;

/// Where a secret field's value comes from.
#[derive(Debug, PartialEq, Eq)]
enum SecretRef<'a> {
    Env(&'a str),
    File(&'a str),
    Literal,
}

/// Resolves a secret field's text. Relative file paths are taken from `base_dir`.
pub(super) fn resolve(text: &str, base_dir: &Path) -> Result<Secret, String> {
    match parse(text)? {
        SecretRef::Literal => Ok(Secret::new(text)),
        SecretRef::Env(name) => match std::env::var(name) {
            Ok(value) if value.is_empty() => Err(format!("${{env:{name}}} is empty")),
            Ok(value) => Ok(Secret::new(value)),
            Err(std::env::VarError::NotPresent) => Err(format!("${{env:{name}}} is not set")),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(format!("${{env:{name}}} is not valid UTF-8"))
            }
        },
        SecretRef::File(written) => {
            let path = base_dir.join(written);
            let shown = if Path::new(written).is_absolute() {
                format!("${{file:{written}}}")
            } else {
                format!("${{file:{written}}} ({})", path.display())
            };
            let mut value = std::fs::read_to_string(&path)
                .map_err(|error| format!("cannot read {shown}: {error}"))?;
            // Files written by editors and `echo` end with a newline that is not part of the secret.
            if value.ends_with('\n') {
                value.pop();
                if value.ends_with('\r') {
                    value.pop();
                }
            }
            if value.is_empty() {
                return Err(format!("{shown} is empty"));
            }
            Ok(Secret::new(value))
        }
    }
}

/// Tells references from literals. Anything starting with `${` is meant as a reference, so a
/// malformed one is an error rather than a literal; the message does not repeat the text.
fn parse(text: &str) -> Result<SecretRef<'_>, String> {
    let Some(inner) = text.strip_prefix("${") else {
        return Ok(SecretRef::Literal);
    };
    let malformed =
        || "malformed secret reference: expected ${env:NAME} or ${file:PATH}".to_string();
    let inner = inner.strip_suffix('}').ok_or_else(malformed)?;
    if let Some(name) = inner.strip_prefix("env:") {
        let valid = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        return if valid {
            Ok(SecretRef::Env(name))
        } else {
            Err(malformed())
        };
    }
    if let Some(path) = inner.strip_prefix("file:") {
        return if path.is_empty() {
            Err(malformed())
        } else {
            Ok(SecretRef::File(path))
        };
    }
    Err(malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_and_literals_are_told_apart() {
        assert_eq!(parse("${env:CR_SECRET}"), Ok(SecretRef::Env("CR_SECRET")));
        assert_eq!(parse("${file:/run/s}"), Ok(SecretRef::File("/run/s")));
        assert_eq!(parse("plain-$-text"), Ok(SecretRef::Literal));
        assert_eq!(parse("$notref"), Ok(SecretRef::Literal));
        for bad in [
            "${env:}",
            "${env:A-B}",
            "${env:1A}",
            "${file:}",
            "${vault:x}",
            "${env:X",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_reference_error_does_not_repeat_the_text() {
        let error = resolve("${do-not-print}", Path::new(".")).unwrap_err();
        assert!(!error.contains("do-not-print"), "{error}");
    }

    #[test]
    fn env_reference_reads_the_variable() {
        // Cargo sets CARGO_MANIFEST_DIR for the tests it runs; tests may not set variables.
        let secret = resolve("${env:CARGO_MANIFEST_DIR}", Path::new(".")).unwrap();
        assert_eq!(secret.expose(), env!("CARGO_MANIFEST_DIR"));
        let error = resolve("${env:AUTHRELAY_SURELY_UNSET_7F3A}", Path::new(".")).unwrap_err();
        assert_eq!(error, "${env:AUTHRELAY_SURELY_UNSET_7F3A} is not set");
    }

    #[test]
    fn file_reference_is_relative_and_loses_its_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("unix"), "s3cret\n").unwrap();
        std::fs::write(dir.path().join("dos"), "s3cret\r\n").unwrap();
        std::fs::write(dir.path().join("two"), "s3cret\n\n").unwrap();
        std::fs::write(dir.path().join("blank"), "\n").unwrap();
        assert_eq!(
            resolve("${file:unix}", dir.path()).unwrap().expose(),
            "s3cret"
        );
        assert_eq!(
            resolve("${file:dos}", dir.path()).unwrap().expose(),
            "s3cret"
        );
        assert_eq!(
            resolve("${file:two}", dir.path()).unwrap().expose(),
            "s3cret\n"
        );
        let error = resolve("${file:blank}", dir.path()).unwrap_err();
        assert!(error.starts_with("${file:blank} ("), "{error}");
        assert!(error.ends_with(") is empty"), "{error}");
        let error = resolve("${file:missing}", dir.path()).unwrap_err();
        assert!(
            error.starts_with("cannot read ${file:missing} ("),
            "{error}"
        );
        assert!(
            error.ends_with("No such file or directory (os error 2)"),
            "{error}"
        );
    }
}
