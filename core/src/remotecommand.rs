//! # remotecommand (mirrors `k8s.io/apimachinery/pkg/util/remotecommand` and `wsstream`)
//!
//! `kubectl exec`, `attach` and `cp` carry several byte streams over one connection: the
//! command's stdin, stdout and stderr, an error stream that ends with the exit status, and
//! terminal resizes. Since Kubernetes 1.31 kubectl speaks them over a **WebSocket**: the
//! client asks for the subprotocol `v5.channel.k8s.io` (or older ones) in its upgrade
//! request, and then every binary message starts with one byte naming its **channel**:
//!
//! | channel | direction | carries |
//! |---------|-----------|---------|
//! | 0 | client → server | stdin |
//! | 1 | server → client | stdout |
//! | 2 | server → client | stderr |
//! | 3 | server → client | the result: a `metav1.Status` (JSON) |
//! | 4 | client → server | terminal size, `{"Width":80,"Height":24}` |
//! | 255 | client → server | v5 only: "close channel N" (`[255, 0]` is end of stdin) |
//!
//! The result on channel 3 is what makes `kubectl exec ... -- sh -c 'exit 3'` exit 3: a
//! `Status` with `status: Failure`, `reason: NonZeroExitCode` and the code in
//! `details.causes[{reason: ExitCode, message: "3"}]` ([`exit_status`]).
//!
//! The older transport, SPDY/3.1 (`X-Stream-Protocol-Version: v4.channel.k8s.io`), opens
//! one SPDY stream per channel instead; kulisse does not speak it for exec: kubectl ≥ 1.31
//! tries WebSocket first and only falls back to SPDY when the upgrade itself fails.

use serde_json::{Value, json};

/// The stdin channel.
pub const STDIN: u8 = 0;
/// The stdout channel.
pub const STDOUT: u8 = 1;
/// The stderr channel.
pub const STDERR: u8 = 2;
/// The error channel: one `metav1.Status` when the command ends.
pub const ERROR: u8 = 3;
/// The resize channel: JSON terminal sizes.
pub const RESIZE: u8 = 4;
/// v5's close signal: `[255, channel]` closes that channel (end of stdin).
pub const CLOSE: u8 = 255;

/// The v5 channel protocol (kubectl ≥ 1.30): adds the close signal.
pub const V5: &str = "v5.channel.k8s.io";
/// The v4 channel protocol: the error channel carries a JSON `Status`.
pub const V4: &str = "v4.channel.k8s.io";
/// The subprotocols kulisse serves, best first.
pub const PROTOCOLS: [&str; 2] = [V5, V4];

/// Pick the best subprotocol both sides speak from a `Sec-WebSocket-Protocol` header.
pub fn negotiate(offered: &str) -> Option<&'static str> {
    let offered: Vec<&str> = offered.split(',').map(str::trim).collect();
    PROTOCOLS.into_iter().find(|p| offered.contains(p))
}

/// The result a finished command sends on the error channel: `Success`, or a `Failure`
/// whose cause carries the exit code (upstream's `remotecommand` server does exactly this
/// for an `exec.CodeExitError`).
pub fn exit_status(code: i32, command: &[String]) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command [{}], exit code {code}",
            command.join(" ")
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A failure that is not an exit code (the runtime could not run the command).
pub fn error_status(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// What a client makes of the error channel's `Status`: `Ok(code)` for a command that
/// ran (0 on success), `Err(message)` when it did not.
pub fn exit_code_of(status: &Value) -> Result<i32, String> {
    if status.get("status").and_then(Value::as_str) == Some("Success") {
        return Ok(0);
    }
    let code = status
        .pointer("/details/causes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("reason").and_then(Value::as_str) == Some("ExitCode"))
        .and_then(|c| c.get("message").and_then(Value::as_str)?.parse::<i32>().ok());
    match code {
        Some(code) => Ok(code),
        None => Err(status
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("the command failed")
            .to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_and_exit_codes_round_trip() {
        assert_eq!(negotiate("v4.channel.k8s.io, v5.channel.k8s.io"), Some(V5));
        assert_eq!(negotiate("v4.channel.k8s.io,channel.k8s.io"), Some(V4));
        assert_eq!(negotiate("channel.k8s.io"), None);
        let cmd = vec!["sh".to_string(), "-c".into(), "exit 3".into()];
        assert_eq!(exit_code_of(&exit_status(3, &cmd)), Ok(3));
        assert_eq!(exit_code_of(&exit_status(0, &cmd)), Ok(0));
        assert_eq!(
            exit_code_of(&error_status("no such container")),
            Err("no such container".into())
        );
    }
}
