#!/usr/bin/env bash
set -euo pipefail
[[ ${TRACE:-} ]] && set -x
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

USAGE="Usage: deploy/99-teardown.sh [--dry-run] [--yes] [--local]

Remove what steps 1 to 7 made, so that nothing keeps costing money: on a swarm, remove the
stack, make each worker host AWS_MACHINE-worker-N leave the swarm and remove it, then the
manager leaves; stop the compose services on the EC2 host (docker compose down), remove the host
(docker-machine rm terminates the instance, and AWS deletes its disk with it), then delete the
security group (retrying while the instances shut down). Cloudflare's DNS records are left alone: the script says which ones to delete.
Parts that are gone already are skipped, so it can be run again after a failure.

Options:
  --yes          do not ask for confirmation
  --local        also remove the VirtualBox host LOCAL_MACHINE, with its tweets, runs and models
  -n, --dry-run  print the commands instead of running them
  -h, --help     show this help"

# Deletes the group named sys.argv[2] (in the VPC sys.argv[3], else the default VPC) of region
# sys.argv[1]; AWS refuses while the terminated instance still holds it, so it retries.
DELETE_SECURITY_GROUP='import sys, time
import boto3, botocore.exceptions
region, name, vpc = sys.argv[1:4]
ec2 = boto3.client("ec2", region_name=region)
try:
    if not vpc:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        vpc = vpcs[0]["VpcId"] if vpcs else ""
    filters = [{"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc]}]
    groups = ec2.describe_security_groups(Filters=filters)["SecurityGroups"]
    if not groups:
        sys.exit(print(f"no security group {name} in {region} {vpc}: nothing to delete"))
    group_id = groups[0]["GroupId"]
    for attempt in range(36):
        try:
            ec2.delete_security_group(GroupId=group_id)
            sys.exit(print(f"deleted the security group {name} ({group_id})"))
        except botocore.exceptions.ClientError as error:
            if error.response["Error"]["Code"] != "DependencyViolation" or attempt == 35:
                raise
            print("the instance is still shutting down: retrying in 10 s", file=sys.stderr)
            time.sleep(10)
except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as error:
    sys.exit(f"cannot delete the security group {name}: {error}")'

teardown() {
  parse_args "$@"
  local yes='' with_local='' argument
  for argument in "${ARGS[@]}"; do
    case $argument in
      --yes | -y) yes=1 ;;
      --local) with_local=1 ;;
      *) unknown_argument "$argument" ;;
    esac
  done
  load_config
  require_config DOMAIN AWS_REGION AWS_SECURITY_GROUP AWS_MACHINE COMPOSE_PROJECT_NAME
  if [[ $with_local ]]; then require_config LOCAL_MACHINE; fi
  require_secret AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  require_docker_machine
  if ! is_dry_run && [[ ! $yes ]]; then
    [[ -t 0 ]] || die_usage "refusing to remove $AWS_MACHINE without --yes (no terminal to ask)"
    local answer
    read -r -p "This removes the EC2 host $AWS_MACHINE and everything on it. Type its name to go on: " answer
    [[ $answer == "$AWS_MACHINE" ]] || die "not confirmed: nothing was removed"
  fi
  local workers worker state
  mapfile -t workers < <(worker_machines)
  for worker in "${workers[@]}"; do
    use_machine "$worker"
    run docker swarm leave --force
    run docker-machine rm -y "$worker"
  done
  if machine_exists "$AWS_MACHINE"; then
    use_machine "$AWS_MACHINE"
    swarm_state state
    if [[ $state == active ]]; then
      run docker stack rm "$COMPOSE_PROJECT_NAME"
      run docker swarm leave --force
    fi
    compose down --remove-orphans
    run docker-machine rm -y "$AWS_MACHINE"
  else
    log "no docker-machine host $AWS_MACHINE: skipping it"
  fi
  run "$(python_command)" -c "$DELETE_SECURITY_GROUP" "$AWS_REGION" "$AWS_SECURITY_GROUP" \
    "${AWS_VPC_ID:-}"
  if [[ $with_local ]]; then
    if machine_exists "$LOCAL_MACHINE"; then
      run docker-machine rm -y "$LOCAL_MACHINE"
    else
      log "no docker-machine host $LOCAL_MACHINE: skipping it"
    fi
  fi
  log "DNS: delete the A records $DOMAIN, www.$DOMAIN and api.$DOMAIN in Cloudflare's dashboard" \
    "(DNS > Records): they point at an address AWS will give to someone else. The zone itself" \
    "costs nothing on the free plan."
}

teardown "$@"
