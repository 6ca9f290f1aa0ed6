//! A small command-line parser: flags with values (`-t T`, `--topic T`, `--topic=T`), switches
//! and positionals. Hand-written because kbus has a dozen flags and a static binary's size is
//! a product goal; every mistake is reported as one line naming the flag.

use std::collections::VecDeque;
use std::str::FromStr;

#[derive(Debug)]
pub struct Args {
    rest: VecDeque<String>,
}

impl Args {
    pub fn new(args: impl IntoIterator<Item = String>) -> Self {
        Args {
            rest: args.into_iter().collect(),
        }
    }

    /// Removes `--long VALUE`, `--long=VALUE` or `-s VALUE` and returns the value (the last
    /// one given, if repeated).
    pub fn value(&mut self, short: Option<&str>, long: &str) -> Result<Option<String>, String> {
        let mut found = None;
        while let Some(v) = self.take_one(short, long)? {
            found = Some(v);
        }
        Ok(found)
    }

    /// Every occurrence of a repeatable flag, in order.
    pub fn values(&mut self, short: Option<&str>, long: &str) -> Result<Vec<String>, String> {
        let mut all = Vec::new();
        while let Some(v) = self.take_one(short, long)? {
            all.push(v);
        }
        Ok(all)
    }

    fn take_one(&mut self, short: Option<&str>, long: &str) -> Result<Option<String>, String> {
        let eq = format!("{long}=");
        for i in 0..self.rest.len() {
            let a = &self.rest[i];
            if a == "--" {
                break;
            }
            if let Some(v) = a.strip_prefix(&eq) {
                let v = v.to_owned();
                self.rest.remove(i);
                return Ok(Some(v));
            }
            if a == long || short.is_some_and(|s| a == s) {
                let flag = a.clone();
                self.rest.remove(i);
                return match self.rest.remove(i) {
                    Some(v) => Ok(Some(v)),
                    None => Err(format!("{flag} needs a value")),
                };
            }
        }
        Ok(None)
    }

    /// A value parsed as `T`, with a message naming the flag when it does not parse.
    pub fn parsed<T: FromStr>(
        &mut self,
        short: Option<&str>,
        long: &str,
    ) -> Result<Option<T>, String> {
        match self.value(short, long)? {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("{long}: {v:?} is not a valid value")),
        }
    }

    /// Removes a switch; true if it was present.
    pub fn switch(&mut self, short: Option<&str>, long: &str) -> bool {
        let before = self.rest.len();
        self.rest
            .retain(|a| a != long && short.is_none_or(|s| a != s));
        self.rest.len() != before
    }

    /// The next positional argument.
    pub fn positional(&mut self) -> Option<String> {
        let i = self
            .rest
            .iter()
            .position(|a| !a.starts_with('-') || a == "-")?;
        self.rest.remove(i)
    }

    /// Fails on anything not consumed, so a mistyped flag is never silently ignored.
    pub fn finish(self) -> Result<(), String> {
        match self.rest.front() {
            None => Ok(()),
            Some(a) if a.starts_with('-') => Err(format!("unknown flag {a}")),
            Some(a) => Err(format!("unexpected argument {a:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Args {
        Args::new(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn flags_in_every_spelling() {
        let mut a = args("produce -t orders --acks=1 --linger-ms 5 -c a=1 --config b=2 -e");
        assert_eq!(a.value(Some("-t"), "--topic").unwrap().unwrap(), "orders");
        assert_eq!(a.value(None, "--acks").unwrap().unwrap(), "1");
        assert_eq!(a.parsed::<u64>(None, "--linger-ms").unwrap(), Some(5));
        assert_eq!(a.values(Some("-c"), "--config").unwrap(), ["a=1", "b=2"]);
        assert!(a.switch(Some("-e"), "--exit-at-end"));
        assert_eq!(a.positional().unwrap(), "produce");
        a.finish().unwrap();
    }

    #[test]
    fn mistakes_are_named() {
        let mut a = args("--count");
        assert_eq!(
            a.value(None, "--count").unwrap_err(),
            "--count needs a value"
        );
        let mut a = args("--count ten");
        assert!(
            a.parsed::<u64>(None, "--count")
                .unwrap_err()
                .contains("\"ten\"")
        );
        assert_eq!(
            args("--bogus").finish().unwrap_err(),
            "unknown flag --bogus"
        );
        assert!(args("stray").finish().unwrap_err().contains("stray"));
    }
}
