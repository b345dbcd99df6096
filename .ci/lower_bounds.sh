#!/usr/bin/env bash
# CI job: install the project with every runtime dependency pinned to the lower bound that
# pyproject.toml declares (`name>=X` -> `name==X`, plus jaxlib==<jax bound>) in a separate, fresh
# virtualenv, and run the smoke test (`pytest -m smoke tests/test_smoke.py`) against them.
# Transitive dependencies float (pip picks their newest compatible releases), as for a user who
# pins only our direct dependencies.
#
# The bounds were chosen on CPython 3.11 (numpy 2.0.0 and h5py 3.11.0 have wheels for 3.10-3.12).
# Environment: PYTHON (default python3); LOWER_BOUNDS_VENV to use (and keep) a given virtualenv
# directory instead of a temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
PYTHON=${PYTHON:-python3}

# ---- the pins, read from [project].dependencies: each one must have a `>=` lower bound
mapfile -t pins < <("$PYTHON" - <<'EOF'
import re, sys

text = open("pyproject.toml", encoding="utf-8").read()
try:
    import tomllib
    deps = tomllib.loads(text)["project"]["dependencies"]
except ImportError:  # Python 3.10: read the `dependencies = [...]` array of [project] directly
    project = re.search(r"^\[project\]\s*$(.*?)(?=^\[)", text, re.S | re.M).group(1)
    deps = re.findall(r'"([^"]+)"', re.search(r"^dependencies\s*=\s*\[(.*?)\]", project, re.S | re.M).group(1))
bad, pins = [], {}
for dep in deps:
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*?)\s*(;.*)?", dep)
    lower = [s.strip()[2:].strip() for s in m.group(3).split(",") if s.strip().startswith(">=")] if m else []
    if not lower:
        bad.append(dep)
        continue
    pins[m.group(1).lower()] = (m.group(1) + (m.group(2) or ""), lower[0])
if bad:
    sys.exit("lower_bounds.sh: every dependency needs a `>=` lower bound in pyproject.toml; missing for: "
             + ", ".join(bad))
if "jax" in pins and "jaxlib" not in pins:  # jax pins its own jaxlib too; say it explicitly
    pins["jaxlib"] = ("jaxlib", pins["jax"][1])
for name, version in pins.values():
    print(f"{name}=={version}")
EOF
)
[ "${#pins[@]}" -gt 0 ] || { echo "lower_bounds.sh: no pins read from pyproject.toml" >&2; exit 2; }
echo "lower bounds: ${pins[*]}"

# ---- a fresh virtualenv with exactly those versions
if [ -n "${LOWER_BOUNDS_VENV:-}" ]; then
  venv=$LOWER_BOUNDS_VENV
else
  venv=$(mktemp -d "${TMPDIR:-/tmp}/elmo-jax-lower-bounds.XXXXXX")
  trap 'rm -rf "$venv"' EXIT
fi
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e . "${pins[@]}" 'pytest>=8' 'hypothesis>=6.100'
"$venv/bin/python" - "${pins[@]}" <<'EOF'
import sys
from importlib.metadata import version

wrong = []
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    got = version(name.split("[")[0])
    if got != want:
        wrong.append(f"{name} {got} (want {want})")
print("installed:", sys.version.split()[0], ", ".join(f"{p.split('==')[0]} {version(p.split('==')[0].split('[')[0])}"
                                                     for p in sys.argv[1:]))
if wrong:
    sys.exit("lower_bounds.sh: installed versions differ from the pins: " + ", ".join(wrong))
EOF
echo "lower bounds: install took $((SECONDS - start)) s"

# ---- the smoke test
export HF_DATASETS_OFFLINE=1 JAX_PLATFORMS=cpu
set +e
"$venv/bin/python" -m pytest -q -m smoke -p no:cacheprovider tests/test_smoke.py
rc=$?
set -e
if [ "$rc" -eq 5 ]; then  # no tests collected: the smoke test is missing or unmarked, which checks nothing
  echo "lower bounds: no smoke tests collected" >&2
  rc=1
fi
echo "lower bounds: $([ "$rc" -eq 0 ] && echo passed || echo FAILED) in $((SECONDS - start)) s"
exit "$rc"
