//! Command line of `peer-bench`. Hand-parsed: the flags are few and fixed, and the same flag
//! names are what `peer-report` passes to `kbus bench`, so they are spelled out in one place.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Rdkafka,
    Krafka,
    Rskafka,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::Rdkafka, Client::Krafka, Client::Rskafka];

    pub fn name(self) -> &'static str {
        match self {
            Client::Rdkafka => "rdkafka",
            Client::Krafka => "krafka",
            Client::Rskafka => "rskafka",
        }
    }
}

impl FromStr for Client {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Client::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| format!("unknown client {s:?} (rdkafka, krafka or rskafka)"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Produce,
    Consume,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "produce" => Ok(Mode::Produce),
            "consume" => Ok(Mode::Consume),
            _ => Err(format!("unknown mode {s:?} (produce or consume)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    All,
    Leader,
    None,
}

impl Acks {
    pub fn name(self) -> &'static str {
        match self {
            Acks::All => "all",
            Acks::Leader => "1",
            Acks::None => "0",
        }
    }

    /// The wire value of the Produce request's `acks` field.
    pub fn wire(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
            Acks::None => 0,
        }
    }
}

impl FromStr for Acks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" | "-1" => Ok(Acks::All),
            "1" => Ok(Acks::Leader),
            "0" => Ok(Acks::None),
            _ => Err(format!("unknown acks {s:?} (all, 1 or 0)")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!(
                "unknown compression {s:?} (none, gzip, snappy, lz4 or zstd)"
            )),
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One workload, as given on the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchArgs {
    pub client: Client,
    pub mode: Mode,
    pub brokers: String,
    pub topic: String,
    pub count: u64,
    pub size: usize,
    /// Create the topic with this many partitions when it does not exist yet.
    pub partitions: Option<i32>,
    pub acks: Acks,
    pub compression: Compression,
    pub linger_ms: u64,
    /// Records per produce request for rskafka, which has no accumulator of its own.
    pub chunk: usize,
    /// Largest record batch for the clients that accumulate (rdkafka `batch.size`, krafka
    /// `batch_size`). One value for both so that neither is measured with a smaller batch than
    /// the other; the default is librdkafka's own.
    pub batch_bytes: usize,
    /// The consumer's fetch max wait; `None` keeps the client's default (500 ms for all three).
    pub fetch_max_wait_ms: Option<u64>,
}

pub const USAGE: &str = "usage: peer-bench --client rdkafka|krafka|rskafka --mode produce|consume \
--brokers HOST:PORT --topic T --count N --size BYTES [--partitions P] [--acks all|1|0] \
[--compression none|gzip|snappy|lz4|zstd] [--linger-ms MS] [--batch-bytes BYTES] [--chunk RECORDS] \
[--fetch-max-wait-ms MS]";

impl BenchArgs {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<BenchArgs, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut client = None;
        let mut mode = None;
        let mut brokers = None;
        let mut topic = None;
        let mut count = None;
        let mut size = None;
        let mut partitions = None;
        let mut acks = Acks::All;
        let mut compression = Compression::None;
        let mut linger_ms = 5;
        let mut chunk = 1000;
        let mut batch_bytes = 1_000_000;
        let mut fetch_max_wait_ms = None;

