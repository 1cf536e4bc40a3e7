//! Command lines of actions: a `command` (or `target_check`) is split
//! shell-style into words once, and each `{placeholder}` in a word is
//! replaced by a fault field as data. No shell is run to do it, so quotes,
//! `;`, `$(…)` or a newline in a field stay part of one argument.
//!
//! Three rules keep a fault field data all the way into the program:
//! - **Filled once.** Placeholders are replaced in one pass over the
//!   template: a value holding `{recovery_target}` stays literal.
//! - **Never inline code.** A placeholder inside the script of a shell or
//!   an interpreter started by the command (`sh -c '… {keyword}'`,
//!   `python3 -c`, `perl -e`, `su -c`, `ssh HOST …`) or in the program word
//!   is refused by `config check` ([`check`]): the program would parse the
//!   value as code. Such a program reads the field from the `FAULTBRIDGE_*`
//!   environment, or as a positional argument after the script
//!   (`sh -c '… "$1"' sh {keyword}`).
//! - **Never an option.** A placeholder at the start of an argument whose
//!   value begins with `-` would be read as an option of the program: the
//!   action is refused when it would start ([`expand`]), counted and logged,
//!   unless an argument `--` comes before it in the command (the program
//!   then reads everything after `--` as operands).

use thiserror::Error;

/// The names a `{placeholder}` may take (filled by [`crate::action::variables`]).
pub const PLACEHOLDERS: &[&str] = &[
    "monitor",
    "category",
    "keyword",
    "key",
    "severity",
    "event_code",
    "sequence",
    "source",
    "device_index",
    "recovery_action",
    "recovery_target",
    "final_action",
    "node",
];

/// Why a command line is refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CommandError {
    #[error("it is empty or badly quoted")]
    Unsplittable,
    #[error("the program (first word) {word:?} holds a placeholder: write the program out")]
    PlaceholderProgram { word: String },
    #[error(
        "{{{placeholder}}} is inside the script of `{interpreter} {option}`, where a fault field would be parsed as code: read it from the environment instead ({}), or pass it as an argument after the script (`sh -c '… \"$1\"' sh {{{placeholder}}}`)",
        env_hint(placeholder)
    )]
    PlaceholderInScript {
        placeholder: String,
        interpreter: String,
        option: String,
    },
    #[error(
        "{{{placeholder}}} makes argument {index} {value:?}, which begins with '-' and would be read as an option; put `--` before the placeholder in the command to pass such values"
    )]
    OptionLike {
        placeholder: String,
        index: usize,
        value: String,
    },
}

/// The placeholders (known names only) of `word`, in order.
fn placeholders(word: &str) -> impl Iterator<Item = &'static str> + '_ {
    let mut rest = word;
    std::iter::from_fn(move || {
        loop {
            let open = rest.find('{')?;
            rest = &rest[open + 1..];
            let Some(close) = rest.find('}') else {
                rest = "";
                return None;
            };
            if let Some(name) = PLACEHOLDERS.iter().find(|n| **n == &rest[..close]) {
                rest = &rest[close + 1..];
                return Some(*name);
            }
        }
    })
}

