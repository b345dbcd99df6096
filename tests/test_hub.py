"""Models by name (`elmo_jax.hub`): downloads from a real HTTP server on 127.0.0.1 that serves the
bilm-tf fixture files under the published paths (format.md section 7), with `ELMO_JAX_MODELS_URL`
pointing at it. The server supports Range requests and can drop a connection mid-file, announce a
wrong Content-Length, ignore ranges, or answer 404; it records every request."""
from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request

import h5py
import numpy as np
import pytest

from elmo_jax import ElmoEmbedder, ElmoError, load_model
from elmo_jax.cli import main
from elmo_jax.hub import list_models, resolve_model
from elmo_jax.tasks.config import TaskConfig
from elmo_jax.tasks.features import resolve_bilm_files
from elmo_jax.weights import read_hdf5_arrays

# The published layout, written from format.md section 7 (not from elmo_jax.hub's table).
SMALL = "2x1024_128_2048cnn_1xhighway/elmo_2x1024_128_2048cnn_1xhighway"
PUBMED_OPTIONS = "contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_options.json"
PUBMED_WEIGHTS = "contributed/pubmed/elmo_2x4096_512_2048cnn_2xhighway_weights_PubMed_only.hdf5"
BASE = "/models/elmo/"
SENTENCES = [["The", "cat", "sat", "."], ["Hello", "!"]]


