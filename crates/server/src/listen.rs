//! Accepting connections within a budget, so that no client can take the gateway down by holding sockets.
//!
//! `axum::serve` sets no timeouts and takes every connection it is offered: 1,100 half-open requests once pinned
//! the process at its open-file limit, and every other user with it. Here:
//! - the process raises its soft `RLIMIT_NOFILE` to the hard limit at start-up ([`raise_open_file_limit`]) and
//!   budgets connections below it, keeping descriptors in reserve for the listener, the database, the log, the
//!   recordings and WebRTC's sockets;
//! - a connection over its client network's share ([`ClientNetwork`]: an IPv4 address, an IPv6 /64) is closed as
//!   soon as it is accepted; that share is at most a sixteenth of the budget, so a few addresses cannot hold every
//!   connection whatever the open-file limit; over the global budget, a new connection takes the place of the
//!   oldest connection of the network holding the most ([`crate::places`]), so that networks filling the budget
//!   together keep out neither a person nor a court;
//! - a request head must arrive within [`Limits::header_read_timeout`] (an idle keep-alive connection is a
//!   connection waiting for a head, so it is closed too), a TLS handshake within the same time, and a request
//!   body that sends nothing for [`Limits::body_idle_timeout`] is cut off;
//! - an upload takes a place for its staging file beside its connection's ([`Descriptors`]), since it holds both;
//! - every request learns who sent it ([`Site`]): the peer's address, or the client a trusted proxy names, and
//!   whether it came over HTTPS (the cookie's `Secure` flag, HSTS).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, header};
use custodia_service::network::ClientNetwork;
use futures::StreamExt as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::places::Places;

/// Descriptors kept out of the connection budget, at the least.
const RESERVED_DESCRIPTORS: u64 = 256;

/// One client network holds at most the connection budget divided by this (a sixteenth), so that it takes at least
/// 16 networks to fill the budget, whatever the open-file limit.
pub const PEER_SHARE_OF_CONNECTIONS: usize = 16;

/// HSTS for answers over HTTPS: two years.
const HSTS: &str = "max-age=63072000";
/// How long a newcomer waits, at most, for connections cut short to close when they are what keeps it out
/// ([`crate::places::Places::admit_waiting`]); the listener accepts no other meanwhile.
const CLOSING_WAIT: Duration = Duration::from_secs(1);
/// How long a connection whose place was taken back has to finish the request it is serving. Short, since such
/// connections hold places past the budget (a sixteenth of it at most, past which newcomers cut them short).
const GIVE_UP_GRACE: Duration = Duration::from_secs(5);

/// What one gateway process accepts.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections at once, over all peers.
    pub max_connections: usize,
    /// Open connections at once from one client network ([`ClientNetwork`]; trusted proxies are exempt: they carry
    /// many clients).
    pub max_connections_per_peer: usize,
    /// How long a request head (and a TLS handshake) may take, and how long a connection may sit idle between
    /// requests.
    pub header_read_timeout: Duration,
    /// How long a request body may send nothing before it is cut off.
    pub body_idle_timeout: Duration,
    /// Proxies whose `X-Forwarded-For` and `X-Forwarded-Proto` are believed: addresses and ranges.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Limits {
    /// Whether `peer` is one of the trusted proxies (an IPv4 peer on a dual-stack socket, `::ffff:a.b.c.d`, as
    /// the IPv4 address it is).
    fn trusts(&self, peer: IpAddr) -> bool {
        trusted(&self.trusted_proxies, peer)
    }
}

/// Whether `address` is within one of `proxies`.
fn trusted(proxies: &[ipnet::IpNet], address: IpAddr) -> bool {
    let address = address.to_canonical();
    proxies.iter().any(|proxy| proxy.contains(&address))
}

impl Limits {
    /// The limits `config` sets, within `open_files` descriptors.
    pub fn of(config: &crate::config::ConnectionConfig, open_files: u64) -> Self {
        Self {
            max_connections: config.max_connections.max(1),
            max_connections_per_peer: config.max_connections_per_peer.max(1),
            header_read_timeout: Duration::from_secs(config.header_timeout_seconds.max(1)),
            body_idle_timeout: Duration::from_secs(config.body_idle_seconds.max(1)),
            trusted_proxies: config.trusted_proxies.clone(),
        }
        .budgeted(open_files)
    }
}

impl Limits {
    /// The configured connections at most, and never more than the open-file limit `open_files` leaves after the
    /// reserve (a quarter of the limit, and at least `RESERVED_DESCRIPTORS`); per client network, the configured
    /// share at most, and never more than [`PEER_SHARE_OF_CONNECTIONS`] of those connections (at least one).
    pub fn budgeted(mut self, open_files: u64) -> Self {
        let reserve = RESERVED_DESCRIPTORS.max(open_files / 4);
        let affordable = usize::try_from(open_files.saturating_sub(reserve)).unwrap_or(usize::MAX).max(1);
        self.max_connections = self.max_connections.min(affordable);
        let share = (self.max_connections / PEER_SHARE_OF_CONNECTIONS).max(1);
        self.max_connections_per_peer = self.max_connections_per_peer.min(share);
        self
    }
}

/// Raises the soft open-file limit to the hard one and returns the limit now in force.
pub fn raise_open_file_limit() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        // No hard limit: take a generous soft one; the kernel's own ceiling (fs.nr_open) still applies.
        let wanted = 1 << 20;
        return match setrlimit(Resource::Nofile, Rlimit { current: Some(wanted), maximum: None }) {
            Ok(()) => wanted,
            Err(_) => limit.current.unwrap_or(1024),
        };
    };
    if limit.current.is_some_and(|soft| soft >= hard) {
        return hard;
    }
    match setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) }) {
        Ok(()) => hard,
        Err(err) => {
            tracing::warn!(error = %custodia_service::error::Chain(&err), "could not raise the open-file limit");
            limit.current.unwrap_or(1024)
        }
    }
}

