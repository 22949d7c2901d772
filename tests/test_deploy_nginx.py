"""The web tier (deploy/nginx, deploy/web, deploy/certbot) for real, on 127.0.0.1.

deploy/web/entrypoint.sh renders the nginx templates and runs nginx, as it does in the web
container, but on free ports with every path in a temporary folder: it serves webapp/ over TLS
and proxies api.<domain> to a gunicorn started from this checkout with the bundled model. curl
talks to it with --resolve (the three names to 127.0.0.1). Then certbot, driven by
deploy/certbot/certbot.sh, gets a certificate from pebble (Let's Encrypt's test ACME server,
pebble-challtestsrv answering its DNS queries with 127.0.0.1) through that nginx's port-80
stand-in, its deploy hook makes nginx switch to it, and curl verifies it with pebble's root.
"""

import getpass
import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, require_playwright, require_tool, stop_process, wait_for

pytestmark = pytest.mark.network

DOMAIN = "covfefe.example"
NAMES = (DOMAIN, f"www.{DOMAIN}", f"api.{DOMAIN}")
PRODUCTION_DOMAIN = "covfefe.example.org"
ENTRYPOINT = ROOT / "deploy" / "web" / "entrypoint.sh"
CERTBOT_SH = ROOT / "deploy" / "certbot" / "certbot.sh"
SECRET_PREFIX = "Sleepy Joe says"  # what a user typed: it must never reach a log


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Web:
    """A running nginx started by deploy/web/entrypoint.sh."""

    http_port: int
    https_port: int
    folder: Path
    webroot: Path
    certs_dir: Path
    log: Path
    access_log: Path
    error_log: Path
    process: subprocess.Popen | None = None

    def resolve_args(self) -> list[str]:
        args = []
        for name in NAMES:
            for port in (self.http_port, self.https_port):
                args += ["--resolve", f"{name}:{port}:127.0.0.1"]
        return args

    def https(self, name: str, path: str = "/") -> str:
        return f"https://{name}:{self.https_port}{path}"

    def http(self, name: str, path: str = "/") -> str:
        return f"http://{name}:{self.http_port}{path}"


def start_web(folder: Path, api_upstream: str, *, https_port: int | None = None,
              reload_seconds: int = 1) -> Web:
    """Run the web container's entrypoint as a plain process on free ports of 127.0.0.1."""
    require_tool("nginx")
    require_tool("openssl")
    require_tool("envsubst")
    folder.mkdir(parents=True, exist_ok=True)
    web = Web(http_port=free_port(), https_port=https_port or free_port(), folder=folder,
              webroot=folder / "acme", certs_dir=folder / "letsencrypt", log=folder / "web.log",
              access_log=folder / "access.log", error_log=folder / "error.log")
    web.webroot.mkdir()
    web.certs_dir.mkdir()
    env = {
        "PATH": os.environ["PATH"], "DOMAIN": DOMAIN,
        "COVFEFE_API_BASE": f"https://api.{DOMAIN}:{web.https_port}",
        "API_UPSTREAM": api_upstream, "NGINX_LISTEN_ADDRESS": "127.0.0.1",
        "NGINX_HTTP_PORT": str(web.http_port), "NGINX_HTTPS_PORT": str(web.https_port),
        "NGINX_PUBLIC_HTTPS_PORT": str(web.https_port), "CERTS_DIR": str(web.certs_dir),
        "ACME_WEBROOT": str(web.webroot), "WEBAPP_ROOT": str(ROOT / "webapp"),
        "NGINX_CONF_DIR": str(folder / "conf"), "NGINX_STATE_DIR": str(folder / "state"),
        "NGINX_ACCESS_LOG": str(web.access_log), "NGINX_ERROR_LOG": str(web.error_log),
        # The upstream is an address: the resolver is never asked.
        "NGINX_RESOLVER": "127.0.0.1", "NGINX_USER": getpass.getuser(),
        "WEB_RELOAD_CHECK_SECONDS": str(reload_seconds),
    }
    with web.log.open("w") as output:
        web.process = subprocess.Popen(["bash", str(ENTRYPOINT), "run"], env=env, stdout=output,
                                       stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: listening(web.https_port) and listening(web.http_port), "nginx listening",
             web.process, web.log)
    return web


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: str


