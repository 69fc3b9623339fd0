"""Wiring and signals only: build the parts, start them in a safe order, stop them in reverse.

Start order matters for safety: the audit log first (so nothing is decided unrecorded), then the
approval service, then the proxy's listeners, and only then the probes, so that the first
redirected connection already finds a proxy to land on. `egressguard ready` is printed last.
On stop the probes go first (no new flows), then held flows are aborted (their clients reset,
their destinations get nothing), then the listeners, then the audit log is flushed and closed.
With `failure_mode: closed` "the probes go" means they are released, not detached: their pinned
links keep redirecting the guarded cgroup to the (now closed) proxy port, so guarded processes
are refused, not unguarded, until the next start adopts them (`egressguard detach` removes
them for good). With `open` they are detached.

Running as a service (see runtime.py, reload.py, metrics.py, sdnotify.py): SIGHUP reloads the
policy; a ticker on the event loop refreshes the metrics gauges and systemd's STATUS= line and
sends the watchdog ping, so a stuck loop is noticed.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import signal
from dataclasses import dataclass, replace
from typing import Any

from egressguard import __version__
from egressguard.config import Config, load_config
from egressguard.errors import ConfigError, ConfigIssue, EnvironmentProblem
from egressguard.events import EventBus, audit_record
from egressguard.logview import as_key_values, log_fields
from egressguard.model import Destination, host_port
from egressguard.policy.evaluate import Policy
from egressguard.proxy import GuardProxy, Origin, ProxyLimits
from egressguard.scan.engine import ScanEngine
from egressguard.scan.mask import mask_span
from egressguard.scan.pack import all_detectors, enabled_detectors, pack_warnings
from egressguard.scan.redact import redact_args
from egressguard.startfail import probes_on_cgroup, probes_outcome, start_failure_reason

log = logging.getLogger("egressguard.daemon")

AUDIT_START_TIMEOUT = 10.0     # seconds for the first audit events to reach the disk
TICK_S = 1.0                   # metrics gauges / STATUS= refresh (the watchdog may tick faster)
SINK_DRAIN_TIMEOUT = 3.0       # seconds healthy sinks get to ship the last events at stop


@dataclass(frozen=True)
class Loaded:
    """A validated configuration with everything compiled from it."""

    config: Config
    policy: Policy
    engine: ScanEngine


def parse_config(path: str) -> Config:
    """Parse and validate the policy and its detector packs. Raises ConfigError listing every
    problem (policy and detectors together), so `check` and `run` report the same things."""
    return load_config(path, known_detectors=lambda dcfg: [d.id for d in all_detectors(dcfg)])


def compile_config(config: Config, fingerprint_key: bytes) -> Loaded:
    """Compile the detectors into one Hyperscan database and the rules into a Policy."""
    detectors = enabled_detectors(config.detectors)
    try:
        engine = ScanEngine(detectors, fingerprint_key,
                            phone_region=config.detectors.phone_region)
    except Exception as exc:  # noqa: BLE001 - see _engine_issues
        raise ConfigError(_engine_issues(config, detectors, exc)) from None
    return Loaded(config, Policy.from_config(config), engine)


def _engine_issues(config: Config, detectors: list[Any], exc: Exception) -> list[ConfigIssue]:
    """A detector that passed pack validation but that the scanner still cannot compile (found:
    a custom pattern with a leading global flag such as `(?i)`, which Python refuses once the
    engine wraps the pattern) must be reported like any other policy problem, naming the
    detector and, for custom detectors, the file and line, instead of a traceback. Each
    detector is compiled alone to find the culprit(s)."""
    custom = {c.id: c for c in config.detectors.custom}
    issues = []
    for spec in detectors:
        try:
            ScanEngine([spec], bytes(32))
        except Exception as one:  # noqa: BLE001
            msg = f"detector {spec.id!r}: the scanner cannot compile its pattern: {one}"
            if "global flags" in str(one):
                msg += "; use a scoped group such as (?i:...) instead"
            item = custom.get(spec.id)
            if item is not None:
                issues.append(ConfigIssue(config.detectors.source, item.line_of("pattern"),
                                          f"{item.field}.pattern", msg))
            else:
                issues.append(ConfigIssue(config.detectors.source, None, "detectors", msg))
    return issues or [ConfigIssue(config.detectors.source, None, "detectors",
                                  f"the detectors cannot be compiled together: {exc}")]


def load_everything(path: str) -> Loaded:
    """Everything `egressguard check` validates (with a throw-away fingerprint key)."""
    return compile_config(parse_config(path), bytes(32))


async def run_daemon(path: str, sink_provider: Any = None) -> int:
    """`egressguard run`: returns the exit code."""
    from egressguard.approvals.service import start_approval_server
    from egressguard.approvals.wiring import build_registry, start_channels
    from egressguard.audit.keys import load_or_create_key
    from egressguard.audit.sinks.runner import start_sinks
    from egressguard.audit.writer import AuditLog
    from egressguard.kernel.cgroup import cgroup2_mount
    from egressguard.kernel.identity import process_identity
    from egressguard.kernel.preflight import check_environment
    from egressguard.approvals.ops import Operations
    from egressguard.metrics import GuardMetrics, MetricsServer
    from egressguard.reload import Reloader, policy_hash
    from egressguard.runtime import DaemonState
    from egressguard.sdnotify import Notifier

    # Python's default for SIGHUP is to exit: until the loop's reload handler is installed, a
    # reload request (the file is being read right now anyway) must not kill a starting daemon.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    config = parse_config(path)              # validate before touching anything
    check_environment(config.scope.cgroup)
    _raise_fd_limit()
    try:
        key = load_or_create_key(config.state_dir)
    except OSError as exc:
        raise EnvironmentProblem(_path_problem("state directory", "state_dir",
                                               config.state_dir, exc)) from None
    loaded = compile_config(config, key)
    for skipped in pack_warnings(config.detectors):      # gitleaks rules not imported
        log.warning("detector rule not imported file=%s line=%s rule=%s reason=%r",
                    skipped.file, skipped.line, skipped.field, skipped.message)
    first_hash = policy_hash(path, config.detectors.packs)
    mount = cgroup2_mount()
    notifier = Notifier()
    metrics = GuardMetrics()
    metrics.set_policy(first_hash, config.failure_mode)

    from egressguard.inspection import build_inspection
    inspection = build_inspection(config)      # host CA, endpoint catalog, ledger

    audit = AuditLog(config.audit.path, rotate_bytes=config.audit.rotate_size or None)
    try:
        await audit.start()
    except OSError as exc:
        # AuditLog names lock and open failures itself; creating the parent directory (e.g.
        # under a regular file) fails with a bare OSError, which must not become a traceback.
        raise EnvironmentProblem(_path_problem("audit log", "audit.path", config.audit.path,
                                               exc)) from None
    # SIEM sinks read the written log on their own thread: they never slow enforcement.
    sinks = start_sinks(config)
    bus = EventBus()
    bus.subscribe(lambda event, flow, fields: audit.append(audit_record(event, flow, fields))
                  if _audited(event, fields) else None)
    bus.subscribe(_log_event)
    bus.subscribe(metrics.on_event)
    bus.subscribe(inspection.listener())

    proxy: GuardProxy | None = None

    def on_hold_event(kind: str, fields: dict[str, Any]) -> None:
        flow = proxy.flows.get(fields.get("flow_id") or "") if proxy else None
        rest = {k: v for k, v in fields.items() if k not in ("flow_id", "process", "destination")}
        bus.emit(kind, flow, rest) if flow else bus.emit(kind, None, dict(fields))

    # approvals.db under state_dir; reasons are scanned like a command line before they are kept
    registry = build_registry(config, on_hold_event,
                              redact=lambda text: redact_args(state.loaded.engine, [text])[0])

    from egressguard.kernel.probes import GuardProbes
    probes = GuardProbes(
        cgroup_path=mount + config.scope.cgroup,
        proxy4=config.proxy.listen, proxy6=config.proxy.listen6,
        bypass=list(config.proxy.bypass), udp_mode=config.proxy.udp,
        exempt_mark=config.proxy.mark, dns_ports=tuple(config.proxy.dns_ports),
        on_event=lambda ev: bus.emit("udp.refused", None, _udp_fields(ev)),
        failure_mode=config.failure_mode)

    def lookup_origin(ip: str, port: int) -> Origin | None:
        rec = probes.lookup_origin(ip, port)
        if rec is None:
            return None
        process = process_identity(rec, mount)
        # The command line, the executable's path and the cgroup (a delegated subtree or a
        # user unit is named by the process) are recorded everywhere (audit, egressctl):
        # mask what they carry.
        engine = state.loaded.engine
        exe, unit, cgroup_path = redact_args(
            engine, [process.exe, process.systemd_unit, process.cgroup_path])
        process = replace(process, cmdline=redact_args(engine, process.cmdline), exe=exe,
                          systemd_unit=unit, cgroup_path=cgroup_path)
        return Origin(Destination(rec.dst_ip, rec.dst_port), process)

    proxy = GuardProxy(
        listen4=config.proxy.listen, listen6=config.proxy.listen6,
        lookup_origin=lookup_origin, engine_provider=lambda: state.loaded.engine,
        policy_provider=lambda: state.loaded.policy, masker=mask_span, holds=registry, bus=bus,
        mark=config.proxy.mark,
        limits=ProxyLimits(max_held_bytes=config.proxy.max_held_bytes,
                           max_held_total=config.proxy.max_held_total,
                           sniff_timeout=config.proxy.sniff_timeout),
        **inspection.proxy_kwargs())
    # The configuration in force lives in `state.loaded`; a reload replaces it there.
    state = DaemonState(config_path=path, loaded=loaded, policy_hash=first_hash, proxy=proxy,
                        registry=registry, probes=probes, metrics=metrics,
                        cgroup_path=mount + config.scope.cgroup,
                        sink_provider=sink_provider or (sinks.status if sinks else None))
    metrics.policy_loaded_at(state.loaded_at)      # what status shows as the load time
    reloader = Reloader(state, key, bus, compile_config, parse_config, notifier)
    operations = Operations(
        status=state.status, reload=reloader.reload,
        may_reload=lambda uid: uid == 0 or uid in state.loaded.config.approvals.approver_uids)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    reloads: set[asyncio.Task[Any]] = set()

    def on_sighup() -> None:
        task = loop.create_task(reloader.reload("SIGHUP"))
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    loop.add_signal_handler(signal.SIGHUP, on_sighup)

    server = None
    channels = None
    attached = False
    poller: asyncio.Task[None] | None = None
    ticker: asyncio.Task[None] | None = None
    metrics_server: MetricsServer | None = None
    started = False             # "ready" was reached: the run ends in daemon.stop
    failure: BaseException | None = None
    try:
        if config.metrics.listen:
            metrics_server = MetricsServer(metrics, config.metrics.listen)
            try:
                metrics_server.start()
            except OSError as exc:
                metrics_server = None
                raise EnvironmentProblem(f"cannot serve metrics on "
                                         f"{host_port(*config.metrics.listen)} "
                                         f"(metrics.listen): {exc.strerror or exc}") from None
        registry.start()             # resume stored requests and grants (audited)
        channels = await start_channels(config, registry, proxy.all_flows, on_hold_event,
                                        ledger_path=inspection.ledger.path)
        try:
            server = await start_approval_server(config.approvals.socket, registry,
                                                 proxy.all_flows, mark=config.proxy.mark,
                                                 ledger_path=inspection.ledger.path,
                                                 ops=operations)
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot serve approvals on {config.approvals.socket}: {exc.strerror or exc}")
        try:
            await proxy.start()
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot listen on {config.proxy.listen[0]}:{config.proxy.listen[1]} "
                f"(proxy.listen): {exc.strerror or exc}; is another egressguard running, or "
                "pick another port")
        await asyncio.to_thread(probes.attach)
        attached = True
        poller = asyncio.create_task(_poll_probes(probes))
        bus.emit("daemon.start", None, {
            "version": __version__, "config": os.path.abspath(path),
            "cgroup": config.scope.cgroup, "pid": os.getpid(),
            "detectors": len(loaded.engine.detector_ids), "rules": len(config.rules),
            "policy_hash": first_hash, "failure_mode": config.failure_mode,
            "adopted_programs": list(probes.adopted)})
        try:
            # Nothing is enforced before the start event is on disk: a log that cannot be
            # written is a start-up failure, not a silent gap.
            await asyncio.wait_for(audit.flush(), AUDIT_START_TIMEOUT)
        except asyncio.TimeoutError:
            raise EnvironmentProblem(
                f"cannot write the audit log {config.audit.path} (audit.path): the first "
                f"events were not on disk after {AUDIT_START_TIMEOUT:g}s") from None
        ticker = asyncio.create_task(_tick(state, notifier))
        started = True
        print("egressguard ready", flush=True)
        notifier.ready(state.status_line())
        log.info("ready cgroup=%s proxy=%s:%d approvals=%s failure_mode=%s adopted=%d",
                 config.scope.cgroup, config.proxy.listen[0], config.proxy.listen[1],
                 config.approvals.socket, config.failure_mode, len(probes.adopted))
        await stop.wait()
        log.info("stopping")
    except BaseException as exc:
        failure = exc
        raise
    finally:
        notifier.stopping()
        if attached:
            probes.release()   # closed: stays attached (refusing); open: detached
        left = probes_on_cgroup(state.cgroup_path)
        if left and config.failure_mode == "closed":
            log.warning("probes stay attached to %s (failure_mode: closed): guarded "
                        "connections are refused until egressguard runs again; "
                        "'egressguard detach --config %s' removes them", config.scope.cgroup,
                        path)
        for task in (poller, ticker, *reloads):
            if task is not None:
                task.cancel()
        if metrics_server is not None:
            metrics_server.stop()
        registry.close("egressguard is stopping")
        await proxy.stop()
        if server is not None:
            await server.stop()
        if channels is not None:
            await channels.stop()
        outcome = {"pid": os.getpid(),
                   "probes": probes_outcome(attached, config.failure_mode),
                   "programs_attached": left}
        if started:
            bus.emit("daemon.stop", None, outcome)
        else:       # a start that failed: no daemon.start came before this, or it was not
            bus.emit("daemon.start_failed", None,  # written (the audit flush failed)
                     {**outcome, "reason": start_failure_reason(failure)})
        inspection.close()
        try:
            await asyncio.wait_for(audit.close(), AUDIT_START_TIMEOUT * 3)
        except asyncio.TimeoutError:
            log.error("audit log %s: %d event(s) could not be written before exit",
                      config.audit.path, audit.pending)
        if sinks is not None:
            sinks.stop(drain_s=SINK_DRAIN_TIMEOUT)
        notifier.close()
    return 0


async def _tick(state: Any, notifier: Any) -> None:
    """On the event loop: refresh gauges and STATUS=, ping the watchdog. Runs only while the
    loop runs, which is what makes the watchdog meaningful."""
    period = min(TICK_S, notifier.watchdog_interval or TICK_S)
    last_status, last_refresh = "", 0.0
    loop = asyncio.get_running_loop()
    while True:
        if notifier.watchdog_interval:
            notifier.watchdog()
        now = loop.time()
        if now - last_refresh >= TICK_S - 1e-3:
            last_refresh = now
            try:
                state.metrics.refresh(state)
                line = state.status_line()
                if line != last_status:
                    notifier.status(line)
                    last_status = line
            except Exception:  # noqa: BLE001 - visibility must never stop enforcement
                log.exception("status refresh failed")
        await asyncio.sleep(period)


def _path_problem(what: str, key: str, path: str, exc: OSError) -> str:
    """One line for a path egressguard cannot create or open, naming the setting."""
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):
        reason = f"{exc.filename or 'a parent'} is not a directory"
    else:
        where = f" ({exc.filename})" if exc.filename and exc.filename != path else ""
        reason = f"{exc.strerror or exc}{where}"
    return f"cannot create or open the {what} {path} ({key}): {reason}; fix the path"


def _raise_fd_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit.

    Every flow costs two descriptors (client + upstream) and systemd gives a unit a soft limit
    of 1024 unless LimitNOFILE says otherwise, so ~500 concurrent agent connections would hit
    EMFILE: accept() stalls, upstream sockets fail, flows get reset. The hard limit is the
    operator's to set; the soft one is ours to use up to it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, want, exc)
            return
        soft = want
    if soft < 4 * 1024:
        log.warning("open-file limit is %d: about %d concurrent flows fit; raise LimitNOFILE",
                    soft, soft // 2)


async def _poll_probes(probes: Any) -> None:
    """Drain the probes' event buffer (UDP refusals) a few times a second."""
    while True:
        try:
            probes.poll_events(0)
        except Exception:  # noqa: BLE001
            log.exception("probe event poll failed")
        await asyncio.sleep(0.2)


def _udp_fields(ev: Any) -> dict[str, Any]:
    fields = dict(vars(ev)) if hasattr(ev, "__dict__") else {"event": str(ev)}
    return {"udp": {k: (v.decode(errors="replace") if isinstance(v, bytes) else v)
                    for k, v in fields.items()}}


def _audited(event: str, fields: dict[str, Any]) -> bool:
    """Labels of an intercepted request without findings go to the ledger only: one audit
    event (and fsync) per clean API call would make the log mostly noise."""
    return event != "http.request" or bool(fields.get("fields"))


def _log_event(event: str, flow: Any, fields: dict[str, Any]) -> None:
    if event in ("flow.open", "flow.close", "http.request", "tls.intercept") \
            and not log.isEnabledFor(logging.DEBUG):
        return
    view = log_fields(event, flow, fields)
    log.info("%s", as_key_values(view), extra={"fields": view})