class ServerState:
    """What the fake server serves and how it misbehaves; `requests` logs (path, Range header)."""

    def __init__(self, files: dict[str, bytes]):
        self.files = dict(files)
        self.requests: list[tuple[str, str | None]] = []
        self.drop_once: set[str] = set()  # send half of the body, then close the connection
        self.extra_length: dict[str, int] = {}  # announce this many bytes more than sent
        self.ignore_range = False
        self.delay = 0.0  # seconds before each body is sent
        self.redirects: dict[str, str] = {}  # path -> URL answered with a 302
        self.auth: list[tuple[str, str | None]] = []  # (path, Authorization header)
        self.lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: closing ends the body

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        path = self.path.split("?")[0]
        range_header = self.headers.get("Range")
        with state.lock:
            state.requests.append((path, range_header))
            state.auth.append((path, self.headers.get("Authorization")))
            drop = path in state.drop_once
            state.drop_once.discard(path)
        if path in state.redirects:
            self.send_response(302)
            self.send_header("Location", state.redirects[path])
            self.end_headers()
            return
        data = state.files.get(path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if match and not state.ignore_range:
            start = int(match.group(1))
            if start >= len(data):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body) + state.extra_length.get(path, 0)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        time.sleep(state.delay)
        self.wfile.write(body[: len(body) // 2] if drop else body)
        self.wfile.flush()


class Server:
    def __init__(self, files: dict[str, bytes]):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.state = self.state = ServerState(files)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()

    def paths_requested(self) -> list[str]:
        return [p for p, _ in self.state.requests]


@pytest.fixture
def blobs(fixture_dir) -> dict[str, bytes]:
    return {"options": (fixture_dir / "options.json").read_bytes(),
            "weights": (fixture_dir / "lm_weights.hdf5").read_bytes()}


@pytest.fixture
def server(blobs):
    srv = Server({BASE + SMALL + "_options.json": blobs["options"], BASE + SMALL + "_weights.hdf5": blobs["weights"],
                  BASE + PUBMED_OPTIONS: blobs["options"], BASE + PUBMED_WEIGHTS: blobs["weights"],
                  "/mirror/options.json": blobs["options"], "/mirror/weights.hdf5": blobs["weights"],
                  "/owner/elmo-repo/resolve/main/options.json": blobs["options"],
                  "/cdn/weights.hdf5": blobs["weights"]})
    yield srv
    srv.stop()


@pytest.fixture
def cache(tmp_path, monkeypatch, server):
    """An empty model cache and the published base URL pointing at the local server."""
    root = tmp_path / "cache"
    monkeypatch.setenv("ELMO_JAX_CACHE_DIR", str(root))
    monkeypatch.setenv("ELMO_JAX_MODELS_URL", server.url + BASE)
    monkeypatch.delenv("ELMO_JAX_OFFLINE", raising=False)
    monkeypatch.delenv("ELMO_JAX_VERIFY_SHA256", raising=False)
    return root / "models"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_cached(directory, blobs):
    """Both files byte-equal to the served ones, and the manifest records their size and sha256."""
    assert (directory / "options.json").read_bytes() == blobs["options"]
    assert (directory / "weights.hdf5").read_bytes() == blobs["weights"]
    manifest = json.loads((directory / "manifest.json").read_text())
    for name, key in (("options.json", "options"), ("weights.hdf5", "weights")):
        assert manifest["files"][name]["size"] == len(blobs[key])
        assert manifest["files"][name]["sha256"] == sha256(blobs[key])
    assert not list(directory.glob("*.part"))


def cached_status() -> dict[str, str]:
    return {row["id"]: row["cached"] for row in list_models()}


def test_download_then_embed_matches_from_files(cache, server, blobs, fixture_dir):
    embedder = ElmoEmbedder.from_pretrained("small", progress=False)
    assert_cached(cache / "small", blobs)
    assert sorted(server.paths_requested()) == sorted([BASE + SMALL + "_options.json", BASE + SMALL + "_weights.hdf5"])
    reference = ElmoEmbedder.from_files(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    for got, want in zip(embedder.embed_sentences(SENTENCES), reference.embed_sentences(SENTENCES)):
        np.testing.assert_array_equal(got, want)
    # load_model: a name, or the two files as before
    options, params, _ = load_model("small", progress=False)
    options2, params2, _ = load_model(fixture_dir / "options.json", fixture_dir / "lm_weights.hdf5")
    assert options == options2
    np.testing.assert_array_equal(params["lstm"]["layer_1"]["kernel"], params2["lstm"]["layer_1"]["kernel"])


def test_cache_hit_needs_no_server(cache, server, blobs):
    first = resolve_model("small", progress=False)
    n_requests = len(server.state.requests)
    server.stop()
    again = resolve_model("small", progress=False)  # online mode, yet no network call for a cached model
    assert again == first and len(server.state.requests) == n_requests
    assert load_model("small")[0].lstm_dim == 64


def test_offline_makes_no_network_call(cache, server, blobs, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network call in offline mode")

    monkeypatch.setenv("ELMO_JAX_OFFLINE", "1")
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", no_network)
    with pytest.raises(ElmoError, match="offline") as err:
        resolve_model("small")
    assert "\n" not in str(err.value) and str(cache / "small") in str(err.value)
    monkeypatch.undo()
    monkeypatch.setenv("ELMO_JAX_CACHE_DIR", str(cache.parent))
    monkeypatch.setenv("ELMO_JAX_MODELS_URL", server.url + BASE)
    resolve_model("small", progress=False)
    monkeypatch.setenv("ELMO_JAX_OFFLINE", "1")
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", no_network)
    n_requests = len(server.state.requests)
    files = resolve_model("small", verify=True)
    assert files.weight_file == str(cache / "small" / "weights.hdf5")
    assert len(server.state.requests) == n_requests


def test_interrupted_download_resumes_with_range(cache, server, blobs):
    weights = BASE + SMALL + "_weights.hdf5"
    server.state.drop_once.add(weights)
    resolve_model("small", progress=False)
    assert_cached(cache / "small", blobs)
    ranges = [r for p, r in server.state.requests if p == weights]
    assert ranges == [None, f"bytes={len(blobs['weights']) // 2}-"], ranges


def test_part_file_of_an_earlier_run_is_resumed_or_restarted(cache, server, blobs):
    directory = cache / "small"
    directory.mkdir(parents=True)
    (directory / "weights.hdf5.part").write_bytes(blobs["weights"][:1000])
    resolve_model("small", progress=False)
    assert_cached(directory, blobs)
    assert cached_status() == {"small": "yes", "medium": "no", "original": "no", "original-5.5b": "no",
                               "pubmed": "no", "portuguese": "no"}
    assert (BASE + SMALL + "_weights.hdf5", "bytes=1000-") in server.state.requests
    # a server that ignores the range sends the whole file: the transfer restarts, no duplicated prefix
    other = cache / "pubmed"
    other.mkdir()
    (other / "weights.hdf5.part").write_bytes(b"x" * 1000)
    assert cached_status()["pubmed"] == "partial"
    server.state.ignore_range = True
    resolve_model("pubmed", progress=False)
    assert_cached(other, blobs)


def test_truncated_cache_file_is_downloaded_again_or_an_error_offline(cache, server, blobs, monkeypatch):
    resolve_model("small", progress=False)
    weights = cache / "small" / "weights.hdf5"
    weights.write_bytes(blobs["weights"][:-100])
    assert cached_status()["small"] == "damaged"
    monkeypatch.setenv("ELMO_JAX_OFFLINE", "1")
    with pytest.raises(ElmoError, match="truncated") as err:
        resolve_model("small")
    assert str(weights) in str(err.value) and "\n" not in str(err.value)
    monkeypatch.delenv("ELMO_JAX_OFFLINE")
    files = resolve_model("small", progress=False)
    assert any("downloaded it again" in n for n in files.notes)
    assert_cached(cache / "small", blobs)


def test_altered_file_is_caught_by_sha256(cache, server, blobs, monkeypatch):
    resolve_model("small", progress=False)
    weights = cache / "small" / "weights.hdf5"
    altered = bytearray(blobs["weights"])
    altered[-10] ^= 0xFF
    weights.write_bytes(bytes(altered))
    n_requests = len(server.state.requests)
    resolve_model("small")  # same size: only the size is checked by default
    assert len(server.state.requests) == n_requests
    monkeypatch.setenv("ELMO_JAX_OFFLINE", "1")
    with pytest.raises(ElmoError, match="sha256") as err:
        resolve_model("small", verify=True)
    assert str(weights) in str(err.value)
    monkeypatch.delenv("ELMO_JAX_OFFLINE")
    monkeypatch.setenv("ELMO_JAX_VERIFY_SHA256", "1")
    files = resolve_model("small", progress=False)
    assert any("sha256" in n for n in files.notes)
    assert_cached(cache / "small", blobs)
    # the server's file changed since the first download: one error, the changed file is not kept
    weights.write_bytes(bytes(altered))
    server.state.files[BASE + SMALL + "_weights.hdf5"] = bytes(altered[:-1]) + b"\0"
    with pytest.raises(ElmoError, match="first download"):
        resolve_model("small", progress=False)
    assert not weights.exists()


def test_wrong_content_length_is_an_error_naming_the_url(cache, server, blobs):
    weights = BASE + SMALL + "_weights.hdf5"
    server.state.extra_length[weights] = 100
    with pytest.raises(ElmoError, match="incomplete") as err:
        resolve_model("small", progress=False)
    assert server.url + weights in str(err.value) and "\n" not in str(err.value)
    assert not (cache / "small" / "weights.hdf5").exists()


def test_404_is_one_line_naming_the_url(cache, server):
    with pytest.raises(ElmoError) as err:
        resolve_model("medium", progress=False)
    message = str(err.value)
    assert "\n" not in message and "HTTP 404" in message
    assert server.url + BASE + "2x2048_256_2048cnn_1xhighway/elmo_2x2048_256_2048cnn_1xhighway_options.json" in message


def test_url_and_hf_names(cache, server, blobs, monkeypatch):
    forms = {
        "dir": server.url + "/mirror/",
        "bilm-tf pair": server.url + BASE + SMALL + "_options.json",
        "two files": f"{server.url}/mirror/weights.hdf5,{server.url}/mirror/options.json",
    }
    directories = set()
    for name in forms.values():
        files = resolve_model(name, progress=False)
        assert_cached(cache / os.path.basename(files.directory), blobs)
        directories.add(files.directory)
    assert len(directories) == 3 and all("127.0.0.1" in os.path.basename(d) for d in directories)
    # hf://: URLs and token through huggingface_hub; the Hub redirects a download to a CDN host,
    # which must not receive the token
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    cdn = server.url.replace("127.0.0.1", "localhost") + "/cdn/weights.hdf5"
    server.state.redirects["/owner/elmo-repo/resolve/main/weights.hdf5"] = cdn
    files = resolve_model("hf://owner/elmo-repo", progress=False)
    assert os.path.basename(files.directory) == "hf_owner_elmo-repo"
    assert_cached(cache / "hf_owner_elmo-repo", blobs)
    auth = dict(server.state.auth)
    assert auth["/owner/elmo-repo/resolve/main/weights.hdf5"] == "Bearer hf_test_token"
    assert auth["/cdn/weights.hdf5"] is None
    listed = cached_status()  # `elmo-jax models` lists them too, by the name they were given
    assert all(listed[name] == "yes" for name in [*forms.values(), "hf://owner/elmo-repo"]), listed


def test_local_directory_and_bad_names(fixture_dir, tmp_path, cache):
    model = tmp_path / "local"
    model.mkdir()
    (model / "options.json").write_bytes((fixture_dir / "options.json").read_bytes())
    with pytest.raises(ElmoError, match="no weights.hdf5"):
        resolve_model(model)
    (model / "weights.hdf5").write_bytes((fixture_dir / "lm_weights.hdf5").read_bytes())
    assert resolve_model(model).weight_file == str(model / "weights.hdf5")
    with pytest.raises(ElmoError, match="unknown model 'orignal'.*original"):
        resolve_model("orignal")
    with pytest.raises(ElmoError, match="hf://owner/repo"):
        resolve_model("hf://justone")


def test_task_config_takes_a_model_name(cache, server, blobs):
    cfg = TaskConfig(task="classify", train="train.tsv", model="small").validate()
    options, weights = resolve_bilm_files(cfg)
    assert open(weights, "rb").read() == blobs["weights"] and open(options, "rb").read() == blobs["options"]
    with pytest.raises(ElmoError, match="excludes options"):
        TaskConfig(task="classify", train="train.tsv", model="small", options="o.json").validate()


def test_cli_embed_model_matches_files_and_models_lists_it(cache, server, fixture_dir, tmp_path, capsys):
    text = tmp_path / "in.txt"
    text.write_text("\n".join(" ".join(s) for s in SENTENCES) + "\n", encoding="utf-8")
    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert re.search(r"^small +2 x 1024 LSTM.* 13\.6M +~54\.4 MB +no$", listing, re.M), listing
    out_model, out_files = tmp_path / "model.hdf5", tmp_path / "files.hdf5"
    assert main(["embed", "--model", "small", "--input", str(text), "--output", str(out_model), "--quiet"]) == 0
    assert main(["embed", "--options", str(fixture_dir / "options.json"), "--weights",
                 str(fixture_dir / "lm_weights.hdf5"), "--input", str(text), "--output", str(out_files), "--quiet"]) == 0
    with h5py.File(out_model, "r") as a, h5py.File(out_files, "r") as b:
        assert sorted(a) == sorted(b) == ["0", "1", "sentence_to_index"]
        for key in ("0", "1"):
            np.testing.assert_array_equal(a[key][()], b[key][()])
    assert main(["models", "--download", "pubmed", "--quiet"]) == 0  # fetch ahead, e.g. before going offline
    assert cached_status()["pubmed"] == "yes"
    npz = tmp_path / "small.npz"  # export-npz takes --model too
    assert main(["export-npz", "--model", "small", "--output", str(npz)]) == 0
    with np.load(npz) as z:
        np.testing.assert_array_equal(z["char_embed"], read_hdf5_arrays(fixture_dir / "lm_weights.hdf5")["char_embed"])
    capsys.readouterr()
    assert main(["models"]) == 0
    size = os.path.getsize(fixture_dir / "lm_weights.hdf5") / 1e3
    assert re.search(rf"^small .* {size:.1f} kB +yes$", capsys.readouterr().out, re.M)
    # --model with --options, or neither: exit 1 with one line
    for args in (["--model", "small", "--options", "o.json"], []):
        assert main(["embed", *args, "--input", str(text), "--output", str(tmp_path / "x.hdf5")]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--model" in err and "--options" in err
    assert not (tmp_path / "x.hdf5").exists()


@pytest.mark.slow
def test_concurrent_processes_download_once(cache, server, blobs):
    """Two processes resolving the same model: both succeed, the files are intact, and the second
    waits for the first (the lock) instead of downloading again."""
    server.state.delay = 1.0  # each transfer takes long enough for the two processes to overlap
    code = "from elmo_jax.hub import list_models, resolve_model; print(resolve_model('small', progress=False).directory)"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert {o.strip() for o, _ in outs} == {str(cache / "small")}
    assert_cached(cache / "small", blobs)
    assert server.paths_requested().count(BASE + SMALL + "_weights.hdf5") == 1



@pytest.mark.slow
def test_train_init_from_a_model_name(cache, server, tmp_path):
    """`init_from` takes a model name: it is downloaded and its options checked against the config
    (the fixture biLM is not the tiny config's shape: the error names the downloaded file). A full
    fine-tuning start from a directory is test_train.py::test_fine_tune_starts_from_export."""
    from test_train import tiny_config

    from elmo_jax.train.loop import train

    with pytest.raises(ElmoError, match="does not match") as err:
        train(tiny_config(tmp_path, max_steps=1, init_from="small"), str(tmp_path / "ft"), progress=False)
    assert str(cache / "small" / "options.json") in str(err.value)
    assert (cache / "small" / "weights.hdf5").is_file()


def test_bad_options_fail_before_the_weights_download(cache, server):
    server.state.files["/broken/options.json"] = b'{"lstm": {"dim": "big"}}'
    server.state.files["/broken/weights.hdf5"] = b"never requested"
    with pytest.raises(ElmoError) as err:
        resolve_model(server.url + "/broken/", progress=False)
    assert "options.json" in str(err.value) and "\n" not in str(err.value)
    assert "/broken/weights.hdf5" not in server.paths_requested()
