//! A network link between two services that the suite can cut or slow down: two network
//! namespaces of the suite's own joined by a veth pair (addresses in a private range, inside
//! those namespaces only), with relays that carry a client's connections across it:
//!
//! ```text
//! client ─► 127.0.0.1:front ─► a.sock ─► [ns A] relay ─► 10.231.0.1 ══veth══ 10.231.0.2 ─► [ns B] relay
//!        ─► b.sock ─► service on 127.0.0.1
//! ```
//!
//! Unix sockets are files, visible from every namespace, so the two relays (the
//! `easel-chaos-relay` binary under `ip netns exec`) reach the suite's process in the root
//! namespace without any address outside the private namespaces. Only the veth hop is real
//! network, and only it is cut (`ip link set down`: packets are dropped silently, as in a
//! partition) or delayed (`tc qdisc … netem`).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use crate::relay::{Endpoint, Listener, serve};

/// The namespaces' side of the veth pair.
const ADDRESS_A: &str = "10.231.0.1";
const ADDRESS_B: &str = "10.231.0.2";
const PORT_B: u16 = 7000;

/// A cuttable link; removed (namespaces, veth, relays) on drop.
#[derive(Debug)]
pub struct Link {
    namespaces: [String; 2],
    veths: [String; 2],
    _relays: Vec<tokio::process::Child>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
    /// Where the client connects instead of the service.
    pub front: SocketAddr,
    target: Arc<OnceLock<SocketAddr>>,
    netem: Result<(), String>,
}

