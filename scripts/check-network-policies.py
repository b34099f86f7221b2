#!/usr/bin/env python3
"""Walks the NetworkPolicies of a rendered overlay and checks the network design: every edge
of the architecture is allowed (egress from the caller and ingress to the callee when the callee
is a pod of the namespace), and a sample of edges that must not exist is refused.

Usage: check-network-policies.py OVERLAY RENDERED.yaml   (OVERLAY: dev or prod)

The pods are the rendered Deployments' pod templates (their labels, as the cluster would see
them); outside peers are given as a namespace with pod labels, or an IP address. The policy
semantics are Kubernetes': a pod selected by no policy of a direction is open in that
direction; otherwise a connection is allowed when any rule of any selecting policy matches
its peer and port. Exits non-zero listing every edge that is wrong.
"""

import ipaddress
import sys

import yaml

NAMESPACE = "easel"
APP = "app.kubernetes.io/name"


class Peer:
    """An end of a connection: a pod (namespace + labels) or an address outside the cluster."""

    def __init__(self, name, namespace=None, labels=None, ip=None, ns_labels=None):
        self.name = name
        self.namespace = namespace
        self.labels = labels or {}
        self.ip = ip
        self.ns_labels = ns_labels or (
            {"kubernetes.io/metadata.name": namespace} if namespace else {}
        )

    def is_local_pod(self):
        return self.namespace == NAMESPACE


def selector_matches(selector, labels):
    """A LabelSelector (matchLabels + matchExpressions) against a label map; {} matches all."""
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
    return True


def peer_matches(rule_peer, peer):
    """A NetworkPolicyPeer (podSelector / namespaceSelector / ipBlock) against a peer."""
    if "ipBlock" in rule_peer:
        if peer.ip is None:
            return False
        address = ipaddress.ip_address(peer.ip)
        block = rule_peer["ipBlock"]
        if address not in ipaddress.ip_network(block["cidr"]):
            return False
        return not any(address in ipaddress.ip_network(cidr) for cidr in block.get("except", []))
    if peer.ip is not None:
        return False
    if "namespaceSelector" in rule_peer:
        if not selector_matches(rule_peer["namespaceSelector"], peer.ns_labels):
            return False
    elif peer.namespace != NAMESPACE:
        return False
    if "podSelector" in rule_peer:
        return selector_matches(rule_peer["podSelector"], peer.labels)
    return True


def port_matches(rule_ports, port, protocol):
    if not rule_ports:
        return True
    for rule_port in rule_ports:
        if rule_port.get("protocol", "TCP") != protocol:
            continue
        if "port" not in rule_port:
            return True
        low = rule_port["port"]
        high = rule_port.get("endPort", low)
        if isinstance(low, int) and low <= port <= high:
            return True
    return False


def allowed(policies, pod, peer, port, protocol, direction):
    """Whether `pod` may connect to (Egress) or be reached from (Ingress) `peer` on `port`."""
    selecting = [
        policy
        for policy in policies
        if direction in policy["spec"].get("policyTypes", ["Ingress"])
        and selector_matches(policy["spec"]["podSelector"], pod.labels)
    ]
    if not selecting:
        return True
    key, peers_key = ("egress", "to") if direction == "Egress" else ("ingress", "from")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            rule_peers = rule.get(peers_key)
            peer_ok = not rule_peers or any(peer_matches(p, peer) for p in rule_peers)
            if peer_ok and port_matches(rule.get("ports"), port, protocol):
                return True
    return False


def connection_allowed(policies, source, target, port, protocol="TCP"):
    """Both ends' policies: egress of a local source, ingress of a local target."""
    if source.is_local_pod() and not allowed(policies, source, target, port, protocol, "Egress"):
        return False
    if target.is_local_pod() and not allowed(policies, target, source, port, protocol, "Ingress"):
        return False
    return True


def load(path):
    with open(path, encoding="utf-8") as file:
        documents = [d for d in yaml.safe_load_all(file) if d]
    policies = [d for d in documents if d["kind"] == "NetworkPolicy"]
    pods = {}
    for document in documents:
        if document["kind"] == "Deployment":
            labels = document["spec"]["template"]["metadata"]["labels"]
            pods[labels[APP]] = Peer(labels[APP], NAMESPACE, labels)
    return policies, pods


def external(overlay, pods):
    """The backing services as the overlay reaches them: pods of the namespace (dev) or
    addresses outside the cluster (prod, the networks of overlays/prod)."""
    if overlay == "dev":
        return {name: pods[name] for name in ("postgresql", "redis", "minio", "comfyui")}
    return {
        "postgresql": Peer("postgresql", ip="10.30.0.10"),
        "redis": Peer("redis", ip="10.30.0.20"),
        "minio": Peer("s3", ip="52.95.150.10"),
        "comfyui": Peer("comfyui", ip="10.40.0.11"),
    }


