//! Connection hygiene of the runtime's server, on a real port: a slowloris of 2,000 stalled
//! connections from one address neither starves another client nor stays open past the
//! header-read timeout, and connections over the per-address cap are refused at once.

use std::time::{Duration, Instant};

use easel_runtime::Shutdown;
use easel_runtime::config::ServerConfig;
use easel_runtime::grpc::GrpcServer;
use easel_runtime::transport::{ConnectionSettings, raise_descriptor_limit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const STALLED: usize = 2_000;
const PER_ADDRESS: usize = 1_000;
/// Long enough that all stalled sockets are open before the first one times out, even on a
/// busy machine where the listen backlog overflows and connects are retried; the test waits
/// for it once.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Generous: the machine is shared.
const DEADLINE: Duration = Duration::from_secs(120);

/// Connects from `source` (a loopback address) to `target`.
async fn connect_from(source: &str, target: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().expect("address"))?;
    socket.connect(target).await
}

/// Reads until the server closes the connection; `true` if it closed (EOF or reset) within
/// the deadline without ever answering.
async fn closed_without_answer(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 1024];
    match tokio::time::timeout(DEADLINE, stream.read(&mut buffer)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// The value of a counter series in the Prometheus text, 0 when absent.
fn counter(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(name) && line.contains(label))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|value| value as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_one_address_does_not_stop_another_and_is_cut_off() {
    raise_descriptor_limit().expect("descriptor limit");
    let mut config = ServerConfig::ephemeral();
    config.connections = ConnectionSettings {
        header_read_timeout: HEADER_TIMEOUT,
        max_connections: 4 * STALLED,
        max_connections_per_address: PER_ADDRESS,
        ..ConnectionSettings::with_max_streams(1024)
    };
    let service = format!("hygiene-{}", uuid::Uuid::new_v4().simple());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let shutdown = Shutdown::new(Duration::from_secs(5));
    let server = tokio::spawn(GrpcServer::new(&service, &config).serve(listener, shutdown.clone()));

    // The attacker: 2,000 sockets from 127.0.0.1, each stalled in a different place.
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for index in 0..STALLED {
        let mut stream = connect_from("127.0.0.1", address).await.expect("connect");
        let partial: &[u8] = match index % 3 {
            // Nothing at all.
            0 => b"",
            // Half an HTTP/1.1 request head.
            1 => b"POST /grpc.health.v1.Health/Check HTTP/1.1\r\nHost: x\r\nContent-Ty",
            // Half the HTTP/2 preface.
            _ => b"PRI * HTTP/2.0\r\n",
        };
        // A refused socket may already be closed: the write can fail, which is fine.
        let _ = stream.write_all(partial).await;
        stalled.push(stream);
    }
    println!(
        "opened {STALLED} stalled connections in {:?}",
        started.elapsed()
    );

    // Over the cap, a complete request from the same address gets no answer: it is closed.
    let mut over_cap = connect_from("127.0.0.1", address).await.expect("connect");
    let _ = over_cap
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    assert!(
        closed_without_answer(&mut over_cap).await,
        "a connection over the per-address cap was served"
    );

    // Another address is served normally throughout.
    let channel = Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .local_address(Some("127.0.0.2".parse().expect("ip")))
        .connect()
        .await
        .expect("127.0.0.2 connects while 127.0.0.1 is over its cap");
    let mut health = HealthClient::new(channel);
    let mut latencies = Vec::new();
    for _ in 0..200 {
        let call = Instant::now();
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("the other client is served");
        latencies.push(call.elapsed());
    }
    latencies.sort();
    println!(
        "other client: p50 {:?}, p99 {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100]
    );

    // Every stalled socket is closed by the server: refused ones at once, the others when the
    // header-read timeout passes.
    let closing = stalled.iter_mut().map(closed_without_answer);
    let closed = futures::future::join_all(closing).await;
    let still_open = closed.iter().filter(|closed| !**closed).count();
    assert_eq!(still_open, 0, "stalled connections left open");
    println!(
        "all stalled connections closed after {:?}",
        started.elapsed()
    );

    let metrics = easel_runtime::metrics::render();
    let service_label = format!("service=\"{service}\"");
    let refused = counter(&metrics, "server_connections_refused_total", &service_label);
    let timed_out = counter(
        &metrics,
        "server_connections_timed_out_total",
        &service_label,
    );
    println!("refused {refused}, timed out {timed_out}");
    // The over-cap probe plus the stalled sockets beyond the cap.
    assert!(refused >= 1, "nothing was refused over the per-address cap");
    assert!(
        timed_out >= 1,
        "no connection was cut at the header timeout"
    );
    // Every socket past the per-address cap is refused at accept, the probe included. The
    // admitted ones were all closed (asserted above): at the header timeout, or earlier when
    // hyper gave up on a broken head by itself, which the timeout counter does not count.
    assert_eq!(
        refused,
        (STALLED - PER_ADDRESS) as u64 + 1,
        "every connection over the per-address cap is refused"
    );

    shutdown.trigger();
    tokio::time::timeout(DEADLINE, server)
        .await
        .expect("the server drains")
        .expect("joins")
        .expect("serves");
}