def curl(web: Web, url: str, *args: str, cacert: Path | None = None,
         check: bool = True) -> Response | subprocess.CompletedProcess:
    """One request with curl (no redirects followed); the three names resolve to 127.0.0.1."""
    command = ["curl", "-sS", "-i", "--max-time", "30", *web.resolve_args()]
    if cacert is not None:
        command += ["--cacert", str(cacert)]
    result = subprocess.run([*command, *args, url], capture_output=True, timeout=60)
    if not check:
        return result
    assert result.returncode == 0, result.stderr.decode()
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Response(int(status_line.split()[1]), headers, body.decode("utf-8", "replace"))


def placeholder_ca(web: Web) -> Path:
    return web.folder / "state" / "placeholder" / "fullchain.pem"


# (1) the configuration as production renders it ------------------------------------------------

def run_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    require_tool("nginx")
    require_tool("openssl")
    require_tool("envsubst")
    base = {"PATH": os.environ["PATH"], "DOMAIN": PRODUCTION_DOMAIN,
            "NGINX_CONF_DIR": str(tmp_path / "conf"), "NGINX_STATE_DIR": str(tmp_path / "state"),
            "CERTS_DIR": str(tmp_path / "letsencrypt"), "WEBAPP_ROOT": str(ROOT / "webapp"),
            "NGINX_USER": getpass.getuser()}
    return subprocess.run(["bash", str(ENTRYPOINT), "check"], env={**base, **env},
                          capture_output=True, text=True, timeout=60)


def test_production_config_passes_nginx_t(tmp_path):
    # Production's defaults (ports 80/443, upstream serve:8000, Docker's resolver), only the
    # folders moved: nginx -t parses it all and loads the placeholder certificate.
    result = run_check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
    conf = tmp_path / "conf"
    servers = (conf / "servers.conf").read_text()
    # Template variables replaced, nginx's own variables untouched.
    assert "listen 0.0.0.0:80 default_server;" in servers
    assert "listen 0.0.0.0:443 ssl;" in servers
    assert "return 301 https://$host$request_uri;" in servers
    assert f"return 301 https://www.{PRODUCTION_DOMAIN}$request_uri;" in servers
    assert f"server_name api.{PRODUCTION_DOMAIN};" in servers
    assert "set $covfefe_api http://serve:8000;" in (conf / "proxy-api.conf").read_text()
    assert "resolver 127.0.0.11 " in (conf / "nginx.conf").read_text()
    assert (f"connect-src 'self' https://api.{PRODUCTION_DOMAIN};"
            in (conf / "headers-page.conf").read_text())
    assert (f'apiBase: "https://api.{PRODUCTION_DOMAIN}"'
            in (conf / "config.js").read_text())
    for rendered in conf.glob("*.conf"):
        code = [line for line in rendered.read_text().splitlines()
                if not line.lstrip().startswith("#")]
        assert not [line for line in code if "${" in line], rendered


def test_entrypoint_refuses_bad_settings(tmp_path):
    result = run_check(tmp_path / "a", DOMAIN="Not A Domain")
    assert result.returncode == 1
    assert "DOMAIN must be a lower-case domain name" in result.stderr
    result = run_check(tmp_path / "b", COVFEFE_API_BASE='https://api.x.org"; alert(1)')
    assert result.returncode == 1 and "COVFEFE_API_BASE must be an origin" in result.stderr
    # A template variable missing from the entrypoint's list is caught, not left to nginx.
    templates = tmp_path / "templates"
    templates.mkdir()
    for template in (ROOT / "deploy" / "nginx").glob("*.template"):
        (templates / template.name).write_text(template.read_text())
    with (templates / "servers.conf.template").open("a") as extra:
        extra.write("# ${NOT_LISTED} in a comment is fine\nserver { server_name ${NOT_LISTED}; }\n")
    result = run_check(tmp_path / "c", NGINX_TEMPLATE_DIR=str(templates))
    assert result.returncode == 1 and "left unreplaced" in result.stderr
    assert "${NOT_LISTED};" in result.stderr


# (2) nginx in front of gunicorn ------------------------------------------------------------------

@pytest.fixture(scope="module")
def https_port():
    return free_port()


