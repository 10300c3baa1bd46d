//! The destination a captured connection was sent to before the capture rules redirected
//! it (`SO_ORIGINAL_DST`, `IP6T_SO_ORIGINAL_DST`): where the app meant to go, or which of
//! the pod's ports a peer meant to reach.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

/// `SO_ORIGINAL_DST` from `linux/netfilter_ipv4.h` (and `IP6T_SO_ORIGINAL_DST`, the same
/// number, from `linux/netfilter_ipv6/ip6_tables.h`).
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The original destination of an accepted, redirected TCP connection. An error when the
/// connection was not redirected (nothing is recorded for it).
pub fn original_dst(socket: &impl AsRawFd, local: SocketAddr) -> io::Result<SocketAddr> {
    let fd = socket.as_raw_fd();
    if local.is_ipv4() {
        // SAFETY: `addr` is a plain C struct of the size passed; the kernel writes at most
        // `len` bytes into it.
        let mut addr: libc::sockaddr_in = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&raw mut addr).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Ok(SocketAddr::V4(SocketAddrV4::new(
            ip,
            u16::from_be(addr.sin_port),
        )))
    } else {
        // SAFETY: as above, for the IPv6 socket address.
        let mut addr: libc::sockaddr_in6 = unsafe { zeroed() };
        let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&raw mut addr).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        Ok(SocketAddr::V6(SocketAddrV6::new(
            ip,
            u16::from_be(addr.sin6_port),
            addr.sin6_flowinfo,
            addr.sin6_scope_id,
        )))
    }
}
