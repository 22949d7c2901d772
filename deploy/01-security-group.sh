#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/01-security-group.sh [--dry-run] [OPTIONS OF deploy/security_group.py]

Step 1: create or update the EC2 security group AWS_SECURITY_GROUP in AWS_REGION (in AWS_VPC_ID,
or the default VPC when it is empty): ports 80 and 443 open to everyone, 22 (SSH) and 2376 (the
Docker API) to this machine's public IP only, outbound 80 and 443. Idempotent: run it again
whenever your IP changes. Other options go to deploy/security_group.py, for example
--operator-ip 203.0.113.7 (default: the IP that checkip.amazonaws.com sees).

Options:
  -n, --dry-run  print the command instead of running it
  -h, --help     show this help

Needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (deploy/deploy.secrets.env) and the project's
Python with boto3 (pip install -e '.[deploy]'); PYTHON overrides which Python runs it."

security_group() {
  parse_args "$@"
  load_config
  require_config AWS_REGION AWS_SECURITY_GROUP
  require_secret AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  local command
  command=("$(python_command)" deploy/security_group.py --region "$AWS_REGION"
    --name "$AWS_SECURITY_GROUP")
  if [[ ${AWS_VPC_ID:-} ]]; then
    command+=(--vpc-id "$AWS_VPC_ID")
  fi
  run "${command[@]}" "${ARGS[@]}"
  is_dry_run || log "next: deploy/02-aws-host.sh"
}

security_group "$@"