/// Runs `ip` (or another tool) and returns its error output when it fails.
fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let output = std::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|error| format!("cannot run {program}: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Link {
    /// Creates the namespaces, the veth pair and the relays. `Err` says why the machine does
    /// not allow it (not root, no `ip`, network namespaces refused).
    pub async fn create() -> Result<Link, String> {
        if !crate::infra::is_root() {
            return Err("network namespaces need root".into());
        }
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let namespaces = [format!("easel-chaos-{id}-a"), format!("easel-chaos-{id}-b")];
        let veths = [format!("ec{id}a"), format!("ec{id}b")];
        run("ip", &["netns", "add", &namespaces[0]])?;
        let dir = tempfile::tempdir().map_err(|error| format!("temp dir: {error}"))?;
        let target = Arc::new(OnceLock::new());
        // From here on, drop removes what was made, even when a step fails.
        let mut link = Link {
            namespaces,
            veths,
            _relays: Vec::new(),
            tasks: Vec::new(),
            front: SocketAddr::from(([127, 0, 0, 1], 0)),
            target,
            netem: Ok(()),
            _dir: dir,
        };
        link.wire().await?;
        Ok(link)
    }

    async fn wire(&mut self) -> Result<(), String> {
        let [ns_a, ns_b] = self.namespaces.clone();
        let [veth_a, veth_b] = self.veths.clone();
        run("ip", &["netns", "add", &ns_b])?;
        run(
            "ip",
            &[
                "link", "add", &veth_a, "type", "veth", "peer", "name", &veth_b,
            ],
        )?;
        run("ip", &["link", "set", &veth_a, "netns", &ns_a])?;
        run("ip", &["link", "set", &veth_b, "netns", &ns_b])?;
        for (ns, veth, address) in [(&ns_a, &veth_a, ADDRESS_A), (&ns_b, &veth_b, ADDRESS_B)] {
            run(
                "ip",
                &[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{address}/30"),
                    "dev",
                    veth,
                ],
            )?;
            run("ip", &["-n", ns, "link", "set", veth, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        self.netem = run(
            "ip",
            &[
                "netns", "exec", &ns_a, "tc", "qdisc", "add", "dev", &veth_a, "root", "netem",
                "delay", "0ms",
            ],
        )
        .and_then(|()| {
            run(
                "ip",
                &[
                    "netns", "exec", &ns_a, "tc", "qdisc", "del", "dev", &veth_a, "root",
                ],
            )
        });

        let a_sock = self._dir.path().join("a.sock");
        let b_sock = self._dir.path().join("b.sock");
        // The root namespace's ends first: the front the client dials, and the back that
        // reaches the service.
        let front = Listener::bind(&Endpoint::Tcp("127.0.0.1:0".into()))
            .await
            .map_err(|error| format!("bind front: {error}"))?;
        if let Listener::Tcp(listener) = &front {
            self.front = listener
                .local_addr()
                .map_err(|error| format!("front address: {error}"))?;
        }
        let to_a = Endpoint::Unix(a_sock.clone());
        self.tasks
            .push(tokio::spawn(serve(front, move || Some(to_a.clone()))));
        let back = Listener::bind(&Endpoint::Unix(b_sock.clone()))
            .await
            .map_err(|error| format!("bind back: {error}"))?;
        let target = self.target.clone();
        self.tasks.push(tokio::spawn(serve(back, move || {
            target
                .get()
                .map(|address| Endpoint::Tcp(address.to_string()))
        })));

        let relay = easel_test_support::workspace_binary("easel-chaos", "easel-chaos-relay");
        let b_listen = format!("tcp:{ADDRESS_B}:{PORT_B}");
        let a_sock = format!("unix:{}", a_sock.display());
        let b_sock = format!("unix:{}", b_sock.display());
        self._relays
            .push(start_relay(&relay, &ns_b, &b_listen, &b_sock).await?);
        self._relays
            .push(start_relay(&relay, &ns_a, &a_sock, &b_listen).await?);
        Ok(())
    }

    /// Points the link at the service (connections made before this are refused).
    pub fn connect_to(&self, service: SocketAddr) {
        let _ = self.target.set(service);
    }

    /// The URL a client uses instead of the service's.
    pub fn front_url(&self) -> String {
        format!("http://{}", self.front)
    }

    /// Whether `tc netem` works here; `Err` says why not.
    pub fn netem_support(&self) -> Result<(), String> {
        self.netem.clone()
    }

    /// Cuts the link: B's end goes down, so every packet across it is dropped silently
    /// (established connections stall, new ones time out), as in a partition.
    pub fn cut(&self) -> Result<(), String> {
        run(
            "ip",
            &[
                "-n",
                &self.namespaces[1],
                "link",
                "set",
                &self.veths[1],
                "down",
            ],
        )?;
        // Prove it: a connection across the link must not open now.
        let probe = format!("exec 3<>/dev/tcp/{ADDRESS_B}/{PORT_B}");
        let namespace = &self.namespaces[0];
        match run(
            "timeout",
            &["2", "ip", "netns", "exec", namespace, "bash", "-c", &probe],
        ) {
            Ok(()) => Err("the link still carries connections after the cut".into()),
            Err(_) => Ok(()),
        }
    }

    /// Restores the link after [`Link::cut`].
    pub fn restore(&self) -> Result<(), String> {
        run(
            "ip",
            &[
                "-n",
                &self.namespaces[1],
                "link",
                "set",
                &self.veths[1],
                "up",
            ],
        )
    }

    /// Adds `delay` to every packet in each direction (`tc netem` on both ends).
    pub fn delay(&self, delay: Duration) -> Result<(), String> {
        let delay = format!("{}ms", delay.as_millis());
        for (ns, veth) in self.namespaces.iter().zip(&self.veths) {
            run(
                "ip",
                &[
                    "netns", "exec", ns, "tc", "qdisc", "replace", "dev", veth, "root", "netem",
                    "delay", &delay,
                ],
            )?;
        }
        Ok(())
    }

    /// Removes the delay.
    pub fn undelay(&self) -> Result<(), String> {
        for (ns, veth) in self.namespaces.iter().zip(&self.veths) {
            run(
                "ip",
                &[
                    "netns", "exec", ns, "tc", "qdisc", "del", "dev", veth, "root",
                ],
            )?;
        }
        Ok(())
    }
}

/// Starts the relay binary inside `namespace` and waits for its `ready` line.
async fn start_relay(
    binary: &std::path::Path,
    namespace: &str,
    listen: &str,
    connect: &str,
) -> Result<tokio::process::Child, String> {
    let mut child = tokio::process::Command::new("ip")
        .args(["netns", "exec", namespace])
        .arg(binary)
        .args(["--listen", listen, "--connect", connect])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|error| format!("cannot start the relay: {error}"))?;
    let stdout = child.stdout.take().ok_or("no relay stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
    match ready {
        Ok(Ok(Some(line))) if line == "ready" => Ok(child),
        other => Err(format!("the relay in {namespace} did not start: {other:?}")),
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for namespace in &self.namespaces {
            let _ = run("ip", &["netns", "del", namespace]);
        }
    }
}
