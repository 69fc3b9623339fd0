/* cgroup/connect4 + connect6: record a TCP connect and redirect it to the egressguard proxy;
 * apply the UDP policy to UDP connect() (a connected UDP socket's send() bypasses sendmsg
 * hooks). Other sockets are left alone. A hook must return 1; 0 fails connect() with EPERM.
 *
 * Config (-D): EG_PROXY4_IP (u32, network order), EG_PROXY4_PORT,
 * EG_PROXY6_IP0..3 (u32 words, network order), EG_PROXY6_PORT, EG_EXEMPT_MARK, EG_UDP_MODE.
 */
#include "egressguard.h"

int eg_connect4(struct bpf_sock_addr *ctx)
{
    struct eg_tuple dst = {};
    eg_tuple_v4(&dst, ctx->user_ip4, ctx->user_port);

    if (eg_is_udp(ctx))
        return eg_udp_verdict(ctx, &dst, EG_HOOK_CONNECT4);
    if (eg_track_tcp(ctx, &dst, EG_HOOK_CONNECT4)) {
        ctx->user_ip4 = EG_PROXY4_IP;
        ctx->user_port = bpf_htons(EG_PROXY4_PORT);
    }
    return 1;
}

int eg_connect6(struct bpf_sock_addr *ctx)
{
    struct eg_tuple dst = {};
    eg_tuple_v6(&dst, ctx);

    if (eg_is_udp(ctx))
        return eg_udp_verdict(ctx, &dst, EG_HOOK_CONNECT6);
    if (!eg_track_tcp(ctx, &dst, EG_HOOK_CONNECT6))
        return 1;

    if (eg_is_v4_mapped(&dst)) {
        /* ::ffff:a.b.c.d is IPv4 on the wire: send it to the IPv4 proxy, still v4-mapped. */
        ctx->user_ip6[3] = EG_PROXY4_IP;
        ctx->user_port = bpf_htons(EG_PROXY4_PORT);
    } else {
        ctx->user_ip6[0] = EG_PROXY6_IP0;
        ctx->user_ip6[1] = EG_PROXY6_IP1;
        ctx->user_ip6[2] = EG_PROXY6_IP2;
        ctx->user_ip6[3] = EG_PROXY6_IP3;
        ctx->user_port = bpf_htons(EG_PROXY6_PORT);
    }
    return 1;
}
