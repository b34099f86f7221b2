//! [`Authenticator`]: auth's `Authenticate` RPC behind a cache that revocations evict.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
use easel_proto::auth::v1::{AuthenticateRequest, AuthenticateResponse, Principal};
use easel_runtime::Shutdown;
use easel_runtime::error::Error;
use easel_runtime::grpc::GrpcChannel;
use futures::StreamExt;
use tokio::sync::{broadcast, watch};

use crate::cache::{Lookup, PrincipalCache, Unheard};
use crate::{Credential, Revocation, revocation_channel};

/// How long an answered call may stay in the in-flight map (normally it is removed at once).
const IN_FLIGHT_TTL: Duration = Duration::from_secs(5);
/// The longest pause between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the listener checks its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(15);
/// How long connecting, subscribing or a ping may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of an [`Authenticator`]'s cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthenticatorConfig {
    /// How long an accepted credential is trusted without asking auth again (never past the
    /// credential's own expiry). Without a revocation listener, keep it at 1 s or less.
    pub cache_ttl: Duration,
    /// How long a refused credential is refused without asking auth again.
    pub negative_cache_ttl: Duration,
    /// The most answers kept (accepted and refused each).
    pub max_entries: u64,
    /// While revocations cannot be heard (the listener is not subscribed: Redis down), cached
    /// principals are trusted for this long past the later of their caching and the moment
    /// the listener lost Redis, then asked of auth again, so a revocation still lands within
    /// this TTL (never longer than `cache_ttl`). Past half of it, a request that finds the
    /// principal is answered from the cache and the principal is refreshed in the background,
    /// so no request waits for auth while its caller keeps calling.
    pub unheard_ttl: Duration,
}

impl Default for AuthenticatorConfig {
    fn default() -> Self {
        AuthenticatorConfig {
            cache_ttl: Duration::from_secs(30),
            negative_cache_ttl: Duration::from_secs(2),
            max_entries: 100_000,
            unheard_ttl: Duration::from_secs(1),
        }
    }
}

/// Resolves credentials to principals through auth, with a cache; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    client: AuthServiceClient<GrpcChannel>,
    cache: PrincipalCache,
    /// Calls of `Authenticate` in flight, by credential fingerprint: concurrent misses (and a
    /// refresh ahead) of one credential share one call.
    in_flight: moka::future::Cache<[u8; 32], Arc<SharedAnswer>>,
    /// How old a cached principal may be while revocations cannot be heard.
    unheard_ttl: Duration,
    /// Whether a revocation listener was started: then answers are trusted for the full TTL
    /// only while it is subscribed.
    listener: watch::Sender<ListenerState>,
    revocations: broadcast::Sender<Revocation>,
}

/// One call's answer, shared by its waiters, with the revocation epoch it started in: an
/// answer fetched across a revocation must not be cached by a waiter who joined after it.
struct SharedAnswer {
    epoch: u64,
    answer: Result<AuthenticateResponse, tonic::Status>,
}

/// The revocation listener's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListenerState {
    /// None was started: the configured TTL applies as is.
    None,
    /// Started but not subscribed (connecting, or Redis is unreachable); revocations were
    /// heard until `heard_until`, when it lost its subscription (`None`: never subscribed).
    Disconnected { heard_until: Option<Instant> },
    /// Subscribed: revocations are heard.
    Subscribed,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("listener", &*self.inner.listener.borrow())
            .finish_non_exhaustive()
    }
}

/// Time left until a proto timestamp, zero if it passed.
fn time_left(timestamp: &pbjson_types::Timestamp) -> Duration {
    let seconds = u64::try_from(timestamp.seconds).unwrap_or(0);
    let nanos = u32::try_from(timestamp.nanos).unwrap_or(0);
    let at = SystemTime::UNIX_EPOCH + Duration::new(seconds, nanos.min(999_999_999));
    at.duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
}

