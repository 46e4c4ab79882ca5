#!/usr/bin/env bash
# Runs the main demo: compiles a real kernel, checks its result and prints the generated code.
source "$(dirname "$0")/env.sh" ""
exec python examples/demo.py "$@"
