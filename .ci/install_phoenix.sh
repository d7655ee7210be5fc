#!/usr/bin/env bash
# Arize Phoenix, the trace UI the OpenTelemetry test exports to (tests/agent/test_telemetry_phoenix.py).
# Phoenix pins its own fastapi, starlette, mcp, uvicorn... so it lives in a venv of its own, never in the
# project's environment. The test finds its python at $QWQ_AGENT_PHOENIX_PYTHON, else at the path below.
set -euo pipefail
VENV="${QWQ_AGENT_PHOENIX_VENV:-/work/venvs/phoenix}"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import phoenix.server.main" 2>/dev/null; then
    echo "Phoenix already installed in $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --progress-bar off --upgrade pip
"$VENV/bin/python" -m pip install --progress-bar off "arize-phoenix>=20,<22"
"$VENV/bin/python" -c "import phoenix.server.main; import phoenix; print('Phoenix', phoenix.__version__, 'in $VENV')"
