/* sockops: when a redirected TCP connect is established, move its record from "by socket
 * cookie" to "by client tuple" (local address, local port): that tuple is exactly what the
 * proxy sees as its peer on accept, so lookup_origin(peer) finds the original destination.
 * The local port is unknown at connect time (bound later), hence this second step.
 * ACTIVE_ESTABLISHED_CB is always delivered to an attached sockops program (no cb flags
 * needed). It runs while the client handles the SYN-ACK, before its ACK makes the
 * connection acceptable, so the entry exists before the proxy can accept.
 */
#include "egressguard.h"

int eg_sockops(struct bpf_sock_ops *skops)
{
    if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB)
        return 1;

    __u64 cookie = eg_socket_cookie(skops);
    struct eg_record *r = eg_pending.lookup(&cookie);
    if (!r)
        return 1;

    /* Read each ctx field exactly once, 4 bytes at a time, before branching: otherwise clang
     * merges loads (a u64 load, or one load through a computed ctx pointer for both branches)
     * and the verifier rejects the ctx access. */
    __u32 family = EG_CTX32(skops->family), ip4 = EG_CTX32(skops->local_ip4);
    __u32 port = EG_CTX32(skops->local_port); /* host byte order */
    struct eg_tuple local = {
        .addr = {EG_CTX32(skops->local_ip6[0]), EG_CTX32(skops->local_ip6[1]),
                 EG_CTX32(skops->local_ip6[2]), EG_CTX32(skops->local_ip6[3])},
        .port = port,
    };
    if (family != EG_AF_INET6)
        eg_tuple_v4(&local, ip4, bpf_htons(port));
    /* A v4-mapped IPv6 socket's local_ip6 is already ::ffff:a.b.c.d, like eg_tuple_v4. */
    eg_origins.update(&local, r);
    eg_pending.delete(&cookie);
    return 1;
}