/// Who sent a request, as far as the gateway can tell: never logged, never recorded (a witness's address is their
/// whereabouts); used for per-peer budgets and to know whether the client reached us over HTTPS. Its `Debug` withholds
/// the address.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Site {
    /// The client's address: the TCP peer, or the one a trusted proxy names.
    pub client: IpAddr,
    /// Whether the client's connection is HTTPS (to us, or to the trusted proxy in front of us).
    pub https: bool,
}

impl Site {
    /// The network of the client, for budgets per client.
    pub fn network(&self) -> ClientNetwork {
        ClientNetwork::of(self.client)
    }

    fn resolve(peer: IpAddr, tls: bool, headers: &HeaderMap, trusted_proxies: &[ipnet::IpNet]) -> Self {
        if !trusted(trusted_proxies, peer) {
            return Self { client: peer, https: tls };
        }
        // Each proxy appends the address it saw; anything before the first of them the client may have written.
        // So the client is the last address that no trusted proxy has (proxies in a chain, an ingress and then a
        // router, are passed over from the end), or the first if every one is a proxy's. An entry that is not an
        // address (a port, a name, `unknown`, bytes that are not text) ends the walk: no trusted proxy vouches for
        // what is before it, so the client is the nearest address after it, or the peer.
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .map(|item| std::str::from_utf8(item).ok().and_then(|text| text.trim().parse::<IpAddr>().ok()));
        let mut forwarded_for = None;
        for entry in entries.rev() {
            let Some(address) = entry else { break };
            forwarded_for = Some(address);
            if !trusted(trusted_proxies, address) {
                break;
            }
        }
        let forwarded_proto = headers.get("x-forwarded-proto").and_then(|value| value.to_str().ok());
        Self {
            client: forwarded_for.unwrap_or(peer),
            https: tls || forwarded_proto.is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https")),
        }
    }
}

/// The client network a request came from (its [`Site`], else the TCP peer of an in-process server with
/// `ConnectInfo`), for budgets per client; `None` when neither is known.
pub fn client_network(extensions: &axum::http::Extensions) -> Option<ClientNetwork> {
    extensions.get::<Site>().map(Site::network).or_else(|| {
        extensions.get::<axum::extract::ConnectInfo<SocketAddr>>().map(|info| ClientNetwork::of(info.0.ip()))
    })
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site").field("client", &"withheld").field("https", &self.https).finish()
    }
}

/// The descriptors that requests open of their own while they run: an upload holds its staging file (a resumable
/// one's PATCH its chunk's, and at completion the artefact's) beside its socket. They come from the reserve the connection budget leaves, a share of
/// their own ([`STAGING_SHARE`]), so that strangers who hold every connection keep no member's upload out, and no
/// upload takes a stranger's connection (any member's request could then knock others off). Absent from requests
/// served in-process (tests), which have no budget.
#[derive(Debug, Clone)]
pub struct Descriptors(Arc<tokio::sync::Semaphore>);

/// The staging descriptors a gateway of `connections` keeps: a twelfth of them (64 of the 768 connections under
/// `LimitNOFILE=1024`, a quarter of the reserve), at least two.
pub const STAGING_SHARE: usize = 12;

/// Descriptors taken for a request's own files, given back on drop.
#[derive(Debug)]
pub struct DescriptorPlaces {
    _places: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Descriptors {
    /// The staging descriptors of a gateway of `connections` ([`STAGING_SHARE`]).
    pub fn for_connections(connections: usize) -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new((connections / STAGING_SHARE).max(2))))
    }

    /// `count` descriptors for the files a request is about to open, or a 503 when they are all taken.
    pub fn take(descriptors: Option<&Self>, count: u32) -> Result<DescriptorPlaces, crate::problem::Problem> {
        let Some(Self(staging)) = descriptors else { return Ok(DescriptorPlaces { _places: None }) };
        match staging.clone().try_acquire_many_owned(count) {
            Ok(permit) => Ok(DescriptorPlaces { _places: Some(permit) }),
            Err(_) => Err(crate::problem::Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "Gateway busy",
                "the gateway has no room for another upload just now; try again shortly",
            )),
        }
    }
}