@pytest.fixture(scope="module")
def api(tmp_path_factory, https_port):
    """gunicorn from this checkout with the bundled model, as `covfefe serve` runs it."""
    port = free_port()
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    env = {**os.environ, "COVFEFE_BIND": f"127.0.0.1:{port}", "COVFEFE_WORKERS": "1",
           "COVFEFE_PROXIES": "1",
           "COVFEFE_CORS_ORIGINS": f"https://www.{DOMAIN}:{https_port}"}
    env.pop("COVFEFE_MODEL", None)  # the bundled model
    gunicorn = Path(sys.executable).parent / "gunicorn"
    with log.open("w") as output:
        process = subprocess.Popen(
            [str(gunicorn), "-c", "python:serve.gunicorn_conf", "serve:create_app()"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: listening(port), "gunicorn listening", process, log, timeout=60)
        yield f"127.0.0.1:{port}", log
    finally:
        stop_process(process)


@pytest.fixture(scope="module")
def web(tmp_path_factory, api, https_port):
    require_tool("curl")
    upstream, _ = api
    web = start_web(tmp_path_factory.mktemp("web"), upstream, https_port=https_port)
    try:
        yield web
    finally:
        stop_process(web.process, group=True)


def test_page_over_tls_with_security_headers(web):
    ca = placeholder_ca(web)
    page = curl(web, web.https(f"www.{DOMAIN}"), cacert=ca)
    assert page.status == 200 and "<title>covfefe-flow" in page.body
    headers = page.headers
    assert headers["server"] == "nginx"  # no version
    assert headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    csp = headers["content-security-policy"]
    assert f"connect-src 'self' https://api.{DOMAIN}:{web.https_port};" in csp
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-cache"
    assert headers["content-type"] == "text/html; charset=utf-8"

    config = curl(web, web.https(f"www.{DOMAIN}", "/config.js"), cacert=ca)
    assert f'apiBase: "https://api.{DOMAIN}:{web.https_port}"' in config.body
    assert config.headers["cache-control"] == "no-cache"
    assert "frame-ancestors 'none'" in config.headers["content-security-policy"]
    # The checkout's webapp/config.js is untouched: the entrypoint writes its own copy.
    assert 'apiBase: ""' in (ROOT / "webapp" / "config.js").read_text()

    css = curl(web, web.https(f"www.{DOMAIN}", "/css/app.css"), "--compressed", cacert=ca)
    assert css.status == 200 and css.headers["content-encoding"] == "gzip"
    assert css.headers["cache-control"] == "public, max-age=86400, must-revalidate"
    assert css.headers["strict-transport-security"]  # repeated where Cache-Control is set
    again = curl(web, web.https(f"www.{DOMAIN}", "/css/app.css"), "-H",
                 f"If-None-Match: {css.headers['etag']}", cacert=ca)
    assert again.status == 304  # revalidation costs no body
    script = curl(web, web.https(f"www.{DOMAIN}", "/js/main.js"), cacert=ca)
    assert script.headers["content-type"].startswith("application/javascript")
    assert script.headers["cache-control"].startswith("public, max-age=")

    missing = curl(web, web.https(f"www.{DOMAIN}", "/nothing-here"), cacert=ca)
    assert missing.status == 404 and "nginx/" not in missing.body


def test_api_generates_a_tweet_through_nginx(web, api):
    _, api_log = api
    origin = f"https://www.{DOMAIN}:{web.https_port}"
    response = curl(web, web.https(f"api.{DOMAIN}", "/api/generate"),
                    "-H", "Content-Type: application/json", "-H", f"Origin: {origin}",
                    "-H", "X-Forwarded-For: 203.0.113.7",
                    "--data", json.dumps({"prefix": "Make America ", "n": 2, "seed": 7}),
                    cacert=placeholder_ca(web))
    assert response.status == 200, response.body
    body = json.loads(response.body)
    assert body["model"]["name"]
    assert [c["text"][:13] for c in body["completions"]] == ["Make America "] * 2
    assert all(len(c["text"]) > 13 for c in body["completions"])
    assert response.headers["access-control-allow-origin"] == origin  # gunicorn's CORS
    assert response.headers["strict-transport-security"]
    assert response.headers["content-security-policy"] == (
        "default-src 'none'; frame-ancestors 'none'")
    assert response.headers["server"] == "nginx"
    # The API saw the connection's address, not the one the client wrote (COVFEFE_PROXIES=1).
    lines = [json.loads(line) for line in api_log.read_text().splitlines()
             if line.startswith("{") and '"/api/generate"' in line]
    assert lines and lines[-1]["client"] == "127.0.0.1"


def read_stream(web: Web, url: str, cacert: Path) -> list[tuple[float, bytes]]:
    """GET url with curl -N; each piece of the body as it arrived, with its arrival time."""
    command = ["curl", "-sS", "-N", "--max-time", "60", *web.resolve_args(), "--cacert",
               str(cacert), url]
    pieces = []
    with subprocess.Popen(command, stdout=subprocess.PIPE) as process:
        while piece := os.read(process.stdout.fileno(), 65536):
            pieces.append((time.monotonic(), piece))
    assert process.returncode == 0
    return pieces


def test_stream_passes_through_and_is_not_logged(web):
    query = f"prefix={SECRET_PREFIX.replace(' ', '%20')}&n=2&seed=11"
    pieces = read_stream(web, web.https(f"api.{DOMAIN}", f"/api/generate/stream?{query}"),
                         placeholder_ca(web))
    text = b"".join(piece for _, piece in pieces).decode()
    assert text.startswith(f'event: prefix\ndata: {{"prefix": "{SECRET_PREFIX}"')
    assert "\nevent: done\n" in text

    wait_for(lambda: "/api/generate/stream" in web.access_log.read_text(), "access log line")
    access = web.access_log.read_text()
    assert f'api.{DOMAIN} "GET /api/generate/stream HTTP/1.1" 200' in access
    assert "Sleepy" not in access and "prefix=" not in access and "?" not in access
    assert "Sleepy" not in web.error_log.read_text()


class SlowEvents(http.server.BaseHTTPRequestHandler):
    """Server-sent events a quarter of a second apart, without X-Accel-Buffering (which the
    real API sends, and which would hide a buffering nginx)."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        for number in range(5):
            self.wfile.write(f"data: {number}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.25)

    def log_message(self, format, *args):
        pass


def test_stream_is_not_buffered(tmp_path):
    # The generator is too quick to tell a buffering proxy from a streaming one: a slow
    # stand-in of the API's stream route sits behind nginx instead.
    require_tool("curl")
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowEvents) as upstream:
        thread = threading.Thread(target=upstream.serve_forever)
        thread.start()
        web = start_web(tmp_path, f"127.0.0.1:{upstream.server_address[1]}")
        try:
            pieces = read_stream(web, web.https(f"api.{DOMAIN}", "/api/generate/stream"),
                                 placeholder_ca(web))
        finally:
            stop_process(web.process, group=True)
            upstream.shutdown()
            thread.join()
    assert b"".join(piece for _, piece in pieces) == b"".join(
        f"data: {number}\n\n".encode() for number in range(5))
    # Buffered, the five events would come together at the end.
    assert len(pieces) >= 3 and pieces[-1][0] - pieces[0][0] >= 0.5, pieces


def test_http_redirects_and_acme_challenges(web):
    for name in NAMES:
        response = curl(web, web.http(name, "/some/page?x=1"))
        assert response.status == 301
        assert response.headers["location"] == web.https(name, "/some/page?x=1")
    apex = curl(web, web.https(DOMAIN, "/a?b=c"), cacert=placeholder_ca(web))
    assert apex.status == 301 and apex.headers["location"] == web.https(f"www.{DOMAIN}", "/a?b=c")
    assert apex.headers["strict-transport-security"]

    challenge = web.webroot / ".well-known" / "acme-challenge"
    challenge.mkdir(parents=True)
    (challenge / "token-123").write_text("token-123.thumbprint")
    for name in NAMES:
        response = curl(web, web.http(name, "/.well-known/acme-challenge/token-123"))
        assert response.status == 200 and response.body == "token-123.thumbprint"
    # Another name on port 80 gets no answer at all; the health check does.
    other = subprocess.run(["curl", "-sS", f"http://127.0.0.1:{web.http_port}/"],
                           capture_output=True, timeout=30)
    assert other.returncode == 52  # empty reply (nginx's 444)
    health = curl(web, f"http://127.0.0.1:{web.http_port}/healthz")
    assert health.status == 200 and health.body == "ok\n"


def s_client(web: Web, *args: str, name: str = f"www.{DOMAIN}") -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{web.https_port}",
                           "-servername", name, *args], input=b"", capture_output=True,
                          timeout=30)


def test_tls_1_2_and_1_3_only(web):
    assert s_client(web, "-tls1_3").returncode == 0
    assert s_client(web, "-tls1_2").returncode == 0
    # The client offers TLS 1.1 (security level 0 lets OpenSSL 3 do it): the server refuses.
    refused = s_client(web, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    assert refused.returncode != 0
    assert b"alert protocol version" in refused.stderr  # the server's refusal
    # A name that is not ours gets no certificate at all.
    assert s_client(web, "-tls1_3", name="elsewhere.example").returncode != 0


def test_the_page_works_under_its_policy_in_a_browser(web):
    # Chromium loads the page from www over TLS and calls api.<domain> across origins (CORS from
    # gunicorn, connect-src from nginx): a tweet is written and the policy blocks nothing.
    chromium = require_tool("chromium")
    sync_api = require_playwright()
    expect, sync_playwright = sync_api.expect, sync_api.sync_playwright
    rules = f"MAP {DOMAIN} 127.0.0.1, MAP *.{DOMAIN} 127.0.0.1"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            f"--host-resolver-rules={rules}"])
        try:
            context = browser.new_context(ignore_https_errors=True)  # the placeholder
            page = context.new_page()
            problems = []
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: problems.append(message.text)
                    if message.type == "error" else None)
            page.goto(web.https(f"www.{DOMAIN}"))
            page.evaluate("""() => { window.violations = [];
                document.addEventListener('securitypolicyviolation',
                    (event) => window.violations.push(event.violatedDirective)); }""")
            page.fill("#prefix", "Make America ")
            page.click("#generate")
            # (Locators, not wait_for_function: that evaluates strings, which the policy forbids.)
            page.locator("article.tweet").first.wait_for(timeout=30000)
            expect(page.locator("article.tweet[aria-busy]")).to_have_count(0, timeout=30000)
            first = page.locator("article.tweet .text").first.inner_text()
            assert first.startswith("Make America ") and len(first) > 13
            assert page.locator("#model-name").inner_text() != "loading…"  # /api/model too
            assert page.evaluate("window.violations") == []
            assert problems == []
            context.close()
        finally:
            browser.close()


# (3) certbot against pebble, behind the real nginx ------------------------------------------------

def openssl(*args: str) -> str:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def make_listener_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """A test CA and, signed by it, the certificate of pebble's own https listener."""
    folder.mkdir()
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    cert, key, csr = folder / "cert.pem", folder / "key.pem", folder / "cert.csr"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *ec, "-days", "2", "-subj", "/CN=covfefe test CA",
            "-keyout", str(ca_key), "-out", str(ca))
    openssl("req", *ec, "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(csr))
    extensions = folder / "ext.cnf"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                          "basicConstraints=critical,CA:FALSE\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
            "-CAcreateserial", "-days", "2", "-extfile", str(extensions), "-out", str(cert))
    return ca, cert, key


