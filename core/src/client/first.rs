//! # The first connection: one handshake, then every request shares it
//!
//! A client speaks HTTP/2 when the server picks `h2` in the TLS handshake (ALPN). Until a
//! handshake has finished, the client cannot know that one connection will carry every
//! request, so the pool (hyper's) opens a connection *for each request in flight*, and when
//! the first of them turns out to be HTTP/2 it throws the others away, each after a whole
//! TCP and TLS handshake. A kubelet starts five informers, a lease and a registration at
//! once; 5,000 in-process kubelets starting together made tens of thousands of handshakes
//! that were thrown away, on two CPUs.
//!
//! This gate lets one request open the connection while the others wait for its answer:
//! then they all find the connection in the pool. The gate is `Cold` (no connection known),
//! `Opening` (one request is on its way) or `Open`. A request that fails to connect sets it
//! back to `Cold`, so after the server goes away (a failover) one request again opens the
//! way for the others.
//!
//! The wait is bounded ([`WAIT`]): a first attempt that hangs (a balancer that holds the
//! handshake while no API server is up behind it) must not hold every request of the client
//! behind it; after the bound they try on their own, as without the gate.
//!
//! Where this comes from: hyper chose, when it learnt ALPN, to handshake for every waiting
//! request and keep one connection (hyper issue #1485 weighs both ways); undici, Node's
//! client, later queued the requests behind one probe, as this gate does. kulisse's
//! components always talk to servers that offer `h2`, so the queue costs them nothing.
//! This is the client's only departure from hyper's pool.

use std::time::Duration;

use tokio::sync::watch;

/// How long a request waits for another's first connection before trying on its own.
pub const WAIT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Cold,
    Opening,
    Open,
}

/// The gate in front of one connection pool; clones of a client share it.
#[derive(Debug)]
pub struct FirstConnection {
    state: watch::Sender<State>,
}

impl Default for FirstConnection {
    fn default() -> Self {
        FirstConnection {
            state: watch::Sender::new(State::Cold),
        }
    }
}

/// What a request does at the gate.
pub enum Turn<'a> {
    /// A connection is open (or was waited for): send.
    Go,
    /// This request opens the connection; report how it went with [`Opener::done`].
    Open(Opener<'a>),
}

impl FirstConnection {
    /// Pass the gate: return at once when the connection is open, become the opener when
    /// none is known, or wait (at most [`WAIT`]) for the request that is opening it.
    pub async fn enter(&self) -> Turn<'_> {
        let mine = self.state.send_if_modified(|s| {
            let cold = *s == State::Cold;
            if cold {
                *s = State::Opening;
            }
            cold
        });
        if mine {
            return Turn::Open(Opener {
                gate: self,
                done: false,
            });
        }
        let mut rx = self.state.subscribe();
        let _ = tokio::time::timeout(WAIT, rx.wait_for(|s| *s != State::Opening)).await;
        Turn::Go
    }

    /// A request could not connect: the connection is gone (or never came).
    pub fn lost(&self) {
        self.state.send_if_modified(|s| {
            let open = *s == State::Open;
            if open {
                *s = State::Cold;
            }
            open
        });
    }
}

/// The request that opens the connection. Dropped without [`Opener::done`] (cancelled), it
/// leaves the gate `Cold` for the next request.
pub struct Opener<'a> {
    gate: &'a FirstConnection,
    done: bool,
}

impl Opener<'_> {
    /// The opening request got an answer (`connected`), or could not connect.
    pub fn done(mut self, connected: bool) {
        self.done = true;
        self.gate
            .state
            .send_replace(if connected { State::Open } else { State::Cold });
    }
}

impl Drop for Opener<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.gate.state.send_replace(State::Cold);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_others_wait_for_the_opener_and_then_go() {
        let gate = FirstConnection::default();
        let Turn::Open(opener) = gate.enter().await else {
            panic!("the first request must open the connection")
        };
        let waiter = async {
            let start = tokio::time::Instant::now();
            assert!(matches!(gate.enter().await, Turn::Go));
            start.elapsed()
        };
        let open = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            opener.done(true);
        };
        let (waited, ()) = tokio::join!(waiter, open);
        assert_eq!(
            waited,
            Duration::from_millis(300),
            "the waiter goes when the opener is done"
        );
        assert!(matches!(gate.enter().await, Turn::Go), "open: nobody waits");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_opener_holds_the_others_only_for_the_bound() {
        let gate = FirstConnection::default();
        let Turn::Open(_hanging) = gate.enter().await else {
            panic!("the first request must open the connection")
        };
        let start = tokio::time::Instant::now();
        assert!(matches!(gate.enter().await, Turn::Go));
        assert_eq!(start.elapsed(), WAIT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_or_cancelled_opening_and_a_lost_connection_let_the_next_request_open() {
        let gate = FirstConnection::default();
        let Turn::Open(opener) = gate.enter().await else {
            panic!("cold")
        };
        opener.done(false);
        let Turn::Open(opener) = gate.enter().await else {
            panic!("after a failed opening the next request opens")
        };
        drop(opener);
        let Turn::Open(opener) = gate.enter().await else {
            panic!("after a cancelled opening the next request opens")
        };
        opener.done(true);
        assert!(matches!(gate.enter().await, Turn::Go));
        gate.lost();
        assert!(
            matches!(gate.enter().await, Turn::Open(_)),
            "after a lost connection the next request opens"
        );
    }
}
