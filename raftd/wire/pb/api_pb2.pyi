from raftd.wire.pb import kv_pb2 as _kv_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Consistency(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEARIZABLE: _ClassVar[Consistency]
    STALE: _ClassVar[Consistency]
LINEARIZABLE: Consistency
STALE: Consistency

class Request(_message.Message):
    __slots__ = ("id", "namespace", "timeout_ms", "consistency", "client_id", "seq", "min_revision", "auth", "get", "put", "delete", "range", "delete_range", "cas", "txn", "barrier", "status", "members", "add_voter", "add_learner", "promote", "remove", "transfer_leader", "watch", "watch_cancel", "snapshot", "lease_grant", "lease_revoke", "lease_keepalive", "lease_ttl", "lease_list")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CLIENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    MIN_REVISION_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ADD_VOTER_FIELD_NUMBER: _ClassVar[int]
    ADD_LEARNER_FIELD_NUMBER: _ClassVar[int]
    PROMOTE_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_LEADER_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    WATCH_CANCEL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    LEASE_LIST_FIELD_NUMBER: _ClassVar[int]
    id: int
    namespace: str
    timeout_ms: int
    consistency: Consistency
    client_id: bytes
    seq: int
    min_revision: int
    auth: AuthRequest
    get: GetRequest
    put: _kv_pb2.PutRequest
    delete: _kv_pb2.DeleteRequest
    range: _kv_pb2.RangeRequest
    delete_range: _kv_pb2.DeleteRangeRequest
    cas: _kv_pb2.CompareAndSwapRequest
    txn: _kv_pb2.TxnRequest
    barrier: BarrierRequest
    status: StatusRequest
    members: MembersRequest
    add_voter: MemberRequest
    add_learner: MemberRequest
    promote: MemberRequest
    remove: MemberRequest
    transfer_leader: TransferLeaderRequest
    watch: WatchRequest
    watch_cancel: WatchCancelRequest
    snapshot: SnapshotRequest
    lease_grant: _kv_pb2.LeaseGrantRequest
    lease_revoke: _kv_pb2.LeaseRevokeRequest
    lease_keepalive: LeaseKeepAliveRequest
    lease_ttl: LeaseTimeToLiveRequest
    lease_list: LeaseListRequest
    def __init__(self, id: _Optional[int] = ..., namespace: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., consistency: _Optional[_Union[Consistency, str]] = ..., client_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., min_revision: _Optional[int] = ..., auth: _Optional[_Union[AuthRequest, _Mapping]] = ..., get: _Optional[_Union[GetRequest, _Mapping]] = ..., put: _Optional[_Union[_kv_pb2.PutRequest, _Mapping]] = ..., delete: _Optional[_Union[_kv_pb2.DeleteRequest, _Mapping]] = ..., range: _Optional[_Union[_kv_pb2.RangeRequest, _Mapping]] = ..., delete_range: _Optional[_Union[_kv_pb2.DeleteRangeRequest, _Mapping]] = ..., cas: _Optional[_Union[_kv_pb2.CompareAndSwapRequest, _Mapping]] = ..., txn: _Optional[_Union[_kv_pb2.TxnRequest, _Mapping]] = ..., barrier: _Optional[_Union[BarrierRequest, _Mapping]] = ..., status: _Optional[_Union[StatusRequest, _Mapping]] = ..., members: _Optional[_Union[MembersRequest, _Mapping]] = ..., add_voter: _Optional[_Union[MemberRequest, _Mapping]] = ..., add_learner: _Optional[_Union[MemberRequest, _Mapping]] = ..., promote: _Optional[_Union[MemberRequest, _Mapping]] = ..., remove: _Optional[_Union[MemberRequest, _Mapping]] = ..., transfer_leader: _Optional[_Union[TransferLeaderRequest, _Mapping]] = ..., watch: _Optional[_Union[WatchRequest, _Mapping]] = ..., watch_cancel: _Optional[_Union[WatchCancelRequest, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotRequest, _Mapping]] = ..., lease_grant: _Optional[_Union[_kv_pb2.LeaseGrantRequest, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kv_pb2.LeaseRevokeRequest, _Mapping]] = ..., lease_keepalive: _Optional[_Union[LeaseKeepAliveRequest, _Mapping]] = ..., lease_ttl: _Optional[_Union[LeaseTimeToLiveRequest, _Mapping]] = ..., lease_list: _Optional[_Union[LeaseListRequest, _Mapping]] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "message", "indeterminate", "leader", "compact_revision")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        OK: _ClassVar[Error.Code]
        INVALID_ARGUMENT: _ClassVar[Error.Code]
        NOT_FOUND: _ClassVar[Error.Code]
        FAILED_PRECONDITION: _ClassVar[Error.Code]
        UNAVAILABLE: _ClassVar[Error.Code]
        DEADLINE_EXCEEDED: _ClassVar[Error.Code]
        UNKNOWN_NAMESPACE: _ClassVar[Error.Code]
        TOO_LARGE: _ClassVar[Error.Code]
        INTERNAL: _ClassVar[Error.Code]
        UNAUTHENTICATED: _ClassVar[Error.Code]
        NOT_LEADER: _ClassVar[Error.Code]
    OK: Error.Code
    INVALID_ARGUMENT: Error.Code
    NOT_FOUND: Error.Code
    FAILED_PRECONDITION: Error.Code
    UNAVAILABLE: Error.Code
    DEADLINE_EXCEEDED: Error.Code
    UNKNOWN_NAMESPACE: Error.Code
    TOO_LARGE: Error.Code
    INTERNAL: Error.Code
    UNAUTHENTICATED: Error.Code
    NOT_LEADER: Error.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INDETERMINATE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    COMPACT_REVISION_FIELD_NUMBER: _ClassVar[int]
    code: Error.Code
    message: str
    indeterminate: bool
    leader: str
    compact_revision: int
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ..., indeterminate: bool = ..., leader: _Optional[str] = ..., compact_revision: _Optional[int] = ...) -> None: ...

