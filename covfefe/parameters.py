"""Parameter files: flat YAML mappings, one per notebook and profile, that papermill reads as is.

``notebooks/params/<profile>/<notebook>.yaml`` holds the parameters of ``notebooks/<notebook>
.ipynb`` for one profile (``ci``: tiny and quick, ``full``: the real run), so that plain
``papermill notebooks/03-train-model.ipynb OUT.ipynb -f notebooks/params/full/03-train-model.yaml``
works, and the same file drives ``covfefe train --params``. A profile is the folder: running it
(``make train PARAMS=ci``, `covfefe.notebooks`) runs the notebooks its files name, in order.
"""

import os
from pathlib import Path

import yaml

from covfefe import config
from covfefe.errors import UserError

PARAMS_DIR = Path("notebooks") / "params"


def read_parameters(path: str | os.PathLike) -> dict:
    """Return the parameters of a flat YAML file (an empty file holds none)."""
    path = config.resolve(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"parameters file {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"parameters file {path} is a folder: give one of its .yaml files"
                        ) from None
    except yaml.YAMLError as error:
        raise UserError(f"parameters file {path} is not valid YAML ({error})") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
        raise UserError(f"parameters file {path} must map parameter names to values")
    nested = sorted(key for key, value in data.items() if isinstance(value, dict))
    if nested:
        raise UserError(f"parameters file {path} must be flat (one notebook's parameters), "
                        f"but {', '.join(nested)} holds a section")
    return data


def profile_dir(profile: str | os.PathLike) -> Path:
    """Return a profile's folder: a name (``ci``, ``full``) in notebooks/params, or a path."""
    if os.sep not in str(profile) and not str(profile).startswith("."):
        folder = config.home() / PARAMS_DIR / str(profile)
    else:
        folder = config.resolve(profile)
    if not folder.is_dir():
        known = sorted(path.name for path in (config.home() / PARAMS_DIR).glob("*/")
                       if path.is_dir())
        raise UserError(f"there is no parameter profile {profile!r} (no folder {folder}); "
                        f"the profiles are: {', '.join(known) or 'none'}")
    return folder


def profile_files(profile: str | os.PathLike) -> dict[str, Path]:
    """Return a profile's parameter files by notebook name, in the order the notebooks run."""
    folder = profile_dir(profile)
    files = {path.stem: path for path in sorted(folder.glob("*.yaml"))}
    if not files:
        raise UserError(f"parameter profile {folder} holds no .yaml file")
    return files
