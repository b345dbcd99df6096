"""Pretrained models by name: NAME -> a local `options.json` + `weights.hdf5`.

NAME is one of
- a published id (`PUBLISHED`: small, medium, original, original-5.5b, pubmed, portuguese), fetched
  from `$ELMO_JAX_MODELS_URL` (default: AllenNLP's bucket, format.md section 7);
- a URL: a directory holding `options.json` + `weights.hdf5` (`https://host/elmo/`), bilm-tf's
  `..._options.json` (the weights are the `..._weights.hdf5` beside it), or the two file URLs
  joined by a comma;
- `hf://owner/repo[@revision]`: a Hugging Face Hub repository holding `options.json` +
  `weights.hdf5` (URL, endpoint `$HF_ENDPOINT` and token through `huggingface_hub`);
- a local directory holding `options.json` + `weights.hdf5` (write `./small` for a directory
  named like a published id).

Downloads go to `runtime.cache_dir('models', <readable name>)` as `options.json` and `weights.hdf5`,
with `manifest.json` recording each file's URL, size and sha256 at its first download. A download
streams to `<file>.part` (progress bar on stderr), resumes with an HTTP Range request after a
dropped connection (or in a later run), restarts when the server ignores the range, and is
renamed into place only when complete; a per-model lock file keeps concurrent processes from
downloading the same files at once. A cached model is used with no network call; its sizes are
checked on every load, and the sha256 too on request (`verify=True`, `ELMO_JAX_VERIFY_SHA256=1`).
A truncated or altered file is downloaded again, or, offline (`ELMO_JAX_OFFLINE=1`), is one error
naming it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.client
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Iterator, Optional

import filelock
from huggingface_hub import hf_hub_url
from huggingface_hub.utils import build_hf_headers
from tqdm import tqdm

from .errors import ElmoError
from .io_utils import atomic_write_text
from .options import ModelOptions
from .runtime import cache_dir

#: Where AllenNLP publishes the ELMo weights (format.md section 7); `$ELMO_JAX_MODELS_URL` replaces it.
PUBLISHED_BASE_URL = "https://s3-us-west-2.amazonaws.com/allennlp/models/elmo/"
OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "weights.hdf5"
MANIFEST_FILE = "manifest.json"
#: Attempts per file; each one after the first resumes from the bytes already received.
DOWNLOAD_ATTEMPTS = 5
TIMEOUT_S = 60.0
CHUNK = 1 << 20
_TRUE = ("1", "true", "yes", "on")
NOT_DOWNLOADED = "not downloaded"


@dataclasses.dataclass(frozen=True)
class PublishedModel:
    """One of the models AllenNLP publishes (paths relative to the base URL)."""

    id: str
    options_path: str
    weights_path: str
    shape: str  # LSTM layers x cell size, projection, char-CNN filters, highway layers
    params: Optional[float]  # millions of parameters (None: not published)

    @property
    def approx_bytes(self) -> Optional[int]:
        """Size of the weight file: 4 bytes (float32) per parameter."""
        return None if self.params is None else int(self.params * 4e6)


def _published(id_: str, directory: str, stem: str, shape: str, params: Optional[float],
               weights: Optional[str] = None) -> PublishedModel:
    return PublishedModel(id_, f"{directory}/{stem}_options.json",
                          f"{directory}/{weights or stem + '_weights.hdf5'}", shape, params)


_ORIGINAL_SHAPE = "2 x 4096 LSTM, 512 proj, 2048 CNN, 2 highway"
PUBLISHED: dict[str, PublishedModel] = {m.id: m for m in (
    _published("small", "2x1024_128_2048cnn_1xhighway", "elmo_2x1024_128_2048cnn_1xhighway",
               "2 x 1024 LSTM, 128 proj, 2048 CNN, 1 highway", 13.6),
    _published("medium", "2x2048_256_2048cnn_1xhighway", "elmo_2x2048_256_2048cnn_1xhighway",
               "2 x 2048 LSTM, 256 proj, 2048 CNN, 1 highway", 28.0),
    _published("original", "2x4096_512_2048cnn_2xhighway", "elmo_2x4096_512_2048cnn_2xhighway",
               _ORIGINAL_SHAPE, 93.6),
    _published("original-5.5b", "2x4096_512_2048cnn_2xhighway_5.5B", "elmo_2x4096_512_2048cnn_2xhighway_5.5B",
               _ORIGINAL_SHAPE + " (5.5B tokens)", 93.6),
    _published("pubmed", "contributed/pubmed", "elmo_2x4096_512_2048cnn_2xhighway", _ORIGINAL_SHAPE + " (PubMed)",
               93.6, weights="elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5"),
    _published("portuguese", "contributed/pt", "elmo_pt", "(shown once cached)", None),
)}


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """A resolved model: the two files (in `directory`), and notes on what resolving did."""

    name: str
    directory: str
    options_file: str
    weight_file: str
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class RemoteModel:
    """Where a remote model's files come from: {local file name: URL}, and the request headers."""

    name: str
    cache_name: str  # readable directory name under the models cache
    urls: dict[str, str]
    headers: dict[str, str] = dataclasses.field(default_factory=dict)


