#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/02-aws-host.sh [--dry-run] [NAME]

Step 2: create the EC2 host AWS_MACHINE (or NAME: deploy/06-swarm.sh makes the swarm's workers
this way) with docker-machine's amazonec2 driver: AWS_REGION,
AWS_ZONE, AWS_INSTANCE_TYPE, AWS_VPC_ID (empty: the default VPC), the security group of step 1
(left as it is: docker-machine adds no rules of its own), an AWS_ROOT_SIZE GB AWS_VOLUME_TYPE
disk, and AWS_AMI (empty: the current Ubuntu 22.04 LTS image of the region). docker-machine
installs Docker on it and keeps its TLS certificates in ~/.docker/machine. Does nothing if the
host exists already. The instance costs money from now on: deploy/99-teardown.sh removes it.

Options:
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help

The AWS credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY from deploy/deploy.secrets.env)
reach docker-machine through its environment, never on its command line."

# Canonical publishes the current AMI of each Ubuntu release as a public SSM parameter.
UBUNTU_AMI_PARAMETER=/aws/service/canonical/ubuntu/server/22.04/stable/current/amd64/hvm/ebs-gp2/ami-id
UBUNTU_AMI_LOOKUP='import sys, boto3
ssm = boto3.client("ssm", region_name=sys.argv[1])
print(ssm.get_parameter(Name=sys.argv[2])["Parameter"]["Value"])'

aws_host() {
  parse_args "$@"
  ((${#ARGS[@]} <= 1)) || unknown_argument "${ARGS[1]}"
  load_config
  require_config AWS_REGION AWS_ZONE AWS_INSTANCE_TYPE AWS_SECURITY_GROUP AWS_MACHINE \
    AWS_ROOT_SIZE AWS_VOLUME_TYPE AWS_SSH_USER
  local name=${ARGS[0]:-$AWS_MACHINE}
  [[ $name =~ ^[A-Za-z0-9][A-Za-z0-9.-]*$ ]] || unknown_argument "$name"
  require_secret AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  require_docker_machine
  if ! is_dry_run && machine_exists "$name"; then
    log "the host $name exists already (docker-machine ls): nothing to do"
    return 0
  fi
  local ami=${AWS_AMI:-}
  if [[ -z $ami ]]; then
    capture ami "<ubuntu-22.04-ami>" "set AWS_AMI in $CONFIG_FILE (an Ubuntu 22.04 image id)" \
      "$(python_command)" -c "$UBUNTU_AMI_LOOKUP" "$AWS_REGION" "$UBUNTU_AMI_PARAMETER"
  fi
  local flags=(
    --driver amazonec2
    --amazonec2-region "$AWS_REGION"
    --amazonec2-zone "$AWS_ZONE"
    --amazonec2-instance-type "$AWS_INSTANCE_TYPE"
  )
  if [[ ${AWS_VPC_ID:-} ]]; then
    flags+=(--amazonec2-vpc-id "$AWS_VPC_ID")
  fi
  flags+=(
    --amazonec2-security-group "$AWS_SECURITY_GROUP"
    # The group's rules are 01-security-group.sh's: without this flag docker-machine would
    # open 22 and 2376 to the whole internet.
    --amazonec2-security-group-readonly
    --amazonec2-root-size "$AWS_ROOT_SIZE"
    --amazonec2-volume-type "$AWS_VOLUME_TYPE"
    --amazonec2-ami "$ami"
    --amazonec2-ssh-user "$AWS_SSH_USER"
    --amazonec2-tags "project,covfefe-flow"
  )
  run docker-machine create "${flags[@]}" "$name"
  if ! is_dry_run && [[ $name == "$AWS_MACHINE" ]]; then log "next: deploy/03-dns.sh"; fi
}

aws_host "$@"
