# Shared by scripts/test and scripts/localnet: make sure .venv exists and holds the project.
# Idempotent: a marker file records the hash of pyproject.toml that was installed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
marker="$venv/.khazana-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
python_bin="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating $venv with $($python_bin --version)"
    "$python_bin" -m venv "$venv"
fi
if [ ! -f "$marker" ] || [ "$(cat "$marker")" != "$want" ]; then
    echo "==> installing khazana and its test dependencies into .venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip
    "$venv/bin/python" -m pip install --quiet -e "$root[test]"
    echo "$want" > "$marker"
else
    echo "==> .venv is up to date"
fi
