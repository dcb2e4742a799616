"""The one place that talks to Kaggle: credentials, download, submit, scores.

Everything else takes a `client` argument: the real authenticated `kaggle.KaggleApi` from `make_client()`, or in
tests a fake with the same three methods (the package cannot be pointed at a test server):

    competition_download_files(competition, path, force=False, quiet=True)   writes <path>/<competition>.zip
    competition_submit(file_name, message, competition, quiet=False)       -> object with .ref and .message
    competition_submissions(competition)                                    -> objects with .ref, .status, scores
    competitions_list(search=..., category="all")             -> .competitions: objects with .ref, .evaluation_metric

The kaggle package prints help and calls exit(1) when it finds no credentials (even on import), and its errors are
raw HTTP exceptions. Here every failure becomes one PaddyError paragraph, and no message ever carries a secret.
"""

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from paddy.archive import check_zip
from paddy.errors import PaddyError
from paddy.kaggle import cache as kaggle_cache

HOW_TO_AUTHENTICATE = (
    "Create an API token on https://www.kaggle.com/settings (section API) and give it to paddy in one of these "
    "ways: export KAGGLE_API_TOKEN=<token>; or export KAGGLE_USERNAME=<user> and KAGGLE_KEY=<key>; or save the "
    "kaggle.json the site gives you as ~/.kaggle/kaggle.json (or in $KAGGLE_CONFIG_DIR) with `chmod 600` so only "
    "you can read it. Never put the key in params.yaml, dvc.yaml or a committed file."
)


def rules_url(slug):
    return f"https://www.kaggle.com/competitions/{slug}/rules"


# ---------------------------------------------------------------------------------------------------------------
# Credentials: found without importing kaggle (the import itself prints help and tries to authenticate).


def config_dir():
    """Where the kaggle package looks for kaggle.json (same rules as kaggle 2.x)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _read_kaggle_json():
    path = config_dir() / "kaggle.json"
    if not path.is_file():
        return path, {}
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        # Not the exception text: a half-valid JSON error message could quote the key.
        raise PaddyError(
            f"{path} is not a readable JSON file ({type(e).__name__}). It should hold "
            '{"username": "...", "key": "..."}, as downloaded from your Kaggle account page.'
        ) from None
    return path, values if isinstance(values, dict) else {}


def _token_files():
    home = Path.home() / ".kaggle"
    return [home / "access_token", home / "access_token.txt", home / "credentials.json"]


def credential_source():
    """Say where credentials would come from ('KAGGLE_USERNAME/KAGGLE_KEY', a file path...), or None. Never values."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    path, values = _read_kaggle_json()
    # The package merges kaggle.json with KAGGLE_* variables, the variables winning.
    user = os.environ.get("KAGGLE_USERNAME") or values.get("username")
    key = os.environ.get("KAGGLE_KEY") or values.get("key")
    if user and key:
        if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
            return "KAGGLE_USERNAME/KAGGLE_KEY"
        if os.name != "nt" and path.is_file() and path.stat().st_mode & 0o077:
            print(f"warning: {path} is readable by other users; run `chmod 600 {path}`.", file=sys.stderr)
        return str(path)
    for f in _token_files():
        if f.is_file() and f.stat().st_size > 0:
            return str(f)
    return None


def _secrets():
    """Every credential value we can see, so that messages can be scrubbed of them."""
    values = [os.environ.get(k) for k in ("KAGGLE_KEY", "KAGGLE_API_TOKEN")]
    token = os.environ.get("KAGGLE_API_TOKEN")
    if token and len(token) < 4096 and Path(token).is_file():  # the variable may name a file holding the token
        with contextlib.suppress(OSError):
            values.append(Path(token).read_text().strip())
    with contextlib.suppress(PaddyError):
        values.append(_read_kaggle_json()[1].get("key"))
    for f in _token_files()[:2]:
        with contextlib.suppress(OSError):
            values.append(f.read_text().strip())
    return [v for v in values if isinstance(v, str) and len(v) >= 4]