class Response(_message.Message):
    __slots__ = ("id", "error", "revision", "raft_index", "auth", "get", "put", "delete", "range", "delete_range", "cas", "txn", "barrier", "status", "members", "transfer_leader", "watch", "watch_cancel", "snapshot", "lease_grant", "lease_revoke", "lease_keepalive", "lease_ttl", "lease_list", "command_result")
    ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    RAFT_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    GET_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    DELETE_FIELD_NUMBER: _ClassVar[int]
    RANGE_FIELD_NUMBER: _ClassVar[int]
    DELETE_RANGE_FIELD_NUMBER: _ClassVar[int]
    CAS_FIELD_NUMBER: _ClassVar[int]
    TXN_FIELD_NUMBER: _ClassVar[int]
    BARRIER_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_LEADER_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    WATCH_CANCEL_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LEASE_GRANT_FIELD_NUMBER: _ClassVar[int]
    LEASE_REVOKE_FIELD_NUMBER: _ClassVar[int]
    LEASE_KEEPALIVE_FIELD_NUMBER: _ClassVar[int]
    LEASE_TTL_FIELD_NUMBER: _ClassVar[int]
    LEASE_LIST_FIELD_NUMBER: _ClassVar[int]
    COMMAND_RESULT_FIELD_NUMBER: _ClassVar[int]
    id: int
    error: Error
    revision: int
    raft_index: int
    auth: AuthResponse
    get: GetResponse
    put: _kv_pb2.PutResponse
    delete: _kv_pb2.DeleteResponse
    range: _kv_pb2.RangeResponse
    delete_range: _kv_pb2.DeleteRangeResponse
    cas: _kv_pb2.CompareAndSwapResponse
    txn: _kv_pb2.TxnResponse
    barrier: BarrierResponse
    status: StatusResponse
    members: MembersResponse
    transfer_leader: TransferLeaderResponse
    watch: WatchResponse
    watch_cancel: WatchCancelResponse
    snapshot: SnapshotResponse
    lease_grant: _kv_pb2.LeaseGrantResponse
    lease_revoke: _kv_pb2.LeaseRevokeResponse
    lease_keepalive: LeaseKeepAliveResponse
    lease_ttl: LeaseTimeToLiveResponse
    lease_list: LeaseListResponse
    command_result: bytes
    def __init__(self, id: _Optional[int] = ..., error: _Optional[_Union[Error, _Mapping]] = ..., revision: _Optional[int] = ..., raft_index: _Optional[int] = ..., auth: _Optional[_Union[AuthResponse, _Mapping]] = ..., get: _Optional[_Union[GetResponse, _Mapping]] = ..., put: _Optional[_Union[_kv_pb2.PutResponse, _Mapping]] = ..., delete: _Optional[_Union[_kv_pb2.DeleteResponse, _Mapping]] = ..., range: _Optional[_Union[_kv_pb2.RangeResponse, _Mapping]] = ..., delete_range: _Optional[_Union[_kv_pb2.DeleteRangeResponse, _Mapping]] = ..., cas: _Optional[_Union[_kv_pb2.CompareAndSwapResponse, _Mapping]] = ..., txn: _Optional[_Union[_kv_pb2.TxnResponse, _Mapping]] = ..., barrier: _Optional[_Union[BarrierResponse, _Mapping]] = ..., status: _Optional[_Union[StatusResponse, _Mapping]] = ..., members: _Optional[_Union[MembersResponse, _Mapping]] = ..., transfer_leader: _Optional[_Union[TransferLeaderResponse, _Mapping]] = ..., watch: _Optional[_Union[WatchResponse, _Mapping]] = ..., watch_cancel: _Optional[_Union[WatchCancelResponse, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotResponse, _Mapping]] = ..., lease_grant: _Optional[_Union[_kv_pb2.LeaseGrantResponse, _Mapping]] = ..., lease_revoke: _Optional[_Union[_kv_pb2.LeaseRevokeResponse, _Mapping]] = ..., lease_keepalive: _Optional[_Union[LeaseKeepAliveResponse, _Mapping]] = ..., lease_ttl: _Optional[_Union[LeaseTimeToLiveResponse, _Mapping]] = ..., lease_list: _Optional[_Union[LeaseListResponse, _Mapping]] = ..., command_result: _Optional[bytes] = ...) -> None: ...