@dataclass
class Pebble:
    directory: str
    ca: Path  # the CA of pebble's own https listener (ACME API and management)
    management: str
    log: Path


@pytest.fixture
def acme_web(tmp_path):
    """The web entrypoint with an empty certificates volume (no API behind it)."""
    require_tool("curl")
    web = start_web(tmp_path / "web", f"127.0.0.1:{free_port()}")
    try:
        yield web
    finally:
        stop_process(web.process, group=True)


@pytest.fixture
def pebble(tmp_path, acme_web):
    """pebble validating HTTP-01 on acme_web's port-80 stand-in; challtestsrv is its DNS."""
    require_tool("pebble")
    require_tool("pebble-challtestsrv")
    ca, cert, key = make_listener_certificate(tmp_path / "pebble-tls")
    dns_port, acme_port, management_port = free_port(), free_port(), free_port()
    config = tmp_path / "pebble.json"
    config.write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme_port}",
        "managementListenAddress": f"127.0.0.1:{management_port}",
        "certificate": str(cert), "privateKey": str(key),
        "httpPort": acme_web.http_port, "tlsPort": free_port(),
        "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    log = tmp_path / "pebble.log"
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}
    processes = []
    with log.open("w") as output:
        # Every name resolves to 127.0.0.1 (A only); its own challenge servers stay off.
        processes.append(subprocess.Popen(
            ["pebble-challtestsrv", "-management", f"127.0.0.1:{free_port()}",
             "-dns01", f"127.0.0.1:{dns_port}", "-http01", "", "-https01", "",
             "-tlsalpn01", "", "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdout=output, stderr=subprocess.STDOUT))
        processes.append(subprocess.Popen(
            ["pebble", "-config", str(config), "-dnsserver", f"127.0.0.1:{dns_port}"],
            env=env, stdout=output, stderr=subprocess.STDOUT))
    try:
        for process in processes:
            wait_for(lambda: listening(acme_port), "pebble listening", process, log)
        yield Pebble(f"https://127.0.0.1:{acme_port}/dir", ca,
                     f"https://127.0.0.1:{management_port}", log)
    finally:
        for process in processes:
            stop_process(process)


def run_certbot(acme_web: Web, pebble: Pebble, tmp_path: Path, *args: str) -> str:
    env = {"PATH": os.environ["PATH"], "DOMAIN": DOMAIN, "EMAIL": "ops@covfefe.example",
           "ACME_SERVER": pebble.directory, "ACME_WEBROOT": str(acme_web.webroot),
           "CERTBOT_CONFIG_DIR": str(acme_web.certs_dir),
           "CERTBOT_WORK_DIR": str(tmp_path / "certbot-work"),
           "CERTBOT_LOGS_DIR": str(tmp_path / "certbot-logs"),
           # certbot trusts pebble's https listener through this CA (requests reads it).
           "REQUESTS_CA_BUNDLE": str(pebble.ca)}
    result = subprocess.run(["sh", str(CERTBOT_SH), *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, (f"{result.stdout}\n{result.stderr}\n--- pebble:\n"
                                    f"{pebble.log.read_text()}")
    return result.stdout + result.stderr


def served_serial(web: Web, name: str) -> str:
    """The serial number of the certificate nginx shows for name."""
    result = s_client(web, "-tls1_3", name=name)
    assert result.returncode == 0, result.stderr.decode()
    shown = subprocess.run(["openssl", "x509", "-noout", "-serial"], input=result.stdout,
                           capture_output=True, timeout=30)
    return shown.stdout.decode().strip()


def test_certbot_gets_pebble_certificate_and_nginx_serves_it(acme_web, pebble, tmp_path):
    require_tool("certbot")
    web = acme_web
    # pebble's issuing root, from its management interface: what curl verifies with.
    root = tmp_path / "pebble-root.pem"
    fetched = subprocess.run(["curl", "-sSf", "--cacert", str(pebble.ca), "-o", str(root),
                              f"{pebble.management}/roots/0"], capture_output=True, timeout=30)
    assert fetched.returncode == 0, fetched.stderr.decode()

    def verifies(name: str) -> bool:
        result = curl(web, web.https(name), cacert=root, check=False)
        return result.returncode == 0

    def serves(serial: str) -> bool:
        """Every name shows the certificate `serial`, and curl verifies it with pebble's root."""
        return all(served_serial(web, name) == serial and verifies(name) for name in NAMES)

    assert not verifies(f"www.{DOMAIN}")  # the placeholder, until certbot has run

    output = run_certbot(web, pebble, tmp_path, "obtain")
    assert "deploy-hook.sh: certificate for" in output  # the hook ran on issuance
    live = web.certs_dir / "live" / DOMAIN
    names = openssl("x509", "-in", str(live / "cert.pem"), "-noout", "-ext", "subjectAltName")
    assert sorted(part.strip().removeprefix("DNS:") for part in names.splitlines()[1].split(",")
                  ) == sorted(NAMES)
    flag = web.certs_dir / "web" / "reload"
    assert flag.exists() and (web.certs_dir / "web" / "privkey.pem").stat().st_mode & 0o077 == 0
    issued = openssl("x509", "-in", str(live / "cert.pem"), "-noout", "-serial").strip()

    # The entrypoint sees the hook's flag and reloads nginx with the new certificate.
    # Polled: for a moment after a reload, old workers still take some connections with the
    # old certificate.
    wait_for(lambda: serves(issued), "nginx serving the issued certificate", log=web.log,
             timeout=15)
    assert "nginx reloaded" in web.log.read_text()

    # A renewal runs the stored deploy hook again; nginx then serves the renewed certificate.
    before = flag.stat().st_mtime_ns
    output = run_certbot(web, pebble, tmp_path, "renew", "--force-renewal",
                         "--no-random-sleep-on-renew")
    assert "deploy-hook.sh: certificate for" in output
    assert flag.stat().st_mtime_ns > before
    renewed = openssl("x509", "-in", str(live / "cert.pem"), "-noout", "-serial").strip()
    assert renewed != issued
    wait_for(lambda: serves(renewed), "nginx serving the renewed certificate", log=web.log,
             timeout=15)
