//! Errors about a parameter's value, named by the library and renamed by each front end.
//!
//! The library names its own parameters (`num_updates`, `sketch_dim`); the command line knows them as flags
//! (`--updates`, `--sketch-dim`) and the audit as TOML keys (`measure.updates`). A [`ParamError`] carries the
//! parameter's name; [`rename_params`] rewrites the error with the front end's names, so a user reads the name
//! they wrote. Other parameters a message mentions are written in backquotes (`` `resume` ``) and renamed too.

use std::fmt;

/// An invalid value of a named parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    /// The library's name of the parameter.
    pub param: &'static str,
    /// What is wrong, e.g. "must be at least 1, got 0"; other parameters in backquotes.
    pub message: String,
    /// The message is a whole sentence that names the parameter in words ("the number of iterations must be at
    /// least 1"): a front end puts its name in front (`--iterations: the number ...`) instead of the subject.
    pub sentence: bool,
}

impl ParamError {
    /// An error whose message is a whole sentence naming the parameter in words (see [`ParamError::sentence`]).
    pub fn sentence(param: &'static str, message: impl Into<String>) -> anyhow::Error {
        anyhow::Error::new(ParamError { param, message: message.into(), sentence: true })
    }

    /// The message with the parameter names given by `name` (unknown names are kept).
    pub fn render(&self, name: &dyn Fn(&str) -> Option<String>) -> String {
        let mut text = match (self.sentence, name(self.param)) {
            (true, Some(renamed)) => format!("{renamed}: {}", self.message),
            (true, None) => self.message.clone(),
            (false, renamed) => format!("{} {}", renamed.unwrap_or_else(|| self.param.to_string()), self.message),
        };
        let mut out = String::with_capacity(text.len());
        while let Some(start) = text.find('`') {
            let Some(len) = text[start + 1..].find('`') else { break };
            let inner = &text[start + 1..start + 1 + len];
            out.push_str(&text[..start]);
            match name(inner) {
                Some(renamed) => out.push_str(&renamed),
                None => out.push_str(&text[start..start + len + 2]),
            }
            text = text[start + len + 2..].to_string();
        }
        out.push_str(&text);
        out
    }
}

impl fmt::Display for ParamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(&|_| None))
    }
}

impl std::error::Error for ParamError {}

/// Returns early with a [`ParamError`] about `param`: `param_bail!("num_updates", "must be at least 1, got {n}")`.
#[macro_export]
macro_rules! param_bail {
    ($param:expr, $($message:tt)+) => {
        return Err(anyhow::Error::new($crate::error::ParamError {
            param: $param,
            message: format!($($message)+),
            sentence: false,
        }))
    };
}

/// Rewrites every [`ParamError`] in `error`'s chain with the names of `names` (library name, front-end name),
/// keeping the other layers: one line, as the command line prints it.
pub fn rename_params(error: anyhow::Error, names: &[(&str, &str)]) -> anyhow::Error {
    if !error.chain().any(|c| c.downcast_ref::<ParamError>().is_some()) {
        return error;
    }
    let name = |param: &str| names.iter().find(|(p, _)| *p == param).map(|(_, n)| n.to_string());
    let layers: Vec<String> = error
        .chain()
        .map(|c| match c.downcast_ref::<ParamError>() {
            Some(p) => p.render(&name),
            None => c.to_string(),
        })
        .collect();
    anyhow::anyhow!("{}", layers.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    fn check(n: i64) -> anyhow::Result<()> {
        if n < 1 {
            param_bail!("num_updates", "must be at least 1, got {n}; or set `resume`");
        }
        Ok(())
    }

    #[test]
    fn front_ends_rename_parameters_and_keep_context() {
        let e = check(0).context("cell 3").unwrap_err();
        assert_eq!(format!("{e:#}"), "cell 3: num_updates must be at least 1, got 0; or set `resume`");
        let cli = rename_params(e, &[("num_updates", "--updates"), ("resume", "--resume")]);
        assert_eq!(format!("{cli:#}"), "cell 3: --updates must be at least 1, got 0; or set --resume");
        let other = rename_params(anyhow::anyhow!("plain"), &[("num_updates", "--updates")]);
        assert_eq!(other.to_string(), "plain");
    }
}