# --------------------------------------------------------------------------- settings
def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in _TRUE


def offline_mode() -> bool:
    """`ELMO_JAX_OFFLINE=1`: never touch the network; only cached models load."""
    return _env_flag("ELMO_JAX_OFFLINE")


def models_dir() -> str:
    return cache_dir("models")


def models_base_url() -> str:
    base = os.environ.get("ELMO_JAX_MODELS_URL") or PUBLISHED_BASE_URL
    return base if base.endswith("/") else base + "/"


# --------------------------------------------------------------------------- names
def is_url(name: str) -> bool:
    return name.split("://", 1)[0].lower() in ("http", "https") and "://" in name


def _readable(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "model"


def _url_cache_name(urls: list[str]) -> str:
    """Host and the last path parts, plus a short hash of the URLs (two URLs never share it)."""
    parsed = urllib.parse.urlsplit(urls[0])
    parts = [p for p in parsed.path.split("/") if p][-2:]
    digest = hashlib.sha256("\n".join(urls).encode()).hexdigest()[:10]
    return _readable("_".join([parsed.hostname or "url", *parts]))[:80] + "-" + digest


def _url_model(name: str) -> RemoteModel:
    urls = [u.strip() for u in name.split(",")]
    if len(urls) == 2:
        by_kind = {(OPTIONS_FILE if u.lower().endswith(".json") else WEIGHTS_FILE): u for u in urls}
        if len(by_kind) != 2 or not all(map(is_url, urls)):
            raise ElmoError(f"model '{name}': two URLs must be an options .json and a weights .hdf5")
        return RemoteModel(name, _url_cache_name(urls), by_kind)
    if len(urls) != 1:
        raise ElmoError(f"model '{name}': expected one URL (a directory) or two (options, weights)")
    url = urls[0]
    path = urllib.parse.urlsplit(url).path
    if path.endswith("options.json"):  # bilm-tf naming: x_options.json beside x_weights.hdf5
        pair = {OPTIONS_FILE: url, WEIGHTS_FILE: url[: len(url) - len("options.json")] + "weights.hdf5"}
    elif path.endswith(".hdf5") and path.endswith("weights.hdf5"):
        pair = {OPTIONS_FILE: url[: len(url) - len("weights.hdf5")] + "options.json", WEIGHTS_FILE: url}
    else:
        base = url if url.endswith("/") else url + "/"
        pair = {OPTIONS_FILE: base + OPTIONS_FILE, WEIGHTS_FILE: base + WEIGHTS_FILE}
    return RemoteModel(name, _url_cache_name([url]), pair)


def _hf_model(name: str) -> RemoteModel:
    spec = name[len("hf://"):].strip("/")
    repo, _, revision = spec.partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise ElmoError(f"model '{name}': expected hf://owner/repo or hf://owner/repo@revision")
    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, so a changed environment applies
    urls = {f: hf_hub_url(repo, f, revision=revision or None, endpoint=endpoint)
            for f in (OPTIONS_FILE, WEIGHTS_FILE)}
    cache_name = "hf_" + _readable(repo.replace("/", "_")) + (f"@{_readable(revision)}" if revision else "")
    return RemoteModel(name, cache_name, urls, headers=dict(build_hf_headers()))


def remote_model(name: str) -> Optional[RemoteModel]:
    """The download source of `name`, or None when it is a local directory. A name that is none of
    the accepted forms is an `ElmoError` listing them."""
    if name in PUBLISHED:
        model, base = PUBLISHED[name], models_base_url()
        return RemoteModel(name, name, {OPTIONS_FILE: base + model.options_path,
                                        WEIGHTS_FILE: base + model.weights_path})
    if name.startswith("hf://"):
        return _hf_model(name)
    if is_url(name):
        return _url_model(name)
    if os.path.isdir(name):
        return None
    if os.path.exists(name):
        raise ElmoError("a model is a directory (options.json + weights.hdf5), a published id, a URL or "
                        "hf://owner/repo; this is a file", name)
    raise ElmoError(f"unknown model '{name}': not a published id ({', '.join(PUBLISHED)}), a URL, "
                    "hf://owner/repo, or an existing directory")


# --------------------------------------------------------------------------- manifest + checks
def _read_manifest(directory: str) -> dict:
    path = os.path.join(directory, MANIFEST_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            manifest = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # unreadable: the files are checked again and re-downloaded
        return {}
    return manifest if isinstance(manifest, dict) and isinstance(manifest.get("files"), dict) else {}


def _hash_file(digest, path: str):
    """`digest` updated with the bytes of `path` (read in chunks); returns it."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest


def sha256_file(path: str) -> str:
    return _hash_file(hashlib.sha256(), path).hexdigest()


def cache_problem(directory: str, file_name: str, manifest: dict, verify: bool) -> Optional[str]:
    """Why the cached `file_name` cannot be used as is (None: it can): absent, not recorded in the
    manifest, a size differing from the recorded one, or (`verify`) a different sha256."""
    path = os.path.join(directory, file_name)
    entry = manifest.get("files", {}).get(file_name)
    if not os.path.isfile(path):
        return NOT_DOWNLOADED
    if not isinstance(entry, dict) or not isinstance(entry.get("size"), int):
        return "not recorded in the cache manifest (an unfinished download?)"
    size = os.path.getsize(path)
    if size != entry["size"]:
        return f"is {size} bytes, {entry['size']} were downloaded (truncated or altered)"
    if verify and sha256_file(path) != entry.get("sha256"):
        return "has a sha256 differing from the one recorded at its download (altered)"
    return None


# --------------------------------------------------------------------------- download
def _content_range_start(value: Optional[str]) -> Optional[int]:
    match = re.match(r"\s*bytes\s+(\d+)-", value or "")
    return int(match.group(1)) if match else None


class _RedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follow redirects, without sending a Hub token on to another host (the Hub redirects
    downloads to a CDN with signed URLs, which reject a second credential)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc:
            new.remove_header("Authorization")
        return new


_OPENER = urllib.request.build_opener(_RedirectHandler)


def download(url: str, dest: str, *, headers: Optional[dict] = None, progress: bool = True,
             attempts: int = DOWNLOAD_ATTEMPTS) -> tuple[int, str]:
    """Download `url` to `dest` through `dest + '.part'` (renamed when complete): (size, sha256).

    A transfer that stops early (dropped connection, fewer bytes than Content-Length) is resumed
    with `Range: bytes=<received>-` up to `attempts` times, so is a `.part` left by an earlier
    run; a server that answers a range with the whole file (200) restarts it. An HTTP error, an
    unreachable server, or a transfer still incomplete after the attempts is an `ElmoError`
    naming the URL."""
    part = dest + ".part"
    problem = "no attempt made"
    for _ in range(max(1, attempts)):
        offset = os.path.getsize(part) if os.path.exists(part) else 0
        request = urllib.request.Request(url, headers={"User-Agent": "elmo-jax", **(headers or {})})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = _OPENER.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and offset:  # the range is past the end: the .part is not a prefix
                os.remove(part)
                problem = "the server refused to resume (HTTP 416)"
                continue
            raise ElmoError(f"download failed: HTTP {e.code} {e.reason}", url)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", None) or e
            raise ElmoError(f"cannot download ({reason}); is the network reachable? (a cached model "
                            "needs none: ELMO_JAX_OFFLINE=1)", url)
        with response:
            resumed = response.status == 206 and _content_range_start(response.headers.get("Content-Range")) == offset
            if offset and not resumed:
                offset = 0  # the server sent the whole file: start again
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            digest = _hash_file(hashlib.sha256(), part) if offset else hashlib.sha256()  # the resumed prefix
            received, dropped = offset, None
            with open(part, "ab" if offset else "wb") as fh, tqdm(
                    total=total, initial=offset, unit="B", unit_scale=True,
                    desc=os.path.basename(dest), file=sys.stderr, disable=not progress, leave=False) as bar:
                while True:
                    try:
                        block = response.read(CHUNK)
                    except (http.client.HTTPException, OSError) as e:  # dropped mid-file
                        dropped = e
                        break
                    if not block:
                        break
                    fh.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if dropped is not None:  # resume on the next attempt
            problem = f"the connection dropped after {received} of {total or '?'} bytes ({type(dropped).__name__})"
            continue
        if total is not None and received != total:
            problem = f"the server sent {received} of the {total} bytes it announced"
            if received > total:
                os.remove(part)
            continue
        os.replace(part, dest)
        return received, digest.hexdigest()
    raise ElmoError(f"download incomplete after {attempts} attempts: {problem}", url)


@contextlib.contextmanager
def _model_lock(directory: str) -> Iterator[None]:
    """Hold `<directory>.lock`; say so on stderr when another process holds it (downloading)."""
    lock = filelock.FileLock(directory + ".lock")
    try:
        lock.acquire(timeout=0.1)
    except filelock.Timeout:
        print(f"elmo-jax: waiting for another process downloading into {directory}", file=sys.stderr)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _write_manifest(directory: str, manifest: dict) -> None:
    atomic_write_text(os.path.join(directory, MANIFEST_FILE), json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def _fetch(remote: RemoteModel, directory: str, verify: bool, progress: bool) -> list[str]:
    """Download the files of `remote` that are not usable in `directory` (under the lock)."""
    notes: list[str] = []
    os.makedirs(directory, exist_ok=True)
    with _model_lock(directory):
        manifest = _read_manifest(directory)  # again: another process may have finished meanwhile
        manifest.setdefault("files", {})
        manifest["source"] = remote.name
        for file_name, url in remote.urls.items():
            problem = cache_problem(directory, file_name, manifest, verify)
            if problem is None:
                continue
            path = os.path.join(directory, file_name)
            if problem != NOT_DOWNLOADED:
                notes.append(f"{path} {problem}: downloaded it again")
            old = manifest["files"].get(file_name) or {}
            size, sha = download(url, path, headers=remote.headers, progress=progress)
            if old.get("url") == url and old.get("sha256") not in (None, sha):
                os.remove(path)
                raise ElmoError(f"downloaded again, its sha256 {sha[:12]}... differs from {old['sha256'][:12]}... "
                                f"recorded at its first download from {url} (the server's file changed; "
                                "delete the directory to accept it)", path)
            manifest["files"][file_name] = {"url": url, "size": size, "sha256": sha}
            _write_manifest(directory, manifest)
            if file_name == OPTIONS_FILE:  # a bad options file fails now, before the weights' download
                ModelOptions.from_json(path)
    return notes


# --------------------------------------------------------------------------- resolve
def resolve_model(name: os.PathLike | str, *, verify: Optional[bool] = None, offline: Optional[bool] = None,
                  progress: bool = True) -> ModelFiles:
    """NAME -> local files, downloading what the cache lacks (see the module docstring).

    `verify` (default `$ELMO_JAX_VERIFY_SHA256`) also checks the cached files' sha256; `offline`
    (default `$ELMO_JAX_OFFLINE`) forbids any network access. Errors are one `ElmoError` naming
    the model, file or URL."""
    name = os.fspath(name)
    verify = _env_flag("ELMO_JAX_VERIFY_SHA256") if verify is None else verify
    offline = offline_mode() if offline is None else offline
    remote = remote_model(name)
    if remote is None:
        options_file, weight_file = (os.path.join(name, f) for f in (OPTIONS_FILE, WEIGHTS_FILE))
        missing = [f for f in (options_file, weight_file) if not os.path.isfile(f)]
        if missing:
            raise ElmoError(f"model directory has no {' or '.join(os.path.basename(f) for f in missing)}", name)
        return ModelFiles(name, name, options_file, weight_file)
    directory = models_dir_for(remote)
    manifest = _read_manifest(directory)
    problems = {f: cache_problem(directory, f, manifest, verify) for f in remote.urls}
    notes: list[str] = []
    bad = {f: p for f, p in problems.items() if p is not None}
    if bad:
        if offline:
            file_name, problem = next(iter(bad.items()))
            if problem == NOT_DOWNLOADED:
                raise ElmoError(f"model '{name}' is not in the cache, and offline mode (ELMO_JAX_OFFLINE) "
                                "forbids downloading it", directory)
            raise ElmoError(f"model '{name}': cached file {problem}, and offline mode (ELMO_JAX_OFFLINE) "
                            "forbids downloading it again", os.path.join(directory, file_name))
        notes = _fetch(remote, directory, verify, progress)
    return ModelFiles(name, directory, os.path.join(directory, OPTIONS_FILE),
                      os.path.join(directory, WEIGHTS_FILE), tuple(notes))


def models_dir_for(remote: RemoteModel) -> str:
    return os.path.join(models_dir(), remote.cache_name)


# --------------------------------------------------------------------------- listing
def cache_status(directory: str) -> str:
    """'yes' (both files usable, sizes checked), 'damaged' (a file fails the size check: it will be
    downloaded again), 'partial' (one file, or an unfinished download) or 'no'."""
    manifest = _read_manifest(directory)
    problems = [cache_problem(directory, f, manifest, verify=False) for f in (OPTIONS_FILE, WEIGHTS_FILE)]
    if all(p is None for p in problems):
        return "yes"
    if any(p not in (None, NOT_DOWNLOADED) for p in problems):
        return "damaged"
    started = None in problems or any(os.path.exists(os.path.join(directory, f + ".part"))
                                      for f in (OPTIONS_FILE, WEIGHTS_FILE))
    return "partial" if started else "no"


def describe_shape(options: ModelOptions) -> str:
    """'2 x 4096 LSTM, 512 proj, 2048 CNN, 2 highway', as the published ids are described."""
    return (f"{options.n_layers} x {options.lstm_dim} LSTM, {options.projection_dim} proj, "
            f"{options.n_filters} CNN, {options.n_highway} highway")


def _cached_shape(directory: str, status: str) -> str:
    if status != "yes":
        return ""
    try:
        return describe_shape(ModelOptions.from_json(os.path.join(directory, OPTIONS_FILE)))
    except ElmoError:
        return "(unreadable options.json)"


def list_models() -> list[dict]:
    """The published ids and any other cached model: id, shape, size, cached, directory.
    Reads only the local cache (no network)."""
    rows = []
    for model in PUBLISHED.values():
        directory = os.path.join(models_dir(), model.id)
        weights = os.path.join(directory, WEIGHTS_FILE)
        status = cache_status(directory)
        size = os.path.getsize(weights) if status == "yes" else model.approx_bytes
        shape = model.shape if model.params is not None else _cached_shape(directory, status) or model.shape
        rows.append({"id": model.id, "shape": shape, "params_m": model.params, "bytes": size,
                     "size_exact": status == "yes", "cached": status, "directory": directory})
    root = models_dir()
    others = sorted(d for d in (os.listdir(root) if os.path.isdir(root) else ())
                    if d not in PUBLISHED and os.path.isdir(os.path.join(root, d)))
    for entry in others:
        directory = os.path.join(root, entry)
        source = _read_manifest(directory).get("source", entry)
        status = cache_status(directory)
        weights = os.path.join(directory, WEIGHTS_FILE)
        rows.append({"id": source, "shape": _cached_shape(directory, status), "params_m": None,
                     "bytes": os.path.getsize(weights) if os.path.isfile(weights) else None,
                     "size_exact": True, "cached": status, "directory": directory})
    return rows


def format_size(n: Optional[int], exact: bool = True) -> str:
    """Bytes in decimal units (as the published sizes are quoted: 374 MB); '~' when estimated."""
    if n is None:
        return "?"
    text = f"{n} B" if n < 1000 else next(f"{n / 10 ** k:.1f} {unit}" for k, unit in
                                          ((9, "GB"), (6, "MB"), (3, "kB")) if n >= 10 ** k)
    return text if exact else "~" + text
