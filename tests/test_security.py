"""Security end to end (SPEC S1-S3) with real clients against a real ringmqd: named
listeners each advertised as configured, TLS (PEM keystore with an encrypted key,
mutual TLS), SASL PLAIN / SCRAM-SHA-256 / SCRAM-SHA-512 with users kept in the metadata
log, re-authentication, certificate replacement; and the ways a client can get it wrong,
each answered with Kafka's error and nothing more."""
import collections
import re
import socket
import ssl
import struct
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AclBinding, AclOperation, AclPermissionType, AdminClient,
                                   ResourcePatternType, ResourceType, ScramCredentialInfo,
                                   ScramMechanism, UserScramCredentialDeletion,
                                   UserScramCredentialUpsertion)

import kafka_wire as kw
from certs import Certs, ktls_available
from conftest import RINGMQ, free_port
from test_kafka_tools import classpath, tool  # noqa: F401 (the fixture, shared)

ROOT_PASSWORD = "root-secret"


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("certs"))


def secure_properties(certs, **extra):
    """The seeds' layout on one broker: a private PLAINTEXT listener, a public SASL_SSL
    one advertised under another host name, and an SSL listener that wants a client
    certificate."""
    plain, sasl_ssl, tls = free_port(), free_port(), free_port()
    props = {
        "listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://127.0.0.1:{sasl_ssl},SSL://127.0.0.1:{tls}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{plain},SASL_SSL://localhost:{sasl_ssl},"
                                f"SSL://localhost:{tls}",
        "inter.broker.listener.name": "PLAINTEXT",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": certs.keystore,
        "ssl.key.password": Certs.KEY_PASSWORD,
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": certs.ca,
        "listener.name.ssl.ssl.client.auth": "required",
        "ssl.principal.mapping.rules": "RULE:^CN=([^,]*),.*$/$1/L,DEFAULT",
        "ringmq.sasl.initial.user": "root",
        "ringmq.sasl.initial.user.password": ROOT_PASSWORD,
        "group.initial.rebalance.delay.ms": "0",
    }
    props.update(extra)
    return props, {"plain": f"127.0.0.1:{plain}", "sasl_ssl": f"localhost:{sasl_ssl}",
                   "ssl": f"localhost:{tls}"}


def sasl(addr, certs, mechanism, user, password, **extra):
    return {"bootstrap.servers": addr, "security.protocol": "SASL_SSL", "sasl.mechanism": mechanism,
            "sasl.username": user, "sasl.password": password, "ssl.ca.location": certs.ca, **extra}


def make_users(admin, *users):
    """SCRAM-SHA-256 and -512 credentials for each (name, password): one request per
    mechanism, since Kafka takes a user at most once per request."""
    for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
        upserts = [UserScramCredentialUpsertion(name, ScramCredentialInfo(m, 4096), password.encode())
                   for name, password in users]
        for f in admin.alter_user_scram_credentials(upserts).values():
            f.result(timeout=15)


def roundtrip(conf, topic, n=20, pad=0):
    """Produces n messages (each padded with `pad` bytes) and consumes them back with a
    consumer group."""
    p = Producer({**conf, "acks": "all"})
    for i in range(n):
        p.produce(topic, f"{topic}-{i}".encode() + b" " * pad)
    assert p.flush(20) == 0
    c = Consumer({**conf, "group.id": f"g-{topic}", "auto.offset.reset": "earliest"})
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < n and time.time() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            got.append(m.value().decode().rstrip(" "))
    c.commit(asynchronous=False)
    c.close()
    assert sorted(got) == sorted(f"{topic}-{i}" for i in range(n))


@pytest.fixture
def secure_broker(make_broker, certs):
    props, addrs = secure_properties(certs)
    b = make_broker(properties=props).start()
    b.addrs = addrs
    b.admin_conf = sasl(addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD)
    wait_for_initial_user(b)
    return b