def redact(text):
    """Text with any credential value replaced by ***: for every message built from an exception."""
    text = str(text)
    for secret in _secrets():
        text = text.replace(secret, "***")
    return text


def no_credentials_error():
    return PaddyError(
        "No Kaggle credentials found, so paddy cannot download the competition or submit to it (data.source=kaggle "
        f"and `paddy submit` need them; data.source=synthetic does not). {HOW_TO_AUTHENTICATE}"
    )


def make_client():
    """The real, authenticated kaggle.KaggleApi. Raises PaddyError when credentials are missing or refused."""
    if credential_source() is None:
        raise no_credentials_error()
    # The package's import authenticates and may print help; keep its chatter (and exit(1)) out of our output.
    chatter = io.StringIO()
    try:
        with contextlib.redirect_stdout(chatter):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            api.authenticate()
    except SystemExit:
        raise PaddyError(
            f"Kaggle did not accept the credentials it found (an expired or revoked token?). {HOW_TO_AUTHENTICATE}"
        ) from None
    except Exception as e:
        raise translate(e, "authenticate with Kaggle", slug=None) from None
    return api


# ---------------------------------------------------------------------------------------------------------------
# Errors: HTTP status and network failures -> one paragraph saying what to do.


def _status(exc):
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_network_error(exc):
    try:
        import requests
    except ImportError:  # pragma: no cover - requests comes with kaggle
        return isinstance(exc, ConnectionError | TimeoutError)
    network = (requests.ConnectionError, requests.Timeout, ConnectionError, TimeoutError)
    return isinstance(exc, network) and _status(exc) is None


def translate(exc, doing, slug):
    """A PaddyError for an exception raised while `doing` something with the kaggle package."""
    if isinstance(exc, PaddyError):
        return exc
    status = _status(exc)
    detail = redact(f"{type(exc).__name__}: {exc}")[:300]
    if status == 401:
        return PaddyError(f"Kaggle refused the credentials while trying to {doing} (HTTP 401). {HOW_TO_AUTHENTICATE}")
    if status == 403 and slug:
        return PaddyError(
            f"Kaggle refused to {doing} (HTTP 403 Forbidden): you have probably not accepted the rules of the "
            f"competition `{slug}` yet. Open {rules_url(slug)}, sign in with the account whose credentials paddy "
            "uses, click 'I Understand and Accept' (or 'Join Competition'), then run the command again. "
            f"Kaggle said: {detail}"
        )
    if status == 403:
        return PaddyError(f"Kaggle refused to {doing} (HTTP 403 Forbidden). Kaggle said: {detail}")
    if status == 404:
        return PaddyError(
            f"Kaggle has no competition `{slug}` (HTTP 404 while trying to {doing}). Check `data.competition` in "
            "params.yaml: it is the slug in the competition's address, e.g. paddy-disease-classification."
        )
    if status == 429:
        return PaddyError(
            f"Kaggle says too many requests while trying to {doing} (HTTP 429): the daily submission limit may be "
            "reached. Wait and try again later."
        )
    if _is_network_error(exc):
        return PaddyError(
            f"Could not reach Kaggle to {doing}: no network connection, or a proxy or firewall blocks "
            "api.kaggle.com. Check that this machine is online, or use data.source=synthetic (or a path to a copy "
            "of the competition folder or zip) to work offline. "
            f"Detail: {detail}"
        )
    if status is not None:
        return PaddyError(f"Kaggle answered HTTP {status} while trying to {doing}. Try again later. Detail: {detail}")
    return PaddyError(f"The kaggle package failed to {doing}: {detail}. Try again; if it persists, update kaggle.")


@contextlib.contextmanager
def _kaggle_errors(doing, slug):
    try:
        yield
    except PaddyError:
        raise
    except SystemExit:
        # The package calls exit(1) on some authentication failures, even from library calls.
        raise PaddyError(f"The kaggle package gave up while trying to {doing}. {HOW_TO_AUTHENTICATE}") from None
    except Exception as e:
        raise translate(e, doing, slug) from None