impl Authenticator {
    /// An authenticator asking auth through `client`.
    pub fn new(client: AuthServiceClient<GrpcChannel>, config: AuthenticatorConfig) -> Self {
        let (listener, _) = watch::channel(ListenerState::None);
        let (revocations, _) = broadcast::channel(256);
        Authenticator {
            inner: Arc::new(Inner {
                client,
                unheard_ttl: config.unheard_ttl.min(config.cache_ttl),
                // Entries are removed as soon as their call answers; the TTL only bounds a
                // leftover if a waiter is dropped between the answer and the removal.
                in_flight: moka::future::Cache::builder()
                    .max_capacity(config.max_entries)
                    .time_to_live(IN_FLIGHT_TTL)
                    .build(),
                cache: PrincipalCache::new(
                    config.cache_ttl,
                    config.negative_cache_ttl,
                    config.max_entries,
                ),
                listener,
                revocations,
            }),
        }
    }

    /// The principal behind `credential`, from the cache or from auth. Refusals are
    /// `UNAUTHENTICATED` with a reason from [`crate::reason`]; `UNAVAILABLE` when auth cannot
    /// be reached.
    pub async fn authenticate(&self, credential: &Credential) -> Result<Principal, Error> {
        let fingerprint = credential.fingerprint();
        let unheard = match *self.inner.listener.borrow() {
            ListenerState::Disconnected { heard_until } => Some(Unheard {
                heard_until,
                max_age: self.inner.unheard_ttl,
            }),
            ListenerState::None | ListenerState::Subscribed => None,
        };
        let lookup = |result| {
            metrics::counter!("easel_auth_cache_lookups_total", "result" => result).increment(1);
        };
        match self.inner.cache.lookup(&fingerprint, unheard).await {
            Lookup::Hit(principal) => {
                lookup("hit");
                return Ok(principal);
            }
            Lookup::RefreshAhead(principal) => {
                lookup("refresh_ahead");
                self.refresh_ahead(credential.clone(), fingerprint);
                return Ok(principal);
            }
            Lookup::Refused(error) => {
                lookup("refused");
                return Err(error);
            }
            Lookup::Miss => lookup("miss"),
        }
        self.fetch(credential, fingerprint).await
    }

    /// Asks auth again in the background for a principal the cache still serves; the answer
    /// replaces the entry (or, a refusal, evicts it).
    fn refresh_ahead(&self, credential: Credential, fingerprint: [u8; 32]) {
        let authenticator = self.clone();
        tokio::spawn(async move {
            // A failure leaves the entry to its expiry; the next lookup refreshes again.
            let _ = authenticator.fetch(&credential, fingerprint).await;
            authenticator.inner.cache.refresh_ended(&fingerprint).await;
        });
    }

    /// Asks auth (one call shared by concurrent askers) and caches the answer.
    async fn fetch(
        &self,
        credential: &Credential,
        fingerprint: [u8; 32],
    ) -> Result<Principal, Error> {
        let call = {
            let epoch = self.inner.cache.epoch();
            let mut client = self.inner.client.clone();
            let request = AuthenticateRequest {
                credential: Some(credential.to_proto()),
            };
            async move {
                let answer = client
                    .authenticate(request)
                    .await
                    .map(tonic::Response::into_inner);
                Arc::new(SharedAnswer { epoch, answer })
            }
        };
        let shared = self.inner.in_flight.get_with(fingerprint, call).await;
        self.inner.in_flight.invalidate(&fingerprint).await;
        let epoch = shared.epoch;
        match &shared.answer {
            Ok(response) => {
                let response = response.clone();
                let principal = response.principal.ok_or_else(|| {
                    Error::internal(std::io::Error::other(
                        "auth accepted a credential without a principal",
                    ))
                })?;
                let expiry = response.expire_time.as_ref().map(time_left);
                self.inner
                    .cache
                    .accept(fingerprint, principal.clone(), expiry, epoch)
                    .await;
                Ok(principal)
            }
            Err(status) => {
                let error = Error::from_status(status);
                self.inner.cache.refuse(fingerprint, &error).await;
                Err(error)
            }
        }
    }

