//! `easel-chaos-relay --listen ENDPOINT --connect ENDPOINT`: carries every connection accepted
//! on one endpoint (`tcp:ADDRESS` or `unix:PATH`) to the other. The chaos suite runs it inside
//! the network namespaces it creates (with `ip netns exec`), so a service's connection crosses
//! a veth link whose delay and loss the suite controls. Writes `ready` once listening.

use std::io::Write;

use easel_chaos::relay::{Endpoint, Listener, serve};

fn usage() -> ! {
    let _ = writeln!(
        std::io::stderr(),
        "usage: easel-chaos-relay --listen tcp:ADDRESS|unix:PATH --connect tcp:ADDRESS|unix:PATH"
    );
    std::process::exit(2)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut listen = None;
    let mut target = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value: Endpoint = match args.next().map(|value| value.parse()) {
            Some(Ok(value)) => value,
            Some(Err(message)) => {
                let _ = writeln!(std::io::stderr(), "{flag}: {message}");
                usage()
            }
            None => usage(),
        };
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--connect" => target = Some(value),
            _ => usage(),
        }
    }
    let (Some(listen), Some(target)) = (listen, target) else {
        usage()
    };
    let listener = match Listener::bind(&listen).await {
        Ok(listener) => listener,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "cannot listen on {listen:?}: {error}");
            std::process::exit(1)
        }
    };
    let _ = writeln!(std::io::stdout(), "ready");
    let _ = std::io::stdout().flush();
    serve(listener, move || Some(target.clone())).await;
}