        let mut it = args.into_iter().map(Into::into);
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
            };
            match flag.as_str() {
                "--client" => client = Some(value()?.parse()?),
                "--mode" => mode = Some(value()?.parse()?),
                "--brokers" => brokers = Some(value()?),
                "--topic" => topic = Some(value()?),
                "--count" => count = Some(number(&flag, &value()?)?),
                "--size" => size = Some(number(&flag, &value()?)?),
                "--partitions" => partitions = Some(number(&flag, &value()?)?),
                "--acks" => acks = value()?.parse()?,
                "--compression" => compression = value()?.parse()?,
                "--linger-ms" => linger_ms = number(&flag, &value()?)?,
                "--chunk" => chunk = number(&flag, &value()?)?,
                "--batch-bytes" => batch_bytes = number(&flag, &value()?)?,
                "--fetch-max-wait-ms" => fetch_max_wait_ms = Some(number(&flag, &value()?)?),
                "-h" | "--help" => return Err(USAGE.to_string()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        let missing = |name: &str| format!("{name} is required\n{USAGE}");
        let args = BenchArgs {
            client: client.ok_or_else(|| missing("--client"))?,
            mode: mode.ok_or_else(|| missing("--mode"))?,
            brokers: brokers.ok_or_else(|| missing("--brokers"))?,
            topic: topic.ok_or_else(|| missing("--topic"))?,
            count: count.ok_or_else(|| missing("--count"))?,
            size: size.ok_or_else(|| missing("--size"))?,
            partitions,
            acks,
            compression,
            linger_ms,
            chunk,
            batch_bytes,
            fetch_max_wait_ms,
        };
        if args.count == 0 {
            return Err("--count must be at least 1".into());
        }
        if args.batch_bytes == 0 {
            return Err("--batch-bytes must be at least 1".into());
        }
        if args.chunk == 0 {
            return Err("--chunk must be at least 1".into());
        }
        if args.partitions.is_some_and(|p| p < 1) {
            return Err("--partitions must be at least 1".into());
        }
        Ok(args)
    }
}

pub fn number<T: FromStr>(flag: &str, text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag} takes a non-negative integer, not {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<BenchArgs, String> {
        BenchArgs::parse(line.split_whitespace())
    }

    #[test]
    fn defaults_are_acks_all_no_compression_linger_5ms() {
        let a =
            parse("--client krafka --mode produce --brokers b:1 --topic t --count 10 --size 100")
                .unwrap();
        assert_eq!(a.client, Client::Krafka);
        assert_eq!(a.mode, Mode::Produce);
        assert_eq!(a.brokers, "b:1");
        assert_eq!(a.topic, "t");
        assert_eq!((a.count, a.size), (10, 100));
        assert_eq!(a.acks, Acks::All);
        assert_eq!(a.compression, Compression::None);
        assert_eq!(a.linger_ms, 5);
        assert_eq!(a.partitions, None);
        assert_eq!(a.chunk, 1000);
        assert_eq!(a.batch_bytes, 1_000_000);
        assert_eq!(a.fetch_max_wait_ms, None);
    }

    #[test]
    fn every_option_is_read() {
        let a = parse(
            "--client rskafka --mode consume --brokers h:9 --topic x --count 5 --size 1024 \
             --partitions 3 --acks 1 --compression zstd --linger-ms 0 --chunk 250 \
             --fetch-max-wait-ms 10 --batch-bytes 16384",
        )
        .unwrap();
        assert_eq!(a.client, Client::Rskafka);
        assert_eq!(a.mode, Mode::Consume);
        assert_eq!(a.partitions, Some(3));
        assert_eq!(a.acks, Acks::Leader);
        assert_eq!(a.compression, Compression::Zstd);
        assert_eq!(a.linger_ms, 0);
        assert_eq!(a.chunk, 250);
        assert_eq!(a.fetch_max_wait_ms, Some(10));
        assert_eq!(a.batch_bytes, 16384);
    }

    #[test]
    fn acks_accepts_minus_one_as_all() {
        assert_eq!("-1".parse::<Acks>().unwrap(), Acks::All);
        assert_eq!(Acks::All.wire(), -1);
        assert_eq!(Acks::None.wire(), 0);
    }

    #[test]
    fn missing_required_flag_is_named() {
        let err =
            parse("--client rdkafka --mode produce --topic t --count 1 --size 1").unwrap_err();
        assert!(err.starts_with("--brokers is required"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(
            parse("--client kafka-python")
                .unwrap_err()
                .contains("unknown client")
        );
        assert!(
            parse("--client rdkafka --mode produce --brokers b --topic t --count many --size 1")
                .unwrap_err()
                .contains("--count takes")
        );
        assert!(
            parse("--client rdkafka --mode produce --brokers b --topic t --count 0 --size 1")
                .is_err()
        );
        assert!(
            parse("--client rdkafka --mode")
                .unwrap_err()
                .contains("--mode needs a value")
        );
        assert!(
            parse("--frobnicate")
                .unwrap_err()
                .contains("unknown argument")
        );
    }
}