def wait_for_initial_user(b, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if "initial SASL user present" in b.log_path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError("the initial user was not created")


def test_seed_scenarios_produce_and_consume_with_a_group(secure_broker, certs):
    """SASL_SSL with PLAIN and SCRAM-SHA-512, SASL_SSL with SCRAM-SHA-256, SSL with a
    client certificate: each produces and consumes through a consumer group; each
    listener advertises its own address."""
    b = secure_broker
    admin = AdminClient(b.admin_conf)
    make_users(admin, ("alice", "alice-secret"))
    described = admin.describe_user_scram_credentials(["alice"])["alice"].result(timeout=10)
    assert sorted(i.mechanism for i in described.scram_credential_infos) == \
        [ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512]
    assert {i.iterations for i in described.scram_credential_infos} == {4096}
    # No users named: every user with a credential (confluent-kafka sends an empty list).
    everyone = admin.describe_user_scram_credentials().result(timeout=10)
    assert "alice" in everyone and "root" in everyone, everyone
    assert len(everyone["alice"].scram_credential_infos) == 2
    scenarios = {
        "plain": sasl(b.addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD),
        "scram512": sasl(b.addrs["sasl_ssl"], certs, "SCRAM-SHA-512", "alice", "alice-secret"),
        "scram256": sasl(b.addrs["sasl_ssl"], certs, "SCRAM-SHA-256", "alice", "alice-secret"),
        "mtls": {"bootstrap.servers": b.addrs["ssl"], "security.protocol": "SSL", "ssl.ca.location": certs.ca,
                 "ssl.certificate.location": certs.client_cert, "ssl.key.location": certs.client_key},
    }
    for name, conf in scenarios.items():
        roundtrip(conf, f"seed-{name}")
    # Megabyte requests through TLS (many records per socket read; rustls holds 16 KiB
    # of decrypted bytes at a time).
    roundtrip(scenarios["scram512"], "seed-big", n=600, pad=8192)
    # Each listener answers Metadata with its own advertised addresses.
    for name, conf in [("plain", {"bootstrap.servers": b.addrs["plain"]}), ("sasl_ssl", scenarios["plain"]),
                       ("ssl", scenarios["mtls"])]:
        brokers = AdminClient(conf).list_topics(timeout=10).brokers
        assert [f"{m.host}:{m.port}" for m in brokers.values()] == [b.addrs[name]], name
    m = b.metrics()
    assert m["ringmq_tls_handshakes_total"] > 0 and m["ringmq_sasl_authentications_total"] > 0
    # Fetches over TLS: spliced to kernel-TLS sockets where the kernel has TLS, else read
    # and encrypted in user space; each path counted.
    if ktls_available():
        assert m["ringmq_ktls_connections_total"] > 0 and m["ringmq_fetch_ktls_bytes_total"] > 0
    else:
        assert m["ringmq_ktls_connections_total"] == 0 and m["ringmq_fetch_ktls_bytes_total"] == 0
        assert m["ringmq_tls_userspace_connections_total"] > 0 and m["ringmq_fetch_tls_bytes_total"] > 0


def test_kafka_python_scram_sha_256(secure_broker, certs):
    """The client-access tutorial's case with kafka-python: SASL_SSL, SCRAM-SHA-256."""
    from kafka import KafkaConsumer, KafkaProducer
    b = secure_broker
    make_users(AdminClient(b.admin_conf), ("bob", "bob-secret"))
    conf = dict(bootstrap_servers=b.addrs["sasl_ssl"], security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="bob", sasl_plain_password="bob-secret",
                ssl_cafile=certs.ca)
    p = KafkaProducer(acks="all", **conf)
    for i in range(10):
        p.send("kp-scram", f"m{i}".encode())
    p.flush(20)
    p.close()
    c = KafkaConsumer("kp-scram", group_id="kp", auto_offset_reset="earliest", consumer_timeout_ms=15000, **conf)
    got = []
    for msg in c:
        got.append(msg.value.decode())
        if len(got) == 10:
            break
    c.commit()
    c.close()
    assert sorted(got) == [f"m{i}" for i in range(10)]


def tls_socket(addr, certs, cert=None, key=None):
    host, port = addr.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=certs.ca)
    if cert:
        ctx.load_cert_chain(cert, key)
    raw = socket.create_connection((host, int(port)), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=host)
    s.settimeout(5)
    return s


def test_authentication_failures_are_generic_and_bad_sessions_end(secure_broker, certs):
    """Wrong password and unknown user get the same answer; an unknown mechanism, SASL
    bytes before the handshake, requests before authentication and an oversized token
    end the connection; the broker keeps serving."""
    b = secure_broker
    b.expected_log += [r"SASL authentication failed", r"before SASL authentication",
                       r"exceeds sasl.server.max.receive.size", r"a TLS handshake on PLAINTEXT listener"]
    answers = []
    for user, password in [("root", "wrong"), ("nobody", "whatever")]:
        s = tls_socket(b.addrs["sasl_ssl"], certs)
        assert kw.sasl_handshake(s, "PLAIN") == (0, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
        code, message, _, _ = kw.sasl_authenticate(s, f"\0{user}\0{password}".encode())
        answers.append((code, message))
        assert kw.closed_by_broker(s)
    assert answers[0] == answers[1] == (58, "Authentication failed during authentication due to invalid "
                                            "credentials with SASL mechanism PLAIN")
    # An unknown mechanism: UNSUPPORTED_SASL_MECHANISM with the enabled ones, then closed.
    # Kafka matches mechanism names exactly: another case or a blank is no mechanism.
    for mechanism in ("GSSAPI", "scram-sha-512", "PLAIN ", "plain"):
        s = tls_socket(b.addrs["sasl_ssl"], certs)
        assert kw.sasl_handshake(s, mechanism) == (33, ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]), mechanism
        assert kw.closed_by_broker(s)
    # Authentication bytes before any handshake: ILLEGAL_SASL_STATE, closed.
    s = tls_socket(b.addrs["sasl_ssl"], certs)
    assert kw.sasl_authenticate(s, b"\0root\0" + ROOT_PASSWORD.encode())[0] == 34
    assert kw.closed_by_broker(s)
    # Any other request before authentication closes the connection unanswered.
    s = tls_socket(b.addrs["sasl_ssl"], certs)
    assert kw.metadata_v1(s) is None
    # A 100 MB token: refused before it is read (sasl.server.max.receive.size).
    s = tls_socket(b.addrs["sasl_ssl"], certs)
    assert kw.sasl_handshake(s, "PLAIN")[0] == 0
    try:
        s.sendall(struct.pack(">i", 100 * 1024 * 1024) + b"\0" * 65536)
    except OSError:
        pass  # closed while the token was still going out
    assert kw.closed_by_broker(s)
    # SASL on the PLAINTEXT listener: ILLEGAL_SASL_STATE, as Kafka answers.
    s = kw.connect(b.addrs["plain"])
    assert kw.sasl_handshake(s, "PLAIN") == (34, [])
    # A plaintext client on a TLS port gets no Kafka answer; TLS on a plaintext port fails.
    s = kw.connect(b.addrs["ssl"].replace("localhost", "127.0.0.1"))
    s.sendall(kw.frame(18, 0, 1))
    assert kw.read_frame(s) is None
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        tls_socket(b.addrs["plain"], certs).sendall(kw.frame(18, 0, 1))
    # Client certificates from another CA or expired are refused in the handshake.
    # (With TLS 1.3 the client may finish its side first; it then never gets an answer.)
    for cert, key in [(certs.other_ca_cert, certs.other_ca_key), (certs.expired_cert, certs.expired_key),
                      (None, None)]:
        try:
            s = tls_socket(b.addrs["ssl"], certs, cert, key)
            s.sendall(kw.frame(18, 0, 1))
            assert kw.read_frame(s) is None, cert
        except OSError:
            pass
    # An X.509 v1 certificate (the seeds' openssl recipe) is refused too, and the broker
    # says why at WARN (the client only sees a handshake failure).
    b.expected_log += [r"the client certificate is X.509 v1"]
    v1_cert, v1_key = certs.v1_client()
    try:
        s = tls_socket(b.addrs["ssl"], certs, v1_cert, v1_key)
        s.sendall(kw.frame(18, 0, 1))
        assert kw.read_frame(s) is None
    except OSError:
        pass
    deadline = time.time() + 5
    while "the client certificate is X.509 v1" not in b.log_path.read_text():
        assert time.time() < deadline, "no WARN for the v1 certificate"
        time.sleep(0.05)
    s = tls_socket(b.addrs["ssl"], certs, certs.client_cert, certs.client_key)
    s.sendall(kw.frame(18, 0, 1))
    assert kw.read_frame(s) is not None
    # Still serving, and the right user still gets in.
    s = tls_socket(b.addrs["sasl_ssl"], certs)
    assert kw.sasl_handshake(s, "PLAIN")[0] == 0
    assert kw.sasl_authenticate(s, f"\0root\0{ROOT_PASSWORD}".encode())[0] == 0
    assert kw.metadata_v1(s) is not None
    assert b.metrics()["ringmq_sasl_failures_total"] >= 2
    assert b.metrics()["ringmq_tls_handshake_failures_total"] >= 3


