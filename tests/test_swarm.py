"""Beyond one host: the swarm stack (deploy/stack.yml) deployed for real on a single-node swarm.

deploy/stack_health.py (the Docker SDK) is checked first on its own: an unreachable daemon is
one clear sentence naming DOCKER_HOST.
"""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

STACK_HEALTH = ROOT / "deploy" / "stack_health.py"


@pytest.mark.parametrize("docker_host", ["unix:///nonexistent/docker.sock",
                                         "tcp://127.0.0.1:9"])
def test_stack_health_names_an_unreachable_daemon(docker_host, tmp_path):
    env = {**os.environ, "DOCKER_HOST": docker_host, "HOME": str(tmp_path)}
    env.pop("DOCKER_TLS_VERIFY", None)
    result = subprocess.run([sys.executable, str(STACK_HEALTH), "--stack", "covfefe"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line == (f"stack_health.py: error: cannot reach the Docker daemon at {docker_host} "
                    "(DOCKER_HOST): start it, or point DOCKER_HOST at it "
                    "(eval \"$(deploy/use-host.sh aws)\")")
    assert not result.stdout
