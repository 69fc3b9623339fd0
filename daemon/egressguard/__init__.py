"""egressguard: stand between AI agents and the network.

eBPF redirects the guarded cgroup's connections to a transparent proxy that scans outbound
bytes with Hyperscan, applies a YAML policy (allow / block / mask / hold), waits for a human on
holds (gRPC approvals), and writes a tamper-evident audit log.
"""

__version__ = "0.1.0"