def edges(overlay, pods):
    ext = external(overlay, pods)
    s3_port = 9000 if overlay == "dev" else 443
    internet = Peer("client on the internet", ip="203.0.113.7")
    dns = Peer("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
    collector = Peer(
        "otel-collector", "observability", {APP: "opentelemetry-collector"}
    )
    prometheus = Peer("prometheus", "monitoring", {APP: "prometheus"})
    p = pods
    allowed_edges = [
        (internet, p["envoy"], 8443),
        (internet, p["envoy"], 8080),
        (p["envoy"], p["gateway"], 8080),
        (p["envoy"], p["storage"], 9093),
        (p["gateway"], p["auth"], 50051),
        (p["gateway"], p["jobs-api"], 50052),
        (p["gateway"], p["comfy-bridge"], 50054),
        (p["gateway"], p["storage"], 9093),
        (p["gateway"], ext["redis"], 6379),
        (p["auth"], ext["postgresql"], 5432),
        (p["auth"], ext["redis"], 6379),
        (p["storage"], ext["postgresql"], 5432),
        (p["storage"], ext["minio"], s3_port),
        (p["comfy-bridge"], ext["comfyui"], 8188),
    ]
    for role in ("jobs-api", "jobs-worker"):
        allowed_edges += [
            (p[role], p["auth"], 50051),
            (p[role], p["storage"], 50053),
            (p[role], p["comfy-bridge"], 50054),
            (p[role], ext["postgresql"], 5432),
            (p[role], ext["redis"], 6379),
        ]
    admin_ports = {
        "envoy": 9901, "gateway": 9080, "auth": 9091, "jobs-api": 9092,
        "jobs-worker": 9092, "storage": 9093, "comfy-bridge": 9094,
    }
    for name, port in admin_ports.items():
        allowed_edges += [
            (p[name], dns, 53, "UDP"),
            (p[name], dns, 53, "TCP"),
            (p[name], collector, 4317),
            (prometheus, p[name], port),
        ]

    forbidden_edges = [
        # The internet reaches only the edge.
        (internet, p["gateway"], 8080),
        (internet, p["auth"], 50051),
        (internet, p["storage"], 9093),
        # Envoy reaches only the gateway and the downloads.
        (p["envoy"], p["auth"], 50051),
        (p["envoy"], p["jobs-api"], 50052),
        (p["envoy"], ext["redis"], 6379),
        # Nobody calls the workers; the gateway never touches a database, S3 or a GPU.
        (p["gateway"], p["jobs-worker"], 50052),
        (p["gateway"], ext["postgresql"], 5432),
        (p["gateway"], p["storage"], 50053),
        (p["gateway"], ext["comfyui"], 8188),
        # Only the bridge reaches the GPUs; only storage the bucket.
        (p["jobs-worker"], ext["comfyui"], 8188),
        (p["jobs-api"], ext["minio"], s3_port),
        (p["auth"], ext["minio"], s3_port),
        # The bridge and storage call no other service; auth calls none.
        (p["comfy-bridge"], p["jobs-api"], 50052),
        (p["comfy-bridge"], ext["redis"], 6379),
        (p["comfy-bridge"], ext["postgresql"], 5432),
        (p["storage"], p["auth"], 50051),
        (p["auth"], p["jobs-api"], 50052),
        # No pod reaches the internet at large.
        (p["jobs-worker"], internet, 443),
        (p["comfy-bridge"], internet, 443),
        # Metrics are for the monitoring namespace only.
        (internet, p["envoy"], 9901),
        (p["gateway"], p["auth"], 9091),
    ]
    if overlay == "prod":
        # Storage reaches S3's public addresses, not the private networks on 443.
        forbidden_edges.append((p["storage"], Peer("private host", ip="10.30.0.10"), 443))
    else:
        forbidden_edges += [
            # The backing pods call nothing and admit only their users.
            (p["comfyui"], internet, 443),
            (p["redis"], p["gateway"], 8080),
            (p["gateway"], ext["minio"], 9000),
        ]
    return allowed_edges, forbidden_edges


def main():
    overlay, path = sys.argv[1], sys.argv[2]
    policies, pods = load(path)
    allowed_edges, forbidden_edges = edges(overlay, pods)
    wrong = []
    for edge in allowed_edges:
        source, target, port, protocol = (*edge, "TCP")[:4]
        if not connection_allowed(policies, source, target, port, protocol):
            wrong.append(f"refused but designed: {source.name} -> {target.name}:{port}/{protocol}")
    for edge in forbidden_edges:
        source, target, port, protocol = (*edge, "TCP")[:4]
        if connection_allowed(policies, source, target, port, protocol):
            wrong.append(f"allowed but forbidden: {source.name} -> {target.name}:{port}/{protocol}")
    for line in wrong:
        print(f"{overlay}: {line}", file=sys.stderr)
    if wrong:
        sys.exit(1)
    print(
        f"{overlay}: network policies allow all {len(allowed_edges)} designed edges "
        f"and refuse all {len(forbidden_edges)} forbidden ones"
    )


if __name__ == "__main__":
    main()