/// Serves `app` on `listener` within `limits`, over TLS when `tls` is given, until `shutdown` completes; then
/// stops accepting and gives open connections up to 30 s to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let limits = Arc::new(limits);
    let budget = Arc::new(Places::new(limits.max_connections, limits.max_connections_per_peer));
    let descriptors = Descriptors::for_connections(limits.max_connections);
    // HTTP/1.1 only, in plain text and over TLS (whose ALPN offers nothing else, crate::tls): one request at a time
    // per connection, so that every budget here (places per network, bodies, answers leaving) counts what a client
    // really holds. HTTP/2's streams would multiply each connection's place by a hundred (a review held 2.9 GB
    // with partial bodies on plain-text HTTP/2 that hyper-util's auto mode served despite `http1_only`).
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
    let http1 = Arc::new(http1);
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or a connection reset before we took it: wait a little, and keep serving.
                    tracing::warn!(error = %custodia_service::error::Chain(&err), "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let exempt = limits.trusts(peer.ip());
        let network = (!exempt).then(|| ClientNetwork::of(peer.ip()));
        let Some(admitted) = budget.admit_waiting(network, CLOSING_WAIT).await else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(refused, "connections refused over the connection budget");
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let _ = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_AT_MOST);
        let activity = admitted.activity();
        let service =
            site_service(app.clone(), peer, tls.is_some(), limits.clone(), descriptors.clone(), activity.clone());
        let http1 = http1.clone();
        let tls = tls.clone();
        let closing = closing.subscribe();
        let header_read = limits.header_read_timeout;
        let write_stall = limits.body_idle_timeout * WRITE_STALL_OVER_BODY_IDLE;
        tokio::spawn(async move {
            let mut given_up = std::pin::pin!(admitted.given_up());
            let (held, mut io_gone) = tokio::sync::oneshot::channel::<()>();
            let served = match tls {
                None => {
                    let io = ClientIo::new(stream, write_stall, activity.clone(), held);
                    let taken_back = TakenBack { given_up: given_up.as_mut(), cut: admitted.cut(), activity };
                    serve_connection(&http1, io, header_read, service, closing, taken_back).await
                }
                Some(acceptor) => {
                    // A handshake whose place a newcomer takes back ends where it stands.
                    let accepted = tokio::select! {
                        accepted = tokio::time::timeout(header_read, acceptor.accept(stream)) => accepted,
                        () = given_up.as_mut() => return,
                    };
                    let Ok(Ok(stream)) = accepted else { return };
                    let io = ClientIo::new(stream, write_stall, activity.clone(), held);
                    let taken_back = TakenBack { given_up: given_up.as_mut(), cut: admitted.cut(), activity };
                    serve_connection(&http1, io, header_read, service, closing, taken_back).await
                }
            };
            // A connection whose IO lives on was upgraded (a hearing room's WebSocket): it keeps its place until
            // the socket closes, and a place taken back, or one cut, closes the socket.
            if matches!(io_gone.try_recv(), Err(tokio::sync::oneshot::error::TryRecvError::Empty)) {
                let gone = tokio::select! {
                    _ = &mut io_gone => true,
                    () = given_up.as_mut() => false,
                    () = admitted.cut() => false,
                };
                if !gone {
                    served.close_now();
                    let _ = io_gone.await;
                }
            }
            // `admitted`, moved in here, gives its place back as the task ends.
        });
    }
    drop(listener);
    let _ = closing.send(true);
    if !budget.emptied(Duration::from_secs(30)).await {
        tracing::warn!("connections still open 30 s after shutdown began; closing them");
    }
    Ok(())
}

/// What tells a connection that its place was taken back: `given_up`, then perhaps `cut` ([`crate::places`]); and
/// how many of its requests are in flight (from the head read to the answer's last byte).
struct TakenBack<G, C> {
    given_up: G,
    cut: C,
    activity: Arc<crate::places::Activity>,
}

/// One connection until it ends, until shutdown asks it to finish what it is doing, until its place is taken
/// back, until what it serves ends it ([`Connection::close_now`]), or until `header_read` has passed with no request
/// head come whole (hyper's own header timer does not start for a client that sends nothing). When its place is
/// taken back, a connection never answered with no request in flight (one still sending its first head) closes
/// at once; others shut down gracefully: one idle between requests once its last answer has left, one with a
/// request in flight within [`GIVE_UP_GRACE`] to finish it, unless it is cut short first. So a court behind one
/// address whose connections weigh the most loses its idle ones, which its browsers open again, not a request, as
/// long as lingering requests keep no newcomer out.
async fn serve_connection<I, S>(
    http1: &hyper::server::conn::http1::Builder,
    io: I,
    header_read: Duration,
    service: S,
    mut closing: tokio::sync::watch::Receiver<bool>,
    taken_back: TakenBack<impl Future<Output = ()> + Unpin, impl Future<Output = ()>>,
) -> Arc<crate::places::Activity>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<Request<hyper::body::Incoming>, Response = axum::response::Response, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = http1.serve_connection(TokioIo::new(io), service).with_upgrades();
    let mut connection = std::pin::pin!(connection);
    let activity = taken_back.activity.clone();
    tokio::select! {
        _ = connection.as_mut() => {}
        () = activity.closed_now() => {}
        () = never_asked(&activity, header_read) => {}
        _ = closing.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
        () = taken_back.given_up => {
            // Never answered and nothing in flight (a half-sent head, or nothing at all): closed at once. An
            // answered one shuts down gracefully too, since its last answer's bytes may still be leaving.
            if activity.is_half_open() {
                return activity;
            }
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tokio::time::sleep(GIVE_UP_GRACE) => {}
                () = taken_back.cut => {}
            }
        }
    }
    activity
}

/// Completes if `limit` passes with no request head come whole on the connection; otherwise never.
async fn never_asked(activity: &crate::places::Activity, limit: Duration) {
    tokio::time::sleep(limit).await;
    if !activity.is_half_open() {
        std::future::pending::<()>().await;
    }
}

/// A connection's IO, which outlives the HTTP connection when it is upgraded (a hearing room's WebSocket).
///
/// - Its writes wait for the client at most `limit` at a time: an answer (or a room socket's messages) that the
///   client stops reading for that long fails the connection, which gives back its places (its connection, and
///   its download's or export's among those leaving, [`crate::outflow::Outflow`]). Downloads never read once held
///   those places for good, and members' stalled downloads kept their colleagues' out. The kernel holds at most
///   [`UNSENT_AT_MOST`] unsent bytes of it, so a client reading slowly is woken for often, and what it was sent is
///   close to what it read.
/// - It fails once [`crate::places::Activity::close_now`] is asked, reads and writes alike, also after an upgrade.
/// - `held` is dropped with it: the listener's task for the connection then learns that the socket is gone, and
///   only then gives its place back (an upgraded socket keeps its place; they once escaped every budget).
struct ClientIo<I> {
    io: I,
    limit: Duration,
    stalled: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    activity: Arc<crate::places::Activity>,
    _held: tokio::sync::oneshot::Sender<()>,
}