def test_a_flood_of_bad_logins_costs_no_threads_and_a_good_login_still_works(secure_broker, certs):
    """300 simultaneous PLAIN logins with a wrong password from one address: password
    checks run on a fixed pool (the broker's thread count stays put), at most 16 attempts
    per address are in progress (the rest fail at once), every one is answered with the
    generic failure or closed, and the right password still logs in afterwards."""
    import concurrent.futures
    b = secure_broker
    b.expected_log += [r"SASL authentication failed"]

    def threads():
        return int(re.search(r"^Threads:\s+(\d+)", Path(f"/proc/{b.proc.pid}/status").read_text(), re.M).group(1))
    before = threads()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], threads())
            time.sleep(0.02)
    sampler = threading.Thread(target=sample)
    sampler.start()

    def attempt(i):
        try:
            s = tls_socket(b.addrs["sasl_ssl"], certs)
            s.settimeout(30)
            if kw.sasl_handshake(s, "PLAIN")[0] != 0:
                return "handshake"
            r = kw.sasl_authenticate(s, f"\0root\0wrong-{i}".encode())
            s.close()
            return "closed" if r is None else r[0]
        except OSError:
            return "closed"
    started = time.time()
    with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
        outcomes = list(pool.map(attempt, range(300)))
    elapsed = time.time() - started
    done.set()
    sampler.join()
    assert set(outcomes) <= {58, "closed"}, collections.Counter(outcomes)
    assert outcomes.count(58) >= 16, collections.Counter(outcomes)
    assert peak[0] <= before + 3, (before, peak[0])
    assert elapsed < 60, elapsed
    # The right password still works (after this address's back-off, at most 5 s).
    ok = Producer({**b.admin_conf, "message.timeout.ms": 20000})
    ok.produce("after-flood", b"x")
    assert ok.flush(25) == 0


