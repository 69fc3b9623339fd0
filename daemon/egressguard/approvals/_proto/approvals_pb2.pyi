from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Outcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTCOME_UNSPECIFIED: _ClassVar[Outcome]
    OUTCOME_APPROVED: _ClassVar[Outcome]
    OUTCOME_DENIED: _ClassVar[Outcome]
    OUTCOME_EXPIRED: _ClassVar[Outcome]
    OUTCOME_ABORTED: _ClassVar[Outcome]
    OUTCOME_VOTED: _ClassVar[Outcome]

class HoldEventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HOLD_EVENT_KIND_UNSPECIFIED: _ClassVar[HoldEventKind]
    HOLD_EVENT_KIND_OPENED: _ClassVar[HoldEventKind]
    HOLD_EVENT_KIND_DECIDED: _ClassVar[HoldEventKind]
    HOLD_EVENT_KIND_EXPIRED: _ClassVar[HoldEventKind]
    HOLD_EVENT_KIND_ABORTED: _ClassVar[HoldEventKind]
    HOLD_EVENT_KIND_VOTED: _ClassVar[HoldEventKind]
OUTCOME_UNSPECIFIED: Outcome
OUTCOME_APPROVED: Outcome
OUTCOME_DENIED: Outcome
OUTCOME_EXPIRED: Outcome
OUTCOME_ABORTED: Outcome
OUTCOME_VOTED: Outcome
HOLD_EVENT_KIND_UNSPECIFIED: HoldEventKind
HOLD_EVENT_KIND_OPENED: HoldEventKind
HOLD_EVENT_KIND_DECIDED: HoldEventKind
HOLD_EVENT_KIND_EXPIRED: HoldEventKind
HOLD_EVENT_KIND_ABORTED: HoldEventKind
HOLD_EVENT_KIND_VOTED: HoldEventKind

class Process(_message.Message):
    __slots__ = ("pid", "tgid", "uid", "gid", "comm", "exe", "cmdline", "user", "unit", "container", "cgroup_path")
    PID_FIELD_NUMBER: _ClassVar[int]
    TGID_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    GID_FIELD_NUMBER: _ClassVar[int]
    COMM_FIELD_NUMBER: _ClassVar[int]
    EXE_FIELD_NUMBER: _ClassVar[int]
    CMDLINE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    pid: int
    tgid: int
    uid: int
    gid: int
    comm: str
    exe: str
    cmdline: _containers.RepeatedScalarFieldContainer[str]
    user: str
    unit: str
    container: str
    cgroup_path: str
    def __init__(self, pid: _Optional[int] = ..., tgid: _Optional[int] = ..., uid: _Optional[int] = ..., gid: _Optional[int] = ..., comm: _Optional[str] = ..., exe: _Optional[str] = ..., cmdline: _Optional[_Iterable[str]] = ..., user: _Optional[str] = ..., unit: _Optional[str] = ..., container: _Optional[str] = ..., cgroup_path: _Optional[str] = ...) -> None: ...

class Destination(_message.Message):
    __slots__ = ("ip", "port", "host", "transport", "provider")
    IP_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    ip: str
    port: int
    host: str
    transport: str
    provider: str
    def __init__(self, ip: _Optional[str] = ..., port: _Optional[int] = ..., host: _Optional[str] = ..., transport: _Optional[str] = ..., provider: _Optional[str] = ...) -> None: ...

