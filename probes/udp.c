/* cgroup/sendmsg4 + sendmsg6: UDP policy for sendto()/sendmsg() with a destination address
 * (EG_UDP_MODE: allow, dns-only, block). In dns-only mode QUIC (UDP 443) cannot bypass the
 * proxy's scanner. A refusal makes the call fail with EPERM and is reported to user space.
 */
#include "egressguard.h"

int eg_sendmsg4(struct bpf_sock_addr *ctx)
{
    struct eg_tuple dst = {};
    eg_tuple_v4(&dst, ctx->user_ip4, ctx->user_port);
    return eg_udp_verdict(ctx, &dst, EG_HOOK_SENDMSG4);
}

int eg_sendmsg6(struct bpf_sock_addr *ctx)
{
    struct eg_tuple dst = {};
    eg_tuple_v6(&dst, ctx);
    return eg_udp_verdict(ctx, &dst, EG_HOOK_SENDMSG6);
}