def test_deleted_user_and_changed_password_end_sessions(make_broker, certs):
    """A user deleted while connected is disconnected at its next request and cannot
    come back; with connections.max.reauth.ms a session that does not re-authenticate
    ends, and a re-authentication after a password change fails (KIP-368)."""
    props, addrs = secure_properties(certs, **{"listener.name.sasl_ssl.connections.max.reauth.ms": "1500"})
    b = make_broker(properties=props).start()
    b.expected_log += [r"SASL authentication failed"]
    b.admin_conf = sasl(addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD)
    wait_for_initial_user(b)
    admin = AdminClient(b.admin_conf)
    make_users(admin, ("erin", "erin-secret"), ("carol", "carol-secret"))

    def login(user, password):
        s = tls_socket(addrs["sasl_ssl"], certs)
        assert kw.sasl_handshake(s, "PLAIN")[0] == 0
        return s, kw.sasl_authenticate(s, f"\0{user}\0{password}".encode())

    s, (code, _, _, lifetime) = login("erin", "erin-secret")
    assert code == 0 and 1000 <= lifetime <= 1500
    assert kw.metadata_v1(s) is not None
    for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512):
        admin.alter_user_scram_credentials([UserScramCredentialDeletion("erin", m)])["erin"].result(timeout=15)
    deadline = time.time() + 10
    while kw.metadata_v1(s) is not None and time.time() < deadline:
        time.sleep(0.1)
    assert kw.metadata_v1(s) is None, "the deleted user's connection stayed open"
    assert login("erin", "erin-secret")[1][0] == 58
    # Past the session lifetime without re-authenticating: closed at the next request.
    s, (code, _, _, _) = login("carol", "carol-secret")
    assert code == 0
    time.sleep(1.7)
    assert kw.metadata_v1(s) is None
    # librdkafka re-authenticates on its own (KIP-368); after a password change its next
    # re-authentication fails.
    errors = []
    conf = sasl(addrs["sasl_ssl"], certs, "SCRAM-SHA-512", "carol", "carol-secret",
                error_cb=lambda e: errors.append(e))
    p = Producer(conf)
    for i in range(8):
        p.produce("reauth", f"{i}".encode())
        p.flush(10)
        time.sleep(0.4)
    assert not [e for e in errors if e.code() == KafkaError._AUTHENTICATION], errors
    reauths = len(re.findall(r"SASL authenticated.*User:carol reauth=true", b.log_path.read_text()))
    assert reauths >= 1, "the producer never re-authenticated"
    upsert = UserScramCredentialUpsertion("carol", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"changed")
    admin.alter_user_scram_credentials([upsert])["carol"].result(timeout=15)
    deadline = time.time() + 15
    while not [e for e in errors if e.code() == KafkaError._AUTHENTICATION] and time.time() < deadline:
        p.produce("reauth", b"after")
        p.poll(0.5)
    assert [e for e in errors if e.code() == KafkaError._AUTHENTICATION], errors
    assert "user=\"carol\"" in b.log_path.read_text() or "user=carol" in b.log_path.read_text()


def test_user_rules_initial_user_and_limit(make_broker, certs):
    """The seeds' rules: the initial user cannot be deleted, at most N users, a password
    reset takes effect for new logins."""
    props, addrs = secure_properties(certs, **{"ringmq.sasl.max.users": "3"})
    b = make_broker(properties=props).start()
    b.admin_conf = sasl(addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD)
    wait_for_initial_user(b)
    admin = AdminClient(b.admin_conf)
    admin.alter_user_scram_credentials(
        [UserScramCredentialDeletion("root", ScramMechanism.SCRAM_SHA_256)])["root"].result(15)
    with pytest.raises(Exception, match="initial user"):
        admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion("root", ScramMechanism.SCRAM_SHA_512)])["root"].result(15)
    # A user named twice in one request is refused, as Kafka refuses it.
    twice = [UserScramCredentialUpsertion("u9", ScramCredentialInfo(m, 4096), b"p")
             for m in (ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512)]
    with pytest.raises(Exception, match="twice"):
        admin.alter_user_scram_credentials(twice)["u9"].result(15)
    make_users(admin, ("u1", "p1"), ("u2", "p2"))
    with pytest.raises(Exception, match="at most 3"):
        make_users(admin, ("u3", "p3"))
    make_users(admin, ("u1", "reset"))
    roundtrip(sasl(addrs["sasl_ssl"], certs, "SCRAM-SHA-256", "u1", "reset"), "after-reset", n=3)


def test_certificate_replacement_keeps_clients_connected(make_broker, certs):
    """A new keystore file is picked up without a restart: new connections get the new
    certificate, a consumer connected before keeps consuming."""
    props, addrs = secure_properties(certs, **{"ringmq.ssl.reload.check.ms": "200"})
    keystore = certs.server_keystore("reload-keystore.pem", "localhost")
    props["ssl.keystore.location"] = keystore
    b = make_broker(properties=props).start()
    b.admin_conf = sasl(addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD)
    wait_for_initial_user(b)

    def served_org():
        s = tls_socket(addrs["sasl_ssl"], certs)
        subject = dict(x[0] for x in s.getpeercert()["subject"])
        s.close()
        return subject["organizationName"]

    assert served_org() == "ringmq"
    conf = b.admin_conf
    p = Producer(conf)
    p.produce("reload", b"before")
    p.flush(10)
    c = Consumer({**conf, "group.id": "reload", "auto.offset.reset": "earliest"})
    c.subscribe(["reload"])

    def next_value():
        deadline = time.time() + 20
        while time.time() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                return m.value()
        return None

    assert next_value() == b"before"
    renewed = certs.server_keystore("renewed.pem", "localhost", org="ringmq renewed")
    with open(renewed, "rb") as src, open(keystore, "wb") as dst:
        dst.write(src.read())
    deadline = time.time() + 10
    while served_org() != "ringmq renewed" and time.time() < deadline:
        time.sleep(0.1)
    assert served_org() == "ringmq renewed"
    p.produce("reload", b"after")
    p.flush(10)
    assert next_value() == b"after"
    c.close()
    req = urllib.request.Request(f"http://127.0.0.1:{b.http_port}/v1/tls/reload", method="POST")
    assert urllib.request.urlopen(req, timeout=5).read().decode().strip() == '{"reloaded":2}'


def client_properties(path, certs, user, password, mechanism="SCRAM-SHA-512"):
    """A Kafka client properties file (Java's keys and format, a JAAS line continued over
    three lines as people write it; ringmq's CLI reads them too)."""
    path.write_text(
        "security.protocol=SASL_SSL\n"
        f"sasl.mechanism={mechanism}\n"
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n"
        f'    username="{user}" \\\n'
        f'    password="{password}";\n'
        "ssl.truststore.type=PEM\n"
        f"ssl.truststore.location={certs.ca}\n")
    return str(path)