/// Unsent bytes the kernel holds at most for one connection (`TCP_NOTSENT_LOWAT`): bytes in flight are not
/// limited, so a fast link is as fast, but a client reading slowly finds no megabytes queued for it at the
/// gateway, which measures its pace by what it hands the kernel. Linux wakes a writer once half of it has gone,
/// so a client must read that much within the write stall limit ([`WRITE_STALL_OVER_BODY_IDLE`]): 256 KiB a
/// minute by default, about 4 KiB/s. (128 KiB cost case exports a fifth of their speed on this 2-core machine;
/// Linux's default, megabytes, cut off readers slower than about 40 KB/s.)
pub const UNSENT_AT_MOST: u32 = 512 * 1024;

/// Writes may wait for the client this many times the body idle limit (30 s) at a time: an answer never read
/// closes its connection after a minute, and a client reading a few KiB a second is never mistaken for one.
pub const WRITE_STALL_OVER_BODY_IDLE: u32 = 2;

impl<I> ClientIo<I> {
    fn new(
        io: I,
        limit: Duration,
        activity: Arc<crate::places::Activity>,
        held: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Self { io, limit, stalled: None, activity, _held: held }
    }

    /// An error once the connection is to be closed now; otherwise `None`, and the task is woken when it is.
    fn closed<T>(&self, cx: &mut std::task::Context<'_>, write: bool) -> Option<std::task::Poll<std::io::Result<T>>> {
        self.activity.wake_when_closed(cx.waker(), write);
        self.activity.is_closed_now().then(|| {
            std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "the connection was closed by the gateway",
            )))
        })
    }
    /// `Pending` from the IO: waits on, until `limit` has passed since the first `Pending` in a row.
    fn waited<T>(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<T>> {
        let limit = self.limit;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match stalled.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing of what it was sent for the write stall limit",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn progressed<T>(
        &mut self,
        done: std::task::Poll<std::io::Result<T>>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<T>> {
        match done {
            std::task::Poll::Ready(result) => {
                self.stalled = None;
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => self.waited(cx),
        }
    }
}

impl<I: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for ClientIo<I> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        if let Some(closed) = self.closed(cx, false) {
            return closed;
        }
        std::pin::Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for ClientIo<I> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(closed) = self.closed(cx, true) {
            return closed;
        }
        let done = std::pin::Pin::new(&mut self.io).poll_write(cx, buf);
        self.progressed(done, cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if let Some(closed) = self.closed(cx, true) {
            return closed;
        }
        let done = std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progressed(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let done = std::pin::Pin::new(&mut self.io).poll_flush(cx);
        self.progressed(done, cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// The router for one connection: each request learns its [`Site`], its body is cut off when it goes idle, and
/// answers over HTTPS carry HSTS.
fn site_service(
    app: Router,
    peer: SocketAddr,
    tls: bool,
    limits: Arc<Limits>,
    descriptors: Descriptors,
    activity: Arc<crate::places::Activity>,
) -> hyper_util::service::TowerToHyperService<
    impl tower::Service<
        Request<hyper::body::Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future = impl Future<Output = Result<axum::response::Response, Infallible>> + Send,
    > + Clone,
> {
    let service = tower::service_fn(move |request: Request<hyper::body::Incoming>| {
        // In flight from here, once its head is read, until its answer's body is done with.
        let flying = InFlight::enter(&activity);
        let site = Site::resolve(peer.ip(), tls, request.headers(), &limits.trusted_proxies);
        let idle = limits.body_idle_timeout;
        let small = is_small_body(request.headers());
        let mut request = request.map(|body| {
            let body = counted(Body::new(body), &activity, None);
            if hyper::body::Body::is_end_stream(&body) {
                body
            } else if small {
                deadline_limited(idle_limited(body, idle), SMALL_BODY_WITHIN)
            } else {
                idle_limited(body, idle)
            }
        });
        request.extensions_mut().insert(site);
        request.extensions_mut().insert(Connection(activity.clone()));
        request.extensions_mut().insert(descriptors.clone());
        request.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let app = app.clone();
        async move {
            let mut response = tower::ServiceExt::oneshot(app, request).await?;
            if site.https {
                response.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
            }
            Ok(response.map(|body| {
                let activity = flying.0.clone();
                counted(body, &activity, Some(flying))
            }))
        }
    });
    hyper_util::service::TowerToHyperService::new(service)
}

/// The connection a request came on, as the listener counts what it does ([`crate::places::Activity`]).
#[derive(Debug, Clone)]
pub struct Connection(Arc<crate::places::Activity>);

impl Connection {
    /// Marks the connection as a live socket (a hearing participant's, once joined): taken back last, like one
    /// moving data ([`crate::places::Activity::upgraded`]). An upgraded socket not yet joined weighs like an idle
    /// one.
    pub fn mark_live(&self) {
        self.0.upgraded.store(true, Ordering::Release);
    }

    /// Ends the connection at once, with whatever it is serving: a reader too slow to keep its place among the
    /// downloads leaving ([`crate::outflow::Outflow`]), whose answer may be waiting on the socket, not in the app.
    pub fn close_now(&self) {
        self.0.close_now();
    }
}

/// Marks the connection a request came on (if it came over one) as signed in as `account`: a request on it
/// proved who sent it. Its place is then taken back after strangers' ([`crate::places`]).
pub fn mark_signed_in(extensions: &axum::http::Extensions, account: &str) {
    if let Some(Connection(activity)) = extensions.get::<Connection>() {
        activity.sign_in(account);
    }
}

/// A request of a connection, counted in flight until dropped, and then as answered.
struct InFlight(Arc<crate::places::Activity>);

impl InFlight {
    fn enter(activity: &Arc<crate::places::Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.moved.store(0, Ordering::Release);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.answered.fetch_add(1, Ordering::AcqRel);
    }
}

/// `body`, its data counted as moved by the connection ([`crate::places::Activity`]); an answer's body carries its
/// request's `flying` guard, dropped once the body is sent or abandoned.
fn counted(body: Body, activity: &Arc<crate::places::Activity>, flying: Option<InFlight>) -> Body {
    let activity = activity.clone();
    Body::new(http_body_util::BodyExt::map_frame(body, move |frame| {
        let _still = &flying;
        if let Some(data) = frame.data_ref() {
            activity.moved.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    }))
}

/// A body of at most this many bytes (declared), or any JSON body, must arrive whole within [`SMALL_BODY_WITHIN`]:
/// trickled a byte at a time just under the idle limit, such bodies would hold connections for nothing. Uploads
/// (large, not JSON) keep only the idle rule.
pub const SMALL_BODY_BYTES: u64 = 64 * 1024;
/// See [`SMALL_BODY_BYTES`].
pub const SMALL_BODY_WITHIN: Duration = Duration::from_secs(15);

/// Whether a request's body is held to [`SMALL_BODY_WITHIN`].
fn is_small_body(headers: &axum::http::HeaderMap) -> bool {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.to_ascii_lowercase().contains("json"));
    json || declared.is_some_and(|length| length <= SMALL_BODY_BYTES)
}

/// `body`, ended with an error if it has not all arrived `within` from now.
fn deadline_limited(body: Body, within: Duration) -> Body {
    let deadline = tokio::time::Instant::now() + within;
    let stream = body.into_data_stream();
    let limited = futures::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
            Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body took too long to arrive")),
                None,
            )),
        }
    });
    Body::from_stream(limited)
}

