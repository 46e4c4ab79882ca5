#!/usr/bin/env bash
# Runs the whole test suite (CPU only; the Triton backend runs in its interpreter).
source "$(dirname "$0")/env.sh" "test"
export TRITON_INTERPRET=1
exec python -m pytest -q -n 2 --dist loadgroup tests "$@"
