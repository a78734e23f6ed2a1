//! The decoder: pipelines split at every byte, Redis's protocol errors,
//! bounded memory, and seeded random input.

use super::codec::{Decoder, Limits, ProtocolError};
use proptest::prelude::*;

type Commands = Vec<Vec<Vec<u8>>>;

/// Feeds `chunks` in turn, taking every command after each; stops at the
/// first error.
fn decode(limits: Limits, chunks: &[&[u8]]) -> (Commands, Option<ProtocolError>) {
    let mut d = Decoder::new(limits);
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        loop {
            match d.next() {
                Ok(Some(frame)) => out.push(frame.args().iter().map(|a| a.to_vec()).collect()),
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn cmd(args: &[&[u8]]) -> Vec<Vec<u8>> {
    args.iter().map(|a| a.to_vec()).collect()
}

/// Encodes a command as an array of bulk strings.
fn encode(args: &[Vec<u8>]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

const PIPELINE: &[u8] = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n\
*0\r\n*-1\r\nPING\r\n\r\n\n  \r\n*2\r\n$3\r\nGET\r\n$0\r\n\r\n\
set 'x y' \"\\x00\\n\"\n*1\r\n$4\r\nPING\r\n";

fn pipeline_commands() -> Commands {
    vec![
        cmd(&[b"SET", b"k", b"a\r\nb"]),
        cmd(&[b"PING"]),
        cmd(&[b"GET", b""]),
        cmd(&[b"set", b"x y", b"\0\n"]),
        cmd(&[b"PING"]),
    ]
}

#[test]
fn a_pipeline_decodes_whole() {
    assert_eq!(
        decode(Limits::default(), &[PIPELINE]),
        (pipeline_commands(), None)
    );
}

#[test]
fn a_pipeline_decodes_split_at_every_byte() {
    for at in 0..=PIPELINE.len() {
        let (a, b) = PIPELINE.split_at(at);
        assert_eq!(
            decode(Limits::default(), &[a, b]),
            (pipeline_commands(), None),
            "split at {at}"
        );
    }
    let bytes: Vec<&[u8]> = PIPELINE.chunks(1).collect();
    assert_eq!(
        decode(Limits::default(), &bytes),
        (pipeline_commands(), None)
    );
}

/// Each malformed input, its reply, and the commands decoded before it.
#[test]
fn malformed_input_gets_redis_protocol_errors_at_every_split() {
    let limits = Limits {
        max_bulk: 10,
        max_args: 4,
        max_inline: 16,
    };
    let cases: &[(&[u8], &[u8], usize)] = &[
        (
            b"PING\r\n*1\r\n+PING\r\n",
            b"-ERR Protocol error: expected '$', got '+'\r\n",
            1,
        ),
        (
            b"*x\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
            0,
        ),
        (
            b"*5\r\n",
            b"-ERR Protocol error: invalid multibulk length\r\n",
            0,
        ),
        (
            b"*1\r\n$11\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            0,
        ),
        (
            b"*1\r\n$-1\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            0,
        ),
        (
            b"*1\r\n$1x\r\n",
            b"-ERR Protocol error: invalid bulk length\r\n",
            0,
        ),
        (
            b"get 'k\r\n",
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
            0,
        ),
        (
            b"get aaaaaaaaaaaaaaaaaaaaa",
            b"-ERR Protocol error: too big inline request\r\n",
            0,
        ),
        (
            b"*111111111111111111111",
            b"-ERR Protocol error: too big mbulk count string\r\n",
            0,
        ),
        (
            b"*1\r\n$111111111111111111",
            b"-ERR Protocol error: too big bulk count string\r\n",
            0,
        ),
    ];
    for (input, reply, before) in cases {
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            let (cmds, err) = decode(limits, &[a, b]);
            let name = String::from_utf8_lossy(input);
            assert_eq!(cmds.len(), *before, "{name} split at {at}");
            assert_eq!(
                err.map(|e| e.reply().to_bytes()).as_deref(),
                Some(*reply),
                "{name} at {at}"
            );
        }
    }
}

#[test]
fn a_failed_decoder_stays_failed_and_buffers_nothing() {
    let mut d = Decoder::new(Limits::default());
    d.feed(b"*1\r\n+x\r\n");
    let e = d.next().unwrap_err();
    assert_eq!(e.to_string(), "Protocol error: expected '$', got '+'");
    d.feed(&[b'a'; 100_000]);
    assert_eq!(d.next().unwrap_err(), e);
    assert!(d.footprint() < 1024);
}

#[test]
fn announced_lengths_reserve_nothing() {
    let mut d = Decoder::new(Limits::default());
    d.feed(b"*1048576\r\n$536870912\r\nabc");
    assert!(d.next().unwrap().is_none());
    assert!(d.footprint() < 4096, "{}", d.footprint());
    // Just over the default 512 MiB bound: refused at the header.
    let (cmds, err) = decode(Limits::default(), &[b"*1\r\n$536870913\r\n"]);
    assert_eq!(
        (cmds.len(), err),
        (0, Some(ProtocolError::InvalidBulkLength))
    );
    let (_, err) = decode(Limits::default(), &[b"*1\r\n$536870912\r\n"]);
    assert_eq!(err, None);
    // The bulk grows as its bytes arrive, and comes out whole.
    let mut d = Decoder::new(Limits::default());
    d.feed(b"*2\r\n$3\r\nGET\r\n$100000\r\n");
    for _ in 0..100 {
        d.feed(&[b'v'; 1000]);
        assert!(d.next().unwrap().is_none());
    }
    d.feed(b"\r\n");
    let frame = d.next().unwrap().unwrap();
    assert_eq!(frame.args()[1].len(), 100_000);
}

#[test]
fn consumed_commands_are_dropped() {
    let mut d = Decoder::new(Limits::default());
    let one = encode(&cmd(&[b"SET", b"k", &[b'x'; 1 << 20]]));
    d.feed(&one);
    assert!(d.next().unwrap().is_some());
    assert!(d.next().unwrap().is_none());
    d.feed(b"PING\r\n");
    assert!(d.footprint() < 256 << 10, "{}", d.footprint());
    assert_eq!(d.next().unwrap().unwrap().args(), [b"PING"]);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Seeded: the same inputs on every run and every machine.
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5eed_0001),
        ..ProptestConfig::default()
    })]

    /// Any bytes in any chunks: no panic, memory in proportion to input.
    #[test]
    fn random_input_never_panics_nor_balloons(
        bytes in proptest::collection::vec(
            prop_oneof![Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'"'), Just(b' '),
                        Just(b'1'), Just(b'-'), any::<u8>()],
            0..2000),
        cuts in proptest::collection::vec(0usize..2000, 0..8),
    ) {
        let limits = Limits { max_bulk: 1 << 20, max_args: 1 << 16, max_inline: 512 };
        let mut d = Decoder::new(limits);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
        cuts.sort_unstable();
        let mut from = 0;
        for to in cuts.into_iter().chain([bytes.len()]) {
            d.feed(&bytes[from..to]);
            from = to;
            while let Ok(Some(frame)) = d.next() {
                prop_assert!(!frame.args().is_empty());
            }
            prop_assert!(d.footprint() <= 32 * to + (64 << 10), "{} after {to}", d.footprint());
        }
    }

    /// Valid commands in any chunks decode to themselves.
    #[test]
    fn valid_commands_decode_at_any_split(
        cmds in proptest::collection::vec(
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 1..5), 1..6),
        cut in 0usize..1000,
    ) {
        let bytes: Vec<u8> = cmds.iter().flat_map(|c| encode(c)).collect();
        let cut = cut.min(bytes.len());
        let (a, b) = bytes.split_at(cut);
        prop_assert_eq!(decode(Limits::default(), &[a, b]), (cmds, None));
    }
}