    /// Evicts what the revocation concerns, as if it had arrived over Redis (for processes
    /// that learn of revocations another way, and for tests).
    pub fn apply_revocation(&self, revocation: &Revocation) {
        self.inner.cache.revoke(revocation);
        // Nobody listening is fine.
        let _ = self.inner.revocations.send(revocation.clone());
    }

    /// Forgets every cached principal.
    pub fn clear(&self) {
        self.inner.cache.clear();
    }

    /// Revocations as they are applied, to wait on one (tests, metrics).
    pub fn revocations(&self) -> broadcast::Receiver<Revocation> {
        self.inner.revocations.subscribe()
    }

    /// Whether the revocation listener is subscribed right now.
    pub fn is_listening(&self) -> bool {
        *self.inner.listener.borrow() == ListenerState::Subscribed
    }

    /// Waits until the revocation listener is subscribed, up to `deadline`; whether it is.
    pub async fn wait_listening(&self, deadline: Duration) -> bool {
        let mut state = self.inner.listener.subscribe();
        tokio::time::timeout(
            deadline,
            state.wait_for(|state| *state == ListenerState::Subscribed),
        )
        .await
        .is_ok_and(|result| result.is_ok())
    }

    /// Listens on `{prefix}auth:revocations` and evicts cached principals by key id / user id;
    /// reconnects with backoff; runs until shutdown.
    ///
    /// While it is not subscribed, cached principals are trusted for at most
    /// [`AuthenticatorConfig::unheard_ttl`]; after
    /// every (re)subscription the cache is cleared, since revocations may have been missed.
    pub fn spawn_revocation_listener(
        &self,
        redis_url: &str,
        prefix: &str,
        shutdown: Shutdown,
    ) -> tokio::task::JoinHandle<()> {
        self.set_listener(ListenerState::Disconnected { heard_until: None });
        let authenticator = self.clone();
        let channel = revocation_channel(prefix);
        let client = redis::Client::open(redis_url);
        tokio::spawn(async move {
            let client = match client {
                Ok(client) => client,
                Err(error) => {
                    tracing::error!(%error, "invalid Redis URL; revocations will not be heard");
                    return;
                }
            };
            authenticator.listen(client, channel, shutdown).await;
        })
    }

    fn set_listener(&self, state: ListenerState) {
        self.inner.listener.send_replace(state);
    }

