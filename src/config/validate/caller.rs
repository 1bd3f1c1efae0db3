//! `callers[i]` -> [`CallerConfig`]: a name and exactly one credential, an API key or a
//! certificate subject, none shared with another caller.

use std::path::Path;

use super::super::file::CallerFile;
use super::super::{CallerConfig, CallerCredential, CertSubject};
use super::{Problems, check_name, secret_ref};
use crate::metrics::names;

/// Shorter keys could be guessed; `openssl rand -hex 32` gives 64 characters.
const MIN_API_KEY_LEN: usize = 16;

/// Caller names are metric labels beside these two words, which stand for no caller.
fn check_caller_name(name: &str) -> Result<(), String> {
    check_name(name)?;
    if [names::CALLER_ANONYMOUS, names::CALLER_UNKNOWN].contains(&name) {
        return Err(format!(
            "`{name}` is reserved: metrics and logs use it for requests without a known caller"
        ));
    }
    Ok(())
}

pub(super) fn callers(
    files: &[CallerFile],
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<CallerConfig> {
    let mut callers: Vec<CallerConfig> = Vec::new();
    // Every readable credential with its index, valid name or not, to find twins.
    let mut credentials: Vec<(usize, CallerCredential)> = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let path = format!("callers[{i}]");
        let name = problems
            .check(format!("{path}.name"), check_caller_name(&file.name))
            .map(|()| file.name.clone());
        if let Some(j) = callers.iter().position(|caller| caller.name == file.name) {
            let message = format!("`{}` is already the name of callers[{j}]", file.name);
            problems.add(format!("{path}.name"), message);
        }
        let credential = match (&file.api_key, &file.cert_subject) {
            (Some(reference), None) => {
                let field = format!("{path}.api_key");
                let key = problems.check(&field, secret_ref::resolve(&reference.0, base_dir));
                key.and_then(|key| {
                    let long_enough = key.expose().chars().count() >= MIN_API_KEY_LEN;
                    let message = format!(
                        "must be at least {MIN_API_KEY_LEN} characters (make one with `openssl rand -hex 32`)"
                    );
                    problems.check(&field, long_enough.then_some(key).ok_or(message))
                })
                .map(CallerCredential::ApiKey)
            }
            (None, Some(text)) => problems
                .check(format!("{path}.cert_subject"), CertSubject::parse(text))
                .map(CallerCredential::CertSubject),
            (Some(_), Some(_)) => {
                problems.add(&path, "give either api_key or cert_subject, not both");
                None
            }
            (None, None) => {
                problems.add(&path, "needs api_key or cert_subject");
                None
            }
        };
        let Some(credential) = credential else {
            continue;
        };
        let twin = credentials
            .iter()
            .find(|(_, other)| other.same_as(&credential))
            .map(|(j, _)| *j);
        credentials.push((i, credential.clone()));
        if let Some(j) = twin {
            let field = match credential {
                CallerCredential::ApiKey(_) => "api_key",
                CallerCredential::CertSubject(_) => "cert_subject",
            };
            let message = format!(
                "is the same as callers[{j}].{field}: a request could not tell the two callers apart"
            );
            problems.add(format!("{path}.{field}"), message);
            continue;
        }
        if let Some(name) = name {
            callers.push(CallerConfig { name, credential });
        }
    }
    callers
}
