//! The local app a connection is for: one fixed address for an `inbound` listener, or, for
//! the inbound capture listener, the connection's original destination (the port the peer
//! meant). Each app address keeps its own HTTP/2 pool and what was learnt about it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::OnceCell;

use crate::http::forward::NextHop;
use crate::http::pool::H2Pool;
use crate::transport::connect::Dialer;

/// One app address and how it is reached.
pub(super) struct App {
    pub(super) addr: SocketAddr,
    pub(super) h2: NextHop,
    pub(super) dialer: Dialer,
    /// With `protocol: auto`, whether the app accepts HTTP/2 with prior knowledge: learnt
    /// once, by [`crate::transport::detect::probe_h2`], the first time a caller speaks HTTP/2.
    h2_support: OnceCell<bool>,
    connect_timeout: Duration,
}

impl App {
    fn new(addr: SocketAddr, connect_timeout: Duration) -> Self {
        let dialer = Dialer::Tcp {
            addr,
            timeout: connect_timeout,
        };
        Self {
            addr,
            h2: NextHop::H2(Arc::new(H2Pool::new(dialer.clone()))),
            dialer,
            h2_support: OnceCell::new(),
            connect_timeout,
        }
    }

    /// Whether to speak HTTP/2 to the app (`protocol: auto`, caller on HTTP/2). An app that
    /// answers the HTTP/2 preface as HTTP/1.1 (or closes) is spoken to in HTTP/1.1 from then
    /// on, and the fallback is counted; a probe that cannot decide (the app is down) decides
    /// nothing and is tried again with the next request.
    pub(super) async fn speaks_h2(&self) -> bool {
        if let Some(known) = self.h2_support.get() {
            return *known;
        }
        let probe = || async {
            match crate::transport::detect::probe_h2(self.addr, self.connect_timeout).await {
                Some(h2) => Ok(h2),
                None => Err(()),
            }
        };
        match self.h2_support.get_or_try_init(probe).await {
            Ok(true) => true,
            Ok(false) => {
                ::metrics::counter!("ward_app_protocol_fallback_total", "to" => "http1")
                    .increment(1);
                tracing::warn!(app = %self.addr,
                    "the app does not speak HTTP/2 with prior knowledge; using HTTP/1.1 for it");
                false
            }
            // Undecided: try HTTP/2, as the caller spoke; a failure is reported as usual.
            Err(()) => true,
        }
    }
}

/// Where a listener's connections go.
pub(super) enum Apps {
    /// An `inbound` listener's one app.
    Fixed(Arc<App>),
    /// The capture listener: each connection's original destination, prepared on first use.
    Captured {
        known: Mutex<HashMap<SocketAddr, Arc<App>>>,
        connect_timeout: Duration,
    },
}

impl Apps {
    pub(super) fn fixed(addr: SocketAddr, connect_timeout: Duration) -> Self {
        Apps::Fixed(Arc::new(App::new(addr, connect_timeout)))
    }

    pub(super) fn captured(connect_timeout: Duration) -> Self {
        Apps::Captured {
            known: Mutex::default(),
            connect_timeout,
        }
    }

    /// The app `tcp` is for; `None` for a captured connection without an original
    /// destination (refused and counted).
    pub(super) fn for_connection(&self, tcp: &TcpStream) -> Option<Arc<App>> {
        match self {
            Apps::Fixed(app) => Some(app.clone()),
            Apps::Captured {
                known,
                connect_timeout,
            } => {
                let orig = crate::capture::original_destination(tcp)?;
                let mut known = known.lock().unwrap_or_else(|p| p.into_inner());
                let app = known
                    .entry(orig)
                    .or_insert_with(|| Arc::new(App::new(orig, *connect_timeout)));
                Some(app.clone())
            }
        }
    }
}
