"""Renders gateway/envoy.yaml.tmpl into an Envoy config: `python -m gateway.render --out PATH`."""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from gateway import schema
from services.common import ports

TEMPLATE = Path(__file__).with_name("envoy.yaml.tmpl")
TLS_TEMPLATE = Path(__file__).with_name("tls-listener.yaml.tmpl")  # only with a certificate
# The Lua filters' programs and the modules they require (gateway/README.md, "Lua").
LUA_DIR = Path(__file__).with_name("lua")
REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DESCRIPTOR = REPO_ROOT / "gen" / "descriptors" / "catalytic.pb"
DEFAULT_OPENAPI = REPO_ROOT / "docs" / "api" / "openapi.json"  # `make openapi`, committed
DEFAULT_WEB_ASSETS = REPO_ROOT / "node_modules"  # npm packages swagger-ui-dist and redoc
DOCS_PAGES = Path(__file__).with_name("docs")
# placeholder -> the file it serves, under the web assets (node_modules) or DOCS_PAGES.
_ASSETS = {
    "swagger_js": "swagger-ui-dist/swagger-ui-bundle.js",
    "swagger_css": "swagger-ui-dist/swagger-ui.css",
    "redoc_js": "redoc/bundles/redoc.standalone.js",
}
_PAGES = {"swagger_html": "swagger.html", "redoc_html": "redoc.html"}
UPSTREAMS = ports.SERVICES
# The services the transcoder serves over REST (and whose requests request_checks checks).
TRANSCODED_SERVICES = (
    "catalytic.auth.v1.AuthService",
    "catalytic.lattice.v1.LatticeService",
    "catalytic.webhook.v1.WebhookService",
)
MiB = 1024 * 1024


class RenderError(ValueError):
    """A setting cannot be turned into a valid Envoy configuration."""


