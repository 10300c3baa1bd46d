//! The HTTP/1 framing guard over arbitrary bytes, arriving in arbitrary pieces: never
//! panics or hangs, and never hands over a request with both Content-Length and
//! Transfer-Encoding that it could see whole.
#![no_main]
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use ward_proxy::http::guard::{H1Guard, SwitchSignal};

fuzz_target!(|data: &[u8]| {
    // First byte: where to split the input into two writes.
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(input.len());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input[..at]).await.expect("write");
        client.write_all(&input[at..]).await.expect("write");
        client.shutdown().await.expect("shutdown");
        let switch = SwitchSignal::default();
        let mut guard = H1Guard::new(server, 64 * 1024, Duration::from_secs(10), switch.clone());
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                biased;
                read = guard.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                },
                // The guard waits for the service's answer after a request that may
                // switch protocols: answer "no switch", as for any non-101 response.
                () = tokio::task::yield_now() => switch.answered(false),
            }
        }
        assert!(out.len() <= input.len() + 32, "the guard adds at most one refusal");
    });
});