# ---------------------------------------------------------------------------------------------------------------
# Download


def fetch_zip(slug, client=None, cache_dir=None):
    """Path of the verified competition zip in the per-user cache (paddy.kaggle.cache), downloading it only when
    no copy there still has the size and sha256 recorded when it was verified."""
    zip_path = kaggle_cache.zip_path(slug, cache_dir)
    if kaggle_cache.is_verified(zip_path):
        print(f"paddy: using the verified {zip_path} (delete it to download again)", file=sys.stderr)
        return zip_path
    client = client or make_client()  # before touching the disk: no credentials, nothing created
    with kaggle_cache.lock(zip_path):
        if kaggle_cache.is_verified(zip_path):  # another worker fetched it while this one waited for the lock
            return zip_path
        if zip_path.exists():
            print(f"paddy: {zip_path} does not match its recorded size and sha256; downloading again", file=sys.stderr)
            zip_path.unlink()
        # Download into a scratch folder and rename: an interrupted download never sits at the final name.
        tmp = Path(tempfile.mkdtemp(dir=zip_path.parent, prefix=".download."))
        try:
            with _kaggle_errors(f"download the competition `{slug}`", slug):
                client.competition_download_files(slug, path=str(tmp), force=True, quiet=False)
            got = tmp / f"{slug}.zip"
            if not got.is_file():
                found = ", ".join(p.name for p in tmp.iterdir()) or "nothing"
                raise PaddyError(f"Kaggle's download of `{slug}` gave {found} instead of {got.name}; try again.")
            try:
                check_zip(got)
            except PaddyError as e:
                raise PaddyError(f"The download from Kaggle is broken: {e} Nothing was extracted; run again.") from None
            return kaggle_cache.store(got, zip_path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def evaluation_metric(client, slug):
    """Kaggle's name for how the competition `slug` is scored ("Categorization Accuracy", ...): its record's
    evaluation_metric, looked up by searching for the slug among every competition, closed ones too; None when no
    record's ref is the slug or it names none."""
    with _kaggle_errors(f"look up the competition `{slug}`", slug):
        response = client.competitions_list(search=slug, category="all")
    for record in getattr(response, "competitions", None) or []:
        # ref is the slug, or (newer servers) the competition's address ending in it
        if str(getattr(record, "ref", "")).rstrip("/").rsplit("/", 1)[-1] == slug:
            return getattr(record, "evaluation_metric", None) or None
    return None


# ---------------------------------------------------------------------------------------------------------------
# Submissions


def _score(value):
    """Kaggle gives scores as strings ('' or None when not scored yet)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _status_name(status):
    name = getattr(status, "name", status)  # an enum in kaggle 2.x, a string in older versions and fakes
    return str(name or "pending").lower().replace("submissionstatus.", "")


def submit(client, file_path, message, slug):
    """Send `file_path` to the competition; return Kaggle's submission reference (a string; '' if none given)."""
    with _kaggle_errors(f"submit {file_path} to `{slug}`", slug):
        response = client.competition_submit(str(file_path), message, slug, quiet=True)
    text = redact(getattr(response, "message", "") or "")
    if "could not submit" in text.lower():
        raise PaddyError(f"Kaggle did not take the submission: {text}. Nothing was recorded; try again.")
    ref = getattr(response, "ref", None)
    return str(ref) if ref else ""


def submissions(client, slug):
    """The account's submissions to `slug` as plain dicts: ref, date, description, status, public/private score."""
    with _kaggle_errors(f"list your submissions to `{slug}`", slug):
        items = client.competition_submissions(slug) or []
    return [
        {
            "ref": str(getattr(s, "ref", "") or ""),
            "date": str(getattr(s, "date", "") or ""),
            "description": getattr(s, "description", "") or "",
            "status": _status_name(getattr(s, "status", None)),
            "public_score": _score(getattr(s, "public_score", None)),
            "private_score": _score(getattr(s, "private_score", None)),
        }
        for s in items
        if s is not None
    ]
