"""The deploy build step: the package to copy onto the board (`hw.deploy`), after codegen.

The vendor `bitfile` step adds the bitfile/hwh or xclbin to the package through
`add_bitfiles_to_package`.
"""

from __future__ import annotations

from flows.config import BuildConfig
from flows.steps import build_step

__all__ = ["add_bitfiles_to_package", "step_deploy"]

SKIPPED_NOTE = "deploy_skipped.json"  # in report/: why a build has no deploy package


@build_step("deploy", None)
def step_deploy(model, cfg: BuildConfig):
    """Write the deploy package `OUT/deploy/`: driver, I/O description, final graph, test set.

    `io.json` comes from the final dataflow graph (input/output datatypes and normal, folded
    and packed shapes; the software part in front of the accelerator; the input quantizer's
    scale and range); `testset.npz` holds the verification frames with labels, SNRs and the
    golden classes; `README.md` the two commands to run on the board. The package is checked
    by running its test set through the emulate backend: every class must equal the golden
    model's, else the step fails.

    A graph that keeps software the board driver cannot run (a model's host part, e.g.
    imperial's input average pool, statistics branch and classifier) gets no package: the step
    says why in `report/deploy_skipped.json` and on the console, and the build goes on.
    """
    import json

    import numpy as np

    from flows.errors import ToolchainError
    from flows.fileio import atomic_write_text
    from flows.hw_steps import _finn, _parent
    from flows.runner import console
    from hw.deploy import DeployUnsupported, HostPartUnsupported, write_deploy_package
    from hw.driver.accelerator import Accelerator

    _finn(cfg)
    skipped = cfg.report_dir / SKIPPED_NOTE
    if skipped.exists():
        skipped.unlink()  # from an earlier run of this step
    try:
        out = write_deploy_package(model, _parent(cfg), cfg)
    except DeployUnsupported as exc:
        reason = (f"no deploy package for {cfg.model}: {exc}. The accelerator's code is in "
                  f"{cfg.out_dir / 'finn'}"
                  + ("; the software parts are listed in report/partition.json."
                     if isinstance(exc, HostPartUnsupported) else "."))
        atomic_write_text(skipped, json.dumps({"reason": reason}, indent=2) + "\n")
        console.print(f"[bold yellow]note:[/bold yellow] {reason}", highlight=False)
        return model
    testset = np.load(out / "testset.npz")
    classes = Accelerator(out, backend="emulate", batch_size=256).classify(testset["x"])
    equal = int((classes == testset["golden_class"]).sum())
    if equal != len(classes):
        raise ToolchainError(f"deploy: the package's emulate backend gives the golden class on "
                             f"{equal}/{len(classes)} test frames; the package is in {out}")
    print(f"deploy package: {out} ({equal}/{len(classes)} test frames agree with the golden "
          "model through the emulate backend)")
    return model


def add_bitfiles_to_package(cfg: BuildConfig, files) -> None:
    """Copy the vendor step's bitfile + hwh (Zynq) or xclbin (Alveo) into `OUT/deploy/`."""
    from hw.deploy import DEPLOY_DIRNAME, add_bitfiles

    if (cfg.report_dir / SKIPPED_NOTE).exists():
        return  # no package (see that file): the bitfile stays where the vendor step wrote it
    add_bitfiles(cfg.out_dir / DEPLOY_DIRNAME, files)