/// `word` with each known `{name}` replaced by its value, in one pass.
fn fill(word: &str, vars: &[(&str, String)]) -> String {
    let mut out = String::with_capacity(word.len());
    let mut rest = word;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            vars.iter()
                .find(|(k, _)| *k == &after[..close])
                .map(|(_, v)| (close, v))
        });
        match value {
            Some((close, v)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Where a program given `{placeholder}` in inline code reads it instead.
fn env_hint(placeholder: &str) -> String {
    match placeholder {
        "key" => "\"$FAULTBRIDGE_CATEGORY.$FAULTBRIDGE_KEYWORD\"".into(),
        p => format!("\"$FAULTBRIDGE_{}\"", p.to_ascii_uppercase()),
    }
}

/// What a program of the command does with the words after it: which
/// options take inline code, and how the code word is found.
#[derive(Clone, Copy)]
enum Interpreter {
    /// `sh -c SCRIPT`: the first word after the option (cluster) that is
    /// not itself an option.
    Shell,
    /// `python3 -c CODE`, `perl -e CODE`, …: the word right after the
    /// option, or the rest of the option word (`-e'…'`).
    Inline(&'static [&'static str]),
    /// `ssh [options] HOST COMMAND…`: every word after the destination goes
    /// to the remote shell.
    Ssh,
}

fn interpreter(word: &str) -> Option<Interpreter> {
    let base = word.rsplit('/').next().unwrap_or(word);
    // python3.11 → python, perl5.36 → perl
    let name = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    Some(match name {
        "sh" | "bash" | "dash" | "zsh" | "ksh" | "mksh" | "ash" | "yash" | "fish" | "csh"
        | "tcsh" | "su" | "runuser" => Interpreter::Shell,
        "python" | "pypy" => Interpreter::Inline(&["-c"]),
        "perl" => Interpreter::Inline(&["-e", "-E"]),
        "ruby" | "lua" | "luajit" => Interpreter::Inline(&["-e"]),
        "node" | "nodejs" => Interpreter::Inline(&["-e", "--eval", "-p", "--print"]),
        "php" => Interpreter::Inline(&["-r"]),
        "ssh" => Interpreter::Ssh,
        _ => return None,
    })
}

/// ssh options that take an argument (OpenSSH).
const SSH_ARG_OPTIONS: &str = "BbcDEeFIiJLlmOoPpQRSWw";

/// The index of the word holding inline code, and the option that made it
/// code, for an interpreter at `at`; `None` when it runs no inline code.
fn code_words(words: &[String], at: usize, kind: Interpreter) -> Vec<(usize, String)> {
    let rest = || words.iter().enumerate().skip(at + 1);
    match kind {
        Interpreter::Shell => {
            let mut option = None;
            for (i, w) in rest() {
                match &option {
                    None => {
                        let is_c = w == "--command"
                            || (w.starts_with('-') && !w.starts_with("--") && w.contains('c'));
                        if is_c {
                            option = Some(w.clone());
                        } else if w.starts_with("--command=") {
                            return vec![(i, "--command".into())];
                        } else if !w.starts_with('-') {
                            // A script file: its arguments are data.
                            return Vec::new();
                        }
                    }
                    Some(o) => {
                        if !w.starts_with('-') {
                            return vec![(i, o.clone())];
                        }
                    }
                }
            }
            Vec::new()
        }
        Interpreter::Inline(options) => {
            for (i, w) in rest() {
                for o in options {
                    if w == o {
                        return vec![(i + 1, (*o).to_string())];
                    }
                    if o.len() == 2 && w.starts_with(o) {
                        return vec![(i, (*o).to_string())];
                    }
                    if w.strip_prefix(o).is_some_and(|r| r.starts_with('=')) {
                        return vec![(i, (*o).to_string())];
                    }
                }
                if !w.starts_with('-') {
                    // A script file: its arguments are data.
                    return Vec::new();
                }
            }
            Vec::new()
        }
        Interpreter::Ssh => {
            let mut it = rest();
            while let Some((_, w)) = it.next() {
                if w == "--" {
                    it.next();
                    break;
                }
                if let Some(opts) = w.strip_prefix('-') {
                    // In a cluster, the first option that takes an argument
                    // takes the rest of the word (`-lroot`), or the next
                    // word when it ends the cluster (`-tp 22`).
                    let takes = opts
                        .char_indices()
                        .find(|(_, c)| SSH_ARG_OPTIONS.contains(*c));
                    if takes.is_some_and(|(i, _)| i + 1 == opts.len()) {
                        it.next();
                    }
                    continue;
                }
                // The destination; the rest is the remote command.
                break;
            }
            it.map(|(i, _)| (i, "HOST COMMAND".to_string())).collect()
        }
    }
}

/// Checks a command template for `config check`: it splits, its program is
/// written out, and no placeholder sits where a program parses it as code.
/// Returns its words.
pub fn check(template: &str) -> Result<Vec<String>, CommandError> {
    let words = shlex::split(template).ok_or(CommandError::Unsplittable)?;
    let Some(program) = words.first() else {
        return Err(CommandError::Unsplittable);
    };
    if placeholders(program).next().is_some() {
        return Err(CommandError::PlaceholderProgram {
            word: program.clone(),
        });
    }
    for (at, w) in words.iter().enumerate() {
        let Some(kind) = interpreter(w) else { continue };
        for (i, option) in code_words(&words, at, kind) {
            if let Some(p) = words.get(i).and_then(|w| placeholders(w).next()) {
                return Err(CommandError::PlaceholderInScript {
                    placeholder: p.to_string(),
                    interpreter: w.clone(),
                    option,
                });
            }
        }
    }
    Ok(words)
}

/// Splits `template` and fills its placeholders from `vars` (one pass, each
/// value one argument or part of one). Refuses a value that would begin an
/// argument with `-` unless `--` comes before it.
pub fn expand(template: &str, vars: &[(&str, String)]) -> Result<Vec<String>, CommandError> {
    let words = shlex::split(template).ok_or(CommandError::Unsplittable)?;
    if words.is_empty() {
        return Err(CommandError::Unsplittable);
    }
    let mut operands = false;
    let mut out = Vec::with_capacity(words.len());
    for (index, w) in words.into_iter().enumerate() {
        if !w.contains('{') {
            operands |= w == "--";
            out.push(w);
            continue;
        }
        let value = fill(&w, vars);
        // The template word does not begin with '-' but the argument does:
        // the dash came from a value.
        if index > 0 && !operands && !w.starts_with('-') && value.starts_with('-') {
            return Err(CommandError::OptionLike {
                placeholder: placeholders(&w).next().unwrap_or_default().to_string(),
                index,
                value,
            });
        }
        out.push(value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(keyword: &str) -> Vec<(&'static str, String)> {
        vec![
            ("category", "NIC".into()),
            ("keyword", keyword.into()),
            ("key", format!("NIC.{keyword}")),
            ("recovery_target", "grp1".into()),
        ]
    }

    #[test]
    fn placeholders_fill_whole_words_as_data() {
        let w = expand(
            "clprexec --notice -k {category}.{keyword} --x={keyword}",
            &vars("eth 0; id"),
        )
        .unwrap();
        assert_eq!(
            w,
            [
                "clprexec",
                "--notice",
                "-k",
                "NIC.eth 0; id",
                "--x=eth 0; id"
            ]
        );
    }

    #[test]
    fn a_value_is_never_expanded_again() {
        let w = expand(
            "prog {keyword} {recovery_target}",
            &vars("{recovery_target}"),
        )
        .unwrap();
        assert_eq!(w, ["prog", "{recovery_target}", "grp1"]);
        // Unknown names and lone braces stay as written.
        let w = expand("prog {nope} {keyword", &vars("x")).unwrap();
        assert_eq!(w, ["prog", "{nope}", "{keyword"]);
    }

    #[test]
    fn a_value_that_would_be_an_option_is_refused_unless_after_double_dash() {
        assert_eq!(
            expand("prog {keyword}", &vars("-rf")),
            Err(CommandError::OptionLike {
                placeholder: "keyword".into(),
                index: 1,
                value: "-rf".into()
            })
        );
        assert!(expand("prog {keyword}x", &vars("--help")).is_err());
        assert_eq!(
            expand("prog -- {keyword}", &vars("-rf")).unwrap(),
            ["prog", "--", "-rf"]
        );
        // Attached to an option, or after a prefix, it is the option's value.
        assert!(expand("prog -k{keyword} --k={keyword} x{keyword}", &vars("-rf")).is_ok());
        assert!(expand("prog -k {key}", &vars("-rf")).is_ok());
    }

    #[test]
    fn placeholders_in_inline_code_are_refused_at_check() {
        for bad in [
            "/bin/sh -c 'echo {keyword} > /tmp/x'",
            "bash -ec 'logger {key}'",
            "/usr/bin/env bash -c 'x {keyword}'",
            "sudo -u op sh -c -- 'x {keyword}'",
            "su -c 'x {keyword}' op",
            "python3.11 -c 'print(\"{keyword}\")'",
            "perl -e'print \"{keyword}\"'",
            "ssh -p 22 node2 logger {keyword}",
            "ssh -tp 22 -lroot node2 logger {keyword}",
            "node --eval=x{keyword}",
        ] {
            assert!(
                matches!(check(bad), Err(CommandError::PlaceholderInScript { .. })),
                "{bad}: {:?}",
                check(bad)
            );
        }
        for good in [
            "/bin/sh -c 'logger \"$FAULTBRIDGE_KEYWORD\"'",
            "/bin/sh -c 'logger \"$1\"' sh {keyword}",
            "/bin/bash /opt/on-fault.sh {keyword}",
            "/usr/bin/python3 /opt/prog.py {keyword}",
            "clprexec --notice -k {key}",
            "ssh node2 logger fault",
        ] {
            assert!(check(good).is_ok(), "{good}: {:?}", check(good));
        }
        assert!(matches!(
            check("{keyword} --now"),
            Err(CommandError::PlaceholderProgram { .. })
        ));
        assert_eq!(check("prog 'unterminated"), Err(CommandError::Unsplittable));
        assert_eq!(check("  "), Err(CommandError::Unsplittable));
    }

    #[test]
    fn the_refusal_points_to_the_environment() {
        let e = check("/bin/sh -c 'echo {keyword}'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"$FAULTBRIDGE_KEYWORD\""), "{e}");
        assert!(e.contains("`/bin/sh -c`"), "{e}");
        let e = check("sh -c 'echo {key}'").unwrap_err().to_string();
        assert!(
            e.contains("$FAULTBRIDGE_CATEGORY.$FAULTBRIDGE_KEYWORD"),
            "{e}"
        );
    }
}
