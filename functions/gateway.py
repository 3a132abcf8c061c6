"""The local gateway: the four real functions-framework apps on one port, plus the API docs.

    python -m functions.gateway [--port 8080] [--host 127.0.0.1]
                                [--tls-cert CERT --tls-key KEY | --self-signed]

New routes `/auth`, `/predict`, `/gradcam`, `/history` (werkzeug's DispatcherMiddleware; a bare
prefix such as `POST /predict` is served in place, not redirected, since clients do not repeat a
POST after a redirect), the original system's `/token`, `/user/me`, `/x-ray`, `/grad_cam`,
`/user/results` and `/` (the `legacy` function: the original's answers), and `/openapi.yaml`,
`/openapi.json`, `/docs` (`/redoc` leads there), and the web app at `/app/`
(functions/webapp.py; a browser asking for `/` with `Accept: text/html` is sent there, API
clients keep the original's answer). Served by gunicorn's threaded
worker (keep-alive connections, one process, `--threads` concurrent requests), or by werkzeug's
threaded server with `--server werkzeug`. The settings are checked before serving: a bad or
missing SECRET_KEY outside ENVIRONMENT=local stops the start.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import functions_framework
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from common.settings import SettingsError, load_environment
from functions.docs import DocsApp
from functions.runtime import Runtime, install_runtime
from functions.settings import FunctionSettings
from functions.webapp import APP_PREFIX, WebApp, wants_html

__all__ = ["FUNCTIONS", "LEGACY_FUNCTION", "LEGACY_ROUTES", "build_gateway", "main"]

MAIN_SOURCE = str(Path(__file__).with_name("main.py"))
FUNCTIONS = ("auth", "predict", "gradcam", "history")
# The original system's API, served by its own function at the original paths.
LEGACY_FUNCTION = "legacy"
LEGACY_ROUTES = ("/", "/token", "/user/me", "/x-ray", "/grad_cam", "/user/results")

WsgiApp = Callable[[dict[str, Any], Any], Iterable[bytes]]


class _Gateway:
    def __init__(self, apps: dict[str, WsgiApp], legacy: WsgiApp, fallback: WsgiApp) -> None:
        self._apps = apps
        self._legacy = legacy
        self._webapp = WebApp()
        self._dispatcher = DispatcherMiddleware(
            fallback, {f"/{name}": app for name, app in apps.items()}
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path == APP_PREFIX or path.startswith(APP_PREFIX + "/"):
            return self._webapp(environ, start_response)
        if path == "/" and environ.get("REQUEST_METHOD") == "GET" and wants_html(environ):
            start_response(
                "302 Found",
                [("Location", APP_PREFIX + "/"), ("Content-Length", "0"), ("Vary", "Accept")],
            )
            return [b""]
        if path in LEGACY_ROUTES:
            return self._legacy(environ, start_response)
        if path.lstrip("/") in self._apps:
            # `/predict` -> the function's `/`, in place (no redirect to `/predict/`).
            environ["PATH_INFO"] = path + "/"
        return self._dispatcher(environ, start_response)


def build_gateway(source: str = MAIN_SOURCE) -> WsgiApp:
    """One WSGI app serving every function (each a real `create_app`) and the docs."""
    apps = {name: functions_framework.create_app(name, source) for name in FUNCTIONS}
    legacy = functions_framework.create_app(LEGACY_FUNCTION, source)
    return _Gateway(apps, legacy, DocsApp())


def _self_signed(folder: Path) -> tuple[str, str]:
    """A certificate for localhost and 127.0.0.1, valid for 30 days (local use only)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "gateway.crt", folder / "gateway.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return str(cert_path), str(key_path)


def _serve_gunicorn(
    app: WsgiApp, host: str, port: int, threads: int, tls: tuple[str, str] | None
) -> None:
    from gunicorn.app.base import BaseApplication

    options: dict[str, Any] = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        "keepalive": 5,
        "timeout": 120,
        "accesslog": None,  # the functions write their own JSON access lines
        "errorlog": "-",
        "loglevel": "warning",
    }
    if tls is not None:
        options["certfile"], options["keyfile"] = tls

    class _Application(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WsgiApp:
            return app

    _Application().run()


def _serve_werkzeug(app: WsgiApp, host: str, port: int, tls: tuple[str, str] | None) -> None:
    from werkzeug.serving import run_simple

    run_simple(host, port, app, threaded=True, ssl_context=tls, use_reloader=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xray-gateway",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=None, help="default: API_PORT, or 8080")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--server", choices=("gunicorn", "werkzeug"), default="gunicorn")
    tls = parser.add_mutually_exclusive_group()
    tls.add_argument("--tls-cert", help="serve HTTPS with this certificate (with --tls-key)")
    tls.add_argument(
        "--self-signed",
        action="store_true",
        help="serve HTTPS with a certificate made now (local use only)",
    )
    parser.add_argument("--tls-key")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The arguments first: `--help` answers whatever the settings hold.
    arguments = _parser().parse_args(argv)
    environ = load_environment()
    try:
        settings = FunctionSettings.from_env(environ)
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if arguments.port is None:
        arguments.port = settings.api_port
    if bool(arguments.tls_cert) != bool(arguments.tls_key):
        print("error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    tls: tuple[str, str] | None = None
    if arguments.tls_cert:
        tls = (arguments.tls_cert, arguments.tls_key)
    elif arguments.self_signed:
        tls = _self_signed(Path(tempfile.mkdtemp(prefix="xray-gateway-tls-")))
    # One runtime for the process (and its threads), from the settings just checked.
    install_runtime(Runtime(settings))
    app = build_gateway()
    scheme = "https" if tls else "http"
    print(
        f"gateway on {scheme}://{arguments.host}:{arguments.port} (docs at /docs)", file=sys.stderr
    )
    if arguments.server == "werkzeug":
        _serve_werkzeug(app, arguments.host, arguments.port, tls)
    else:
        _serve_gunicorn(app, arguments.host, arguments.port, arguments.threads, tls)
    return 0


if __name__ == "__main__":
    sys.exit(main())
