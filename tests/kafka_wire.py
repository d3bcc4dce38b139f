"""Hand-encoded Kafka requests for bad-input tests (what a client library won't send)."""
import socket
import struct


def frame(api_key, version, correlation_id, body=b"", client_id=b"e2e"):
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def connect(bootstrap, timeout=5.0):
    host, port = bootstrap.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=timeout)
    s.settimeout(timeout)
    return s


def read_frame(s):
    """One response frame's bytes after the length, or None if the broker closed."""
    head = recv_exact(s, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">i", head)
    return recv_exact(s, n)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except (ConnectionResetError, __import__("ssl").SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def closed_by_broker(s):
    try:
        return s.recv(1) == b""
    except socket.timeout:
        return False
    except OSError:  # reset, or a TLS connection ended without close_notify
        return True


def produce_v3(topic, partition, records, acks=1):
    """ProduceRequest v3 body."""
    t = topic.encode()
    return (struct.pack(">hhi", -1, acks, 30000) + struct.pack(">i", 1) + struct.pack(">h", len(t)) + t
            + struct.pack(">i", 1) + struct.pack(">i", partition) + struct.pack(">i", len(records)) + records)


def parse_produce_v3(resp):
    """[(partition, error_code, base_offset)] of a ProduceResponse v3 (after the header)."""
    off = 4  # correlation id
    (ntopics,) = struct.unpack_from(">i", resp, off); off += 4
    out = []
    for _ in range(ntopics):
        (nlen,) = struct.unpack_from(">h", resp, off); off += 2 + nlen
        (nparts,) = struct.unpack_from(">i", resp, off); off += 4
        for _ in range(nparts):
            p, err, base, _ts = struct.unpack_from(">ihqq", resp, off); off += 22
            out.append((p, err, base))
    return out


def record_batch(values, producer_id=-1, epoch=-1, base_sequence=-1):
    """A v2 record batch (uncompressed) with CRC32C, built from scratch."""
    import time
    recs = b""
    for i, v in enumerate(values):
        body = b"\x00" + zigzag(0) + zigzag(i) + zigzag(-1) + zigzag(len(v)) + v + zigzag(0)
        recs += zigzag(len(body)) + body
    now = int(time.time() * 1000)
    after_crc = struct.pack(">hiqqqhii", 0, len(values) - 1, now, now, producer_id, epoch, base_sequence, len(values)) + recs
    crc = crc32c(after_crc)
    batch_len = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiibI", 0, batch_len, -1, 2, crc) + after_crc


def zigzag(n):
    z = (n << 1) ^ (n >> 63)
    z &= (1 << 64) - 1
    out = b""
    while z >= 0x80:
        out += bytes([(z & 0x7F) | 0x80])
        z >>= 7
    return out + bytes([z])


_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def kstring(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">h", len(b)) + b


def sasl_handshake(s, mechanism, correlation_id=1, version=1):
    """SaslHandshake (key 17): (error code, [mechanisms]), or None if the broker closed."""
    s.sendall(frame(17, version, correlation_id, kstring(mechanism)))
    resp = read_frame(s)
    if resp is None:
        return None
    code, n = struct.unpack(">hi", resp[4:10])
    at, mechanisms = 10, []
    for _ in range(n):
        (ln,) = struct.unpack(">h", resp[at:at + 2])
        mechanisms.append(resp[at + 2:at + 2 + ln].decode())
        at += 2 + ln
    return code, mechanisms


def sasl_authenticate(s, token, correlation_id=2):
    """SaslAuthenticate v1: (error code, message, auth bytes, session lifetime ms), or None
    if the broker closed without answering."""
    s.sendall(frame(36, 1, correlation_id, struct.pack(">i", len(token)) + token))
    resp = read_frame(s)
    if resp is None:
        return None
    (code,) = struct.unpack(">h", resp[4:6])
    (ln,) = struct.unpack(">h", resp[6:8])
    at = 8
    message = None
    if ln >= 0:
        message = resp[at:at + ln].decode()
        at += ln
    (bn,) = struct.unpack(">i", resp[at:at + 4])
    auth = resp[at + 4:at + 4 + bn]
    (lifetime,) = struct.unpack(">q", resp[at + 4 + bn:at + 12 + bn])
    return code, message, auth, lifetime


def metadata_v1(s, correlation_id=3):
    """A Metadata v1 request for all topics; the response bytes, or None if closed."""
    try:
        s.sendall(frame(3, 1, correlation_id, struct.pack(">i", -1)))
        return read_frame(s)
    except OSError:  # ssl.SSLError included: the broker closed the connection
        return None
