//! The frames parent and child exchange: a little-endian `u32` length, then that many bytes of
//! JSON.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// The child's first frame, once its limits are in place.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Whether the seccomp filter (no network, no processes, no files) is in force.
    pub seccomp: bool,
    /// Why it is not, when it is not.
    pub seccomp_error: Option<String>,
    /// Whether the child, once confined, found it could not open a network socket.
    pub network_blocked: bool,
}

/// One script to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The body of a function.
    pub code: String,
    /// `contact`.
    pub contact: Value,
    /// `vars`.
    pub vars: Value,
    /// `trigger`.
    pub trigger: Value,
    /// The deadline, from the moment the child reads the request.
    pub timeout_ms: u64,
    /// QuickJS's memory limit.
    pub memory_limit_mb: u32,
}

/// Why a script failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// It threw, or did not compile.
    Script,
    /// It ran past its deadline.
    Timeout,
    /// It ran out of memory.
    Memory,
    /// It overflowed its stack.
    Stack,
    /// Its return value cannot be sent back (cyclic, not JSON, too big).
    Output,
}

/// A script's failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScriptError {
    /// What kind.
    pub kind: ErrorKind,
    /// What happened.
    pub message: String,
    /// The line of the script it happened on, when known.
    pub line: Option<u32>,
}

/// What became of a script.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    /// Its return value (JSON; `null` for none), when it succeeded.
    pub value: Option<Value>,
    /// Why it failed, when it did.
    pub error: Option<ScriptError>,
    /// What it logged, capped.
    pub logs: Vec<String>,
    /// Whether lines were dropped to keep within the cap.
    pub logs_truncated: bool,
    /// `setVariable(name, value)` calls, in order.
    pub variables: Vec<(String, Value)>,
}

/// Writes one frame.
pub fn write_frame<T: Serialize>(out: &mut impl Write, value: &T) -> io::Result<()> {
    let body = serde_json::to_vec(value).map_err(io::Error::other)?;
    if body.len() > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// Reads one frame; `None` at a clean end of input.
pub fn read_frame<T: for<'de> Deserialize<'de>>(input: &mut impl Read) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match input.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::other("frame too large"));
    }
    let mut body = vec![0u8; len];
    input.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_refuse_oversized_lengths() {
        let mut buffer = Vec::new();
        write_frame(&mut buffer, &serde_json::json!({"a": 1})).unwrap();
        let back: Value = read_frame(&mut buffer.as_slice()).unwrap().unwrap();
        assert_eq!(back, serde_json::json!({"a": 1}));
        let empty: Option<Value> = read_frame(&mut &b""[..]).unwrap();
        assert!(empty.is_none());
        let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
        assert!(read_frame::<Value>(&mut &huge[..]).is_err());
    }
}
