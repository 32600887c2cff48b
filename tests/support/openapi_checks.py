"""schemathesis checks for cartd, loaded by `st run` through SCHEMATHESIS_HOOKS (see
tests/integration/test_openapi_conformance.py). They replace two built-in checks with
cartd's own reading of its description:

- `not_a_server_error`: a 500 is documented for a cart in error (HEAD and GET of its
  uid); any other 5xx is a bug.
- `positive_data_acceptance`: an allowed request must not be refused, except an order
  (or a download name) that breaks a rule JSON Schema cannot state and that the
  description states in words (byte lengths, ids that leave the archive's folder once
  percent-decoded, two files at one path, a file where another needs a folder): that
  one must get a 400 naming the rule.
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote, unquote, urlsplit

import requests
import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response

#: Answers that refuse a request as malformed.
REFUSALS = {400, 405, 413, 422}


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part not in ("", ".")]


def _leaves_folder_once_decoded(file_id: str) -> bool:
    for _ in range(len(file_id)):
        if file_id.startswith("/") or ".." in re.split(r"[/\\]", file_id):
            return True
        decoded = unquote(file_id)
        if decoded == file_id:
            return False
        file_id = decoded
    return False


def breaks_a_described_rule(body: object) -> str | None:
    """Which rule in words only (not in JSON Schema) an order breaks, if any: first the
    rules of single entries, then those between entries, as cartd checks them."""
    if not isinstance(body, dict) or not isinstance(body.get("fileids"), list):
        return None
    entries = [entry for entry in body["fileids"] if isinstance(entry, dict)]
    paths = [entry.get("path") for entry in entries]
    for entry, path in zip(entries, paths, strict=True):
        file_id = entry.get("id")
        if isinstance(file_id, float):  # JSON Schema's integer takes `16.0`; cartd does not
            return "must be a string or an integer"
        if isinstance(file_id, str) and _leaves_folder_once_decoded(file_id):
            return "would leave the archive's folder"
        if isinstance(path, str) and (
            len(path.encode("utf-8", "surrogatepass")) > 3072
            or any(len(part.encode("utf-8", "surrogatepass")) > 255 for part in _segments(path))
        ):
            return "bytes of UTF-8"
    seen: set[str] = set()
    for path in paths:
        normalized = "/".join(_segments(path)) if isinstance(path, str) else None
        if normalized in seen:
            return "is also the path of"
        if normalized is not None:
            seen.add(normalized)
    for path in seen:
        parts = path.split("/")
        if any("/".join(parts[:depth]) in seen for depth in range(1, len(parts))):
            return "is a folder of"
    return None


def name_breaks_a_described_rule(case: Case) -> bool:
    name = (case.query or {}).get("filename")
    return isinstance(name, str) and len(name.encode("utf-8", "surrogatepass")) > 255


@schemathesis.check
def only_a_failed_cart_is_a_500(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A 500 only for a cart in error (HEAD and GET of its uid); any other 5xx is a bug."""
    if response.status_code < 500:
        return None
    assert response.status_code == 500, f"{response.status_code} {response.text[:300]}"
    uid = str((case.path_parameters or {}).get("uid", ""))
    url = urlsplit(response.request.url)  # not split on the uid: `1` is in `127.0.0.1`
    cart = f"{url.scheme}://{url.netloc}/{quote(uid, safe='')}"
    status = requests.head(cart, timeout=10).headers.get("X-Pacifica-Status")
    where = f"{case.method} {case.formatted_path}: {response.text[:300]}"
    assert case.method in ("GET", "HEAD"), f"500 from {where}"
    assert status == "error", f"500 for a cart that is not in error: {where}"
    return True


@schemathesis.check
def allowed_requests_are_taken(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """What the description allows is not refused; what it allows by JSON Schema but
    forbids in words is refused with a 400 that names the rule."""
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return None
    rule = breaks_a_described_rule(case.body) if case.method == "POST" else None
    if rule is not None:
        assert response.status_code == 400, (rule, response.status_code, response.text[:300])
        message = json.loads(response.text)["message"]
        assert rule in message, (rule, message)
        return True
    if name_breaks_a_described_rule(case):
        assert response.status_code in (400, 404), response.text[:300]
        return True
    assert response.status_code not in REFUSALS, (
        f"an allowed request was refused: {response.status_code} {response.text[:300]}"
    )
    return True