@dataclass(frozen=True)
class GatewayConfig:
    """Everything the template needs; `from_env` reads the same variables as the services."""

    gateway_port: int = ports.GATEWAY_PORT
    admin_port: int = ports.ENVOY_ADMIN_PORT
    gateway_bind: str = "127.0.0.1"
    auth_addr: str = ports.local_addr("auth")
    lattice_addr: str = ports.local_addr("lattice")
    webhook_addr: str = ports.local_addr("webhook")
    descriptor: Path = DEFAULT_DESCRIPTOR
    access_log: str = "/dev/stdout"
    max_request_bytes: int = 8 * MiB
    max_response_bytes: int = 32 * MiB
    # Larger request headers get 431 from Envoy. Not above what the services' gRPC servers take
    # as metadata (grpc.max_metadata_size, 8 KiB by default), counted their way: see the README.
    max_request_headers_kb: int = 8
    default_timeout_s: int = 15
    long_timeout_s: int = 120  # path finding and transforms on big lattices
    # Slow-client protection: the whole request (headers and body) must arrive within
    # request_timeout_s, its headers within request_headers_timeout_s; else 408.
    request_timeout_s: int = 30
    request_headers_timeout_s: int = 10
    openapi_document: Path = DEFAULT_OPENAPI
    web_assets: Path = DEFAULT_WEB_ASSETS
    # Envoy's limit on direct_response bodies; the documentation bundles are over 1 MB.
    max_direct_response_bytes: int = 4 * MiB
    cors_origins: tuple[str, ...] = ()  # exact origins, e.g. https://app.example.com
    rate_limit_per_s: int = 2000  # the whole gateway's backstop; the services limit per tenant
    max_connections: int = 10000
    tls_cert: Path | None = None  # both set: an HTTPS listener on tls_port as well
    tls_key: Path | None = None
    tls_port: int = 8443

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> GatewayConfig:
        env = os.environ if env is None else env

        def integer(name: str, default: int) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return int(raw)
            except ValueError:
                raise RenderError(f"{name}={raw!r} is not an integer") from None

        addrs = {
            name: env.get(f"{name.upper()}_ADDR")
            or f"127.0.0.1:{integer(f'{name.upper()}_PORT', ports.GRPC_PORTS[name])}"
            for name in UPSTREAMS
        }
        return cls(
            gateway_port=integer("GATEWAY_PORT", ports.GATEWAY_PORT),
            admin_port=integer("ENVOY_ADMIN_PORT", ports.ENVOY_ADMIN_PORT),
            gateway_bind=env.get("GATEWAY_BIND") or "127.0.0.1",
            auth_addr=addrs["auth"],
            lattice_addr=addrs["lattice"],
            webhook_addr=addrs["webhook"],
            descriptor=Path(env.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
            access_log=env.get("GATEWAY_ACCESS_LOG") or "/dev/stdout",
            max_request_bytes=integer("GATEWAY_MAX_REQUEST_BYTES", 8 * MiB),
            request_timeout_s=integer("GATEWAY_REQUEST_TIMEOUT_S", 30),
            request_headers_timeout_s=integer("GATEWAY_REQUEST_HEADERS_TIMEOUT_S", 10),
            openapi_document=Path(env.get("GATEWAY_OPENAPI") or DEFAULT_OPENAPI),
            web_assets=Path(env.get("GATEWAY_WEB_ASSETS") or DEFAULT_WEB_ASSETS),
            cors_origins=parse_origins(env.get("GATEWAY_CORS_ORIGINS", "")),
            rate_limit_per_s=integer("GATEWAY_RATE_LIMIT_PER_S", 2000),
            max_connections=integer("GATEWAY_MAX_CONNECTIONS", 10000),
            tls_cert=Path(env["GATEWAY_TLS_CERT"]) if env.get("GATEWAY_TLS_CERT") else None,
            tls_key=Path(env["GATEWAY_TLS_KEY"]) if env.get("GATEWAY_TLS_KEY") else None,
            tls_port=integer("GATEWAY_TLS_PORT", 8443),
        )


def parse_origins(text: str) -> tuple[str, ...]:
    """GATEWAY_CORS_ORIGINS: comma-separated exact origins; empty means no CORS at all."""
    return tuple(origin.strip() for origin in text.split(",") if origin.strip())


def split_addr(addr: str) -> tuple[str, int, str]:
    """'host:port' -> (host, port, Envoy cluster type): STATIC for IP literals, else STRICT_DNS."""
    host, sep, port_text = addr.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RenderError(f"upstream address {addr!r} is not host:port")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host, int(port_text), "STRICT_DNS"
    return host, int(port_text), "STATIC"


def render(config: GatewayConfig) -> str:
    """The Envoy YAML for `config`; RenderError when a value is invalid."""
    for name, port in (
        ("GATEWAY_PORT", config.gateway_port),
        ("ENVOY_ADMIN_PORT", config.admin_port),
    ):
        if not 0 < port < 65536:
            raise RenderError(f"{name}={port} is outside 1..65535")
    if not 0 < config.request_headers_timeout_s <= config.request_timeout_s <= 3600:
        raise RenderError(
            f"GATEWAY_REQUEST_HEADERS_TIMEOUT_S={config.request_headers_timeout_s} and "
            f"GATEWAY_REQUEST_TIMEOUT_S={config.request_timeout_s}: need 0 < headers <= "
            "request <= 3600 seconds"
        )
    try:
        ipaddress.ip_address(config.gateway_bind)
    except ValueError:
        raise RenderError(f"GATEWAY_BIND={config.gateway_bind!r} is not an IP address") from None
    if not config.descriptor.is_file():
        raise RenderError(
            f"the descriptor set {config.descriptor} does not exist (run `make protos`)"
        )
    try:
        body_schema = schema.build(schema.load(config.descriptor), TRANSCODED_SERVICES)
    except (OSError, DecodeError, schema.SchemaError) as exc:
        raise RenderError(f"descriptor set {config.descriptor}: {exc}") from None
    template = TEMPLATE.read_text()
    values: dict[str, object] = {
        "gateway_bind": config.gateway_bind,
        "gateway_port": config.gateway_port,
        "admin_port": config.admin_port,
        # JSON strings are valid YAML scalars: safe for any path.
        "descriptor": json.dumps(str(config.descriptor)),
        "access_log": json.dumps(config.access_log),
        "max_request_bytes": config.max_request_bytes,
        "max_response_bytes": config.max_response_bytes,
        "max_request_headers_kb": config.max_request_headers_kb,
        "default_timeout": f"{config.default_timeout_s}s",
        "long_timeout": f"{config.long_timeout_s}s",
        "transcoded_services": json.dumps(list(TRANSCODED_SERVICES)),
        "request_checks_lua": _indent_continuation(
            lua_program("request_checks", {"schema": schema.to_lua(body_schema)}),
            template,
            "request_checks_lua",
        ),
        "headers_lua": _indent_continuation(lua_program("headers"), template, "headers_lua"),
        "request_timeout": f"{config.request_timeout_s}s",
        "request_headers_timeout": f"{config.request_headers_timeout_s}s",
    }
    values.update(_documents(config))
    for origin in config.cors_origins:
        if "://" not in origin or origin.endswith("/"):
            raise RenderError(f"GATEWAY_CORS_ORIGINS: {origin!r} is not an origin (scheme://host)")
    values["cors_origins"] = json.dumps([{"exact": origin} for origin in config.cors_origins])
    values["rate_limit_per_s"] = config.rate_limit_per_s
    values["max_connections"] = config.max_connections
    values["hsts"] = "max-age=31536000; includeSubDomains" if config.tls_cert else ""
    values["tls_listener"] = _tls_listener(config)
    for name in UPSTREAMS:
        host, port, cluster_type = split_addr(getattr(config, f"{name}_addr"))
        values[f"{name}_host"] = json.dumps(host)
        values[f"{name}_port"] = port
        values[f"{name}_cluster_type"] = cluster_type
    return string.Template(template).substitute(values)


def _documents(config: GatewayConfig) -> dict[str, object]:
    """The files behind /openapi.json, /docs and /redoc (JSON strings: valid YAML scalars).

    Without the npm packages (`npm install`) /docs and /redoc answer 503 with a JSON body saying
    so, rather than the gateway refusing to start; the OpenAPI document is always required. That
    body is plain text (missing.txt): local_reply_config makes it the `message` of the 503's
    google.rpc.Status."""
    if not config.openapi_document.is_file():
        raise RenderError(f"the OpenAPI document {config.openapi_document} does not exist")
    paths = {name: config.web_assets / rel for name, rel in _ASSETS.items()}
    paths.update({name: DOCS_PAGES / page for name, page in _PAGES.items()})
    available = all(path.is_file() for path in paths.values())
    for path in [config.openapi_document, *paths.values()]:
        if path.is_file() and path.stat().st_size > config.max_direct_response_bytes:
            raise RenderError(f"{path} is larger than {config.max_direct_response_bytes} bytes")
    values: dict[str, object] = {
        name: json.dumps(str(path if available else DOCS_PAGES / "missing.txt"))
        for name, path in paths.items()
    }
    values["openapi_document"] = json.dumps(str(config.openapi_document))
    values["docs_status"] = 200 if available else 503
    values["max_direct_response_bytes"] = config.max_direct_response_bytes
    return values


def _tls_listener(config: GatewayConfig) -> str:
    """The HTTPS listener (tls-listener.yaml.tmpl) when a certificate and key are set, else ""."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise RenderError("GATEWAY_TLS_CERT and GATEWAY_TLS_KEY must be set together")
    if config.tls_cert is None or config.tls_key is None:
        return ""
    for name, path in (("GATEWAY_TLS_CERT", config.tls_cert), ("GATEWAY_TLS_KEY", config.tls_key)):
        if not path.is_file():
            raise RenderError(f"{name}={path} does not exist")
    if not 0 < config.tls_port < 65536 or config.tls_port == config.gateway_port:
        raise RenderError(f"GATEWAY_TLS_PORT={config.tls_port} is not a free port of its own")
    return (
        string.Template(TLS_TEMPLATE.read_text())
        .substitute(
            gateway_bind=config.gateway_bind,
            tls_port=config.tls_port,
            tls_cert=json.dumps(str(config.tls_cert)),
            tls_key=json.dumps(str(config.tls_key)),
        )
        .rstrip("\n")
    )


LUA_REQUIRE = re.compile(r"""\brequire\("([a-z_]+)"\)""")
SCHEMA_COMMENT = """\
-- Generated from the descriptor set by gateway/render.py (gateway/schema.py).
-- routes: {method, Lua pattern of the path, message of the body}, the first
-- match wins; messages: name -> {accepted key = message checked below it, or
-- true when anything is accepted below it}; kinds: name -> {key = its JSON
-- type}; paths: every binding, {method, pattern capturing its variables,
-- {variable names}, whether it reads a body}; enums: name -> {value names}."""


def lua_program(
    entry: str, generated: Mapping[str, str] | None = None, directory: Path = LUA_DIR
) -> str:
    """One self-contained Lua chunk for an Envoy Lua filter: `gateway/lua/<entry>.lua` after the
    modules it requires, each registered in `package.preload` so that its `require("name")`
    finds it without a file.

    Modules are the files `<directory>/<name>.lua`, or in `generated` (name -> a Lua
    expression, the module's value: the request schema). Each appears once, before the modules
    that require it, in the order of first use."""
    generated = dict(generated or {})
    order: list[str] = []
    sources: dict[str, str] = {}

    def source(name: str) -> str:
        if name in generated:
            return "return " + generated[name]
        path = directory / f"{name}.lua"
        if not path.is_file():
            raise RenderError(f"Lua module {name!r} is required but {path} does not exist")
        return path.read_text()

    def visit(name: str, trail: tuple[str, ...]) -> None:
        if name in trail:
            raise RenderError(f"Lua modules require each other: {' -> '.join((*trail, name))}")
        if name in sources:
            return
        text = source(name)
        for needed in LUA_REQUIRE.findall(text):
            visit(needed, (*trail, name))
        sources[name] = text
        order.append(name)

    visit(entry, ())
    parts = []
    for name in order[:-1]:
        comment = SCHEMA_COMMENT + "\n" if name in generated else ""
        body = sources[name].rstrip("\n")
        parts.append(f'{comment}package.preload["{name}"] = function(...)\n{body}\nend\n')
    parts.append(sources[entry].rstrip("\n"))
    return "\n".join(parts)


def _indent_continuation(text: str, template: str, placeholder: str) -> str:
    """`text` with its second and later lines indented like the template line holding the
    placeholder, so that a multi-line value stays inside a YAML block scalar."""
    line = next(line for line in template.splitlines() if f"${{{placeholder}}}" in line)
    indent = line[: len(line) - len(line.lstrip())]
    first, *rest = text.splitlines()
    return "\n".join([first, *(indent + part if part else part for part in rest)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.render",
        description="Render the Envoy gateway config from gateway/envoy.yaml.tmpl and the "
        "environment (GATEWAY_PORT, GATEWAY_BIND, ENVOY_ADMIN_PORT, AUTH_ADDR/AUTH_PORT, "
        "LATTICE_ADDR/LATTICE_PORT, WEBHOOK_ADDR/WEBHOOK_PORT, GATEWAY_DESCRIPTOR, "
        "GATEWAY_ACCESS_LOG, GATEWAY_MAX_REQUEST_BYTES, GATEWAY_OPENAPI, GATEWAY_WEB_ASSETS, "
        "GATEWAY_CORS_ORIGINS, GATEWAY_TLS_CERT, GATEWAY_TLS_KEY, GATEWAY_TLS_PORT, "
        "GATEWAY_RATE_LIMIT_PER_S, GATEWAY_MAX_CONNECTIONS, GATEWAY_REQUEST_TIMEOUT_S, "
        "GATEWAY_REQUEST_HEADERS_TIMEOUT_S).",
    )
    parser.add_argument("--out", type=Path, help="write here instead of standard output")
    args = parser.parse_args(argv)
    try:
        config = GatewayConfig.from_env()
        text = render(config)
    except RenderError as exc:
        print(f"gateway.render: {exc}", file=sys.stderr)
        return 2
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