def cli(addr, config, *args, check=True):
    p = subprocess.run([str(RINGMQ), "-b", addr, "--command-config", config, *map(str, args)],
                       capture_output=True, text=True, timeout=60)
    if check:
        assert p.returncode == 0, f"ringmq {args}: {p.stdout}{p.stderr}"
    return p.stdout + p.stderr


@pytest.fixture
def acl_broker(make_broker, certs, tmp_path):
    props, addrs = secure_properties(certs, **{
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:root",
    })
    b = make_broker(properties=props).start()
    b.addrs = addrs
    b.admin_conf = sasl(addrs["sasl_ssl"], certs, "PLAIN", "root", ROOT_PASSWORD)
    b.root_config = client_properties(tmp_path / "root.properties", certs, "root", ROOT_PASSWORD)
    wait_for_initial_user(b)
    return b


def errors_of(futures):
    out = {}
    for name, f in futures.items():
        try:
            f.result(timeout=15)
            out[name] = None
        except Exception as e:  # confluent_kafka.KafkaException
            out[name] = e.args[0].code() if e.args and hasattr(e.args[0], "code") else e
    return out


def test_acls_permit_and_deny_each_api(acl_broker, certs):
    """`ringmq user` / `ringmq topic grant` / `ringmq acl` as an operator runs them; then
    each kind of request is allowed or refused with Kafka's error: produce, consume,
    describe (Metadata hides what may not be described), create, delete, groups."""
    from confluent_kafka.admin import NewTopic
    b, addr, root = acl_broker, acl_broker.addrs["sasl_ssl"], acl_broker.root_config
    for user in ("alice", "bob", "carol"):
        cli(addr, root, "user", "create", user, "--password", f"{user}-pw")
    assert re.search(r"^alice\s+SCRAM-SHA-256\(4096\),SCRAM-SHA-512\(4096\)$", cli(addr, root, "user", "list"), re.M)
    for t in ("orders", "secret", "public"):
        cli(addr, root, "topic", "create", t, "-p", 1, "-r", 1)
    cli(addr, root, "topic", "grant", "orders", "--user", "alice", "--access", "publish")
    cli(addr, root, "topic", "grant", "orders", "--user", "bob", "--access", "subscribe")
    cli(addr, root, "topic", "grant", "public", "--user", "*", "--access", "both")
    listed = cli(addr, root, "acl", "list")
    assert re.search(r"Topic\s+orders\s+LITERAL\s+User:alice\s+\*\s+WRITE\s+ALLOW", listed), listed
    as_user = lambda u: sasl(addr, certs, "SCRAM-SHA-512", u, f"{u}-pw")

    def produce(user, topic):
        errs = []
        p = Producer({**as_user(user), "message.timeout.ms": 5000,
                      "error_cb": lambda e: errs.append(e.code())})
        p.produce(topic, b"x", on_delivery=lambda err, m: errs.append(err.code() if err else None))
        p.flush(10)
        return errs[-1] if errs else "nothing"

    assert produce("alice", "orders") is None
    assert produce("alice", "secret") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce("bob", "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce("carol", "public") is None, "a grant to every user"
    # Subscribe: bob reads orders with his group; carol may not join a group.
    roundtrip_read = Consumer({**as_user("bob"), "group.id": "bob-g", "auto.offset.reset": "earliest"})
    roundtrip_read.subscribe(["orders"])
    got, deadline = None, time.time() + 20
    while got is None and time.time() < deadline:
        m = roundtrip_read.poll(0.5)
        if m is not None and not m.error():
            got = m.value()
    roundtrip_read.close()
    assert got == b"x"
    c = Consumer({**as_user("carol"), "group.id": "carol-g", "auto.offset.reset": "earliest"})
    c.subscribe(["orders"])
    seen, deadline = set(), time.time() + 15
    while time.time() < deadline and not seen & {KafkaError.GROUP_AUTHORIZATION_FAILED,
                                                 KafkaError.TOPIC_AUTHORIZATION_FAILED}:
        m = c.poll(0.5)
        if m is not None and m.error():
            seen.add(m.error().code())
    c.close()
    assert seen & {KafkaError.GROUP_AUTHORIZATION_FAILED, KafkaError.TOPIC_AUTHORIZATION_FAILED}, seen
    # Describe: Metadata shows alice only what she may describe; a named topic is refused.
    alice = AdminClient(as_user("alice"))
    assert set(alice.list_topics(timeout=10).topics) == {"orders", "public"}
    md = alice.list_topics(topic="secret", timeout=10)
    assert md.topics["secret"].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # Auto-creating a topic she may describe but not create: TOPIC_AUTHORIZATION_FAILED,
    # as Kafka answers (not UNKNOWN_TOPIC_OR_PARTITION), and nothing is created.
    cli(addr, root, "acl", "add", "--name", "alice-", "--pattern", "prefixed", "--principal", "alice",
        "--operation", "describe")
    creator = Producer({**as_user("alice"), "allow.auto.create.topics": True})
    md = creator.list_topics(topic="alice-new", timeout=10)
    assert md.topics["alice-new"].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert "alice-new" not in AdminClient(b.admin_conf).list_topics(timeout=10).topics
    # Authorized operations come from the ACLs (KIP-430): WRITE on orders and the DESCRIBE
    # it implies; DescribeCluster answers her too, with no cluster operations.
    from confluent_kafka import TopicCollection
    from confluent_kafka.admin import AclOperation
    orders = alice.describe_topics(TopicCollection(["orders"]), include_authorized_operations=True)
    assert set(orders["orders"].result(timeout=10).authorized_operations) == \
        {AclOperation.WRITE, AclOperation.DESCRIBE}
    cluster = alice.describe_cluster(include_authorized_operations=True).result(timeout=10)
    assert cluster.cluster_id and not cluster.authorized_operations
    root_admin = AdminClient(b.admin_conf)
    cluster = root_admin.describe_cluster(include_authorized_operations=True).result(timeout=10)
    assert {AclOperation.ALTER, AclOperation.DESCRIBE, AclOperation.CREATE} <= set(cluster.authorized_operations)
    # Create and delete need CREATE / DELETE.
    assert errors_of(alice.create_topics([NewTopic("mine", 1, 1)])) == {"mine": KafkaError.TOPIC_AUTHORIZATION_FAILED}
    assert errors_of(alice.delete_topics(["orders"])) == {"orders": KafkaError.TOPIC_AUTHORIZATION_FAILED}

    def message_of(futures):
        try:
            next(iter(futures.values())).result(timeout=15)
        except Exception as e:  # confluent_kafka.KafkaException
            return e.args[0].str()
    # Kafka's own text (people and clients match them).
    assert message_of(alice.create_topics([NewTopic("mine", 1, 1)])) == "Authorization failed."
    assert errors_of(AdminClient(b.admin_conf).delete_topics(["secret"])) == {"secret": None}, "root is a super user"
    # Users and ACLs themselves need cluster rights.
    assert "CLUSTER_AUTHORIZATION_FAILED" in cli(addr, client_properties(
        Path(b.dir).parent / "alice.properties", certs, "alice", "alice-pw"), "acl", "list", check=False) \
        or "error 31" in cli(addr, client_properties(Path(b.dir).parent / "alice.properties", certs, "alice",
                                                     "alice-pw"), "acl", "list", check=False)
    # Revoking the grant takes effect.
    cli(addr, root, "topic", "grant", "orders", "--user", "alice", "--access", "publish", "--revoke")
    deadline = time.time() + 10
    while produce("alice", "orders") is None and time.time() < deadline:
        time.sleep(0.2)
    assert produce("alice", "orders") == KafkaError.TOPIC_AUTHORIZATION_FAILED


def test_a_topic_without_grants_is_open_to_authenticated_users(make_broker, certs, tmp_path):
    """The seeds' model, in its safe form (ringmq.open.resources=topic,group): a topic or
    group nobody was granted is open to every authenticated user; once someone is granted
    a topic, only they. The cluster, users and ACLs stay with the super users, ANONYMOUS
    gets nothing, and a subscriber's `Group:*` grant closes no one else's groups."""
    props, addrs = secure_properties(certs, **{
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:root", "ringmq.open.resources": "topic,group"})
    b = make_broker(properties=props).start()
    wait_for_initial_user(b)
    addr = addrs["sasl_ssl"]
    root = client_properties(tmp_path / "root.properties", certs, "root", ROOT_PASSWORD)
    cli(addr, root, "user", "create", "dana", "--password", "dana-pw")
    cli(addr, root, "user", "create", "eve", "--password", "eve-pw")
    dana = sasl(addr, certs, "SCRAM-SHA-256", "dana", "dana-pw")
    roundtrip(dana, "open-topic", n=3)
    cli(addr, root, "topic", "grant", "open-topic", "--user", "eve", "--access", "both")
    errs = []
    p = Producer({**dana, "message.timeout.ms": 5000})
    p.produce("open-topic", b"y", on_delivery=lambda err, m: errs.append(err and err.code()))
    p.flush(10)
    assert errs == [KafkaError.TOPIC_AUTHORIZATION_FAILED]
    roundtrip(sasl(addr, certs, "SCRAM-SHA-256", "eve", "eve-pw"), "open-topic-2", n=3)
    # Eve's subscription added READ on Group:* for her: dana's groups stay open.
    assert eve_group_grant(cli(addr, root, "acl", "list"))
    roundtrip(dana, "open-topic-3", n=3)

    # Cluster operations are not open: no ACLs, no password changes, no topic-wide admin.
    admin = AdminClient(dana)
    mine = AclBinding(ResourceType.TOPIC, "open-topic", ResourcePatternType.LITERAL, "User:dana", "*",
                      AclOperation.ALL, AclPermissionType.ALLOW)
    with pytest.raises(KafkaException) as e:
        list(admin.create_acls([mine]).values())[0].result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    upsert = UserScramCredentialUpsertion("root", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                          b"taken-over")
    with pytest.raises(KafkaException) as e:
        list(admin.alter_user_scram_credentials([upsert]).values())[0].result(15)
    assert e.value.args[0].code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED
    roundtrip(sasl(addr, certs, "SCRAM-SHA-256", "root", ROOT_PASSWORD), "root-still-works", n=1)

    # ANONYMOUS (the PLAINTEXT listener) is not an authenticated user.
    errs = []
    p = Producer({"bootstrap.servers": addrs["plain"], "message.timeout.ms": 5000})
    p.produce("open-topic-4", b"z", on_delivery=lambda err, m: errs.append(err and err.code()))
    p.flush(10)
    assert errs and errs[0] in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError._MSG_TIMED_OUT), errs

    # Revoking eve's last subscription takes her Group:* grant with it.
    cli(addr, root, "topic", "grant", "open-topic-5", "--user", "eve", "--access", "subscribe")
    cli(addr, root, "topic", "grant", "open-topic-5", "--user", "eve", "--access", "subscribe", "--revoke")
    assert eve_group_grant(cli(addr, root, "acl", "list"))  # open-topic is still hers
    cli(addr, root, "topic", "grant", "open-topic", "--user", "eve", "--access", "both", "--revoke")
    listing = cli(addr, root, "acl", "list")
    assert "User:eve" not in listing, listing


def eve_group_grant(listing):
    return any(l.split()[:1] == ["Group"] and "User:eve" in l for l in listing.splitlines())


def test_kafka_cli_tools_manage_users_and_acls(acl_broker, certs, tmp_path, classpath):
    """Kafka's own kafka-configs and kafka-acls against ringmq over SASL_SSL, then the
    Java console clients as the user they created."""
    b, addr = acl_broker, acl_broker.addrs["sasl_ssl"]
    root = client_properties(tmp_path / "root-java.properties", certs, "root", ROOT_PASSWORD)
    tool(classpath, "ConfigCommand", "--bootstrap-server", addr, "--command-config", root, "--alter",
         "--add-config", "SCRAM-SHA-512=[iterations=8192,password=dave-secret]", "--entity-type", "users",
         "--entity-name", "dave")
    # (kafka-configs --describe on users also asks for client quotas, which come with the
    # quotas issue: the user is read back with ringmq's own tool.)
    assert re.search(r"^dave\s+SCRAM-SHA-512\(8192\)$", cli(addr, b.root_config, "user", "list"), re.M)
    tool(classpath, "AclCommand", "--bootstrap-server", addr, "--command-config", root, "--add",
         "--allow-principal", "User:dave", "--producer", "--consumer", "--topic", "java-topic", "--group", "*")
    out = tool(classpath, "AclCommand", "--bootstrap-server", addr, "--command-config", root, "--list",
               "--topic", "java-topic")
    assert "User:dave" in out and "WRITE" in out and "READ" in out, out
    tool(classpath, "TopicCommand", "--bootstrap-server", addr, "--command-config", root, "--create",
         "--topic", "java-topic", "--partitions", 1)
    dave = client_properties(tmp_path / "dave.properties", certs, "dave", "dave-secret")
    tool(classpath, "ConsoleProducer", "--bootstrap-server", addr, "--topic", "java-topic",
         "--command-config", dave, stdin="".join(f"m{i}\n" for i in range(10)))
    out = tool(classpath, "consumer.ConsoleConsumer", "--bootstrap-server", addr, "--topic", "java-topic",
               "--command-config", dave, "--from-beginning", "--max-messages", 10, "--group", "dave-g",
               "--timeout-ms", 30000)
    assert sorted(out.split()) == sorted(f"m{i}" for i in range(10)), out


def test_connection_limits_per_listener_and_per_address(make_broker, certs):
    """S5 on secured listeners: listener.name.<l>.max.connections caps one listener,
    max.connections.per.ip(.overrides) an address over all listeners; a refused
    connection is closed on arrival and the others keep working."""
    props, addrs = secure_properties(certs, **{"listener.name.ssl.max.connections": "2",
                                               "max.connections.per.ip.overrides": "127.0.0.1:4"})
    b = make_broker(properties=props).start()
    b.expected_log += [r"connection refused"]

    def mtls():
        s = tls_socket(addrs["ssl"], certs, certs.client_cert, certs.client_key)
        s.sendall(kw.frame(18, 0, 1))
        return s, kw.read_frame(s) is not None

    first, second = mtls(), mtls()
    assert first[1] and second[1]
    try:
        third = mtls()[1]
    except OSError:
        third = False
    assert not third, "a third connection on a listener capped at 2"
    plain = [kw.connect(addrs["plain"]) for _ in range(3)]
    answered = 0
    for s in plain:  # (two shards accept them: which one is refused is not fixed)
        try:
            s.sendall(kw.frame(18, 0, 1))
            answered += kw.read_frame(s) is not None
        except OSError:
            pass
    assert answered == 2, "a fifth connection from 127.0.0.1 (override: 4) is refused"
    plain[0].close()
    first[0].close()
    deadline = time.time() + 5
    while time.time() < deadline:
        try:
            if mtls()[1]:
                break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError("a freed slot was not reused")
    assert b.metrics()["ringmq_connections_rejected_total"] >= 2


def test_a_transactional_id_needs_its_own_grant(acl_broker, certs):
    """A transactional producer needs WRITE on its TRANSACTIONAL_ID (which implies
    DESCRIBE, what FindCoordinator checks): without it, init_transactions fails at once
    with TRANSACTIONAL_ID_AUTHORIZATION_FAILED (a fatal error, not minutes of retries);
    `ringmq acl add --resource transactional-id` grants it."""
    b, addr, root = acl_broker, acl_broker.addrs["sasl_ssl"], acl_broker.root_config
    cli(addr, root, "user", "create", "alice", "--password", "alice-pw")
    cli(addr, root, "topic", "create", "orders", "-p", 1, "-r", 1)
    cli(addr, root, "topic", "grant", "orders", "--user", "alice", "--access", "publish")
    conf = {**sasl(addr, certs, "SCRAM-SHA-512", "alice", "alice-pw"), "transactional.id": "tx-alice"}
    started = time.time()
    with pytest.raises(KafkaException) as e:
        Producer(conf).init_transactions(30)
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    assert time.time() - started < 10
    cli(addr, root, "acl", "add", "--resource", "transactional-id", "--name", "tx-alice",
        "--principal", "alice", "--operation", "write")
    assert re.search(r"TransactionalId\s+tx-alice\s+LITERAL\s+User:alice", cli(addr, root, "acl", "list"))
    p = Producer(conf)
    p.init_transactions(30)
    p.begin_transaction()
    p.produce("orders", b"in-a-transaction")
    p.commit_transaction(30)


def keytool_stores(certs, d):
    """Stores made the way the seeds' guide and Kafka's docs make them: openssl exports the
    key and chain as PKCS12, keytool converts it to JKS and imports the CA into JKS and
    PKCS12 trust stores (Java 17's keytool: PBES2/AES and HMAC-SHA256 in PKCS12)."""
    cert, key = certs.server_pair("stores-server")
    run = lambda *a: subprocess.run(list(map(str, a)), check=True, capture_output=True, text=True)
    stores = {name: str(d / name) for name in ("server.p12", "server.jks", "trust.jks", "trust.p12")}
    run("openssl", "pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", certs.ca, "-name", "broker",
        "-passout", "pass:store-secret", "-out", stores["server.p12"])
    run("keytool", "-importkeystore", "-noprompt", "-srckeystore", stores["server.p12"], "-srcstoretype", "PKCS12",
        "-srcstorepass", "store-secret", "-destkeystore", stores["server.jks"], "-deststoretype", "JKS",
        "-deststorepass", "store-secret", "-destkeypass", "key-secret-2", "-srcalias", "broker")
    for store, kind in (("trust.jks", "JKS"), ("trust.p12", "PKCS12")):
        run("keytool", "-importcert", "-noprompt", "-alias", "ca", "-file", certs.ca, "-keystore", stores[store],
            "-storetype", kind, "-storepass", "trust-secret")
    return stores


def test_jks_and_pkcs12_stores_on_the_broker_and_the_clients(make_broker, certs, tmp_path, classpath):
    """A JKS keystore (with its own key password) and a PKCS12 trust store on an SSL
    listener that requires client certificates; the Java console clients and ringmq's
    CLI connect with JKS and PKCS12 stores of their own; a wrong store password stops the
    broker with the reason."""
    stores = keytool_stores(certs, tmp_path)
    port = free_port()
    props = {
        "listeners": f"SSL://127.0.0.1:{port}",
        "listener.security.protocol.map": "SSL:SSL",
        "ssl.keystore.type": "JKS", "ssl.keystore.location": stores["server.jks"],
        "ssl.keystore.password": "store-secret", "ssl.key.password": "key-secret-2",
        "ssl.truststore.type": "PKCS12", "ssl.truststore.location": stores["trust.p12"],
        "ssl.truststore.password": "trust-secret",
        "ssl.client.auth": "required",
    }
    b = make_broker(properties=props).start()
    addr = f"localhost:{port}"
    java = tmp_path / "java-client.properties"
    java.write_text("security.protocol=SSL\n"
                    f"ssl.truststore.type=JKS\nssl.truststore.location={stores['trust.jks']}\n"
                    "ssl.truststore.password=trust-secret\n"
                    f"ssl.keystore.type=PKCS12\nssl.keystore.location={stores['server.p12']}\n"
                    "ssl.keystore.password=store-secret\n")
    tool(classpath, "TopicCommand", "--bootstrap-server", addr, "--command-config", java, "--create",
         "--topic", "stores", "--partitions", 1)
    tool(classpath, "ConsoleProducer", "--bootstrap-server", addr, "--topic", "stores",
         "--command-config", java, stdin="".join(f"s{i}\n" for i in range(5)))
    # ringmq's CLI with the same Java properties: JKS trust store, PKCS12 keystore.
    out = cli(addr, str(java), "consume", "stores", "--from-beginning", "--max-messages", 5,
              "--idle-timeout-ms", 20000)
    assert sorted(out.split())[-5:] == [f"s{i}" for i in range(5)], out
    cli_jks = tmp_path / "cli-jks.properties"
    cli_jks.write_text("security.protocol=SSL\n"
                       f"ssl.truststore.type=PKCS12\nssl.truststore.location={stores['trust.p12']}\n"
                       "ssl.truststore.password=trust-secret\n"
                       f"ssl.keystore.type=JKS\nssl.keystore.location={stores['server.jks']}\n"
                       "ssl.keystore.password=store-secret\nssl.key.password=key-secret-2\n")
    assert "stores" in cli(addr, str(cli_jks), "topic", "list").split()
    # Without a client certificate the listener refuses the handshake.
    no_cert = tmp_path / "no-cert.properties"
    no_cert.write_text("security.protocol=SSL\n"
                       f"ssl.truststore.type=JKS\nssl.truststore.location={stores['trust.jks']}\n"
                       "ssl.truststore.password=trust-secret\n")
    assert "stores" not in cli(addr, str(no_cert), "topic", "list", check=False)
    b.expected_log += [r"TLS handshake failed|handshake"]
    b.stop()

    bad = make_broker(properties={**props, "ssl.keystore.password": "wrong"}, name="bad")
    with pytest.raises(RuntimeError) as e:
        bad.start()
    assert "not a JKS store for this password" in str(e.value), str(e.value)[-2000:]