    async fn listen(&self, client: redis::Client, channel: String, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_triggered() {
            let outcome = self.listen_once(&client, &channel, &shutdown).await;
            let was_subscribed = self.disconnected();
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, channel, "revocation listener disconnected; reconnecting");
                }
            }
            if was_subscribed {
                backoff = Duration::from_millis(100);
            }
            // A little jitter so replicas don't reconnect in lockstep.
            let jitter = Duration::from_millis(u64::from(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |elapsed| elapsed.subsec_millis())
                    % 100,
            ));
            tokio::select! {
                () = shutdown.triggered() => break,
                () = tokio::time::sleep(backoff + jitter) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.disconnected();
    }

    /// Marks the listener disconnected, remembering when it was last subscribed; whether it
    /// was subscribed until now.
    fn disconnected(&self) -> bool {
        let mut was_subscribed = false;
        self.inner.listener.send_modify(|state| {
            *state = match *state {
                ListenerState::Subscribed => {
                    was_subscribed = true;
                    ListenerState::Disconnected {
                        heard_until: Some(Instant::now()),
                    }
                }
                ListenerState::Disconnected { heard_until } => {
                    ListenerState::Disconnected { heard_until }
                }
                ListenerState::None => ListenerState::Disconnected { heard_until: None },
            }
        });
        was_subscribed
    }

    /// One subscription: `Ok` when shutdown ended it, `Err` when the connection did.
    async fn listen_once(
        &self,
        client: &redis::Client,
        channel: &str,
        shutdown: &Shutdown,
    ) -> Result<(), ListenError> {
        let pubsub = tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub())
            .await
            .map_err(|_| ListenError::Timeout("connecting"))??;
        let (mut sink, mut stream) = pubsub.split();
        tokio::time::timeout(REDIS_TIMEOUT, sink.subscribe(channel))
            .await
            .map_err(|_| ListenError::Timeout("subscribing"))??;
        // Whatever was revoked while we were not subscribed is unknown: start afresh.
        self.clear();
        self.set_listener(ListenerState::Subscribed);
        tracing::info!(channel, "listening for revocations");

        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                () = shutdown.triggered() => return Ok(()),
                message = stream.next() => {
                    let Some(message) = message else {
                        return Err(ListenError::Closed);
                    };
                    match Revocation::from_json(message.get_payload_bytes()) {
                        Some(revocation) => {
                            tracing::debug!(?revocation, "revocation received");
                            self.apply_revocation(&revocation);
                        }
                        None => tracing::warn!(channel, "ignoring a malformed revocation message"),
                    }
                }
                _ = ping.tick() => {
                    tokio::time::timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>())
                        .await
                        .map_err(|_| ListenError::Timeout("pinging"))??;
                }
            }
        }
    }
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum ListenError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("timed out {0}")]
    Timeout(&'static str),
    #[error("the connection closed")]
    Closed,
}

#[cfg(test)]
mod tests {
    use easel_proto::auth::v1::auth_service_client::AuthServiceClient;
    use easel_runtime::ErrorCode;
    use easel_runtime::grpc::{ClientConfig, connect_lazy};

    use super::*;

    fn unreachable_authenticator() -> Authenticator {
        // Port 9 (discard) on loopback: nothing answers gRPC there.
        let mut config = ClientConfig::new("http://127.0.0.1:9");
        config.connect_timeout = Duration::from_millis(200);
        let channel = connect_lazy(&config, "test").unwrap();
        Authenticator::new(
            AuthServiceClient::new(channel),
            AuthenticatorConfig::default(),
        )
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = AuthenticatorConfig::default();
        assert_eq!(config.cache_ttl, Duration::from_secs(30));
        assert_eq!(config.negative_cache_ttl, Duration::from_secs(2));
        assert_eq!(config.max_entries, 100_000);
        assert_eq!(config.unheard_ttl, Duration::from_secs(1));
    }

    #[test]
    fn time_left_is_zero_for_the_past() {
        let past = pbjson_types::Timestamp {
            seconds: 1,
            nanos: 0,
        };
        assert_eq!(time_left(&past), Duration::ZERO);
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let later = pbjson_types::Timestamp {
            seconds: i64::try_from(now + 100).unwrap(),
            nanos: 0,
        };
        assert!(time_left(&later) > Duration::from_secs(90));
    }

    #[tokio::test]
    async fn an_unreachable_auth_is_unavailable_not_a_refusal() {
        let authenticator = unreachable_authenticator();
        let credential = Credential::ApiKey("easel_abc_def".into());
        let error = authenticator.authenticate(&credential).await.unwrap_err();
        assert_eq!(error.code(), ErrorCode::Unavailable);
        // Not cached as a refusal: the next call asks again.
        let again = authenticator.authenticate(&credential).await.unwrap_err();
        assert_eq!(again.code(), ErrorCode::Unavailable);
        assert!(!authenticator.is_listening());
    }

    #[tokio::test]
    async fn applied_revocations_are_announced() {
        let authenticator = unreachable_authenticator();
        let mut revocations = authenticator.revocations();
        authenticator.apply_revocation(&Revocation::KeyId("key_1".into()));
        assert_eq!(
            revocations.recv().await.unwrap(),
            Revocation::KeyId("key_1".into())
        );
    }
}
