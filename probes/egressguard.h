/* egressguard: what the probes share with each other and with user space.
 *
 * Records (struct eg_tuple, struct eg_record) are mirrored field for field by
 * daemon/egressguard/kernel/records.py; change both together (a kernel test compares the
 * layouts). Only stable UAPI context structs are used (bpf_sock_addr, bpf_sock_ops), never
 * internal kernel structs, so the probes compile against any recent kernel's headers.
 *
 * Configuration arrives as -D cflags (scalars: redirect targets, exempt mark, UDP mode) and
 * as maps filled by user space before attach (bypass list, DNS ports). No strings in C.
 */
#ifndef EGRESSGUARD_H
#define EGRESSGUARD_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/in.h>

/* From linux/socket.h and linux/net.h, which are not UAPI. */
#define EG_AF_INET6 10
#define EG_SOCK_STREAM 1
#define EG_SOCK_DGRAM 2

/* Which hook produced a record (struct eg_record.hook). */
#define EG_HOOK_CONNECT4 1
#define EG_HOOK_CONNECT6 2
#define EG_HOOK_SENDMSG4 3
#define EG_HOOK_SENDMSG6 4

/* EG_UDP_MODE values. */
#define EG_UDP_ALLOW 0
#define EG_UDP_DNS_ONLY 1
#define EG_UDP_BLOCK 2

/* An address and port. IPv4 is stored v4-mapped (::ffff:a.b.c.d) so one key type serves both
 * families, and a v4-mapped IPv6 socket matches what an IPv4 listener sees as its peer. */
struct eg_tuple {
    __u32 addr[4]; /* network byte order */
    __u32 port;    /* host byte order; 0 in a bypass key means "any port" */
};

/* Who connected (or tried to send UDP) where. pid is the thread id, tgid the process id. */
struct eg_record {
    struct eg_tuple dst; /* original destination, before the redirect */
    __u32 pid;
    __u32 tgid;
    __u32 uid;
    __u32 gid;
    __u32 hook; /* EG_HOOK_* */
    __u64 cgroup_id;
    __u64 cookie; /* bpf_get_socket_cookie == getsockopt(SO_COOKIE) */
    char comm[16];
};

/* ---- below: shared by the probes only ---- */

/* A 4-byte context read the compiler may neither merge nor move (see sockops.c). */
#define EG_CTX32(field) (*(volatile __u32 *)&(field))

/* BCC 0.26 declares bpf_get_socket_cookie as returning u32; the cookie is 64 bits. */
static __u64 (*eg_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

/* TCP connect records by socket cookie, until sockops learns the client's local tuple.
 * LRU: a connect that never completes must not leak an entry. */
BPF_TABLE("lru_hash", __u64, struct eg_record, eg_pending, 16384);
/* Connect records by client tuple, popped by the proxy on accept (lookup_origin). */
BPF_TABLE("lru_hash", struct eg_tuple, struct eg_record, eg_origins, 65536);
/* Never redirected / always allowed: proxy addresses and the configured loopback bypass. */
BPF_HASH(eg_bypass, struct eg_tuple, __u8, 64);
/* UDP destination ports allowed in dns-only mode. */
BPF_HASH(eg_dns_ports, __u32, __u8, 16);
/* UDP refusals for the audit log; failed outputs are counted in eg_lost. */
BPF_RINGBUF_OUTPUT(eg_events, 16);
BPF_PERCPU_ARRAY(eg_lost, __u64, 1);

static __always_inline void eg_tuple_v4(struct eg_tuple *t, __u32 ip4, __u32 port_be)
{
    t->addr[0] = 0;
    t->addr[1] = 0;
    t->addr[2] = bpf_htonl(0xffff);
    t->addr[3] = ip4;
    t->port = bpf_ntohs((__u16)port_be);
}

static __always_inline void eg_tuple_v6(struct eg_tuple *t, struct bpf_sock_addr *ctx)
{
    t->addr[0] = ctx->user_ip6[0];
    t->addr[1] = ctx->user_ip6[1];
    t->addr[2] = ctx->user_ip6[2];
    t->addr[3] = ctx->user_ip6[3];
    t->port = bpf_ntohs((__u16)ctx->user_port);
}

static __always_inline int eg_is_v4_mapped(const struct eg_tuple *t)
{
    return t->addr[0] == 0 && t->addr[1] == 0 && t->addr[2] == bpf_htonl(0xffff);
}

/* The daemon's own sockets carry SO_MARK == EG_EXEMPT_MARK and are never touched. */
static __always_inline int eg_exempt(struct bpf_sock_addr *ctx)
{
    struct bpf_sock *sk = ctx->sk;
    return sk && sk->mark == EG_EXEMPT_MARK;
}

static __always_inline int eg_bypassed(struct eg_tuple *dst)
{
    struct eg_tuple any = *dst;
    any.port = 0;
    return eg_bypass.lookup(dst) || eg_bypass.lookup(&any);
}

static __always_inline int eg_is_udp(struct bpf_sock_addr *ctx)
{
    return ctx->type == EG_SOCK_DGRAM &&
           (ctx->protocol == IPPROTO_UDP || ctx->protocol == IPPROTO_UDPLITE);
}

static __always_inline void eg_fill(struct eg_record *r, struct bpf_sock_addr *ctx,
                                    struct eg_tuple *dst, __u32 hook)
{
    __u64 pid_tgid = bpf_get_current_pid_tgid();
    __u64 uid_gid = bpf_get_current_uid_gid();

    r->dst = *dst;
    r->pid = (__u32)pid_tgid;
    r->tgid = pid_tgid >> 32;
    r->uid = (__u32)uid_gid;
    r->gid = uid_gid >> 32;
    r->hook = hook;
    r->cgroup_id = bpf_get_current_cgroup_id();
    r->cookie = eg_socket_cookie(ctx);
    bpf_get_current_comm(r->comm, sizeof(r->comm));
}

/* UDP policy, shared by UDP connect (connect.c) and sendto/sendmsg (udp.c).
 * Returns the hook's verdict: 1 lets the call proceed, 0 makes it fail with EPERM. */
static __always_inline int eg_udp_verdict(struct bpf_sock_addr *ctx, struct eg_tuple *dst,
                                          __u32 hook)
{
    __u32 port = dst->port;

    if (EG_UDP_MODE == EG_UDP_ALLOW || eg_exempt(ctx) || eg_bypassed(dst))
        return 1;
    if (EG_UDP_MODE == EG_UDP_DNS_ONLY && eg_dns_ports.lookup(&port))
        return 1;

    struct eg_record r = {};
    eg_fill(&r, ctx, dst, hook);
    if (eg_events.ringbuf_output(&r, sizeof(r), 0) != 0) {
        int zero = 0;
        __u64 *lost = eg_lost.lookup(&zero);
        if (lost)
            (*lost)++;
    }
    return 0;
}

/* TCP: remember who connected where (by socket cookie) unless the socket is exempt or the
 * destination bypassed. Returns 1 when the caller must rewrite the destination to the proxy. */
static __always_inline int eg_track_tcp(struct bpf_sock_addr *ctx, struct eg_tuple *dst,
                                        __u32 hook)
{
    if (ctx->type != EG_SOCK_STREAM || ctx->protocol != IPPROTO_TCP)
        return 0;
    if (eg_exempt(ctx) || eg_bypassed(dst))
        return 0;

    struct eg_record r = {};
    eg_fill(&r, ctx, dst, hook);
    eg_pending.update(&r.cookie, &r);
    return 1;
}

#endif /* EGRESSGUARD_H */