/// `body`, ended with an error if no data arrives for `idle`.
fn idle_limited(body: Body, idle: Duration) -> Body {
    let stream = body.into_data_stream();
    let limited = futures::stream::unfold(Some(stream), move |stream| async move {
        let mut stream = stream?;
        match tokio::time::timeout(idle, stream.next()).await {
            Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(stream))),
            Ok(Some(Err(err))) => Some((Err(std::io::Error::other(err)), None)),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "the request body stopped arriving")),
                None,
            )),
        }
    });
    Body::from_stream(limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_withholds_the_client_address() {
        let site = Site { client: "203.0.113.77".parse().unwrap(), https: true };
        let shown = format!("{site:?} {:?}", site.network());
        assert!(!shown.contains("203.0.113"), "{shown}");
        assert!(shown.contains("https: true"), "{shown}");
    }

    #[tokio::test]
    async fn a_small_body_trickled_under_the_idle_limit_is_cut_off_by_its_deadline() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("65536"));
        assert!(is_small_body(&headers));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("65537"));
        assert!(!is_small_body(&headers), "an upload keeps the idle rule");
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(is_small_body(&headers), "JSON, whatever its length");
        // One byte every 50 ms, without end: never idle for 30 s, so only the deadline ends it.
        let trickle = futures::stream::unfold((), |()| async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((Ok::<_, std::io::Error>(axum::body::Bytes::from_static(b"x")), ()))
        });
        let body = deadline_limited(
            idle_limited(Body::from_stream(trickle), Duration::from_secs(30)),
            Duration::from_millis(500),
        );
        let mut stream = body.into_data_stream();
        let mut received = 0;
        let ended = tokio::time::timeout(Duration::from_secs(120), async {
            loop {
                match stream.next().await {
                    Some(Ok(_)) => received += 1,
                    Some(Err(err)) => return err.to_string(),
                    None => return "ended".to_owned(),
                }
            }
        })
        .await
        .expect("the trickled body was never cut off");
        assert!(ended.contains("took too long"), "{ended}");
        assert!(received <= 10, "{received} bytes arrived after the deadline");
    }

    /// A connection from `source` (a loopback address) to `port`.
    async fn connect_from(source: [u8; 4], port: u16) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(SocketAddr::from(([127, 0, 0, 1], port))).await.unwrap()
    }

    /// What the server sends on `stream` within `wait` until it closes it (or until `wait` is up): the bytes, and
    /// whether it closed.
    async fn read_until_closed(stream: &mut tokio::net::TcpStream, wait: Duration) -> (String, bool) {
        use tokio::io::AsyncReadExt as _;
        let mut got = Vec::new();
        let mut buffer = [0u8; 4096];
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), true),
                Ok(Ok(n)) => got.extend_from_slice(&buffer[..n]),
                Err(_) => return (String::from_utf8_lossy(&got).into_owned(), false),
            }
        }
    }

    /// A server of four connections, all four for one network if it likes, whose every path answers the length
    /// of the request's body (no `.route`, which the OpenAPI test would take for the gateway's).
    /// Its port, and what stops it.
    async fn four_place_server() -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let app = Router::new().fallback(|body: axum::body::Bytes| async move { format!("{} bytes", body.len()) });
        four_place_server_of(app, Duration::from_secs(30), Duration::from_secs(30)).await
    }

    /// [`four_place_server`] serving `app`, with `header_read` as its header read limit and `body_idle` as its body
    /// idle limit.
    async fn four_place_server_of(
        app: Router,
        header_read: Duration,
        body_idle: Duration,
    ) -> (u16, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = Limits {
            max_connections: 4,
            max_connections_per_peer: 4,
            header_read_timeout: header_read,
            body_idle_timeout: body_idle,
            trusted_proxies: vec![],
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            serve(listener, app, None, limits, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        (port, stop, server)
    }

    /// A connection that sends nothing at all, and one that sends half a head, close once the header read limit
    /// has passed, whether or not the budget is full; a client that asks in time is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_that_never_asks_closes_after_the_header_read_limit() {
        use tokio::io::AsyncWriteExt as _;
        let app = Router::new().fallback(|| async { "answered" });
        let limit = Duration::from_millis(500);
        let (port, stop, server) = four_place_server_of(app, limit, Duration::from_secs(30)).await;
        let mut silent = connect_from([127, 0, 0, 1], port).await;
        let mut half = connect_from([127, 0, 0, 1], port).await;
        half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let (sent, closed) = read_until_closed(&mut silent, 20 * limit).await;
        assert!(closed, "a connection that sent nothing is still open after {:?}: {sent:?}", 20 * limit);
        let (_, closed) = read_until_closed(&mut half, 20 * limit).await;
        assert!(closed, "a half-sent head is still open");
        let mut asking = connect_from([127, 0, 0, 1], port).await;
        asking.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let (answer, _) = read_until_closed(&mut asking, Duration::from_secs(10)).await;
        assert!(answer.ends_with("answered"), "{answer:?}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// An upgraded connection (a hearing room's WebSocket) keeps its place for as long as the socket lives: four
    /// sockets fill a four-place server, and a fifth client gets in only by taking one back, which closes it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upgraded_socket_keeps_its_place_and_a_place_taken_back_closes_it() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let app = Router::new().fallback(|upgrade: axum::extract::ws::WebSocketUpgrade| async move {
            upgrade.on_upgrade(|mut socket| async move { while let Some(Ok(_)) = socket.recv().await {} })
        });
        let (port, stop, server) = four_place_server_of(app, Duration::from_secs(30), Duration::from_secs(30)).await;
        let mut sockets = Vec::new();
        for _ in 0..4 {
            let mut socket = connect_from([127, 0, 0, 1], port).await;
            socket
                .write_all(
                    b"GET /room HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
                .await
                .unwrap();
            let mut head = [0u8; 12];
            socket.read_exact(&mut head).await.unwrap();
            assert_eq!(&head, b"HTTP/1.1 101", "upgraded");
            sockets.push(socket);
        }
        // The four upgraded sockets still hold the four places: a fifth client takes one back.
        let mut fifth = connect_from([127, 0, 0, 2], port).await;
        fifth.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut closed = 0;
        for socket in &mut sockets {
            let (_, was_closed) = read_until_closed(socket, Duration::from_secs(5)).await;
            closed += usize::from(was_closed);
        }
        assert_eq!(closed, 1, "one upgraded socket gave its place to the newcomer");
        drop(fifth);
        drop(sockets);
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// What serves a request can end its connection at once, even while the answer waits on the socket for a
    /// client reading slowly (a download whose place was given to another).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn what_serves_a_request_can_close_its_connection_at_once() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let app = Router::new().fallback(|axum::Extension(connection): axum::Extension<Connection>| async move {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                connection.close_now();
            });
            let endless =
                futures::stream::repeat_with(|| Ok::<_, Infallible>(axum::body::Bytes::from(vec![b'x'; 65536])));
            axum::body::Body::from_stream(endless)
        });
        let (port, stop, server) = four_place_server_of(app, Duration::from_secs(30), Duration::from_secs(30)).await;
        let mut client = connect_from([127, 0, 0, 1], port).await;
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // Read slowly for a second, never stalling; then drain what the buffers hold. An answer never ended
        // would go on without end.
        let mut buffer = vec![0u8; 1 << 16];
        for _ in 0..20 {
            let read = client.read(&mut buffer[..1024]).await.unwrap();
            assert!(read > 0, "the answer ended on its own");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut drained = 0usize;
        let closed = loop {
            match tokio::time::timeout(Duration::from_secs(20), client.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) if drained < 256 << 20 => drained += n,
                _ => break false,
            }
        };
        assert!(closed, "the connection was never closed");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// An answer the client never reads fails its connection once the writes have waited the body idle limit: the
    /// connection closes (its place, and a download's, given back). One the client reads, however slowly, goes on.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_never_read_closes_its_connection_after_the_idle_limit() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let large = axum::body::Bytes::from(vec![b'x'; 64 << 20]);
        let app = Router::new().fallback(move || {
            let large = large.clone();
            async move { large }
        });
        let (port, stop, server) = four_place_server_of(app, Duration::from_secs(30), Duration::from_secs(1)).await;
        let mut stalled = connect_from([127, 0, 0, 1], port).await;
        stalled.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut slow = connect_from([127, 0, 0, 2], port).await;
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        // The slow client reads a little every half second, for longer than the limit.
        let mut read_slowly = 0;
        let mut buffer = vec![0u8; 64 << 10];
        for _ in 0..8 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            read_slowly += slow.read(&mut buffer).await.unwrap();
        }
        assert!(read_slowly > 0, "the slow reader is still being answered");
        // The stalled one, after reading nothing for four seconds, finds its connection closed once its buffers
        // are drained.
        let mut drained = 0usize;
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match stalled.read(&mut buffer).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => drained += n,
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the stalled connection was closed");
        assert!(drained < 64 << 20, "and not all of the answer was sent: {drained} bytes");
        let _ = stop.send(());
        drop((slow, stalled));
        server.await.unwrap();
    }

    /// A connection from `court` that has sent a request head and half of its 10-byte body.
    async fn request_half_sent(port: u16) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt as _;
        let mut stream = connect_from([127, 0, 0, 1], port).await;
        stream.write_all(b"POST /echo HTTP/1.1\r\nHost: court\r\nContent-Length: 10\r\n\r\n12345").await.unwrap();
        stream
    }

    /// A connection from the court that has been answered once and is kept alive.
    async fn kept_alive(port: u16) -> tokio::net::TcpStream {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut stream = connect_from([127, 0, 0, 1], port).await;
        stream.write_all(b"GET / HTTP/1.1\r\nHost: court\r\n\r\n").await.unwrap();
        let mut answer = [0u8; 1024];
        let n = stream.read(&mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 200"), "a keep-alive answer");
        stream
    }

    /// A court behind one address holds every connection when newcomers arrive. Its connection still sending its
    /// head goes first, then its idle keep-alives, each closed at once with nothing sent (its browsers would open
    /// them again), and only then its request whose body is still coming, which gets to finish and is answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_taken_back_finishes_the_request_in_flight_and_an_idle_one_closes_at_once() {
        use tokio::io::AsyncWriteExt as _;
        let (port, stop, server) = four_place_server().await;
        let mut in_flight = request_half_sent(port).await;
        let mut head_half_sent = connect_from([127, 0, 0, 1], port).await;
        head_half_sent.write_all(b"GET / HTTP/1.1\r\nHost: co").await.unwrap();
        let mut idle = kept_alive(port).await;
        let mut idle_too = kept_alive(port).await;
        tokio::time::sleep(Duration::from_millis(200)).await;

        let mut newcomers = Vec::new();
        for (n, stream) in [&mut head_half_sent, &mut idle, &mut idle_too].into_iter().enumerate() {
            newcomers.push(connect_from([127, 0, 0, 2 + n as u8], port).await);
            let (answer, closed) = read_until_closed(stream, Duration::from_secs(2)).await;
            assert!(closed && answer.is_empty(), "newcomer {n}: closed at once, with nothing sent: {answer:?}");
        }
        newcomers.push(connect_from([127, 0, 0, 5], port).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        in_flight.write_all(b"67890").await.unwrap();
        let (answer, closed) = read_until_closed(&mut in_flight, Duration::from_secs(30)).await;
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("10 bytes"), "{answer}");
        assert!(closed, "and then the connection closes: {answer}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    /// Requests in flight on places taken back may hold a sixteenth over the total; a newcomer past that cuts the
    /// oldest of them short rather than being turned away: lingering requests never keep a witness out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_newcomer_past_the_lingering_allowance_cuts_a_lingering_request_short() {
        let (port, stop, server) = four_place_server().await;
        let mut lingering = Vec::new();
        for _ in 0..4 {
            lingering.push(request_half_sent(port).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The first newcomer takes back the oldest request in flight (none moves data), which lingers to finish
        // (one over the total: the allowance).
        let _first = connect_from([127, 0, 0, 2], port).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The second cuts it short.
        let mut second = connect_from([127, 0, 0, 3], port).await;
        let (answer, closed) = read_until_closed(&mut lingering[0], Duration::from_secs(2)).await;
        assert!(closed && answer.is_empty(), "the lingering request is cut short at once: {answer:?}");
        let (answer, closed) = read_until_closed(&mut second, Duration::from_millis(500)).await;
        assert!(!closed && answer.is_empty(), "the second newcomer is served, not turned away: {answer:?}");
        let _ = stop.send(());
        server.await.unwrap();
    }

    #[test]
    fn the_budget_keeps_a_reserve_of_descriptors() {
        let limits = Limits {
            max_connections: 10_000,
            max_connections_per_peer: 5_000,
            header_read_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            trusted_proxies: vec![],
        };
        let small = limits.clone().budgeted(1024);
        assert_eq!(small.max_connections, 768);
        // LimitNOFILE=1024: a sixteenth of 768 per client network, so three cannot hold every connection.
        assert_eq!(small.max_connections_per_peer, 48);
        let large = limits.clone().budgeted(1 << 20);
        assert_eq!(large.max_connections, 10_000);
        assert_eq!(large.max_connections_per_peer, 625, "a sixteenth of 10,000, under the 5,000 configured");
        let configured = Limits { max_connections_per_peer: 64, ..limits.clone() }.budgeted(1 << 20);
        assert_eq!(configured.max_connections_per_peer, 64, "never more than the configured share");
        let tiny = Limits { max_connections: 5, ..limits }.budgeted(1 << 20);
        assert_eq!(tiny.max_connections_per_peer, 1, "at least one");
    }

    #[test]
    fn ipv6_counts_by_its_64_and_mapped_ipv4_as_ipv4() {
        let network = |address: &str| ClientNetwork::of(address.parse().unwrap());
        assert_eq!(network("2001:db8:1:2::1"), network("2001:db8:1:2:ffff:ffff:ffff:fffe"));
        assert_eq!(network("2001:db8:1:2:aaaa::9").key(), "2001:db8:1:2::/64");
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db8:1:3::1"), "the next /64 is another network");
        assert_ne!(network("2001:db8:1:2::1"), network("2001:db9:1:2::1"));
        assert_eq!(network("::ffff:192.0.2.1"), network("192.0.2.1"));
        assert_eq!(network("::ffff:192.0.2.1").key(), "192.0.2.1");
        assert_ne!(network("192.0.2.1"), network("192.0.2.2"), "every IPv4 address is a network of its own");
        assert_ne!(network("::1"), network("127.0.0.1"));
        let debug = format!("{:?}", network("2001:db8:1:2::1"));
        assert!(!debug.contains("2001") && !debug.contains("db8"), "{debug}");
        assert!(!format!("{:?}", network("192.0.2.1")).contains("192"));
    }

    #[test]
    fn one_ipv6_64_shares_one_connection_budget() {
        let budget = Arc::new(Places::new(10, 2));
        let network = |address: &str| Some(ClientNetwork::of(address.parse().unwrap()));
        let _first = budget.admit(network("2001:db8:1:2::1")).unwrap();
        let _second = budget.admit(network("2001:db8:1:2::2")).unwrap();
        assert!(budget.admit(network("2001:db8:1:2:dead:beef::3")).is_none(), "a third address of one /64");
        assert!(budget.admit(network("2001:db8:1:3::1")).is_some(), "another /64");
    }

    #[test]
    fn a_request_knows_its_client_network_from_its_site_or_its_connection() {
        let mut extensions = axum::http::Extensions::new();
        assert_eq!(client_network(&extensions), None);
        let peer: SocketAddr = "[::ffff:198.51.100.7]:4000".parse().unwrap();
        extensions.insert(axum::extract::ConnectInfo(peer));
        assert_eq!(client_network(&extensions), Some(ClientNetwork::of("198.51.100.7".parse().unwrap())));
        extensions.insert(Site { client: "2001:db8::5".parse().unwrap(), https: false });
        assert_eq!(client_network(&extensions).map(|network| network.key()).as_deref(), Some("2001:db8::/64"));
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_and_the_scheme() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.9, 198.51.100.7"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let trusted = [ipnet::IpNet::from(proxy)];
        let via_proxy = Site::resolve(proxy, false, &headers, &trusted);
        assert_eq!(via_proxy, Site { client: "198.51.100.7".parse().unwrap(), https: true });
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(Site::resolve(stranger, false, &headers, &trusted), Site { client: stranger, https: false });
        // An IPv4 proxy seen on a dual-stack socket is the same proxy.
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(Site::resolve(mapped, false, &headers, &trusted), via_proxy);
    }

    /// A chain of proxies in a range (an ingress, then a router, their pods' addresses changing): the client is
    /// the last address outside the range, whatever the client wrote before it; the range's own are passed over.
    #[test]
    fn behind_a_chain_of_proxies_in_a_range_the_client_is_the_last_address_outside_it() {
        let pods: ipnet::IpNet = "10.244.0.0/16".parse().unwrap();
        let router: IpAddr = "10.244.3.17".parse().unwrap();
        let resolve = |forwarded: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert("x-forwarded-for", HeaderValue::from_static(forwarded));
            Site::resolve(router, false, &headers, &[pods]).client
        };
        let client: IpAddr = "198.51.100.7".parse().unwrap();
        // The ingress wrote the client's address; the router added the ingress's.
        assert_eq!(resolve("198.51.100.7, 10.244.1.5"), client);
        // A client that wrote addresses of its own (one of them inside the range) does not pass for them.
        assert_eq!(resolve("10.244.9.9, 192.0.2.1, 198.51.100.7, 10.244.1.5"), client);
        // Every address a proxy's: a client inside the cluster, the first named.
        assert_eq!(resolve("10.244.8.8, 10.244.1.5"), "10.244.8.8".parse::<IpAddr>().unwrap());
        // What no trusted proxy vouches for is never reached past an entry that is not an address: the nearest
        // address after it is the client, or the peer.
        assert_eq!(resolve("198.51.100.7, 203.0.113.9:4711, 10.244.1.5"), "10.244.1.5".parse::<IpAddr>().unwrap());
        assert_eq!(resolve("198.51.100.7, unknown"), router);
        assert_eq!(resolve("198.51.100.7, , 10.244.1.5"), "10.244.1.5".parse::<IpAddr>().unwrap());
        // Bytes that are not text end the walk where they are, not for the whole line: the address a proxy
        // appended to that line is still read.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_bytes(b"198.51.100.7, \xff, 192.0.2.44").unwrap());
        assert_eq!(Site::resolve(router, false, &headers, &[pods]).client, "192.0.2.44".parse::<IpAddr>().unwrap());
        // A peer in no trusted range is the client, whatever it sends.
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.244.1.5"));
        let outside: IpAddr = "10.245.0.1".parse().unwrap();
        assert_eq!(Site::resolve(outside, false, &headers, &[pods]).client, outside);
    }

    #[test]
    fn uploads_have_staging_descriptors_of_their_own() {
        let connections = Arc::new(Places::new(3, 3));
        let descriptors = Descriptors::for_connections(36);
        // Strangers hold every connection: the staging descriptors are not theirs.
        let _strangers: Vec<_> = (1..=3u8)
            .map(|n| connections.admit(Some(ClientNetwork::of(IpAddr::from([192, 0, 2, n])))).unwrap())
            .collect();
        let staging = Descriptors::take(Some(&descriptors), 2).unwrap();
        let more = Descriptors::take(Some(&descriptors), 1).unwrap();
        let refused = Descriptors::take(Some(&descriptors), 1).unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE, "a twelfth of 36: three");
        drop((staging, more));
        assert!(Descriptors::take(Some(&descriptors), 3).is_ok(), "a finished upload gives its descriptors back");
        assert!(Descriptors::take(None, 100).is_ok(), "in-process requests have no budget");
    }

    #[tokio::test]
    async fn one_peer_cannot_take_the_whole_budget_nor_keep_a_newcomer_out() {
        let budget = Arc::new(Places::new(3, 2));
        let attacker = Some(ClientNetwork::of("192.0.2.1".parse().unwrap()));
        let first = budget.admit(attacker).unwrap();
        let _second = budget.admit(attacker).unwrap();
        assert!(budget.admit(attacker).is_none(), "a third connection from one peer");
        let _other = budget.admit(Some(ClientNetwork::of("192.0.2.2".parse().unwrap()))).unwrap();
        // Over the global budget, a newcomer takes the place of the oldest connection of the peer holding the most.
        let _newcomer = budget.admit(Some(ClientNetwork::of("192.0.2.3".parse().unwrap()))).unwrap();
        let told = tokio::time::timeout(Duration::from_millis(20), first.given_up()).await;
        assert!(told.is_ok(), "the attacker's oldest connection is closed");
        drop(first);
        assert!(budget.admit(attacker).is_some(), "a closed connection gives its place back");
    }
}