class Detection(_message.Message):
    __slots__ = ("detector", "data_class", "offset", "length", "preview", "fingerprint", "severity", "confidence")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    detector: str
    data_class: str
    offset: int
    length: int
    preview: str
    fingerprint: str
    severity: str
    confidence: str
    def __init__(self, detector: _Optional[str] = ..., data_class: _Optional[str] = ..., offset: _Optional[int] = ..., length: _Optional[int] = ..., preview: _Optional[str] = ..., fingerprint: _Optional[str] = ..., severity: _Optional[str] = ..., confidence: _Optional[str] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("action", "rule", "reason")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action: str
    rule: str
    reason: str
    def __init__(self, action: _Optional[str] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Hold(_message.Message):
    __slots__ = ("id", "flow_id", "process", "destination", "detections", "rule", "reason", "opened_at", "age_s", "expires_in_s", "on_timeout", "count", "required", "votes", "state", "waiting")
    ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_S_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    ON_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    WAITING_FIELD_NUMBER: _ClassVar[int]
    id: str
    flow_id: str
    process: Process
    destination: Destination
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    rule: str
    reason: str
    opened_at: float
    age_s: float
    expires_in_s: float
    on_timeout: str
    count: int
    required: int
    votes: _containers.RepeatedCompositeFieldContainer[Vote]
    state: str
    waiting: int
    def __init__(self, id: _Optional[str] = ..., flow_id: _Optional[str] = ..., process: _Optional[_Union[Process, _Mapping]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., rule: _Optional[str] = ..., reason: _Optional[str] = ..., opened_at: _Optional[float] = ..., age_s: _Optional[float] = ..., expires_in_s: _Optional[float] = ..., on_timeout: _Optional[str] = ..., count: _Optional[int] = ..., required: _Optional[int] = ..., votes: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., state: _Optional[str] = ..., waiting: _Optional[int] = ...) -> None: ...

class Vote(_message.Message):
    __slots__ = ("uid", "user", "channel", "principal", "reason", "scope", "at")
    UID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    uid: int
    user: str
    channel: str
    principal: str
    reason: str
    scope: str
    at: float
    def __init__(self, uid: _Optional[int] = ..., user: _Optional[str] = ..., channel: _Optional[str] = ..., principal: _Optional[str] = ..., reason: _Optional[str] = ..., scope: _Optional[str] = ..., at: _Optional[float] = ...) -> None: ...

class Decision(_message.Message):
    __slots__ = ("hold_id", "flow_id", "outcome", "approved", "by_uid", "by_user", "by_pid", "reason", "decided_at", "scope", "grant_id", "votes", "required", "grant_ttl_s", "grant_ttl_capped")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    BY_UID_FIELD_NUMBER: _ClassVar[int]
    BY_USER_FIELD_NUMBER: _ClassVar[int]
    BY_PID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    GRANT_TTL_S_FIELD_NUMBER: _ClassVar[int]
    GRANT_TTL_CAPPED_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    flow_id: str
    outcome: Outcome
    approved: bool
    by_uid: int
    by_user: str
    by_pid: int
    reason: str
    decided_at: float
    scope: str
    grant_id: str
    votes: int
    required: int
    grant_ttl_s: float
    grant_ttl_capped: bool
    def __init__(self, hold_id: _Optional[str] = ..., flow_id: _Optional[str] = ..., outcome: _Optional[_Union[Outcome, str]] = ..., approved: _Optional[bool] = ..., by_uid: _Optional[int] = ..., by_user: _Optional[str] = ..., by_pid: _Optional[int] = ..., reason: _Optional[str] = ..., decided_at: _Optional[float] = ..., scope: _Optional[str] = ..., grant_id: _Optional[str] = ..., votes: _Optional[int] = ..., required: _Optional[int] = ..., grant_ttl_s: _Optional[float] = ..., grant_ttl_capped: _Optional[bool] = ...) -> None: ...

class HoldEvent(_message.Message):
    __slots__ = ("kind", "hold", "decision", "time")
    KIND_FIELD_NUMBER: _ClassVar[int]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    kind: HoldEventKind
    hold: Hold
    decision: Decision
    time: float
    def __init__(self, kind: _Optional[_Union[HoldEventKind, str]] = ..., hold: _Optional[_Union[Hold, _Mapping]] = ..., decision: _Optional[_Union[Decision, _Mapping]] = ..., time: _Optional[float] = ...) -> None: ...

class ListPendingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListPendingResponse(_message.Message):
    __slots__ = ("holds",)
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[Hold]
    def __init__(self, holds: _Optional[_Iterable[_Union[Hold, _Mapping]]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("include_pending",)
    INCLUDE_PENDING_FIELD_NUMBER: _ClassVar[int]
    include_pending: bool
    def __init__(self, include_pending: _Optional[bool] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("hold_id", "reason", "scope", "ttl_s", "break_glass")
    HOLD_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    BREAK_GLASS_FIELD_NUMBER: _ClassVar[int]
    hold_id: str
    reason: str
    scope: str
    ttl_s: float
    break_glass: bool
    def __init__(self, hold_id: _Optional[str] = ..., reason: _Optional[str] = ..., scope: _Optional[str] = ..., ttl_s: _Optional[float] = ..., break_glass: _Optional[bool] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision",)
    DECISION_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    def __init__(self, decision: _Optional[_Union[Decision, _Mapping]] = ...) -> None: ...

class Flow(_message.Message):
    __slots__ = ("flow_id", "process", "destination", "opened_at", "state", "verdict", "detections", "bytes_up", "bytes_down")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    process: Process
    destination: Destination
    opened_at: float
    state: str
    verdict: Verdict
    detections: _containers.RepeatedCompositeFieldContainer[Detection]
    bytes_up: int
    bytes_down: int
    def __init__(self, flow_id: _Optional[str] = ..., process: _Optional[_Union[Process, _Mapping]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., opened_at: _Optional[float] = ..., state: _Optional[str] = ..., verdict: _Optional[_Union[Verdict, _Mapping]] = ..., detections: _Optional[_Iterable[_Union[Detection, _Mapping]]] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ...) -> None: ...

class GetFlowRequest(_message.Message):
    __slots__ = ("flow_id",)
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    def __init__(self, flow_id: _Optional[str] = ...) -> None: ...

class ListFlowsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFlowsResponse(_message.Message):
    __slots__ = ("flows",)
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[Flow]
    def __init__(self, flows: _Optional[_Iterable[_Union[Flow, _Mapping]]] = ...) -> None: ...

class Grant(_message.Message):
    __slots__ = ("id", "scope", "rule", "uid", "exe", "unit", "container", "destination", "request_id", "approvers", "reason", "created_at", "expires_in_s", "uses")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    EXE_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVERS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    USES_FIELD_NUMBER: _ClassVar[int]
    id: str
    scope: str
    rule: str
    uid: int
    exe: str
    unit: str
    container: str
    destination: Destination
    request_id: str
    approvers: _containers.RepeatedCompositeFieldContainer[Vote]
    reason: str
    created_at: float
    expires_in_s: float
    uses: int
    def __init__(self, id: _Optional[str] = ..., scope: _Optional[str] = ..., rule: _Optional[str] = ..., uid: _Optional[int] = ..., exe: _Optional[str] = ..., unit: _Optional[str] = ..., container: _Optional[str] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., request_id: _Optional[str] = ..., approvers: _Optional[_Iterable[_Union[Vote, _Mapping]]] = ..., reason: _Optional[str] = ..., created_at: _Optional[float] = ..., expires_in_s: _Optional[float] = ..., uses: _Optional[int] = ...) -> None: ...

class ListGrantsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListGrantsResponse(_message.Message):
    __slots__ = ("grants",)
    GRANTS_FIELD_NUMBER: _ClassVar[int]
    grants: _containers.RepeatedCompositeFieldContainer[Grant]
    def __init__(self, grants: _Optional[_Iterable[_Union[Grant, _Mapping]]] = ...) -> None: ...

class RevokeRequest(_message.Message):
    __slots__ = ("grant_id", "reason")
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    grant_id: str
    reason: str
    def __init__(self, grant_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class RevokeResponse(_message.Message):
    __slots__ = ("grant",)
    GRANT_FIELD_NUMBER: _ClassVar[int]
    grant: Grant
    def __init__(self, grant: _Optional[_Union[Grant, _Mapping]] = ...) -> None: ...

class UsageRequest(_message.Message):
    __slots__ = ("by", "since_s")
    BY_FIELD_NUMBER: _ClassVar[int]
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    by: str
    since_s: float
    def __init__(self, by: _Optional[str] = ..., since_s: _Optional[float] = ...) -> None: ...

class UsageRow(_message.Message):
    __slots__ = ("key", "flows", "bytes_up", "bytes_down", "requests", "detections", "blocked", "held")
    KEY_FIELD_NUMBER: _ClassVar[int]
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    HELD_FIELD_NUMBER: _ClassVar[int]
    key: str
    flows: int
    bytes_up: int
    bytes_down: int
    requests: int
    detections: int
    blocked: int
    held: int
    def __init__(self, key: _Optional[str] = ..., flows: _Optional[int] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., requests: _Optional[int] = ..., detections: _Optional[int] = ..., blocked: _Optional[int] = ..., held: _Optional[int] = ...) -> None: ...

class UsageResponse(_message.Message):
    __slots__ = ("by", "rows", "all_users")
    BY_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    by: str
    rows: _containers.RepeatedCompositeFieldContainer[UsageRow]
    all_users: bool
    def __init__(self, by: _Optional[str] = ..., rows: _Optional[_Iterable[_Union[UsageRow, _Mapping]]] = ..., all_users: _Optional[bool] = ...) -> None: ...

class LedgerFlowsRequest(_message.Message):
    __slots__ = ("since_s", "provider", "host", "limit")
    SINCE_S_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    since_s: float
    provider: str
    host: str
    limit: int
    def __init__(self, since_s: _Optional[float] = ..., provider: _Optional[str] = ..., host: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class LedgerDetection(_message.Message):
    __slots__ = ("detector", "data_class", "count", "fields")
    DETECTOR_FIELD_NUMBER: _ClassVar[int]
    DATA_CLASS_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    detector: str
    data_class: str
    count: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, detector: _Optional[str] = ..., data_class: _Optional[str] = ..., count: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ...) -> None: ...

class LedgerFlow(_message.Message):
    __slots__ = ("flow_id", "opened_at", "closed_at", "process", "destination", "bytes_up", "bytes_down", "action", "rule", "state", "intercepted", "requests", "models", "endpoint_kinds", "approval_id", "detections", "tls_passthrough")
    FLOW_ID_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    CLOSED_AT_FIELD_NUMBER: _ClassVar[int]
    PROCESS_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    BYTES_UP_FIELD_NUMBER: _ClassVar[int]
    BYTES_DOWN_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    INTERCEPTED_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    ENDPOINT_KINDS_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    DETECTIONS_FIELD_NUMBER: _ClassVar[int]
    TLS_PASSTHROUGH_FIELD_NUMBER: _ClassVar[int]
    flow_id: str
    opened_at: float
    closed_at: float
    process: Process
    destination: Destination
    bytes_up: int
    bytes_down: int
    action: str
    rule: str
    state: str
    intercepted: bool
    requests: int
    models: _containers.RepeatedScalarFieldContainer[str]
    endpoint_kinds: _containers.RepeatedScalarFieldContainer[str]
    approval_id: str
    detections: _containers.RepeatedCompositeFieldContainer[LedgerDetection]
    tls_passthrough: str
    def __init__(self, flow_id: _Optional[str] = ..., opened_at: _Optional[float] = ..., closed_at: _Optional[float] = ..., process: _Optional[_Union[Process, _Mapping]] = ..., destination: _Optional[_Union[Destination, _Mapping]] = ..., bytes_up: _Optional[int] = ..., bytes_down: _Optional[int] = ..., action: _Optional[str] = ..., rule: _Optional[str] = ..., state: _Optional[str] = ..., intercepted: _Optional[bool] = ..., requests: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ..., endpoint_kinds: _Optional[_Iterable[str]] = ..., approval_id: _Optional[str] = ..., detections: _Optional[_Iterable[_Union[LedgerDetection, _Mapping]]] = ..., tls_passthrough: _Optional[str] = ...) -> None: ...

class LedgerFlowsResponse(_message.Message):
    __slots__ = ("flows", "all_users")
    FLOWS_FIELD_NUMBER: _ClassVar[int]
    ALL_USERS_FIELD_NUMBER: _ClassVar[int]
    flows: _containers.RepeatedCompositeFieldContainer[LedgerFlow]
    all_users: bool
    def __init__(self, flows: _Optional[_Iterable[_Union[LedgerFlow, _Mapping]]] = ..., all_users: _Optional[bool] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProbeStatus(_message.Message):
    __slots__ = ("program", "hook", "attached", "via")
    PROGRAM_FIELD_NUMBER: _ClassVar[int]
    HOOK_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_FIELD_NUMBER: _ClassVar[int]
    VIA_FIELD_NUMBER: _ClassVar[int]
    program: str
    hook: str
    attached: bool
    via: str
    def __init__(self, program: _Optional[str] = ..., hook: _Optional[str] = ..., attached: _Optional[bool] = ..., via: _Optional[str] = ...) -> None: ...

class SinkStatus(_message.Message):
    __slots__ = ("name", "kind", "format", "acked_seq", "lag_events", "last_error")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAG_EVENTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: str
    format: str
    acked_seq: int
    lag_events: int
    last_error: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[str] = ..., format: _Optional[str] = ..., acked_seq: _Optional[int] = ..., lag_events: _Optional[int] = ..., last_error: _Optional[str] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("version", "pid", "started_at", "uptime_s", "config", "scope_cgroup", "cgroup_path", "failure_mode", "probes", "policy_hash", "policy_loaded_at", "rules", "detectors", "counters", "open_flows", "pending_holds", "held_bytes", "sinks", "metrics_listen", "intercept_failures")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SCOPE_CGROUP_FIELD_NUMBER: _ClassVar[int]
    CGROUP_PATH_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MODE_FIELD_NUMBER: _ClassVar[int]
    PROBES_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    POLICY_LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    DETECTORS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    OPEN_FLOWS_FIELD_NUMBER: _ClassVar[int]
    PENDING_HOLDS_FIELD_NUMBER: _ClassVar[int]
    HELD_BYTES_FIELD_NUMBER: _ClassVar[int]
    SINKS_FIELD_NUMBER: _ClassVar[int]
    METRICS_LISTEN_FIELD_NUMBER: _ClassVar[int]
    INTERCEPT_FAILURES_FIELD_NUMBER: _ClassVar[int]
    version: str
    pid: int
    started_at: float
    uptime_s: float
    config: str
    scope_cgroup: str
    cgroup_path: str
    failure_mode: str
    probes: _containers.RepeatedCompositeFieldContainer[ProbeStatus]
    policy_hash: str
    policy_loaded_at: float
    rules: int
    detectors: int
    counters: _containers.ScalarMap[str, float]
    open_flows: int
    pending_holds: int
    held_bytes: int
    sinks: _containers.RepeatedCompositeFieldContainer[SinkStatus]
    metrics_listen: str
    intercept_failures: _containers.RepeatedCompositeFieldContainer[InterceptFailure]
    def __init__(self, version: _Optional[str] = ..., pid: _Optional[int] = ..., started_at: _Optional[float] = ..., uptime_s: _Optional[float] = ..., config: _Optional[str] = ..., scope_cgroup: _Optional[str] = ..., cgroup_path: _Optional[str] = ..., failure_mode: _Optional[str] = ..., probes: _Optional[_Iterable[_Union[ProbeStatus, _Mapping]]] = ..., policy_hash: _Optional[str] = ..., policy_loaded_at: _Optional[float] = ..., rules: _Optional[int] = ..., detectors: _Optional[int] = ..., counters: _Optional[_Mapping[str, float]] = ..., open_flows: _Optional[int] = ..., pending_holds: _Optional[int] = ..., held_bytes: _Optional[int] = ..., sinks: _Optional[_Iterable[_Union[SinkStatus, _Mapping]]] = ..., metrics_listen: _Optional[str] = ..., intercept_failures: _Optional[_Iterable[_Union[InterceptFailure, _Mapping]]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("outcome", "policy_hash", "previous_hash", "errors")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    POLICY_HASH_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_HASH_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    outcome: str
    policy_hash: str
    previous_hash: str
    errors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, outcome: _Optional[str] = ..., policy_hash: _Optional[str] = ..., previous_hash: _Optional[str] = ..., errors: _Optional[_Iterable[str]] = ...) -> None: ...

class InterceptFailure(_message.Message):
    __slots__ = ("uid", "exe", "cgroup", "unit", "container", "host", "failed_at", "expires_in_s")
    UID_FIELD_NUMBER: _ClassVar[int]
    EXE_FIELD_NUMBER: _ClassVar[int]
    CGROUP_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    FAILED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_S_FIELD_NUMBER: _ClassVar[int]
    uid: int
    exe: str
    cgroup: str
    unit: str
    container: str
    host: str
    failed_at: float
    expires_in_s: float
    def __init__(self, uid: _Optional[int] = ..., exe: _Optional[str] = ..., cgroup: _Optional[str] = ..., unit: _Optional[str] = ..., container: _Optional[str] = ..., host: _Optional[str] = ..., failed_at: _Optional[float] = ..., expires_in_s: _Optional[float] = ...) -> None: ...
