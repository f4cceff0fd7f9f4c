#!/bin/sh
# Prints a .env for compose.yaml with freshly generated secrets: ./compose-env.sh > .env
# Keep .env out of version control; set OPENAI_API_KEY (and OPENAI_BASE_URL) in it for a real
# upstream instead of the mock LLM.
set -eu
rand() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
echo "GATEWAY_SECRET_KEY=$(rand 32)"
echo "GATEWAY_ADMIN_TOKEN=$(rand 24)"
echo "POSTGRES_PASSWORD=$(rand 16)"
echo "GRAFANA_ADMIN_PASSWORD=$(rand 12)"
