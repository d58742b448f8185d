"""pipeline.http.transports and how a service reaches its server: failures to connect named
for what they are (the same with httpx and aiohttp), proxies from the environment
(``ProxyRules``), and the API key kept off cleartext links and out of Basic auth.

Everything talks to hand-written servers on 127.0.0.1. A name that is not 127.0.0.1 or
localhost is either never sent to (a proxy answers for it, or nothing is sent at all) or
resolved to 127.0.0.1 by a patched ``socket.getaddrinfo``: no test leaves this machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import sys
import warnings

import httpx
import pytest

from pipeline import run
from pipeline.core.request import APIRequest
from pipeline.errors import (
    APIConnectionError,
    ConfigError,
    InsecureConnectionWarning,
    TLSCertificateError,
)
from pipeline.http import JSONService, OpenAIService
from pipeline.http.classify import classify_exception
from pipeline.http.transports import ProxyRouter, ProxyRules, is_loopback, make_transport
from pipeline.testing import set_testing

KEY = "sk-test-transports-0123456789abcdef"
TRANSPORTS = ("httpx", "aiohttp")
FAR_HOST = "api.example.test"  # never resolved by DNS: a proxy answers, or getaddrinfo is patched
_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_ambient_proxies(monkeypatch):
    """Tests set the proxy variables they need; none leak in from the machine."""
    for name in _PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(autouse=True)
def instant_retries():
    previous = set_testing(True)
    yield
    set_testing(previous)


# -- small servers on 127.0.0.1 ----------------------------------------------------------------


class Recorder:
    """An HTTP/1.1 server that records each request line and answers ``{"via": name}``."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lines: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                self.lines.append(lines[0])
                length = next((int(line.split(":", 1)[1]) for line in lines
                               if line.lower().startswith("content-length:")), 0)
                if length:
                    await reader.readexactly(length)
                body = b'{"via": "%s"}' % self.name.encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Recorder:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def far_host_is_local(monkeypatch):
    """``FAR_HOST`` resolves to 127.0.0.1 (for both transports' resolvers), other names but
    this machine's do not resolve: nothing asks a DNS server."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host  # anyio passes bytes
        if name == FAR_HOST:
            host = "127.0.0.1"
        elif name is None or not is_loopback(name):  # never a real lookup of a name
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def self_signed_certificate(tmp_path) -> tuple[str, str]:
    """A certificate for 127.0.0.1 signed by itself (cert, key), made here, valid a day:
    with the ``cryptography`` package when it is installed, else with ``openssl``."""
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID
    except ImportError:
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("neither the cryptography package nor openssl is installed: "
                        "no certificate to test with")
        subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
             "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key_path),
             "-out", str(cert_path)],
            check=True, capture_output=True, timeout=30)
        return str(cert_path), str(key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


@contextlib.asynccontextmanager
async def tls_server(tmp_path):
    """A Recorder behind TLS with a self-signed certificate; yields (recorder, cert path)."""
    cert, key = self_signed_certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    recorder = Recorder("tls")
    recorder.server = await asyncio.start_server(recorder._handle, "127.0.0.1", 0, ssl=context)
    try:
        yield recorder, cert
    finally:
        recorder.server.close()
        await recorder.server.wait_closed()


async def call(service, path="items"):
    async with service:
        return await service.call(path, APIRequest(path=path, body={"q": 1}))


# -- failures to connect, named (issue 19.11, 20.10) ---------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_refused_connection_says_so_with_either_transport(transport):
    port = closed_port()
    with pytest.raises(APIConnectionError) as info:
        await call(JSONService(f"http://127.0.0.1:{port}/api", transport=transport))
    err = info.value
    assert type(err) is APIConnectionError and err.retryable
    assert str(err) == f"POST http://127.0.0.1:{port}/api/items: connection refused by " \
                       f"127.0.0.1:{port}"
    assert "Timeout" not in str(err)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_unresolvable_host_says_cannot_resolve(transport, far_host_is_local):
    with pytest.raises(APIConnectionError) as info:
        await call(JSONService("http://nowhere.example.test:8000/api", transport=transport))
    assert type(info.value) is APIConnectionError
    assert "cannot resolve nowhere.example.test (Name or service not known)" in str(info.value)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_an_untrusted_certificate_is_named_and_not_retried(transport, tmp_path):
    async with tls_server(tmp_path) as (server, _cert):
        port = server.port
        service = OpenAIService(api_key=KEY, base_url=f"https://127.0.0.1:{port}/v1",
                                transport=transport)
        async with service:
            job = service.chat(model="gpt-4o-mini", prompt="{q}")
            results = await run([{"q": "a"}, {"q": "b"}], job, attempts=4)
    for record in results:
        assert type(record.error) is TLSCertificateError, record.error
        assert record.attempts == 1  # one attempt: the same certificate would come back
    message = str(results[0].error)
    assert f"the TLS certificate of 127.0.0.1:{port} is not trusted" in message
    assert "self-signed certificate" in message and "SSL_CERT_FILE" in message
    assert "verify" not in message.lower().replace("verification", "")  # no verify=False hint
    assert KEY not in message
    assert server.lines == []  # no request ever got through the handshake


async def test_the_tls_server_answers_a_client_that_trusts_its_certificate(tmp_path):
    # The failure above is the certificate's, not a broken server's.
    async with tls_server(tmp_path) as (server, cert):
        context = ssl.create_default_context(cafile=cert)
        async with httpx.AsyncClient(verify=context) as client:
            response = await client.get(f"https://127.0.0.1:{server.port}/v1/x")
    assert response.json() == {"via": "tls"}


def test_classify_names_connect_failures_the_same_for_both_wrappings():
    import aiohttp

    url = "https://llm.example.test/v1/chat/completions"
    refused = ConnectionRefusedError(111, "Connect call failed")
    unknown = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    bad_cert = ssl.SSLCertVerificationError(1, "certificate verify failed")
    bad_cert.verify_message = "certificate has expired"
    key = type("Key", (), {"host": "llm.example.test", "port": 443, "ssl": True})()

    def chained(outer, cause):
        outer.__cause__ = cause
        return outer

    cases = [
        (chained(httpx.ConnectError("All connection attempts failed"),
                 chained(OSError("All connection attempts failed"), refused)),
         chained(httpx.ConnectTimeout("x"), aiohttp.ClientConnectorError(key, refused)),
         APIConnectionError, "connection refused by llm.example.test:443"),
        (chained(httpx.ConnectError("x"), unknown),
         chained(httpx.ConnectTimeout("x"), aiohttp.ClientConnectorDNSError(key, unknown)),
         APIConnectionError, "cannot resolve llm.example.test (Name or service not known)"),
        (chained(httpx.ConnectError("x"), bad_cert),
         chained(httpx.ConnectTimeout("x"),
                 aiohttp.ClientConnectorCertificateError(key, bad_cert)),
         TLSCertificateError, "llm.example.test:443 is not trusted (certificate has expired)"),
    ]
    for from_httpx, from_aiohttp, cls, words in cases:
        first = classify_exception(from_httpx, method="POST", url=url)
        second = classify_exception(from_aiohttp, method="POST", url=url)
        assert type(first) is type(second) is cls
        assert str(first) == str(second)
        assert words in str(first)
    assert not TLSCertificateError.retryable and APIConnectionError.retryable


# -- proxies from the environment (issue 19.8 c) -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://api.example.test/v1", "http://proxy.test:3128"),
        ("https://api.example.test/v1", "http://secure-proxy.test:3128"),
        ("https://api.example.test:8443/v1", "http://secure-proxy.test:3128"),
        ("http://127.0.0.1:8000/v1", None),  # this machine: never proxied
        ("http://localhost:8000/v1", None),
        ("http://[::1]:8000/v1", None),
        ("http://internal.corp/v1", None),  # NO_PROXY domain
        ("http://llm.internal.corp/v1", None),  # and its subdomains
        ("http://notinternal.corp/v1", "http://proxy.test:3128"),  # not a subdomain
        ("http://10.1.2.3/v1", None),  # NO_PROXY network
        ("http://10.1.2.3.example.test/v1", "http://proxy.test:3128"),
        ("http://gpu.example.test:9000/v1", None),  # NO_PROXY host:port
        ("http://gpu.example.test:9001/v1", "http://proxy.test:3128"),
    ],
)
def test_proxy_rules_decide_like_httpx_with_this_machine_direct(url, expected):
    rules = ProxyRules({"http": "proxy.test:3128", "https": "http://secure-proxy.test:3128",
                        "no": " internal.corp, 10.0.0.0/8 ,gpu.example.test:9000"})
    assert rules.proxy_for(url) == expected


def test_proxy_rules_all_proxy_and_star():
    assert ProxyRules({"all": "http://p.test:1"}).proxy_for("https://a.test/") == "http://p.test:1"
    assert ProxyRules({"all": "http://p.test:1", "no": "*"}).proxy_for("https://a.test/") is None
    assert not ProxyRules({"no": "example.test"})  # nothing to route through
    rules = ProxyRules({"https": "http://user:pa55word-x@p.test:1"})
    assert "pa55word-x" not in repr(rules)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_requests_go_through_the_proxy_unless_no_proxy_or_this_machine(
        transport, monkeypatch, far_host_is_local):
    async with Recorder("proxy") as proxy, Recorder("origin") as origin:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        far = f"http://{FAR_HOST}:{origin.port}/api"

        response = await call(JSONService(far, transport=transport))
        assert response.body == {"via": "proxy"}
        assert proxy.lines == [f"POST {far}/items HTTP/1.1"] and origin.lines == []

        monkeypatch.setenv("NO_PROXY", "localhost,example.test")
        response = await call(JSONService(far, transport=transport))
        assert response.body == {"via": "origin"}
        assert len(proxy.lines) == 1 and origin.lines == ["POST /api/items HTTP/1.1"]

        monkeypatch.delenv("NO_PROXY")  # this machine goes direct without being named
        response = await call(JSONService(f"http://127.0.0.1:{origin.port}/api",
                                          transport=transport))
        assert response.body == {"via": "origin"}
        assert len(proxy.lines) == 1 and len(origin.lines) == 2


def test_make_transport_routes_only_when_a_proxy_is_set(monkeypatch):
    limits = httpx.Limits(max_connections=4)
    for transport in TRANSPORTS:
        assert not isinstance(make_transport(transport, limits=limits), ProxyRouter)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    for transport in TRANSPORTS:
        assert isinstance(make_transport(transport, limits=limits), ProxyRouter)


def test_a_proxy_aiohttp_cannot_use_is_refused_when_the_service_is_made(monkeypatch):
    monkeypatch.setenv("ALL_PROXY", "socks5://user:s3cret-pw@127.0.0.1:1080")
    with pytest.raises(ConfigError) as info:
        JSONService("https://api.example.test/v1", transport="aiohttp")
    assert "transport='httpx'" in str(info.value) and "s3cret-pw" not in str(info.value)


# -- the key: never in cleartext unannounced, never swapped for Basic auth (issue 19.8 a, b) -----


def test_a_key_over_http_to_another_host_warns_once_naming_the_host():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        OpenAIService(api_key=KEY, base_url=f"http://{FAR_HOST}:8000/v1")
    found = [w for w in seen if issubclass(w.category, InsecureConnectionWarning)]
    assert len(found) == 1
    assert FAR_HOST in str(found[0].message) and "https://" in str(found[0].message)
    assert KEY not in str(found[0].message) and KEY[-4:] not in str(found[0].message)
    assert found[0].filename == __file__  # points at the line that made the service


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1",
                                      "http://[::1]:8000/v1", f"https://{FAR_HOST}/v1"])
def test_no_warning_for_this_machine_or_https(base_url):
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureConnectionWarning)
        OpenAIService(api_key=KEY, base_url=base_url)
        OpenAIService(api_key=None, base_url=f"http://{FAR_HOST}/v1")  # no key, nothing to leak


@pytest.mark.parametrize("where", ["argument", "environment"])
def test_a_base_url_with_user_and_password_is_refused_without_echoing_them(where, monkeypatch):
    url = f"https://alice:hunter2-0123@{FAR_HOST}/v1"
    with pytest.raises(ConfigError) as info:
        if where == "argument":
            OpenAIService(api_key=KEY, base_url=url)
        else:
            monkeypatch.setenv("OPENAI_BASE_URL", url)
            OpenAIService(api_key=KEY)
    message = str(info.value)
    assert "hunter2-0123" not in message and KEY not in message
    assert "Basic auth" in message and "api_key=" in message and FAR_HOST in message


def _cli(tmp_path, *args):
    with open(tmp_path / "in.csv", "w", newline="") as f:
        csv.writer(f).writerows([["text"], ["hello"]])
    env = dict(os.environ, OPENAI_API_KEY=KEY)
    env.pop("OPENAI_BASE_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "run", str(tmp_path / "in.csv"), "-o",
         str(tmp_path / "out.csv"), "--template", "{text}", "--dry-run", *args],
        env=env, capture_output=True, text=True, timeout=60)


def test_the_cli_shows_the_cleartext_warning_and_refuses_credentials(tmp_path):
    # --dry-run sends nothing: the far host is never contacted.
    shown = _cli(tmp_path, "--base-url", f"http://{FAR_HOST}/v1")
    assert shown.returncode == 0, shown.stderr
    assert "InsecureConnectionWarning" in shown.stderr and FAR_HOST in shown.stderr
    assert KEY not in shown.stderr + shown.stdout

    refused = _cli(tmp_path, "--base-url", f"https://bob:pw-4567890@{FAR_HOST}/v1")
    assert refused.returncode == 2
    assert "Basic auth" in refused.stderr and "pw-4567890" not in refused.stderr


def test_is_loopback_does_not_look_names_up():
    assert is_loopback("127.0.0.2") and is_loopback("api.localhost")
    assert not is_loopback(FAR_HOST) and not is_loopback(None) and not is_loopback("")
