//! Just enough of RESP2, Redis's wire protocol, for [`crate::ticket_reads`]: commands out,
//! replies in.
//!
//! The `redis` crate parses replies with `combine`'s resumable parser combinators, which cost
//! about as many instructions per waiting-room poll as the rest of the door's handler together
//! (callgrind). A reply of the door's hot read is a few dozen bytes that almost always arrive
//! whole, so a plain parser that starts over when the bytes are incomplete does the job.

/// One reply from Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// A nil bulk string or array.
    Nil,
    /// A simple string such as `OK`.
    Status(String),
    /// An error reply, such as `WRONGTYPE ...`.
    Error(String),
    /// An integer.
    Int(i64),
    /// A bulk string.
    Bulk(Vec<u8>),
    /// An array of replies.
    Array(Vec<Reply>),
}

/// The bytes from Redis are not RESP2: the connection must be dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("Redis sent a reply that is not RESP2")]
pub(crate) struct Malformed;

/// Nested arrays deeper than this are refused; no command the door sends gets one.
const MAX_DEPTH: usize = 8;

/// The longest bulk string or array Redis may send (its own `proto-max-bulk-len` default).
const MAX_LEN: usize = 512 * 1024 * 1024;

/// Appends one command, `args` as an array of bulk strings, to `out`.
pub(crate) fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, len: usize) {
    out.push(kind);
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The first complete reply in `buf` and how many bytes it took, or `None` when `buf` holds
/// only part of one so far.
///
/// # Errors
/// [`Malformed`] when the bytes cannot be a reply.
pub(crate) fn parse(buf: &[u8]) -> Result<Option<(Reply, usize)>, Malformed> {
    let mut at = 0;
    Ok(parse_at(buf, &mut at, 0)?.map(|reply| (reply, at)))
}

fn parse_at(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, Malformed> {
    let Some(line) = line(buf, at)? else {
        return Ok(None);
    };
    let (&kind, body) = line.split_first().ok_or(Malformed)?;
    let text = || std::str::from_utf8(body).map_err(|_| Malformed);
    Ok(Some(match kind {
        b'+' => Reply::Status(text()?.to_owned()),
        b'-' => Reply::Error(text()?.to_owned()),
        b':' => Reply::Int(text()?.parse().map_err(|_| Malformed)?),
        b'$' => match length(body)? {
            None => Reply::Nil,
            Some(len) => {
                let end = *at + len;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(Malformed);
                }
                let bulk = buf[*at..end].to_vec();
                *at = end + 2;
                Reply::Bulk(bulk)
            }
        },
        b'*' => match length(body)? {
            None => Reply::Nil,
            Some(_) if depth >= MAX_DEPTH => return Err(Malformed),
            Some(len) => {
                // Each element takes at least three bytes: never reserve more than could come.
                let mut items = Vec::with_capacity(len.min(buf.len() / 3));
                for _ in 0..len {
                    match parse_at(buf, at, depth + 1)? {
                        Some(item) => items.push(item),
                        None => return Ok(None),
                    }
                }
                Reply::Array(items)
            }
        },
        _ => return Err(Malformed),
    }))
}

/// The line starting at `at` without its `\r\n`, moving `at` past it.
fn line<'a>(buf: &'a [u8], at: &mut usize) -> Result<Option<&'a [u8]>, Malformed> {
    let rest = &buf[*at..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        return Ok(None);
    };
    match rest.get(cr + 1) {
        None => Ok(None),
        Some(b'\n') => {
            *at += cr + 2;
            Ok(Some(&rest[..cr]))
        }
        Some(_) => Err(Malformed),
    }
}

/// The length in a `$` or `*` header: `None` for `-1` (nil).
fn length(body: &[u8]) -> Result<Option<usize>, Malformed> {
    if body == b"-1" {
        return Ok(None);
    }
    let len: usize = std::str::from_utf8(body)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or(Malformed)?;
    if len > MAX_LEN {
        return Err(Malformed);
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HMGET_REPLY: &[u8] =
        b"*5\r\n$36\r\n0195e2a4-1111-7000-8000-000000000001\r\n$6\r\nqueued\r\n$2\r\n42\r\n$-1\r\n$-1\r\n";

    fn hmget_reply() -> Reply {
        Reply::Array(vec![
            Reply::Bulk(b"0195e2a4-1111-7000-8000-000000000001".to_vec()),
            Reply::Bulk(b"queued".to_vec()),
            Reply::Bulk(b"42".to_vec()),
            Reply::Nil,
            Reply::Nil,
        ])
    }

    #[test]
    fn encodes_a_command_as_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"HMGET", b"k", b"status"]);
        assert_eq!(out, b"*3\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$6\r\nstatus\r\n");
    }

    #[test]
    fn parses_every_kind_of_reply() {
        let cases: [(&[u8], Reply); 7] = [
            (b"+OK\r\n", Reply::Status("OK".into())),
            (b"-WRONGTYPE no\r\n", Reply::Error("WRONGTYPE no".into())),
            (b":-7\r\n", Reply::Int(-7)),
            (b"$0\r\n\r\n", Reply::Bulk(Vec::new())),
            (b"$-1\r\n", Reply::Nil),
            (b"*-1\r\n", Reply::Nil),
            (b"*0\r\n", Reply::Array(Vec::new())),
        ];
        for (bytes, reply) in cases {
            assert_eq!(parse(bytes), Ok(Some((reply, bytes.len()))), "{bytes:?}");
        }
        assert_eq!(
            parse(HMGET_REPLY),
            Ok(Some((hmget_reply(), HMGET_REPLY.len())))
        );
    }

    #[test]
    fn a_reply_cut_anywhere_is_incomplete_not_wrong() {
        for cut in 0..HMGET_REPLY.len() {
            assert_eq!(parse(&HMGET_REPLY[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn takes_one_reply_and_leaves_the_next() {
        let mut two = HMGET_REPLY.to_vec();
        two.extend_from_slice(b":1\r\n");
        let (first, used) = parse(&two).unwrap().unwrap();
        assert_eq!((first, used), (hmget_reply(), HMGET_REPLY.len()));
        assert_eq!(parse(&two[used..]), Ok(Some((Reply::Int(1), 4))));
    }

    #[test]
    fn refuses_what_is_not_resp2() {
        let bad: [&[u8]; 7] = [
            b"?what\r\n",
            b"+OK\rX",
            b"$3\r\nabcd\r\n",
            b"$-2\r\n",
            b":x\r\n",
            b"*99999999999999999999\r\n",
            b"\r\n",
        ];
        for bytes in bad {
            assert_eq!(parse(bytes), Err(Malformed), "{bytes:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(Malformed));
    }
}