class AuthRequest(_message.Message):
    __slots__ = ("token",)
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    token: str
    def __init__(self, token: _Optional[str] = ...) -> None: ...

class AuthResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("kv",)
    KV_FIELD_NUMBER: _ClassVar[int]
    kv: _kv_pb2.KeyValue
    def __init__(self, kv: _Optional[_Union[_kv_pb2.KeyValue, _Mapping]] = ...) -> None: ...

class BarrierRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BarrierResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ("all_namespaces", "leader_commit")
    ALL_NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    all_namespaces: bool
    leader_commit: bool
    def __init__(self, all_namespaces: bool = ..., leader_commit: bool = ...) -> None: ...

class Member(_message.Message):
    __slots__ = ("id", "voter", "addrs")
    ID_FIELD_NUMBER: _ClassVar[int]
    VOTER_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    id: str
    voter: bool
    addrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., voter: bool = ..., addrs: _Optional[_Iterable[str]] = ...) -> None: ...

class GroupStatus(_message.Message):
    __slots__ = ("id", "namespace", "role", "term", "leader", "commit", "applied", "members", "revision", "leader_commit")
    ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TERM_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    LEADER_COMMIT_FIELD_NUMBER: _ClassVar[int]
    id: str
    namespace: str
    role: str
    term: int
    leader: str
    commit: int
    applied: int
    members: _containers.RepeatedCompositeFieldContainer[Member]
    revision: int
    leader_commit: int
    def __init__(self, id: _Optional[str] = ..., namespace: _Optional[str] = ..., role: _Optional[str] = ..., term: _Optional[int] = ..., leader: _Optional[str] = ..., commit: _Optional[int] = ..., applied: _Optional[int] = ..., members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., revision: _Optional[int] = ..., leader_commit: _Optional[int] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupStatus]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupStatus, _Mapping]]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MembersResponse(_message.Message):
    __slots__ = ("members", "leader")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[Member]
    leader: str
    def __init__(self, members: _Optional[_Iterable[_Union[Member, _Mapping]]] = ..., leader: _Optional[str] = ...) -> None: ...

class MemberRequest(_message.Message):
    __slots__ = ("id", "addrs")
    ID_FIELD_NUMBER: _ClassVar[int]
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    id: str
    addrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[str] = ..., addrs: _Optional[_Iterable[str]] = ...) -> None: ...

class TransferLeaderRequest(_message.Message):
    __slots__ = ("target",)
    TARGET_FIELD_NUMBER: _ClassVar[int]
    target: str
    def __init__(self, target: _Optional[str] = ...) -> None: ...

