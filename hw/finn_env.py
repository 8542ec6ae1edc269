"""The one place that prepares finn-plus's environment for use through its Python API.

finn-plus expects to be started by its `finn` command line, which needs Vivado. Driven from
Python it needs, before any of its transformations run:
- `FINN_BUILD_DIR`: where code generation and partitioning put their files (an absolute path
  that must exist);
- a global settings object (`finn.util.settings`). Built without a settings path it resolves one
  in `~/.finn/` and creates that directory; here it is pointed into the build directory instead,
  and no file is written there;
- `FINN_RTLLIB` and `FINN_CUSTOM_HLS`: still read by parts of code generation (an unset value
  gives an empty `-I` path and `ap_int.h: No such file`); they point into the installed package;
- `NUM_DEFAULT_WORKERS`: finn-plus defaults to 75 % of the cores; the machines here are shared.

Nothing here imports Vivado-only modules (`finn.builder`, `finn.xsi`): those raise without
`XILINX_VIVADO`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FinnEnvironment", "configure_finn", "current_environment"]

# Name of the settings file finn-plus would read; it is never created by this module.
_SETTINGS_FILE = "finn_settings.yaml"

_CURRENT: FinnEnvironment | None = None


@dataclass(frozen=True)
class FinnEnvironment:
    """What `configure_finn` set up."""

    build_dir: Path  # FINN_BUILD_DIR: generated code and partition models go below it
    rtllib: Path  # FINN_RTLLIB: the RTL templates shipped with finn-plus
    custom_hls: Path  # FINN_CUSTOM_HLS: the HLS headers shipped with finn-plus
    num_workers: int  # NUM_DEFAULT_WORKERS for finn-plus's parallel transformations


def _package_dir(name: str) -> Path:
    """Directory of a data folder shipped inside the finn package (`finn-rtllib`, ...)."""
    import finn

    path = Path(finn.__file__).parent / name
    if not path.is_dir():
        raise RuntimeError(f"finn-plus installation lacks {path}; reinstall finn-plus")
    return path


def configure_finn(build_dir: str | Path, *, num_workers: int = 1) -> FinnEnvironment:
    """Prepare finn-plus to run from Python with its files under `build_dir`.

    Idempotent: calling it again with the same arguments changes nothing; calling it with
    another `build_dir` moves the build directory for everything that runs afterwards.
    """
    global _CURRENT
    build_dir = Path(build_dir).expanduser().resolve()
    env = FinnEnvironment(build_dir, _package_dir("finn-rtllib"), _package_dir("custom_hls"),
                          num_workers)
    if env == _CURRENT:
        return env
    build_dir.mkdir(parents=True, exist_ok=True)
    os.environ["FINN_BUILD_DIR"] = str(build_dir)
    os.environ["FINN_RTLLIB"] = str(env.rtllib)
    os.environ["FINN_CUSTOM_HLS"] = str(env.custom_hls)
    os.environ["NUM_DEFAULT_WORKERS"] = str(num_workers)
    _install_settings(env)
    _CURRENT = env
    return env


def current_environment() -> FinnEnvironment:
    """The environment set by `configure_finn`; raises if it was not called."""
    if _CURRENT is None:
        raise RuntimeError("finn-plus is not configured: call hw.finn_env.configure_finn() first")
    return _CURRENT


def _install_settings(env: FinnEnvironment) -> None:
    """Build finn-plus's global settings object from `env` and make it the active one."""
    import finn.util.settings as finn_settings
    from finn.interface.settings import FINNSettings

    settings = FINNSettings.init(
        override_settings_path=env.build_dir / _SETTINGS_FILE,  # keeps it out of ~/.finn/
        flow_config=env.build_dir / "flow.yaml",  # only used to resolve relative paths
        auto_set_environment_vars=True,
        finn_build_dir=str(env.build_dir),
        finn_rtllib=str(env.rtllib),
        finn_custom_hls=str(env.custom_hls),
        num_default_workers=env.num_workers,
    )
    finn_settings._SETTINGS = settings
