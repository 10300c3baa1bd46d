//! ward-proxy: the data plane — listeners, TLS, forwarding and per-call authorization.