class TransferLeaderResponse(_message.Message):
    __slots__ = ("leader",)
    LEADER_FIELD_NUMBER: _ClassVar[int]
    leader: str
    def __init__(self, leader: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key", "range_end", "start_revision", "prev_kv")
    KEY_FIELD_NUMBER: _ClassVar[int]
    RANGE_END_FIELD_NUMBER: _ClassVar[int]
    START_REVISION_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    range_end: bytes
    start_revision: int
    prev_kv: bool
    def __init__(self, key: _Optional[bytes] = ..., range_end: _Optional[bytes] = ..., start_revision: _Optional[int] = ..., prev_kv: bool = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("type", "kv", "prev_kv")
    class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PUT: _ClassVar[Event.EventType]
        DELETE: _ClassVar[Event.EventType]
    PUT: Event.EventType
    DELETE: Event.EventType
    TYPE_FIELD_NUMBER: _ClassVar[int]
    KV_FIELD_NUMBER: _ClassVar[int]
    PREV_KV_FIELD_NUMBER: _ClassVar[int]
    type: Event.EventType
    kv: _kv_pb2.KeyValue
    prev_kv: _kv_pb2.KeyValue
    def __init__(self, type: _Optional[_Union[Event.EventType, str]] = ..., kv: _Optional[_Union[_kv_pb2.KeyValue, _Mapping]] = ..., prev_kv: _Optional[_Union[_kv_pb2.KeyValue, _Mapping]] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("created", "canceled", "events", "header_revision")
    CREATED_FIELD_NUMBER: _ClassVar[int]
    CANCELED_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    HEADER_REVISION_FIELD_NUMBER: _ClassVar[int]
    created: bool
    canceled: bool
    events: _containers.RepeatedCompositeFieldContainer[Event]
    header_revision: int
    def __init__(self, created: bool = ..., canceled: bool = ..., events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ..., header_revision: _Optional[int] = ...) -> None: ...

class WatchCancelRequest(_message.Message):
    __slots__ = ("watch_id",)
    WATCH_ID_FIELD_NUMBER: _ClassVar[int]
    watch_id: int
    def __init__(self, watch_id: _Optional[int] = ...) -> None: ...

class WatchCancelResponse(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: bool = ...) -> None: ...

class LeaseKeepAliveRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: int
    def __init__(self, id: _Optional[int] = ...) -> None: ...

class LeaseKeepAliveResponse(_message.Message):
    __slots__ = ("id", "ttl")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    id: int
    ttl: int
    def __init__(self, id: _Optional[int] = ..., ttl: _Optional[int] = ...) -> None: ...

class LeaseTimeToLiveRequest(_message.Message):
    __slots__ = ("id", "keys")
    ID_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    id: int
    keys: bool
    def __init__(self, id: _Optional[int] = ..., keys: bool = ...) -> None: ...

class LeaseTimeToLiveResponse(_message.Message):
    __slots__ = ("id", "ttl", "granted_ttl", "keys")
    ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    id: int
    ttl: int
    granted_ttl: int
    keys: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, id: _Optional[int] = ..., ttl: _Optional[int] = ..., granted_ttl: _Optional[int] = ..., keys: _Optional[_Iterable[bytes]] = ...) -> None: ...

class LeaseListRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaseStatus(_message.Message):
    __slots__ = ("id", "granted_ttl", "keys")
    ID_FIELD_NUMBER: _ClassVar[int]
    GRANTED_TTL_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    id: int
    granted_ttl: int
    keys: int
    def __init__(self, id: _Optional[int] = ..., granted_ttl: _Optional[int] = ..., keys: _Optional[int] = ...) -> None: ...

class LeaseListResponse(_message.Message):
    __slots__ = ("leases",)
    LEASES_FIELD_NUMBER: _ClassVar[int]
    leases: _containers.RepeatedCompositeFieldContainer[LeaseStatus]
    def __init__(self, leases: _Optional[_Iterable[_Union[LeaseStatus, _Mapping]]] = ...) -> None: ...

class MemberContext(_message.Message):
    __slots__ = ("addrs",)
    ADDRS_FIELD_NUMBER: _ClassVar[int]
    addrs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, addrs: _Optional[_Iterable[str]] = ...) -> None: ...

class SnapshotRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SnapshotResponse(_message.Message):
    __slots__ = ("chunk", "done", "index", "size")
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    chunk: bytes
    done: bool
    index: int
    size: int
    def __init__(self, chunk: _Optional[bytes] = ..., done: bool = ..., index: _Optional[int] = ..., size: _Optional[int] = ...) -> None: ...
