"""A runnable curl command for one OpenAPI operation, with example values.

Path variables become shell variables (`{delivery_id}` -> `$DELIVERY_ID`), credentials come
from `$TOKEN`, and body values written `$NAME` are spliced into the single-quoted JSON as shell
variables, so the command runs as written once those variables are set.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

from gateway.examples import Examples

JSON = dict[str, Any]

GATEWAY_URL = "http://127.0.0.1:8080"
AUTH_HEADER = '-H "authorization: Bearer $TOKEN"'
_SHELL_VAR = re.compile(r"\$[A-Z][A-Z0-9_]*")
_ONE_LINE_BODY = 80  # longer bodies are printed indented, over several lines


def path_variable(name: str) -> str:
    return "$" + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def command(examples: Examples, verb: str, path: str, operation: JSON) -> str:
    """The curl command line (continued over lines with `\\`)."""
    url = GATEWAY_URL + re.sub(r"\{([^}]+)\}", lambda m: path_variable(m.group(1)), path)
    query = []
    for parameter in operation.get("parameters", []):
        if parameter["in"] != "query":
            continue
        value = examples.parameter(parameter["name"], parameter["schema"])
        values = value if isinstance(value, list) else [] if value is None else [value]
        query += [f"{parameter['name']}={_query_value(item)}" for item in values]
    if query:
        url += "?" + "&".join(query)
    parts = ["curl -s"]
    body = operation.get("requestBody")
    # curl sends GET, or POST once given -d; any other method is named.
    if verb != "get" and (body is None or verb != "post"):
        parts[0] += f" -X {verb.upper()}"
    parts[0] += f' "{url}"'
    security = operation.get("security")
    # Public routes need none; where a credential is optional, the example goes without.
    if security != [] and {} not in (security or []):
        parts.append(AUTH_HEADER)
    if body is not None:
        payload = examples.body(body["content"]["application/json"]["schema"])
        parts.append("-H 'content-type: application/json'")
        parts.append("-d " + _single_quoted_json(payload))
    return " \\\n  ".join(parts)


def _query_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return quote(str(value), safe="$")


def _single_quoted_json(payload: JSON) -> str:
    text = json.dumps(payload, ensure_ascii=False)
    if len(text) > _ONE_LINE_BODY:
        text = json.dumps(payload, ensure_ascii=False, indent=2)
    text = text.replace("'", "'\\''")
    # Close the quote around each shell variable so that the shell expands it.
    return "'" + _SHELL_VAR.sub(lambda m: f"'\"{m.group(0)}\"'", text) + "'"
