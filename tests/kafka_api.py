"""Any Kafka request, by schema: kafka-python 3's JSON-schema codec encodes the request
and decodes the response, so a test can check each field of what a broker answers
(null versus empty, error codes) and compare two brokers field by field.

    resp = call(bootstrap, CreateTopicsRequest(version=5, topics=[...], ...))
    diff(to_plain(resp_a), to_plain(resp_b), ignore={"throttle_time_ms", "topic_id"})
"""
import socket
import struct

from kafka.protocol.api_message import ApiMessage


def build(cls, version=None, **fields):
    """An instance of message (or nested struct) class `cls` from plain values: nested
    dicts and lists of dicts become the schema's nested structs; fields left out take
    the schema's defaults."""
    values = {}
    for name, value in fields.items():
        field = cls.fields[name]
        ftype = field._json["type"] if hasattr(field, "_json") else ""
        nested = getattr(cls, ftype.lstrip("[]"), None) if ftype.lstrip("[]")[:1].isupper() else None
        if nested is not None and isinstance(value, list):
            value = [build(nested, **v) if isinstance(v, dict) else v for v in value]
        elif nested is not None and isinstance(value, dict):
            value = build(nested, **value)
        values[name] = value
    return cls(version=version, **values) if version is not None else cls(**values)


def _recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"broker closed the connection after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def call(bootstrap, request: ApiMessage, correlation_id=1, timeout=10.0):
    """Sends `request` (its version set) to `bootstrap` and returns the decoded response."""
    host, port = bootstrap.rsplit(":", 1)
    request.with_header(correlation_id=correlation_id, client_id="ringmq-tests")
    frame = request.encode(header=True, framed=True)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(frame)
        (size,) = struct.unpack(">i", _recv_exact(s, 4))
        payload = _recv_exact(s, size)
    response_class = type(request).__name__.replace("Request", "Response").split("_v")[0]
    module = __import__(type(request).__module__, fromlist=[response_class])
    resp_cls = getattr(module, response_class)
    resp = resp_cls.decode(payload, version=request.API_VERSION, header=True)
    assert resp._header.correlation_id == correlation_id
    return resp


def to_plain(value):
    """A response as nested dicts/lists/scalars (None stays None, "" stays "")."""
    if isinstance(getattr(type(value), "fields", None), dict):
        # Walk the fields (kafka-python's to_dict() turns null strings into "").
        return {name: to_plain(getattr(value, name, None)) for name in type(value).fields}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def diff(a, b, ignore=frozenset(), path=""):
    """Field-by-field differences between two plain responses, as 'path: a != b' lines;
    fields named in `ignore` (volatile ones: ids, throttle, hosts) are skipped."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k in ignore:
                continue
            out += diff(a.get(k), b.get(k), ignore, f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            out += diff(x, y, ignore, f"{path}[{i}]")
    elif a != b:
        out.append(f"{path or '.'}: {a!r} != {b!r}")
    return out
