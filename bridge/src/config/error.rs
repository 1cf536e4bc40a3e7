//! Where a mistake is: [`ConfigError`] and the context that turns a byte
//! offset of the file into its line and column.

use super::duration::{DurationBound, parse_duration};
use super::names::Named;
use std::path::{Path, PathBuf};
use std::time::Duration;
use thiserror::Error;
use toml::Spanned;

/// A configuration that could not be used: where and why.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

/// The text being validated and its name: every check reports through it.
pub(super) struct Ctx<'a> {
    pub path: &'a Path,
    pub text: &'a str,
}

impl Ctx<'_> {
    /// An error at byte `offset` of the text.
    pub fn at(&self, offset: usize, message: impl Into<String>) -> ConfigError {
        let upto = &self.text[..offset.min(self.text.len())];
        let line = upto.matches('\n').count() + 1;
        let column = upto
            .rfind('\n')
            .map_or(upto.len(), |nl| upto.len() - nl - 1)
            + 1;
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            column,
            message: message.into(),
        }
    }

    /// An error at the value `v`.
    pub fn spanned<T>(&self, v: &Spanned<T>, message: impl Into<String>) -> ConfigError {
        self.at(v.span().start, message)
    }

    /// The integer `v` of `key`, refused outside `lo..=hi`.
    pub fn int_in(
        &self,
        v: &Spanned<i64>,
        key: &str,
        lo: i64,
        hi: i64,
    ) -> Result<i64, ConfigError> {
        let x = *v.get_ref();
        if x < lo || x > hi {
            return Err(self.spanned(v, format!("{key} = {x}: must be in {lo}..={hi}")));
        }
        Ok(x)
    }

    /// The enum value named by `v` (the one place names become values).
    pub fn named<T: Named>(&self, v: &Spanned<String>, key: &str) -> Result<T, ConfigError> {
        T::from_name(v.get_ref()).ok_or_else(|| {
            self.spanned(
                v,
                format!(
                    "unknown {key} {:?}: expected {}",
                    v.get_ref(),
                    T::expected()
                ),
            )
        })
    }

    /// The duration `v` of `key`, refused beyond `bound`.
    pub fn duration(
        &self,
        v: &Spanned<String>,
        key: &str,
        bound: DurationBound,
    ) -> Result<Duration, ConfigError> {
        let d = parse_duration(v.get_ref()).map_err(|m| self.spanned(v, m))?;
        bound
            .check(d)
            .map_err(|m| self.spanned(v, format!("{key} = {:?}: {m}", v.get_ref())))
    }
}

/// A type mistake in TOML's words: serde says `invalid type: string "1",
/// expected i64`, a TOML user reads `expected an integer, found a string "1"`.
/// Other messages pass unchanged.
pub(super) fn toml_words(message: &str) -> String {
    let Some((found, expected)) = message
        .strip_prefix("invalid type: ")
        .and_then(|m| m.rsplit_once(", expected "))
    else {
        return message.to_string();
    };
    let expected = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" => "an integer",
        "f32" | "f64" => "a float",
        "a sequence" => "an array",
        "path string" | "a string" => "a string",
        "a boolean" => "a boolean (true or false)",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    let (kind, value) = found.split_once(' ').unwrap_or((found, ""));
    let kind = match kind {
        "integer" => "an integer",
        "floating" => "a float",
        "string" => "a string",
        "boolean" => "a boolean",
        "sequence" => "an array",
        "map" => "a table",
        _ => return format!("expected {expected}, found {found}"),
    };
    let value = value.trim_start_matches("point ").trim_matches('`');
    if value.is_empty() {
        format!("expected {expected}, found {kind}")
    } else {
        format!("expected {expected}, found {kind} {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::toml_words;

    #[test]
    fn type_mistakes_speak_toml() {
        for (serde, toml) in [
            (
                "invalid type: string \"1\", expected i64",
                "expected an integer, found a string \"1\"",
            ),
            (
                "invalid type: floating point `1.5`, expected i64",
                "expected an integer, found a float 1.5",
            ),
            (
                "invalid type: string \"eth*\", expected a sequence",
                "expected an array, found a string \"eth*\"",
            ),
            (
                "invalid type: integer `3`, expected struct RawThreshold",
                "expected a table, found an integer 3",
            ),
            (
                "invalid type: integer `3`, expected path string",
                "expected a string, found an integer 3",
            ),
            (
                "invalid type: sequence, expected a string",
                "expected a string, found an array",
            ),
            (
                "invalid type: string \"yes\", expected a boolean",
                "expected a boolean (true or false), found a string \"yes\"",
            ),
            ("unknown field `x`", "unknown field `x`"),
        ] {
            assert_eq!(toml_words(serde), toml);
        }
    }
}
